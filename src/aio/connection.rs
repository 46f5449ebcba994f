//! [`AsyncConnection`]: a [`Connection`] whose send and receive are futures.
//!
//! Receiving reuses the connection's own framing with a zero timeout: a
//! message that has partly arrived stays in the connection's read buffer
//! (that is what makes a receive cancel safe). Sending encodes the whole
//! frame into an outgoing buffer first and writes it without blocking.
#![allow(unsafe_code)]

use crate::codec;
use crate::error::{Error, Result};
use crate::sys::framing;
use crate::Connection;
use rustix::io::Errno;
use serde::{de::DeserializeOwned, Serialize};
use std::os::fd::AsFd;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// Bytes written to a pipe per call: at most `PIPE_BUF`, which a pipe that
/// polls writable takes without blocking.
const PIPE_CHUNK: usize = 4096;

/// Frames accepted by `send` and not yet written.
#[derive(Debug, Default)]
struct Outgoing {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    done: usize,
    /// Bytes ever queued / ever written (positions in the stream of frames).
    queued: u64,
    written: u64,
}

/// A [`Connection`] for tokio programs (feature `tokio`): `send` and `recv`
/// are futures that never block a runtime thread. See the [module
/// docs](super) for what is cancel safe.
///
/// Both sides may be used from several tasks at once (`&self`): messages
/// are never interleaved.
///
/// ```no_run
/// use multiproc::aio::AsyncConnection;
/// use multiproc::Pipe;
/// # fn main() -> multiproc::Result<()> {
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// # rt.block_on(async {
/// let (a, b) = Pipe::duplex()?;
/// let (a, b) = (AsyncConnection::new(a)?, AsyncConnection::new(b)?);
/// a.send(&"hello").await?;
/// assert_eq!(b.recv::<String>().await?, "hello");
/// # Ok(()) })
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncConnection {
    io: AsyncFd<Connection>,
    socket: bool,
    out: Mutex<Outgoing>,
}

