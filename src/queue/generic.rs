//! [`GenericQueue`]: the one implementation behind [`Queue`](super::Queue),
//! [`SimpleQueue`](super::SimpleQueue) and
//! [`JoinableQueue`](super::JoinableQueue) (type aliases of it, one per
//! [flavour](super::flavor)).

use super::flavor::{Flavor, FullApi};
use super::item::{decode_item, put_item};
use super::ring::{Ring, Stall};
use super::wake::Doorbell;
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::{deadline_after, Region};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A FIFO queue between processes, of flavour `F`: use it through its
/// aliases [`Queue`](super::Queue) (`F` = [`Plain`](super::flavor::Plain)),
/// [`SimpleQueue`](super::SimpleQueue) and
/// [`JoinableQueue`](super::JoinableQueue), whose pages document each.
///
/// Every flavour is the same shared ring and the same code; the flavour only
/// selects the interface (crossbeam-channel's design, resolved at compile
/// time): methods in an `impl<T, F: Flavor>` block exist for all three
/// queues, those with `F: FullApi` for `Queue` and `JoinableQueue`, and
/// `task_done`/`join` for `JoinableQueue` alone.
///
/// Dropping the last handle (in every process) frees the shared memory.
pub struct GenericQueue<T, F: Flavor> {
    ring: Ring,
    closed: Arc<AtomicBool>,
    _item: PhantomData<fn(T) -> T>,
    _flavor: PhantomData<F>,
}

impl<T, F: Flavor> Clone for GenericQueue<T, F> {
    fn clone(&self) -> Self {
        GenericQueue {
            ring: self.ring.clone(),
            closed: self.closed.clone(),
            _item: PhantomData,
            _flavor: PhantomData,
        }
    }
}

impl<T, F: Flavor> fmt::Debug for GenericQueue<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct(F::NAME);
        d.field("qsize", &self.ring.qsize());
        if self.ring.maxsize() > 0 {
            d.field("maxsize", &self.ring.maxsize());
        }
        if F::JOINABLE {
            d.field("unfinished", &self.ring.unfinished());
        }
        d.field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned + 'static, F: Flavor> GenericQueue<T, F> {
    pub(crate) fn put_deadline_ref(&self, item: &T, deadline: Option<Instant>) -> Result<()> {
        self.check_open()?;
        put_item(&self.ring, item, deadline, Stall::No)
    }

    pub(crate) fn get_deadline(&self, deadline: Option<Instant>) -> Result<T> {
        self.check_open()?;
        self.ring.get(deadline, Stall::No, decode_item::<T>)?
    }

    /// Puts `item`; waits only while a bounded queue holds `maxsize` items
    /// (a `JoinableQueue` also counts one more unfinished task).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after [`close`](Self::close);
    /// [`Error::Io`] of kind `OutOfMemory` (naming the size) if the memory
    /// for the item is not there; [`Error::MessageTooLarge`] if the encoded
    /// item is larger than the queue takes
    /// ([`max_item_bytes`](Self::max_item_bytes));
    /// [`Error::Codec`] if it does not encode.
    pub fn put(&self, item: T) -> Result<()> {
        self.put_deadline_ref(&item, None)
    }

    /// Takes the oldest item, waiting until there is one.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after [`close`](Self::close); [`Error::Codec`] if
    /// the bytes do not decode as a `T` (the item is consumed).
    pub fn get(&self) -> Result<T> {
        self.get_deadline(None)
    }

    /// Test hook: claims room for `item`, writes half of it and hangs
    /// forever without committing — a producer to kill "mid-put". With
    /// `early`, hangs right after its claim CAS, before moving `tail`.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __put_and_hang(&self, item: T, early: bool) -> Result<()> {
        put_item(
            &self.ring,
            &item,
            None,
            if early { Stall::Early } else { Stall::Late },
        )
    }

    /// Test hook: claims room for `item` in the ring, writes it, and
    /// commits it only once [`__resume_paused`](Self::__resume_paused) is
    /// called (in this process) — a live producer descheduled between its
    /// claim and its commit. (An item the ring would not take goes to the
    /// spill log at once.)
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __put_paused(&self, item: T) -> Result<()> {
        put_item(&self.ring, &item, None, Stall::Pause)
    }

    /// Test hook: lets every [`__put_paused`](Self::__put_paused) of this
    /// process commit.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __resume_paused(&self) {
        super::ring::PAUSE_GATE.store(true, Ordering::SeqCst);
    }

    /// Test hook: takes an item and hangs forever without releasing its
    /// slots — a consumer to kill "mid-get". With `early`, hangs right after
    /// its taker CAS, before moving `head`.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __get_and_hang(&self, early: bool) -> Result<()> {
        self.ring
            .get(None, if early { Stall::Early } else { Stall::Late }, |_| ())
    }
}

