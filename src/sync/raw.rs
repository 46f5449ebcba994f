//! The shared futex-word logic under every primitive of this module: who am
//! I (process id, start time, thread id), is another process still alive, and
//! the robust lock word itself ([`RawLock`]).
//!
//! # The lock word
//!
//! A [`RawLock`] is 16 bytes of shared memory, all zero when unlocked:
//!
//! | word    | meaning |
//! |---------|---------|
//! | `word`  | `0` = unlocked; else the holder's **process id** (bits 0..30) plus [`WAITERS`] (bit 31) when somebody may sleep on it |
//! | `start` | low 32 bits of the holder's process start time (clock ticks since boot), to tell a reused pid from the holder |
//! | `flags` | [`DIED`] once a holder died holding the lock, until cleared |
//!
//! Uncontended, acquire is one compare-and-swap (`0 → pid`) plus a plain store
//! of `start`, and release is one swap (`→ 0`); neither enters the kernel.
//! Contended, an acquirer spins briefly, then sets [`WAITERS`] and sleeps on a
//! process-shared futex, with a bounded timeout ([`CHECK_INTERVAL`]): each
//! time it wakes without the lock it checks that the holder's process is still
//! alive. If the holder is gone (no such process, a zombie, or a pid now used
//! by a process that started at another time) the waiter takes the lock over
//! with a compare-and-swap from the exact word it saw — so exactly one waiter
//! wins — and sets [`DIED`], which every later acquirer sees until it is
//! cleared.
//!
//! Why not the kernel's robust-futex list (what `PTHREAD_MUTEX_ROBUST` uses)?
//! glibc registers the list head for every thread, so a library cannot add its
//! own, and pthread robust mutexes record thread ids, so a lock acquired by one
//! thread and released by another (legal for Python's `Lock`) would be
//! reported dead when the acquiring thread exits. Owner liveness per
//! *process* matches what a `multiprocessing` user means by "the holder died".
#![allow(unsafe_code)]

use crate::sys::futex::{self, Wake};
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Bit 31 of the lock word: a waiter may be sleeping; release must wake one.
pub(crate) const WAITERS: u32 = 1 << 31;
/// The holder's process id (Linux pids are below 2^22).
pub(crate) const PID_MASK: u32 = (1 << 30) - 1;
/// Bit 0 of `flags`: a holder died while holding the lock.
pub(crate) const DIED: u32 = 1;

/// How long a waiter sleeps before it checks that the holder still lives.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How many times an acquirer polls the word before it goes to sleep.
const SPIN: u32 = 200;

// ---------------------------------------------------------------------------
// Who am I
// ---------------------------------------------------------------------------

static PID: AtomicU32 = AtomicU32::new(0);
static START: AtomicU32 = AtomicU32::new(0);
static NEXT_THREAD: AtomicU32 = AtomicU32::new(1);
static ATFORK: AtomicU32 = AtomicU32::new(0);
const ATFORK_DONE: u32 = u32::MAX;

thread_local! {
    static THREAD: Cell<u32> = const { Cell::new(0) };
}

extern "C" fn forget_identity_in_child() {
    // Runs in a forked child before `fork()` returns there: the cached pid
    // and start time are the parent's and must be looked up again.
    START.store(0, Ordering::Relaxed);
    PID.store(0, Ordering::Release);
}

/// This process's id, cached (and forgotten in a forked child).
#[inline]
pub(crate) fn current_pid() -> u32 {
    let p = PID.load(Ordering::Acquire);
    if p != 0 {
        return p;
    }
    init_identity()
}

/// The low 32 bits of this process's start time (0 if unknown).
#[inline]
pub(crate) fn current_start() -> u32 {
    if PID.load(Ordering::Acquire) == 0 {
        init_identity();
    }
    START.load(Ordering::Relaxed)
}

#[cold]
fn init_identity() -> u32 {
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    ensure_atfork(pid);
    let start = proc_stat(pid).map(|s| s.start as u32).unwrap_or(0);
    START.store(start, Ordering::Relaxed);
    // Stored only once the fork handler is registered: a child forked after
    // this store has the handler, which forgets the cached pid.
    PID.store(pid, Ordering::Release);
    pid
}

/// Registers [`forget_identity_in_child`] once per process.
///
/// Not a `std::sync::Once`: a fork while another thread is inside `call_once`
/// would leave the child's copy "running" forever. `ATFORK` holds 0 (not
/// registered), [`ATFORK_DONE`], or the pid of the process registering it; a
/// child that inherits a registration in flight (a pid that is not its own)
/// cannot know whether it got the handler, so it registers it again (the
/// handler is idempotent).
fn ensure_atfork(me: u32) {
    loop {
        let state = ATFORK.load(Ordering::Acquire);
        if state == ATFORK_DONE {
            return;
        }
        if state == me {
            // Another thread of this process is registering: a moment.
            std::thread::yield_now();
            continue;
        }
        if ATFORK
            .compare_exchange(state, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: registers a plain `extern "C"` function with no
            // preconditions as a child-side fork handler; it only stores
            // atomics, which is async-signal-safe.
            unsafe {
                libc::pthread_atfork(None, None, Some(forget_identity_in_child));
            }
            ATFORK.store(ATFORK_DONE, Ordering::Release);
            return;
        }
    }
}

