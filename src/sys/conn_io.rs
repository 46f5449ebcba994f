//! Byte-moving primitives of the framing layer
//! ([`connection::framing`](crate::sys::framing)): vectored writes that
//! never raise `SIGPIPE`, and one vectored reader that keeps one passed
//! descriptor (`SCM_RIGHTS`) and reads straight into a `Vec`'s spare
//! capacity (no zeroing of large buffers) between two plain buffers (a
//! frame's header before it, the read-ahead after it).
//!
//! Every function retries on `EINTR`. On a socket, `nonblocking` asks for
//! `MSG_DONTWAIT` (a pipe has no per-call flag: it blocks unless its
//! descriptor is non-blocking).
#![allow(unsafe_code)]

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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

/// Room for the control message of one read: [`MAX_FDS_PER_READ`]
/// descriptors (`CMSG_SPACE(8 * 4)` is 48 bytes on Linux).
const CONTROL_LEN: usize = 64;

/// A control-message buffer aligned as `cmsghdr` wants.
#[repr(C, align(8))]
struct Control([u8; CONTROL_LEN]);

/// The crate's one reader: one `readv` (a pipe) or `recvmsg` (a socket)
/// into, in stream order, `head`, at most `limit` bytes of the spare
/// capacity of `v` (its length grows by what lands there: no zeroing), and
/// `tail`. Returns the number of bytes read (0 at end of file).
///
/// With [`Kind::SocketFds`] it makes room for passed descriptors: the
/// **first** one received is returned (close-on-exec), every other one is
/// closed at once — a connection message carries exactly one, so more can
/// only come from a misbehaving peer. Otherwise the kernel drops them.
pub(crate) fn read_scatter(
    fd: BorrowedFd<'_>,
    kind: Kind,
    nonblocking: bool,
    head: &mut [u8],
    v: &mut Vec<u8>,
    limit: usize,
    tail: &mut [u8],
) -> Result<(usize, Option<OwnedFd>), Errno> {
    let spare = v.spare_capacity_mut();
    let want = limit.min(spare.len());
    if head.is_empty() && want == 0 && kind != Kind::SocketFds {
        // One plain buffer (a read-ahead fill): `read` / `recv`.
        let n = if kind == Kind::Pipe {
            retry(|| rustix::io::read(fd, &mut *tail))?
        } else {
            let flags = if nonblocking {
                RecvFlags::DONTWAIT
            } else {
                RecvFlags::empty()
            };
            retry(|| rustix::net::recv(fd, &mut *tail, flags))?.0
        };
        return Ok((n, None));
    }
    // Raw pointers only: no reference to the uninitialised spare capacity.
    let mut iov = [
        iovec(head.as_mut_ptr(), head.len()),
        iovec(spare.as_mut_ptr().cast(), want),
        iovec(tail.as_mut_ptr(), tail.len()),
    ];
    let (n, fd) = match kind {
        Kind::Pipe => (retry(|| readv(fd, &mut iov))?, None),
        Kind::Socket | Kind::SocketFds => {
            let mut flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
            if kind == Kind::SocketFds {
                flags |= libc::MSG_CMSG_CLOEXEC;
            }
            retry(|| recvmsg(fd, &mut iov, flags, kind == Kind::SocketFds))?
        }
    };
    let in_v = n.saturating_sub(head.len()).min(want);
    // SAFETY: [1] the kernel fills the iovecs in order and reported `n`
    // bytes, so the first `in_v` bytes of the spare capacity (the second
    // iovec, `want` bytes long) were written, i.e. initialised; [2]
    // `in_v <= want <= spare capacity`, so the new length is within the
    // capacity.
    unsafe { v.set_len(v.len() + in_v) };
    Ok((n, fd))
}

fn iovec(base: *mut u8, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: base.cast(),
        iov_len: len,
    }
}

fn last_errno() -> Errno {
    Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// `readv` into `iov`, whose every entry points at `iov_len` writable bytes.
fn readv(fd: BorrowedFd<'_>, iov: &mut [libc::iovec; 3]) -> Result<usize, Errno> {
    // SAFETY: each iovec of `iov` describes memory the caller lent us
    // mutably for this call (a slice, or a Vec's spare capacity of at least
    // `iov_len` bytes); the kernel writes only within them.
    let n = unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
    usize::try_from(n).map_err(|_| last_errno())
}

/// `recvmsg` into `iov` (as [`readv`]); with `want_fds`, with room for
/// descriptors, the first of which is returned (the others closed).
fn recvmsg(
    fd: BorrowedFd<'_>,
    iov: &mut [libc::iovec; 3],
    flags: libc::c_int,
    want_fds: bool,
) -> Result<(usize, Option<OwnedFd>), Errno> {
    let mut control = Control([0; CONTROL_LEN]);
    // SAFETY: `msghdr` is plain data (pointers and integers, some private
    // padding fields on some targets): all zeroes is a valid value, "no
    // name, no iovecs, no control buffer".
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len() as _;
    if want_fds {
        // SAFETY: a pure computation on a constant.
        let space = unsafe { libc::CMSG_SPACE((MAX_FDS_PER_READ * 4) as libc::c_uint) } as usize;
        debug_assert!(space <= CONTROL_LEN);
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space.min(CONTROL_LEN) as _;
    }
    // SAFETY: `msg` points at `iov` (memory lent to us mutably, see
    // `readv`) and at `control`, `msg_controllen` bytes we own, all alive
    // for the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
    let n = usize::try_from(n).map_err(|_| last_errno())?;
    let fd = if want_fds { first_fd(&msg) } else { None };
    Ok((n, fd))
}

/// The descriptors in the control messages `recvmsg` left in `msg`: the
/// first is returned, every other one closed.
fn first_fd(msg: &libc::msghdr) -> Option<OwnedFd> {
    let mut first = None;
    // SAFETY: `msg` was filled by a successful `recvmsg`, so its control
    // buffer holds `msg_controllen` bytes of well-formed control messages
    // and the CMSG_* macros walk within them. Each SCM_RIGHTS payload holds
    // `(cmsg_len - CMSG_LEN(0)) / 4` descriptors the kernel installed for
    // us, owned by nobody else: each becomes an `OwnedFd` exactly once. The
    // payload may be unaligned for `c_int`, hence `read_unaligned`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let len = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                for i in 0..len / std::mem::size_of::<libc::c_int>() {
                    let raw = data
                        .add(i * std::mem::size_of::<libc::c_int>())
                        .cast::<libc::c_int>()
                        .read_unaligned();
                    let fd = OwnedFd::from_raw_fd(raw);
                    if first.is_none() {
                        first = Some(fd);
                    }
                    // Any other: dropped here, which closes it.
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    first
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
