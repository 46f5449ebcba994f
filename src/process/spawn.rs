//! The *spawn* launcher: `fork` + `exec` of the current binary
//! (`/proc/self/exe`, which names the running image even if the file was
//! replaced on disk). The child enters the library in [`init`](crate::init),
//! reads a [`BootMsg`] from an inherited socket, checks that it runs the
//! parent's binary, and calls the target's runner.
//!
//! Exactly the descriptors registered by the arguments' handoff (and the
//! bootstrap socket) survive the `exec`: every other descriptor is marked
//! close-on-exec first.
#![allow(unsafe_code)]

use super::bootstrap::{self, BootMsg, BOOT_ENV};
use super::fnref::BinaryId;
use super::{ChildIdentity, Stdin};
use crate::error::{Error, Result};
use rustix::event::{PollFd, PollFlags};
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A deliberate change to the bootstrap message, for tests of hostile input.
pub(crate) type Tamper = fn(&mut BootMsg, &mut Vec<u8>);

/// Starts a spawned child. Returns its pid and the parent's end of the report socket.
pub(crate) fn launch(
    identity: ChildIdentity,
    stdin: Stdin,
    runner_offset: i64,
    args: &[u8],
    fds: &[BorrowedFd<'_>],
    pass_fds: &[RawFd],
    tamper: Option<Tamper>,
) -> Result<(i32, OwnedFd)> {
    let (parent_end, child_end) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // std's `Command` puts the child's stdin (and stdout, stderr) on
    // descriptors 0 to 2 before our `pre_exec` runs: an inherited descriptor
    // (or the bootstrap socket) sitting there would be overwritten, so such
    // ones travel as copies from 3 up (closed here once the child has them).
    let child_end = above_stdio(child_end)?;
    let mut copies: Vec<OwnedFd> = Vec::new();
    let mut raw_fds: Vec<RawFd> = Vec::with_capacity(fds.len());
    for f in fds {
        if f.as_raw_fd() < 3 {
            let copy = rustix::io::fcntl_dupfd_cloexec(f, 3)?;
            raw_fds.push(copy.as_raw_fd());
            copies.push(copy);
        } else {
            raw_fds.push(f.as_raw_fd());
        }
    }
    let daemon = identity.daemon;
    let mut msg = BootMsg {
        binary: BinaryId::current()?,
        runner_offset,
        identity,
        fds: raw_fds,
        args: args.to_vec(),
    };
    let mut wire = Vec::new();
    if let Some(t) = tamper {
        t(&mut msg, &mut wire);
    }
    if wire.is_empty() {
        wire = bootstrap::encode_boot(&msg)?;
    }
    let mut keep: Vec<RawFd> = msg.fds.clone();
    keep.push(child_end.as_raw_fd());
    keep.extend_from_slice(pass_fds);
    // SAFETY: plain syscall.
    let parent_pid = unsafe { libc::getpid() };
    let arg0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| "multiproc-child".into());
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(arg0)
        .env(BOOT_ENV, child_end.as_raw_fd().to_string())
        .stdin(match stdin {
            Stdin::Null => Stdio::null(),
            Stdin::Inherit => Stdio::inherit(),
        });
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe syscalls (close_range, fcntl, prctl, getppid, _exit)
    // on data prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            mark_all_cloexec();
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if daemon {
                super::fork::set_parent_death_signal(parent_pid);
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    drop(child);
    drop(child_end);
    drop(copies);
    if let Err(e) = send_all(&parent_end, &wire) {
        // The child does not read its start message: end it rather than
        // leave it running `main` (it never called `init`).
        // SAFETY: plain syscalls on the child we just started and have not
        // reaped (so its pid cannot have been recycled).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            while libc::waitpid(pid, std::ptr::null_mut(), 0) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
        }
        return Err(e);
    }
    Ok((pid, parent_end))
}

/// `fd` itself if it is above 2, else a copy of it from 3 up.
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd> {
    if fd.as_raw_fd() < 3 {
        Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
    } else {
        Ok(fd)
    }
}

/// Marks every descriptor from 3 up close-on-exec (Linux 5.11+; a no-op on
/// older kernels, where std's descriptors are close-on-exec anyway).
///
/// # Safety
///
/// Async-signal-safe: one raw syscall.
unsafe fn mark_all_cloexec() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOEXEC only changes descriptor flags.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
}

/// How long a spawned child may leave its start message unread (no byte
/// taken) before the parent gives up on it.
static BOOT_STALL_MS: AtomicU64 = AtomicU64::new(30_000);

/// Sets how long a spawned child may leave its start message unread (tests).
#[cfg(feature = "test-hooks")]
pub(crate) fn set_boot_stall(limit: Duration) {
    BOOT_STALL_MS.store(limit.as_millis() as u64, Ordering::Relaxed);
}

/// Writes the whole bootstrap message, then shuts down our sending side so a
/// child reading a short message sees end-of-file instead of waiting forever.
///
/// Never blocks forever: it waits for the socket to take more only while the
/// child reads. A child that takes no byte for [`BOOT_STALL_MS`] (a program
/// whose `main` does not call `init`, busy with something else) gives
/// [`Error::Bootstrap`]. A child that dies before reading it all closes its
/// end, which ends the wait at once; that death is reported later by `join`,
/// so it is not an error here.
pub(crate) fn send_all(sock: &OwnedFd, mut buf: &[u8]) -> Result<()> {
    let stall = Duration::from_millis(BOOT_STALL_MS.load(Ordering::Relaxed));
    let mut deadline = Instant::now() + stall;
    while !buf.is_empty() {
        match rustix::net::send(sock, buf, SendFlags::NOSIGNAL | SendFlags::DONTWAIT) {
            Ok(n) => {
                buf = &buf[n..];
                deadline = Instant::now() + stall;
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::bootstrap(format!(
                        "the spawned child did not read its start message for {} s; \
                         does its program call `multiproc::init()` as the first line of `main`?",
                        stall.as_secs_f64()
                    )));
                }
                let timeout = rustix::time::Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: left.subsec_nanos() as _,
                };
                let mut pfd = [PollFd::new(sock, PollFlags::OUT)];
                match rustix::event::poll(&mut pfd, Some(&timeout)) {
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(_) => break,
        }
    }
    let _ = rustix::net::shutdown(sock, rustix::net::Shutdown::Write);
    Ok(())
}
