//! Errors of manager calls: a builtin object's own failures, a registered
//! method's own `Err`, and how they travel.

use super::wire::ReplyRef;
use crate::codec;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What the server answered to a call, read in place from the received
/// frame ([`answer_in`]), before decoding: the result, or the method's own
/// error.
#[derive(Debug)]
pub(crate) enum AnswerRef<'a> {
    Ok(&'a [u8]),
    Method(&'a [u8]),
}

impl<'a> AnswerRef<'a> {
    /// The result of a request that has no method error of its own
    /// (create, attach, lookup, publish, the manager's control requests).
    pub(crate) fn result(self) -> Result<&'a [u8]> {
        match self {
            AnswerRef::Ok(b) => Ok(b),
            AnswerRef::Method(_) => Err(Error::Remote("unexpected answer".into())),
        }
    }
}

/// A builtin object's own failure, as it travels back to the proxy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum BuiltinError {
    Empty,
    Full,
    Timeout,
    BrokenBarrier,
    OwnerDied,
    Invalid(String),
    NotHeld,
    ReleasedTooOften,
    TaskDoneTooOften,
}

impl From<BuiltinError> for Error {
    fn from(e: BuiltinError) -> Error {
        match e {
            BuiltinError::Empty => Error::Empty,
            BuiltinError::Full => Error::Full,
            BuiltinError::Timeout => Error::Timeout,
            BuiltinError::BrokenBarrier => Error::BrokenBarrier,
            BuiltinError::OwnerDied => Error::OwnerDied,
            BuiltinError::Invalid(m) => Error::Invalid(m),
            BuiltinError::NotHeld => Error::NotHeld,
            BuiltinError::ReleasedTooOften => Error::ReleasedTooOften,
            BuiltinError::TaskDoneTooOften => Error::TaskDoneTooOften,
        }
    }
}

/// The error of a call to a registered type's method that returns
/// `Result<T, E>`: either the method's own `Err(e)` (CPython re-raises the
/// referent's exception) or a failure of the call itself (CPython's
/// `RemoteError`: a panic in the method, a lost connection, …).
///
/// ```
/// use multiproc::manager::CallError;
///
/// let e: CallError<String> = CallError::Method("too big".into());
/// assert_eq!(e.method_error(), Some(&"too big".to_string()));
/// let r: CallError<String> = CallError::Call(multiproc::Error::Remote("boom".into()));
/// assert!(r.method_error().is_none());
/// ```
#[derive(Debug)]
pub enum CallError<E> {
    /// The method ran and returned `Err(e)`.
    Method(E),
    /// The call did not complete: [`Error::Remote`] when the server failed
    /// to run it, or a connection error.
    Call(Error),
}

impl<E> CallError<E> {
    /// The method's own error, if that is what this is.
    pub fn method_error(&self) -> Option<&E> {
        match self {
            CallError::Method(e) => Some(e),
            CallError::Call(_) => None,
        }
    }

    /// The method's own error, if that is what this is.
    pub fn into_method_error(self) -> Option<E> {
        match self {
            CallError::Method(e) => Some(e),
            CallError::Call(_) => None,
        }
    }

    /// `true` for a failure of the call itself ([`CallError::Call`]).
    pub fn is_remote(&self) -> bool {
        matches!(self, CallError::Call(_))
    }
}

impl<E> From<Error> for CallError<E> {
    fn from(e: Error) -> Self {
        CallError::Call(e)
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Method(e) => write!(f, "{e}"),
            CallError::Call(e) => write!(f, "{e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for CallError<E> {}

/// Reads a received answer frame in place (see [`ReplyRef`]); a failure
/// the server reported instead of an answer is the error.
pub(crate) fn answer_in(frame: &[u8]) -> Result<AnswerRef<'_>> {
    let (reply, _) = codec::decode_borrowed::<ReplyRef<'_>>(frame)?;
    match reply {
        ReplyRef::Ok(v) => Ok(AnswerRef::Ok(v.bytes.0)),
        ReplyRef::MethodError(b) => Ok(AnswerRef::Method(b.0)),
        ReplyRef::Remote(m) => Err(Error::Remote(m)),
        ReplyRef::Deferred(m) => Err(deferred(m)),
    }
}

fn deferred(m: String) -> Error {
    Error::Remote(format!(
        "a pipelined call of this proxy failed (it, the pipelined calls after it \
         and this call were not made): {m}"
    ))
}
