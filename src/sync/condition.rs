//! [`Condition`]: a process-shared condition variable over a [`Lock`] or an
//! [`RLock`].
//!
//! # How it works
//!
//! The condition's shared memory holds a table of waiter slots
//! ([`MAX_WAITERS`]). A waiter, holding the lock, takes a free slot, writes its
//! pid and a ticket (arrival order) and marks it `WAITING`; then it releases
//! the lock and sleeps on its slot's own futex word. `notify(n)`, with the
//! lock held, marks the `n` oldest waiting slots `NOTIFIED` and wakes exactly
//! those waiters. A waiter whose timeout expires withdraws its slot with a
//! compare-and-swap `WAITING → FREE`; if that fails, a notification won the
//! race and the wait counts as notified. So `notify(n)` wakes exactly
//! `min(n, waiting)` waiters, never steals a wake-up for a later waiter, and
//! never blocks (CPython's `notify` waits for the woken to acknowledge, which
//! would hang on a waiter that died).
//!
//! **Dead waiters**: before notifying a slot, `notify` checks that its process
//! lives; the slot of a dead process is reclaimed and does not use up a
//! notification. A holder of the lock that dies is reported by the waiter's
//! re-acquisition as [`Error::OwnerDied`] (the lock is held again all the same).
//! Killing is asynchronous: a waiter whose process is being killed at the
//! very moment of `notify` is still alive when `notify` looks, so it may take
//! that notification with it. A program that kills waiters and must not lose
//! a wake-up notifies after the killed process has been joined, or uses
//! `notify_all`.
#![allow(unsafe_code)]

use super::error::LockResult;
use super::raw::{self, Acquired};
use super::{Lock, LockGuard, RLock, RLockGuard};
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::futex::{self, Wake};
use crate::sys::Region;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How many processes and threads can wait on one [`Condition`] at a time.
pub const MAX_WAITERS: usize = 128;

const FREE: u32 = 0;
const WAITING: u32 = 1;
const NOTIFIED: u32 = 2;

#[repr(C)]
#[derive(Debug)]
struct Slot {
    /// FREE / WAITING / NOTIFIED; the waiter's futex word.
    state: AtomicU32,
    pid: AtomicU32,
    ticket: AtomicU32,
    _reserved: AtomicU32,
}

#[repr(C)]
#[derive(Debug)]
struct RawCond {
    next_ticket: AtomicU32,
    _reserved: [AtomicU32; 3],
    slots: [Slot; MAX_WAITERS],
}

const COND_BYTES: usize = std::mem::size_of::<RawCond>();

mod private {
    /// What a condition needs from its lock (sealed).
    pub trait CondLockOps {
        /// An identity of the shared lock state, to check that a guard belongs to it.
        fn state_addr(&self) -> usize;
        /// `true` if the calling thread (for `Lock`: process) holds the lock.
        fn held_here(&self) -> bool;
        /// Releases the lock completely; returns what `restore` needs.
        fn release_save(&self) -> u32;
        /// Re-acquires the lock after `release_save`; `true` if a holder died.
        fn restore(&self, saved: u32) -> bool;
    }
}

/// A process-shared lock that other primitives can be built over:
/// [`Lock`] or [`RLock`] (sealed). A [`Condition`] uses one, and so do
/// [`Value`](crate::shared::Value) and [`Array`](crate::shared::Array)
/// (Python's `lock=` argument).
pub trait SharedLock: private::CondLockOps + Clone + Handoff {
    /// The lock's guard.
    type Guard<'a>
    where
        Self: 'a;
    /// Acquires the lock.
    fn acquire_guard(&self) -> LockResult<Self::Guard<'_>>;
    /// The shared-state identity of the lock a guard holds.
    #[doc(hidden)]
    fn guard_addr(g: &Self::Guard<'_>) -> usize;
}

impl private::CondLockOps for Lock {
    fn state_addr(&self) -> usize {
        self.raw() as *const _ as usize
    }
    fn held_here(&self) -> bool {
        self.raw().owner_pid() == Some(raw::current_pid())
    }
    fn release_save(&self) -> u32 {
        self.raw().unlock();
        1
    }
    fn restore(&self, _saved: u32) -> bool {
        self.raw().lock(None) == Ok(Acquired::OwnerDied)
    }
}

impl SharedLock for Lock {
    type Guard<'a> = LockGuard<'a>;
    fn acquire_guard(&self) -> LockResult<LockGuard<'_>> {
        self.acquire()
    }
    fn guard_addr(g: &LockGuard<'_>) -> usize {
        private::CondLockOps::state_addr(g.lock())
    }
}

impl private::CondLockOps for RLock {
    fn state_addr(&self) -> usize {
        self.state_addr()
    }
    fn held_here(&self) -> bool {
        self.is_mine()
    }
    fn release_save(&self) -> u32 {
        self.release_all()
    }
    fn restore(&self, saved: u32) -> bool {
        self.restore(saved, None) == Ok(Acquired::OwnerDied)
    }
}

