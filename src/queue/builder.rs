//! [`Builder`]: maxsize and sizes of a new queue of any flavour.

use super::flavor::Flavor;
use super::generic::GenericQueue;
use super::ring::{Ring, DEFAULT_SLOTS, SLOT};
use super::spill::DEFAULT_SPILL;
use super::Queue;
use crate::error::Result;
use serde::{de::DeserializeOwned, Serialize};

/// How to build a queue: [`maxsize`](Self::maxsize) and ring
/// [`capacity_bytes`](Self::capacity_bytes).
///
/// ```
/// let q: multiproc::queue::Queue<u32> = multiproc::queue::Queue::builder().maxsize(10).build()?;
/// assert_eq!(q.maxsize(), 10);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "call build() to create the queue"]
pub struct Builder {
    maxsize: usize,
    capacity_bytes: usize,
    spill_bytes: u64,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            maxsize: 0,
            capacity_bytes: DEFAULT_SLOTS * SLOT,
            spill_bytes: DEFAULT_SPILL,
        }
    }
}

impl Builder {
    /// Python's `maxsize`: at most this many items in the queue, whatever
    /// their size (0 = no limit: `put` never blocks for good).
    pub fn maxsize(mut self, maxsize: usize) -> Builder {
        self.maxsize = maxsize;
        self
    }

    /// Bytes of shared ring, the fast path (default 4 MiB, rounded up to a
    /// power of two of 128-byte slots). Items larger than half of it, and
    /// items put while it is full and no consumer takes any, go to the spill
    /// area instead (see [`spill_bytes`](Self::spill_bytes)).
    pub fn capacity_bytes(mut self, bytes: usize) -> Builder {
        self.capacity_bytes = bytes;
        self
    }

    /// The most shared memory the queue may hold beyond its ring, in bytes
    /// (default 256 GiB: address space, which costs nothing until items
    /// fill it, and more than the memory of most machines; at least 64 KiB).
    /// The largest item is half of it. A `put` that would go past it, or
    /// for which the system has no memory left, fails with an
    /// [`Error::Io`](crate::Error::Io) of kind [`OutOfMemory`](std::io::ErrorKind::OutOfMemory)
    /// naming the size, and the queue stays usable.
    ///
    /// ```
    /// let q: multiproc::queue::Queue<Vec<u8>> =
    ///     multiproc::queue::Queue::builder().spill_bytes(1 << 20).build()?;
    /// let err = q.put(vec![0; 1 << 20]).unwrap_err();
    /// assert!(matches!(err, multiproc::Error::MessageTooLarge { .. }));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn spill_bytes(mut self, bytes: u64) -> Builder {
        self.spill_bytes = bytes;
        self
    }

    /// Creates the queue.
    pub fn build<T: Serialize + DeserializeOwned + 'static>(self) -> Result<Queue<T>> {
        self.build_flavor()
    }

    /// Creates a queue of flavour `F`.
    pub(crate) fn build_flavor<T, F: Flavor>(&self) -> Result<GenericQueue<T, F>> {
        Ok(GenericQueue::from_ring(self.ring(F::JOINABLE)?))
    }

    pub(crate) fn ring(&self, joinable: bool) -> Result<Ring> {
        Ring::new(
            self.capacity_bytes.div_ceil(SLOT),
            self.spill_bytes,
            self.maxsize,
            joinable,
            "multiproc-queue",
        )
    }
}
