//! `get_async`, `put_async` and `join_async` for every queue flavour
//! ([`Queue`](crate::Queue), [`SimpleQueue`](crate::queue::SimpleQueue),
//! [`JoinableQueue`](crate::queue::JoinableQueue)).
//!
//! Each future makes non-blocking attempts of the ordinary operation: the
//! first at once, then (while the attempts fail) for as long as a blocking
//! call would spin (50 µs) — after short CPU pauses for the first 2 µs,
//! then between cooperative yields — and then between wake-ups
//! of the queue's *doorbell*, an eventfd that a producer or consumer in any
//! process rings only when an async waiter has armed it (see
//! `src/queue/wake.rs` for the protocol and why no wake-up is lost).
//! No thread is started, and no item is ever held across an `.await`: an
//! attempt that takes an item returns it in the same poll.

use super::process::watch;
use crate::error::{Error, Result};
use crate::queue::flavor::{Flavor, Joinable};
use crate::queue::GenericQueue;
use crate::queue::{Await, Ring, SPIN_FOR, STUCK_CHECK};
use serde::{de::DeserializeOwned, Serialize};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a waiter spins on the CPU before it yields to the runtime.
const HOT_SPIN: Duration = Duration::from_micros(2);

/// A deadline that has passed: one attempt, and no clock read when it
/// succeeds.
fn past() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// Runs `attempt` until it gives a value: at once, then between yields
/// for [`SPIN_FOR`], then between doorbell rings (armed for `what` before
/// each re-check). Every `.await` point is between two attempts, so
/// dropping the future there loses nothing.
async fn attempt_until<R>(
    ring: &Ring,
    what: Await,
    mut attempt: impl FnMut() -> Result<Option<R>>,
) -> Result<R> {
    if let Some(r) = attempt()? {
        return Ok(r);
    }
    // Spin: while both sides keep up, the item (or the room) comes within
    // microseconds, sooner than a wake-up through the reactor would. First
    // on the CPU for at most HOT_SPIN (as a blocking call does; too short
    // to hold up other tasks), then cooperatively, yielding to the runtime
    // between attempts.
    let start = Instant::now();
    let mut pauses = 16;
    loop {
        if start.elapsed() < HOT_SPIN {
            for _ in 0..pauses {
                std::hint::spin_loop();
            }
            pauses = (pauses * 2).min(128);
        } else {
            tokio::task::yield_now().await;
        }
        if let Some(r) = attempt()? {
            return Ok(r);
        }
        if start.elapsed() >= SPIN_FOR {
            break;
        }
    }
    // Register first (W1), then arm (W2), then re-check (W3), then wait (W4).
    let bell = watch(ring.doorbell().fd())?;
    let mut stuck: Option<(u64, Instant)> = None;
    loop {
        ring.arm(what);
        if let Some(r) = attempt()? {
            return Ok(r);
        }
        // Held up behind a producer's uncommitted claim (it may have died
        // mid-put: only time tells), look again every STUCK_CHECK, as a
        // blocking `get` does.
        let head = match what {
            Await::Item => ring.stuck_head(),
            _ => None,
        };
        let Some(t) = head else {
            stuck = None;
            bell.readable().await?.clear_ready();
            continue;
        };
        let since = match stuck {
            Some((t0, since)) if t0 == t => since,
            _ => stuck.insert((t, Instant::now())).1,
        };
        let left = STUCK_CHECK.saturating_sub(since.elapsed());
        if left.is_zero() {
            ring.recover_head(t);
            stuck = None;
            continue;
        }
        if let Ok(ready) = tokio::time::timeout(left, bell.readable()).await {
            ready?.clear_ready();
        }
    }
}

impl<T: Serialize + DeserializeOwned + 'static, F: Flavor> GenericQueue<T, F> {
    /// [`get`](Self::get) as a future, for tokio programs (feature
    /// `tokio`): resolves to the oldest item without blocking a runtime
    /// thread, whichever process puts it.
    ///
    /// **Cancel safe**: dropping the future never loses an item. It takes
    /// an item only in a poll that then returns it; if it is dropped
    /// before, the item is still in the queue for the next `get`.
    ///
    /// Must be polled within a tokio runtime with its I/O and time drivers
    /// enabled (`enable_all`). No thread is started per waiter: a waiter
    /// sleeps on the queue's doorbell, which producers ring only while an
    /// async waiter waits (see [`aio`](crate::aio)).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get); an I/O error outside such a runtime.
    ///
    /// ```no_run
    /// use multiproc::queue::Queue;
    ///
    /// fn produce(q: Queue<u32>) {
    ///     for i in 0..3 {
    ///         q.put(i).unwrap();
    ///     }
    /// }
    ///
    /// # fn main() -> multiproc::Result<()> {
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    /// rt.block_on(async {
    ///     let q = Queue::new()?;
    ///     let mut p = multiproc::Process::start(produce, (q.clone(),))?;
    ///     for i in 0..3 {
    ///         assert_eq!(q.get_async().await?, i);
    ///     }
    ///     p.join_async().await
    /// })
    /// # }
    /// ```
    pub async fn get_async(&self) -> Result<T> {
        attempt_until(self.ring(), Await::Item, || {
            match self.get_deadline(Some(past())) {
                Ok(item) => Ok(Some(item)),
                Err(Error::Empty) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// [`put`](Self::put) as a future (feature `tokio`): on a bounded queue
    /// holding `maxsize` items, waits without blocking a runtime thread
    /// until a consumer (in any process) takes one.
    ///
    /// An unbounded queue never makes it wait: as [`put`](Self::put), it
    /// takes every item, into its spill area when the ring is full (at once,
    /// where a blocking `put` would first wait up to 100 ms for room in the
    /// ring).
    ///
    /// **Not cancel safe**, in the sense tokio gives it: the item moves into
    /// the future, so dropping the future before it completes drops the
    /// item, which was then never put (an item is put whole or not at all;
    /// as with tokio's `mpsc::Sender::send`). Must be polled within a tokio
    /// runtime with I/O and time enabled.
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put).
    pub async fn put_async(&self, item: T) -> Result<()> {
        attempt_until(self.ring(), Await::Room, || {
            match self.put_deadline_ref(&item, Some(past())) {
                Ok(()) => Ok(Some(())),
                Err(Error::Full) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }
}

impl<T> GenericQueue<T, Joinable> {
    /// [`join`](Self::join) as a future (feature `tokio`): resolves once
    /// every item put has been marked done, in whichever process.
    ///
    /// **Cancel safe**: it only watches the count.
    pub async fn join_async(&self) -> Result<()> {
        let ring = self.ring();
        attempt_until(ring, Await::Join, || {
            Ok((ring.unfinished() == 0).then_some(()))
        })
        .await
    }
}
