//! The crate's one error type.
//!
//! Every variant names something a caller can act on: retry after a
//! [`Timeout`](Error::Timeout), stop reading after [`Closed`](Error::Closed),
//! repair shared state after [`OwnerDied`](Error::OwnerDied), release only a
//! lock one holds after [`NotHeld`](Error::NotHeld), and so on.
//!
//! Errors caused by another one ([`Io`](Error::Io), [`Codec`](Error::Codec),
//! [`Bootstrap`](Error::Bootstrap),
//! [`AuthenticationFailed`](Error::AuthenticationFailed)) hand the cause out
//! through [`source()`](std::error::Error::source), and their own message
//! never repeats it: walking the chain prints each message once.
//!
//! ```
//! use multiproc::{CodecError, Error};
//! use std::error::Error as _;
//!
//! let cause = std::io::Error::other("truncated after 3 bytes");
//! let e = Error::Codec(CodecError::with_source("cannot decode the reply", cause));
//! let mut chain = vec![e.to_string()];
//! let mut cur = e.source();
//! while let Some(c) = cur {
//!     chain.push(c.to_string());
//!     cur = c.source();
//! }
//! assert_eq!(
//!     chain.join(": "),
//!     "codec error: cannot decode the reply: truncated after 3 bytes"
//! );
//! ```

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;

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
    /// (Python's `EOFError`), a queue after `close()`.
    #[error("closed")]
    Closed,
    /// The connection handshake failed: wrong authkey, or a peer that does not
    /// speak the protocol (Python's `AuthenticationError`).
    #[doc(alias = "AuthenticationError")]
    #[error(transparent)]
    AuthenticationFailed(AuthError),
    /// A child process ended without returning a value: it panicked, exited
    /// with a non-zero code, or was killed by a signal.
    #[error("{0}")]
    ProcessFailed(Box<ProcessFailure>),
    /// A spawned child could not be started: its bootstrap message was
    /// corrupt or truncated, its target could not be found, or its binary is
    /// not the parent's; or an object handed to a child (a queue, a lock)
    /// arrived damaged.
    #[error(transparent)]
    Bootstrap(BootstrapError),
    /// The previous holder of a process-shared lock died while holding it.
    /// The lock is now held by the caller; the protected state may need repair.
    #[error("the previous owner of the lock died while holding it")]
    OwnerDied,
    /// A barrier was aborted, reset, or one of its parties died.
    #[error("the barrier is broken")]
    BrokenBarrier,
    /// A pool worker died while it held this task.
    #[error("pool worker died (exitcode {exitcode}) while running this task")]
    WorkerDied {
        /// The worker's exit code in Python's convention (`-SIG` for a signal).
        exitcode: i32,
    },
    /// The pool cannot run tasks any more: a task submitted after
    /// `close()`/`terminate()` (Python's `ValueError: Pool not running`), a
    /// task left unfinished by `terminate()` or drop, or a pool whose workers
    /// cannot be started.
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
    /// A value failed to encode or decode, or bytes from a peer are not a
    /// valid message.
    #[error(transparent)]
    Codec(CodecError),
    /// Releasing (or notifying, or waiting on) a lock the caller does not
    /// hold: an unlocked `Lock`, an `RLock` or a `Condition`'s lock owned by
    /// someone else or by nobody (Python's `ValueError`, `AssertionError` or
    /// `RuntimeError`, depending on the type).
    #[error("the lock is not held by the caller")]
    NotHeld,
    /// A semaphore was released more times than it was acquired: a
    /// `BoundedSemaphore` above its initial value, a `Semaphore` above
    /// `SEM_VALUE_MAX` (Python's `ValueError`).
    #[error("semaphore or lock released too many times")]
    ReleasedTooOften,
    /// `task_done()` was called more times than items were put (Python's
    /// `ValueError`).
    #[error("task_done() called too many times")]
    TaskDoneTooOften,
    /// A value that can be taken once was already taken: the return value of
    /// a child after an earlier `join`, a pool result after an earlier `get`.
    #[error("the value was already taken")]
    AlreadyTaken,
    /// A result was asked whether it succeeded before it was ready (Python's
    /// `ValueError` from `AsyncResult.successful()`).
    #[error("the result is not ready")]
    NotReady,
    /// The operation is not supported by this object, start method or build:
    /// sending on a read-only connection, passing descriptors where they
    /// cannot travel, a start method compiled out, … (Python's
    /// `NotImplementedError`, or the `OSError` of a one-way connection).
    #[doc(alias = "NotImplementedError")]
    #[error("unsupported: {what}")]
    Unsupported {
        /// What was asked that is not supported.
        what: String,
    },
    /// The call cannot be made in the object's or the program's current
    /// state: `join()` on a running pool, a start method set twice, a
    /// daemonic process starting a child, a connection that lost its place in
    /// the stream, … (Python's `ValueError`, `RuntimeError` or
    /// `AssertionError` about a state).
    #[error("{0}")]
    InvalidState(String),
    /// An argument is invalid: an index out of range, a size of zero, a name
    /// that is not a start method, … (Python's `ValueError` / `IndexError`).
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
    /// An operating-system call failed. The message is the `io::Error`'s own
    /// (this variant is transparent: no prefix, and `source()` is the
    /// `io::Error`'s source, so no chain prints it twice).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A shared, thread-safe cause.
