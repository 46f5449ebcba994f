//! The pool's private wire format between the parent and one worker, over a
//! `socketpair(AF_UNIX, SOCK_STREAM)` per worker.
//!
//! Frames are the crate's ([`framing`]: CPython's 4-byte big-endian length
//! header, read and written by the connection layer); the pool's payload is
//! one kind byte and what follows:
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
//! Every byte from the peer is checked: a frame of length 0 or of an
//! unknown kind is a [`FrameError`], a length over [`MAX_FRAME`] is refused
//! by the reader before anything of that size is allocated, and the side
//! that sees either stops using the socket; a frame cut short by the end of
//! the stream is never delivered (the peer is gone: its death is handled as
//! such).

use crate::error::Result;
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::conn_io::Kind;
use crate::sys::framing::{self, Frame, FrameReader, Source};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

pub(crate) const TASKS: u8 = 1;
pub(crate) const EXIT: u8 = 2;
pub(crate) const RESULTS: u8 = 1;
pub(crate) const FAILED: u8 = 3;
pub(crate) const PARTIAL: u8 = 4;

/// The longest frame payload either side accepts.
pub(crate) const MAX_FRAME: usize = 1 << 30;

/// Bytes of a `RESULTS` or `PARTIAL` frame before the answers: length,
/// kind, answer count, and (`RESULTS`) the time the batch ran, in ns.
pub(crate) const ANSWER_HEADER: usize = 4 + 1 + 4 + 8;

/// A malformed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A frame of length 0 (it would not even hold its kind byte).
    Empty,
    /// A frame of a kind this side does not know.
    Kind(u8),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Empty => write!(f, "a frame of length 0"),
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
    let (a, b) = crate::sys::conn_io::stream_pair()?;
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

/// Writes the header of the frame begun at `start`.
pub(crate) fn finish(out: &mut [u8], start: usize) {
    finish_with(out, start, 0);
}

/// Writes the header of the frame begun at `start`, which goes on for
/// `tail` bytes after the end of `out` (sent from elsewhere).
pub(crate) fn finish_with(out: &mut [u8], start: usize, tail: usize) {
    let len = out.len() - start - 4 + tail;
    out[start..start + 4].copy_from_slice(&framing::short_header(len));
}

/// A frame's kind and the rest of its payload.
///
/// # Errors
///
/// [`FrameError::Empty`] for a payload of length 0 (no kind byte).
pub(crate) fn kind_of(payload: &[u8]) -> Result<(u8, &[u8]), FrameError> {
    match payload.split_first() {
        Some((k, rest)) => Ok((*k, rest)),
        None => Err(FrameError::Empty),
    }
}

/// A frame partly received whose kind is already known to be none of
/// `kinds`: refused at once, without waiting for the rest (which a peer gone
/// wrong might never send).
pub(crate) fn bad_start(r: &FrameReader, kinds: &[u8]) -> Option<FrameError> {
    let k = *r.partial_payload()?.first()?;
    (!kinds.contains(&k)).then_some(FrameError::Kind(k))
}

/// A reader of the pool's frames: frames up to [`MAX_FRAME`]; payloads of
/// 64 KiB and more go to buffers of their own (handed over uncopied).
pub(crate) fn reader() -> FrameReader {
    FrameReader::new(256 << 10, 64 << 10)
}

