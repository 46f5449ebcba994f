//! `JoinableQueue<T>`: a [`Queue`] that counts unfinished tasks.

use super::queue::{Builder, Queue};
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::deadline_after;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt;
use std::time::Duration;

/// Python's `JoinableQueue`: every `put` adds an unfinished task, every
/// [`task_done`](Self::task_done) removes one, and [`join`](Self::join) waits
/// until none is left. The count lives in the queue's shared memory, so any
/// process may call either.
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
pub struct JoinableQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("qsize", &self.inner.qsize())
            .field("unfinished", &self.inner.ring().unfinished())
            .finish()
    }
}

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
        Ok(JoinableQueue {
            inner: Queue::from_ring(builder.ring(true)?)?,
        })
    }

    /// [`Queue::put`], adding one unfinished task.
    pub fn put(&self, item: T) -> Result<()> {
        self.inner.put(item)
    }

    /// [`Queue::put_ref`], adding one unfinished task.
    pub fn put_ref(&self, item: &T) -> Result<()> {
        self.inner.put_ref(item)
    }

    /// [`Queue::put_timeout`].
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        self.inner.put_timeout(item, timeout)
    }

    /// [`Queue::try_put`].
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: T) -> Result<()> {
        self.inner.try_put(item)
    }

    /// [`Queue::get`].
    pub fn get(&self) -> Result<T> {
        self.inner.get()
    }

    /// [`Queue::get_timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.inner.get_timeout(timeout)
    }

    /// [`Queue::try_get`].
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T> {
        self.inner.try_get()
    }

    /// Test hook: see `Queue::__put_and_hang`.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __put_and_hang(&self, item: T, early: bool) -> Result<()> {
        self.inner.__put_and_hang(item, early)
    }
}

impl<T> JoinableQueue<T> {
    /// Marks one task taken from the queue as finished.
    ///
    /// # Errors
    ///
    /// [`Error::TaskDoneTooOften`] if called more times than items were put
    /// (Python's `ValueError: task_done() called too many times`).
    pub fn task_done(&self) -> Result<()> {
        self.inner.ring().task_done()
    }

    /// Waits until every item ever put has been marked done.
    pub fn join(&self) -> Result<()> {
        self.inner.ring().join(None)
    }

    /// [`join`](Self::join) with a timeout: [`Error::Timeout`] if tasks are
    /// still unfinished when it passes.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        match self.inner.ring().join(deadline_after(Some(timeout))) {
            Err(Error::Timeout) => Err(Error::Timeout),
            r => r,
        }
    }

    /// Tasks put and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        self.inner.ring().unfinished() as usize
    }

    /// [`Queue::qsize`].
    pub fn qsize(&self) -> usize {
        self.inner.qsize()
    }

    /// [`Queue::empty`].
    pub fn empty(&self) -> bool {
        self.inner.empty()
    }

    /// [`Queue::full`].
    pub fn full(&self) -> bool {
        self.inner.full()
    }

    /// [`Queue::close`].
    pub fn close(&self) {
        self.inner.close()
    }

    /// [`Queue::join_thread`] (a no-op: no feeder thread).
    pub fn join_thread(&self) {}

    /// [`Queue::cancel_join_thread`] (a no-op: items are never lost at exit).
    pub fn cancel_join_thread(&self) {}
}

impl<T> Handoff for JoinableQueue<T> {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.inner.export(ex)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let inner: Queue<T> = Queue::import(im)?;
        if !inner.ring().is_joinable() {
            return Err(Error::Bootstrap(
                "handoff of a JoinableQueue carries a plain queue".into(),
            ));
        }
        Ok(JoinableQueue { inner })
    }
}
