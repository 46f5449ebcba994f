//! What names a shared object wherever a proxy to it travels: the manager's
//! address, its key, the object's type and id ([`Token`]), and how a proxy
//! opens its line to that manager ([`Endpoint::link`]).

use super::link::Link;
use super::wire::ObjId;
use crate::connection::{Address, Client, Connection};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// A manager address as it travels inside a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum WireAddr {
    Unix(PathBuf),
    Abstract(Vec<u8>),
    Tcp(SocketAddr),
}

impl From<&Address> for WireAddr {
    fn from(a: &Address) -> WireAddr {
        match a {
            Address::Unix(p) => WireAddr::Unix(p.clone()),
            Address::Abstract(n) => WireAddr::Abstract(n.clone()),
            Address::Tcp(s) => WireAddr::Tcp(*s),
        }
    }
}

impl From<&WireAddr> for Address {
    fn from(a: &WireAddr) -> Address {
        match a {
            WireAddr::Unix(p) => Address::Unix(p.clone()),
            WireAddr::Abstract(n) => Address::Abstract(n.clone()),
            WireAddr::Tcp(s) => Address::Tcp(*s),
        }
    }
}

/// Where a manager is and how to get in.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Endpoint {
    pub(crate) address: WireAddr,
    pub(crate) authkey: Vec<u8>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Opens an authenticated connection to the server.
    pub(crate) fn connect(&self) -> Result<Connection> {
        Client::connect(&Address::from(&self.address), Some(&self.authkey))
    }

    /// Opens a proxy's line to the server: an authenticated connection,
    /// moved to pipes over a Unix socket (see [`Link`]).
    pub(crate) fn link(&self) -> Result<Link> {
        let link = Link::new(self.connect()?);
        if !matches!(self.address, WireAddr::Tcp(_)) {
            link.request_pipes()?;
        }
        Ok(link)
    }
}

/// What identifies a shared object: CPython's `Token` (typeid, address,
/// id), plus the key, so that a proxy decoded in any process can connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) typeid: String,
    pub(crate) id: ObjId,
}

#[derive(Serialize)]
struct TokenOut<'a> {
    endpoint: &'a Endpoint,
    typeid: &'a str,
    id: ObjId,
}

#[derive(Deserialize)]
struct TokenIn {
    endpoint: Endpoint,
    typeid: String,
    id: ObjId,
}

impl Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        TokenOut {
            endpoint: &self.endpoint,
            typeid: &self.typeid,
            id: self.id,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Token, D::Error> {
        let t = TokenIn::deserialize(d)?;
        Ok(Token {
            endpoint: Arc::new(t.endpoint),
            typeid: t.typeid,
            id: t.id,
        })
    }
}
