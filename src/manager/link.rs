//! One client's line to the server: the authenticated socket, moved to a
//! pair of pipes when client and server share one CPU.
//!
//! A proxy's calls are round trips of small frames. Measured on Linux 6.18
//! (a 2-vCPU VM, the C floors of the benchmark harness): when both processes
//! run on one CPU, a round trip over a pair of pipes costs about half what
//! it costs over a Unix socketpair (5.0 µs against 9.3 µs, two context
//! switches either way, fewer instructions around them on a pipe); across
//! CPUs a pipe costs more (39 µs against 34 µs: its reader's wake-up is
//! slower). So a proxy whose thread may run on one CPU only (pinned, or a
//! one-CPU cpuset or machine) asks for pipes after the handshake
//! ([`Request::Pipes`]), naming that CPU; a server whose serving thread is
//! confined to the same CPU makes two, sends the client its ends over the
//! socket (`SCM_RIGHTS`) and answers, and from then on both sides send and
//! receive every request and answer on the pipes, with the same
//! [`Connection`] framing, size limit and codec. Everything else stays on
//! the socket. The choice is made once per connection: a thread that
//! changes its affinity later keeps the line it has (only speed differs).
//!
//! On a moved line the socket stays open: descriptors a method sends still
//! travel on it (ahead of the answer, which comes on the pipes), and either
//! side sees the other hang up on it (`client_gone`, `server_gone`), since a
//! process that exits or drops its end closes the socket with the pipes.
//! TCP connections stay on the socket, and so does a process whose
//! `SIGPIPE` is at its default action (a write to a pipe whose peer died
//! would kill it, where a socket write returns `EPIPE`: Rust programs and
//! CPython ignore `SIGPIPE`, so this is rare).

use super::wire::{Reply, Request, FD_FRAME};
use crate::codec;
use crate::connection::{Connection, Pipe};
use crate::error::{Error, Result};
use serde::Serialize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

/// The two pipes of a moved line, seen from one side.
#[derive(Debug)]
struct Pipes {
    rx: Connection,
    tx: Connection,
}

/// A connection between a proxy and the server (see the module docs).
#[derive(Debug)]
pub(crate) struct Link {
    socket: Connection,
    pipes: OnceLock<Pipes>,
}

impl Link {
    /// A line on `socket` alone.
    pub(crate) fn new(socket: Connection) -> Link {
        Link {
            socket,
            pipes: OnceLock::new(),
        }
    }

    /// The authenticated socket: descriptors travel on it, and its hang-up
    /// is the peer's.
    pub(crate) fn socket(&self) -> &Connection {
        &self.socket
    }

    fn rx(&self) -> &Connection {
        self.pipes.get().map_or(&self.socket, |p| &p.rx)
    }

    fn tx(&self) -> &Connection {
        self.pipes.get().map_or(&self.socket, |p| &p.tx)
    }

