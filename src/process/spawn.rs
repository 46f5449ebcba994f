//! The *spawn* launcher: `posix_spawn` of the current binary
//! (`/proc/self/exe`, which names the running image even if the file was
//! replaced on disk). The child enters the library in [`init`](crate::init),
//! reads a [`BootMsg`] from its bootstrap socket, checks that it runs the
//! parent's binary, and calls the target's runner.
//!
//! `posix_spawn` starts the child without copying this process's page
//! tables (glibc: `clone(CLONE_VM | CLONE_VFORK)`), so a start costs the same
//! with a 10 MiB or a 10 GiB parent. The child inherits only stdio, its
//! bootstrap socket (at the lowest free number from 3) and the descriptors
//! opted in with [`Builder::pass_fd`](super::Builder::pass_fd), at their
//! numbers; every other descriptor is closed by the spawn (or, with a libc
//! that cannot, by the child right after `execve`). The handed-off
//! descriptors travel with the bootstrap message (`SCM_RIGHTS`), as they
//! reach a forkserver child.
#![allow(unsafe_code)]

use super::bootstrap::{self, BootMsg, BOOT_ENV};
use super::fnref::BinaryId;
use super::{Launch, Stdin};
use crate::error::{Error, Result};
use crate::sys::posix_spawn;
use crate::sys::scm;
use rustix::event::{PollFd, PollFlags};
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A deliberate change to the bootstrap message, for tests of hostile input.
pub(crate) type Tamper = fn(&mut BootMsg, &mut Vec<u8>);

/// The most descriptors handed to a spawned child: each chunk of
/// [`scm::MAX_FDS`] goes with one byte of the start message, which is at
/// least 20 bytes long (header and checksum).
const MAX_HANDED_OFF: usize = 20 * scm::MAX_FDS;

/// Starts a spawned child. Returns its pid and the parent's end of the report socket.
pub(crate) fn launch(
    launch: Launch<'_>,
    runner_offset: i64,
    tamper: Option<Tamper>,
) -> Result<(i32, OwnedFd)> {
    let Launch {
        identity,
        stdin,
        args,
        fds,
        pass_fds,
    } = launch;
    if fds.len() > MAX_HANDED_OFF {
        return Err(Error::unsupported(format!(
            "a spawned child takes at most {MAX_HANDED_OFF} descriptors ({} given)",
            fds.len()
        )));
    }
    let (parent_end, child_end) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let keep = opted_in(pass_fds);
    // The child's bootstrap socket: the lowest number from 3 that no
    // opted-in descriptor takes.
    let boot_fd = (3..)
        .find(|n| keep.binary_search(n).is_err())
        .expect("a free number");
    let closes = posix_spawn::closes_others() && !CHILD_CLOSES.load(Ordering::Relaxed);
    let mut msg = BootMsg {
        binary: BinaryId::current()?,
        runner_offset,
        identity,
        nfds: fds.len() as u32,
        keep: keep.clone(),
        close_others: !closes,
        args: args.to_vec(),
    };
    let mut wire = Vec::new();
    if let Some(t) = tamper {
        t(&mut msg, &mut wire);
    }
    if wire.is_empty() {
        wire = bootstrap::encode_boot(&msg)?;
    }
    let mut moves: Vec<(RawFd, RawFd)> = keep.iter().map(|&k| (k, k)).collect();
    moves.push((child_end.as_raw_fd(), boot_fd));
    let argv = [CString::new(
        std::env::args_os()
            .next()
            .map(|a| a.as_bytes().to_vec())
            .unwrap_or_default(),
    )
    .unwrap_or_else(|_| c"multiproc-child".into())];
    let envp = environment_with(BOOT_ENV, &boot_fd.to_string());
    let pid = posix_spawn::spawn(&posix_spawn::Spawn {
        path: c"/proc/self/exe",
        argv: &argv,
        envp: &envp,
        fds: &moves,
        stdin_null: stdin == Stdin::Null,
        close_others: closes,
    })?;
    drop(child_end);
    if let Err(e) = send_all(&parent_end, &wire, fds) {
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

/// The opted-in descriptors a child keeps at their numbers: sorted, without
/// repeats, and without 0 to 2 (stdio, set by [`Stdin`]).
pub(crate) fn opted_in(pass_fds: &[RawFd]) -> Vec<RawFd> {
    let mut keep: Vec<RawFd> = pass_fds.iter().copied().filter(|&f| f > 2).collect();
    keep.sort_unstable();
    keep.dedup();
    keep
}

/// This process's environment with `name` set to `value`, as `NAME=value`
/// strings for `execve`.
fn environment_with(name: &str, value: &str) -> Vec<CString> {
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k.as_bytes() != name.as_bytes())
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.extend(CString::new(format!("{name}={value}")));
    env
}

/// Makes spawned children close the descriptors they do not keep themselves,
/// as on a libc whose `posix_spawn` cannot (tests).
static CHILD_CLOSES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes spawned children close what they do not keep themselves (tests).
#[cfg(feature = "test-hooks")]
pub(crate) fn set_child_closes(on: bool) {
    CHILD_CLOSES.store(on, Ordering::Relaxed);
}

/// How long a spawned child may leave its start message unread (no byte
/// taken) before the parent gives up on it.
static BOOT_STALL_MS: AtomicU64 = AtomicU64::new(30_000);

/// Sets how long a spawned child may leave its start message unread (tests).
#[cfg(feature = "test-hooks")]
pub(crate) fn set_boot_stall(limit: Duration) {
    BOOT_STALL_MS.store(limit.as_millis() as u64, Ordering::Relaxed);
}

/// Writes the whole bootstrap message with `fds` attached (in chunks of
/// [`scm::MAX_FDS`], each with one byte of the message, the last with the
/// rest), then shuts down our sending side so a child reading a short message
/// sees end-of-file instead of waiting forever.
///
/// Never blocks forever: it waits for the socket to take more only while the
/// child reads. A child that takes no byte for [`BOOT_STALL_MS`] (a program
/// whose `main` does not call `init`, busy with something else) gives
/// [`Error::Bootstrap`]. A child that dies before reading it all closes its
/// end, which ends the wait at once; that death is reported later by `join`,
/// so it is not an error here.
pub(crate) fn send_all(sock: &OwnedFd, mut buf: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    let stall = Duration::from_millis(BOOT_STALL_MS.load(Ordering::Relaxed));
    let mut deadline = Instant::now() + stall;
    let mut chunks = fds.chunks(scm::MAX_FDS);
    let mut chunk = chunks.next();
    if fds.len().div_ceil(scm::MAX_FDS) > buf.len() {
        return Err(Error::Invalid(format!(
            "{} descriptors do not fit a start message of {} bytes",
            fds.len(),
            buf.len()
        )));
    }
    while !buf.is_empty() {
        let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
        let sent = match chunk {
            Some(c) => {
                let last = chunks.len() == 0;
                let bytes = if last { buf } else { &buf[..1] };
                scm::send_with_fds(sock.as_fd(), bytes, c, flags)
            }
            None => rustix::net::send(sock, buf, flags),
        };
        match sent {
            Ok(n) if chunk.is_some() && n > 0 => {
                // The descriptors went with the first byte.
                chunk = chunks.next();
                buf = &buf[n..];
                deadline = Instant::now() + stall;
            }
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