/// A small number naming the calling thread, unique within this process
/// (not an OS thread id: threads of different processes may share one, so it
/// is always paired with the pid).
#[inline]
pub(crate) fn current_thread() -> u32 {
    THREAD.with(|t| {
        let v = t.get();
        if v != 0 {
            return v;
        }
        let v = NEXT_THREAD.fetch_add(1, Ordering::Relaxed).max(1);
        t.set(v);
        v
    })
}

// ---------------------------------------------------------------------------
// Is that process alive?
// ---------------------------------------------------------------------------

struct ProcStat {
    state: char,
    start: u64,
}

/// Reads state and start time from `/proc/<pid>/stat`; `None` if there is no
/// such process (or `/proc` cannot say).
fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything,
    // so parse from the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 22 (starttime) is the 20th after the state (field 3).
    let start = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start })
}

/// What a liveness check found out about a lock holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// The process runs (or we cannot tell otherwise).
    Alive,
    /// No such process, or it is a zombie.
    Dead,
    /// A process with that pid runs but started at another time than the one
    /// recorded: either the pid was reused after the holder died, or the
    /// holder has not written its start time yet. Seen twice, it means dead.
    Reused,
}

/// Checks whether process `pid` is alive; `start` is the recorded low 32 bits
/// of its start time (0 = not known).
pub(crate) fn liveness(pid: u32, start: u32) -> Liveness {
    if pid == current_pid() {
        return Liveness::Alive;
    }
    match proc_stat(pid) {
        // `/proc` works (we read our own start time from it), so the
        // process is gone; without `/proc`, ask kill(pid, 0).
        None if START.load(Ordering::Relaxed) != 0 => Liveness::Dead,
        None => match rustix::process::Pid::from_raw(pid as i32) {
            Some(p) if rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH) => {
                Liveness::Dead
            }
            Some(_) => Liveness::Alive,
            None => Liveness::Dead,
        },
        Some(s) if matches!(s.state, 'Z' | 'X' | 'x') => Liveness::Dead,
        Some(s) if start != 0 && s.start as u32 != start => Liveness::Reused,
        Some(_) => Liveness::Alive,
    }
}

/// `true` if process `pid` is certainly gone (dead, zombie). Used for waiters
/// recorded in tables (conditions, barriers), where a reused pid only delays
/// the detection.
pub(crate) fn is_dead(pid: u32) -> bool {
    pid != 0 && liveness(pid, 0) == Liveness::Dead
}

// ---------------------------------------------------------------------------
// The robust lock word
// ---------------------------------------------------------------------------

/// How an acquisition went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The lock is ours and nobody died holding it.
    Clean,
    /// The lock is ours; a previous holder died holding it (now or earlier,
    /// and the flag was not cleared since).
    OwnerDied,
}

/// Why an acquisition failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimedOut;

/// A robust, process-shared lock word in shared memory (see the module docs).
/// All zeroes is a valid unlocked lock.
#[repr(C, align(8))]
#[derive(Debug)]
pub(crate) struct RawLock {
    word: AtomicU32,
    start: AtomicU32,
    flags: AtomicU32,
    _reserved: AtomicU32,
}

/// Bytes a [`RawLock`] occupies in shared memory (alignment 8).
pub(crate) const RAW_LOCK_BYTES: usize = std::mem::size_of::<RawLock>();

impl RawLock {
    #[inline]
    fn acquired(&self) -> Acquired {
        self.start.store(current_start(), Ordering::Relaxed);
        if self.flags.load(Ordering::Relaxed) & DIED != 0 {
            Acquired::OwnerDied
        } else {
            Acquired::Clean
        }
    }

