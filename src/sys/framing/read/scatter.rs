//! Scatter reads: a large payload read where it is wanted together with
//! what surrounds it (the header before it, the next frame's header after
//! it) in one system call, so a stream of large frames costs one read per
//! frame and no copy of its payload.

use super::{checked_header, reserve, Frame, FrameReader, Large, Source, MAX_HEADER};
use crate::error::{Error, Result};
use crate::sys::conn_io;
use rustix::io::Errno;
use std::os::fd::OwnedFd;

/// What one scatter read left.
pub(super) enum Step {
    /// A whole frame.
    Frame(Frame),
    /// Nothing can be read now (non-blocking mode).
    Again,
    /// Bytes that the main loop takes from here (a frame in progress or in
    /// the read-ahead).
    More,
}

/// Bytes read past the end of a large payload in the same system call, into
/// the read-ahead: the next frame's header, so a stream of large frames
/// costs one read each, while at most a few bytes of a following large
/// payload have to be copied.
const TAIL: usize = MAX_HEADER;

/// Length of the header slot of a scatter read: the short header.
const HEAD: usize = 4;

impl FrameReader {
    /// One read of the large payload in progress: the rest of it straight
    /// into its buffer, then at most [`TAIL`] bytes of what follows into the
    /// (empty) read-ahead, in one system call.
    pub(super) fn read_large(
        &mut self,
        src: Source<'_>,
        on_fd: &mut dyn FnMut(OwnedFd, u64),
    ) -> std::result::Result<usize, Errno> {
        self.ensure_buf();
        let Some(l) = &mut self.large else {
            return Ok(0);
        };
        debug_assert_eq!(self.start, self.end, "a large payload is read alone");
        let want = l.len - l.data.len();
        let before = l.data.len();
        let (n, fd) = conn_io::read_scatter(
            src.fd,
            src.kind,
            src.nonblocking,
            &mut [],
            &mut l.data,
            want,
            &mut self.buf[..TAIL],
        )?;
        self.start = 0;
        self.end = n - (l.data.len() - before);
        self.received(n, fd, on_fd);
        Ok(n)
    }

    /// The read-ahead is empty and the frame before was large: reads with
    /// one system call into a header slot, `reuse`'s spare capacity (the
    /// payload, when it is large, lands where the caller wants it: no copy)
    /// and the read-ahead ([`TAIL`] bytes). A large frame complete in
    /// `reuse` is yielded, one longer continues in it (grown once its length
    /// is checked); bytes past its end, and anything else (a small frame, a
    /// header not yet whole or refused), go back to the read-ahead in stream
    /// order for the main loop.
    pub(super) fn scatter(
        &mut self,
        src: Source<'_>,
        max: u64,
        reuse: &mut Vec<u8>,
        on_fd: &mut dyn FnMut(OwnedFd, u64),
    ) -> Result<Step> {
        debug_assert!(self.start == 0 && self.end == 0 && self.large.is_none());
        self.ensure_buf();
        reuse.clear();
        let mut head = [0u8; HEAD];
        // No frame is longer than its header and `max` bytes: what follows
        // is better read into the read-ahead.
        let limit = usize::try_from(max.saturating_add(MAX_HEADER as u64)).unwrap_or(usize::MAX);
        let (n, fd) = match conn_io::read_scatter(
            src.fd,
            src.kind,
            src.nonblocking,
            &mut head,
            reuse,
            limit,
            &mut self.buf[..TAIL],
        ) {
            Ok((0, _)) | Err(Errno::CONNRESET) => return Err(Error::Closed),
            Ok(r) => r,
            Err(Errno::AGAIN) => return Ok(Step::Again),
            Err(e) => return Err(e.into()),
        };
        self.received(n, fd, on_fd);
        // Bytes in the read-ahead, `buf[..in_tail]`: only once `reuse` is full.
        let in_tail = n - n.min(HEAD) - reuse.len();
        if n >= HEAD {
            let mut h = [0u8; MAX_HEADER];
            h[..HEAD].copy_from_slice(&head);
            let k = reuse.len().min(MAX_HEADER - HEAD);
            h[HEAD..HEAD + k].copy_from_slice(&reuse[..k]);
            if let Ok(Some((header_len, plen))) = checked_header(&h[..HEAD + k], max) {
                if self.is_large(header_len, plen) {
                    // The long header's last 8 bytes came into `reuse`.
                    reuse.drain(..header_len - HEAD);
                    return self.scattered_large(plen, max, in_tail, reuse);
                }
            }
        }
        self.put_back(&[&head[..n.min(HEAD)], reuse], in_tail);
        reuse.clear();
        Ok(Step::More)
    }

