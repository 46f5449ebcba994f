//! Process-shared futex wait and wake (no `FUTEX_PRIVATE_FLAG`, so waiters in
//! different processes that map the same memory meet on the same word).

use crate::error::Result;
use rustix::thread::futex;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

/// Outcome of [`wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Woken, or the value was not `expected` (or a spurious wake-up): re-check.
    Retry,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, until woken or `deadline`.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Result<Wake> {
    let timeout = match deadline {
        None => None,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Wake::TimedOut);
            }
            Some(rustix::time::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: left.subsec_nanos() as _,
            })
        }
    };
    match futex::wait(word, futex::Flags::empty(), expected, timeout.as_ref()) {
        Ok(()) => Ok(Wake::Retry),
        Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => Ok(Wake::Retry),
        Err(rustix::io::Errno::TIMEDOUT) => Ok(Wake::TimedOut),
        Err(e) => Err(e.into()),
    }
}

/// Wakes up to `n` waiters on `word`; returns how many were woken.
pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), n).unwrap_or(0)
}

/// Wakes every waiter on `word`.
pub(crate) fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}
