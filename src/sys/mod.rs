#![allow(dead_code)]
//! Small operating-system helpers shared by the modules above: memfd-backed
//! shared regions, futex wait/wake, descriptor flags, deadlines and polling.
//!
//! Everything here is crate-private plumbing; the unsafe code of the crate
//! that touches raw memory or raw syscalls lives in these files and in
//! `process::fork`.

pub(crate) mod conn_io;
pub(crate) mod futex;
pub(crate) mod region;

use crate::error::Result;
use rustix::event::{PollFd, PollFlags};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub(crate) use region::Region;

/// Turns an optional timeout into an optional deadline (overflow = forever).
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Time left until `deadline` (`None` = forever; zero once passed).
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Sets or clears close-on-exec on `fd`.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    let flags = if on {
        rustix::io::FdFlags::CLOEXEC
    } else {
        rustix::io::FdFlags::empty()
    };
    rustix::io::fcntl_setfd(fd, flags)?;
    Ok(())
}

/// Waits until at least one of `fds` is readable (or hung up / in error) or
/// the deadline passes. Returns one flag per descriptor; all `false` means the
/// deadline passed. Retries on `EINTR`.
pub(crate) fn poll_readable(
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
) -> Result<Vec<bool>> {
    let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|f| PollFd::new(f, PollFlags::IN)).collect();
    loop {
        let timeout = remaining(deadline).map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        match rustix::event::poll(&mut pfds, timeout.as_ref()) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pfds.iter().map(|p| !p.revents().is_empty()).collect())
}

/// Convenience: waits for one descriptor to become readable. `false` on timeout.
pub(crate) fn wait_readable(fd: impl AsFd, deadline: Option<Instant>) -> Result<bool> {
    Ok(poll_readable(&[fd.as_fd()], deadline)?[0])
}
