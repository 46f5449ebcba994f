//! Start methods and contexts.

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
    /// locked. The target's own locks are the caller's concern.
    Fork,
    /// `fork()` + `exec()` of the current binary: the child starts fresh,
    /// enters the library in [`init`](crate::init) and receives its target
    /// and arguments over a socket.
    #[default]
    Spawn,
    /// A fork server (not built yet: starting with it returns an error).
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
    pub fn from_name(name: &str) -> Result<StartMethod> {
        match name {
            "fork" => Ok(StartMethod::Fork),
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::Forkserver),
            other => Err(Error::Invalid(format!("cannot find context for {other:?}"))),
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

static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(0);

/// Sets the process-wide default start method (Python's `set_start_method`).
pub fn set_start_method(method: StartMethod) {
    DEFAULT_METHOD.store(method.code(), Ordering::Relaxed);
}

/// The process-wide default start method.
pub fn get_start_method() -> StartMethod {
    match DEFAULT_METHOD.load(Ordering::Relaxed) {
        1 => StartMethod::Fork,
        3 => StartMethod::Forkserver,
        _ => StartMethod::Spawn,
    }
}

/// A start method to build processes with (Python's `get_context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

impl Context {
    /// A context for `method`.
    pub fn new(method: StartMethod) -> Context {
        Context { method }
    }

    /// The context's start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// A process builder using this context's start method.
    pub fn process(&self) -> crate::process::Builder {
        crate::process::Builder::new().start_method(self.method)
    }
}

/// Python's `get_context(name)`: `None` gives the default method.
pub fn get_context(name: Option<&str>) -> Result<Context> {
    Ok(Context::new(match name {
        None => get_start_method(),
        Some(n) => StartMethod::from_name(n)?,
    }))
}

/// The number of CPUs this process may run on (its affinity mask), as
/// `os.process_cpu_count()`; at least 1.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
