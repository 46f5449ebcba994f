//! Byte-moving primitives of the framing layer
//! ([`connection::framing`](crate::sys::framing)): vectored writes that
//! never raise `SIGPIPE`, reads that keep one passed descriptor
//! (`SCM_RIGHTS`), and reads straight into a `Vec`'s spare capacity (no
//! zeroing of large buffers).
//!
//! Every function retries on `EINTR`. On a socket, `nonblocking` asks for
//! `MSG_DONTWAIT` (a pipe has no per-call flag: it blocks unless its
//! descriptor is non-blocking).
#![allow(unsafe_code)]

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

/// How many descriptors one read can collect (extra ones are closed by the kernel).
const MAX_FDS_PER_READ: usize = 8;

/// What a descriptor is, which decides the system calls used on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A pipe (or any non-socket): `read` / `writev`.
    Pipe,
    /// A stream socket: `recv` / `sendmsg(MSG_NOSIGNAL)`; descriptors passed
    /// with the bytes are discarded by the kernel.
    Socket,
    /// A stream socket whose reads collect passed descriptors (`recvmsg`).
    SocketFds,
}

impl Kind {
    pub(crate) fn socket(self) -> bool {
        self != Kind::Pipe
    }
}

/// A connected pair of Unix stream sockets (close-on-exec): the transport
/// of a duplex pipe and of each pool worker.
pub(crate) fn stream_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
}

fn retry<T>(mut f: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    loop {
        match f() {
            Err(Errno::INTR) => continue,
            r => return r,
        }
    }
}

fn recv_flags(nonblocking: bool) -> RecvFlags {
    if nonblocking {
        RecvFlags::DONTWAIT
    } else {
        RecvFlags::empty()
    }
}

/// Writes as much of `bufs` as one call takes: `sendmsg(MSG_NOSIGNAL)` on a
/// socket (optionally carrying `fds` with `SCM_RIGHTS`), `writev` otherwise.
pub(crate) fn write_vectored(
    fd: BorrowedFd<'_>,
    kind: Kind,
    nonblocking: bool,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> Result<usize, Errno> {
    if kind.socket() {
        let mut flags = SendFlags::NOSIGNAL;
        if nonblocking {
            flags |= SendFlags::DONTWAIT;
        }
        if let ([one], []) = (bufs, fds) {
            // One piece: `send` spares the kernel importing an iovec.
            return retry(|| rustix::net::send(fd, one, flags));
        }
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(Errno::INVAL);
        }
        retry(|| rustix::net::sendmsg(fd, bufs, &mut control, flags))
    } else if let [one] = bufs {
        retry(|| rustix::io::write(fd, one))
    } else {
        retry(|| rustix::io::writev(fd, bufs))
    }
}

/// Reads into `buf`. With [`Kind::SocketFds`] this is `recvmsg` with room
/// for passed descriptors: the **first** one received is returned
/// (close-on-exec), every other one is closed at once — a connection message
/// carries exactly one, so more can only come from a misbehaving peer.
pub(crate) fn read_collecting(
    fd: BorrowedFd<'_>,
    kind: Kind,
    nonblocking: bool,
    buf: &mut [u8],
) -> Result<(usize, Option<OwnedFd>), Errno> {
    match kind {
        Kind::Pipe => return retry(|| rustix::io::read(fd, &mut *buf)).map(|n| (n, None)),
        Kind::Socket => {
            return retry(|| rustix::net::recv(fd, &mut *buf, recv_flags(nonblocking)))
                .map(|(n, _)| (n, None))
        }
        Kind::SocketFds => {}
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_READ))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let flags = RecvFlags::CMSG_CLOEXEC | recv_flags(nonblocking);
    let n = retry(|| {
        let mut iov = [IoSliceMut::new(&mut *buf)];
        rustix::net::recvmsg(fd, &mut iov, &mut control, flags)
    })?
    .bytes;
    let mut first = None;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            for fd in received {
                if first.is_none() {
                    first = Some(fd);
                }
                // Any other: dropped here, which closes it.
            }
        }
    }
    Ok((n, first))
}

/// The crate's one spare-capacity reader: reads at most `limit` bytes into
/// the spare capacity of `v`, growing its length by the number read (0 at
/// end of file). Plain `read` / `recv`: descriptors passed alongside these
/// bytes are dropped by the kernel.
pub(crate) fn read_into_spare(
    fd: BorrowedFd<'_>,
    kind: Kind,
    nonblocking: bool,
    v: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, Errno> {
    let spare = v.spare_capacity_mut();
    let want = limit.min(spare.len());
    let spare = &mut spare[..want];
    let n = if kind.socket() {
        retry(|| {
            rustix::net::recv(fd, &mut *spare, recv_flags(nonblocking))
                .map(|((init, _), _)| init.len())
        })?
    } else {
        retry(|| rustix::io::read(fd, &mut *spare).map(|(init, _)| init.len()))?
    };
    let new_len = v.len() + n;
    debug_assert!(new_len <= v.capacity());
    // SAFETY: [1] `read` / `recv` returned `n` and, per their contract,
    // initialised the first `n` bytes of the spare capacity they were given;
    // [2] `n <= want <= spare capacity`, so `new_len <= capacity`.
    unsafe { v.set_len(new_len) };
    Ok(n)
}

/// `true` if a write to a pipe whose reader is gone would kill this process:
/// `SIGPIPE` is at its default action. Rust's runtime and CPython set it to
/// ignored at start-up (and so does a multiproc child), so a write returns
/// `EPIPE` instead; a host that restored the default keeps its sockets
/// (`MSG_NOSIGNAL`) rather than pipes.
pub(crate) fn sigpipe_kills() -> bool {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the disposition into `old`, a
    // valid `sigaction` buffer (zeroed, fully written by the kernel on success).
    let r = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), old.as_mut_ptr()) };
    // SAFETY: zero-initialised, and filled in when `r == 0`.
    let old = unsafe { old.assume_init() };
    r != 0 || old.sa_sigaction == libc::SIG_DFL
}
