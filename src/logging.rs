//! What the crate reports, through the [`log`] facade, and
//! [`log_to_stderr`] to see it in one line (CPython's
//! `multiprocessing.log_to_stderr()`).
//!
//! multiproc never prints diagnostics to standard error itself: it reports
//! them as `log` records, which go wherever the program's logger sends them
//! (nowhere if it installs none, as CPython's `multiprocessing` logger is
//! silent until configured). `log` rather than `tracing`: it is the smaller
//! dependency, every `tracing` subscriber can take `log` records (the
//! `tracing-log` bridge), and the crate has events to report, not spans.
//!
//! | target | level | when (CPython's equivalent) |
//! |---|---|---|
//! | `multiproc::pool` | warn | a pool worker ended with a non-zero exit code or a signal and is replaced (`-9` for `SIGKILL`) |
//! | `multiproc::pool` | debug | a pool worker exited normally (`maxtasksperchild`, `close`) |
//! | `multiproc::pool` | error | the pool's supervisor thread met an error it carries on after |
//! | `multiproc::connection` | warn | a client failed the handshake at a [`Listener`](crate::Listener) (wrong authkey, garbage, stall) |
//! | `multiproc::process::fork` | warn | `fork` from a process with several threads (CPython 3.12's `DeprecationWarning`) |
//! | `multiproc::resource_tracker` | warn | leaked shared memory unlinked at shutdown; a tracker that died and is relaunched |
//! | `multiproc::mpi` | warn/error | MPI set-up, a worker rank that cannot serve, errors while stopping the pool |
//!
//! # Processes without the program's logger
//!
//! The resource tracker and MPI worker ranks run the crate's code only: the
//! program's `main` never gets to install a logger there. Their warnings
//! would be lost, where CPython's tracker prints its leak warning on
//! standard error. So these processes install the crate's own stderr
//! logger (the one [`log_to_stderr`] installs, at level `Warn`) before they
//! start work: their records reach standard error, formatted as CPython's
//! (`[WARNING/resource_tracker] ...`).
//!
//! Not logging: a child's panic report, a child that cannot start
//! (bootstrap failure) and an MPI rank that cannot set MPI up in
//! [`init`](crate::init) write to their standard error directly, as CPython
//! prints the traceback of a dying process; those are the process's last
//! words before it exits, written before any logger could exist.
//!
//! # Fork safety
//!
//! A logger may take a lock per record (a mutex, std's stderr lock); a
//! child forked while another thread held it would deadlock on its first
//! record. So the crate logs in the parent: a worker's death is logged by
//! the parent that reaps it, a fork from a multithreaded parent before the
//! fork. Nothing is logged between `fork` and the child's target. The
//! logger [`log_to_stderr`] installs takes no lock at all (one `write(2)`
//! per record), so a forked child can log with it safely.
//!
//! In a process forked from a parent that had other threads (e.g. a
//! manager's server started by *fork*), the crate's own records go only to
//! that lock-free logger: with any other logger they are dropped, since its
//! lock may have been held at the fork. (Once [`init`](crate::init) ran, a
//! `pthread_atfork` handler notes before each fork whether other threads
//! exist.)
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Once, OnceLock};

/// Logs a record of the crate through `log` unless this process was forked
/// from a multithreaded parent and the logger is not the lock-free one (see
/// the module docs): `mp_log!(warn, target: "multiproc::pool", "...", ..)`.
macro_rules! mp_log {
    ($level:ident, target: $target:expr, $($arg:tt)+) => {
        if $crate::logging::may_log() {
            log::$level!(target: $target, $($arg)+);
        }
    };
}
pub(crate) use mp_log;

/// Set in the parent just before each `fork` (see [`guard_forks`]): whether
/// other threads ran then. The child inherits the value.
static THREADS_AT_FORK: AtomicBool = AtomicBool::new(false);
/// Set in a child forked while its parent had other threads.
static FORKED_FROM_THREADS: AtomicBool = AtomicBool::new(false);

extern "C" fn before_fork() {
    THREADS_AT_FORK.store(crate::sys::thread_count() > 1, Relaxed);
}

extern "C" fn in_forked_child() {
    if THREADS_AT_FORK.load(Relaxed) {
        FORKED_FROM_THREADS.store(true, Relaxed);
    }
}

/// Called by [`init`](crate::init): notes, at each `fork`, whether the
/// child may have inherited a logger's lock held by another thread.
pub(crate) fn guard_forks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers two `extern "C"` handlers that only make a
        // `stat` syscall (in the parent, before the fork) and touch atomics
        // (in the child: async-signal-safe).
        unsafe { libc::pthread_atfork(Some(before_fork), None, Some(in_forked_child)) };
    });
}

