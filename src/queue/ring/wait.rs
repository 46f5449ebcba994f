//! Waiting and waking: the retry loop of a put or get that cannot go on
//! yet (spin, yield, then sleep on the queue's wait word, looking for a
//! dead peer when stuck), the wake-ups (futex and doorbell), and a joinable
//! queue's count of unfinished tasks.

use super::{Ring, Try};
use crate::error::{Error, Result};
use crate::queue::sync::{self, Wake};
use crate::queue::wake::{self, Await, Doorbell, WaitQ};
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

/// How long a waiter polls (with growing pauses in between) before it
/// yields and then sleeps on the futex: a wake-up across CPUs costs far more.
pub(crate) const SPIN_FOR: Duration = Duration::from_micros(50);
/// Pauses between polls: `MIN_BACKOFF`, doubling up to `MIN_BACKOFF << MAX_BACKOFF`.
const MIN_BACKOFF: u32 = 16;
const MAX_BACKOFF: u32 = 3;
/// `sched_yield`s after spinning, before sleeping.
const YIELDS: u32 = 4;
/// How long a waiter sleeps before it looks for a dead producer or consumer
/// that holds the slot it waits for.
pub(crate) const STUCK_CHECK: Duration = Duration::from_millis(50);

impl Ring {
    /// Retries `attempt` until it is done, sleeping on `wq` in between and,
    /// when stuck behind another process's claim, checking that process is
    /// alive. `Err(Timeout)` when the deadline passes (a deadline already
    /// past means exactly one attempt).
    #[cfg(not(loom))]
    pub(super) fn wait_loop<R>(
        &self,
        wq: &WaitQ,
        deadline: Option<Instant>,
        consumer: bool,
        mut attempt: impl FnMut() -> Try<R>,
    ) -> Result<R> {
        let mut spins = 0u32;
        let mut yields = 0u32;
        let mut spin_start: Option<Instant> = None;
        let mut stuck_since: Option<(u64, Instant)> = None;
        loop {
            let stuck = match attempt() {
                Try::Done(r) => return Ok(r),
                Try::Wait => None,
                Try::Stuck(t) => Some(t),
            };
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(Error::Timeout);
            }
            if let Some(t) = stuck {
                match stuck_since {
                    Some((t0, since)) if t0 == t => {
                        if now.duration_since(since) >= STUCK_CHECK {
                            if self.recover(t, consumer) {
                                stuck_since = None;
                                continue;
                            }
                            stuck_since = Some((t, now));
                        }
                    }
                    _ => stuck_since = Some((t, now)),
                }
            }
            let first = *spin_start.get_or_insert(now);
            if now.duration_since(first) < SPIN_FOR {
                // Back off before looking again: polling the slot the other
                // side is about to write steals its cache line and keeps
                // both sides in lock-step, one line transfer per item.
                for _ in 0..MIN_BACKOFF << spins.min(MAX_BACKOFF) {
                    std::hint::spin_loop();
                }
                spins += 1;
                continue;
            }
            if yields < YIELDS {
                yields += 1;
                std::thread::yield_now();
                continue;
            }
            let e = wq.announce();
            if let Try::Done(r) = attempt() {
                return Ok(r);
            }
            let until = match stuck {
                Some(_) => {
                    let check = now + STUCK_CHECK;
                    Some(deadline.map_or(check, |d| d.min(check)))
                }
                None => deadline,
            };
            wq.sleep(e, until)?;
        }
    }

    /// Under loom: retries `attempt`, yielding in between, with no clock
    /// (the model must be deterministic: any deadline means one attempt)
    /// and no recovery (nobody dies).
    #[cfg(loom)]
    pub(super) fn wait_loop<R>(
        &self,
        _wq: &WaitQ,
        deadline: Option<Instant>,
        _consumer: bool,
        mut attempt: impl FnMut() -> Try<R>,
    ) -> Result<R> {
        loop {
            if let Try::Done(r) = attempt() {
                return Ok(r);
            }
            if deadline.is_some() {
                return Err(Error::Timeout);
            }
            loom::thread::yield_now();
        }
    }

    // ------------------------------------------------------------- wake-ups

    pub(crate) fn doorbell(&self) -> &Doorbell {
        &self.doorbell
    }

    /// Wakes the sleepers of `wq` (futex) and, if an async waiter armed it,
    /// rings the doorbell (`wake.rs`). Called after publishing what `wq`
    /// waits for.
    #[inline]
    pub(crate) fn wake(&self, wq: &WaitQ) {
        wq.wake(&self.doorbell, &self.header().rings);
    }

    /// After the unfinished-task count reached 0: wakes `join` and
    /// `join_async` waiters.
    pub(crate) fn wake_joiners(&self) {
        let h = self.header();
        sync::wake_all(&h.unfinished.0);
        wake::ring_if_armed(&h.join_armed, &self.doorbell, &h.rings);
    }

    /// Arms `what` for an async waiter (W2 in `wake.rs`): the next process
    /// to make it true rings the doorbell. The caller registered the
    /// doorbell before, and re-checks its condition after.
    #[cfg_attr(not(any(feature = "tokio", loom)), allow(dead_code))]
    pub(crate) fn arm(&self, what: Await) {
        let h = self.header();
        match what {
            Await::Item => h.not_empty.0.arm(),
            Await::Room => h.not_full.0.arm(),
            Await::Join => wake::arm(&h.join_armed),
        }
    }

    /// Whether some async waiter armed the doorbell (test support).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn doorbell_armed(&self) -> bool {
        let h = self.header();
        h.not_empty.0.is_armed() || h.not_full.0.is_armed() || h.join_armed.load(SeqCst) != 0
    }

    /// How many times the doorbell has been rung, by any process.
    #[cfg_attr(not(any(feature = "test-hooks", loom)), allow(dead_code))]
    pub(crate) fn doorbell_rings(&self) -> u64 {
        self.header().rings.load(SeqCst)
    }

    // ---------------------------------------------------------- joinable

    /// `task_done`: one fewer unfinished task.
    pub(crate) fn task_done(&self) -> Result<()> {
        let u = &self.header().unfinished.0;
        let prev = u
            .fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1))
            .map_err(|_| Error::TaskDoneTooOften)?;
        if prev == 1 {
            self.wake_joiners();
        }
        Ok(())
    }

    /// `join`: waits until every item put has been marked done.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> Result<()> {
        let u = &self.header().unfinished.0;
        loop {
            let v = u.load(SeqCst);
            if v == 0 {
                return Ok(());
            }
            if sync::wait(u, v, deadline)? == Wake::TimedOut {
                return Err(Error::Timeout);
            }
        }
    }

    /// Unfinished tasks (joinable queues).
    pub(crate) fn unfinished(&self) -> u32 {
        self.header().unfinished.0.load(SeqCst)
    }
}
