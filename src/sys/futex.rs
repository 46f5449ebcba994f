//! Process-shared futex wait and wake (no `FUTEX_PRIVATE_FLAG`, so waiters in
//! different processes that map the same memory meet on the same word).
#![allow(unsafe_code)]

use crate::error::Result;
use rustix::thread::futex;
use std::sync::atomic::{AtomicU32, AtomicU64};
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

/// Byte offset of the low 32 bits inside a `u64` in memory.
const LOW_HALF: usize = if cfg!(target_endian = "little") { 0 } else { 4 };

/// `timespec` for the time left until `deadline`; `Err` if it has passed.
fn timeout_of(deadline: Option<Instant>) -> Result<Option<libc::timespec>, ()> {
    match deadline {
        None => Ok(None),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(());
            }
            Ok(Some(libc::timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: left.subsec_nanos() as _,
            }))
        }
    }
}

/// Sleeps while the **low 32 bits** of `*word` equal `expected`, until woken
/// or `deadline`. For a 64-bit state word whose low half is the futex word
/// (the lock word keeps the holder's pid there and its start token in the
/// high half, so both change in one compare-and-swap).
pub(crate) fn wait_low(word: &AtomicU64, expected: u32, deadline: Option<Instant>) -> Result<Wake> {
    let Ok(ts) = timeout_of(deadline) else {
        return Ok(Wake::TimedOut);
    };
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // The kernel reads the 32-bit word at this address; no Rust reference
    // of another size is made to it.
    let addr = word.as_ptr().cast::<u8>().wrapping_add(LOW_HALF);
    // SAFETY: `addr` points to 4 aligned bytes inside the live `AtomicU64`
    // (8-aligned, so its halves are 4-aligned); FUTEX_WAIT only reads them,
    // atomically; `ts_ptr` is null or points to a live `timespec`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr,
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r == 0 {
        return Ok(Wake::Retry);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(Wake::Retry),
        Some(libc::ETIMEDOUT) => Ok(Wake::TimedOut),
        _ => Err(std::io::Error::last_os_error().into()),
    }
}

/// Wakes up to `n` waiters sleeping in [`wait_low`] on `word`.
pub(crate) fn wake_low(word: &AtomicU64, n: u32) -> usize {
    let addr = word.as_ptr().cast::<u8>().wrapping_add(LOW_HALF);
    // SAFETY: as in `wait_low`; FUTEX_WAKE does not access the memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr,
            libc::FUTEX_WAKE,
            n.min(i32::MAX as u32),
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    r.max(0) as usize
}
