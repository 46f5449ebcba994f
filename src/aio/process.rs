//! `Process::join` as a future: the pidfd and the report socket are
//! registered with tokio's reactor; every wake-up makes one non-blocking
//! attempt of the ordinary join.
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use crate::process::Process;
use serde::de::DeserializeOwned;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A duplicate of `fd` registered for readability. A duplicate, not the
/// original, so that the user's own registration of the same descriptor
/// (e.g. of [`Process::sentinel`]) does not collide with ours.
pub(super) fn watch(fd: BorrowedFd<'_>) -> Result<AsyncFd<OwnedFd>> {
    let dup = fd.try_clone_to_owned()?;
    // SAFETY: `dup` is an open descriptor owned by the `AsyncFd` from here
    // on; an `OwnedFd` never changes or closes its descriptor while alive.
    unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }
        .map_err(|e| e.into_parts().1.into())
}

/// `Ready(true)` if `fd` had a readiness event, which is then consumed.
fn consume(fd: &AsyncFd<OwnedFd>, cx: &mut Context<'_>) -> Poll<Result<bool>> {
    match fd.poll_read_ready(cx) {
        Poll::Ready(Ok(mut guard)) => {
            guard.clear_ready();
            Poll::Ready(Ok(true))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        Poll::Pending => Poll::Ready(Ok(false)),
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// [`join`](Self::join) as a future, for tokio programs (feature
    /// `tokio`): resolves to the target's return value, or to the same
    /// errors as `join`, without blocking a runtime thread.
    ///
    /// Cancel safe: dropping the future leaves the child running and its
    /// result unread; join it again later. Must be polled within a tokio
    /// runtime with I/O enabled.
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    /// # fn main() -> multiproc::Result<()> {
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// # rt.block_on(async {
    /// let mut p = multiproc::Process::start(square, (7,))?;
    /// assert_eq!(p.join_async().await?, 49);
    /// # Ok(()) })
    /// # }
    /// ```
    pub async fn join_async(&mut self) -> Result<R> {
        let (report, pidfd) = self.wait_fds();
        let report = watch(report)?;
        let pidfd = pidfd.map(watch).transpose()?;
        std::future::poll_fn(|cx| loop {
            // Take the readiness first: an event that arrives during the
            // attempt below then stays pending instead of being cleared.
            let r = match consume(&report, cx) {
                Poll::Ready(r) => r?,
                Poll::Pending => false,
            };
            let p = match pidfd.as_ref().map(|p| consume(p, cx)) {
                Some(Poll::Ready(r)) => r?,
                _ => false,
            };
            match self.join_timeout(Duration::ZERO) {
                Err(Error::Timeout) => {}
                done => return Poll::Ready(done),
            }
            if !r && !p {
                if pidfd.is_none() {
                    // No pidfd (Linux before 5.3): nothing signals the exit
                    // itself once the report socket has closed; look again soon.
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        })
        .await
    }
}
