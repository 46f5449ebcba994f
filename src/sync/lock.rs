//! [`Lock`]: a robust, process-shared mutual-exclusion lock.
#![allow(unsafe_code)]

use super::error::{LockResult, OwnerDied, TryAcquireError, TryLockResult};
use super::raw::{self, Acquired, RawLock, RAW_LOCK_BYTES};
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::Region;
use std::fmt;
use std::time::{Duration, Instant};

/// A process-shared lock (Python's `multiprocessing.Lock`), robust to a holder
/// that dies.
///
/// The lock lives in shared memory; clones share it, and it reaches a child
/// process as a [`Process`](crate::Process) argument. It also works between
/// threads (`Send + Sync`).
///
/// As in Python, the lock is not owned by a thread: any thread or process may
/// [`release`](Self::release) it. Acquiring it twice from one thread without
/// releasing deadlocks (use [`RLock`](super::RLock) for re-entrance).
///
/// **A holder that dies** (killed, crashed, exited) does not block the others:
/// the next acquirer notices within about 100 ms, takes the lock over and gets
/// its guard inside [`OwnerDied`], so it can repair the protected state; the
/// signal repeats for every acquirer until [`clear_owner_died`](Self::clear_owner_died).
///
/// ```
/// use multiproc::sync::Lock;
///
/// let lock = Lock::new()?;
/// {
///     let _g = lock.acquire()?;          // released when the guard drops
///     assert!(lock.locked());
///     assert!(lock.try_acquire().is_err());
/// }
/// assert!(!lock.locked());
/// assert!(lock.release().is_err());      // releasing an unlocked lock is an error
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Lock {
    raw: *const RawLock,
    region: Region,
    offset: usize,
}

// SAFETY: `raw` points into `region`'s shared mapping, which lives as long as
// `region` (kept in the same struct); every access to the `RawLock` goes
// through atomics.
unsafe impl Send for Lock {}
// SAFETY: as above.
unsafe impl Sync for Lock {}

impl Lock {
    /// Creates an unlocked lock in a fresh shared-memory region.
    pub fn new() -> Result<Lock> {
        let region = Region::new(RAW_LOCK_BYTES, "multiproc-lock")?;
        Lock::in_region(region, 0)
    }

    /// A lock whose state is the [`LOCK_BYTES`](Self::LOCK_BYTES) bytes at
    /// `offset` in `region` (all zeroes = unlocked). `offset` must be a
    /// multiple of 8 and the bytes in bounds; they must not be used for
    /// anything else.
    pub(crate) fn in_region(region: Region, offset: usize) -> Result<Lock> {
        let fits = offset
            .checked_add(RAW_LOCK_BYTES)
            .is_some_and(|end| end <= region.len());
        if offset % 8 != 0 || !fits {
            return Err(Error::Invalid(format!(
                "lock at offset {offset} does not fit a region of {} bytes (needs {RAW_LOCK_BYTES}, aligned to 8)",
                region.len()
            )));
        }
        // SAFETY: bounds and alignment checked above; a RawLock is atomics
        // only, valid for every bit pattern, and the mapping is at least
        // 8-aligned (page-aligned).
        let raw: *const RawLock = unsafe { region.get::<RawLock>(offset) };
        Ok(Lock {
            raw,
            region,
            offset,
        })
    }

    /// Bytes of shared memory a lock's state takes (for [`in_region`](Self::in_region)).
    #[allow(dead_code)] // for `shared::Value`/`Array`, which keep the lock beside the value
    pub(crate) const LOCK_BYTES: usize = RAW_LOCK_BYTES;

    #[inline]
    pub(crate) fn raw(&self) -> &RawLock {
        // SAFETY: see the `Send`/`Sync` impls: the pointer is valid while
        // `self.region` lives.
        unsafe { &*self.raw }
    }

    /// The region holding the lock's state, and its offset there.
    #[allow(dead_code)] // for `shared::Value`/`Array`
    pub(crate) fn region(&self) -> (&Region, usize) {
        (&self.region, self.offset)
    }

