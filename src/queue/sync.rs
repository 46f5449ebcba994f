//! What the ring needs from the platform — atomics, futex wait and wake —
//! swapped for [loom](https://docs.rs/loom)'s model under `cfg(loom)`, so
//! that the ring's claim / publish / take / release protocol can be model
//! checked between threads (`src/queue/loom_tests.rs`).

use crate::error::Result;
#[cfg(not(loom))]
use crate::sys::futex;
pub(crate) use crate::sys::futex::Wake;
use std::time::Instant;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicI64, AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64};

/// Wakes every process sleeping on `word`.
pub(crate) fn wake_all(word: &AtomicU32) {
    #[cfg(not(loom))]
    futex::wake_all(word);
    #[cfg(loom)]
    let _ = word;
}

/// Sleeps while `word == expected`, until woken or `deadline` (under loom:
/// yields to the other threads once).
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Result<Wake> {
    #[cfg(not(loom))]
    return futex::wait(word, expected, deadline);
    #[cfg(loom)]
    {
        let _ = (word, expected, deadline);
        loom::thread::yield_now();
        Ok(Wake::Retry)
    }
}

/// Under loom only, a `SeqCst` fence where the code relies on `SeqCst`
/// *accesses* for a store-then-load (Dekker) ordering: loom models such
/// accesses as `AcqRel` (its README, "false alarms") but supports
/// `fence(SeqCst)`, which gives the model the guarantee the C++ memory
/// model gives the accesses themselves. Nothing outside the model.
#[inline(always)]
pub(crate) fn dekker_for_loom() {
    #[cfg(loom)]
    loom::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}
