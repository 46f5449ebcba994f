//! The shared futex-word logic under every primitive of this module: who am
//! I (process id, start token, thread id), is another process still alive
//! (both from [`crate::sys::liveness`]), and the robust lock word itself
//! ([`RawLock`]).
//!
//! # The lock word
//!
//! A [`RawLock`] is 16 bytes of shared memory, all zero when unlocked:
//!
//! | field   | meaning |
//! |---------|---------|
//! | `state` | 64 bits, `0` = unlocked. Low half (the futex word): the holder's **process id** (bits 0..30) plus [`WAITERS`] (bit 31) when somebody may sleep on it. High half: the holder's **start token** (low 32 bits of its start time, 0 if unknown), which tells a reused pid from the holder |
//! | `flags` | [`DIED`] once a holder died holding the lock, until cleared |
//!
//! Uncontended, acquire is one compare-and-swap (`0 → (token, pid)`) and
//! release one swap (`→ 0`); neither enters the kernel. Contended, an acquirer
//! spins briefly, then sets [`WAITERS`] and sleeps on a process-shared futex
//! (the low half of `state`), with a bounded timeout ([`CHECK_INTERVAL`]):
//! each time it wakes without the lock it checks that the holder's process is
//! still alive ([`liveness::check`]). If the holder is certainly gone (no such
//! process, a zombie, or its pid now names a process with another start
//! token) the waiter takes the lock over with a compare-and-swap from the
//! exact state it checked — so exactly one waiter wins — and sets [`DIED`],
//! which every later acquirer sees until it is cleared.
//!
//! Why not the kernel's robust-futex list (what `PTHREAD_MUTEX_ROBUST` uses)?
//! glibc registers the list head for every thread, so a library cannot add its
//! own, and pthread robust mutexes record thread ids, so a lock acquired by one
//! thread and released by another (legal for Python's `Lock`) would be
//! reported dead when the acquiring thread exits. Owner liveness per
//! *process* matches what a `multiprocessing` user means by "the holder died".

use crate::sys::futex::Wake;
use crate::sys::liveness::{self, Liveness};
use std::cell::Cell;
use std::time::{Duration, Instant};

#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Bit 31 of the futex word (the low half of `state`): a waiter may be
/// sleeping; release must wake one.
pub(crate) const WAITERS: u32 = 1 << 31;
/// The holder's process id (Linux pids are below 2^22).
pub(crate) const PID_MASK: u32 = (1 << 30) - 1;
/// Bit 0 of `flags`: a holder died while holding the lock.
pub(crate) const DIED: u32 = 1;

/// How long a waiter sleeps before it checks that the holder still lives.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How many times an acquirer polls the word before it goes to sleep.
#[cfg(not(loom))]
const SPIN: u32 = 200;
#[cfg(loom)]
const SPIN: u32 = 1;

// ---------------------------------------------------------------------------
// Who am I
// ---------------------------------------------------------------------------

static NEXT_THREAD: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

thread_local! {
    static THREAD: Cell<u32> = const { Cell::new(0) };
}

/// This process's id, cached (and forgotten in a forked child).
#[inline]
pub(crate) fn current_pid() -> u32 {
    liveness::current_pid()
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
        let v = NEXT_THREAD
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .max(1);
        t.set(v);
        v
    })
}

/// `true` if process `pid` is certainly gone (dead, zombie). Used for waiters
/// recorded in tables (conditions, barriers), where a reused pid only delays
/// the detection. `0` (nobody) is not dead.
pub(crate) fn is_dead(pid: u32) -> bool {
    !liveness::is_alive(pid)
}

// ---------------------------------------------------------------------------
// What the lock word needs from the system: the real one, or loom's model
// ---------------------------------------------------------------------------

#[cfg(not(loom))]
mod os {
    use super::{AtomicU64, Liveness};
    use crate::sys::{futex, liveness};
    use std::time::Instant;

