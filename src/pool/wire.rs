//! The pool's private wire format between the parent and one worker, over a
//! `socketpair(AF_UNIX, SOCK_STREAM)` per worker.
//!
//! Every frame is `u32` little-endian length (of what follows), one kind
//! byte, and a payload:
//!
//! - parent → worker [`TASKS`]: `i64` runner offset, `u32` item count, then
//!   the items (each a postcard-encoded argument tuple);
//! - parent → worker [`EXIT`]: no payload; the worker returns;
//! - worker → parent [`RESULTS`]: `u32` answer count, `u64` time the batch
//!   ran (ns; a `PARTIAL` frame has 0 there), then the answers to
//!   the last tasks of the oldest unanswered `TASKS` frame, in order: byte 0
//!   and the postcard result, byte 1 and the panic's (message, backtrace),
//!   or byte 2 and the reason the result could not be encoded;
//! - worker → parent [`PARTIAL`]: the same, for the next tasks of that frame
//!   when its answers outgrow the worker's journal (the frame goes on);
//! - worker → parent [`FAILED`]: the oldest unanswered batch could not be run
//!   at all (unknown runner, short frame); UTF-8 reason.
//!
//! A worker answers batches in the order it received them, skipping those
//! the parent took back (see `journal`), so the parent matches answers to
//! the front of that worker's in-flight queue. Several frames travel in one
//! `send`/`recv`, which is how small tasks are batched.
//!
//! Every byte from the peer is checked: a frame of length 0, a length over
//! [`MAX_FRAME`] (refused before anything of that size is allocated), or an
//! unknown kind is a [`FrameError`], and the side that sees it stops using
//! the socket; a frame cut short by the end of the stream is never
//! delivered (the peer is gone: its death is handled as such).

use crate::error::Result;
use crate::handoff::{Exporter, Handoff, Importer};
use rustix::net::{RecvFlags, SendFlags};
use std::os::fd::{AsFd, OwnedFd};

pub(crate) const TASKS: u8 = 1;
pub(crate) const EXIT: u8 = 2;
pub(crate) const RESULTS: u8 = 1;
pub(crate) const FAILED: u8 = 3;
pub(crate) const PARTIAL: u8 = 4;

/// The longest frame either side accepts (length field, excluding itself).
pub(crate) const MAX_FRAME: usize = 1 << 30;

/// Bytes of a `RESULTS` or `PARTIAL` frame before the answers: length,
/// kind, answer count, and (`RESULTS`) the time the batch ran, in ns.
pub(crate) const ANSWER_HEADER: usize = 4 + 1 + 4 + 8;

/// A malformed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A frame of length 0 (it would not even hold its kind byte).
    Empty,
    /// A frame longer than [`MAX_FRAME`].
    TooLarge(u64),
    /// A frame of a kind this side does not know.
    Kind(u8),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Empty => write!(f, "a frame of length 0"),
            FrameError::TooLarge(n) => {
                write!(f, "a frame of {n} bytes (the limit is {MAX_FRAME})")
            }
            FrameError::Kind(k) => write!(f, "a frame of unknown kind {k}"),
        }
    }
}

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

/// A frame: (kind, payload, total length with the length field).
pub(crate) type Frame<'a> = (u8, &'a [u8], usize);

/// The complete frame at the front of `buf`, if there is one.
///
/// # Errors
///
/// [`FrameError::Empty`] or [`FrameError::TooLarge`] as soon as the length
/// field is in, whether or not the rest has arrived.
pub(crate) fn next_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, FrameError> {
    let Some(total) = announced(buf)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((buf[4], &buf[5..total], total)))
}

/// The total length (with its length field) of the frame at the front of
/// `buf`, if its length field is there; checked against [`MAX_FRAME`].
pub(crate) fn announced(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(h) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len as u64));
    }
    Ok(Some(4 + len))
}

/// What one non-blocking read found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// This many bytes were appended.
    Data(usize),
    /// Nothing to read now.
    Empty,
    /// The peer closed (or reset) the connection.
    Eof,
}

