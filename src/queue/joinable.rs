//! `JoinableQueue<T>`: a queue that counts unfinished tasks.

use super::builder::Builder;
use super::flavor::Joinable;
use super::generic::GenericQueue;
use crate::error::Result;
use crate::sys::deadline_after;
use serde::{de::DeserializeOwned, Serialize};
use std::time::{Duration, Instant};

/// Python's `JoinableQueue`: every `put` adds an unfinished task, every
/// [`task_done`](Self::task_done) removes one, and [`join`](Self::join) waits
/// until none is left. The count lives in the queue's shared memory, so any
/// process may call either.
///
/// It is [`Queue`](super::Queue) with the count ([`GenericQueue`] of flavour
/// [`Joinable`], whose page lists its methods: all of `Queue`'s, plus the
/// ones below). With the `tokio` feature, `get_async`, `put_async` and
/// `join_async` are futures (see [`aio`](crate::aio)).
///
/// ```
/// let q = multiproc::queue::JoinableQueue::new()?;
/// q.put(1u32)?;
/// let job = q.get()?;
/// assert_eq!(job, 1);
/// q.task_done()?;
/// q.join()?; // returns at once: nothing unfinished
/// assert!(matches!(q.task_done(), Err(multiproc::Error::TaskDoneTooOften)));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub type JoinableQueue<T> = GenericQueue<T, Joinable>;

impl<T: Serialize + DeserializeOwned + 'static> JoinableQueue<T> {
    /// An unbounded joinable queue.
    pub fn new() -> Result<JoinableQueue<T>> {
        Self::with_builder(Builder::default())
    }

    /// A joinable queue of at most `maxsize` items (0 = no limit).
    pub fn with_maxsize(maxsize: usize) -> Result<JoinableQueue<T>> {
        Self::with_builder(Builder::default().maxsize(maxsize))
    }

    /// A joinable queue from a [`Builder`] (maxsize, capacity).
    pub fn with_builder(builder: Builder) -> Result<JoinableQueue<T>> {
        builder.build_flavor()
    }
}

impl<T> JoinableQueue<T> {
    /// Marks one task taken from the queue as finished.
    ///
    /// # Errors
    ///
    /// [`Error::TaskDoneTooOften`](crate::Error::TaskDoneTooOften) if called more times than items were put
    /// (Python's `ValueError: task_done() called too many times`).
    pub fn task_done(&self) -> Result<()> {
        self.ring().task_done()
    }

    /// Waits until every item ever put has been marked done.
    pub fn join(&self) -> Result<()> {
        self.join_deadline(None)
    }

    /// [`join`](Self::join) with a timeout: [`Error::Timeout`](crate::Error::Timeout) if tasks are
    /// still unfinished when it passes.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_deadline(deadline_after(Some(timeout)))
    }

    /// [`join`](Self::join) until `deadline` (`None`: no limit).
    pub(crate) fn join_deadline(&self, deadline: Option<Instant>) -> Result<()> {
        self.ring().join(deadline)
    }

    /// Tasks put and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        self.ring().unfinished() as usize
    }
}
