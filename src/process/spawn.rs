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
use crate::error::Result;
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// A deliberate change to the bootstrap message, for tests of hostile input.
pub(crate) type Tamper = fn(&mut BootMsg, &mut Vec<u8>);

/// Starts a spawned child. Returns its pid and the parent's end of the report socket.
pub(crate) fn launch(
    identity: ChildIdentity,
    stdin: Stdin,
    runner_offset: i64,
    args: &[u8],
    fds: &[BorrowedFd<'_>],
    tamper: Option<Tamper>,
) -> Result<(i32, OwnedFd)> {
    let (parent_end, child_end) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let daemon = identity.daemon;
    let mut msg = BootMsg {
        binary: BinaryId::current()?,
        runner_offset,
        identity,
        fds: fds.iter().map(|f| f.as_raw_fd()).collect(),
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
    send_all(&parent_end, &wire);
    Ok((pid, parent_end))
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

/// Writes the whole bootstrap message, then shuts down our sending side so a
/// child reading a short message sees end-of-file instead of waiting forever.
/// A child that died before reading it (EPIPE) is reported later by `join`,
/// so write errors are ignored here.
fn send_all(sock: &OwnedFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        match rustix::net::send(sock, buf, SendFlags::NOSIGNAL) {
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
    }
    let _ = rustix::net::shutdown(sock, rustix::net::Shutdown::Write);
}
