#![allow(dead_code)]
//! Small operating-system helpers shared by the modules above: memfd-backed
//! shared regions, futex wait/wake, descriptor flags, deadlines and polling.
//!
//! Everything here is crate-private plumbing; the unsafe code of the crate
//! that touches raw memory or raw syscalls lives in these files and in
//! `process::fork`.

pub(crate) mod atomic_copy;
pub(crate) mod conn_io;
pub(crate) mod fds;
pub mod framing;
pub(crate) mod futex;
pub(crate) mod liveness;
pub(crate) mod posix_spawn;
pub(crate) mod region;
pub(crate) mod scm;
pub(crate) mod shm;
pub(crate) mod uring;
pub(crate) mod wait;

use crate::error::Result;
use rustix::event::{PollFd, PollFlags};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub(crate) use region::Region;

/// The one CPU the calling thread may run on, if its affinity mask allows
/// exactly one (a pinned thread, a one-CPU cpuset or machine).
pub(crate) fn only_cpu() -> Option<u32> {
    let set = rustix::thread::sched_getaffinity(None).ok()?;
    if set.count() != 1 {
        return None;
    }
    (0..rustix::thread::CpuSet::MAX_CPU)
        .find(|&i| set.is_set(i))
        .map(|i| i as u32)
}

/// How many threads this process runs (1 if `/proc` cannot tell): a procfs
/// task directory links to itself, its parent and one directory per thread.
/// One `stat`, no allocation and no lock, so a `pthread_atfork` handler may
/// call it.
pub(crate) fn thread_count() -> usize {
    rustix::fs::stat("/proc/self/task").map_or(1, |st| st.st_nlink.saturating_sub(2) as usize)
}

/// One pause of a polling wait (a pool worker waiting for its next task, a
/// thread waiting for a pool's answer): `sched_yield`, not a CPU pause. A
/// busy-spin can hold the very CPU its peer needs to answer: on a loaded
/// two-core machine every round trip then waited for the spin to run out
/// (~300 µs instead of ~15). Yielding costs a system call per poll, about
/// what the poll itself costs, and returns at once when nothing else waits.
pub(crate) fn spin_pause() {
    std::thread::yield_now();
}

/// Turns an optional timeout into an optional deadline (overflow = forever).
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Time left until `deadline` (`None` = forever; zero once passed).
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Reserves the first `len` bytes of the file behind `fd` (a memfd or a file
/// in `/dev/shm`) with `fallocate`, so that writing them later cannot fail
/// with `SIGBUS` for want of space. `what` names the object in the error.
///
/// # Errors
///
/// An I/O error of kind `StorageFull` (`ENOSPC`) naming the size asked for
/// and the space free, when the file system cannot hold `len` more bytes. A
/// file system without `fallocate` support reserves nothing (no error).
pub(crate) fn reserve(fd: BorrowedFd<'_>, len: u64, what: impl FnOnce() -> String) -> Result<()> {
    loop {
        match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => return Ok(()),
            Err(e @ (rustix::io::Errno::NOSPC | rustix::io::Errno::FBIG)) => {
                return Err(no_space(fd, len, what(), std::io::Error::from(e).kind()))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Checks, without reserving, that the file system behind `fd` has `len`
/// bytes free (`fstatvfs`); a file system that reports no size (no limit)
/// passes. Cheaper than [`reserve`] for small objects, but the space can
/// still be taken by others before the pages are written.
///
/// # Errors
///
/// As [`reserve`].
pub(crate) fn check_space(
    fd: BorrowedFd<'_>,
    len: u64,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let Ok(st) = rustix::fs::fstatvfs(fd) else {
        return Ok(());
    };
    if st.f_blocks == 0 || st.f_bavail.saturating_mul(st.f_frsize) >= len {
        return Ok(());
    }
    Err(no_space(
        fd,
        len,
        what(),
        std::io::Error::from(rustix::io::Errno::NOSPC).kind(),
    ))
}

fn no_space(
    fd: BorrowedFd<'_>,
    len: u64,
    what: String,
    kind: std::io::ErrorKind,
) -> crate::error::Error {
    let free = rustix::fs::fstatvfs(fd)
        .map(|s| format!("{} bytes", s.f_bavail.saturating_mul(s.f_frsize)))
        .unwrap_or_else(|_| "an unknown number of bytes".into());
    crate::error::Error::Io(std::io::Error::new(
        kind,
        format!("cannot reserve {len} bytes for {what}: only {free} free"),
    ))
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
