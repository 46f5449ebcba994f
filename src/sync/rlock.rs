//! [`RLock`]: a re-entrant, process-shared lock, robust to a holder that dies.
#![allow(unsafe_code)]

use super::error::{LockResult, OwnerDied, TryAcquireError, TryLockResult};
use super::raw::{self, Acquired, RawLock, RAW_LOCK_BYTES};
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::Region;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The shared state: the robust lock word, then — 64 bytes from its start,
/// so in another cache line when the state is line-aligned (as at the start
/// of a region) — who holds it and how often. Waiters only read the lock
/// word; the holder's own bookkeeping (and, in a `Value`, the data after it)
/// then never moves the waiters' cache line.
#[repr(C, align(8))]
#[derive(Debug)]
struct RawRLock {
    lock: RawLock,
    _pad: [AtomicU32; (64 - RAW_LOCK_BYTES) / 4],
    /// The holder's thread number within its process (0 = none).
    thread: AtomicU32,
    /// Recursion depth; only the holder touches it.
    count: AtomicU32,
}

const RLOCK_BYTES: usize = std::mem::size_of::<RawRLock>();

/// A re-entrant process-shared lock (Python's `multiprocessing.RLock`): owned
/// by one thread of one process, which may acquire it again; it is released
/// when that owner has released it as many times as it acquired it.
///
/// Only the owner may release it ([`Error::NotHeld`] otherwise). If the owning
/// *process* dies holding it, the next acquirer takes it over and gets its
/// guard inside [`OwnerDied`], as with [`Lock`](super::Lock). (A thread that
/// exits holding it, in a process that lives on, leaves it held, as in
/// Python.)
///
/// ```
/// use multiproc::sync::RLock;
///
/// let r = RLock::new()?;
/// let a = r.acquire()?;
/// let b = r.acquire()?;            // same thread: no deadlock
/// assert_eq!(r.count(), 2);
/// drop(b);
/// drop(a);
/// assert!(!r.locked());
/// assert!(r.release().is_err());   // not held: an error
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RLock {
    raw: *const RawRLock,
    region: Region,
    offset: usize,
}

// SAFETY: `raw` points into `region`'s shared mapping, which lives as long as
// `region` (kept in the same struct); all access goes through atomics.
unsafe impl Send for RLock {}
// SAFETY: as above.
unsafe impl Sync for RLock {}

impl RLock {
    /// Creates an unlocked re-entrant lock in a fresh shared-memory region.
    pub fn new() -> Result<RLock> {
        RLock::in_region(Region::new(RLOCK_BYTES, "multiproc-rlock")?, 0)
    }

    /// Bytes of shared memory an `RLock`'s state takes (for [`in_region`](Self::in_region)).
    #[allow(dead_code)] // for `shared::Value`/`Array`, which keep the lock beside the value
    pub(crate) const RLOCK_BYTES: usize = RLOCK_BYTES;

    /// An `RLock` whose state is the [`RLOCK_BYTES`](Self::RLOCK_BYTES) bytes
    /// at `offset` in `region` (all zeroes = unlocked). `offset` must be a
    /// multiple of 8 and the bytes in bounds and used for nothing else.
    pub(crate) fn in_region(region: Region, offset: usize) -> Result<RLock> {
        let fits = offset
            .checked_add(RLOCK_BYTES)
            .is_some_and(|end| end <= region.len());
        if offset % 8 != 0 || !fits {
            return Err(Error::Invalid(format!(
                "rlock at offset {offset} does not fit a region of {} bytes (needs {RLOCK_BYTES}, aligned to 8)",
                region.len()
            )));
        }
        // SAFETY: bounds and alignment checked above (the mapping itself is
        // page-aligned); RawRLock is atomics only, valid for every bit pattern.
        let raw: *const RawRLock = unsafe { region.get::<RawRLock>(offset) };
        Ok(RLock {
            raw,
            region,
            offset,
        })
    }

    #[inline]
    fn raw(&self) -> &RawRLock {
        // SAFETY: valid while `self.region` lives (see the Send/Sync impls).
        unsafe { &*self.raw }
    }

    /// The address of the shared state in this process (an identity).
    pub(crate) fn state_addr(&self) -> usize {
        self.raw as usize
    }

    /// `true` if the calling thread of this process holds the lock.
    #[inline]
    pub fn is_mine(&self) -> bool {
        let r = self.raw();
        r.lock.owner_pid() == Some(raw::current_pid())
            && r.thread.load(Ordering::Relaxed) == raw::current_thread()
    }

    #[inline]
    fn reenter(&self) -> Option<RLockGuard<'_>> {
        if self.is_mine() {
            let r = self.raw();
            r.count
                .store(r.count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            return Some(RLockGuard {
                lock: self,
                _not_send: PhantomData,
            });
        }
        None
    }

