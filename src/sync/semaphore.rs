//! [`Semaphore`] and [`BoundedSemaphore`]: process-shared counting semaphores.
//!
//! # What cannot be recovered
//!
//! A semaphore has no owner: any thread or process may release a count that
//! another acquired (that is how semaphores signal). So when a process dies
//! after an `acquire`, nothing tells whether it meant to give that count back,
//! and the count stays taken. Waiters are not stuck *forever* by the dead
//! process itself — only by the missing count — so use timeouts, or a
//! [`Lock`](super::Lock) when the count is really ownership of a resource.
#![allow(unsafe_code)]

use super::raw;
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::futex::{self, Wake};
use crate::sys::Region;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[repr(C)]
#[derive(Debug)]
struct RawSem {
    /// The value; the futex word waiters sleep on while it is 0.
    count: AtomicU32,
    /// How many are (about to be) asleep; release skips the wake-up when 0.
    waiters: AtomicU32,
    /// The bound of a `BoundedSemaphore`; `u32::MAX` for a plain one.
    max: AtomicU32,
}

const SEM_BYTES: usize = std::mem::size_of::<RawSem>();

/// The largest value a semaphore can hold (`SEM_VALUE_MAX` is `i32::MAX` in C;
/// here `u32::MAX - 1`).
pub const SEM_VALUE_MAX: u32 = u32::MAX - 1;

struct Shared {
    raw: *const RawSem,
    region: Region,
}

// SAFETY: `raw` points into `region`'s mapping, which lives as long as
// `region` (same struct); all access is atomic.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    fn new(value: u32, max: u32) -> Result<Shared> {
        let region = Region::new(SEM_BYTES, "multiproc-semaphore")?;
        let s = Shared::from_region(region)?;
        s.raw().count.store(value, Ordering::Relaxed);
        s.raw().max.store(max, Ordering::Relaxed);
        Ok(s)
    }

    fn from_region(region: Region) -> Result<Shared> {
        if region.len() < SEM_BYTES {
            return Err(Error::Invalid("semaphore region too small".into()));
        }
        // SAFETY: offset 0 of a page-aligned mapping at least SEM_BYTES long;
        // RawSem is atomics only, valid for every bit pattern.
        let raw: *const RawSem = unsafe { region.get::<RawSem>(0) };
        Ok(Shared { raw, region })
    }

    #[inline]
    fn raw(&self) -> &RawSem {
        // SAFETY: valid while `self.region` lives.
        unsafe { &*self.raw }
    }

    #[inline]
    fn try_take(&self) -> bool {
        let count = &self.raw().count;
        let mut c = count.load(Ordering::Relaxed);
        while c > 0 {
            match count.compare_exchange_weak(c, c - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => c = now,
            }
        }
        false
    }

    fn take(&self, deadline: Option<Instant>) -> bool {
        if self.try_take() {
            return true;
        }
        let r = self.raw();
        r.waiters.fetch_add(1, Ordering::SeqCst);
        let got = loop {
            if self.try_take() {
                break true;
            }
            match futex::wait(&r.count, 0, deadline) {
                Ok(Wake::Retry) => {}
                Ok(Wake::TimedOut) => break self.try_take(),
                Err(_) => std::thread::yield_now(),
            }
        };
        r.waiters.fetch_sub(1, Ordering::SeqCst);
        if !got && r.count.load(Ordering::SeqCst) > 0 && r.waiters.load(Ordering::SeqCst) > 0 {
            // A release may have woken us just as we gave up: pass it on.
            futex::wake(&r.count, 1);
        }
        got
    }

    fn give(&self) -> Result<()> {
        let r = self.raw();
        let max = r.max.load(Ordering::Relaxed).min(SEM_VALUE_MAX);
        let mut c = r.count.load(Ordering::Relaxed);
        loop {
            if c >= max {
                return Err(Error::ReleasedTooOften);
            }
            match r
                .count
                .compare_exchange_weak(c, c + 1, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => c = now,
            }
        }
        if r.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&r.count, 1);
        }
        Ok(())
    }

    fn value(&self) -> u32 {
        self.raw().count.load(Ordering::Relaxed)
    }
}

impl Clone for Shared {
    fn clone(&self) -> Self {
        Shared {
            raw: self.raw,
            region: self.region.clone(),
        }
    }
}