    /// After [`scatter`](Self::scatter): `reuse` starts with the payload of
    /// a large frame of `plen` bytes, the read-ahead holds `in_tail` bytes
    /// that came after `reuse`'s.
    fn scattered_large(
        &mut self,
        plen: usize,
        max: u64,
        in_tail: usize,
        reuse: &mut Vec<u8>,
    ) -> Result<Step> {
        let got = reuse.len();
        if got >= plen {
            // Whole: what follows it belongs to the next frames.
            self.put_back(&[&reuse[plen..]], in_tail);
            reuse.truncate(plen);
            self.last_own = Some(plen);
            return Ok(Step::Frame(Frame::Own(std::mem::take(reuse))));
        }
        // `reuse` was too short (so it is full): the rest of the payload
        // follows, the first of it in the read-ahead.
        let mut data = std::mem::take(reuse);
        reserve(&mut data, plen, max)?;
        let take = in_tail.min(plen - got);
        data.extend_from_slice(&self.buf[..take]);
        self.start = take;
        self.end = in_tail;
        if data.len() == plen {
            self.last_own = Some(plen);
            return Ok(Step::Frame(Frame::Own(data)));
        }
        self.large = Some(Large { data, len: plen });
        Ok(Step::More)
    }

    /// The read-ahead (empty but for `in_tail` bytes at its front) becomes
    /// `front`'s bytes in order, then those `in_tail` bytes; it grows if it
    /// must (and shrinks back once empty).
    fn put_back(&mut self, front: &[&[u8]], in_tail: usize) {
        let t: usize = front.iter().map(|s| s.len()).sum();
        if self.buf.len() < t + in_tail {
            self.buf.resize(t + in_tail, 0);
        }
        self.buf.copy_within(..in_tail, t);
        let mut at = 0;
        for s in front {
            self.buf[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        }
        self.start = 0;
        self.end = t + in_tail;
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode_header;
    use super::*;
    use crate::sys::conn_io::Kind;
    use proptest::prelude::*;
    use std::os::fd::{AsFd, BorrowedFd};

    /// CPython's framing of `payloads`; `long` frames take the 12-byte
    /// header whatever their length (a valid header CPython reads too).
    fn encode(frames: &[(Vec<u8>, bool)]) -> Vec<u8> {
        encode_bounds(frames).0
    }

    /// [`encode`], and where each frame ends.
    fn encode_bounds(frames: &[(Vec<u8>, bool)]) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut bounds = Vec::new();
        for (p, long) in frames {
            if *long {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                out.extend_from_slice(&(p.len() as u64).to_be_bytes());
            } else {
                let (h, n) = encode_header(p.len() as u64);
                out.extend_from_slice(&h[..n]);
            }
            out.extend_from_slice(p);
            bounds.push(out.len());
        }
        (out, bounds)
    }

    /// A non-blocking descriptor pair of `kind`: (read end, write end).
    fn pair(kind: Kind) -> (OwnedFd, OwnedFd) {
        match kind {
            Kind::Pipe => {
                use rustix::pipe::{pipe_with, PipeFlags};
                pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).unwrap()
            }
            _ => conn_io::stream_pair().unwrap(),
        }
    }

    fn write_some(kind: Kind, fd: BorrowedFd<'_>, bytes: &[u8]) -> usize {
        let r = if kind == Kind::Pipe {
            rustix::io::write(fd, bytes)
        } else {
            rustix::net::send(fd, bytes, rustix::net::SendFlags::DONTWAIT)
        };
        match r {
            Ok(n) => n,
            Err(Errno::AGAIN) => 0,
            Err(e) => panic!("write: {e}"),
        }
    }

