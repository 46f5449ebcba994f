//! The consumer side of the ring: the take of the item at `head`, reading
//! it in place, and the release of its slots. See the [module
//! docs](super) for the protocol.
#![allow(unsafe_code)]

use super::{hang_forever, pack_claim, word_tag, Ring, Stall, Try};
use crate::error::{Error, Result};
use crate::queue::shared_bytes::SharedBytes;
use crate::queue::sync::my_pid;
use std::sync::atomic::Ordering::*;
use std::time::Instant;

impl Ring {
    /// Takes one item, waiting until `deadline`, from the ring or, once the
    /// ring is drained ([`ring_drained`](Self::ring_drained)), from the
    /// spill log; `f` copies the payload out
    /// (it is released right after). `hang` (tests only) makes the consumer
    /// hang after taking a ring item, never releasing it.
    ///
    /// A corrupt length (larger than the item's slots) is an
    /// [`Error::Codec`]; the item is consumed.
    #[inline]
    pub(crate) fn get<R>(
        &self,
        deadline: Option<Instant>,
        hang: Stall,
        f: impl FnOnce(SharedBytes<'_>) -> R,
    ) -> Result<R> {
        self.get_while(deadline, hang, || true, f)?
            .ok_or_else(|| Error::InvalidState("queue get abandoned".into()))
    }

    /// [`get`](Self::get), asking `keep` before every attempt to take an
    /// item: once it says `false`, gives up without taking one (`Ok(None)`).
    /// For a waiter on behalf of someone who may go away meanwhile (a
    /// manager's server serving a remote client): an item that comes after
    /// they left stays in the queue.
    pub(crate) fn get_while<R>(
        &self,
        deadline: Option<Instant>,
        hang: Stall,
        mut keep: impl FnMut() -> bool,
        f: impl FnOnce(SharedBytes<'_>) -> R,
    ) -> Result<Option<R>> {
        let h = self.header();
        let mut f = Some(f);
        let mut spilled = None;
        let mut abandoned = false;
        let (p, span) = self
            .wait_loop(&h.not_empty.0, deadline, true, || {
                if !keep() {
                    abandoned = true;
                    return Try::Done((0, 0));
                }
                let r = self.try_take(hang);
                if matches!(r, Try::Done(_)) || !self.spill_pending() {
                    return r;
                }
                // Nothing ready in the ring: the oldest spilled item, but
                // only if the ring is drained (`spill_take`, see
                // `ring_drained`); else `r` (wait for the head's producer,
                // or recover it if it died).
                match self.spill_take(|b| f.take().map(|f| f(b))) {
                    Ok(Some(v)) => {
                        spilled = Some(Ok(v));
                        Try::Done((0, 0))
                    }
                    Ok(None) => r,
                    Err(e) => {
                        spilled = Some(Err(e));
                        Try::Done((0, 0))
                    }
                }
            })
            .map_err(|e| {
                if matches!(e, Error::Timeout) {
                    Error::Empty
                } else {
                    e
                }
            })?;
        if abandoned {
            return Ok(None);
        }
        if let Some(r) = spilled {
            return r?
                .ok_or_else(|| Error::InvalidState("queue reader used twice".into()))
                .map(Some);
        }
        if matches!(hang, Stall::Late) {
            hang_forever();
        }
        let _release = ReleaseGuard {
            ring: self,
            p,
            span,
        };
        let len = self.cell(p).len.load(Relaxed) as usize;
        let (ptr, room) = self.payload(p, len, span);
        if len > room {
            return Err(Error::codec(format!(
                "corrupt queue record: {len} bytes in {room} bytes of slots"
            )));
        }
        // SAFETY: ticket p is committed (seq == p + 1 seen with SeqCst) and
        // ours (taker word) until `_release` drops; `payload` keeps its
        // `room` (>= len) bytes inside the mapping, which `self` keeps alive.
        // A peer that breaks the protocol may still write them: SharedBytes
        // only ever copies them out with atomic loads.
        let bytes = unsafe { SharedBytes::new(ptr, len, room) };
        let f = f
            .take()
            .ok_or_else(|| Error::InvalidState("queue reader used twice".into()))?;
        Ok(Some(f(bytes)))
    }

    /// `true` if every ticket claimed in the ring (and whose claim moved
    /// `tail`) has been taken: `head` has reached `tail`. A consumer takes
    /// from the spill log only then, checked under the log's lock after
    /// reading the log's positions (`spill_take`).
    ///
    /// **Invariant (per-producer FIFO across ring and log):** a consumer
    /// never takes a log record while an item its producer put earlier is
    /// still in the ring. Proof: a producer's earlier ring item was claimed
    /// (and `tail` moved past it, by it or a helper) before its `put`
    /// returned, hence before it appended the record; the consumer saw the
    /// record through the log's lock / `tail` (acquire), so its later load
    /// of the ring's `tail` is past that item, and `head` at or beyond it
    /// means the item was taken (or reclaimed from a dead producer). Without
    /// this check, a head slot claimed but not yet committed by another
    /// producer (descheduled mid-put) made the ring *look* empty while a
    /// later slot held the earlier item, and the log's record overtook it.
    /// (Within one consumer order follows, since it takes one at a time;
    /// between consumers there is no order to keep, as in Python.)
    ///
    /// Costs the ring's fast paths nothing: it is read only when the log
    /// holds items and the ring has none ready. While the head's producer
    /// is alive consumers wait for its commit (which wakes them); if it
    /// died, the usual stuck-claim recovery skips it.
    pub(crate) fn ring_drained(&self) -> bool {
        let h = self.header();
        let tail = h.tail.0.load(SeqCst);
        let head = h.head.0.load(SeqCst);
        head.wrapping_sub(tail) as i64 >= 0
    }

    /// Test support: overwrites the length of the item at ticket `p`, as a
    /// misbehaving peer could.
    #[cfg(test)]
    pub(crate) fn corrupt_len_for_test(&self, p: u64, len: u32) {
        self.cell(p).len.store(len, Relaxed);
    }

    /// One attempt to take the item at the head: returns (ticket, span).
    /// Mirrors [`try_claim`](Self::try_claim): a CAS of the taker word while
    /// `head` is at the ticket, then `head` moves (by us or by a helper).
    fn try_take(&self, hang: Stall) -> Try<(u64, u64)> {
        let h = self.header();
        loop {
            let p = h.head.0.load(SeqCst);
            let cell = self.cell(p);
            let s = cell.seq.load(SeqCst);
            let d = s.wrapping_sub(p + 1) as i64;
            if d < 0 {
                // Claimed but not yet committed, or nothing there. `tail`
                // (the producers' line) is read only if the cell's claim
                // word says claimed: reading it on every empty poll would
                // take it from the producer on every put. (A claim whose
                // `tail` has not moved yet is a wait: reclaiming it would
                // move `head` past `tail`.)
                return if self.claim_of(p).is_some() && h.tail.0.load(SeqCst) > p {
                    Try::Stuck(p)
                } else {
                    Try::Wait
                };
            }
            if d > 0 {
                continue; // taken and released meanwhile; look again
            }
            let Some(w) = self.claim_of(p) else { continue };
            let span = self.span(w);
            let tw = cell.taker.load(SeqCst);
            if word_tag(tw) == self.tag(p) {
                // Taken in this round, head not yet moved: help.
                let _ = h.head.0.compare_exchange(p, p + span, SeqCst, Relaxed);
                continue;
            }
            let mine = pack_claim(self.tag(p), 0, my_pid());
            if cell
                .taker
                .compare_exchange(tw, mine, SeqCst, SeqCst)
                .is_err()
            {
                continue;
            }
            if cell.seq.load(SeqCst) != p + 1 {
                // Released meanwhile by the taker whose cleared word we
                // replaced: void (see `try_claim`).
                let _ = cell.taker.compare_exchange(mine, 0, SeqCst, Relaxed);
                continue;
            }
            if matches!(hang, Stall::Early) {
                hang_forever();
            }
            let _ = h.head.0.compare_exchange(p, p + span, SeqCst, Relaxed);
            h.gets.0.fetch_add(1, Relaxed);
            if self.maxsize > 0 {
                h.items.0.fetch_sub(1, SeqCst);
            }
            return Try::Done((p, span));
        }
    }

    /// Frees tickets p..p+span for the next round and wakes producers.
    pub(super) fn release(&self, p: u64, span: u64) {
        let cell = self.cell(p);
        // The claim word may go first: a producer's claim is valid only
        // while the slot reads free (`seq == p`), which it never does again
        // in this round.
        cell.claim.store(0, Release);
        for i in 1..span {
            self.seq(p + i).store(p + i + self.cap, Release);
        }
        self.seq(p).store(p + self.cap, SeqCst);
        // The taker word only after the slot is released: while `seq` still
        // reads committed, a cleared taker word would let a late consumer
        // take the item again. Cleared at all so that its tag cannot match a
        // far later round; a CAS, because the next round may already own it.
        let tw = cell.taker.load(SeqCst);
        if word_tag(tw) == self.tag(p) {
            let _ = cell.taker.compare_exchange(tw, 0, SeqCst, Relaxed);
        }
        self.wake(&self.header().not_full.0);
    }
}

/// Releases a taken item's slots when dropped (also if the reader panics).
struct ReleaseGuard<'a> {
    ring: &'a Ring,
    p: u64,
    span: u64,
}

impl Drop for ReleaseGuard<'_> {
    fn drop(&mut self) {
        self.ring.release(self.p, self.span);
    }
}

#[cfg(test)]
mod tests {
    use crate::error::Error;
    use crate::queue::ring::tests::{get_vec, ring};
    use crate::queue::ring::{Stall, SLOT};
    use crate::queue::spill;
    use std::sync::atomic::Ordering::SeqCst;

    #[test]
    fn a_corrupt_ring_length_is_an_error_not_a_read_out_of_bounds() {
        let r = ring(8, spill::MIN_SPILL);
        for len in [SLOT as u32 + 1, 1 << 30, u32::MAX] {
            r.put(&[b"abc"], None, Stall::No).unwrap();
            // A peer scribbles over the length of the committed item.
            let h = r.header();
            let p = h.head.0.load(SeqCst);
            r.corrupt_len_for_test(p, len);
            assert!(matches!(get_vec(&r), Err(Error::Codec(_))));
            // The item was consumed; the ring goes on.
            r.put(&[b"next"], None, Stall::No).unwrap();
            assert_eq!(get_vec(&r).unwrap(), b"next");
        }
    }
}
