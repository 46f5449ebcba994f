//! Who am I, and is that other process still alive? The one liveness check of
//! the crate: locks, conditions, barriers, queues and the pool all ask here.
//!
//! A process is named by its **pid** plus a **start token**: the low 32 bits
//! of its start time (field 22 of `/proc/PID/stat`, clock ticks since boot),
//! which tells a reused pid from the process that first had it. A token of 0
//! means "not known" (no `/proc`).
//!
//! # The policy
//!
//! [`check`] answers [`Liveness::Dead`] only when it **knows**: `/proc` says
//! the process is a zombie, or that a process with that pid started at
//! another time than the token recorded, or `kill(pid, 0)` says there is no
//! such process. Whenever it cannot tell — `/proc` is not mounted, the stat
//! file cannot be read or parsed, `kill` answers `EPERM` — the answer is
//! [`Liveness::Alive`]: **unknown is not dead**. A wrong "dead" would let a
//! second process take a lock that is still held; a wrong "alive" only makes a
//! waiter wait (for its timeout, if it has one).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What [`check`] found out about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// The process runs, or there is no way to tell (see the module docs).
    Alive,
    /// Certainly gone: no such process, a zombie, or the pid now names a
    /// process that started at another time than the recorded token.
    Dead,
}

/// The state letter and start time of `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), …
    pub(crate) state: u8,
    /// Field 22: start time in clock ticks since boot.
    pub(crate) start: u64,
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may contain anything — spaces, `)`, newlines — so the
/// fields after it are found from the **last** `)`.
pub(crate) fn parse_stat(text: &[u8]) -> Option<Stat> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    // Field 22 (starttime) is the 19th after the state (field 3).
    let start = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start })
}

/// Reads `/proc/PID/stat`. `Err(true)`: no such file (the process is gone,
/// or `/proc` is not mounted); `Err(false)`: any other failure.
fn read_stat(pid: u32) -> Result<Stat, bool> {
    let mut path = [0u8; 32];
    let path = stat_path(pid, &mut path);
    match std::fs::read(path) {
        Ok(text) => parse_stat(&text).ok_or(false),
        Err(e) => Err(e.kind() == std::io::ErrorKind::NotFound),
    }
}

/// `/proc/<pid>/stat` formatted into `buf` (no allocation for the path).
fn stat_path(pid: u32, buf: &mut [u8; 32]) -> &str {
    use std::io::Write;
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cur, "/proc/{pid}/stat");
    let n = cur.position() as usize;
    std::str::from_utf8(&buf[..n]).unwrap_or("/proc/self/stat")
}

/// The start token of process `pid` (low 32 bits of its start time); 0 if
/// it cannot be read.
pub(crate) fn start_token(pid: u32) -> u32 {
    read_stat(pid).map(|s| s.start as u32).unwrap_or(0)
}

/// `kill(pid, 0)`: `Dead` only for `ESRCH`.
fn probe(pid: u32) -> Liveness {
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(p) if rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH) => {
            Liveness::Dead
        }
        // Signal 0 accepted, or `EPERM` (it exists, we may not signal it).
        Some(_) => Liveness::Alive,
        // Not a valid pid (0 or > i32::MAX): nobody can hold it.
        None => Liveness::Dead,
    }
}

/// Is process `pid`, recorded with start token `token` (0 = unknown), alive?
/// See the module docs for the policy: `Dead` only when known.
pub(crate) fn check(pid: u32, token: u32) -> Liveness {
    if pid == current_pid() {
        // Our own pid: alive — unless the token says the record was made by
        // an earlier process that had our pid.
        return if token != 0 && current_token() != 0 && token != current_token() {
            Liveness::Dead
        } else {
            Liveness::Alive
        };
    }
    match read_stat(pid) {
        Ok(s) if matches!(s.state, b'Z' | b'X' | b'x') => Liveness::Dead,
        Ok(s) if token != 0 && s.start as u32 != token => Liveness::Dead,
        Ok(_) => Liveness::Alive,
        // No stat file: gone, or no `/proc` at all — ask the kernel.
        Err(true) => probe(pid),
        // Unreadable or unparsable: cannot tell.
        Err(false) => Liveness::Alive,
    }
}

