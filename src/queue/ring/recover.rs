//! Recovery from a dead peer: a claim whose producer died before its
//! commit, or an item whose consumer died before its release, is
//! reclaimed by the first waiter that finds it stuck.

use super::{pack_claim, word_pid, word_tag, Ring};
use crate::queue::sync::{my_pid, owner_alive};
use std::sync::atomic::Ordering::*;

impl Ring {
    /// Ticket `t` has been blocked for a while (`consumer`: at the head,
    /// uncommitted; else: a producer waiting for slot `t` to be released).
    /// If the process holding it is dead, reclaim it. Returns `true` if
    /// something was reclaimed.
    pub(super) fn recover(&self, t: u64, consumer: bool) -> bool {
        if consumer {
            return match self.claim_of(t) {
                Some(w) => self.reclaim(t, w),
                None => false,
            };
        }
        // The claim of the previous round covering ticket t - cap.
        let old = t.wrapping_sub(self.cap);
        for back in 0..=self.cap / 2 {
            let c = old.wrapping_sub(back);
            if let Some(w) = self.claim_of(c) {
                return c + self.span(w) > old && self.reclaim(c, w);
            }
        }
        false
    }

    /// The ticket at the head if consumers are held up there by a claim
    /// not yet committed (`try_take`'s `Stuck`): for async waiters, which
    /// then look at it again every
    /// [`STUCK_CHECK`](super::wait::STUCK_CHECK) (`recover_head`).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn stuck_head(&self) -> Option<u64> {
        let h = self.header();
        let p = h.head.0.load(SeqCst);
        let uncommitted = self.cell(p).seq.load(SeqCst) != p + 1;
        (uncommitted && self.claim_of(p).is_some() && h.tail.0.load(SeqCst) > p).then_some(p)
    }

    /// Reclaims ticket `t` at the head if its producer died (see
    /// [`recover`](Self::recover)); `true` if it did.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn recover_head(&self, t: u64) -> bool {
        self.recover(t, true)
    }

    /// Reclaims the claim of ticket `c` (claim word `w`) if it is stuck for
    /// good: committed and taken by a consumer that died before releasing
    /// it (the item is lost with its taker, as in Python), or never
    /// committed by a producer that died (the item never existed). The
    /// taker word makes the reclaimer the only one; `head` is moved past the
    /// claim if needed; the slots are released.
    fn reclaim(&self, c: u64, w: u64) -> bool {
        let h = self.header();
        let cell = self.cell(c);
        let seq = cell.seq.load(SeqCst);
        let committed = seq == c + 1;
        if !committed && seq != c {
            return false;
        }
        let tw = cell.taker.load(SeqCst);
        let taken = word_tag(tw) == self.tag(c);
        if taken && owner_alive(word_pid(tw)) {
            return false;
        }
        if committed && !taken {
            return false; // a consumer will take it
        }
        if !committed {
            if owner_alive(word_pid(w)) {
                return false; // its producer is still writing it
            }
            if (h.head.0.load(SeqCst).wrapping_sub(c) as i64) < 0 {
                return false; // consumers reach it in order
            }
        }
        let mine = pack_claim(self.tag(c), 0, my_pid());
        if cell
            .taker
            .compare_exchange(tw, mine, SeqCst, SeqCst)
            .is_err()
        {
            return false;
        }
        if cell.seq.load(SeqCst) != seq {
            let _ = cell.taker.compare_exchange(mine, 0, SeqCst, Relaxed);
            return false;
        }
        let span = self.span(w);
        let _ = h.head.0.compare_exchange(c, c + span, SeqCst, Relaxed);
        if !committed && !taken {
            // Undo what its producer counted before claiming. (If `taken`,
            // the reclaimer that died had done so already... or not: that
            // double fault may leave one count behind.)
            self.uncount();
        }
        self.release(c, span);
        self.wake(&h.not_empty.0);
        true
    }
}
