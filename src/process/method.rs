//! Start methods and the process-wide default (CPython's
//! `set_start_method` / `get_start_method` / `get_all_start_methods`).

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU8, Ordering};

/// How a child process is started.
///
/// The default is [`Spawn`](StartMethod::Spawn): it is the only method that is
/// safe in a multithreaded parent (a test harness, a program with a thread
/// pool, anything holding a lock in another thread at the moment of `fork`).
/// [`Fork`](StartMethod::Fork) is much faster but inherits the parent's whole
/// memory, including locks that other threads held at the time: use it from a
/// single-threaded parent, as CPython's documentation advises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartMethod {
    /// `fork()`: the child is a copy of the parent and runs the target directly.
    ///
    /// multiproc's own code takes no lock in the child between the fork and
    /// the target, and std's stdout is flushed before the fork (waiting for a
    /// thread that holds its lock, as CPython flushes `sys.stdout`), so a
    /// child neither repeats its parent's buffered output nor finds stdout
    /// locked. Locks of the program's own are its concern.
    Fork,
    /// `posix_spawn()` of the current binary (a `vfork` + `exec`: nothing of
    /// the parent's memory is copied, so the cost does not grow with the
    /// parent's size): the child starts fresh, enters the library in
    /// [`init`](crate::init) and receives its target and arguments over a
    /// socket.
    #[default]
    Spawn,
    /// A fork server (CPython's `forkserver`): a single-threaded server
    /// process, started on first use as a fresh copy of the binary, forks
    /// each child; the child receives its target and arguments as a spawned
    /// child does. Safe in a multithreaded parent (the child copies the
    /// server, not the parent) and cheaper than spawn (no `exec`). Functions
    /// to run once in the server: [`set_forkserver_preload`](crate::process::set_forkserver_preload).
    /// Needs pidfds (Linux 5.3+): see [`is_available`](Self::is_available).
    Forkserver,
}

impl StartMethod {
    /// Python's name for the method (`"fork"`, `"spawn"`, `"forkserver"`).
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::Forkserver => "forkserver",
        }
    }

    /// Parses Python's name of a method.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a name that is not a start method.
    pub fn from_name(name: &str) -> Result<StartMethod> {
        match name {
            "fork" => Ok(StartMethod::Fork),
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::Forkserver),
            other => Err(Error::Invalid(format!("cannot find context for {other:?}"))),
        }
    }

    /// Whether this system can start processes with the method (forkserver
    /// needs pidfds, Linux 5.3+).
    pub fn is_available(self) -> bool {
        match self {
            StartMethod::Forkserver => super::forkserver::supported(),
            _ => true,
        }
    }

    fn code(self) -> u8 {
        match self {
            StartMethod::Fork => 1,
            StartMethod::Spawn => 2,
            StartMethod::Forkserver => 3,
        }
    }
}

impl std::fmt::Display for StartMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StartMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<StartMethod> {
        StartMethod::from_name(s)
    }
}

/// 0 while no method was set; otherwise the set method's code.
static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(0);

/// Sets the process-wide default start method (Python's
/// `set_start_method(method, force=False)`).
///
/// Call it once, early in `main`. A second call fails unless `force` is
/// true, as in CPython ("context has already been set"), so two parts of a
/// program cannot silently fight over the default.
///
/// ```
/// use multiproc::{get_start_method, set_start_method, StartMethod};
///
/// set_start_method(StartMethod::Fork, false).unwrap();
/// assert!(set_start_method(StartMethod::Spawn, false).is_err());
/// set_start_method(StartMethod::Spawn, true).unwrap();
/// assert_eq!(get_start_method(), StartMethod::Spawn);
/// ```
///
/// # Errors
///
/// [`Error::InvalidState`] if a method was already set and `force` is false;
/// [`Error::Unsupported`] if `method` is not available in this build.
pub fn set_start_method(method: StartMethod, force: bool) -> Result<()> {
    if !method.is_available() {
        return Err(Error::unsupported(format!(
            "the {method} start method (not available in this build)"
        )));
    }
    let code = method.code();
    if force {
        DEFAULT_METHOD.store(code, Ordering::Relaxed);
        return Ok(());
    }
    DEFAULT_METHOD
        .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed)
        .map(|_| ())
        .map_err(|_| {
            Error::InvalidState(
                "context has already been set (pass force = true to change the start method)"
                    .into(),
            )
        })
}

/// The process-wide default start method: the one set with
/// [`set_start_method`], else [`StartMethod::Spawn`].
pub fn get_start_method() -> StartMethod {
    match DEFAULT_METHOD.load(Ordering::Relaxed) {
        1 => StartMethod::Fork,
        3 => StartMethod::Forkserver,
        _ => StartMethod::Spawn,
    }
}

/// The start methods this build can use, the default first (Python's
/// `get_all_start_methods()`).
pub fn get_all_start_methods() -> Vec<StartMethod> {
    let first = get_start_method();
    let mut all = vec![first];
    all.extend(
        [
            StartMethod::Spawn,
            StartMethod::Fork,
            StartMethod::Forkserver,
        ]
        .into_iter()
        .filter(|m| *m != first && m.is_available()),
    );
    all
}
