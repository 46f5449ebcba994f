//! `SimpleQueue<T>`: Python's `multiprocessing.SimpleQueue`.

use super::builder::Builder;
use super::flavor::Simple;
use super::generic::GenericQueue;
use crate::error::Result;
use serde::{de::DeserializeOwned, Serialize};

/// A plain unbounded FIFO between processes (Python's `SimpleQueue`):
/// `put`, `get`, `empty`, `close` — no maxsize, no timeouts.
///
/// It is [`Queue`](super::Queue)'s shared-memory ring with the smaller
/// interface ([`GenericQueue`] of flavour [`Simple`], whose page lists its
/// methods). Python's `SimpleQueue` is a locked pipe without a feeder
/// thread; here both are the same lock-free ring. With the `tokio` feature,
/// `get_async` and `put_async` are futures (see [`aio`](crate::aio)).
///
/// ```
/// let q = multiproc::queue::SimpleQueue::new()?;
/// q.put(vec![1u8, 2, 3])?;
/// assert!(!q.empty());
/// assert_eq!(q.get()?, vec![1, 2, 3]);
/// assert!(q.empty());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub type SimpleQueue<T> = GenericQueue<T, Simple>;

impl<T: Serialize + DeserializeOwned + 'static> SimpleQueue<T> {
    /// A new, empty queue.
    pub fn new() -> Result<SimpleQueue<T>> {
        Builder::default().build_flavor()
    }
}
