//! [`Event`]: a process-shared flag that processes can wait for.
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::futex::{self, Wake};
use crate::sys::Region;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[repr(C)]
#[derive(Debug)]
struct RawEvent {
    /// 1 when set; the futex word waiters sleep on while it is 0.
    flag: AtomicU32,
    /// How many are (about to be) asleep; `set` skips the wake-up when 0.
    waiters: AtomicU32,
}

const EVENT_BYTES: usize = std::mem::size_of::<RawEvent>();

/// A process-shared event (Python's `multiprocessing.Event`): a flag that
/// [`set`](Self::set) raises, [`clear`](Self::clear) lowers, and
/// [`wait`](Self::wait) waits for.
///
/// It has no holder, so a process dying cannot leave it broken; a waiter whose
/// setter died waits for its timeout.
///
/// ```
/// use multiproc::sync::Event;
/// use std::time::Duration;
///
/// let e = Event::new()?;
/// assert!(!e.is_set());
/// let timed_out = e.wait_timeout(Duration::from_millis(1)).unwrap_err();
/// assert!(timed_out.is_timeout());   // Error::Timeout, as every timed wait
/// e.set();
/// e.wait_timeout(Duration::ZERO)?;   // set: Ok at once
/// e.wait();                          // returns at once while set
/// e.clear();
/// assert!(!e.is_set());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    raw: *const RawEvent,
    region: Region,
}

// SAFETY: `raw` points into `region`'s mapping, which lives as long as
// `region` (same struct); all access is atomic.
unsafe impl Send for Event {}
// SAFETY: as above.
unsafe impl Sync for Event {}

impl Event {
    /// A new, unset event.
    pub fn new() -> Result<Event> {
        Event::from_region(Region::new(EVENT_BYTES, "multiproc-event")?)
    }

    fn from_region(region: Region) -> Result<Event> {
        if region.len() < EVENT_BYTES {
            return Err(Error::Invalid("event region too small".into()));
        }
        // SAFETY: offset 0 of a page-aligned mapping at least EVENT_BYTES
        // long; RawEvent is atomics only, valid for every bit pattern.
        let raw: *const RawEvent = unsafe { region.get::<RawEvent>(0) };
        Ok(Event { raw, region })
    }

    #[inline]
    fn raw(&self) -> &RawEvent {
        // SAFETY: valid while `self.region` lives.
        unsafe { &*self.raw }
    }

    /// `true` while the flag is set.
    pub fn is_set(&self) -> bool {
        self.raw().flag.load(Ordering::Acquire) != 0
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        let r = self.raw();
        r.flag.store(1, Ordering::SeqCst);
        if r.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake_all(&r.flag);
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.raw().flag.store(0, Ordering::SeqCst);
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        self.wait_flag(None);
    }

    /// Waits at most `timeout` for the flag (Python's `wait(timeout)`).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the flag was not set within `timeout` (Python
    /// returns `False`).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_until(super::raw::deadline(Some(timeout)))
    }

    /// Waits until `deadline` (`None` = forever) for the flag.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the flag was not set by `deadline`.
    pub fn wait_until(&self, deadline: Option<Instant>) -> Result<()> {
        if self.wait_flag(deadline) {
            Ok(())
        } else {
            Err(Error::Timeout)
        }
    }

    /// Waits until the flag is set or `deadline`; whether it is set.
    fn wait_flag(&self, deadline: Option<Instant>) -> bool {
        if self.is_set() {
            return true;
        }
        let r = self.raw();
        r.waiters.fetch_add(1, Ordering::SeqCst);
        let set = loop {
            if r.flag.load(Ordering::SeqCst) != 0 {
                break true;
            }
            match futex::wait(&r.flag, 0, deadline) {
                Ok(Wake::Retry) => {}
                Ok(Wake::TimedOut) => break self.is_set(),
                Err(_) => std::thread::yield_now(),
            }
        };
        r.waiters.fetch_sub(1, Ordering::SeqCst);
        set
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<Event({})>",
            if self.is_set() { "set" } else { "unset" }
        )
    }
}

impl Handoff for Event {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.region.export(ex)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        Event::from_region(Region::import(im)?)
    }
}
