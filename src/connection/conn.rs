//! `Connection`: one end of a pipe or socket carrying framed messages.

use super::fds::Reader;
use super::framing::{self, Frame, Source, DEFAULT_MAX_MESSAGE_SIZE, SHORT_MAX};
use crate::codec;
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::{self, conn_io::Kind};
use rustix::io::Errno;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Typed messages up to this encoded size are written from the connection's
/// reusable scratch buffer; the buffer is released when a larger one was used.
const KEEP_SCRATCH: usize = 1 << 20;

/// A pipe that carries a message of at least `GROW_AT` bytes is grown once
/// to `PIPE_SIZE` (`F_SETPIPE_SZ`): the writer then runs ahead of the reader
/// by several messages instead of waking it for every 64 KiB. Best effort
/// (a user at the kernel's pipe-size limits keeps the default).
const GROW_AT: usize = 32 << 10;
const PIPE_SIZE: usize = 256 << 10;

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
    /// The pipe was grown (or needs no growing): see [`PIPE_SIZE`].
    grown: AtomicBool,
    reader: Mutex<Reader>,
    writer: Mutex<Vec<u8>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
            grown: AtomicBool::new(socket),
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

    /// Grows a pipe about to carry `len` bytes (see [`PIPE_SIZE`]).
    fn grow_for(&self, len: usize) {
        if len >= GROW_AT && !self.grown.swap(true, Ordering::Relaxed) {
            if let Ok(size) = rustix::pipe::fcntl_getpipe_size(&self.fd) {
                if size < PIPE_SIZE {
                    let _ = rustix::pipe::fcntl_setpipe_size(&self.fd, PIPE_SIZE);
                }
            }
        }
    }

    /// Sends `payload` as one frame (see [`framing::write_frame`]).
    fn send_frame(&self, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.grow_for(payload.len());
        framing::write_frame(self.fd.as_fd(), self.kind(), payload, fds).map_err(write_error)
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
        if let Some(b) = codec::as_bytes(value).filter(|b| b.len() >= 4096) {
            // A large byte payload goes out from where it is, not copied.
            let (p, pl) = codec::bytes_header(b.len());
            let _w = lock(&self.writer);
            let len = pl + b.len();
            self.grow_for(len);
            let (h, hl) = framing::encode_header(len as u64);
            return framing::write_all(self.fd.as_fd(), self.kind(), &[&h[..hl], &p[..pl], b], &[])
                .map_err(write_error);
        }
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
        self.grow_for(len as usize);
        let r = if len <= SHORT_MAX {
            w[..4].copy_from_slice(&framing::short_header(len as usize));
            framing::write_all(self.fd.as_fd(), self.kind(), &[&w[..]], &[]).map_err(write_error)
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

    /// Sends `bytes` as one message with `fd` attached (`SCM_RIGHTS`); the
    /// peer takes both with [`recv_bytes_with_fd`](Self::recv_bytes_with_fd)
    /// (any other receive closes the descriptor). One descriptor per
    /// message, as the receiving side keeps at most one per message.
    pub(crate) fn send_bytes_with_fd(&self, bytes: &[u8], fd: BorrowedFd<'_>) -> Result<()> {
        self.check_writable()?;
        if !self.socket {
            return Err(Error::unsupported(
                "passing a descriptor over a pipe (only a socket connection carries descriptors)",
            ));
        }
        let _w = lock(&self.writer);
        self.send_frame(bytes, &[fd])
    }

    /// Receives one message and the descriptor that came with it, if any
    /// (see [`send_bytes_with_fd`](Self::send_bytes_with_fd)). The
    /// descriptor is whatever the peer sent: the caller checks its kind.
    pub(crate) fn recv_bytes_with_fd(&self) -> Result<(Vec<u8>, Option<OwnedFd>)> {
        let mut r = lock(&self.reader);
        let frame =
            self.recv_frame(&mut r, None, self.max_message_size(), &mut Vec::new(), true)?;
        let fd = r.msg_fd.take();
        Ok((r.frames.payload(&frame).to_vec(), fd))
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

    fn kind(&self) -> Kind {
        if self.socket {
            Kind::SocketFds
        } else {
            Kind::Pipe
        }
    }

    /// Receives one frame (into `reuse`'s allocation if it is large), waiting
    /// until `deadline`. Valid while `r` is borrowed.
    fn recv_frame(
        &self,
        r: &mut Reader,
        deadline: Option<Instant>,
        max: u64,
        reuse: &mut Vec<u8>,
        want_fd: bool,
    ) -> Result<Frame> {
        self.check_readable()?;
        let fd = self.fd.as_fd();
        let src = Source {
            fd,
            kind: self.kind(),
            nonblocking: false,
        };
        let mut wait = || {
            if deadline.is_some() && !sys::wait_readable(fd, deadline)? {
                return Err(Error::Timeout);
            }
            Ok(())
        };
        let (frames, fds) = r.split();
        let res = frames.next(src, max, reuse, &mut wait, &mut |fd, at| {
            Reader::received_fd(fds, fd, at)
        });
        match res {
            Ok(Some(frame)) => {
                r.message_read(&frame, want_fd);
                Ok(frame)
            }
            // Blocking reads never come back empty-handed.
            Ok(None) => Err(Error::Timeout),
            Err(e) => {
                // The stream is mid-frame or at an unknown place: refuse
                // further reads (a timeout keeps its place).
                if !matches!(e, Error::Timeout | Error::Closed) {
                    self.broken.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }

    /// One message as a vector of its own. A large payload is read into the
    /// vector returned (see [`Reader::take_buffer`]), trimmed to its length.
    fn recv_bytes_deadline(&self, deadline: Option<Instant>, max: u64) -> Result<Vec<u8>> {
        let mut r = lock(&self.reader);
        let mut buf = r.take_buffer(max);
        let res = match self.recv_frame(&mut r, deadline, max, &mut buf, false) {
            Ok(Frame::Own(mut v)) => {
                v.shrink_to_fit();
                Ok(v)
            }
            Ok(f) => Ok(r.frames.payload(&f).to_vec()),
            Err(e) => Err(e),
        };
        r.keep_buffer(buf);
        res
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
        let max = self.max_message_size();
        // A large payload is read into the connection's receive buffer and
        // decoded there; the buffer stays for the next one.
        let mut buf = r.take_buffer(max);
        let res = self
            .recv_frame(&mut r, deadline, max, &mut buf, false)
            .and_then(|frame| {
                let value = f(r.frames.payload(&frame));
                if let Frame::Own(v) = frame {
                    buf = v;
                }
                value
            });
        r.keep_buffer(buf);
        res
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
        match self.recv_frame(&mut r, None, self.max_message_size(), buf, false)? {
            Frame::Own(v) => *buf = v,
            f => {
                buf.clear();
                buf.extend_from_slice(r.frames.payload(&f));
            }
        }
        Ok(buf.len())
    }

    /// Receives a value sent with [`send`](Self::send) (Python's `recv`).
    ///
    /// A large message is read into a buffer the connection keeps for the
    /// next one (released after a message of more than 1 MiB).
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
        let frame =
            self.recv_frame(&mut r, None, self.max_message_size(), &mut Vec::new(), true)?;
        // Taken now: on any error below it is closed, not kept.
        let fd = r.msg_fd.take();
        let msg = r.frames.payload(&frame);
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
            Ok(r) => r.frames.buffered() > 0,
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
