//! Writing frames: [`write_frame`] (blocking) and [`FrameWriter`] (queued,
//! flushed without blocking).

use super::encode_header;
use crate::sys::conn_io::{self, Kind};
use rustix::io::Errno;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

/// Most pieces one vectored write takes.
const MAX_SLICES: usize = 8;

/// Frames up to this size are copied together into one buffer.
const SMALL: usize = 64 << 10;

/// A coalescing buffer takes frames until it holds this much.
const MERGED_MAX: usize = 256 << 10;

/// Writes every byte of `parts`, in order, blocking (`fds` ride on the
/// first write, which is at least one byte). `EPIPE` is returned, never
/// raised as `SIGPIPE` on a socket.
pub(crate) fn write_all(
    fd: BorrowedFd<'_>,
    kind: Kind,
    parts: &[&[u8]],
    fds: &[BorrowedFd<'_>],
) -> Result<(), Errno> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0usize;
    let mut fds = fds;
    while done < total || !fds.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let k = gather(parts.iter().copied(), done, &mut slices);
        let n = conn_io::write_vectored(fd, kind, false, &slices[..k], fds)?;
        fds = &[];
        done += n;
    }
    Ok(())
}

/// Fills `slices` with the bytes of `parts` after the first `skip`; returns
/// how many it filled.
fn gather<'a>(
    parts: impl Iterator<Item = &'a [u8]>,
    mut skip: usize,
    slices: &mut [IoSlice<'a>; MAX_SLICES],
) -> usize {
    let mut k = 0;
    for p in parts {
        if k == MAX_SLICES {
            break;
        }
        if skip >= p.len() {
            skip -= p.len();
            continue;
        }
        slices[k] = IoSlice::new(&p[skip..]);
        skip = 0;
        k += 1;
    }
    k
}

/// Sends `payload` as one frame, blocking: header and payload in one system
/// call whenever the kernel takes it all.
pub(crate) fn write_frame(
    fd: BorrowedFd<'_>,
    kind: Kind,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), Errno> {
    let (h, hl) = encode_header(payload.len() as u64);
    if payload.len() <= SMALL_FRAME {
        // A small frame goes out as one piece: copying it is cheaper than
        // having the kernel gather two.
        let mut one = [0u8; 4 + SMALL_FRAME];
        one[..4].copy_from_slice(&h[..4]);
        one[4..4 + payload.len()].copy_from_slice(payload);
        return write_all(fd, kind, &[&one[..4 + payload.len()]], fds);
    }
    write_all(fd, kind, &[&h[..hl], payload], fds)
}

/// The largest payload [`write_frame`] copies behind its header to write
/// one piece.
const SMALL_FRAME: usize = 512;

/// A piece of the output queue.
#[derive(Debug)]
enum OutBuf {
    /// Small frames copied together (one write for many).
    Merged(Vec<u8>),
    /// A large frame, shared with whoever keeps it (no copy).
    Shared(Arc<Vec<u8>>),
}

impl OutBuf {
    fn as_slice(&self) -> &[u8] {
        match self {
            OutBuf::Merged(v) => v,
            OutBuf::Shared(f) => f,
        }
    }
}

/// Complete frames waiting to be written, flushed without blocking.
#[derive(Debug, Default)]
pub(crate) struct FrameWriter {
    out: VecDeque<OutBuf>,
    /// Bytes of `out[0]` already written.
    out_pos: usize,
    unsent: usize,
}

impl FrameWriter {
    /// Bytes queued and not written yet.
    pub(crate) fn unsent(&self) -> usize {
        self.unsent
    }

    /// Queues a complete frame (header included): a small one is copied
    /// into the coalescing buffer, a large one is shared.
    pub(crate) fn queue(&mut self, frame: &Arc<Vec<u8>>) {
        if frame.len() > SMALL {
            self.unsent += frame.len();
            self.out.push_back(OutBuf::Shared(frame.clone()));
            return;
        }
        self.queue_small(frame);
    }

    /// Queues the rest of a frame whose beginning was queued last (the
    /// frame's header counts it): a large payload, shared, never copied.
    pub(crate) fn queue_rest(&mut self, rest: &Arc<Vec<u8>>) {
        self.unsent += rest.len();
        self.out.push_back(OutBuf::Shared(rest.clone()));
    }

    /// Queues the bytes of one or more complete small frames (copied).
    pub(crate) fn queue_small(&mut self, frames: &[u8]) {
        self.unsent += frames.len();
        match self.out.back_mut() {
            // The front may be partly written: appending to it is fine
            // (its written prefix stays as it is).
            Some(OutBuf::Merged(back)) if back.len() + frames.len() <= MERGED_MAX => {
                back.extend_from_slice(frames)
            }
            _ => self.out.push_back(OutBuf::Merged(frames.to_vec())),
        }
    }

    /// Writes as much as `fd` takes now, several queued pieces per call.
    /// `Ok(false)` if the peer is gone (`EPIPE`, `ECONNRESET`): the rest is
    /// dropped.
    pub(crate) fn flush(&mut self, fd: BorrowedFd<'_>, kind: Kind) -> Result<bool, Errno> {
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let k = gather(
                self.out.iter().map(OutBuf::as_slice),
                self.out_pos,
                &mut slices,
            );
            let wanted: usize = slices[..k].iter().map(|s| s.len()).sum();
            let n = match conn_io::write_vectored(fd, kind, true, &slices[..k], &[]) {
                Ok(n) => n,
                Err(Errno::AGAIN) => return Ok(true),
                Err(Errno::PIPE) | Err(Errno::CONNRESET) => {
                    self.out.clear();
                    self.out_pos = 0;
                    self.unsent = 0;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            };
            self.unsent -= n;
            let short = n < wanted;
            let mut n = n + self.out_pos;
            while let Some(front) = self.out.front() {
                let len = front.as_slice().len();
                if n < len {
                    break;
                }
                n -= len;
                self.out.pop_front();
            }
            self.out_pos = n;
            if short {
                // The descriptor is full for now.
                return Ok(true);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FrameReader, Source};
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn queued_frames_arrive_whole_and_in_order() {
        let (a, b) = conn_io::stream_pair().unwrap();
        let mut w = FrameWriter::default();
        let mut sent = Vec::new();
        for i in 0..200usize {
            let payload = vec![i as u8; (i * 997) % 150_000];
            let (h, n) = encode_header(payload.len() as u64);
            let mut f = h[..n].to_vec();
            f.extend_from_slice(&payload);
            w.queue(&Arc::new(f));
            sent.push(payload);
        }
        let mut r = FrameReader::new(4096, 1024);
        let mut got = Vec::new();
        while got.len() < sent.len() {
            assert!(w.flush(b.as_fd(), Kind::Socket).unwrap());
            let src = Source {
                fd: a.as_fd(),
                kind: Kind::Socket,
                nonblocking: true,
            };
            while let Some(f) = r
                .next(
                    src,
                    1 << 20,
                    &mut Vec::new(),
                    &mut || Ok(()),
                    &mut |_, _| {},
                )
                .unwrap()
            {
                got.push(r.payload(&f).to_vec());
            }
        }
        assert_eq!(w.unsent(), 0);
        assert!(got == sent);
        drop(a);
        let (h, n) = encode_header(3);
        let mut f = h[..n].to_vec();
        f.extend_from_slice(b"abc");
        w.queue(&Arc::new(f));
        assert!(!w.flush(b.as_fd(), Kind::Socket).unwrap());
    }
}
