//! `Connection`: one end of a pipe or socket carrying framed messages.

use super::framing::{self, Header, DEFAULT_MAX_MESSAGE_SIZE, MAX_HEADER, SHORT_MAX};
use super::reader::Reader;
use crate::codec;
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::{self, conn_io};
use rustix::io::Errno;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt;
use std::io::IoSlice;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Size of the read-ahead buffer: a small message and its header arrive in
/// one `read`; larger payloads are read straight into their destination.
const READ_BUF: usize = 16 * 1024;

/// Typed messages up to this encoded size are written from the connection's
/// reusable scratch buffer; the buffer is released when a larger one was used.
const KEEP_SCRATCH: usize = 1 << 20;

/// The payload of the frame that announces a connection sent with
/// [`Connection::send_connection`]; the descriptor rides on the same write.
const FD_MARKER: &[u8] = b"\0multiproc:fd\0";

/// One end of a [`Pipe`](super::Pipe), or a socket from
/// [`Listener::accept`](super::Listener::accept) / [`Client`](super::Client):
/// Python's `multiprocessing.connection.Connection`.
///
/// Messages are framed exactly as CPython frames them, so raw
/// [`send_bytes`](Self::send_bytes) / [`recv_bytes`](Self::recv_bytes) talk to
/// a Python peer unchanged. Typed [`send`](Self::send) / [`recv`](Self::recv)
/// use the crate's [codec](crate::codec) (for multiproc peers); with the
/// `pickle` feature, `send_pickle` / `recv_pickle` speak Python's `pickle`.
///
/// All methods take `&self`: a connection is `Send + Sync`; concurrent senders
/// never interleave frames, and one thread may send while another receives.
///
/// A connection reaches a child process as a [`Process`](crate::Process)
/// argument ([`Handoff`]) or over another connection
/// ([`send_connection`](Self::send_connection)). Dropping it closes the
/// descriptor; when every copy of one end is closed, `recv` at the other end
/// returns [`Error::Closed`] (Python's `EOFError`).
///
/// ```
/// use multiproc::connection::Pipe;
///
/// let (a, b) = Pipe::duplex()?;
/// a.send(&(1u32, "two".to_string()))?;
/// assert_eq!(b.recv::<(u32, String)>()?, (1, "two".to_string()));
/// b.send_bytes(b"raw")?;
/// assert_eq!(a.recv_bytes()?, b"raw");
/// drop(b);
/// assert!(matches!(a.recv_bytes(), Err(multiproc::Error::Closed)));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Connection {
    fd: OwnedFd,
    readable: bool,
    writable: bool,
    socket: bool,
    max_message_size: AtomicU64,
    /// Set after a protocol error left the stream at an unknown position.
    broken: AtomicBool,
    reader: Mutex<Reader>,
    writer: Mutex<Vec<u8>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn truncated() -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "got end of file during message",
    ))
}