/// `true` unless process `pid` is certainly gone (pid reuse unchecked: a
/// reused pid looks alive). `0` is "nobody recorded" and counts as alive.
/// The one-line replacement for any ad-hoc `/proc/PID/stat` check.
pub(crate) fn is_alive(pid: u32) -> bool {
    pid == 0 || check(pid, 0) == Liveness::Alive
}

// ---------------------------------------------------------------------------
// Who am I (cached; forgotten in a forked child)
// ---------------------------------------------------------------------------

/// This process's identity, `pid | token << 32`; 0 until looked up (and
/// again in a forked child). One word, so one load answers both.
static IDENTITY: AtomicU64 = AtomicU64::new(0);
static ATFORK: AtomicU32 = AtomicU32::new(0);
const ATFORK_DONE: u32 = u32::MAX;

extern "C" fn forget_identity_in_child() {
    // Runs in a forked child before `fork()` returns there: the cached
    // identity is the parent's and must be looked up again. Only an atomic
    // store: async-signal-safe.
    IDENTITY.store(0, Ordering::Release);
}

/// This process's `pid | start_token << 32`, cached (and forgotten in a
/// forked child): the value a lock word holds while this process holds it.
#[inline]
pub(crate) fn current_identity() -> u64 {
    let id = IDENTITY.load(Ordering::Acquire);
    if id != 0 {
        return id;
    }
    init_identity()
}

/// This process's id, cached (and forgotten in a forked child).
#[inline]
pub(crate) fn current_pid() -> u32 {
    current_identity() as u32
}

/// This process's start token (0 if `/proc` cannot say).
#[inline]
pub(crate) fn current_token() -> u32 {
    (current_identity() >> 32) as u32
}

#[cold]
fn init_identity() -> u64 {
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    ensure_atfork(pid);
    let id = pid as u64 | (start_token(pid) as u64) << 32;
    // Stored only once the fork handler is registered: a child forked after
    // this store has the handler, which forgets it.
    IDENTITY.store(id, Ordering::Release);
    id
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

/// Asks the kernel to SIGKILL this process when its parent dies (daemon
/// children); exits at once if the parent is already gone.
pub(crate) fn set_parent_death_signal(parent_pid: i32) {
    // SAFETY: plain prctl/getppid syscalls, async-signal-safe (this also runs
    // between fork and exec in the spawn launcher).
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != parent_pid {
            libc::_exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parentheses() {
        let tail = b" S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21\n";
        for name in [&b"(a b) c)"[..], b"(x)", b"() ) (x)", b"(new\nline)"] {
            let mut text = b"77 ".to_vec();
            text.extend_from_slice(name);
            text.extend_from_slice(tail);
            assert_eq!(
                parse_stat(&text),
                Some(Stat {
                    state: b'S',
                    start: 424242
                }),
                "{}",
                String::from_utf8_lossy(&text)
            );
        }
        assert_eq!(parse_stat(b"77 (no close S 1 2"), None);
        assert_eq!(parse_stat(b"77 (short) S 1 2"), None);
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn identity_and_checks() {
        let me = current_pid();
        assert_eq!(me, std::process::id());
        assert_ne!(current_token(), 0, "/proc gives our start time");
        assert_eq!(check(me, current_token()), Liveness::Alive);
        assert_eq!(check(me, current_token().wrapping_add(1)), Liveness::Dead);
        // A reaped child is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(check(pid, 0), Liveness::Dead);
        assert!(!is_alive(pid));
        // A live process: alive with its token or none; another token = reused.
        let parent = rustix::process::getppid()
            .map(|p| p.as_raw_nonzero().get() as u32)
            .unwrap();
        let tok = start_token(parent);
        assert_ne!(tok, 0);
        assert_eq!(check(parent, tok), Liveness::Alive);
        assert_eq!(check(parent, 0), Liveness::Alive);
        assert_eq!(check(parent, tok.wrapping_add(1)), Liveness::Dead);
        assert!(is_alive(parent));
        assert!(is_alive(0));
    }

    /// A zombie (exited, not reaped) is dead.
    #[test]
    fn zombie_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Wait until it has exited without reaping it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while read_stat(pid).map(|s| s.state) != Ok(b'Z') {
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(check(pid, 0), Liveness::Dead);
        child.wait().unwrap();
    }
}
