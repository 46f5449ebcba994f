//! `Queue<T>`: Python's `multiprocessing.Queue` over the shared ring.

use super::builder::Builder;
use super::flavor::Plain;
use super::generic::GenericQueue;
use crate::error::Result;
use serde::{de::DeserializeOwned, Serialize};

/// A FIFO queue shared by processes and threads (Python's
/// `multiprocessing.Queue`).
///
/// Any number of producers and consumers, in any processes that received a
/// handle (as a [`Process`](crate::Process) argument) or a clone of one.
/// Items are `Serialize + DeserializeOwned`, encoded into shared memory by
/// `put` and decoded by `get`; items from one producer arrive in the order it
/// put them. See the [module docs](super) for the design.
///
/// ```
/// use multiproc::queue::Queue;
/// use std::time::Duration;
///
/// let q = Queue::new()?;
/// q.put("hello".to_string())?;
/// assert_eq!(q.get()?, "hello");
/// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(multiproc::Error::Empty)));
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// A queue travels to children only at their creation; it is not
/// `Serialize`, so it cannot be put into a queue:
///
/// ```compile_fail
/// use multiproc::queue::Queue;
/// let outer: Queue<Queue<u8>> = Queue::new().unwrap();
/// outer.put(Queue::new().unwrap()).unwrap();
/// ```
///
/// Dropping the last handle (in every process) frees the shared memory.
///
/// `Queue<T>` is [`GenericQueue`] of flavour [`Plain`]: its methods are
/// listed there (all but `task_done` and `join`), shared with
/// [`SimpleQueue`](super::SimpleQueue) and [`JoinableQueue`](super::JoinableQueue).
/// With the `tokio` feature, `get_async` and `put_async` are futures (see
/// [`aio`](crate::aio)).
pub type Queue<T> = GenericQueue<T, Plain>;

impl<T: Serialize + DeserializeOwned + 'static> Queue<T> {
    /// A queue with no limit on the item count (Python's `Queue()`).
    ///
    /// There is no feeder thread: an item is in shared memory when `put`
    /// returns. `put` never blocks for good and never refuses an item for
    /// its size, up to the memory available: items the ring cannot take go
    /// to the queue's spill area (see the [module docs](super)).
    pub fn new() -> Result<Queue<T>> {
        Builder::default().build()
    }

    /// A queue of at most `maxsize` items (Python's `Queue(maxsize)`; 0 = no limit).
    pub fn with_maxsize(maxsize: usize) -> Result<Queue<T>> {
        Builder::default().maxsize(maxsize).build()
    }
}

impl Queue<()> {
    /// A [`Builder`] for maxsize and ring capacity; the item type comes from
    /// [`Builder::build`] (`Queue::builder().maxsize(8).build::<u64>()`).
    pub fn builder() -> Builder {
        Builder::default()
    }
}
