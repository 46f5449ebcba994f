//! `Listener` and `Client`: connections by address, with CPython's handshake.
//!
//! The listener runs the handshakes of pending clients concurrently, each on
//! a thread of its own (at most [`MAX_PENDING_HANDSHAKES`] at a time), and
//! `accept` returns whichever finishes first: a client that stays silent or
//! answers slowly never delays another.

use super::address::Address;
use super::framing::DEFAULT_MAX_MESSAGE_SIZE;
use super::{auth, Connection};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::sys;
use std::collections::{HashMap, VecDeque};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long [`Listener::accept`] waits for a client to finish the handshake
/// before refusing it, unless changed with
/// [`ListenerBuilder::handshake_timeout`]: 30 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many handshakes a [`Listener`] runs at once; further clients wait in
/// the kernel's backlog until one ends.
pub const MAX_PENDING_HANDSHAKES: usize = 32;

#[derive(Debug)]
enum Inner {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A bound, listening socket that hands out authenticated
/// [`Connection`]s: Python's `multiprocessing.connection.Listener`.
///
/// With an authkey, each client goes through CPython's mutual HMAC
/// challenge (3.12+ form, accepting 3.11 clients), so Python's `Client`
/// can connect. Handshakes run concurrently (up to
/// [`MAX_PENDING_HANDSHAKES`]), and [`accept`](Self::accept) returns the
/// first client to complete one: a silent or slow client never delays the
/// others. A client that fails the handshake, sends garbage or stalls past
/// the handshake timeout makes one `accept` call return that error (as
/// CPython raises `AuthenticationError` from `accept`); the listener keeps
/// serving.
///
/// ```
/// use multiproc::connection::{Address, Client, Listener};
///
/// let listener = Listener::bind(&Address::arbitrary(), Some(b"secret"))?;
/// let addr = listener.address().clone();
/// let t = std::thread::spawn(move || -> multiproc::Result<String> {
///     let c = Client::connect(&addr, Some(b"secret"))?;
///     c.recv::<String>()
/// });
/// let conn = listener.accept()?;
/// conn.send("hello")?;
/// assert_eq!(t.join().unwrap()?, "hello");
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct Listener {
    inner: Inner,
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Option<Duration>,
    max_message_size: u64,
    unlink: Option<PathBuf>,
    handshakes: Arc<Handshakes>,
    last_accepted: Mutex<Option<Address>>,
    /// Serialises `accept` calls (the wait happens without other locks).
    accepting: Mutex<()>,
}

/// The outcome of a client's handshake, and the client's address.
type Outcome = (Result<Connection>, Option<Address>);

/// Handshakes in progress and finished, shared with their threads.
#[derive(Debug)]
struct Handshakes {
    state: Mutex<HandshakeState>,
    /// Written once per finished handshake, to wake `accept`.
    done: OwnedFd,
}

#[derive(Debug, Default)]
struct HandshakeState {
    finished: VecDeque<Outcome>,
    /// A second descriptor of each pending client's socket, to shut it down
    /// (ending its handshake) when the listener goes.
    pending: HashMap<u64, OwnedFd>,
    next_id: u64,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Options for a [`Listener`]; from [`Listener::builder`].
#[derive(Debug, Clone)]
#[must_use = "call bind() to create the listener"]
pub struct ListenerBuilder {
    authkey: Option<Vec<u8>>,
    handshake_timeout: Option<Duration>,
    max_message_size: u64,
}

impl ListenerBuilder {
    /// Requires clients to prove they know `key` (and proves it to them).
    pub fn authkey(mut self, key: &[u8]) -> Self {
        self.authkey = Some(key.to_vec());
        self
    }

    /// How long `accept` waits for the handshake (`None`: forever).
    /// Default [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn handshake_timeout(mut self, t: Option<Duration>) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// The largest message accepted connections receive
    /// (default [`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub fn max_message_size(mut self, max: u64) -> Self {
        self.max_message_size = max;
        self
    }

