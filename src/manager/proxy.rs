//! The client side: one connection per proxy, typed calls, and how a proxy
//! travels (serialized as a token that a new connection claims).
//!
//! A proxy owns its connection, so it is `Send` (move it to another thread)
//! but not `Sync` (two threads could otherwise interleave requests on one
//! socket); [`Clone`] opens a new connection for the copy, which another
//! thread may use. CPython opens one connection per thread per proxy; here
//! the type system keeps the rule.

use super::collect::{collect, encode_collecting};
use super::fault::{answer_in, AnswerRef, BuiltinError};
use super::link::Link;
use super::scratch::with_scratch;
use super::token::{Endpoint, Token, WireAddr};
use super::wire::{ObjId, Request};
use crate::codec;
use crate::connection::Connection;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

/// Per-process connections that hold pending references for proxies sent
/// elsewhere (process arguments, messages): they last until this process
/// exits, so a proxy handed to a child survives the parent dropping its own.
struct Anchor {
    pid: u32,
    address: WireAddr,
    conn: Mutex<Connection>,
}

static ANCHORS: Mutex<Vec<Arc<Anchor>>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn anchor_for(endpoint: &Endpoint) -> Result<Arc<Anchor>> {
    let pid = std::process::id();
    let inherited: Vec<Arc<Anchor>>;
    {
        let mut g = lock(&ANCHORS);
        // Anchors inherited across fork belong to the parent: drop our copies.
        let (mine, other): (Vec<_>, Vec<_>) = g.drain(..).partition(|a| a.pid == pid);
        *g = mine;
        inherited = other;
        if let Some(a) = g.iter().find(|a| a.address == endpoint.address) {
            return Ok(a.clone());
        }
    }
    drop(inherited);
    let conn = endpoint.connect()?;
    let a = Arc::new(Anchor {
        pid,
        address: endpoint.address.clone(),
        conn: Mutex::new(conn),
    });
    lock(&ANCHORS).push(a.clone());
    Ok(a)
}

/// Leaves a pending reference to `token`'s object, held by this process's
/// anchor connection, for the proxy the token is about to become elsewhere.
fn leave_pending(token: &Token) -> Result<()> {
    let a = anchor_for(&token.endpoint)?;
    let conn = lock(&a.conn);
    let mut buf = Vec::new();
    codec::encode_into(&Request::Pending { id: token.id }, &mut buf)?;
    conn.send_bytes(&buf)?;
    answer_in(&conn.recv_bytes()?)?.result()?;
    Ok(())
}

/// The untyped heart of every proxy: a token and an own connection.
///
/// # Pipelined calls
///
/// Some calls are *pipelined*: sent without waiting for an answer, because
/// they cannot fail in the server except by a fault of the server itself (a
/// put on an unbounded queue of a value that holds no proxies). What a
/// pipelined call guarantees:
///
/// - it runs in the server in order with every other call of this proxy
///   (one connection, served in order), so a `get` after a `put` on the same
///   proxy sees the item;
/// - other handles and processes see it at the latest when the next call
///   of this proxy that waits for an answer returns, or when
///   [`flush`](Self::flush) returns; cloning, sending and dropping a proxy
///   flush it (so a child's puts are in the queue once the child has
///   returned, as with Python's synchronous put);
/// - it is carried out once its bytes are sent, even if its process is
///   killed right after (the server reads what was sent before the
///   connection closed);
/// - if it fails all the same, the next call of this proxy that waits for
///   an answer (or `flush`) returns that failure as [`Error::Remote`], and
///   neither that call nor the pipelined calls after the failed one were made.
pub struct ProxyCore {
    token: Token,
    conn: std::result::Result<Link, String>,
    /// A request as it is encoded: the whole frame, and the arguments.
    scratch: RefCell<(Vec<u8>, Vec<u8>)>,
    /// The last answer, read in place by [`answer_with`](Self::answer_with).
    reply: RefCell<Vec<u8>>,
    /// A typed proxy's key and value as they are encoded, ahead of its call.
    values: RefCell<(Vec<u8>, Vec<u8>)>,
    /// Calls were posted since the last answer.
    posted: Cell<bool>,
    _not_sync: PhantomData<Cell<()>>,
}