    /// This process's `state` value when it holds the lock.
    #[inline]
    pub(super) fn me() -> u64 {
        // `pid | token << 32`: exactly `pack(pid, token)` (pids < 2^22).
        liveness::current_identity()
    }

    pub(super) fn check(pid: u32, token: u32) -> Liveness {
        liveness::check(pid, token)
    }

    pub(super) fn wait(
        word: &AtomicU64,
        expected: u32,
        deadline: Option<Instant>,
    ) -> crate::error::Result<futex::Wake> {
        futex::wait_low(word, expected, deadline)
    }

    #[inline]
    pub(super) fn wake(word: &AtomicU64) {
        futex::wake_low(word, 1);
    }
}

/// loom's model of the system: each model thread is a "process" with the pid
/// it sets; pids from [`os::DEAD_FROM`] up are dead; a process's token is
/// `pid * 7`; a futex wait reports a timeout (so every wait runs the
/// liveness check).
#[cfg(loom)]
pub(crate) mod os {
    use super::{pack, AtomicU64, Liveness};
    use crate::sys::futex::Wake;
    use std::time::Instant;

    /// Pids at or above this are dead processes.
    pub(crate) const DEAD_FROM: u32 = 100;

    loom::thread_local! {
        static ME: std::cell::Cell<u32> = std::cell::Cell::new(1);
        static WAITS: std::cell::Cell<u32> = std::cell::Cell::new(0);
    }

    /// Makes the calling model thread process `pid`.
    pub(crate) fn become_process(pid: u32) {
        ME.with(|m| m.set(pid));
    }

    pub(crate) fn token(pid: u32) -> u32 {
        pid * 7
    }

    pub(super) fn me() -> u64 {
        let pid = ME.with(|m| m.get());
        pack(pid, token(pid))
    }

    pub(super) fn check(pid: u32, tok: u32) -> Liveness {
        if pid >= DEAD_FROM || (tok != 0 && tok != token(pid)) {
            Liveness::Dead
        } else {
            Liveness::Alive
        }
    }

    /// A futex wait that times out. Only every third one yields to the other
    /// threads: a waiter can thus run two liveness checks in a row while
    /// the holder is stalled — as on a machine where the holder is
    /// descheduled for 100 ms — which is the window where the earlier
    /// protocol (start time stored after the CAS, "seen twice = dead")
    /// declared a live holder dead. That protocol fails
    /// `live_holder_is_never_taken_over` under this model.
    pub(super) fn wait(
        _word: &AtomicU64,
        _expected: u32,
        _deadline: Option<Instant>,
    ) -> crate::error::Result<Wake> {
        let n = WAITS.with(|w| {
            w.set(w.get() + 1);
            w.get()
        });
        if n % 3 == 0 {
            loom::thread::yield_now();
        }
        Ok(Wake::TimedOut)
    }

    pub(super) fn wake(_word: &AtomicU64) {}
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

/// The `state` of a lock held by process `pid` with start token `token`
/// (what `liveness::current_identity` caches for this process).
#[cfg(any(test, loom))]
#[inline]
fn pack(pid: u32, token: u32) -> u64 {
    (token as u64) << 32 | (pid & PID_MASK) as u64
}

/// The futex word: the low half of `state`.
#[inline]
fn low(state: u64) -> u32 {
    state as u32
}

const WAITERS64: u64 = WAITERS as u64;

/// A robust, process-shared lock word in shared memory (see the module docs).
/// All zeroes is a valid unlocked lock.
///
/// # Invariant
///
/// `state` is `0` exactly when the lock is free. Otherwise its pid (low half,
/// without [`WAITERS`]) and its start token (high half) were written by **one**
/// compare-and-swap — the acquisition (or take-over) that made that process
/// the holder — and stay until the holder's release swaps the whole word
/// back to `0`. No other write changes them ([`WAITERS`] is only ever added
/// by a compare-and-swap from the exact word seen). So a (pid, token) pair
/// read in one load names a process that held the lock when it was read, and
/// a take-over compare-and-swap from that exact word succeeds only if that
/// same process is still the holder. Since [`liveness::check`] answers
/// `Dead` only for a process that is certainly gone, a live holder is never
/// taken over: there are never two holders.
#[repr(C, align(8))]
pub(crate) struct RawLock {
    state: AtomicU64,
    flags: AtomicU32,
    _reserved: AtomicU32,
}

impl std::fmt::Debug for RawLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawLock")
            .field("owner", &self.owner_pid())
            .field("died", &self.died())
            .finish()
    }
}

