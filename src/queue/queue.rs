//! `Queue<T>`: Python's `multiprocessing.Queue` over the shared ring.
#![allow(unsafe_code)]

use super::ring::{Ring, Stall, DEFAULT_SLOTS, SLOT};
use super::shared_bytes::{SharedBytes, SmallBuf};
use super::spill::DEFAULT_SPILL;
use crate::codec;
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::{deadline_after, Region};
use serde::{de::DeserializeOwned, Serialize};
use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

thread_local! {
    static ENCODE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static DECODE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Encodes `item` into a per-thread buffer and hands the bytes to `f`.
pub(crate) fn with_encoded<T: Serialize + ?Sized, R>(
    item: &T,
    f: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R> {
    ENCODE_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            codec::encode_into(item, &mut buf)?;
            let r = f(&buf);
            if buf.capacity() > 4 << 20 {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => f(&codec::encode(item)?),
    })
}

/// Encodes `item` and puts it. `Vec<u8>` (a *sequence* of `u8` to serde,
/// which the codec would walk byte by byte) is written directly in the
/// codec's own format for it — a length varint and the bytes — with one
/// copy; every other type goes through the codec.
fn put_item<T: Serialize + 'static>(
    ring: &Ring,
    item: &T,
    deadline: Option<Instant>,
    stall: Stall,
) -> Result<()> {
    if let Some(bytes) = (item as &dyn Any).downcast_ref::<Vec<u8>>() {
        let mut len = [0u8; 10];
        let n = varint(bytes.len() as u64, &mut len);
        return ring.put(&[&len[..n], bytes], deadline, stall);
    }
    // Small items: encode on the stack (no thread-local, no Vec); an item
    // that does not fit stops the attempt at the first byte too many.
    let mut stack = [0u8; 128];
    match postcard::to_slice(item, &mut stack) {
        Ok(used) => ring.put(&[used], deadline, stall),
        Err(postcard::Error::SerializeBufferFull) => {
            with_encoded(item, |bytes| ring.put(&[bytes], deadline, stall))
        }
        Err(e) => Err(e.into()),
    }
}

/// Decodes an item; the twin of [`put_item`]'s `Vec<u8>` path. The bytes
/// are in shared memory: they are copied out first (see `shared_bytes.rs`)
/// — a `Vec<u8>` straight into the vector returned, anything else into a
/// buffer reused by the thread (on the stack for small items) — and decoded
/// from private memory.
#[inline]
fn decode_item<T: DeserializeOwned + 'static>(bytes: SharedBytes<'_>) -> Result<T> {
    let mut out: Option<T> = None;
    if let Some(slot) = (&mut out as &mut dyn Any).downcast_mut::<Option<Vec<u8>>>() {
        let mut pre = [const { std::mem::MaybeUninit::<u8>::uninit() }; 10];
        let n = bytes.copy_into(0, &mut pre);
        // SAFETY: `copy_into` initialised the first `n` bytes.
        let pre = unsafe { std::slice::from_raw_parts(pre.as_ptr().cast::<u8>(), n) };
        let (len, used) =
            read_varint(pre).ok_or_else(|| Error::Codec("bad length prefix".into()))?;
        if len != (bytes.len() - used) as u64 {
            return Err(Error::Codec("truncated bytes item".into()));
        }
        let mut body = Vec::with_capacity(len as usize);
        let got = bytes.copy_into(used, &mut body.spare_capacity_mut()[..len as usize]);
        // SAFETY: `copy_into` initialised the first `got` (= len) bytes.
        unsafe { body.set_len(got) };
        *slot = Some(body);
        return out.ok_or_else(|| Error::Codec("unreachable".into()));
    }
    let mut words = SmallBuf::new();
    if let Some(small) = bytes.copy_small(&mut words) {
        return codec::decode(small);
    }
    DECODE_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            bytes.append_to(&mut buf);
            let r = codec::decode(&buf);
            if buf.capacity() > 4 << 20 {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => {
            let mut buf = Vec::new();
            bytes.append_to(&mut buf);
            codec::decode(&buf)
        }
    })
}

/// LEB128, as postcard encodes lengths. Returns the bytes used.
fn varint(mut v: u64, out: &mut [u8; 10]) -> usize {
    let mut i = 0;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[i] = b;
            return i + 1;
        }
        out[i] = b | 0x80;
        i += 1;
    }
}

fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

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
    /// [`Error::Io`] of kind [`OutOfMemory`](std::io::ErrorKind::OutOfMemory)
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
        Queue::from_ring(self.ring(false)?)
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
pub struct Queue<T> {
    ring: Ring,
    closed: Arc<AtomicBool>,
    _item: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            ring: self.ring.clone(),
            closed: self.closed.clone(),
            _item: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("maxsize", &self.ring.maxsize())
            .field("qsize", &self.ring.qsize())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

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