macro_rules! semaphore {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            shared: Shared,
        }

        impl $name {
            /// Blocks until the value is positive, then decrements it. The
            /// guard increments it again when dropped (or [`leak`](SemaphoreGuard::leak)
            /// it and call [`release`](Self::release) later, as in Python).
            pub fn acquire(&self) -> Result<SemaphoreGuard<'_>> {
                self.shared.take(None);
                Ok(SemaphoreGuard { shared: &self.shared })
            }

            /// Decrements the value if it is positive now; [`Error::Timeout`] otherwise.
            pub fn try_acquire(&self) -> Result<SemaphoreGuard<'_>> {
                if self.shared.try_take() {
                    Ok(SemaphoreGuard { shared: &self.shared })
                } else {
                    Err(Error::Timeout)
                }
            }

            /// Waits at most `timeout` for a positive value; [`Error::Timeout`] if none came.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphoreGuard<'_>> {
                match raw::deadline(Some(timeout)) {
                    Some(d) => self.acquire_deadline(d),
                    None => self.acquire(),
                }
            }

            /// Waits until `deadline` for a positive value.
            pub fn acquire_deadline(&self, deadline: Instant) -> Result<SemaphoreGuard<'_>> {
                if self.shared.take(Some(deadline)) {
                    Ok(SemaphoreGuard { shared: &self.shared })
                } else {
                    Err(Error::Timeout)
                }
            }

            /// Increments the value, waking one waiter.
            pub fn release(&self) -> Result<()> {
                self.shared.give()
            }

            /// The current value (Python's `get_value()`).
            pub fn value(&self) -> u32 {
                self.shared.value()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let max = self.shared.raw().max.load(Ordering::Relaxed);
                if max == u32::MAX {
                    write!(f, "<{}(value={})>", $kind, self.value())
                } else {
                    write!(f, "<{}(value={}, maxvalue={max})>", $kind, self.value())
                }
            }
        }

        impl Handoff for $name {
            fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
                self.shared.region.export(ex)
            }

            fn import(im: &mut Importer) -> Result<Self> {
                Ok($name { shared: Shared::from_region(Region::import(im)?)? })
            }
        }
    };
}

semaphore!(
    /// A process-shared counting semaphore (Python's
    /// `multiprocessing.Semaphore`): `acquire` waits for a positive value and
    /// decrements it, `release` increments it (without bound).
    ///
    /// Clones share the semaphore; it reaches a child as a
    /// [`Process`](crate::Process) argument. A count taken by a process that
    /// dies is not given back (see the [module docs](crate::sync)).
    ///
    /// ```
    /// use multiproc::sync::Semaphore;
    ///
    /// let s = Semaphore::new(2)?;
    /// let a = s.acquire()?;
    /// let b = s.acquire()?;
    /// assert!(s.try_acquire().is_err());
    /// drop(a);
    /// assert_eq!(s.value(), 1);
    /// b.leak();                 // keep the count taken, Python-style…
    /// s.release()?;             // …and give it back explicitly
    /// s.release()?;             // unbounded: goes to 3
    /// assert_eq!(s.value(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    Semaphore,
    "Semaphore"
);

semaphore!(
    /// A semaphore whose value may not exceed its initial value (Python's
    /// `multiprocessing.BoundedSemaphore`): one release too many is
    /// [`Error::ReleasedTooOften`].
    ///
    /// ```
    /// use multiproc::sync::BoundedSemaphore;
    ///
    /// let s = BoundedSemaphore::new(1)?;
    /// assert!(s.release().is_err());     // already at its bound
    /// let g = s.acquire()?;
    /// assert_eq!(s.value(), 0);
    /// drop(g);
    /// assert_eq!(s.value(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    BoundedSemaphore,
    "BoundedSemaphore"
);

impl Semaphore {
    /// A semaphore with initial `value` (Python's default is 1).
    pub fn new(value: u32) -> Result<Semaphore> {
        if value > SEM_VALUE_MAX {
            return Err(Error::Invalid("semaphore initial value too large".into()));
        }
        Ok(Semaphore {
            shared: Shared::new(value, u32::MAX)?,
        })
    }
}

impl BoundedSemaphore {
    /// A bounded semaphore with initial (and maximum) `value`.
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        if value > SEM_VALUE_MAX {
            return Err(Error::Invalid("semaphore initial value too large".into()));
        }
        Ok(BoundedSemaphore {
            shared: Shared::new(value, value)?,
        })
    }
}

/// One count of a [`Semaphore`] or [`BoundedSemaphore`]; released when dropped.
#[must_use = "the count is given back as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    shared: &'a Shared,
}

impl SemaphoreGuard<'_> {
    /// Gives the count back now (same as dropping the guard).
    pub fn release(self) {
        drop(self)
    }

    /// Keeps the count taken; give it back later with `release()` on the
    /// semaphore (from any thread or process).
    pub fn leak(self) {
        std::mem::forget(self)
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        let _ = self.shared.give();
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SemaphoreGuard { .. }")
    }
}