type Cause = Arc<dyn StdError + Send + Sync + 'static>;

/// Defines a cause-carrying error: a message of its own plus an optional
/// underlying error returned by `source()` (never repeated in the message).
macro_rules! caused_error {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            message: Cow<'static, str>,
            source: Option<Cause>,
        }

        impl $name {
            /// An error with a message and no underlying cause.
            pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
                $name {
                    message: message.into(),
                    source: None,
                }
            }

            /// An error with a message saying what failed, caused by `source`
            /// (returned by [`source()`](std::error::Error::source), not
            /// repeated in the message).
            pub fn with_source(
                message: impl Into<Cow<'static, str>>,
                source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
            ) -> Self {
                $name {
                    message: message.into(),
                    source: Some(Arc::from(source.into())),
                }
            }

            /// The message, without the prefix and without the cause.
            pub fn message(&self) -> &str {
                &self.message
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, ": {}"), self.message)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut d = f.debug_struct(stringify!($name));
                d.field("message", &self.message);
                if let Some(s) = &self.source {
                    d.field("source", s);
                }
                d.finish()
            }
        }

        impl StdError for $name {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                self.source.as_deref().map(|s| s as &(dyn StdError + 'static))
            }
        }

        impl From<&'static str> for $name {
            fn from(m: &'static str) -> Self {
                $name::new(m)
            }
        }

        impl From<String> for $name {
            fn from(m: String) -> Self {
                $name::new(m)
            }
        }
    };
}

caused_error!(
    /// Why a value did not encode or decode ([`Error::Codec`]): a message
    /// saying what failed, and the codec's own error as the
    /// [`source`](std::error::Error::source) when there is one.
    ///
    /// ```
    /// use multiproc::{CodecError, Error};
    ///
    /// let e = Error::Codec("corrupt record".into());
    /// assert_eq!(e.to_string(), "codec error: corrupt record");
    /// ```
    CodecError,
    "codec error"
);

caused_error!(
    /// Why a child could not be started, or an object handed to it arrived
    /// damaged ([`Error::Bootstrap`]).
    ///
    /// ```
    /// use multiproc::Error;
    ///
    /// let e = Error::Bootstrap("truncated bootstrap message".into());
    /// assert_eq!(e.to_string(), "child bootstrap failed: truncated bootstrap message");
    /// ```
    BootstrapError,
    "child bootstrap failed"
);

caused_error!(
    /// Why a connection handshake failed ([`Error::AuthenticationFailed`]):
    /// a wrong key, or a peer that does not speak the protocol (the
    /// protocol error is the [`source`](std::error::Error::source)).
    ///
    /// ```
    /// use multiproc::{AuthError, Error};
    ///
    /// let e = Error::AuthenticationFailed(AuthError::new("digest received was wrong"));
    /// assert_eq!(e.to_string(), "authentication failed: digest received was wrong");
    /// ```
    AuthError,
    "authentication failed"
);

impl From<rustix::io::Errno> for Error {
    fn from(e: rustix::io::Errno) -> Self {
        Error::Io(e.into())
    }
}

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        Error::Codec(e.into())
    }
}

impl From<postcard::Error> for CodecError {
    fn from(e: postcard::Error) -> Self {
        use postcard::Error as P;
        let what = match e {
            P::SerializeBufferFull | P::SerializeSeqLengthUnknown | P::SerdeSerCustom => {
                "cannot encode a value"
            }
            _ => "cannot decode a value",
        };
        CodecError::with_source(what, e)
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
    /// [`Error::Codec`] with a message and no underlying cause.
    pub fn codec(message: impl Into<Cow<'static, str>>) -> Error {
        Error::Codec(CodecError::new(message))
    }

    /// [`Error::Bootstrap`] with a message and no underlying cause.
    pub fn bootstrap(message: impl Into<Cow<'static, str>>) -> Error {
        Error::Bootstrap(BootstrapError::new(message))
    }

    /// [`Error::AuthenticationFailed`] with a message and no underlying cause.
    pub fn authentication(message: impl Into<Cow<'static, str>>) -> Error {
        Error::AuthenticationFailed(AuthError::new(message))
    }

    /// [`Error::Unsupported`] naming what is not supported.
    pub fn unsupported(what: impl Into<String>) -> Error {
        Error::Unsupported { what: what.into() }
    }

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