impl SharedLock for RLock {
    type Guard<'a> = RLockGuard<'a>;
    fn acquire_guard(&self) -> LockResult<RLockGuard<'_>> {
        self.acquire()
    }
    fn guard_addr(g: &RLockGuard<'_>) -> usize {
        g.lock().state_addr()
    }
}

/// A process-shared condition variable (Python's
/// `multiprocessing.Condition`), usable with a [`Lock`] or (the default) an
/// [`RLock`].
///
/// Waiting takes the lock's guard, which proves the lock is held; the lock is
/// released while waiting and held again when `wait` returns (also when it
/// returns an error). [`notify`](Self::notify) and
/// [`notify_all`](Self::notify_all) require the lock to be held by the caller.
///
/// ```
/// use multiproc::sync::Condition;
/// use std::time::Duration;
///
/// let cond = Condition::new()?;
/// let mut g = cond.acquire()?;
/// let err = cond.wait_timeout(&mut g, Duration::from_millis(5)).unwrap_err();
/// assert!(err.is_timeout());                   // nobody notifies: Error::Timeout
/// cond.notify(1)?;                             // nobody waits: no-op
/// cond.wait_for(&mut g, || true, None)?;       // the predicate holds: Ok at once
/// drop(g);
/// assert!(cond.notify(1).is_err());            // lock not held
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// See the [module docs](crate::sync) for how waiters and notifications meet, and
/// what happens when a party dies.
pub struct Condition<L: SharedLock = RLock> {
    lock: L,
    raw: *const RawCond,
    region: Region,
}

// SAFETY: `raw` points into `region`'s mapping, which lives as long as
// `region` (same struct); all access to it is atomic. `L` is Send + Sync
// itself (both lock types are).
unsafe impl<L: SharedLock + Send> Send for Condition<L> {}
// SAFETY: as above.
unsafe impl<L: SharedLock + Sync> Sync for Condition<L> {}

impl Condition<RLock> {
    /// A condition with a new [`RLock`] (Python's `Condition()`).
    pub fn new() -> Result<Condition<RLock>> {
        Condition::with_lock(RLock::new()?)
    }
}

impl<L: SharedLock> Condition<L> {
    /// A condition over `lock` (Python's `Condition(lock)`).
    pub fn with_lock(lock: L) -> Result<Condition<L>> {
        Condition::from_parts(lock, Region::new(COND_BYTES, "multiproc-condition")?)
    }

    fn from_parts(lock: L, region: Region) -> Result<Condition<L>> {
        if region.len() < COND_BYTES {
            return Err(Error::Invalid("condition region too small".into()));
        }
        // SAFETY: offset 0 of a page-aligned mapping at least COND_BYTES
        // long; RawCond is atomics only, valid for every bit pattern.
        let raw: *const RawCond = unsafe { region.get::<RawCond>(0) };
        Ok(Condition { lock, raw, region })
    }

    #[inline]
    fn raw(&self) -> &RawCond {
        // SAFETY: valid while `self.region` lives.
        unsafe { &*self.raw }
    }

    /// The underlying lock.
    pub fn lock(&self) -> &L {
        &self.lock
    }