    /// Sends one frame.
    pub(crate) fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.tx().send_bytes(bytes)
    }

    /// Sends one encoded value.
    pub(crate) fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.tx().send(value)
    }

    /// Receives one frame.
    pub(crate) fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.rx().recv_bytes()
    }

    /// Receives one frame into `buf`.
    pub(crate) fn recv_bytes_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.rx().recv_bytes_into(buf)
    }

    /// Client side: when this thread may run on one CPU only, asks the
    /// server to move this line to pipes, and moves it when the server
    /// agrees. A server that refuses (a socket that is not a Unix one, a
    /// serving thread not confined to that CPU) leaves the line on the
    /// socket; only a broken connection is an error. Called before any other
    /// request.
    pub(crate) fn request_pipes(&self) -> Result<()> {
        let Some(cpu) = crate::sys::only_cpu() else {
            return Ok(());
        };
        if crate::sys::conn_io::sigpipe_kills() {
            // A write to a pipe whose server died would kill this process.
            return Ok(());
        }
        self.socket.send(&Request::Pipes { cpu })?;
        let (answer, fds) = self.recv_with_fds(2)?;
        if !matches!(codec::decode::<Reply>(&answer)?, Reply::Ok(_)) {
            // Refused: stay on the socket.
            return Ok(());
        }
        let mut fds = fds.into_iter();
        let (Some(rx), Some(tx)) = (fds.next(), fds.next()) else {
            return Err(Error::Remote(
                "the server agreed to pipes but did not send both ends".into(),
            ));
        };
        let fifo = rustix::fs::FileType::Fifo;
        if !crate::sys::fds::is_a(rx.as_fd(), fifo) || !crate::sys::fds::is_a(tx.as_fd(), fifo) {
            return Err(Error::Remote(
                "the server sent descriptors that are not pipes".into(),
            ));
        }
        self.set(
            Connection::from_parts(rx, true, false, false),
            Connection::from_parts(tx, false, true, false),
        );
        Ok(())
    }

    /// Client side: receives the answer to the request just sent, and the
    /// descriptors (at most `max`) the server sent ahead of it. On the
    /// socket they come in order ahead of the answer; on pipes the answer
    /// comes on the pipe and they wait on the socket, all there before the
    /// answer was sent (a send on a Unix socket is in the receiver's queue
    /// when it returns). More than `max`, or a descriptor frame without
    /// one, is an error.
    pub(crate) fn recv_with_fds(&self, max: usize) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut fds = Vec::new();
        let mut answer = None;
        if self.pipes.get().is_some() {
            let mut b = Vec::new();
            self.rx().recv_bytes_into(&mut b)?;
            answer = Some(b);
        }
        loop {
            if answer.is_some() && !self.socket.poll(Some(std::time::Duration::ZERO))? {
                break;
            }
            let (bytes, fd) = match self.socket.recv_bytes_with_fd() {
                Ok(got) => got,
                // Answered, then the server went: nothing more was sent.
                Err(Error::Closed) if answer.is_some() => break,
                Err(e) => return Err(e),
            };
            if bytes != FD_FRAME {
                if answer.is_some() {
                    return Err(Error::Remote(
                        "the server sent an unexpected frame on the socket".into(),
                    ));
                }
                // The answer (a descriptor that came with it is closed here).
                answer = Some(bytes);
                break;
            }
            let fd = fd.ok_or_else(|| {
                Error::Remote("the server sent a descriptor frame without a descriptor".into())
            })?;
            if fds.len() == max {
                return Err(Error::Remote(format!(
                    "the server sent more than {max} descriptors"
                )));
            }
            fds.push(fd);
        }
        Ok((answer.unwrap_or_default(), fds))
    }

    /// Server side: answers [`Request::Pipes`] from a client confined to
    /// `cpu`. On a Unix socket, with this thread confined to the same CPU,
    /// makes the two pipes, sends the client its ends (its read end, then its
    /// write end) and `Ok` on the socket, then moves this side; otherwise, or
    /// when the pipes cannot be made (out of descriptors), answers with a
    /// refusal and the line stays on the socket. An error means the socket
    /// broke.
    pub(crate) fn offer_pipes(&self, cpu: u32) -> Result<()> {
        if self.pipes.get().is_some() || !is_unix(self.socket.as_fd()) {
            return self.socket.send(&Reply::Remote(
                "pipes are offered only once, over a Unix socket".into(),
            ));
        }
        if crate::sys::only_cpu() != Some(cpu) {
            return self.socket.send(&Reply::Remote(
                "client and server do not share one CPU: the socket is faster".into(),
            ));
        }
        if crate::sys::conn_io::sigpipe_kills() {
            return self.socket.send(&Reply::Remote(
                "SIGPIPE would kill this server: it stays on sockets".into(),
            ));
        }
        // Server to client, client to server.
        let ((down_rx, down_tx), (up_rx, up_tx)) = match (Pipe::simplex(), Pipe::simplex()) {
            (Ok(down), Ok(up)) => (down, up),
            (Err(e), _) | (_, Err(e)) => {
                return self
                    .socket
                    .send(&Reply::Remote(format!("cannot make pipes: {e}")))
            }
        };
        self.socket.send_bytes_with_fd(FD_FRAME, down_rx.as_fd())?;
        self.socket.send_bytes_with_fd(FD_FRAME, up_tx.as_fd())?;
        drop((down_rx, up_tx));
        self.socket
            .send(&Reply::Ok(super::wire::Value::default()))?;
        self.set(up_rx, down_tx);
        Ok(())
    }

    fn set(&self, rx: Connection, tx: Connection) {
        let max = self.socket.max_message_size();
        rx.set_max_message_size(max);
        tx.set_max_message_size(max);
        let _ = self.pipes.set(Pipes { rx, tx });
    }

    /// Server side, when stopping: wakes the thread that waits for this
    /// client's next request. The socket is shut down (a receive on it
    /// fails); a thread waiting on the pipe gets an empty frame, written
    /// through a descriptor of its own on the pipe (opened without blocking,
    /// so a full pipe, whose thread is busy anyway, never blocks the stop).
    pub(crate) fn wake(&self) {
        let _ = rustix::net::shutdown(self.socket.as_fd(), rustix::net::Shutdown::Both);
        if let Some(p) = self.pipes.get() {
            wake_pipe(p.rx.as_fd());
        }
    }
}

