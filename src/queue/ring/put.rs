//! The producer side of the ring: a bounded queue's reservation, the claim
//! of tickets at `tail`, the payload write and the commit (or the hand-over
//! to the spill log). See the [module docs](super) for the protocol.
#![allow(unsafe_code)]

use super::{hang_forever, pack_claim, word_tag, Ring, Stall, Try, INLINE, PAUSE_GATE, SLOT};
use crate::error::{Error, Result};
use crate::queue::sync::my_pid;
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

/// How long a producer waits for room in a full ring while no consumer takes
/// anything, before it puts its item into the spill log instead. (Longer
/// than [`STUCK_CHECK`](super::wait::STUCK_CHECK), so that a dead
/// consumer's slots are reclaimed first.) While consumers keep taking items
/// it keeps waiting: room comes within microseconds.
const GRACE: Duration = Duration::from_millis(100);

impl Ring {
    /// Puts the encoded item made of `parts` (concatenated). A bounded
    /// queue first waits until `deadline` for a place (`maxsize`); then the
    /// item goes into the ring, or into the spill log if the ring cannot
    /// take it (too large, or full with no consumer taking anything for
    /// [`GRACE`]), or if the log already holds items (so that a producer's
    /// items stay in order). `stall` (tests only) makes the producer hang
    /// after writing half the payload, never committing.
    pub(crate) fn put(
        &self,
        parts: &[&[u8]],
        deadline: Option<Instant>,
        stall: Stall,
    ) -> Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > self.spill_max_item() {
            return Err(Error::MessageTooLarge {
                len: total as u64,
                max: self.spill_max_item() as u64,
            });
        }
        let h = self.header();
        // A bounded queue reserves its place first (Python's semaphore).
        if self.maxsize > 0 {
            let max = self.maxsize as i64;
            self.wait_loop(&h.not_full.0, deadline, false, || {
                let n = h.items.0.load(SeqCst);
                if n < max && h.items.0.compare_exchange(n, n + 1, SeqCst, SeqCst).is_ok() {
                    Try::Done(())
                } else {
                    Try::Wait
                }
            })
            .map_err(full_on_timeout)?;
        }
        if self.joinable {
            h.unfinished.0.fetch_add(1, SeqCst);
        }
        let r = match self.claim_for(total, deadline, stall) {
            Some(claim) => {
                self.write_and_commit(parts, total, claim, stall);
                Ok(())
            }
            None => self.spill_put(parts, total),
        };
        if r.is_err() {
            self.unreserve();
        }
        r
    }

    /// Claims ring slots for an item of `total` bytes, or `None` if it goes
    /// to the spill log: it is larger than the ring takes, the log holds
    /// items, or the ring stayed full for [`GRACE`] while no consumer took
    /// anything (or until `deadline`).
    fn claim_for(
        &self,
        total: usize,
        deadline: Option<Instant>,
        stall: Stall,
    ) -> Option<(u64, u64)> {
        if total > self.max_item() || self.spill_pending() {
            return None;
        }
        let k = if total <= INLINE {
            1
        } else {
            total.div_ceil(SLOT) as u64
        };
        if let Try::Done(c) = self.try_claim(k, stall) {
            return Some(c); // the common case: no clock read, no wait
        }
        let h = self.header();
        loop {
            let head = h.head.0.load(Relaxed);
            let grace = Instant::now() + GRACE;
            let until = Some(deadline.map_or(grace, |d| d.min(grace)));
            #[cfg(loom)]
            let until = {
                let _ = until;
                deadline // no clock in the model: wait for room, never spill
            };
            match self.wait_loop(&h.not_full.0, until, false, || self.try_claim(k, stall)) {
                Ok(c) => return Some(c),
                Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => return None,
                // Consumers are taking items: room is coming.
                Err(_) if h.head.0.load(Relaxed) != head && !self.spill_pending() => continue,
                Err(_) => return None,
            }
        }
    }

    /// Writes the payload into the claimed slots and commits it.
    fn write_and_commit(&self, parts: &[&[u8]], total: usize, (p, span): (u64, u64), stall: Stall) {
        let h = self.header();
        self.cell(p).len.store(total as u32, Relaxed);
        let (mut dst, room) = self.payload(p, total, span);
        debug_assert!(room >= total);
        for part in parts {
            // SAFETY: tickets p..p+span are ours alone (our claim word is the
            // only one of this round at p, and tail moved past them by our
            // span); the payload area (the cell's inline bytes, or k slots of
            // the data array inside the claim) holds at least `total` bytes,
            // the sum of the parts, and no consumer reads it before the
            // commit below.
            unsafe {
                if matches!(stall, Stall::Late) {
                    std::ptr::copy_nonoverlapping(part.as_ptr(), dst, part.len() / 2);
                    hang_forever();
                }
                std::ptr::copy_nonoverlapping(part.as_ptr(), dst, part.len());
                dst = dst.add(part.len());
            }
        }
        if matches!(stall, Stall::Pause) {
            while !PAUSE_GATE.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.seq(p).store(p + 1, SeqCst);
        h.puts.0.fetch_add(1, Relaxed);
        self.wake(&h.not_empty.0);
    }

    /// A put that claimed nothing gives back what it counted first.
    fn unreserve(&self) {
        self.uncount();
        self.wake(&self.header().not_full.0);
    }

    /// Undoes a producer's counts made before claiming: one item against
    /// `maxsize`, one unfinished task (waking joiners when that was the last).
    pub(super) fn uncount(&self) {
        let h = self.header();
        if self.maxsize > 0 {
            h.items.0.fetch_sub(1, SeqCst);
        }
        if self.joinable
            && h.unfinished
                .0
                .fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1))
                == Ok(1)
        {
            self.wake_joiners();
        }
    }

    /// One attempt to claim `k` payload slots: returns (ticket, span).
    ///
    /// The claim is a CAS of the first cell's claim word (tag of this round,
    /// span, pid), made while `tail` is at that ticket; `tail` then moves by
    /// the span — by us, or by any producer that finds the claimed word
    /// first (helping), so a producer that dies in between holds nobody up
    /// and is always identifiable.
    fn try_claim(&self, k: u64, stall: Stall) -> Try<(u64, u64)> {
        let h = self.header();
        loop {
            let p = h.tail.0.load(SeqCst);
            let cell = self.cell(p);
            let w = cell.claim.load(SeqCst);
            if word_tag(w) == self.tag(p) {
                // Claimed in this round, tail not yet moved: help.
                let _ = h
                    .tail
                    .0
                    .compare_exchange(p, p + self.span(w), SeqCst, Relaxed);
                continue;
            }
            let idx = p & self.mask;
            let span = if idx + k > self.cap {
                self.cap - idx + k
            } else {
                k
            };
            let mut retry = false;
            for i in 0..span {
                let t = p + i;
                let d = self.seq(t).load(SeqCst).wrapping_sub(t) as i64;
                if d < 0 {
                    // Not yet released by the consumer of ticket t - cap.
                    return Try::Stuck(t);
                }
                if d > 0 {
                    retry = true;
                    break;
                }
            }
            if retry {
                continue;
            }
            let mine = pack_claim(self.tag(p), span, my_pid());
            if cell
                .claim
                .compare_exchange(w, mine, SeqCst, SeqCst)
                .is_err()
            {
                continue;
            }
            if cell.seq.load(SeqCst) != p {
                // `w` was the word cleared by the release of an earlier claim
                // of this very round (the slot is no longer free for p): our
                // claim is void. (Not `tail != p`: a helper may already have
                // moved tail for *our* claim.)
                let _ = cell.claim.compare_exchange(mine, 0, SeqCst, Relaxed);
                continue;
            }
            if matches!(stall, Stall::Early) {
                hang_forever();
            }
            let _ = h.tail.0.compare_exchange(p, p + span, SeqCst, Relaxed);
            return Try::Done((p, span));
        }
    }
}

fn full_on_timeout(e: Error) -> Error {
    if matches!(e, Error::Timeout) {
        Error::Full
    } else {
        e
    }
}
