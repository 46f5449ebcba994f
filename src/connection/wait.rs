//! [`Waitable`] for connections and listeners; the trait and [`wait`] itself
//! live below (`sys::wait`), so that `process` can implement it too.

use super::{Connection, Listener};
pub use crate::sys::wait::{wait, Waitable};
use std::os::fd::{AsFd, BorrowedFd};

impl Waitable for Connection {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
    fn ready_now(&self) -> bool {
        self.has_buffered()
    }
}

/// A listener is ready when a connection is waiting to be accepted.
impl Waitable for Listener {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}
