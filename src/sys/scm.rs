//! Descriptors sent along with bytes on a Unix socket (`SCM_RIGHTS`): how a
//! spawned child gets its handed-off resources from its parent, and how a
//! forkserver request carries them to the server.

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

/// The most descriptors one message carries (the kernel's limit is 253).
pub(crate) const MAX_FDS: usize = 250;

/// Sends `bytes` with `fds` attached (at most [`MAX_FDS`]); returns how many
/// bytes went (on a stream socket the descriptors go with the first of them,
/// so a short count still delivered them all). Retries on `EINTR`.
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    flags: SendFlags,
) -> rustix::io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(rustix::io::Errno::INVAL);
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(rustix::io::Errno::INVAL);
    }
    loop {
        match rustix::net::sendmsg(sock, &[IoSlice::new(bytes)], &mut control, flags) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r,
        }
    }
}

/// What [`recv_with_fds`] received.
#[derive(Debug)]
pub(crate) struct Received {
    /// Bytes written to the buffer (0: end-of-file).
    pub(crate) bytes: usize,
    /// The descriptors that came with them (close-on-exec), in order.
    pub(crate) fds: Vec<OwnedFd>,
    /// The message or its descriptors did not fit (`MSG_TRUNC`/`MSG_CTRUNC`):
    /// descriptors beyond room were closed by the kernel.
    pub(crate) truncated: bool,
}

/// Receives into `buf` with room for [`MAX_FDS`] descriptors, which arrive
/// close-on-exec. Retries on `EINTR`.
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: RecvFlags,
) -> rustix::io::Result<Received> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        let mut iov = [IoSliceMut::new(buf)];
        match rustix::net::recvmsg(
            sock,
            &mut iov,
            &mut control,
            flags | RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r?,
        }
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(r) = m {
            fds.extend(r);
        }
    }
    Ok(Received {
        bytes: got.bytes,
        fds,
        truncated: got
            .flags
            .intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC),
    })
}

/// A [`Read`](std::io::Read) over a socket that keeps the descriptors that
/// come with the bytes, in order.
pub(crate) struct ScmReader<'a> {
    sock: BorrowedFd<'a>,
    fds: Vec<OwnedFd>,
    truncated: bool,
}

impl<'a> ScmReader<'a> {
    pub(crate) fn new(sock: BorrowedFd<'a>) -> ScmReader<'a> {
        ScmReader {
            sock,
            fds: Vec::new(),
            truncated: false,
        }
    }

    /// Whether descriptors were lost (more came at once than
    /// [`recv_with_fds`] has room for).
    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }

    /// The descriptors received so far.
    pub(crate) fn into_fds(self) -> Vec<OwnedFd> {
        self.fds
    }
}

impl std::io::Read for ScmReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let got = recv_with_fds(self.sock, buf, RecvFlags::empty())?;
        self.truncated |= got.truncated;
        self.fds.extend(got.fds);
        Ok(got.bytes)
    }
}