    /// Binds and listens on `address`. For TCP port 0, see
    /// [`Listener::address`] for the port chosen.
    pub fn bind(self, address: &Address) -> Result<Listener> {
        let (inner, address, unlink) = match address {
            Address::Unix(p) => (
                Inner::Unix(UnixListener::bind(p)?),
                address.clone(),
                Some(p.clone()),
            ),
            Address::Abstract(n) => (
                Inner::Unix(UnixListener::bind_addr(&Address::unix_addr(n)?)?),
                address.clone(),
                None,
            ),
            Address::Tcp(a) => {
                let l = TcpListener::bind(a)?;
                let actual = l.local_addr()?;
                (Inner::Tcp(l), Address::Tcp(actual), None)
            }
        };
        match &inner {
            Inner::Unix(l) => l.set_nonblocking(true)?,
            Inner::Tcp(l) => l.set_nonblocking(true)?,
        }
        let done = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        Ok(Listener {
            inner,
            address,
            authkey: self.authkey,
            handshake_timeout: self.handshake_timeout,
            max_message_size: self.max_message_size,
            unlink,
            handshakes: Arc::new(Handshakes {
                state: Mutex::new(HandshakeState::default()),
                done,
            }),
            last_accepted: Mutex::new(None),
            accepting: Mutex::new(()),
        })
    }
}

impl Listener {
    /// Options: authkey, handshake timeout, maximum message size.
    pub fn builder() -> ListenerBuilder {
        ListenerBuilder {
            authkey: None,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }

    /// Binds to `address`, with CPython's handshake when `authkey` is given
    /// (Python's `Listener(address, authkey=...)`).
    pub fn bind(address: &Address, authkey: Option<&[u8]>) -> Result<Listener> {
        let mut b = Listener::builder();
        if let Some(k) = authkey {
            b = b.authkey(k);
        }
        b.bind(address)
    }

    /// The bound address (for TCP, with the actual port).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The address of the client of the last connection `accept` returned
    /// (or failed to authenticate): Python's `last_accepted`. `None` before
    /// any, and for a Unix client whose socket has no name (the usual case).
    pub fn last_accepted(&self) -> Option<Address> {
        lock(&self.last_accepted).clone()
    }

    /// Waits for the next client to complete the handshake (if an authkey
    /// is set) and returns its connection. Handshakes of pending clients
    /// run concurrently, so the first to finish is returned, whatever the
    /// order they connected in.
    ///
    /// # Errors
    ///
    /// [`Error::AuthenticationFailed`] if the next client to finish its
    /// handshake used another key or does not speak the protocol;
    /// [`Error::Timeout`] if it stalled past the handshake timeout; an I/O
    /// error if it went away. The failed connection is closed; the listener
    /// is unaffected and `accept` can be called again.
    pub fn accept(&self) -> Result<Connection> {
        let _one = lock(&self.accepting);
        let hs = &self.handshakes;
        loop {
            let finished = lock(&hs.state).finished.pop_front();
            if let Some((r, peer)) = finished {
                if let Err(e) = &r {
                    // CPython's managers log failed handshakes; a listener
                    // under attack or misconfigured shows up in the log.
                    crate::logging::mp_log!(
                        warn,
                        target: "multiproc::connection",
                        "handshake with a client of {} failed: {e}",
                        self.address
                    );
                }
                *lock(&self.last_accepted) = peer;
                return r;
            }
            let in_progress = lock(&hs.state).pending.len();
            if in_progress < MAX_PENDING_HANDSHAKES {
                if let Some((fd, peer)) = self.accept_raw()? {
                    let conn = Connection::from_socket(fd);
                    match &self.authkey {
                        None => {
                            conn.set_max_message_size(self.max_message_size);
                            *lock(&self.last_accepted) = peer;
                            return Ok(conn);
                        }
                        Some(key) => self.start_handshake(conn, key.clone(), peer)?,
                    }
                    continue;
                }
            }
            // Wait for a client (if there is room for one) or a handshake.
            let mut fds = vec![rustix::event::PollFd::new(
                &hs.done,
                rustix::event::PollFlags::IN,
            )];
            if in_progress < MAX_PENDING_HANDSHAKES {
                fds.push(rustix::event::PollFd::new(
                    self,
                    rustix::event::PollFlags::IN,
                ));
            }
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            let mut b = [0u8; 8];
            let _ = rustix::io::read(&hs.done, &mut b);
        }
    }

    /// A client waiting in the backlog, if any (the socket is non-blocking).
    fn accept_raw(&self) -> Result<Option<(OwnedFd, Option<Address>)>> {
        let r = match &self.inner {
            Inner::Unix(l) => l
                .accept()
                .map(|(s, a)| (OwnedFd::from(s), Address::from_unix(&a))),
            Inner::Tcp(l) => l.accept().and_then(|(s, a)| {
                s.set_nodelay(true)?;
                Ok((OwnedFd::from(s), Some(Address::Tcp(a))))
            }),
        };
        match r {
            Ok((fd, peer)) => {
                // Accepted sockets do not inherit O_NONBLOCK on Linux; make
                // sure, as the handshake and the connection block.
                rustix::io::ioctl_fionbio(&fd, false)?;
                Ok(Some((fd, peer)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(None),
            // A client that gave up while waiting in the backlog: next.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `conn`'s handshake on a thread of its own.
    fn start_handshake(&self, conn: Connection, key: Vec<u8>, peer: Option<Address>) -> Result<()> {
        let hs = self.handshakes.clone();
        let id = {
            let mut st = lock(&hs.state);
            let id = st.next_id;
            st.next_id += 1;
            if let Ok(dup) = rustix::io::fcntl_dupfd_cloexec(&conn, 0) {
                st.pending.insert(id, dup);
            }
            id
        };
        let timeout = self.handshake_timeout;
        let max = self.max_message_size;
        let spawned = std::thread::Builder::new()
            .name("multiproc-handshake".into())
            .spawn(move || {
                let deadline = sys::deadline_after(timeout);
                let r = auth::deliver_challenge(&conn, &key, deadline)
                    .and_then(|()| auth::answer_challenge(&conn, &key, deadline))
                    .map(|()| {
                        conn.set_max_message_size(max);
                        conn
                    });
                let mut st = lock(&hs.state);
                st.pending.remove(&id);
                if !st.closed {
                    st.finished.push_back((r, peer));
                }
                drop(st);
                let _ = rustix::io::write(&hs.done, &1u64.to_ne_bytes());
            });
        if let Err(e) = spawned {
            lock(&self.handshakes.state).pending.remove(&id);
            return Err(e.into());
        }
        Ok(())
    }

    /// Stops listening (removing a Unix socket file); dropping does the same.
    pub fn close(self) {}
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.inner {
            Inner::Unix(l) => l.as_fd(),
            Inner::Tcp(l) => l.as_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(p) = self.unlink.take() {
            let _ = std::fs::remove_file(p);
        }
        // End the handshakes still running: their clients see the
        // connection close, their threads return at once.
        let mut st = lock(&self.handshakes.state);
        st.closed = true;
        st.finished.clear();
        for fd in st.pending.values() {
            let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
        }
    }
}

/// Connects to a [`Listener`] (or to a Python
/// `multiprocessing.connection.Listener`): Python's `Client(address,
/// authkey=...)`. `Client` is a namespace; see also [`Client::builder`].
#[derive(Debug)]
pub enum Client {}

/// Options for [`Client`]; from [`Client::builder`].
#[derive(Debug, Clone)]
#[must_use = "call connect() to open the connection"]
pub struct ClientBuilder {
    authkey: Option<Vec<u8>>,
    handshake_timeout: Option<Duration>,
    max_message_size: u64,
}

impl Client {
    /// Connects to `address` and, with an authkey, runs CPython's mutual
    /// handshake.
    ///
    /// # Errors
    ///
    /// [`Error::AuthenticationFailed`] if the server uses another key or does
    /// not speak the protocol; I/O errors if nothing listens there.
    pub fn connect(address: &Address, authkey: Option<&[u8]>) -> Result<Connection> {
        let mut b = Client::builder();
        if let Some(k) = authkey {
            b = b.authkey(k);
        }
        b.connect(address)
    }

    /// Options: authkey, handshake timeout (default: none), maximum message size.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            authkey: None,
            handshake_timeout: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

impl ClientBuilder {
    /// Proves knowledge of `key` to the server and requires the same of it.
    pub fn authkey(mut self, key: &[u8]) -> Self {
        self.authkey = Some(key.to_vec());
        self
    }

    /// Bounds the handshake (default: wait forever, like CPython).
    pub fn handshake_timeout(mut self, t: Option<Duration>) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// The largest message this connection receives
    /// (default [`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub fn max_message_size(mut self, max: u64) -> Self {
        self.max_message_size = max;
        self
    }

    /// Connects to `address`.
    pub fn connect(self, address: &Address) -> Result<Connection> {
        let fd: OwnedFd = match address {
            Address::Unix(p) => UnixStream::connect(p)?.into(),
            Address::Abstract(n) => UnixStream::connect_addr(&Address::unix_addr(n)?)?.into(),
            Address::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                s.into()
            }
        };
        let conn = Connection::from_socket(fd);
        if let Some(key) = &self.authkey {
            let deadline = sys::deadline_after(self.handshake_timeout);
            auth::answer_challenge(&conn, key, deadline)?;
            auth::deliver_challenge(&conn, key, deadline)?;
        }
        conn.set_max_message_size(self.max_message_size);
        Ok(conn)
    }
}