impl fmt::Debug for ProxyCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("typeid", &self.token.typeid)
            .field("id", &self.token.id)
            .field("address", &self.token.endpoint.address)
            .finish()
    }
}

impl ProxyCore {
    /// Creates a new object of `typeid` in the server from `args`.
    pub(crate) fn create<A: Serialize + ?Sized>(
        endpoint: &Arc<Endpoint>,
        typeid: &str,
        args: &A,
    ) -> Result<ProxyCore> {
        let conn = endpoint.link()?;
        let mut argbuf = Vec::new();
        let refs = encode_collecting(&endpoint.address, args, &mut argbuf)?;
        let mut buf = Vec::new();
        codec::encode_into(&Request::Create { typeid, refs }, &mut buf)?;
        buf.extend_from_slice(&argbuf);
        conn.send_bytes(&buf)?;
        let id: ObjId = match answer_in(&conn.recv_bytes()?)? {
            AnswerRef::Ok(b) => codec::decode(b)?,
            AnswerRef::Method(e) => return Err(codec::decode::<BuiltinError>(e)?.into()),
        };
        Ok(ProxyCore::with_conn(
            Token {
                endpoint: endpoint.clone(),
                typeid: typeid.to_string(),
                id,
            },
            conn,
        ))
    }

    /// Opens a new connection holding a reference to `token`'s object.
    pub(crate) fn attach(token: Token) -> Result<ProxyCore> {
        let conn = token.endpoint.link()?;
        let mut buf = Vec::new();
        codec::encode_into(&Request::Attach { id: token.id }, &mut buf)?;
        conn.send_bytes(&buf)?;
        let typeid: String = codec::decode(answer_in(&conn.recv_bytes()?)?.result()?)?;
        if typeid != token.typeid {
            return Err(Error::Invalid(format!(
                "object {} is a {typeid}, not a {}",
                token.id, token.typeid
            )));
        }
        Ok(ProxyCore::with_conn(token, conn))
    }

    /// Takes a reference to the object published under `name`.
    pub(crate) fn lookup(endpoint: &Arc<Endpoint>, name: &str) -> Result<ProxyCore> {
        let conn = endpoint.link()?;
        let mut buf = Vec::new();
        codec::encode_into(&Request::Lookup { name }, &mut buf)?;
        conn.send_bytes(&buf)?;
        let (id, typeid): (ObjId, String) =
            codec::decode(answer_in(&conn.recv_bytes()?)?.result()?)?;
        Ok(ProxyCore::with_conn(
            Token {
                endpoint: endpoint.clone(),
                typeid,
                id,
            },
            conn,
        ))
    }

    fn with_conn(token: Token, conn: Link) -> ProxyCore {
        ProxyCore {
            token,
            conn: Ok(conn),
            scratch: RefCell::default(),
            reply: RefCell::default(),
            values: RefCell::default(),
            posted: Cell::new(false),
            _not_sync: PhantomData,
        }
    }

    /// The registered type name of the referent.
    pub fn typeid(&self) -> &str {
        &self.token.typeid
    }

    /// The referent's id in its server.
    pub fn id(&self) -> u64 {
        self.token.id
    }

    pub(crate) fn token(&self) -> &Token {
        &self.token
    }

    fn conn(&self) -> Result<&Link> {
        self.conn
            .as_ref()
            .map_err(|e| Error::Remote(format!("this proxy could not connect: {e}")))
    }

    /// Encodes a call of `method` with `args` into the scratch buffer and
    /// sends it, as a [`Request::Call`] or (`post`) a [`Request::Post`].
    /// With `post`, a call whose arguments hold proxies is refused (`Ok(false)`,
    /// nothing sent): their objects must stay alive until the call is made.
    fn send_call<A: Serialize + ?Sized>(&self, method: &str, args: &A, post: bool) -> Result<bool> {
        let conn = self.conn()?;
        with_scratch(&self.scratch, |(buf, argbuf)| {
            let refs = encode_collecting(&self.token.endpoint.address, args, argbuf)?;
            if post && !refs.is_empty() {
                return Ok(false);
            }
            let id = self.token.id;
            let req = if post {
                Request::Post { id, method, refs }
            } else {
                Request::Call { id, method, refs }
            };
            codec::encode_into(&req, buf)?;
            buf.extend_from_slice(argbuf);
            conn.send_bytes(buf)?;
            Ok(true)
        })
    }

