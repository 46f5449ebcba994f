//! The pool's private wire format between the parent and one worker, over a
//! `socketpair(AF_UNIX, SOCK_STREAM)` per worker.
//!
//! Every frame is `u32` little-endian length (of what follows), one kind
//! byte, and a payload:
//!
//! - parent → worker [`TASKS`]: `i64` runner offset, `u32` item count, then
//!   the items (each a postcard-encoded argument tuple);
//! - parent → worker [`EXIT`]: no payload; the worker returns;
//! - worker → parent [`RESULTS`]: one answer per item of the oldest
//!   unanswered `TASKS` frame, in order: byte 0 and the postcard result,
//!   byte 1 and the panic's (message, backtrace), or byte 2 and the reason
//!   the result could not be encoded;
//! - worker → parent [`FAILED`]: the oldest unanswered batch could not be run
//!   at all (undecodable arguments, unknown runner); UTF-8 reason.
//!
//! A worker answers batches in the order it received them, so the parent
//! matches answers to the front of that worker's in-flight queue. Several
//! frames travel in one `send`/`recv`, which is how small tasks are batched.

use crate::error::Result;
use crate::handoff::{Exporter, Handoff, Importer};
use rustix::net::{RecvFlags, SendFlags};
use std::os::fd::{AsFd, OwnedFd};

pub(crate) const TASKS: u8 = 1;
pub(crate) const EXIT: u8 = 2;
pub(crate) const RESULTS: u8 = 1;
pub(crate) const FAILED: u8 = 3;

/// Bytes of a `TASKS` frame before the items: length, kind, offset, count.
pub(crate) const TASK_HEADER: usize = 4 + 1 + 8 + 4;

/// The worker's end of its socket, handed to it at start.
#[derive(Debug)]
pub(crate) struct WorkerEnd(pub(crate) OwnedFd);

impl Handoff for WorkerEnd {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        ex.write_fd(self.0.as_fd())
    }
    fn import(im: &mut Importer) -> Result<Self> {
        Ok(WorkerEnd(im.read_fd()?))
    }
}

/// A connected pair: (parent end, non-blocking; worker end, blocking).
pub(crate) fn pair() -> Result<(OwnedFd, OwnedFd)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    for s in [&a, &b] {
        // Larger buffers mean fewer wake-ups for big chunks; the kernel caps
        // the request at its limit, and failure only costs speed.
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(s, 4 << 20);
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(s, 4 << 20);
    }
    rustix::io::ioctl_fionbio(&a, true)?;
    Ok((a, b))
}

/// Starts a frame of `kind` in `out`; returns its start for [`finish`].
pub(crate) fn begin(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, kind]);
    start
}

/// Writes the length of the frame begun at `start`.
pub(crate) fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// A complete frame at the front of `buf`: (kind, payload, total length).
pub(crate) fn next_frame(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || buf.len() < 4 + len {
        return None;
    }
    Some((buf[4], &buf[5..4 + len], 4 + len))
}

/// The frame length announced at the front of `buf`, if its header is there.
pub(crate) fn announced(buf: &[u8]) -> Option<usize> {
    (buf.len() >= 4).then(|| 4 + u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize)
}

/// What one non-blocking read found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// Some bytes were appended.
    Data,
    /// Nothing to read now.
    Empty,
    /// The peer closed (or reset) the connection.
    Eof,
}

/// Appends what can be read now to `buf`.
///
/// When the header of a large frame is in, the buffer is sized to end
/// exactly with that frame, so it can usually be taken whole, uncopied.
pub(crate) fn read_some(fd: impl AsFd, buf: &mut Vec<u8>, flags: RecvFlags) -> Result<Read> {
    match announced(buf) {
        Some(total) if total > buf.len() && buf.capacity() < total => {
            let mut bigger = Vec::with_capacity(total);
            bigger.extend_from_slice(buf);
            *buf = bigger;
        }
        _ => {
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(256 << 10);
            }
        }
    }
    loop {
        match rustix::net::recv(fd.as_fd(), rustix::buffer::spare_capacity(buf), flags) {
            Ok((0, _)) => return Ok(Read::Eof),
            Ok(_) => return Ok(Read::Data),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Ok(Read::Empty),
            Err(rustix::io::Errno::CONNRESET) => return Ok(Read::Eof),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends as much of `buf[*pos..]` as the socket takes without blocking
/// (`flags` decides); `Ok(false)` if the peer is gone.
pub(crate) fn write_some(
    fd: impl AsFd,
    buf: &[u8],
    pos: &mut usize,
    flags: SendFlags,
) -> Result<bool> {
    while *pos < buf.len() {
        match rustix::net::send(fd.as_fd(), &buf[*pos..], flags | SendFlags::NOSIGNAL) {
            Ok(n) => *pos += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Ok(true),
            Err(rustix::io::Errno::PIPE) | Err(rustix::io::Errno::CONNRESET) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}