    /// Acquires, waiting until `deadline` (`None` = forever).
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Acquired, TimedOut> {
        let me = current_pid();
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(self.acquired());
        }
        self.lock_slow(me, deadline)
    }

    /// Acquires if free now, or if its holder is dead.
    pub(crate) fn try_lock(&self) -> Result<Acquired, TimedOut> {
        let me = current_pid();
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 {
                if self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(self.acquired());
                }
                continue;
            }
            if liveness(v & PID_MASK, self.start.load(Ordering::Relaxed)) == Liveness::Dead {
                if let Some(a) = self.take_over(v, me) {
                    return Ok(a);
                }
                continue;
            }
            return Err(TimedOut);
        }
    }

    /// Replaces a dead holder's word `seen` by ours; `None` if the word changed.
    fn take_over(&self, seen: u32, me: u32) -> Option<Acquired> {
        // Keep WAITERS: other processes may sleep on the word.
        self.word
            .compare_exchange(seen, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        self.flags.fetch_or(DIED, Ordering::Relaxed);
        self.start.store(current_start(), Ordering::Relaxed);
        Some(Acquired::OwnerDied)
    }

    #[cold]
    fn lock_slow(&self, me: u32, deadline: Option<Instant>) -> Result<Acquired, TimedOut> {
        for _ in 0..SPIN {
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 {
                if self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(self.acquired());
                }
            } else if v & WAITERS != 0 {
                break;
            }
            std::hint::spin_loop();
        }
        // (word, start) last found `Reused`: seen twice in a row = dead.
        let mut suspect: Option<(u32, u32)> = None;
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 {
                // We may have been one of several sleepers: keep WAITERS set.
                if self
                    .word
                    .compare_exchange(0, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(self.acquired());
                }
                continue;
            }
            let want = v | WAITERS;
            if v & WAITERS == 0
                && self
                    .word
                    .compare_exchange(v, want, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let step = Instant::now() + CHECK_INTERVAL;
            let until = match deadline {
                Some(d) if d < step => d,
                _ => step,
            };
            match futex::wait(&self.word, want, Some(until)) {
                Ok(Wake::Retry) => continue,
                Ok(Wake::TimedOut) => {}
                Err(_) => std::thread::yield_now(),
            }
            // Woken by the clock: is the holder still there?
            let cur = self.word.load(Ordering::Relaxed);
            if cur != 0 {
                let start = self.start.load(Ordering::Relaxed);
                let dead = match liveness(cur & PID_MASK, start) {
                    Liveness::Dead => true,
                    Liveness::Reused => {
                        let seen_before = suspect == Some((cur, start));
                        suspect = Some((cur, start));
                        seen_before
                    }
                    Liveness::Alive => {
                        suspect = None;
                        false
                    }
                };
                if dead {
                    if let Some(a) = self.take_over(cur, me) {
                        return Ok(a);
                    }
                    continue;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(TimedOut);
            }
        }
    }

    /// Releases. `false` if the lock was not held.
    #[inline]
    pub(crate) fn unlock(&self) -> bool {
        let prev = self.word.swap(0, Ordering::Release);
        if prev & WAITERS != 0 {
            futex::wake(&self.word, 1);
        }
        prev != 0
    }

    /// `true` while somebody holds the lock.
    pub(crate) fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }

    /// The holder's process id, if held.
    pub(crate) fn owner_pid(&self) -> Option<u32> {
        match self.word.load(Ordering::Relaxed) & PID_MASK {
            0 => None,
            p => Some(p),
        }
    }

    /// `true` once a holder died holding the lock, until [`clear_died`](Self::clear_died).
    pub(crate) fn died(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & DIED != 0
    }

    /// Clears the owner-died flag.
    pub(crate) fn clear_died(&self) {
        self.flags.fetch_and(!DIED, Ordering::Relaxed);
    }
}

/// A deadline `timeout` from now (`None` = forever; overflow = forever).
pub(crate) fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    crate::sys::deadline_after(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_cached_and_sane() {
        let pid = current_pid();
        assert_eq!(pid, std::process::id());
        assert_eq!(current_pid(), pid);
        assert_ne!(current_start(), 0, "/proc gives our start time");
        let here = current_thread();
        assert_eq!(current_thread(), here);
        let there = std::thread::spawn(current_thread).join().unwrap();
        assert_ne!(here, there);
    }

    #[test]
    fn liveness_tells_dead_reused_and_alive() {
        assert_eq!(liveness(current_pid(), 0), Liveness::Alive);
        // A reaped child is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(liveness(pid, 0), Liveness::Dead);
        assert!(is_dead(pid));
        // A live process recorded with another start time: a reused pid.
        let parent = rustix::process::getppid()
            .map(|p| p.as_raw_nonzero().get() as u32)
            .unwrap();
        let start = proc_stat(parent).unwrap().start as u32;
        assert_eq!(liveness(parent, start), Liveness::Alive);
        assert_eq!(liveness(parent, start.wrapping_add(1)), Liveness::Reused);
        assert!(!is_dead(parent));
        assert!(!is_dead(0));
    }

    #[test]
    fn raw_lock_word() {
        let l = RawLock {
            word: AtomicU32::new(0),
            start: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
        };
        assert_eq!(l.lock(None), Ok(Acquired::Clean));
        assert_eq!(l.owner_pid(), Some(current_pid()));
        assert_eq!(l.try_lock(), Err(TimedOut));
        let soon = Instant::now() + Duration::from_millis(5);
        assert_eq!(l.lock(Some(soon)), Err(TimedOut));
        assert!(l.unlock());
        assert!(!l.unlock());
        // A word naming a dead process is taken over, and the flag sticks.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        l.word.store(dead, Ordering::Relaxed);
        assert_eq!(l.lock(None), Ok(Acquired::OwnerDied));
        assert!(l.died());
        assert!(l.unlock());
        assert_eq!(l.try_lock(), Ok(Acquired::OwnerDied));
        l.clear_died();
        assert!(l.unlock());
        assert_eq!(l.try_lock(), Ok(Acquired::Clean));
        assert!(l.unlock());
    }
}