/// Bytes a [`RawLock`] occupies in shared memory (alignment 8).
pub(crate) const RAW_LOCK_BYTES: usize = std::mem::size_of::<RawLock>();

impl RawLock {
    /// A free lock (tests and loom models; shared memory starts zeroed).
    #[allow(dead_code)]
    pub(crate) fn new() -> RawLock {
        RawLock {
            state: AtomicU64::new(0),
            flags: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
        }
    }

    #[inline]
    fn acquired(&self) -> Acquired {
        if self.flags.load(Ordering::Relaxed) & DIED != 0 {
            Acquired::OwnerDied
        } else {
            Acquired::Clean
        }
    }

    /// Acquires, waiting until `deadline` (`None` = forever).
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Acquired, TimedOut> {
        let me = os::me();
        if self
            .state
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(self.acquired());
        }
        self.lock_slow(me, deadline)
    }

    /// Acquires if the lock is free right now (one compare-and-swap, no
    /// liveness check): the uncontended fast path.
    #[inline]
    pub(crate) fn lock_if_free(&self) -> Option<Acquired> {
        self.state
            .compare_exchange(0, os::me(), Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| self.acquired())
    }

    /// Acquires if free now, or if its holder is dead.
    pub(crate) fn try_lock(&self) -> Result<Acquired, TimedOut> {
        let me = os::me();
        loop {
            let v = self.state.load(Ordering::Relaxed);
            if v == 0 {
                if self
                    .state
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(self.acquired());
                }
                continue;
            }
            if self.holder_dead(v) {
                if let Some(a) = self.take_over(v, me) {
                    return Ok(a);
                }
                continue;
            }
            return Err(TimedOut);
        }
    }

    /// `true` if the holder named by `state` value `v` is certainly gone.
    fn holder_dead(&self, v: u64) -> bool {
        os::check(low(v) & PID_MASK, (v >> 32) as u32) == Liveness::Dead
    }

    /// Replaces a dead holder's state `seen` by ours; `None` if it changed.
    fn take_over(&self, seen: u64, me: u64) -> Option<Acquired> {
        // Keep WAITERS: other processes may sleep on the word.
        self.state
            .compare_exchange(seen, me | WAITERS64, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        self.flags.fetch_or(DIED, Ordering::Relaxed);
        Some(Acquired::OwnerDied)
    }

    #[cold]
    fn lock_slow(&self, me: u64, deadline: Option<Instant>) -> Result<Acquired, TimedOut> {
        for _ in 0..SPIN {
            let v = self.state.load(Ordering::Relaxed);
            if v == 0 {
                if self
                    .state
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(self.acquired());
                }
            } else if v & WAITERS64 != 0 {
                break;
            }
            #[cfg(loom)]
            loom::hint::spin_loop();
            #[cfg(not(loom))]
            std::hint::spin_loop();
        }
        loop {
            let v = self.state.load(Ordering::Relaxed);
            if v == 0 {
                // We may have been one of several sleepers: keep WAITERS set.
                if self
                    .state
                    .compare_exchange(0, me | WAITERS64, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(self.acquired());
                }
                continue;
            }
            let want = v | WAITERS64;
            if v & WAITERS64 == 0
                && self
                    .state
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
            match os::wait(&self.state, low(want), Some(until)) {
                Ok(Wake::Retry) => continue,
                Ok(Wake::TimedOut) => {}
                Err(_) => std::thread::yield_now(),
            }
            // Woken by the clock: is the holder still there? One load gives
            // the pid and token together (see the invariant on `RawLock`).
            let cur = self.state.load(Ordering::Relaxed);
            if cur != 0 && self.holder_dead(cur) {
                if let Some(a) = self.take_over(cur, me) {
                    return Ok(a);
                }
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(TimedOut);
            }
        }
    }

    /// Releases. `false` if the lock was not held.
    #[inline]
    pub(crate) fn unlock(&self) -> bool {
        let prev = self.state.swap(0, Ordering::Release);
        if prev & WAITERS64 != 0 {
            os::wake(&self.state);
        }
        prev != 0
    }

    /// `true` while somebody holds the lock.
    pub(crate) fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != 0
    }

    /// The holder's process id, if held.
    pub(crate) fn owner_pid(&self) -> Option<u32> {
        match low(self.state.load(Ordering::Relaxed)) & PID_MASK {
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn identity_is_cached_and_sane() {
        let pid = current_pid();
        assert_eq!(pid, std::process::id());
        assert_eq!(current_pid(), pid);
        let here = current_thread();
        assert_eq!(current_thread(), here);
        let there = std::thread::spawn(current_thread).join().unwrap();
        assert_ne!(here, there);
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        dead
    }

    #[test]
    fn raw_lock_word() {
        let l = RawLock::new();
        assert_eq!(l.lock(None), Ok(Acquired::Clean));
        assert_eq!(l.owner_pid(), Some(current_pid()));
        assert_eq!(l.try_lock(), Err(TimedOut));
        let soon = Instant::now() + Duration::from_millis(5);
        assert_eq!(l.lock(Some(soon)), Err(TimedOut));
        assert!(l.unlock());
        assert!(!l.unlock());
        // A word naming a dead process is taken over, and the flag sticks.
        l.state.store(dead_pid() as u64, Ordering::Relaxed);
        assert_eq!(l.lock(None), Ok(Acquired::OwnerDied));
        assert!(l.died());
        assert!(l.unlock());
        assert_eq!(l.try_lock(), Ok(Acquired::OwnerDied));
        l.clear_died();
        assert!(l.unlock());
        assert_eq!(l.try_lock(), Ok(Acquired::Clean));
        assert!(l.unlock());
    }

    /// The state names holder and token together: a live process recorded
    /// with its own token is never taken over; with another token (its pid
    /// was reused) it is; release clears the token with the pid.
    #[test]
    fn token_travels_with_the_pid() {
        let l = RawLock::new();
        let parent = rustix::process::getppid()
            .map(|p| p.as_raw_nonzero().get() as u32)
            .unwrap();
        let tok = liveness::start_token(parent);
        l.state.store(pack(parent, tok), Ordering::Relaxed);
        assert_eq!(l.try_lock(), Err(TimedOut), "a live holder keeps the lock");
        l.state
            .store(pack(parent, tok.wrapping_add(1)), Ordering::Relaxed);
        assert_eq!(
            l.try_lock(),
            Ok(Acquired::OwnerDied),
            "a reused pid is dead"
        );
        assert_eq!(
            l.state.load(Ordering::Relaxed) >> 32,
            liveness::current_token() as u64
        );
        assert!(l.unlock());
        assert_eq!(
            l.state.load(Ordering::Relaxed),
            0,
            "release clears the token too"
        );
    }
}

/// Model checks of the lock word with loom (every interleaving of the model
/// threads' atomic operations):
///
/// ```text
/// RUSTFLAGS="--cfg loom" cargo test --release --lib sync::raw::loom_model
/// ```
#[cfg(all(test, loom))]
#[path = "raw_loom.rs"]
mod loom_model;
