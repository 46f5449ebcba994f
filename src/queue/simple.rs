//! `SimpleQueue<T>`: Python's `multiprocessing.SimpleQueue`.

use super::queue::{Builder, Queue};
use crate::error::Result;
use crate::handoff::{Exporter, Handoff, Importer};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt;

/// A plain unbounded FIFO between processes (Python's `SimpleQueue`):
/// `put`, `get`, `empty`, `close` — no maxsize, no timeouts.
///
/// It shares [`Queue`]'s shared-memory ring (Python's `SimpleQueue` is a
/// locked pipe without a feeder thread; here both are the same lock-free
/// ring, so this is simply the smaller interface).
///
/// ```
/// let q = multiproc::queue::SimpleQueue::new()?;
/// q.put(vec![1u8, 2, 3])?;
/// assert!(!q.empty());
/// assert_eq!(q.get()?, vec![1, 2, 3]);
/// assert!(q.empty());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct SimpleQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue")
            .field("empty", &self.inner.empty())
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned + 'static> SimpleQueue<T> {
    /// A new, empty queue.
    pub fn new() -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue {
            inner: Builder::default().build()?,
        })
    }

    /// Puts `item`; never blocks for good (see [`Queue::put`]).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) after `close`; as
    /// [`Queue::put`] otherwise.
    pub fn put(&self, item: T) -> Result<()> {
        self.inner.put(item)
    }

    /// Takes the oldest item, waiting until there is one.
    pub fn get(&self) -> Result<T> {
        self.inner.get()
    }
}

impl<T> SimpleQueue<T> {
    /// `true` if the queue is empty (a snapshot).
    pub fn empty(&self) -> bool {
        self.inner.empty()
    }

    /// Closes this process's handle: later `put`/`get` through it return
    /// [`Error::Closed`](crate::Error::Closed).
    pub fn close(&self) {
        self.inner.close()
    }
}

impl<T> Handoff for SimpleQueue<T> {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.inner.export(ex)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        Ok(SimpleQueue {
            inner: Queue::import(im)?,
        })
    }
}
