//! The ring's side of the spill log (`spill.rs`): where the log lives in
//! the region, putting to it, and taking from it once the ring is drained.

use super::Ring;
use crate::error::Result;
use crate::queue::shared_bytes::SharedBytes;
use crate::queue::spill::{self, SpillLog};
use std::sync::atomic::Ordering::*;

impl Ring {
    /// The spill log (`spill.rs`).
    pub(crate) fn spill(&self) -> SpillLog<'_> {
        SpillLog {
            hdr: &self.header().spill.0,
            region: &self.region,
            size: self.spill_size,
            off: self.spill_off,
            win: &self.spill_win,
        }
    }

    /// The largest encoded item the queue accepts (through the spill log).
    pub(crate) fn spill_max_item(&self) -> usize {
        spill::max_item(self.spill_size)
    }

    /// `true` if the spill log holds records (or did a moment ago).
    pub(crate) fn spill_pending(&self) -> bool {
        self.header().spill.0.pending()
    }

    /// Records in the spill log (approximate).
    pub(crate) fn spill_count(&self) -> i64 {
        self.header().spill.0.count()
    }

    /// Appends the item made of `parts` (`total` bytes) to the spill log
    /// and wakes a getter.
    pub(crate) fn spill_put(&self, parts: &[&[u8]], total: usize) -> Result<()> {
        self.spill().put(parts, total)?;
        self.wake(&self.header().not_empty.0);
        Ok(())
    }

    /// Takes the oldest spilled item if the ring is drained (see
    /// [`SpillLog::take`]), handing its bytes to `f`; wakes a putter.
    pub(crate) fn spill_take<R>(&self, f: impl FnOnce(SharedBytes<'_>) -> R) -> Result<Option<R>> {
        let r = self.spill().take(|| self.ring_drained(), f)?;
        if r.is_some() {
            let h = self.header();
            if self.maxsize > 0 {
                h.items.0.fetch_sub(1, SeqCst);
            }
            self.wake(&h.not_full.0);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use crate::error::Error;
    use crate::queue::ring::tests::{get_vec, ring};
    use crate::queue::ring::Stall;
    use crate::queue::spill;

    #[test]
    fn a_corrupt_spill_record_is_an_error_from_get_and_the_queue_goes_on() {
        let big = vec![5u8; 1000]; // larger than half a 4-slot ring
        for garbage in [[0xffu8; 16], [0u8; 16]] {
            let r = ring(4, spill::MIN_SPILL);
            r.put(&[&big], None, Stall::No).unwrap();
            r.put(&[&big], None, Stall::No).unwrap();
            assert!(r.spill_pending());
            // The log is fresh: its first record starts the area.
            let win = r.spill().window().unwrap();
            // SAFETY: the record header lies inside the window; nobody else
            // uses the ring.
            unsafe { std::ptr::copy_nonoverlapping(garbage.as_ptr(), win.as_ptr(), 16) };
            assert!(matches!(get_vec(&r), Err(Error::Codec(_))));
            assert!(!r.spill_pending(), "a corrupt log is dropped whole");
            r.put(&[&big], None, Stall::No).unwrap();
            assert_eq!(get_vec(&r).unwrap(), big);
        }
    }
}