    /// Acquires the underlying lock (Python's `with cond:`).
    pub fn acquire(&self) -> LockResult<L::Guard<'_>> {
        self.lock.acquire_guard()
    }

    fn check_guard(&self, guard: &L::Guard<'_>) -> Result<()> {
        if L::guard_addr(guard) != self.lock.state_addr() || !self.lock.held_here() {
            return Err(Error::Invalid(
                "the guard is not of this condition's lock".into(),
            ));
        }
        Ok(())
    }

    /// Releases the lock, waits until notified, re-acquires the lock.
    ///
    /// # Errors
    ///
    /// [`Error::OwnerDied`]: the waiter was woken (or gave up) and holds the
    /// lock again, but a holder of the lock died meanwhile.
    pub fn wait(&self, guard: &mut L::Guard<'_>) -> Result<()> {
        self.wait_until(guard, None)
    }

    /// As [`wait`](Self::wait), for at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if nobody notified within `timeout` (Python's
    /// `False`); the lock is held again either way. [`Error::OwnerDied`] as
    /// for [`wait`](Self::wait) (it wins over a timeout).
    pub fn wait_timeout(&self, guard: &mut L::Guard<'_>, timeout: Duration) -> Result<()> {
        self.wait_until(guard, raw::deadline(Some(timeout)))
    }

    /// As [`wait`](Self::wait), until `deadline` (`None` = forever).
    ///
    /// # Errors
    ///
    /// As [`wait_timeout`](Self::wait_timeout).
    pub fn wait_until(&self, guard: &mut L::Guard<'_>, deadline: Option<Instant>) -> Result<()> {
        self.check_guard(guard)?;
        let slot = self.register()?;
        let saved = self.lock.release_save();
        let notified = self.sleep(slot, deadline);
        if self.lock.restore(saved) {
            return Err(Error::OwnerDied);
        }
        if notified {
            Ok(())
        } else {
            Err(Error::Timeout)
        }
    }

    /// Waits until `predicate()` is true (Python's `wait_for`), re-checking it
    /// after every wake-up, for at most `timeout` in total (`None` = forever).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the predicate is still false when `timeout` has
    /// passed (Python returns the predicate's last value, `False`);
    /// [`Error::OwnerDied`] as for [`wait`](Self::wait). The lock is held
    /// again in every case.
    pub fn wait_for(
        &self,
        guard: &mut L::Guard<'_>,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let deadline = raw::deadline(timeout);
        loop {
            if predicate() {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout);
            }
            match self.wait_until(guard, deadline) {
                Ok(()) | Err(Error::Timeout) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Wakes up to `n` waiters, oldest first. The caller must hold the lock
    /// ([`Error::NotHeld`] otherwise).
    pub fn notify(&self, n: usize) -> Result<()> {
        if !self.lock.held_here() {
            return Err(Error::NotHeld);
        }
        let slots = &self.raw().slots;
        let base = self.raw().next_ticket.load(Ordering::Relaxed);
        let mut waiting: Vec<(u32, usize)> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state.load(Ordering::Acquire) == WAITING)
            .map(|(i, s)| (s.ticket.load(Ordering::Relaxed).wrapping_sub(base), i))
            .collect();
        // Oldest ticket first (tickets wrap: order by distance from `base`).
        waiting.sort_unstable();
        let mut woken = 0;
        for (_, i) in waiting {
            if woken == n {
                break;
            }
            let s = &slots[i];
            if raw::is_dead(s.pid.load(Ordering::Relaxed)) {
                let _ =
                    s.state
                        .compare_exchange(WAITING, FREE, Ordering::Relaxed, Ordering::Relaxed);
                continue;
            }
            if s.state
                .compare_exchange(WAITING, NOTIFIED, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                futex::wake(&s.state, 1);
                woken += 1;
            }
        }
        Ok(())
    }

    /// Wakes every waiter. The caller must hold the lock.
    pub fn notify_all(&self) -> Result<()> {
        self.notify(usize::MAX)
    }

    /// How many are waiting now (approximate while others come and go).
    pub fn n_waiting(&self) -> usize {
        self.raw()
            .slots
            .iter()
            .filter(|s| s.state.load(Ordering::Relaxed) == WAITING)
            .count()
    }

    /// Takes a free slot (the lock is held, so registrations do not race).
    fn register(&self) -> Result<usize> {
        let r = self.raw();
        for pass in 0..2 {
            for (i, s) in r.slots.iter().enumerate() {
                if pass == 1
                    && s.state.load(Ordering::Relaxed) == WAITING
                    && raw::is_dead(s.pid.load(Ordering::Relaxed))
                {
                    let _ = s.state.compare_exchange(
                        WAITING,
                        FREE,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                if s.state.load(Ordering::Acquire) == FREE {
                    s.pid.store(raw::current_pid(), Ordering::Relaxed);
                    let t = r.next_ticket.load(Ordering::Relaxed);
                    r.next_ticket.store(t.wrapping_add(1), Ordering::Relaxed);
                    s.ticket.store(t, Ordering::Relaxed);
                    s.state.store(WAITING, Ordering::Release);
                    return Ok(i);
                }
            }
        }
        Err(Error::unsupported(format!(
            "more than {MAX_WAITERS} waiters on one condition"
        )))
    }

    /// Sleeps on `slot` until notified or `deadline`; frees the slot.
    fn sleep(&self, slot: usize, deadline: Option<Instant>) -> bool {
        let s = &self.raw().slots[slot];
        loop {
            if s.state.load(Ordering::Acquire) == NOTIFIED {
                s.state.store(FREE, Ordering::Release);
                return true;
            }
            match futex::wait(&s.state, WAITING, deadline) {
                Ok(Wake::Retry) => {}
                Ok(Wake::TimedOut) => {
                    if s.state
                        .compare_exchange(WAITING, FREE, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return false;
                    }
                }
                Err(_) => std::thread::yield_now(),
            }
        }
    }
}

impl<L: SharedLock> Clone for Condition<L> {
    /// Another handle to the same condition (and lock).
    fn clone(&self) -> Self {
        Condition {
            lock: self.lock.clone(),
            raw: self.raw,
            region: self.region.clone(),
        }
    }
}

impl<L: SharedLock + fmt::Debug> fmt::Debug for Condition<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Condition({:?}, {})>", self.lock, self.n_waiting())
    }
}

impl<L: SharedLock> Handoff for Condition<L> {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.lock.export(ex)?;
        self.region.export(ex)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let lock = L::import(im)?;
        Condition::from_parts(lock, Region::import(im)?)
    }
}