    /// Everything `r` yields now, reading as the pool does (non-blocking,
    /// each large payload's buffer reused for the next read), or, if
    /// `hinted`, as `Connection::recv_bytes` does (a fresh buffer of the
    /// size [`FrameReader::scatter_hint`] gives for each frame, the yielded
    /// one kept by the caller).
    fn drain(
        r: &mut FrameReader,
        (kind, fd): (Kind, BorrowedFd<'_>),
        max: u64,
        (reuse, hinted): (&mut Vec<u8>, bool),
        got: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        let src = Source {
            fd,
            kind,
            nonblocking: true,
        };
        loop {
            if hinted {
                *reuse = Vec::with_capacity(r.scatter_hint().unwrap_or(0));
            }
            let Some(f) = r.next(src, max, reuse, &mut || Ok(()), &mut |_, _| {})? else {
                return Ok(());
            };
            got.push(r.payload(&f).to_vec());
            if let Frame::Own(v) = f {
                if !hinted {
                    *reuse = v;
                }
            }
        }
    }

    /// Writes `bytes` in pieces of `chunks` (cycled; 0 is "to the next of
    /// `bounds`", frame ends), draining the reader after each; then closes
    /// the writer and drains to the end.
    fn feed(
        r: &mut FrameReader,
        kind: Kind,
        (bytes, bounds): (&[u8], &[usize]),
        chunks: &[usize],
        reuse: (&mut Vec<u8>, bool),
    ) -> (Vec<Vec<u8>>, Result<()>) {
        let (reuse, hinted) = reuse;
        let (a, b) = pair(kind);
        let mut got = Vec::new();
        let mut sent = 0;
        for &c in chunks.iter().cycle() {
            if sent == bytes.len() {
                break;
            }
            let to = match c {
                0 => bounds
                    .iter()
                    .copied()
                    .find(|&e| e > sent)
                    .unwrap_or(usize::MAX),
                c => sent.saturating_add(c),
            };
            let end = to.min(bytes.len());
            sent += write_some(kind, b.as_fd(), &bytes[sent..end]);
            if let Err(e) = drain(r, (kind, a.as_fd()), 1 << 20, (reuse, hinted), &mut got) {
                return (got, Err(e));
            }
        }
        drop(b);
        let end = drain(r, (kind, a.as_fd()), 1 << 20, (reuse, hinted), &mut got);
        (got, end)
    }

    fn frames() -> impl Strategy<Value = Vec<(Vec<u8>, bool)>> {
        let len = prop_oneof![0usize..24, 24usize..200, 200usize..3000];
        let frame = (len, any::<u8>(), prop::bool::weighted(0.2))
            .prop_map(|(n, seed, long)| ((0..n).map(|i| seed ^ (i as u8)).collect(), long));
        prop::collection::vec(frame, 0..12)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Random frames (small and large, short and long headers), written
        /// in random pieces (some ending with a frame), read non-blockingly
        /// through the scatter path with a reused buffer of random size, or
        /// a fresh one of the hinted size for each frame: exactly the frames
        /// sent, in order, then the clean end of the stream.
        #[test]
        fn scatter_reads_yield_exactly_the_frames_sent(
            frames in frames(),
            chunks in prop::collection::vec(
                prop_oneof![Just(0usize), 1usize..6, 6usize..80, 80usize..4000], 1..6),
            reuse_cap in prop_oneof![Just(0usize), 16usize..64, 64usize..5000],
            pipe in any::<bool>(),
            hinted in any::<bool>(),
        ) {
            let kind = if pipe { Kind::Pipe } else { Kind::Socket };
            let (bytes, bounds) = encode_bounds(&frames);
            // Small sizes, so that every path is taken: payloads of 16
            // bytes and more are large.
            let mut r = FrameReader::new(64, 16);
            let mut reuse = Vec::with_capacity(reuse_cap);
            let (got, end) =
                feed(&mut r, kind, (&bytes, &bounds), &chunks, (&mut reuse, hinted));
            prop_assert!(matches!(end, Err(Error::Closed)), "{end:?}");
            let want: Vec<Vec<u8>> = frames.into_iter().map(|(p, _)| p).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(r.position(), bytes.len() as u64);
            prop_assert!(!r.holds_data());
        }
    }

    /// A large frame, so that the next read is a scatter read.
    fn prime() -> Vec<u8> {
        encode(&[(vec![9; 100], false)])
    }

    /// Feeds the primer, then `frames` in one piece; checks the stream then
    /// ends cleanly and returns the frames that came after the primer.
    fn after_primer(
        r: &mut FrameReader,
        kind: Kind,
        frames: &[(Vec<u8>, bool)],
        reuse: &mut Vec<u8>,
    ) -> Vec<Vec<u8>> {
        let mut bytes = prime();
        let first = bytes.len();
        bytes.extend(encode(frames));
        let (mut got, end) = feed(r, kind, (&bytes, &[]), &[first, usize::MAX], (reuse, false));
        assert!(matches!(end, Err(Error::Closed)), "{end:?}");
        assert_eq!(got.first(), Some(&vec![9; 100]));
        got.remove(0);
        got
    }

    #[test]
    fn small_frames_after_a_large_one_come_back_in_order() {
        for kind in [Kind::Socket, Kind::Pipe] {
            let mut r = FrameReader::new(64, 16);
            let mut reuse = Vec::with_capacity(4096);
            let mut frames = vec![(vec![1; 40], false)];
            // Many small frames read in one scatter read: they fill
            // `reuse` and spill past the read-ahead's size.
            frames.extend((0..300).map(|i| (vec![i as u8; i % 7], i % 5 == 0)));
            let got = after_primer(&mut r, kind, &frames, &mut reuse);
            assert_eq!(got.len(), frames.len());
            for (g, (w, _)) in got.iter().zip(&frames) {
                assert_eq!(g, w);
            }
            // The grown read-ahead is back to its size once empty.
            assert!(r.buf.len() <= 64, "{}", r.buf.len());
        }
    }

    #[test]
    fn a_frame_longer_than_the_reused_buffer_continues_in_it() {
        // 300 bytes: the rest of it follows in later reads; 105: it ends
        // in the read-ahead, the next frames' first bytes after it.
        for (kind, len) in [(Kind::Socket, 300), (Kind::Pipe, 300), (Kind::Socket, 105)] {
            let mut r = FrameReader::new(64, 16);
            let mut reuse = Vec::new();
            let big: Vec<u8> = (0..len).map(|i: u32| i as u8).collect();
            let frames = [(big, false), (vec![7; 5], false), (vec![], false)];
            // The primer leaves a buffer of 100 bytes; the next frame comes
            // whole, longer, and its next frames with it.
            let got = after_primer(&mut r, kind, &frames, &mut reuse);
            assert_eq!(got, frames.map(|(p, _)| p));
        }
    }

    #[test]
    fn an_oversized_length_after_a_large_frame_allocates_nothing() {
        let (a, b) = pair(Kind::Socket);
        let mut r = FrameReader::new(64, 16);
        let mut reuse = Vec::with_capacity(1 << 16);
        let send = |bytes: &[u8]| {
            conn_io::write_vectored(
                b.as_fd(),
                Kind::Socket,
                false,
                &[std::io::IoSlice::new(bytes)],
                &[],
            )
            .unwrap()
        };
        send(&prime());
        let mut got = Vec::new();
        let src = (Kind::Socket, a.as_fd());
        drain(&mut r, src, 1000, (&mut reuse, false), &mut got).unwrap();
        assert_eq!(got.len(), 1);
        let cap = reuse.capacity();
        let mut bytes = vec![0x7f, 0xff, 0xff, 0xff];
        bytes.extend_from_slice(&[5; 3000]);
        send(&bytes);
        let e = drain(&mut r, src, 1000, (&mut reuse, false), &mut got).unwrap_err();
        assert!(
            matches!(
                e,
                Error::MessageTooLarge {
                    len: 0x7fff_ffff,
                    max: 1000
                }
            ),
            "{e:?}"
        );
        assert!(r.large.is_none());
        assert_eq!(reuse.capacity(), cap);
    }
}