/// Whether the crate may log here: not in a child forked from a
/// multithreaded parent, unless the logger takes no lock.
pub(crate) fn may_log() -> bool {
    !FORKED_FROM_THREADS.load(Relaxed) || ours_installed()
}

/// This process's name (`current_process().name`), registered by the
/// `process` module (above this one) in [`init`](crate::init).
static PROCESS_NAME: OnceLock<fn() -> String> = OnceLock::new();

/// Called by [`init`](crate::init): where the records' process name comes
/// from.
pub(crate) fn set_process_name_source(f: fn() -> String) {
    let _ = PROCESS_NAME.set(f);
}

/// The logger of [`log_to_stderr`]: multiproc's records, one `write(2)` each.
struct StderrLogger;

static STDERR_LOGGER: StderrLogger = StderrLogger;

/// CPython's level names (`logging.getLevelName`).
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "ERROR",
        Level::Warn => "WARNING",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

/// Whether a record is multiproc's own (target `multiproc` or below).
fn is_ours(target: &str) -> bool {
    target == "multiproc" || target.starts_with("multiproc::")
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        is_ours(metadata.target()) && metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // CPython's format: '[%(levelname)s/%(processName)s] %(message)s'.
        let name = PROCESS_NAME
            .get()
            .map_or_else(|| "MainProcess".into(), |f| f());
        let line = format!(
            "[{}/{name}] {}\n",
            level_name(record.level()),
            record.args()
        );
        write_stderr(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Writes all of `bytes` to descriptor 2 without std's stderr lock (which a
/// thread of the process this one was forked from may have held). One
/// `write` for a line of up to `PIPE_BUF` bytes: lines of several processes
/// sharing a pipe do not interleave.
pub(crate) fn write_stderr(mut bytes: &[u8]) {
    // `Stderr::as_fd` borrows descriptor 2 without taking the lock.
    let stderr = std::io::stderr();
    let fd = stderr.as_fd();
    while !bytes.is_empty() {
        match rustix::io::write(fd, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// Sends multiproc's log records of `level` and above to standard error, as
/// `[LEVEL/process-name] message` lines (Python's
/// `multiprocessing.log_to_stderr(level)`). Calling it again changes the
/// level.
///
/// It installs a minimal [`log`] logger that prints only multiproc's
/// records (targets `multiproc::*`), as CPython's configures only the
/// `multiprocessing` logger; a program that wants other crates' records
/// too installs a full logger (`env_logger`, `tracing-subscriber`, ...)
/// instead, which receives multiproc's records as well. The logger takes no
/// lock, so children forked after the call log safely through it. The
/// level is `log`'s global maximum: it also filters the other crates'
/// records.
///
/// ```
/// use log::LevelFilter;
///
/// multiproc::log_to_stderr(LevelFilter::Info)?;
/// // From now on, e.g.: "[WARNING/MainProcess] pool worker 4242 exited with
/// // exitcode -9 (it was replaced)".
/// log::warn!(target: "multiproc::example", "shown");
/// log::debug!(target: "multiproc::example", "not shown at Info");
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidState`] if another logger is already installed (the
/// `log` facade takes one per process); multiproc's records go to that one.
pub fn log_to_stderr(level: LevelFilter) -> Result<()> {
    if log::set_logger(&STDERR_LOGGER).is_err() && !ours_installed() {
        return Err(Error::InvalidState(
            "another logger is installed; multiproc's records go to it".into(),
        ));
    }
    log::set_max_level(level);
    Ok(())
}

/// Whether the installed logger is [`STDERR_LOGGER`].
fn ours_installed() -> bool {
    std::ptr::addr_eq(log::logger(), &STDERR_LOGGER as &dyn Log)
}

/// In a process of the crate's own (the resource tracker, an MPI worker
/// rank), where the program never installs a logger: sends warnings and
/// errors to standard error (see the module docs). Does nothing if a logger
/// is installed already.
pub(crate) fn install_for_helper_process() {
    if log::set_logger(&STDERR_LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Warn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_multiproc_targets_are_ours() {
        assert!(is_ours("multiproc"));
        assert!(is_ours("multiproc::pool"));
        assert!(!is_ours("multiprocessing"));
        assert!(!is_ours("hyper::client"));
    }

    #[test]
    fn level_names_are_cpythons() {
        assert_eq!(level_name(Level::Warn), "WARNING");
        assert_eq!(level_name(Level::Error), "ERROR");
        assert_eq!(level_name(Level::Debug), "DEBUG");
    }
}