fn write_error(e: Errno) -> Error {
    match e {
        Errno::PIPE | Errno::CONNRESET => Error::Closed,
        e => e.into(),
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd.as_raw_fd())
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Wraps a descriptor. `socket` selects `sendmsg`/`recvmsg` (needed for
    /// descriptor passing and for `MSG_NOSIGNAL`).
    pub(crate) fn from_parts(
        fd: OwnedFd,
        readable: bool,
        writable: bool,
        socket: bool,
    ) -> Connection {
        Connection {
            fd,
            readable,
            writable,
            socket,
            max_message_size: AtomicU64::new(DEFAULT_MAX_MESSAGE_SIZE),
            broken: AtomicBool::new(false),
            reader: Mutex::new(Reader::default()),
            writer: Mutex::new(Vec::new()),
        }
    }

    /// Wraps a connected stream socket (Unix or TCP), readable and writable.
    pub fn from_socket(fd: OwnedFd) -> Connection {
        Connection::from_parts(fd, true, true, true)
    }

    /// `true` if this end can receive (Python's `readable`).
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// `true` if this end can send (Python's `writable`).
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The largest payload [`recv`](Self::recv) and friends accept (default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub fn max_message_size(&self) -> u64 {
        self.max_message_size.load(Ordering::Relaxed)
    }

    /// Changes the largest payload this end accepts. A longer announced
    /// length fails with [`Error::MessageTooLarge`] before any allocation of
    /// that size, and leaves the connection unusable for receiving (the
    /// stream position is lost, as in CPython, which closes it).
    pub fn set_max_message_size(&self, max: u64) {
        self.max_message_size.store(max, Ordering::Relaxed);
    }

    /// Closes this end (Python's `close()`); dropping does the same.
    pub fn close(self) {}

    // ---------------------------------------------------------------- send

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::unsupported("sending on a read-only connection"))
        }
    }

    fn write_all(&self, parts: &[&[u8]], fds: &[BorrowedFd<'_>]) -> Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0usize;
        let mut fds = fds;
        while done < total || !fds.is_empty() {
            let mut slices: [IoSlice<'_>; 3] =
                [IoSlice::new(&[]), IoSlice::new(&[]), IoSlice::new(&[])];
            let mut k = 0;
            let mut skip = done;
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                slices[k] = IoSlice::new(&p[skip..]);
                skip = 0;
                k += 1;
            }
            let n = conn_io::write_vectored(self.fd.as_fd(), self.socket, &slices[..k], fds)
                .map_err(write_error)?;
            fds = &[];
            done += n;
        }
        Ok(())
    }

    /// Sends `payload` as one frame: header and payload in one system call
    /// whenever the kernel takes it all.
    fn send_frame(&self, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        let (h, hl) = framing::encode_header(payload.len() as u64);
        self.write_all(&[&h[..hl], payload], fds)
    }

    /// Sends raw bytes as one message (Python's `send_bytes`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the peer has closed its end; [`Error::Unsupported`] on
    /// a read-only end.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.check_writable()?;
        let _w = lock(&self.writer);
        self.send_frame(bytes, &[])
    }

    /// Sends a value encoded with the crate's codec (Python's `send`, for
    /// multiproc peers; see `send_pickle` for Python peers).
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.check_writable()?;
        let mut w = lock(&self.writer);
        w.clear();
        w.extend_from_slice(&[0u8; 4]);
        codec::encode_into(value, &mut w)?;
        self.send_encoded(&mut w)
    }

    /// Sends the scratch buffer `w`, whose first four bytes are reserved for
    /// the header.
    fn send_encoded(&self, w: &mut Vec<u8>) -> Result<()> {
        let len = (w.len() - 4) as u64;
        let r = if len <= SHORT_MAX {
            w[..4].copy_from_slice(&(len as i32).to_be_bytes());
            self.write_all(&[&w[..]], &[])
        } else {
            self.send_frame(&w[4..], &[])
        };
        if w.capacity() > KEEP_SCRATCH {
            *w = Vec::new();
        }
        r
    }

    /// Sends a value in Python's `pickle` format (protocol 3), readable by a
    /// Python peer's `Connection.recv()`.
    #[cfg(feature = "pickle")]
    pub fn send_pickle<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.check_writable()?;
        let mut w = lock(&self.writer);
        w.clear();
        w.extend_from_slice(&[0u8; 4]);
        serde_pickle::to_writer(&mut *w, &value, serde_pickle::SerOptions::new()).map_err(|e| {
            Error::Codec(crate::error::CodecError::with_source(
                "cannot encode a value as pickle",
                e,
            ))
        })?;
        self.send_encoded(&mut w)
    }

    /// Sends `conn` itself over this connection (its descriptor travels with
    /// `SCM_RIGHTS`); the peer takes it with
    /// [`recv_connection`](Self::recv_connection). Both ends of a duplex
    /// pipe, or of a Unix-socket connection, can carry connections; this end
    /// keeps its own copy of `conn` (drop it if the peer is the new owner).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if this end is not a Unix socket;
    /// [`Error::InvalidState`] if `conn` holds received data not yet read (it
    /// would be lost).
    pub fn send_connection(&self, conn: &Connection) -> Result<()> {
        self.check_writable()?;
        if !self.socket {
            return Err(Error::unsupported(
                "passing a connection over a pipe (only a socket connection carries descriptors)",
            ));
        }
        conn.check_no_read_ahead()?;
        let mut payload = FD_MARKER.to_vec();
        payload.push(conn.readable as u8 | (conn.writable as u8) << 1 | (conn.socket as u8) << 2);
        payload.extend_from_slice(&conn.max_message_size().to_be_bytes());
        let _w = lock(&self.writer);
        self.send_frame(&payload, &[conn.fd.as_fd()])
    }

    fn check_no_read_ahead(&self) -> Result<()> {
        let r = lock(&self.reader);
        if r.holds_data() {
            return Err(Error::InvalidState(
                "connection holds received data that has not been read".into(),
            ));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- recv

    fn check_readable(&self) -> Result<()> {
        if !self.readable {
            return Err(Error::unsupported("receiving on a write-only connection"));
        }
        if self.broken.load(Ordering::Relaxed) {
            return Err(Error::InvalidState(
                "connection lost its place in the stream after a protocol error".into(),
            ));
        }
        Ok(())
    }

    /// Reads more bytes into the read-ahead buffer; `Ok(0)` at end of file.
    fn fill(&self, r: &mut Reader, deadline: Option<Instant>) -> Result<usize> {
        if deadline.is_some() && !sys::wait_readable(self.fd.as_fd(), deadline)? {
            return Err(Error::Timeout);
        }
        match conn_io::read_collecting(self.fd.as_fd(), self.socket, &mut r.buf[r.end..]) {
            Ok((n, fd)) => {
                r.end += n;
                r.pos += n as u64;
                if let Some(fd) = fd {
                    r.received_fd(fd);
                }
                Ok(n)
            }
            Err(Errno::CONNRESET) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    fn compact(r: &mut Reader) {
        if r.start > 0 {
            r.buf.copy_within(r.start..r.end, 0);
            r.end -= r.start;
            r.start = 0;
        }
    }

    /// Receives one frame. The payload is either left in the read-ahead
    /// buffer (`Ok(Some(range))`, valid while `r` is borrowed) or written to
    /// `big` (`Ok(None)`; `big` is cleared first and its capacity reused).
    fn recv_frame(
        &self,
        r: &mut Reader,
        deadline: Option<Instant>,
        max: u64,
        big: &mut Vec<u8>,
        want_fd: bool,
    ) -> Result<Option<Range<usize>>> {
        self.check_readable()?;
        if r.buf.is_empty() {
            r.buf = vec![0u8; READ_BUF];
        }
        let res = self.recv_frame_inner(r, deadline, max, big);
        if let Ok(range) = &res {
            r.message_read(range.as_ref(), want_fd);
        }
        if let Err(e) = &res {
            if !matches!(e, Error::Timeout) {
                // The stream is mid-frame or at an unknown place: refuse further reads.
                if !matches!(e, Error::Closed) {
                    self.broken.store(true, Ordering::Relaxed);
                }
            }
        }
        res
    }

    /// Reads the rest of a large payload into `big`. On a timeout the bytes
    /// so far are parked in `r.pending` and the next receive resumes.
    fn finish_large(
        &self,
        r: &mut Reader,
        big: &mut Vec<u8>,
        plen: usize,
        deadline: Option<Instant>,
    ) -> Result<Option<Range<usize>>> {
        while big.len() < plen {
            if deadline.is_some() && !sys::wait_readable(self.fd.as_fd(), deadline)? {
                r.pending = Some((std::mem::take(big), plen));
                return Err(Error::Timeout);
            }
            let want = plen - big.len();
            match conn_io::read_into_spare(self.fd.as_fd(), big, want) {
                Ok(0) | Err(Errno::CONNRESET) => return Err(truncated()),
                Ok(n) => r.pos += n as u64,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    fn recv_frame_inner(
        &self,
        r: &mut Reader,
        deadline: Option<Instant>,
        max: u64,
        big: &mut Vec<u8>,
    ) -> Result<Option<Range<usize>>> {
        if let Some((data, plen)) = r.pending.take() {
            *big = data;
            return self.finish_large(r, big, plen, deadline);
        }
        loop {
            let avail = r.buffered();
            match framing::parse_header(&r.buf[r.start..r.end])? {
                Header::Complete {
                    header_len,
                    payload_len,
                } => {
                    if payload_len > max {
                        return Err(Error::MessageTooLarge {
                            len: payload_len,
                            max,
                        });
                    }
                    let plen = payload_len as usize;
                    let total = header_len + plen;
                    if avail >= total {
                        let s = r.start + header_len;
                        r.start += total;
                        if r.start == r.end {
                            r.start = 0;
                            r.end = 0;
                        }
                        return Ok(Some(s..s + plen));
                    }
                    if total <= r.buf.len() {
                        if r.start + total > r.buf.len() {
                            Self::compact(r);
                        }
                        if self.fill(r, deadline)? == 0 {
                            return Err(truncated());
                        }
                        continue;
                    }
                    // Large payload: straight into `big`, no read-ahead past it.
                    big.clear();
                    big.try_reserve_exact(plen)
                        .map_err(|_| Error::MessageTooLarge {
                            len: payload_len,
                            max,
                        })?;
                    big.extend_from_slice(&r.buf[r.start + header_len..r.end]);
                    r.start = 0;
                    r.end = 0;
                    return self.finish_large(r, big, plen, deadline);
                }
                Header::Incomplete => {
                    if avail == 0 {
                        r.start = 0;
                        r.end = 0;
                    } else if r.start + MAX_HEADER > r.buf.len() {
                        Self::compact(r);
                    }
                    if self.fill(r, deadline)? == 0 {
                        return Err(if avail == 0 {
                            Error::Closed
                        } else {
                            truncated()
                        });
                    }
                }
            }
        }
    }

    fn recv_bytes_deadline(&self, deadline: Option<Instant>, max: u64) -> Result<Vec<u8>> {
        let mut r = lock(&self.reader);
        let mut big = Vec::new();
        match self.recv_frame(&mut r, deadline, max, &mut big, false)? {
            Some(range) => Ok(r.buf[range].to_vec()),
            None => Ok(big),
        }
    }

    /// Like [`recv_bytes`](Self::recv_bytes) with a deadline and an explicit
    /// size limit (used by the handshake).
    pub(crate) fn recv_bytes_limited(
        &self,
        deadline: Option<Instant>,
        max: u64,
    ) -> Result<Vec<u8>> {
        self.recv_bytes_deadline(deadline, max)
    }

    fn recv_with<T>(
        &self,
        deadline: Option<Instant>,
        f: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        let mut r = lock(&self.reader);
        let mut big = Vec::new();
        match self.recv_frame(&mut r, deadline, self.max_message_size(), &mut big, false)? {
            Some(range) => f(&r.buf[range]),
            None => f(&big),
        }
    }

    /// Receives one message as raw bytes (Python's `recv_bytes`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the peer has closed and every message has been
    /// read; [`Error::MessageTooLarge`] for a length above
    /// [`max_message_size`](Self::max_message_size); an I/O error
    /// (`UnexpectedEof`) if the peer closed in the middle of a message.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_bytes_deadline(None, self.max_message_size())
    }

    /// [`recv_bytes`](Self::recv_bytes) giving up with [`Error::Timeout`]
    /// after `timeout`. A partly received message stays buffered: the next
    /// receive continues it.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_bytes_deadline(sys::deadline_after(Some(timeout)), self.max_message_size())
    }

    /// Receives one message into `buf`, replacing its contents and reusing
    /// its capacity; returns the message length (Python's `recv_bytes_into`).
    pub fn recv_bytes_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        let mut r = lock(&self.reader);
        if let Some(range) = self.recv_frame(&mut r, None, self.max_message_size(), buf, false)? {
            buf.clear();
            buf.extend_from_slice(&r.buf[range]);
        }
        Ok(buf.len())
    }

    /// Receives a value sent with [`send`](Self::send) (Python's `recv`).
    ///
    /// # Errors
    ///
    /// As [`recv_bytes`](Self::recv_bytes), plus [`Error::Codec`] if the
    /// message does not decode as a `T`.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.recv_with(None, codec::decode)
    }

    /// [`recv`](Self::recv) giving up with [`Error::Timeout`] after `timeout`.
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.recv_with(sys::deadline_after(Some(timeout)), codec::decode)
    }

    /// Receives a value pickled by a Python peer's `Connection.send` (or by
    /// [`send_pickle`](Self::send_pickle)).
    #[cfg(feature = "pickle")]
    pub fn recv_pickle<T: DeserializeOwned>(&self) -> Result<T> {
        self.recv_with(None, |b| {
            serde_pickle::from_slice(b, serde_pickle::DeOptions::new()).map_err(|e| {
                Error::Codec(crate::error::CodecError::with_source(
                    "cannot decode a pickle",
                    e,
                ))
            })
        })
    }

    /// Receives a connection sent with [`send_connection`](Self::send_connection).
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if the next message is not a connection.
    pub fn recv_connection(&self) -> Result<Connection> {
        let mut r = lock(&self.reader);
        let mut big = Vec::new();
        let range = self.recv_frame(&mut r, None, self.max_message_size(), &mut big, true)?;
        // Taken now: on any error below it is closed, not kept.
        let fd = r.msg_fd.take();
        let range =
            range.ok_or_else(|| Error::codec("expected a connection, got a large message"))?;
        let msg = &r.buf[range];
        let flags_at = FD_MARKER.len();
        if msg.len() != flags_at + 9 || !msg.starts_with(FD_MARKER) {
            return Err(Error::codec("expected a connection, got another message"));
        }
        let flags = msg[flags_at];
        let mut max = [0u8; 8];
        max.copy_from_slice(&msg[flags_at + 1..]);
        let fd =
            fd.ok_or_else(|| Error::codec("a connection message arrived without its descriptor"))?;
        let c = Connection::from_parts(fd, flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
        c.set_max_message_size(u64::from_be_bytes(max));
        Ok(c)
    }

    // ---------------------------------------------------------------- poll

    /// `true` if received data is already buffered (a later `recv` may
    /// still block if it is only part of a message).
    pub(crate) fn has_buffered(&self) -> bool {
        match self.reader.try_lock() {
            Ok(r) => r.buffered() > 0,
            Err(_) => false,
        }
    }

    /// Waits until there is something to read (a message, or end of file)
    /// or `timeout` passes; `None` waits forever, `Some(ZERO)` just checks
    /// (Python's `poll`).
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        if !self.readable {
            return Err(Error::unsupported("receiving on a write-only connection"));
        }
        if self.has_buffered() {
            return Ok(true);
        }
        sys::wait_readable(self.fd.as_fd(), sys::deadline_after(timeout))
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A connection travels to a child as a [`Process`](crate::Process)
/// argument: its descriptor is inherited (fork) or passed (spawn).
///
/// Export fails with [`Error::InvalidState`] if this end has received data that
/// has not been read yet (the child could not see it).
impl Handoff for Connection {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.check_no_read_ahead()?;
        ex.write_fd(self.fd.as_fd())?;
        let flags = self.readable as u8 | (self.writable as u8) << 1 | (self.socket as u8) << 2;
        ex.write(&flags)?;
        ex.write(&self.max_message_size())
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let fd = im.read_fd()?;
        let flags: u8 = im.read()?;
        let max: u64 = im.read()?;
        let c = Connection::from_parts(fd, flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
        c.set_max_message_size(max);
        Ok(c)
    }
}