fn lock(m: &Mutex<Outgoing>) -> MutexGuard<'_, Outgoing> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AsyncConnection {
    /// Registers `conn` with the current tokio runtime's reactor.
    ///
    /// # Errors
    ///
    /// An I/O error outside a runtime with I/O enabled.
    pub fn new(conn: Connection) -> Result<AsyncConnection> {
        let socket = crate::sys::fds::is_a(conn.as_fd(), rustix::fs::FileType::Socket);
        // SAFETY: a `Connection` owns its descriptor (an `OwnedFd` that it
        // never replaces or closes while alive), and the `AsyncFd` owns the
        // connection from here on, handing out only shared references.
        let io = unsafe { AsyncFd::register(conn) }.map_err(|e| e.into_parts().1)?;
        Ok(AsyncConnection {
            io,
            socket,
            out: Mutex::new(Outgoing::default()),
        })
    }

    /// The blocking connection back.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidState`] (and the connection is dropped) if a message
    /// queued by a dropped send future is still partly unwritten: call
    /// [`flush`](Self::flush) first.
    pub fn into_inner(self) -> Result<Connection> {
        let pending = {
            let out = lock(&self.out);
            out.buf.len() - out.done
        };
        if pending > 0 {
            return Err(Error::InvalidState(format!(
                "{pending} bytes of a message are not written yet (flush first)"
            )));
        }
        Ok(self.io.into_inner())
    }

    /// The wrapped connection (for its settings; sending or receiving on it
    /// directly while futures of this wrapper run mixes up the stream).
    pub fn get_ref(&self) -> &Connection {
        self.io.get_ref()
    }

    // ------------------------------------------------------------ receive

    /// Runs `f` (a receive with a zero timeout) until it has a message,
    /// waiting for readability in between.
    async fn receive<T>(&self, f: impl Fn(&Connection) -> Result<T>) -> Result<T> {
        // Try before waiting: bytes already read into the connection raise
        // no readiness event (e.g. data received before it was wrapped), and
        // a refusal (a write-only end) must not wait for one.
        match f(self.get_ref()) {
            Err(Error::Timeout) => {}
            other => return other,
        }
        loop {
            let mut ready = self.io.readable().await?;
            match f(ready.get_inner()) {
                Err(Error::Timeout) => ready.clear_ready(),
                other => return other,
            }
        }
    }

    /// Receives one message as raw bytes ([`Connection::recv_bytes`] as a
    /// future). Cancel safe: a partly received message stays buffered and
    /// the next receive returns it whole.
    pub async fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.receive(|c| c.recv_bytes_timeout(Duration::ZERO)).await
    }

    /// Receives one value ([`Connection::recv`] as a future). Cancel safe,
    /// as [`recv_bytes`](Self::recv_bytes).
    pub async fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.receive(|c| c.recv_timeout(Duration::ZERO)).await
    }

    // --------------------------------------------------------------- send

    /// Sends raw bytes as one message ([`Connection::send_bytes`] as a
    /// future). The message is sent whole or not at all: see the [module
    /// docs](super).
    pub async fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        let (header, n) = framing::encode_header(bytes.len() as u64);
        let until = self.queue(|buf| {
            buf.extend_from_slice(&header[..n]);
            buf.extend_from_slice(bytes);
            Ok(())
        })?;
        self.write_until(until).await
    }

    /// Sends one value ([`Connection::send`] as a future).
    pub async fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let payload = codec::encode(value)?;
        self.send_bytes(&payload).await
    }

    /// Writes every message queued so far, including the rest of one whose
    /// send future was dropped.
    pub async fn flush(&self) -> Result<()> {
        let until = lock(&self.out).queued;
        self.write_until(until).await
    }

    /// Appends one frame to the outgoing buffer; returns the stream
    /// position at its end.
    fn queue(&self, frame: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<u64> {
        if !self.get_ref().writable() {
            return Err(Error::unsupported("sending on a read-only connection"));
        }
        let mut out = lock(&self.out);
        let before = out.buf.len();
        if let Err(e) = frame(&mut out.buf) {
            out.buf.truncate(before);
            return Err(e);
        }
        out.queued += (out.buf.len() - before) as u64;
        Ok(out.queued)
    }

    /// Writes until the stream position `until` is on its way to the peer.
    async fn write_until(&self, until: u64) -> Result<()> {
        loop {
            {
                let mut out = lock(&self.out);
                loop {
                    if out.written >= until {
                        if out.done == out.buf.len() {
                            out.buf.clear();
                            out.done = 0;
                        }
                        return Ok(());
                    }
                    match self.write_some(&out.buf[out.done..]) {
                        Ok(n) => {
                            out.done += n;
                            out.written += n as u64;
                        }
                        Err(Errno::AGAIN) => break,
                        Err(Errno::PIPE) | Err(Errno::CONNRESET) => return Err(Error::Closed),
                        Err(e) => return Err(e.into()),
                    }
                }
                // Compact what is written so the buffer does not grow.
                if out.done > (1 << 16) && out.done * 2 > out.buf.len() {
                    let done = out.done;
                    out.buf.drain(..done);
                    out.done = 0;
                }
            }
            let mut ready = self.io.writable().await?;
            // Readiness may be stale: try again, and clear it only if the
            // write still would block.
            let would_block = {
                let out = lock(&self.out);
                out.written < until && self.writable_now() == Some(false)
            };
            if would_block {
                ready.clear_ready();
            }
        }
    }

    /// `Some(false)` if a zero-timeout poll says the descriptor cannot take
    /// a write now.
    fn writable_now(&self) -> Option<bool> {
        let mut fds = [rustix::event::PollFd::new(
            self.get_ref(),
            rustix::event::PollFlags::OUT,
        )];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(_) => Some(!fds[0].revents().is_empty()),
            Err(_) => None,
        }
    }

    /// One non-blocking write of the front of `buf`.
    fn write_some(&self, buf: &[u8]) -> std::result::Result<usize, Errno> {
        let fd = self.get_ref().as_fd();
        loop {
            let r = if self.socket {
                rustix::net::send(
                    fd,
                    buf,
                    rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
                )
            } else {
                // A pipe has no per-call non-blocking flag: write at most
                // PIPE_BUF bytes, and only when a poll says there is room.
                match self.writable_now() {
                    Some(true) => rustix::io::write(fd, &buf[..buf.len().min(PIPE_CHUNK)]),
                    _ => Err(Errno::AGAIN),
                }
            };
            match r {
                Err(Errno::INTR) => continue,
                r => return r,
            }
        }
    }
}