    /// Receives the answer to the request just sent into this proxy's
    /// reply buffer and hands it to `f`, read in place.
    fn answer_with<R>(&self, f: impl FnOnce(AnswerRef<'_>) -> Result<R>) -> Result<R> {
        let conn = self.conn()?;
        with_scratch(&self.reply, |buf| {
            let got = conn.recv_bytes_into(buf);
            self.posted.set(false);
            got?;
            f(answer_in(buf)?)
        })
    }

    /// Sends one request header (plus encoded arguments), waits for the
    /// answer and hands it to `f`.
    fn request_with<A: Serialize + ?Sized, R>(
        &self,
        method: &str,
        args: &A,
        f: impl FnOnce(AnswerRef<'_>) -> Result<R>,
    ) -> Result<R> {
        self.send_call(method, args, false)?;
        self.answer_with(f)
    }

    /// Calls a builtin method and hands its result, in place in the
    /// received frame, to `f` (which decodes it); its errors are
    /// [`BuiltinError`]s.
    pub(crate) fn call_with<A: Serialize + ?Sized, R>(
        &self,
        method: &str,
        args: &A,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        self.request_with(method, args, |a| match a {
            AnswerRef::Ok(b) => f(b),
            AnswerRef::Method(e) => Err(codec::decode::<BuiltinError>(e)?.into()),
        })
    }

    /// Runs `f` with this proxy's two value buffers, empty: a typed proxy
    /// encodes a key and a value into them ahead of its call, and they stay
    /// allocated for the next one.
    pub(crate) fn with_value_bufs<R>(
        &self,
        f: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> Result<R>,
    ) -> Result<R> {
        with_scratch(&self.values, |(k, v)| f(k, v))
    }

    /// Posts a call of a method whose answer is `()`: sends it without
    /// waiting for the answer (see [Pipelined calls](Self#pipelined-calls)).
    /// Only for calls that cannot fail in the server but by its own fault.
    /// Arguments holding proxies are sent as an ordinary call instead.
    pub(crate) fn post<A: Serialize + ?Sized>(&self, method: &str, args: &A) -> Result<()> {
        if self.send_call(method, args, true)? {
            self.posted.set(true);
            return Ok(());
        }
        self.call(method, args)
    }

    /// Waits until every call of this proxy has been carried out in the
    /// server, and reports the failure of a pipelined one (see
    /// [Pipelined calls](Self#pipelined-calls)). Does nothing (no round
    /// trip) when no call was pipelined since the last answer.
    pub fn flush(&self) -> Result<()> {
        if !self.posted.get() {
            return Ok(());
        }
        let conn = self.conn()?;
        with_scratch(&self.scratch, |(buf, _)| {
            codec::encode_into(&Request::Sync, buf)?;
            conn.send_bytes(buf)
        })?;
        self.answer_with(|_| Ok(()))
    }

    /// Calls a builtin method that sends up to `max_fds` descriptors ahead
    /// of its answer (see [`FD_FRAME`]); returns the answer and them, in
    /// order. A server that sends more, or a descriptor frame without one,
    /// gets an error (and this proxy's connection is then out of step: its
    /// later calls fail rather than read the wrong answers).
    pub(crate) fn call_with_fds<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
        max_fds: usize,
    ) -> Result<(R, Vec<OwnedFd>)> {
        self.flush()?;
        self.send_call(method, args, false)?;
        let (bytes, fds) = self.conn()?.recv_with_fds(max_fds)?;
        match answer_in(&bytes)? {
            AnswerRef::Ok(b) => Ok((codec::decode(b)?, fds)),
            AnswerRef::Method(e) => Err(codec::decode::<BuiltinError>(e)?.into()),
        }
    }

    /// `true` once the server has closed this proxy's connection (it shut
    /// down or died): a look at the socket, no round trip.
    pub(crate) fn server_gone(&self) -> bool {
        use rustix::event::{poll, PollFd, PollFlags};
        let Ok(conn) = self.conn() else { return true };
        let gone = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR;
        let mut p = [PollFd::new(conn.socket(), gone)];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match poll(&mut p, Some(&zero)) {
            Ok(_) => p[0].revents().intersects(gone),
            Err(_) => false,
        }
    }

    /// Calls a builtin method: its errors are [`BuiltinError`]s.
    pub(crate) fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R> {
        self.call_with(method, args, codec::decode)
    }

    /// Calls a method of a registered type: a method's own `Err(e)` comes
    /// back as [`CallError::Method`](super::CallError::Method).
    #[doc(hidden)]
    pub fn call_method<A, T, E>(
        &self,
        method: &str,
        args: &A,
    ) -> std::result::Result<T, super::CallError<E>>
    where
        A: Serialize + ?Sized,
        T: DeserializeOwned,
        E: DeserializeOwned,
    {
        let answer = self.request_with(method, args, |a| match a {
            AnswerRef::Ok(b) => Ok(Ok(codec::decode(b)?)),
            AnswerRef::Method(e) => Ok(Err(codec::decode(e)?)),
        })?;
        answer.map_err(super::CallError::Method)
    }

    /// Calls a method of a registered type that cannot fail on its own.
    #[doc(hidden)]
    pub fn call_plain<A, T>(&self, method: &str, args: &A) -> Result<T>
    where
        A: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        self.request_with(method, args, |a| match a {
            AnswerRef::Ok(b) => codec::decode(b),
            AnswerRef::Method(_) => Err(Error::Remote(format!(
                "method {method:?} answered with an error it does not declare"
            ))),
        })
    }

