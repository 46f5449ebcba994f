//! `Listener` and `Client`: connections by address, with CPython's handshake.

use super::framing::DEFAULT_MAX_MESSAGE_SIZE;
use super::{auth, Connection};
use crate::error::{Error, Result};
use crate::sys;
use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long [`Listener::accept`] waits for a client to finish the handshake
/// before refusing it, unless changed with
/// [`ListenerBuilder::handshake_timeout`]: 30 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a [`Listener`] listens and a [`Client`] connects: Python's
/// address families `AF_UNIX` (a path, or Linux's abstract namespace: a
/// Python string starting with `"\0"`) and `AF_INET` (`(host, port)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix socket at a filesystem path (removed when the listener drops).
    Unix(PathBuf),
    /// A Linux abstract Unix socket name (Python: `"\0" + name`), without
    /// the leading NUL.
    Abstract(Vec<u8>),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl Address {
    /// A TCP address from anything `std` resolves (`"127.0.0.1:0"`,
    /// `("localhost", 6000)`); the first resolved address is used.
    pub fn tcp(addr: impl ToSocketAddrs) -> Result<Address> {
        addr.to_socket_addrs()?
            .next()
            .map(Address::Tcp)
            .ok_or_else(|| Error::Invalid("address resolved to nothing".into()))
    }

    /// A Unix socket path.
    pub fn unix(path: impl Into<PathBuf>) -> Address {
        Address::Unix(path.into())
    }

    /// A Linux abstract socket name (no leading NUL).
    pub fn abstract_name(name: impl Into<Vec<u8>>) -> Address {
        Address::Abstract(name.into())
    }

    /// A fresh abstract socket name unique to this process (Python's
    /// `arbitrary_address('AF_UNIX')`, without a file to clean up).
    pub fn arbitrary() -> Address {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Address::Abstract(format!("multiproc-{}-{n}-{nanos:08x}", std::process::id()).into_bytes())
    }

    fn unix_addr(name: &[u8]) -> Result<UnixAddr> {
        Ok(UnixAddr::from_abstract_name(name)?)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "\\0{}", String::from_utf8_lossy(n)),
            Address::Tcp(a) => write!(f, "{a}"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Tcp(a)
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Address {
        Address::Unix(p)
    }
}

#[derive(Debug)]
enum Inner {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A bound, listening socket that hands out authenticated
/// [`Connection`]s: Python's `multiprocessing.connection.Listener`.
///
/// With an authkey, [`accept`](Self::accept) runs CPython's mutual HMAC
/// challenge (3.12+ form, accepting 3.11 clients), so Python's `Client`
/// can connect. A client that fails the handshake, sends garbage or stalls
/// past the handshake timeout makes that one `accept` call fail; the
/// listener keeps serving.
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
        Ok(Listener {
            inner,
            address,
            authkey: self.authkey,
            handshake_timeout: self.handshake_timeout,
            max_message_size: self.max_message_size,
            unlink,
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

    /// Waits for a client and returns the connection once the handshake (if
    /// an authkey is set) succeeded.
    ///
    /// # Errors
    ///
    /// [`Error::AuthenticationFailed`] if the client used another key or does
    /// not speak the protocol; [`Error::Timeout`] if it stalled past the
    /// handshake timeout; an I/O error if it went away. The failed connection
    /// is closed; the listener is unaffected and `accept` can be called again.
    pub fn accept(&self) -> Result<Connection> {
        let fd: OwnedFd = match &self.inner {
            Inner::Unix(l) => l.accept()?.0.into(),
            Inner::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                s.into()
            }
        };
        let conn = Connection::from_socket(fd);
        if let Some(key) = &self.authkey {
            // The handshake is bounded by 256-byte messages: the default
            // limit must not apply to it, and it must not hang.
            let deadline = sys::deadline_after(self.handshake_timeout);
            auth::deliver_challenge(&conn, key, deadline)?;
            auth::answer_challenge(&conn, key, deadline)?;
        }
        conn.set_max_message_size(self.max_message_size);
        Ok(conn)
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