    #[inline]
    fn wrap(&self, a: Acquired) -> LockResult<LockGuard<'_>> {
        let g = LockGuard { lock: self };
        match a {
            Acquired::Clean => Ok(g),
            Acquired::OwnerDied => Err(OwnerDied::new(g)),
        }
    }

    /// Blocks until the lock is acquired; returns a guard that releases it
    /// when dropped. If a previous holder died holding it, the guard comes in
    /// [`OwnerDied`] (the lock is held either way).
    #[inline]
    pub fn acquire(&self) -> LockResult<LockGuard<'_>> {
        match self.raw().lock(None) {
            Ok(a) => self.wrap(a),
            Err(_) => unreachable!("an acquisition without deadline does not time out"),
        }
    }

    /// Acquires the lock if it is free now (Python's `acquire(False)`), or if
    /// its holder is dead.
    pub fn try_acquire(&self) -> TryLockResult<LockGuard<'_>> {
        match self.raw().try_lock() {
            Ok(a) => Ok(self.wrap(a)?),
            Err(_) => Err(TryAcquireError::Timeout),
        }
    }

    /// Waits at most `timeout` for the lock (Python's `acquire(timeout=t)`).
    pub fn acquire_timeout(&self, timeout: Duration) -> TryLockResult<LockGuard<'_>> {
        match raw::deadline(Some(timeout)) {
            Some(d) => self.acquire_deadline(d),
            None => Ok(self.acquire()?),
        }
    }

    /// Waits until `deadline` for the lock.
    pub fn acquire_deadline(&self, deadline: Instant) -> TryLockResult<LockGuard<'_>> {
        match self.raw().lock(Some(deadline)) {
            Ok(a) => Ok(self.wrap(a)?),
            Err(_) => Err(TryAcquireError::Timeout),
        }
    }

    /// Releases the lock, whoever acquired it (Python's `release()`); for a
    /// lock acquired through a guard, prefer dropping the guard, or keep it
    /// held without a guard with [`LockGuard::leak`].
    ///
    /// Releasing a lock that is not locked is [`Error::NotHeld`]. Releasing a
    /// lock whose guard is still alive elsewhere is a logic error: that guard
    /// would release it again when dropped.
    pub fn release(&self) -> Result<()> {
        if self.raw().unlock() {
            Ok(())
        } else {
            Err(Error::NotHeld)
        }
    }

    /// `true` while somebody (any thread, any process) holds the lock.
    pub fn locked(&self) -> bool {
        self.raw().is_locked()
    }

    /// `true` once a holder died holding the lock, until cleared.
    pub fn is_owner_died(&self) -> bool {
        self.raw().died()
    }

    /// Declares the protected state repaired: later acquisitions return plain
    /// guards again (`std::sync::Mutex::clear_poison`).
    pub fn clear_owner_died(&self) {
        self.raw().clear_died()
    }
}

impl Clone for Lock {
    /// Another handle to the same lock.
    fn clone(&self) -> Self {
        Lock {
            raw: self.raw,
            region: self.region.clone(),
            offset: self.offset,
        }
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.raw().owner_pid() {
            None => write!(f, "<Lock(owner=None)>"),
            Some(p) => write!(f, "<Lock(owner=pid {p})>"),
        }
    }
}

impl Handoff for Lock {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.region.export(ex)?;
        ex.write(&(self.offset as u64))
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let region = Region::import(im)?;
        let offset: u64 = im.read()?;
        Lock::in_region(region, offset as usize)
    }
}

/// Holds a [`Lock`]; releases it when dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl<'a> LockGuard<'a> {
    /// The lock this guard holds.
    pub fn lock(&self) -> &'a Lock {
        self.lock
    }

    /// Releases the lock now (same as dropping the guard).
    pub fn release(self) {
        drop(self)
    }

    /// Keeps the lock held without a guard, as after Python's `acquire()`;
    /// release it later with [`Lock::release`] (from any thread or process).
    pub fn leak(self) {
        std::mem::forget(self)
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.raw().unlock();
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("lock", self.lock)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Locks placed side by side in one region (as `Value` does) are
    /// independent, survive a handoff round trip, and bad offsets are refused.
    #[test]
    fn locks_in_one_region() {
        let region = Region::new(64, "test-locks").unwrap();
        let a = Lock::in_region(region.clone(), 0).unwrap();
        let b = Lock::in_region(region.clone(), Lock::LOCK_BYTES).unwrap();
        let ga = a.acquire().unwrap();
        assert!(b.try_acquire().is_ok());
        assert!(a.try_acquire().is_err());
        let (a2,) = crate::handoff::round_trip(&(a.clone(),)).unwrap();
        assert!(a2.locked());
        drop(ga);
        assert!(!a2.locked());
        assert_eq!(a2.region().1, 0);
        assert!(Lock::in_region(region.clone(), 4).is_err());
        assert!(Lock::in_region(region.clone(), 56).is_err());
        assert!(Lock::in_region(region, usize::MAX - 7).is_err());
        let r = RLockCheck::new();
        r.check();
    }

    struct RLockCheck(crate::sync::RLock);

    impl RLockCheck {
        fn new() -> Self {
            let region = Region::new(256, "test-rlock").unwrap();
            RLockCheck(crate::sync::RLock::in_region(region, 16).unwrap())
        }
        fn check(&self) {
            let g = self.0.acquire().unwrap();
            let (r2,) = crate::handoff::round_trip(&(self.0.clone(),)).unwrap();
            assert!(
                r2.is_mine(),
                "same thread, same process: the imported handle is the same lock"
            );
            drop(g);
            assert!(!r2.locked());
        }
    }
}