/// Appends what can be read now to `buf`, returning how many bytes came.
///
/// When the header of a large frame is in (and within [`MAX_FRAME`]: a
/// larger one is left for [`next_frame`] to refuse), the buffer is sized to
/// end exactly with that frame, so it can usually be taken whole, uncopied.
pub(crate) fn read_some(fd: impl AsFd, buf: &mut Vec<u8>, flags: RecvFlags) -> Result<Read> {
    match announced(buf) {
        Ok(Some(total)) if total > buf.len() && buf.capacity() < total => {
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
            Ok((n, _)) => return Ok(Read::Data(n)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        let start = begin(&mut f, kind);
        f.extend_from_slice(payload);
        finish(&mut f, start);
        f
    }

    #[test]
    fn frames_are_read_back() {
        let mut s = frame(TASKS, b"abc");
        s.extend(frame(EXIT, b""));
        let (k, p, n) = next_frame(&s).unwrap().unwrap();
        assert_eq!((k, p, n), (TASKS, &b"abc"[..], 8));
        assert_eq!(next_frame(&s[n..]).unwrap().unwrap(), (EXIT, &b""[..], 5));
    }

    #[test]
    fn zero_length_frame_is_an_error_not_a_wait() {
        assert_eq!(next_frame(&[0, 0, 0, 0]), Err(FrameError::Empty));
        assert_eq!(next_frame(&[0, 0, 0, 0, 1, 2, 3]), Err(FrameError::Empty));
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        let huge = u32::MAX.to_le_bytes();
        assert_eq!(
            next_frame(&huge),
            Err(FrameError::TooLarge(u32::MAX as u64))
        );
        let over = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(matches!(next_frame(&over), Err(FrameError::TooLarge(_))));
        assert_eq!(
            announced(&(MAX_FRAME as u32).to_le_bytes()),
            Ok(Some(MAX_FRAME + 4))
        );
    }

    #[test]
    fn oversized_length_allocates_nothing() {
        let (a, b) = pair().unwrap();
        rustix::net::send(&b, &u32::MAX.to_le_bytes(), SendFlags::empty()).unwrap();
        rustix::net::send(&b, &[1; 100], SendFlags::empty()).unwrap();
        let mut buf = Vec::new();
        while buf.len() < 104 {
            assert!(matches!(
                read_some(&a, &mut buf, RecvFlags::empty()).unwrap(),
                Read::Data(_)
            ));
        }
        assert!(
            buf.capacity() < 1 << 20,
            "sized by the peer's word: {}",
            buf.capacity()
        );
        assert!(next_frame(&buf).is_err());
    }

    #[test]
    fn truncated_frame_is_never_delivered() {
        let s = frame(TASKS, &[7; 40]);
        for cut in 0..s.len() {
            assert_eq!(next_frame(&s[..cut]), Ok(None), "cut at {cut}");
        }
        // The peer going away mid-frame is seen as the end of the stream.
        let (a, b) = pair().unwrap();
        rustix::net::send(&b, &s[..20], SendFlags::empty()).unwrap();
        drop(b);
        let mut buf = Vec::new();
        assert_eq!(
            read_some(&a, &mut buf, RecvFlags::empty()).unwrap(),
            Read::Data(20)
        );
        assert_eq!(
            read_some(&a, &mut buf, RecvFlags::empty()).unwrap(),
            Read::Eof
        );
        assert_eq!(next_frame(&buf), Ok(None));
    }

    #[test]
    fn garbage_never_panics_and_never_yields_an_oversized_frame() {
        // A deterministic pseudo-random stream (xorshift).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let len = (x % 64) as usize;
            let mut g = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                g.push(x as u8);
            }
            let mut pos = 0;
            while let Ok(Some((_, payload, n))) = next_frame(&g[pos..]) {
                assert!(n >= 5 && n <= g.len() - pos && payload.len() == n - 5);
                pos += n;
            }
        }
    }
}
