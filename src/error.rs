//! The crate's one error type.
//!
//! Every variant names something a caller can act on: retry after a
//! [`Timeout`](Error::Timeout), stop reading after [`Closed`](Error::Closed),
//! repair shared state after [`OwnerDied`](Error::OwnerDied), and so on.

use std::fmt;
use std::io;

/// What went wrong in a `multiproc` call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A blocking call's timeout elapsed before it could complete.
    #[error("timed out")]
    Timeout,
    /// A non-blocking or timed `get` found nothing to take (Python's `queue.Empty`).
    #[error("empty")]
    Empty,
    /// A non-blocking or timed `put` found no room (Python's `queue.Full`).
    #[error("full")]
    Full,
    /// The peer or the object is closed: a connection whose other end is gone
    /// (Python's `EOFError`), a queue after `close()`, a pool after `close()`.
    #[error("closed")]
    Closed,
    /// The connection handshake failed: wrong authkey, or a peer that does not
    /// speak the protocol.
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// A child process ended without returning a value: it panicked, exited
    /// with a non-zero code, or was killed by a signal.
    #[error("{0}")]
    ProcessFailed(Box<ProcessFailure>),
    /// A spawned child could not be started: its bootstrap message was
    /// corrupt or truncated, its target could not be found, or its binary is
    /// not the parent's.
    #[error("child bootstrap failed: {0}")]
    Bootstrap(String),
    /// The previous holder of a process-shared lock died while holding it.
    /// The lock is now held by the caller; the protected state may need repair.
    #[error("the previous owner of the lock died while holding it")]
    OwnerDied,
    /// A barrier was aborted, reset, or one of its parties died.
    #[error("the barrier is broken")]
    BrokenBarrier,
    /// A pool worker died while it held this task, or the pool was terminated.
    #[error("pool worker died (exitcode {exitcode}) while running this task")]
    WorkerDied {
        /// The worker's exit code in Python's convention (`-SIG` for a signal).
        exitcode: i32,
    },
    /// The pool cannot run tasks any more (terminated, or not running).
    #[error("the pool is not running")]
    BrokenPool,
    /// A message is larger than the receiver accepts.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The announced length.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// A value failed to encode or decode.
    #[error("codec error: {0}")]
    Codec(String),
    /// A call was made with an argument or in a state that makes no sense:
    /// releasing a lock one does not hold, `task_done` called too often, …
    /// (Python's `ValueError` / `RuntimeError`, or `AssertionError` for a lock).
    #[error("{0}")]
    Invalid(String),
    /// A manager's server could not carry out a call (Python's
    /// `multiprocessing.managers.RemoteError`): the method panicked, the
    /// object or method does not exist, or the arguments did not decode. The
    /// server keeps running. A registered method's own `Err` comes back
    /// differently: see [`CallError`](crate::manager::CallError).
    #[doc(alias = "RemoteError")]
    #[error("remote error: {0}")]
    Remote(String),
    /// An operating-system call failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        Error::Io(e.into())
    }
}

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        Error::Codec(e.to_string())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a child process failed, as reported by [`Process::join`](crate::Process::join).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFailure {
    /// The child's process id.
    pub pid: i32,
    /// Python's `exitcode`: `N` for `exit(N)` (1 for a panic), `-SIG` when
    /// killed by signal `SIG`.
    pub exitcode: i32,
    /// The panic message, when the child panicked.
    pub panic_message: Option<String>,
    /// The child's backtrace text at the panic, when it panicked.
    pub backtrace: Option<String>,
}

impl fmt::Display for ProcessFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.panic_message, self.exitcode) {
            (Some(msg), _) => write!(f, "child process {} panicked: {msg}", self.pid),
            (None, c) if c < 0 => {
                write!(f, "child process {} was killed by signal {}", self.pid, -c)
            }
            (None, c) => write!(f, "child process {} exited with code {c}", self.pid),
        }
    }
}

impl Error {
    /// The failure details if this is [`Error::ProcessFailed`].
    pub fn process_failure(&self) -> Option<&ProcessFailure> {
        match self {
            Error::ProcessFailed(f) => Some(f),
            _ => None,
        }
    }

    /// `true` for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout)
    }
}