/// How a pool socket is read: a stream socket, passed descriptors dropped.
pub(crate) fn source(fd: BorrowedFd<'_>, nonblocking: bool) -> Source<'_> {
    Source {
        fd,
        kind: Kind::Socket,
        nonblocking,
    }
}

/// The next frame from `fd` (see [`FrameReader::next`]): `Ok(None)` when
/// `nonblocking` and nothing more can be read now. A large payload goes
/// into `reuse`'s allocation when it is large enough.
pub(crate) fn next(
    r: &mut FrameReader,
    fd: BorrowedFd<'_>,
    nonblocking: bool,
    reuse: &mut Vec<u8>,
) -> Result<Option<Frame>> {
    r.next(
        source(fd, nonblocking),
        MAX_FRAME as u64,
        reuse,
        &mut || Ok(()),
        &mut |_, _| {},
    )
}

/// A large payload's buffer kept for the next one (a fresh allocation of
/// that size costs a page fault per page), unless it is unusually large.
pub(crate) fn keep_for_reuse(reuse: &mut Vec<u8>, buf: Vec<u8>) {
    if buf.capacity() <= REUSE_MAX && buf.capacity() > reuse.capacity() {
        *reuse = buf;
    }
}

/// The largest large-payload buffer a side keeps between frames.
const REUSE_MAX: usize = 16 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use proptest::prelude::*;

    /// The complete frames at the front of `bytes` under `max`, as
    /// `framing::split` finds them, and whether the stream stops at a
    /// malformed header (negative or over `max`).
    fn reference(bytes: &[u8], max: u64) -> (Vec<Vec<u8>>, bool) {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            match framing::split(&bytes[pos..], max) {
                Ok(Some(p)) => {
                    out.push(bytes[pos..][p.clone()].to_vec());
                    pos += p.end;
                }
                Ok(None) => return (out, false),
                Err(_) => return (out, true),
            }
        }
    }

    /// Feeds `bytes` through a pool socket to `r`, in non-blocking mode as
    /// the parent reads, in pieces of `chunk` bytes, with a limit of `max`.
    fn feed(
        mut r: FrameReader,
        bytes: &[u8],
        chunk: usize,
        max: u64,
    ) -> (Vec<Vec<u8>>, Option<Error>) {
        let (a, b) = pair().unwrap();
        let mut got = Vec::new();
        let mut sent = 0;
        loop {
            let end = (sent + chunk).min(bytes.len());
            if sent < end {
                framing::write_all(b.as_fd(), Kind::Socket, &[&bytes[sent..end]], &[]).unwrap();
                sent = end;
            } else if sent == bytes.len() {
                // All sent: the end of the stream follows.
                sent += 1;
                let _ = rustix::net::shutdown(&b, rustix::net::Shutdown::Write);
            }
            loop {
                let src = source(a.as_fd(), true);
                match r.next(src, max, &mut Vec::new(), &mut || Ok(()), &mut |_, _| {}) {
                    Ok(Some(f)) => got.push(r.payload(&f).to_vec()),
                    Ok(None) => break,
                    Err(e) => return (got, Some(e)),
                }
            }
            assert!(sent <= bytes.len(), "the reader waits after the end");
        }
    }

    /// Pool frames as the parent and workers write them (`begin`, payload,
    /// `finish`), then hostile bytes: noise, a length word of the peer's
    /// choosing, or a cut.
    fn pool_stream() -> impl Strategy<Value = Vec<u8>> {
        let frame = (
            prop::sample::select(vec![TASKS, EXIT, FAILED, PARTIAL, 0, 99]),
            prop::collection::vec(any::<u8>(), 0..3000),
        );
        (
            prop::collection::vec(frame, 0..6),
            prop::option::of(any::<i32>()),
            prop::collection::vec(any::<u8>(), 0..40),
            prop::option::of(any::<prop::sample::Index>()),
        )
            .prop_map(|(frames, word, noise, cut)| {
                let mut v = Vec::new();
                for (kind, payload) in frames {
                    let start = begin(&mut v, kind);
                    v.extend_from_slice(&payload);
                    finish(&mut v, start);
                }
                v.extend(word.map(i32::to_be_bytes).into_iter().flatten());
                v.extend_from_slice(&noise);
                if let Some(cut) = cut.filter(|_| !v.is_empty()) {
                    v.truncate(cut.index(v.len()));
                }
                v
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// The pool's reader (and one with a tiny read-ahead, so that large
        /// frames take their own path) yields exactly the reference frames,
        /// then a clear end: `Closed` after the last whole frame, an error
        /// otherwise; never a panic, a hang, or a frame over the limit.
        #[test]
        fn pool_reader_matches_reference(bytes in pool_stream(), chunk in 1usize..5000, max in 0u64..4000) {
            let (expected, malformed) = reference(&bytes, max);
            let consumed: usize = expected.iter().map(|f| f.len() + 4).sum();
            for r in [reader(), FrameReader::new(16, 8)] {
                let (got, err) = feed(r, &bytes, chunk, max);
                prop_assert_eq!(&got, &expected);
                let err = err.expect("the stream ends");
                if consumed == bytes.len() {
                    prop_assert!(matches!(err, Error::Closed), "{:?}", err);
                } else if malformed {
                    prop_assert!(matches!(err, Error::MessageTooLarge { .. } | Error::Codec(_)), "{:?}", err);
                } else {
                    prop_assert!(matches!(err, Error::Io(_)), "{:?}", err);
                }
            }
        }
    }

    /// A `TASKS` frame whose last large byte payload travels as its tail
    /// is, frame and tail together, byte for byte the frame with every item
    /// encoded in it; small byte payloads and other types stay inside.
    #[test]
    fn a_frame_and_its_tail_are_the_whole_frame() {
        use super::super::task_frame_split;
        let items = |big: usize| {
            vec![
                vec![1u8; 10],
                vec![2u8; 70_000],
                vec![3u8; big],
                vec![4u8; 5],
            ]
        };
        let (_, none, n) =
            task_frame_split(7, items(200_000).into_iter(), usize::MAX, usize::MAX).unwrap();
        assert!(none.is_none());
        assert_eq!(n, 4);
        // A limit of 100 000 bytes: the 200 000-byte item ends the frame.
        let mut rest = items(200_000).into_iter();
        let (f, tail, n) = task_frame_split(7, rest.by_ref(), usize::MAX, 100_000).unwrap();
        assert_eq!(n, 3);
        assert_eq!(tail.as_deref(), Some(&vec![3u8; 200_000][..]));
        let (g, _, _) = task_frame_split(
            7,
            items(200_000).into_iter().take(3),
            usize::MAX,
            usize::MAX,
        )
        .unwrap();
        assert_eq!([f.as_slice(), tail.as_deref().unwrap()].concat(), g);
        assert_eq!(
            rest.next(),
            Some(vec![4u8; 5]),
            "the frame stopped at its tail"
        );
        assert_eq!(
            framing::split(&g, MAX_FRAME as u64).unwrap(),
            Some(4..g.len())
        );
        // Not a Vec<u8>: encoded in the frame, whatever its size.
        let (f, tail, _) = task_frame_split(
            7,
            std::iter::once((vec![5u8; 200_000],)),
            usize::MAX,
            100_000,
        )
        .unwrap();
        assert!(tail.is_none());
        assert!(f.len() > 200_000);
    }

    #[test]
    fn zero_length_and_unknown_kinds_are_frame_errors() {
        assert_eq!(kind_of(&[]), Err(FrameError::Empty));
        assert_eq!(kind_of(&[TASKS, 1]), Ok((TASKS, &[1u8][..])));
        let mut r = FrameReader::new(64, 32);
        let (a, b) = pair().unwrap();
        framing::write_all(b.as_fd(), Kind::Socket, &[&[0, 0, 1, 0, 77, 1, 2]], &[]).unwrap();
        assert!(matches!(
            next(&mut r, a.as_fd(), true, &mut Vec::new()),
            Ok(None)
        ));
        assert_eq!(bad_start(&r, &[TASKS, EXIT]), Some(FrameError::Kind(77)));
    }
}