    #[inline]
    fn took(&self, a: Acquired) -> LockResult<RLockGuard<'_>> {
        let r = self.raw();
        r.thread.store(raw::current_thread(), Ordering::Relaxed);
        r.count.store(1, Ordering::Relaxed);
        let g = RLockGuard {
            lock: self,
            _not_send: PhantomData,
        };
        match a {
            Acquired::Clean => Ok(g),
            Acquired::OwnerDied => Err(OwnerDied::new(g)),
        }
    }

    /// Blocks until the calling thread holds the lock (at once if it already
    /// does); the guard releases one level when dropped.
    #[inline]
    pub fn acquire(&self) -> LockResult<RLockGuard<'_>> {
        // Free: ours at once (it cannot have been ours already).
        if let Some(a) = self.raw().lock.lock_if_free() {
            return self.took(a);
        }
        if let Some(g) = self.reenter() {
            return self.report(g);
        }
        match self.raw().lock.lock(None) {
            Ok(a) => self.took(a),
            Err(_) => unreachable!("an acquisition without deadline does not time out"),
        }
    }

    /// Re-entered guards report a death that is still flagged, too.
    fn report<'a>(&'a self, g: RLockGuard<'a>) -> LockResult<RLockGuard<'a>> {
        if self.raw().lock.died() {
            Err(OwnerDied::new(g))
        } else {
            Ok(g)
        }
    }

    /// Acquires if free now (or already ours, or its holder is dead).
    pub fn try_acquire(&self) -> TryLockResult<RLockGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Ok(self.report(g)?);
        }
        match self.raw().lock.try_lock() {
            Ok(a) => Ok(self.took(a)?),
            Err(_) => Err(TryAcquireError::Timeout),
        }
    }

    /// Waits at most `timeout` for the lock.
    pub fn acquire_timeout(&self, timeout: Duration) -> TryLockResult<RLockGuard<'_>> {
        match raw::deadline(Some(timeout)) {
            Some(d) => self.acquire_deadline(d),
            None => Ok(self.acquire()?),
        }
    }

    /// Waits until `deadline` for the lock.
    pub fn acquire_deadline(&self, deadline: Instant) -> TryLockResult<RLockGuard<'_>> {
        if let Some(g) = self.reenter() {
            return Ok(self.report(g)?);
        }
        match self.raw().lock.lock(Some(deadline)) {
            Ok(a) => Ok(self.took(a)?),
            Err(_) => Err(TryAcquireError::Timeout),
        }
    }

    /// Releases one level (Python's `release()`, after a guard was
    /// [leaked](RLockGuard::leak)). [`Error::NotHeld`] unless the calling
    /// thread holds the lock.
    pub fn release(&self) -> Result<()> {
        if !self.is_mine() {
            return Err(Error::NotHeld);
        }
        self.release_one();
        Ok(())
    }

    #[inline]
    fn release_one(&self) {
        let r = self.raw();
        let c = r.count.load(Ordering::Relaxed);
        if c > 1 {
            r.count.store(c - 1, Ordering::Relaxed);
        } else {
            r.count.store(0, Ordering::Relaxed);
            r.thread.store(0, Ordering::Relaxed);
            r.lock.unlock();
        }
    }

    /// Releases every level at once; returns the depth (for `Condition::wait`).
    pub(crate) fn release_all(&self) -> u32 {
        let r = self.raw();
        let c = r.count.load(Ordering::Relaxed);
        r.count.store(0, Ordering::Relaxed);
        r.thread.store(0, Ordering::Relaxed);
        r.lock.unlock();
        c
    }

    /// Re-acquires `depth` levels after [`release_all`](Self::release_all).
    pub(crate) fn restore(
        &self,
        depth: u32,
        deadline: Option<Instant>,
    ) -> std::result::Result<Acquired, raw::TimedOut> {
        let a = self.raw().lock.lock(deadline)?;
        let r = self.raw();
        r.thread.store(raw::current_thread(), Ordering::Relaxed);
        r.count.store(depth.max(1), Ordering::Relaxed);
        Ok(a)
    }

    /// `true` while some thread of some process holds the lock.
    pub fn locked(&self) -> bool {
        self.raw().lock.is_locked()
    }

    /// The recursion depth, if the calling thread holds the lock; 0 otherwise.
    pub fn count(&self) -> u32 {
        if self.is_mine() {
            self.raw().count.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// `true` once a holder died holding the lock, until cleared.
    pub fn is_owner_died(&self) -> bool {
        self.raw().lock.died()
    }

    /// Declares the protected state repaired (see [`Lock::clear_owner_died`](super::Lock::clear_owner_died)).
    pub fn clear_owner_died(&self) {
        self.raw().lock.clear_died()
    }
}

impl Clone for RLock {
    /// Another handle to the same lock.
    fn clone(&self) -> Self {
        RLock {
            raw: self.raw,
            region: self.region.clone(),
            offset: self.offset,
        }
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.raw();
        match r.lock.owner_pid() {
            None => write!(f, "<RLock(None, 0)>"),
            Some(_) if self.is_mine() => {
                write!(f, "<RLock(self, {})>", r.count.load(Ordering::Relaxed))
            }
            Some(p) => write!(f, "<RLock(pid {p}, nonzero)>"),
        }
    }
}

impl Handoff for RLock {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.region.export(ex)?;
        ex.write(&(self.offset as u64))
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let region = Region::import(im)?;
        let offset: u64 = im.read()?;
        RLock::in_region(region, offset as usize)
    }
}

/// Holds one level of an [`RLock`]; releases it when dropped.
#[must_use = "the lock level is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    // Owned by the acquiring thread: not `Send`, like `std::sync::MutexGuard`.
    _not_send: PhantomData<*const ()>,
}

impl<'a> RLockGuard<'a> {
    /// The lock this guard holds.
    pub fn lock(&self) -> &'a RLock {
        self.lock
    }

    /// Releases this level now (same as dropping the guard).
    pub fn release(self) {
        drop(self)
    }

    /// Keeps this level held without a guard; release it later with
    /// [`RLock::release`] from the same thread.
    pub fn leak(self) {
        std::mem::forget(self)
    }
}

impl Drop for RLockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.lock.is_mine() {
            self.lock.release_one();
        }
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard")
            .field("lock", self.lock)
            .finish()
    }
}