/// Writes an empty frame (CPython's 4-byte header of length 0) into the
/// pipe whose read end is `rx`, through a new non-blocking write end opened
/// by its `/proc` entry. Best effort: a failure leaves the thread to notice
/// the stop at its next request.
fn wake_pipe(rx: BorrowedFd<'_>) {
    use rustix::fs::{Mode, OFlags};
    let path = format!("/proc/self/fd/{}", rx.as_raw_fd());
    if let Ok(w) = rustix::fs::open(
        path.as_str(),
        OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        let _ = rustix::io::write(&w, &[0u8; 4]);
    }
}

/// `true` if `fd` is a Unix-domain socket.
fn is_unix(fd: BorrowedFd<'_>) -> bool {
    rustix::net::getsockname(fd)
        .is_ok_and(|a| a.address_family() == rustix::net::AddressFamily::UNIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Pipe;
    use std::time::Duration;

    /// The CPUs this thread may run on.
    fn allowed() -> Vec<usize> {
        let set = rustix::thread::sched_getaffinity(None).unwrap();
        (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&i| set.is_set(i))
            .collect()
    }

    /// Confines the calling thread (and the threads it starts) to `cpu`.
    fn pin(cpu: usize) {
        let mut one = rustix::thread::CpuSet::new();
        one.set(cpu);
        rustix::thread::sched_setaffinity(None, &one).unwrap();
    }

    /// Runs the move as a proxy and its server do, both confined to one
    /// CPU: the client asks, the server answers the request it receives.
    fn ask_for_pipes(client: &Link, server: &Link) {
        pin(allowed()[0]);
        std::thread::scope(|s| {
            s.spawn(|| serve_pipes_request(server));
            client.request_pipes().unwrap();
        });
    }

    /// The server's side of one request for pipes.
    fn serve_pipes_request(server: &Link) {
        let mut buf = Vec::new();
        server.recv_bytes_into(&mut buf).unwrap();
        match codec::decode_borrowed::<Request<'_>>(&buf) {
            Ok((Request::Pipes { cpu }, _)) => server.offer_pipes(cpu).unwrap(),
            other => panic!("not a request for pipes: {other:?}"),
        }
    }

    #[test]
    fn a_client_free_to_run_on_several_cpus_stays_on_its_socket() {
        if allowed().len() < 2 {
            return; // a one-CPU machine: every thread is confined
        }
        let (a, b) = Pipe::duplex().unwrap();
        let client = Link::new(a);
        client.request_pipes().unwrap();
        assert!(client.pipes.get().is_none());
        // It did not even ask.
        assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    }

    #[test]
    fn a_server_on_another_cpu_refuses_pipes() {
        let cpus = allowed();
        if cpus.len() < 2 {
            return;
        }
        let (a, b) = Pipe::duplex().unwrap();
        let (client, server) = (Link::new(a), Link::new(b));
        pin(cpus[0]);
        std::thread::scope(|s| {
            s.spawn(|| {
                pin(cpus[1]);
                serve_pipes_request(&server);
            });
            client.request_pipes().unwrap();
        });
        assert!(client.pipes.get().is_none() && server.pipes.get().is_none());
        client.send_bytes(b"on the socket").unwrap();
        let mut buf = Vec::new();
        server.recv_bytes_into(&mut buf).unwrap();
        assert_eq!(buf, b"on the socket");
    }

    /// A client and a server line on a Unix socketpair, moved to pipes.
    fn moved_pair() -> (Link, Link) {
        let (a, b) = Pipe::duplex().unwrap();
        let (client, server) = (Link::new(a), Link::new(b));
        ask_for_pipes(&client, &server);
        (client, server)
    }

    /// Sends `fd` `n` times as descriptor frames on the server's socket.
    fn send_fds(server: &Link, fds: &[BorrowedFd<'_>]) {
        for fd in fds {
            server.socket().send_bytes_with_fd(FD_FRAME, *fd).unwrap();
        }
    }

    #[test]
    fn a_unix_line_moves_to_pipes_and_carries_frames_both_ways() {
        let (client, server) = moved_pair();
        assert!(client.pipes.get().is_some() && server.pipes.get().is_some());
        client.send_bytes(b"request").unwrap();
        let mut buf = Vec::new();
        server.recv_bytes_into(&mut buf).unwrap();
        assert_eq!(buf, b"request");
        // Nothing went over the socket.
        assert!(!server.socket().poll(Some(Duration::ZERO)).unwrap());
        let big = vec![7u8; 1 << 20];
        std::thread::scope(|s| {
            s.spawn(|| server.send_bytes(&big).unwrap());
            client.recv_bytes_into(&mut buf).unwrap();
        });
        assert_eq!(buf, big);
        // A client that goes away: the server's receive ends, no hang.
        drop(client);
        assert!(server.recv_bytes_into(&mut buf).is_err());
    }

    #[test]
    fn the_pipes_keep_the_socket_s_size_limit() {
        let (a, b) = Pipe::duplex().unwrap();
        b.set_max_message_size(1000);
        let (client, server) = (Link::new(a), Link::new(b));
        ask_for_pipes(&client, &server);
        client.send_bytes(&[1u8; 2000]).unwrap();
        let mut buf = Vec::new();
        assert!(matches!(
            server.recv_bytes_into(&mut buf),
            Err(Error::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn a_tcp_line_is_refused_pipes_and_stays_on_its_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let client = Link::new(Connection::from_socket(OwnedFd::from(a)));
        let server = Link::new(Connection::from_socket(OwnedFd::from(b)));
        ask_for_pipes(&client, &server);
        assert!(client.pipes.get().is_none() && server.pipes.get().is_none());
        client.send_bytes(b"still here").unwrap();
        let mut buf = Vec::new();
        server.recv_bytes_into(&mut buf).unwrap();
        assert_eq!(buf, b"still here");
    }

    #[test]
    fn descriptors_sent_ahead_of_an_answer_on_the_pipes_reach_the_caller() {
        let (client, server) = moved_pair();
        let (r, w) = Pipe::simplex().unwrap();
        send_fds(&server, &[r.as_fd(), w.as_fd()]);
        server.send_bytes(b"answer").unwrap();
        let (answer, fds) = client.recv_with_fds(2).unwrap();
        assert_eq!(answer, b"answer");
        assert_eq!(fds.len(), 2);
        // The descriptors are the pipe's ends: what goes in one comes out
        // of the other.
        rustix::io::write(&fds[1], b"x").unwrap();
        let mut one = [0u8; 1];
        assert_eq!(rustix::io::read(&fds[0], &mut one).unwrap(), 1);

        // More descriptors than the call takes: an error, not a leak or a
        // wrong answer taken for the right one.
        send_fds(&server, &[r.as_fd(), r.as_fd()]);
        server.send_bytes(b"answer").unwrap();
        assert!(matches!(client.recv_with_fds(1), Err(Error::Remote(_))));
    }

    #[test]
    fn a_server_that_sends_something_else_than_pipes_is_refused() {
        let (a, b) = Pipe::duplex().unwrap();
        let client = Link::new(a);
        pin(allowed()[0]);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut buf = Vec::new();
                b.recv_bytes_into(&mut buf).unwrap();
                // Two ends of a socketpair instead of pipes.
                let (x, y) = Pipe::duplex().unwrap();
                b.send_bytes_with_fd(FD_FRAME, x.as_fd()).unwrap();
                b.send_bytes_with_fd(FD_FRAME, y.as_fd()).unwrap();
                b.send(&Reply::Ok(super::super::wire::Value::default()))
                    .unwrap();
            });
            assert!(matches!(client.request_pipes(), Err(Error::Remote(_))));
        });
        assert!(client.pipes.get().is_none());
    }

    #[test]
    fn waking_a_stopping_server_ends_a_receive_waiting_on_the_pipe() {
        let (client, server) = moved_pair();
        let server = std::sync::Arc::new(server);
        let waiter = {
            let server = server.clone();
            std::thread::spawn(move || {
                let mut buf = vec![1u8];
                let r = server.recv_bytes_into(&mut buf);
                (r.is_err() || buf.is_empty(), buf)
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        server.wake();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !waiter.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the receive still waits"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let (woken, _) = waiter.join().unwrap();
        assert!(woken);
        drop(client);
    }
}