    pub(crate) fn from_ring(ring: Ring) -> Result<Queue<T>> {
        Ok(Queue {
            ring,
            closed: Arc::new(AtomicBool::new(false)),
            _item: PhantomData,
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn put_deadline_ref(&self, item: &T, deadline: Option<Instant>) -> Result<()> {
        self.check_open()?;
        put_item(&self.ring, item, deadline, Stall::No)
    }

    fn get_deadline(&self, deadline: Option<Instant>) -> Result<T> {
        self.check_open()?;
        self.ring.get(deadline, Stall::No, decode_item::<T>)?
    }

    /// Puts `item`; waits only while a bounded queue holds `maxsize` items.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after [`close`](Self::close);
    /// [`Error::Io`] of kind `OutOfMemory` (naming the size) if the memory
    /// for the item is not there; [`Error::MessageTooLarge`] if the encoded
    /// item is larger than [`max_item_bytes`](Self::max_item_bytes);
    /// [`Error::Codec`] if it does not encode.
    pub fn put(&self, item: T) -> Result<()> {
        self.put_deadline_ref(&item, None)
    }

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
    /// ```
    /// let q = multiproc::queue::Queue::with_maxsize(1)?;
    /// q.try_put(1u8)?;
    /// assert!(matches!(q.try_put(2), Err(multiproc::Error::Full)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: T) -> Result<()> {
        self.put_deadline_ref(&item, Some(Instant::now()))
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

    /// Takes an item, waiting at most `timeout`; [`Error::Empty`] if none came.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_deadline(deadline_after(Some(timeout)))
    }

    /// Takes an item if one is ready now, else [`Error::Empty`].
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T> {
        self.get_deadline(Some(Instant::now()))
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

impl Queue<()> {
    /// A [`Builder`] for maxsize and ring capacity; the item type comes from
    /// [`Builder::build`] (`Queue::builder().maxsize(8).build::<u64>()`).
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<T> Queue<T> {
    pub(crate) fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The approximate number of items in the queue (Python's `qsize()`):
    /// exact when nobody else is putting or getting; while others are, a
    /// snapshot that may be stale by the time it is read (an item being put
    /// is counted from just before it becomes visible).
    pub fn qsize(&self) -> usize {
        self.ring.qsize()
    }

    /// `true` if [`qsize`](Self::qsize) is 0 (approximate, like Python's).
    pub fn empty(&self) -> bool {
        self.ring.qsize() == 0
    }

    /// `true` if the queue holds `maxsize` items (always `false` without a
    /// maxsize; approximate, like Python's).
    pub fn full(&self) -> bool {
        self.ring.full()
    }

    /// Test support: slots claimed by producers and not yet taken
    /// (committed or not).
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __pending_slots(&self) -> u64 {
        self.ring.pending_tickets()
    }

    /// The `maxsize` given at creation (0 = none).
    pub fn maxsize(&self) -> usize {
        self.ring.maxsize() as usize
    }

    /// The largest encoded item this queue accepts, in bytes.
    pub fn max_item_bytes(&self) -> usize {
        self.ring.spill_max_item()
    }

    /// Closes this process's handle (and its clones): later `put`s and
    /// `get`s through it return [`Error::Closed`]. Other processes' handles
    /// are unaffected, and items already put stay in the queue for them —
    /// as in Python, `close` means "this process is done with the queue".
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
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
}

impl<T> Handoff for Queue<T> {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.ring.region().export(ex)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let ring = Ring::attach(Region::import(im)?)?;
        Ok(Queue {
            ring,
            closed: Arc::new(AtomicBool::new(false)),
            _item: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_private<T: DeserializeOwned + 'static>(b: &[u8]) -> Result<T> {
        // SAFETY: a private slice nobody writes meanwhile.
        decode_item(unsafe { SharedBytes::new(b.as_ptr(), b.len(), b.len()) })
    }

    #[test]
    fn vec_u8_fast_path_matches_the_codec() {
        for len in [0usize, 1, 127, 128, 300, 16_384, 1 << 20] {
            let v: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut pre = [0u8; 10];
            let n = varint(len as u64, &mut pre);
            let mut fast = pre[..n].to_vec();
            fast.extend_from_slice(&v);
            assert_eq!(fast, codec::encode(&v).unwrap(), "encode, len {len}");
            assert_eq!(decode_private::<Vec<u8>>(&fast).unwrap(), v);
            assert_eq!(codec::decode::<Vec<u8>>(&fast).unwrap(), v);
        }
        assert!(decode_private::<Vec<u8>>(&[5, 1, 2]).is_err());
        assert!(decode_private::<Vec<u8>>(&[0xff; 12]).is_err());
        assert!(decode_private::<String>(&[200, 1, b'a']).is_err());
        let long = codec::encode(&"x".repeat(500)).unwrap();
        assert_eq!(decode_private::<String>(&long).unwrap(), "x".repeat(500));
    }
}