impl<T: Serialize + DeserializeOwned + 'static, F: FullApi> GenericQueue<T, F> {
    /// Like [`put`](Self::put), by reference (no move, no clone).
    pub fn put_ref(&self, item: &T) -> Result<()> {
        self.put_deadline_ref(item, None)
    }

    /// Puts `item`, waiting at most `timeout` for room; [`Error::Full`] if
    /// there was none (Python's `put(item, timeout=t)`).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        self.put_deadline_ref(&item, deadline_after(Some(timeout)))
    }

    /// Puts `item` if there is room now, else [`Error::Full`].
    ///
    /// Only a bounded queue (a `maxsize`) is ever full; an unbounded queue
    /// takes the item into its spill area when the ring has no room.
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: T) -> Result<()> {
        self.put_deadline_ref(&item, Some(Instant::now()))
    }

    /// Takes an item, waiting at most `timeout`; [`Error::Empty`] if none came.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_deadline(deadline_after(Some(timeout)))
    }

    /// Takes an item if one is ready now, else [`Error::Empty`].
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T> {
        self.get_deadline(Some(Instant::now()))
    }
}

impl<T, F: Flavor> GenericQueue<T, F> {
    pub(crate) fn from_ring(ring: Ring) -> Self {
        GenericQueue {
            ring,
            closed: Arc::new(AtomicBool::new(false)),
            _item: PhantomData,
            _flavor: PhantomData,
        }
    }

    pub(crate) fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Puts an item already encoded with the codec (the bytes a `put` of
    /// a `T` would write), for a holder that has no `T`: a manager's server
    /// putting on behalf of a remote client, or a proxy that encoded the
    /// item itself. Errors as [`put`](Self::put).
    pub(crate) fn put_encoded(&self, bytes: &[u8], deadline: Option<Instant>) -> Result<()> {
        self.check_open()?;
        self.ring.put(&[bytes], deadline, Stall::No)
    }

    /// Takes an item as its encoded bytes, copied out of shared memory;
    /// the twin of [`put_encoded`](Self::put_encoded). [`Error::Empty`] if
    /// none came by `deadline`. `keep` is asked before every attempt to
    /// take one: once it says `false`, gives up without taking any
    /// (`Ok(None)`), for a waiter on behalf of a client that may go away.
    pub(crate) fn get_encoded(
        &self,
        deadline: Option<Instant>,
        keep: impl FnMut() -> bool,
    ) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        self.ring.get_while(deadline, Stall::No, keep, |b| {
            let mut v = Vec::new();
            b.append_to(&mut v);
            v
        })
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// `true` if the queue holds no item (a snapshot, approximate while
    /// others work, like Python's).
    pub fn empty(&self) -> bool {
        self.ring.qsize() == 0
    }

    /// Closes this process's handle (and its clones): later `put`s and
    /// `get`s through it return [`Error::Closed`]. Other processes' handles
    /// are unaffected, and items already put stay in the queue for them —
    /// as in Python, `close` means "this process is done with the queue".
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// The largest encoded item this queue accepts, in bytes.
    pub fn max_item_bytes(&self) -> usize {
        self.ring.spill_max_item()
    }

    /// Test support: how many times the queue's doorbell (the wake-up of
    /// async waiters) has been rung, by any process.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __doorbell_rings(&self) -> u64 {
        self.ring.doorbell_rings()
    }

    /// Test support: whether an async waiter has armed the doorbell and
    /// not been rung since.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __doorbell_armed(&self) -> bool {
        self.ring.doorbell_armed()
    }
}

impl<T, F: FullApi> GenericQueue<T, F> {
    /// The approximate number of items in the queue (Python's `qsize()`):
    /// exact when nobody else is putting or getting; while others are, a
    /// snapshot that may be stale by the time it is read (an item being put
    /// is counted from just before it becomes visible).
    pub fn qsize(&self) -> usize {
        self.ring.qsize()
    }

    /// `true` if the queue holds `maxsize` items (always `false` without a
    /// maxsize; approximate, like Python's).
    pub fn full(&self) -> bool {
        self.ring.full()
    }

    /// The `maxsize` given at creation (0 = none).
    pub fn maxsize(&self) -> usize {
        self.ring.maxsize() as usize
    }

    /// `true` after [`close`](Self::close) on this handle or a clone.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Python's `join_thread()`: waits for the feeder thread to flush.
    ///
    /// There is no feeder thread here: `put` writes the item into shared
    /// memory before returning, so there is never anything to flush and this
    /// returns at once. (Python requires `close()` first; here it is always
    /// allowed.)
    pub fn join_thread(&self) {}

    /// Python's `cancel_join_thread()`: lets a process exit without waiting
    /// for its buffered items to reach the pipe (risking their loss).
    ///
    /// Here a process never waits at exit and never loses what it put:
    /// every item is in shared memory when `put` returns and stays there
    /// until some process takes it. So this is a no-op, kept for familiarity.
    pub fn cancel_join_thread(&self) {}

    /// Test support: slots claimed by producers and not yet taken
    /// (committed or not).
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __pending_slots(&self) -> u64 {
        self.ring.pending_tickets()
    }
}

/// A queue travels as its memfd (the ring and the spill area) and its
/// doorbell (an eventfd), under every start method.
impl<T, F: Flavor> Handoff for GenericQueue<T, F> {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.ring.region().export(ex)?;
        self.ring.doorbell().export(ex)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let region = Region::import(im)?;
        let doorbell = Doorbell::import(im)?;
        let ring = Ring::attach(region, doorbell)?;
        if F::JOINABLE && !ring.is_joinable() {
            return Err(Error::Bootstrap(
                format!("handoff of a {} carries a plain queue", F::NAME).into(),
            ));
        }
        Ok(Self::from_ring(ring))
    }
}
