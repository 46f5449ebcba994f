//! The byte buffers a proxy keeps between calls: a request as it is
//! encoded, the last answer, a key and a value.

use std::cell::RefCell;

/// Buffers a proxy keeps between calls are dropped after one that grew
/// them past this: a proxy keeps up to five, so one large value must not
/// pin its size five times over in every proxy that saw it; and past 64 KiB
/// an allocation costs little next to copying the bytes.
const KEEP_SCRATCH: usize = 64 << 10;

/// Runs `f` on the buffers in `cell`, cleared, or on fresh ones when they
/// are in use already (a value's own serde code calling back into this
/// proxy); afterwards drops any grown past [`KEEP_SCRATCH`].
pub(super) fn with_scratch<B: Scratch, R>(cell: &RefCell<B>, f: impl FnOnce(&mut B) -> R) -> R {
    match cell.try_borrow_mut() {
        Ok(mut b) => {
            b.clear();
            let r = f(&mut b);
            b.trim();
            r
        }
        Err(_) => f(&mut B::default()),
    }
}

/// One or more byte buffers kept between calls.
pub(super) trait Scratch: Default {
    fn clear(&mut self);
    fn trim(&mut self);
}

impl Scratch for Vec<u8> {
    fn clear(&mut self) {
        Vec::clear(self);
    }
    fn trim(&mut self) {
        if self.capacity() > KEEP_SCRATCH {
            *self = Vec::new();
        }
    }
}

impl Scratch for (Vec<u8>, Vec<u8>) {
    fn clear(&mut self) {
        Scratch::clear(&mut self.0);
        Scratch::clear(&mut self.1);
    }
    fn trim(&mut self) {
        self.0.trim();
        self.1.trim();
    }
}
