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

/// This process's pid, cached (`getpid` is a real syscall) and forgotten in
/// a child after `fork`, so that a ring inherited by a forked child other
/// than through handoff still records the right owner in its claims: the
/// crate's one cached identity (`sys::liveness`), whose fork handler is
/// registered without a `std::sync::Once` (a `Once` caught mid-call by a
/// fork from another thread left the child's copy "running": it hung before
/// its first claim).
#[inline]
pub(crate) fn my_pid() -> u32 {
    crate::sys::liveness::current_pid()
}

/// Whether the process `pid` that holds a claim, a take or the spill lock is
/// still there. The one place the queue asks (so that the crate's shared
/// liveness check replaces it in one line).
///
/// The crate's one liveness check: dead only when known (no such process,
/// a zombie, another start time); when `/proc` cannot tell, alive.
pub(crate) fn owner_alive(pid: u32) -> bool {
    crate::sys::liveness::is_alive(pid)
}
