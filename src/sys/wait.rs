//! `wait`: block until any of several connections, processes or descriptors
//! is ready (Python's `multiprocessing.connection.wait`).
//!
//! The trait and the poll live here, below every module whose objects can
//! be waited on: `connection` implements [`Waitable`] for its connections
//! and listeners, `process` for [`Process`](crate::Process), and neither
//! needs the other. Re-exported as `multiproc::connection::{wait, Waitable}`.

use crate::error::Result;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// Something [`wait`] can wait on: it is ready when its descriptor is
/// readable (or hung up), or when it already holds data. Implemented for
/// [`Connection`](crate::Connection), [`Listener`](crate::Listener),
/// [`Process`](crate::Process) (ready once it has exited) and raw
/// descriptors.
pub trait Waitable {
    /// The descriptor to poll for readability.
    fn wait_fd(&self) -> BorrowedFd<'_>;
    /// `true` if the object is ready without polling (e.g. a connection that
    /// already buffered received bytes).
    fn ready_now(&self) -> bool {
        false
    }
}

impl Waitable for BorrowedFd<'_> {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

impl Waitable for OwnedFd {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes
/// (`None`: forever). Returns the indices of the ready objects in ascending
/// order; an empty list means the timeout passed (Python's
/// `multiprocessing.connection.wait`, which returns the objects).
///
/// A connection is ready when a message or end of file can be read; a
/// process when it has exited; a raw descriptor when it is readable.
///
/// ```
/// use multiproc::connection::{wait, Pipe};
/// use std::time::Duration;
///
/// let (a, b) = Pipe::duplex()?;
/// let (c, d) = Pipe::duplex()?;
/// d.send(&1u8)?;
/// assert_eq!(wait(&[&a, &c], Some(Duration::from_secs(5)))?, vec![1]);
/// assert!(wait(&[&a], Some(Duration::ZERO))?.is_empty());
/// # drop(b);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let now: Vec<usize> = objects
        .iter()
        .enumerate()
        .filter(|(_, o)| o.ready_now())
        .map(|(i, _)| i)
        .collect();
    if !now.is_empty() {
        return Ok(now);
    }
    let fds: Vec<BorrowedFd<'_>> = objects.iter().map(|o| o.wait_fd()).collect();
    let ready = super::poll_readable(&fds, super::deadline_after(timeout))?;
    Ok(ready
        .iter()
        .enumerate()
        .filter(|(_, r)| **r)
        .map(|(i, _)| i)
        .collect())
}
