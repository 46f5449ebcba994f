//! [`Address`]: where a `Listener` listens and a `Client` connects.

use crate::error::{Error, Result};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr as UnixAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a [`Listener`](super::Listener) listens and a
/// [`Client`](super::Client) connects: Python's address families `AF_UNIX`
/// (a path, or Linux's abstract namespace: a Python string starting with
/// `"\0"`) and `AF_INET` (`(host, port)`).
///
/// An address prints, and parses back, as `host:port` (`[::1]:6000` for
/// IPv6), `/path` (any path; one without `/` must not end in `:digits`),
/// or `@name` for an abstract name (`"\0name"` is read too, as Python
/// writes it):
///
/// ```
/// use multiproc::connection::Address;
///
/// for s in ["127.0.0.1:6000", "/tmp/app.sock", "@app"] {
///     let a: Address = s.parse()?;
///     assert_eq!(a.to_string(), s);
/// }
/// assert_eq!("@app".parse::<Address>()?, Address::abstract_name("app"));
/// # Ok::<(), multiproc::Error>(())
/// ```
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

    pub(crate) fn unix_addr(name: &[u8]) -> Result<UnixAddr> {
        Ok(UnixAddr::from_abstract_name(name)?)
    }

    /// The address of a Unix socket's peer: `None` for an unnamed one (a
    /// client socket that was not bound, the usual case).
    pub(crate) fn from_unix(a: &UnixAddr) -> Option<Address> {
        if let Some(p) = a.as_pathname() {
            return Some(Address::Unix(p.to_path_buf()));
        }
        a.as_abstract_name().map(|n| Address::Abstract(n.to_vec()))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{}", String::from_utf8_lossy(n)),
            Address::Tcp(a) => write!(f, "{a}"),
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    /// Parses what [`Display`](fmt::Display) prints: `@name` (or `"\0name"`)
    /// is abstract; `host:port` is TCP (a host name is resolved); anything
    /// else is a path.
    fn from_str(s: &str) -> Result<Address> {
        if let Some(name) = s.strip_prefix('@').or_else(|| s.strip_prefix('\0')) {
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        if s.is_empty() {
            return Err(Error::Invalid("an empty address".into()));
        }
        if s.contains('/') {
            return Ok(Address::Unix(s.into()));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(a));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Address::tcp(s)
            }
            _ => Ok(Address::Unix(s.into())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let cases = [
            Address::Tcp("127.0.0.1:6000".parse().unwrap()),
            Address::Tcp("[::1]:80".parse().unwrap()),
            Address::unix("/tmp/x.sock"),
            Address::unix("./rel/x.sock"),
            Address::unix("plain"),
            Address::abstract_name("multiproc-1"),
            Address::abstract_name(""),
        ];
        for a in cases {
            let s = a.to_string();
            assert!(!s.contains('\0'), "{s:?}");
            assert_eq!(s.parse::<Address>().unwrap(), a, "{s}");
        }
    }

    #[test]
    fn forms() {
        assert_eq!(
            "\0name".parse::<Address>().unwrap(),
            Address::abstract_name("name")
        );
        assert_eq!(Address::abstract_name("x").to_string(), "@x");
        assert!(matches!(
            "localhost:6000".parse::<Address>().unwrap(),
            Address::Tcp(a) if a.port() == 6000 && a.ip().is_loopback()
        ));
        assert!("".parse::<Address>().is_err());
    }
}