    /// Publishes the object under `name` (held by the server from now on).
    pub(crate) fn publish_as(&self, name: &str) -> Result<()> {
        self.flush()?;
        let conn = self.conn()?;
        let _g = self.scratch.borrow_mut();
        conn.send_bytes(&codec::encode(&Request::Publish {
            name,
            id: self.token.id,
        })?)?;
        answer_in(&conn.recv_bytes()?)?.result()?;
        Ok(())
    }

    /// A new handle to the same object, with its own connection.
    ///
    /// Flushes this proxy first, so the copy sees every call made so far.
    pub fn try_clone(&self) -> Result<ProxyCore> {
        self.flush()?;
        ProxyCore::attach(self.token.clone())
    }
}

impl Drop for ProxyCore {
    /// Flushes pipelined calls (see [Pipelined calls](Self#pipelined-calls));
    /// a failure, with no call left to report it, is logged as a warning.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            log::warn!(
                "a pipelined call of a dropped {} proxy failed: {e}",
                self.token.typeid
            );
        }
    }
}

impl Clone for ProxyCore {
    /// A new handle with its own connection. If the server cannot be
    /// reached, the copy exists but every call on it fails with
    /// [`Error::Remote`]; use [`try_clone`](Self::try_clone) to see the error
    /// at once.
    fn clone(&self) -> ProxyCore {
        match self.try_clone() {
            Ok(c) => c,
            Err(e) => ProxyCore {
                token: self.token.clone(),
                conn: Err(e.to_string()),
                scratch: RefCell::default(),
                reply: RefCell::default(),
                values: RefCell::default(),
                posted: Cell::new(false),
                _not_sync: PhantomData,
            },
        }
    }
}

/// A proxy serializes as its token. Inside a request to its own server the
/// server keeps the object alive while the value is stored; anywhere else
/// (process arguments, a message) a pending reference is left with the
/// server first, so the object outlives this proxy until the token is
/// decoded (or this process exits).
impl Serialize for ProxyCore {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.flush().map_err(serde::ser::Error::custom)?;
        if !collect(&self.token) {
            leave_pending(&self.token).map_err(serde::ser::Error::custom)?;
        }
        self.token.serialize(s)
    }
}

/// Decoding a token connects to its server and claims a reference.
impl<'de> Deserialize<'de> for ProxyCore {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<ProxyCore, D::Error> {
        let token = Token::deserialize(d)?;
        ProxyCore::attach(token).map_err(serde::de::Error::custom)
    }
}
