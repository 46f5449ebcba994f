//! [`FrameReader`]: frames out of a byte stream, in blocking or non-blocking mode.

use super::{checked_header, encode_header, parse_header, Header, MAX_HEADER};
use crate::error::{Error, Result};
use crate::sys::conn_io::{self, Kind};
use rustix::io::Errno;
use std::ops::Range;
use std::os::fd::{BorrowedFd, OwnedFd};

mod scatter;

use scatter::Step;

/// A frame the reader yields.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A payload lying in the reader's read-ahead buffer (see
    /// [`FrameReader::payload`]); valid until the reader is used again.
    Buffered(Range<usize>),
    /// A large payload, read into a buffer of its own, now the caller's.
    Own(Vec<u8>),
}

/// A large payload being read into its own buffer.
#[derive(Debug)]
struct Large {
    data: Vec<u8>,
    len: usize,
}

/// Reads frames from a descriptor (see the [module docs](super)).
///
/// Payloads shorter than `direct_min` whose frame fits the read-ahead buffer
/// are yielded where they lie; the others go to a buffer of their own (the
/// caller's `reuse`, grown to their size once the header has been checked
/// against the maximum), read straight into, together with the next
/// frame's header: one read per large frame ([`scatter`]). The state
/// survives a timeout or an empty non-blocking read: the next call resumes.
#[derive(Debug)]
pub(crate) struct FrameReader {
    /// The read-ahead buffer (allocated at the first read), `buf[start..end]`
    /// received and not consumed.
    buf: Vec<u8>,
    cap: usize,
    direct_min: usize,
    start: usize,
    end: usize,
    /// Every byte ever received.
    pos: u64,
    /// A large payload in progress; the read-ahead is empty meanwhile.
    large: Option<Large>,
    /// The length of the frame yielded last if it was large (its own
    /// buffer): the next one probably is too, see [`FrameReader::scatter`].
    last_own: Option<usize>,
}

/// Why the stream ended in the middle of a frame.
pub(crate) fn truncated() -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "got end of file during message",
    ))
}

/// Reads one frame from `r` (blocking), never past its end: the payload of
/// at most `max` bytes, allocated once the header has been checked. For
/// one-shot messages read through a [`Read`](std::io::Read) that does more
/// than read (the bootstrap's keeps the descriptors that come with it).
///
/// # Errors
///
/// As [`FrameReader::next`]: [`Error::Closed`] before any byte, an I/O
/// error (`UnexpectedEof`) within the frame, [`Error::MessageTooLarge`],
/// [`Error::Codec`] for a negative length other than `-1`.
pub(crate) fn read_frame_from(r: &mut impl std::io::Read, max: u64) -> Result<Vec<u8>> {
    let mut head = [0u8; MAX_HEADER];
    let mut have = 0;
    let (header_len, plen) = loop {
        if let Some(h) = checked_header(&head[..have], max)? {
            break h;
        }
        // 4 bytes, then the 8 of a long header: never past the header.
        let want = if have < 4 { 4 } else { MAX_HEADER };
        match r.read(&mut head[have..want]) {
            Ok(0) if have == 0 => return Err(Error::Closed),
            Ok(0) => return Err(truncated()),
            Ok(n) => have += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    };
    debug_assert_eq!(have, header_len);
    let mut data = Vec::new();
    data.try_reserve_exact(plen)
        .map_err(|_| Error::MessageTooLarge {
            len: plen as u64,
            max,
        })?;
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut *r, plen as u64), &mut data)?;
    if data.len() < plen {
        return Err(truncated());
    }
    Ok(data)
}

/// How to read: the descriptor, what it is, whether a read may block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub(crate) fd: BorrowedFd<'a>,
    pub(crate) kind: Kind,
    pub(crate) nonblocking: bool,
}

impl FrameReader {
    /// A reader with a read-ahead buffer of `cap` bytes (at least
    /// [`MAX_HEADER`]) that reads payloads of `direct_min` bytes and more
    /// into buffers of their own.
    pub(crate) fn new(cap: usize, direct_min: usize) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            cap: cap.max(MAX_HEADER),
            direct_min,
            start: 0,
            end: 0,
            pos: 0,
            large: None,
            last_own: None,
        }
    }

    /// Bytes received and not yet yielded as (part of) a frame.
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start + self.large.as_ref().map_or(0, |l| l.data.len())
    }

    /// Whether a frame is partly or wholly received.
    pub(crate) fn holds_data(&self) -> bool {
        self.end > self.start || self.large.is_some()
    }

    /// The length of the large frame yielded last, if the next read will
    /// be a scatter read given a buffer of at least the reader's
    /// `direct_min` bytes (nothing is buffered): the size to offer it, since
    /// large frames tend to follow each other at one size. `None` when the
    /// next read goes to the read-ahead whatever the buffer.
    pub(crate) fn scatter_hint(&self) -> Option<usize> {
        if self.start == self.end && self.large.is_none() {
            self.last_own.map(|n| n.max(self.direct_min))
        } else {
            None
        }
    }

    /// Every byte received so far.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// The payload of `frame`.
    pub(crate) fn payload<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        match frame {
            Frame::Buffered(r) => &self.buf[r.clone()],
            Frame::Own(v) => v,
        }
    }

    /// The payload of a [`Frame::Buffered`] frame.
    pub(crate) fn buffered_payload(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// The payload bytes received so far of a frame whose header is in but
    /// whose payload is not complete (what the next call continues), so a
    /// caller can refuse a frame by its first bytes without waiting for all.
    pub(crate) fn partial_payload(&self) -> Option<&[u8]> {
        if let Some(l) = &self.large {
            return Some(&l.data);
        }
        match parse_header(&self.buf[self.start..self.end]) {
            Ok(Header::Complete { header_len, .. }) => {
                Some(&self.buf[self.start + header_len..self.end])
            }
            _ => None,
        }
    }

    /// The stream position just past the frame yielded last (`frame`): a
    /// buffered one ends where its payload does; a large one where the
    /// read-ahead (what was read past it) begins.
    pub(crate) fn end_of(&self, frame: &Frame) -> u64 {
        match frame {
            Frame::Buffered(r) => self.pos - (self.end.max(r.end) - r.end) as u64,
            Frame::Own(_) => self.pos - (self.end - self.start) as u64,
        }
    }

    /// The received bytes not yielded as frames, as they came (a large
    /// frame in progress with its header): what remains of the stream.
    pub(crate) fn take_unconsumed(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(l) = self.large.take() {
            let (h, n) = encode_header(l.len as u64);
            out.extend_from_slice(&h[..n]);
            out.extend_from_slice(&l.data);
        } else {
            out.extend_from_slice(&self.buf[self.start..self.end]);
        }
        self.start = 0;
        self.end = 0;
        out
    }

    /// The next frame.
    ///
    /// `before_read` runs before every read (a deadline's wait: its error
    /// ends the call, the state kept); `on_fd` receives each descriptor
    /// passed with the bytes ([`Kind::SocketFds`]) and the stream position of
    /// the last byte that came with it. A large payload goes into `reuse`'s
    /// allocation (it is cleared first); after a large frame, when nothing
    /// is buffered, the next read goes straight into `reuse`'s spare capacity
    /// (see [`scatter`](Self::scatter)).
    ///
    /// Returns `Ok(None)` only in non-blocking mode, when nothing more can
    /// be read now.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] at the end of the stream between frames; an I/O
    /// error (`UnexpectedEof`) at the end of the stream within a frame (the
    /// bytes so far stay, see [`take_unconsumed`](Self::take_unconsumed));
    /// [`Error::MessageTooLarge`] for a length above `max`, before anything
    /// of that size is allocated; [`Error::Codec`] for a negative length
    /// other than `-1`. After any but a `before_read` error, the stream's
    /// place is lost: the caller stops reading.
    pub(crate) fn next(
        &mut self,
        src: Source<'_>,
        max: u64,
        reuse: &mut Vec<u8>,
        before_read: &mut dyn FnMut() -> Result<()>,
        on_fd: &mut dyn FnMut(OwnedFd, u64),
    ) -> Result<Option<Frame>> {
        loop {
            if let Some(l) = &self.large {
                if l.data.len() == l.len {
                    let l = self.large.take().expect("checked");
                    self.last_own = Some(l.len);
                    return Ok(Some(Frame::Own(l.data)));
                }
                before_read()?;
                match self.read_large(src, on_fd) {
                    Ok(0) | Err(Errno::CONNRESET) => return Err(truncated()),
                    Ok(_) => {}
                    Err(Errno::AGAIN) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            let avail = self.end - self.start;
            match checked_header(&self.buf[self.start..self.end], max)? {
                Some((header_len, plen)) => {
                    let total = header_len.saturating_add(plen);
                    if avail >= total {
                        let s = self.start + header_len;
                        self.start += total;
                        self.last_own = None;
                        return Ok(Some(Frame::Buffered(s..s + plen)));
                    }
                    if self.is_large(header_len, plen) {
                        self.begin_large(header_len, plen, max, reuse)?;
                        continue;
                    }
                    if self.start + total > self.cap {
                        self.compact();
                    }
                }
                None => {
                    if avail == 0 {
                        self.start = 0;
                        self.end = 0;
                        if self.last_own.is_some() && reuse.capacity() >= self.direct_min.max(1) {
                            before_read()?;
                            match self.scatter(src, max, reuse, on_fd)? {
                                Step::Frame(f) => return Ok(Some(f)),
                                Step::Again => return Ok(None),
                                Step::More => continue,
                            }
                        }
                        if self.buf.len() > self.cap {
                            // Grown by a scatter read: back to its size.
                            self.buf.truncate(self.cap);
                            self.buf.shrink_to_fit();
                        }
                    } else if self.start + MAX_HEADER > self.cap {
                        self.compact();
                    }
                }
            }
            before_read()?;
            match self.fill(src, on_fd) {
                Ok(0) | Err(Errno::CONNRESET) => {
                    return Err(if self.end == self.start {
                        Error::Closed
                    } else {
                        truncated()
                    })
                }
                Ok(_) => {}
                Err(Errno::AGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether a payload of `plen` bytes after a `header_len`-byte header
    /// goes to a buffer of its own.
    fn is_large(&self, header_len: usize, plen: usize) -> bool {
        plen >= self.direct_min || header_len.saturating_add(plen) > self.cap
    }

    /// A large payload of `plen` bytes starts after the `header_len`-byte
    /// header at `start`: moves what is buffered of it to its own buffer.
    fn begin_large(
        &mut self,
        header_len: usize,
        plen: usize,
        max: u64,
        reuse: &mut Vec<u8>,
    ) -> Result<()> {
        let mut data = std::mem::take(reuse);
        data.clear();
        reserve(&mut data, plen, max)?;
        data.extend_from_slice(&self.buf[self.start + header_len..self.end]);
        self.start = 0;
        self.end = 0;
        self.large = Some(Large { data, len: plen });
        Ok(())
    }

    /// Zeroed once: reads into the read-ahead go through `recvmsg`, which
    /// takes initialised memory.
    fn ensure_buf(&mut self) {
        if self.buf.len() < self.cap {
            self.buf.resize(self.cap, 0);
        }
    }

    /// `n` bytes came in, and `fd` with the last of them.
    fn received(&mut self, n: usize, fd: Option<OwnedFd>, on_fd: &mut dyn FnMut(OwnedFd, u64)) {
        self.pos += n as u64;
        if let Some(fd) = fd {
            on_fd(fd, self.pos.saturating_sub(1));
        }
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// One read into the read-ahead buffer's free end.
    fn fill(
        &mut self,
        src: Source<'_>,
        on_fd: &mut dyn FnMut(OwnedFd, u64),
    ) -> std::result::Result<usize, Errno> {
        self.ensure_buf();
        let (n, fd) = conn_io::read_scatter(
            src.fd,
            src.kind,
            src.nonblocking,
            &mut [],
            &mut Vec::new(),
            0,
            &mut self.buf[self.end..],
        )?;
        self.end += n;
        self.received(n, fd, on_fd);
        Ok(n)
    }
}

/// Makes room in `data` for a payload of `plen` bytes (already checked
/// against `max`).
fn reserve(data: &mut Vec<u8>, plen: usize, max: u64) -> Result<()> {
    data.try_reserve_exact(plen.saturating_sub(data.len()))
        .map_err(|_| Error::MessageTooLarge {
            len: plen as u64,
            max,
        })
}

#[cfg(test)]
mod tests {
    use super::super::write_frame;
    use super::*;
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        conn_io::stream_pair().unwrap()
    }

    fn next(r: &mut FrameReader, fd: &OwnedFd, max: u64) -> Result<Option<Vec<u8>>> {
        let src = Source {
            fd: fd.as_fd(),
            kind: Kind::Socket,
            nonblocking: true,
        };
        let f = r.next(src, max, &mut Vec::new(), &mut || Ok(()), &mut |_, _| {})?;
        Ok(f.map(|f| r.payload(&f).to_vec()))
    }

    #[test]
    fn small_and_large_frames_in_one_stream() {
        let (a, b) = pair();
        let big = vec![7u8; 300];
        write_frame(b.as_fd(), Kind::Socket, b"abc", &[]).unwrap();
        write_frame(b.as_fd(), Kind::Socket, &big, &[]).unwrap();
        write_frame(b.as_fd(), Kind::Socket, b"", &[]).unwrap();
        let mut r = FrameReader::new(64, 100);
        assert_eq!(next(&mut r, &a, 1000).unwrap().unwrap(), b"abc");
        assert_eq!(next(&mut r, &a, 1000).unwrap().unwrap(), big);
        assert_eq!(next(&mut r, &a, 1000).unwrap().unwrap(), b"");
        assert_eq!(next(&mut r, &a, 1000).unwrap(), None);
        assert_eq!(r.position(), 4 + 3 + 4 + 300 + 4);
        drop(b);
        assert!(matches!(next(&mut r, &a, 1000), Err(Error::Closed)));
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let (a, b) = pair();
        rustix::net::send(
            &b,
            &[0x7f, 0xff, 0xff, 0xff, 1, 2],
            rustix::net::SendFlags::empty(),
        )
        .unwrap();
        let mut r = FrameReader::new(64, 16);
        assert!(matches!(
            next(&mut r, &a, 1 << 20),
            Err(Error::MessageTooLarge {
                len: 0x7fff_ffff,
                ..
            })
        ));
        assert!(r.large.is_none());
    }

    #[test]
    fn a_frame_cut_short_keeps_its_bytes() {
        let (a, b) = pair();
        let (h, n) = encode_header(50);
        let mut s = h[..n].to_vec();
        s.extend_from_slice(&[1; 20]);
        rustix::net::send(&b, &s, rustix::net::SendFlags::empty()).unwrap();
        drop(b);
        let mut r = FrameReader::new(16, 8);
        let e = next(&mut r, &a, 100).unwrap_err();
        assert!(matches!(e, Error::Io(ref e) if e.kind() == std::io::ErrorKind::UnexpectedEof));
        assert_eq!(r.take_unconsumed(), s);
    }
}
