//! The server: accepts authenticated connections and serves each one on its
//! own thread, so a slow or blocked client never delays another (CPython's
//! `Server.serve_forever` / `handle_request`).
//!
//! A request that does not decode gets a `Remote` error answer and the
//! connection goes on (the framing is intact); a frame over the size limit,
//! or a broken stream, ends that one connection. Nothing a client sends can
//! stop the server except `Shutdown`.

use super::fault::BuiltinError;
use super::link::Link;
use super::registry::{resolve, CallCx, ConnId, Fail, ObjRef, Out, Registry};
use super::token::WireAddr;
use super::types;
use super::wire::{ObjId, Raw, Reply, Request, Value};
use crate::connection::{Client, Listener};
use crate::error::Result;
use crate::sys;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Builds an object of a registered (non-builtin) type from its typeid and
/// encoded arguments; `None` if the typeid is unknown.
pub(crate) type Factory =
    fn(&str, &[u8]) -> Option<std::result::Result<Box<dyn super::registry::Object>, Fail>>;

/// How many threads wait in `accept` at once to begin with.
const ACCEPTORS: usize = 4;

/// The most acceptor threads (each extra one is added while connections
/// wait and every acceptor is stuck in a handshake).
const MAX_ACCEPTORS: usize = 64;

/// How long a connection may wait in the backlog before another acceptor
/// is added.
const BUSY_GRACE: Duration = Duration::from_millis(20);

/// The name prefix of the threads serving connections.
pub(crate) const CONN_THREAD_PREFIX: &str = "manager-conn-";

/// One running server.
pub(crate) struct Server {
    registry: Arc<Registry>,
    address: std::sync::OnceLock<WireAddr>,
    factory: Factory,
    stopping: AtomicBool,
    next_conn: AtomicU64,
    live: Mutex<HashMap<ConnId, Arc<Link>>>,
    stopped: Mutex<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Server {
    pub(crate) fn new(factory: Factory) -> Arc<Server> {
        Arc::new(Server {
            registry: Registry::new(),
            address: std::sync::OnceLock::new(),
            factory,
            stopping: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
            live: Mutex::new(HashMap::new()),
            stopped: Mutex::new(false),
        })
    }

    /// Accepts connections until a client asks for shutdown; returns once
    /// the listener is closed and every connection has been shut down.
    ///
    /// [`ACCEPTORS`] threads wait in `accept` at once: `accept` runs the
    /// authentication handshake, so a client that connects and says nothing
    /// holds one of them until the handshake times out while the others go
    /// on accepting; more are added while connections wait and all are busy.
    pub(crate) fn serve(self: &Arc<Self>, listener: Listener) -> Result<()> {
        let _ = self.address.set(WireAddr::from(listener.address()));
        let listener = Arc::new(listener);
        let mut acceptors = Vec::with_capacity(ACCEPTORS);
        for _ in 0..ACCEPTORS {
            acceptors.push(self.spawn_acceptor(&listener, acceptors.len())?);
        }
        // While a connection waits in the backlog although every acceptor is
        // busy (each in a handshake with a client that does not answer),
        // add acceptors, up to a bound.
        loop {
            if *lock(&self.stopped) {
                break;
            }
            let waiting = sys::wait_readable(
                listener.as_fd(),
                Some(Instant::now() + Duration::from_millis(50)),
            )
            .unwrap_or(false);
            if !waiting {
                continue;
            }
            std::thread::sleep(BUSY_GRACE);
            let still = sys::wait_readable(listener.as_fd(), Some(Instant::now())).unwrap_or(false);
            if still && !*lock(&self.stopped) && acceptors.len() < MAX_ACCEPTORS {
                if let Ok(a) = self.spawn_acceptor(&listener, acceptors.len()) {
                    acceptors.push(a);
                }
            }
        }
        // Wake every acceptor with a connection that fails its handshake:
        // each then sees `stopping` and ends. (Shutting the listening socket
        // down instead would leave it readable with nothing to accept, and
        // `accept` would poll it in a busy loop.)
        for _ in 0..acceptors.len() {
            if Client::connect(listener.address(), None).is_err() {
                let _ = rustix::net::shutdown(listener.as_fd(), rustix::net::Shutdown::Read);
                break;
            }
        }
        drop(listener);
        for a in acceptors {
            let _ = a.join();
        }
        let live: Vec<Arc<Link>> = lock(&self.live).values().cloned().collect();
        for c in live {
            c.wake();
        }
        self.registry.clear_names();
        Ok(())
    }

    fn spawn_acceptor(
        self: &Arc<Self>,
        listener: &Arc<Listener>,
        n: usize,
    ) -> Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        let l = listener.clone();
        Ok(std::thread::Builder::new()
            .name(format!("manager-accept-{n}"))
            .spawn(move || me.accept_loop(&l))?)
    }

    fn accept_loop(self: Arc<Self>, listener: &Listener) {
        while !self.stopping.load(Ordering::Acquire) {
            let conn = match listener.accept() {
                Ok(c) => c,
                Err(_) if self.stopping.load(Ordering::Acquire) => break,
                // Out of descriptors or memory: back off instead of spinning.
                Err(crate::Error::Io(e)) if e.raw_os_error().is_some() => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                // A client that failed the handshake: refuse it, keep serving.
                Err(_) => continue,
            };
            if self.stopping.load(Ordering::Acquire) {
                break;
            }
            let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
            let conn = Arc::new(Link::new(conn));
            lock(&self.live).insert(id, conn.clone());
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{CONN_THREAD_PREFIX}{id}"))
                .spawn(move || me.serve_connection(id, conn));
            if spawned.is_err() {
                lock(&self.live).remove(&id);
            }
        }
    }

    fn request_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        *lock(&self.stopped) = true;
    }

    fn serve_connection(self: Arc<Self>, conn_id: ConnId, conn: Arc<Link>) {
        let mut held: Vec<ObjRef> = Vec::new();
        let mut buf = Vec::new();
        // The failure of a pipelined call (`Request::Post`), until the
        // client's next other request collects it.
        let mut failed: Option<String> = None;
        loop {
            if conn.recv_bytes_into(&mut buf).is_err() || self.stopping.load(Ordering::Acquire) {
                // Closed, truncated, oversized or broken: drop this client;
                // or woken because the server stops (see `Link::wake`).
                break;
            }
            let reply = match crate::codec::decode_borrowed::<Request<'_>>(&buf) {
                Ok((Request::Pipes { cpu }, _)) => {
                    if conn.offer_pipes(cpu).is_err() {
                        break;
                    }
                    continue;
                }
                Ok((Request::Post { id, method, refs }, args)) => {
                    if failed.is_none() {
                        match self.call(conn_id, &conn, &held, id, method, &refs, args) {
                            Some(Reply::Ok(v)) => Out::recycle(v.bytes.0),
                            Some(r) => failed = Some(failure_text(r)),
                            None => break,
                        }
                    }
                    continue;
                }
                Ok(_) if failed.is_some() => failed.take().map(Reply::Deferred),
                Ok((req, args)) => self.handle(conn_id, &conn, &mut held, req, args),
                Err(e) => Some(Reply::Remote(format!("malformed request: {e}"))),
            };
            let Some(reply) = reply else { break };
            if conn.send(&reply).is_err() {
                break;
            }
            if let Reply::Ok(v) = reply {
                Out::recycle(v.bytes.0);
            }
        }
        lock(&self.live).remove(&conn_id);
        for r in &held {
            r.object().client_closed(conn_id);
        }
        drop(held);
        self.registry.drop_pending_of(conn_id);
    }

    /// Answers one request; `None` ends the connection without an answer.
    fn handle(
        &self,
        conn_id: ConnId,
        conn: &Link,
        held: &mut Vec<ObjRef>,
        req: Request<'_>,
        args: &[u8],
    ) -> Option<Reply> {
        let ok = |v: &dyn erased::Enc| match v.enc() {
            Ok(bytes) => Reply::Ok(Value {
                bytes: Raw(bytes),
                refs: Vec::new(),
            }),
            Err(e) => Reply::Remote(e.to_string()),
        };
        Some(match req {
            Request::Create { typeid, refs } => {
                let refs = match self.resolve(&refs) {
                    Ok(r) => r,
                    Err(msg) => return Some(Reply::Remote(msg)),
                };
                // Held until the object exists: its arguments may name them.
                let made = match types::make_builtin(typeid, args, &refs) {
                    Some(r) => r,
                    None => match catch_unwind(|| (self.factory)(typeid, args)) {
                        Ok(Some(r)) => r,
                        Ok(None) => Err(Fail::Remote(format!("unknown type {typeid:?}"))),
                        Err(p) => Err(Fail::Remote(panic_text(&*p))),
                    },
                };
                match made {
                    Ok(obj) => {
                        let r = self.registry.insert(typeid, obj);
                        let id = r.id();
                        held.push(r);
                        ok(&id)
                    }
                    Err(f) => fail_reply(f)?,
                }
            }
            Request::Attach { id } => match self.registry.claim(id) {
                Some(r) => {
                    let t = r.typeid().to_string();
                    held.push(r);
                    ok(&t)
                }
                None => Reply::Remote(format!("object {id} no longer exists")),
            },
            Request::Call { id, method, refs } => {
                return self.call(conn_id, conn, held, id, method, &refs, args)
            }
            // Handled by the connection loop.
            Request::Post { .. } => return Some(Reply::Remote("unexpected post".into())),
            Request::Sync => ok(&()),
            // Handled by the connection loop.
            Request::Pipes { .. } => return Some(Reply::Remote("unexpected pipes request".into())),
            Request::Pending { id } => match self.registry.get(id) {
                Some(r) => {
                    self.registry.make_pending(r, conn_id);
                    ok(&())
                }
                None => Reply::Remote(format!("object {id} no longer exists")),
            },
            Request::Lookup { name } => match self.registry.lookup(name) {
                Some(r) => {
                    let v = (r.id(), r.typeid().to_string());
                    held.push(r);
                    ok(&v)
                }
                None => Reply::Remote(format!("nothing is published as {name:?}")),
            },
            Request::Publish { name, id } => match held.iter().find(|r| r.id() == id) {
                Some(r) => {
                    self.registry.publish(name, r.clone());
                    ok(&())
                }
                None => Reply::Remote(format!("this connection holds no reference to object {id}")),
            },
            Request::NumberOfObjects => ok(&(self.registry.len() as u64)),
            Request::Shutdown => {
                let _ = conn.send(&ok(&()));
                self.request_stop();
                return None;
            }
        })
    }

    /// Runs `method` on object `id`, which this connection must hold;
    /// `None` ends the connection without an answer.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        conn_id: ConnId,
        conn: &Link,
        held: &[ObjRef],
        id: ObjId,
        method: &str,
        refs: &[ObjId],
        args: &[u8],
    ) -> Option<Reply> {
        let Some(r) = held.iter().find(|r| r.id() == id) else {
            return Some(Reply::Remote(format!(
                "this connection holds no reference to object {id}"
            )));
        };
        let refs = match self.resolve(refs) {
            Ok(r) => r,
            Err(msg) => return Some(Reply::Remote(msg)),
        };
        let mut cx = CallCx::new(
            conn_id,
            conn.socket(),
            refs,
            &self.registry,
            self.address.get(),
        );
        let res = catch_unwind(AssertUnwindSafe(|| r.object().call(&mut cx, method, args)));
        Some(match res {
            Ok(Ok(out)) => self.ok_out(out, conn_id),
            Ok(Err(f)) => fail_reply(f)?,
            Err(p) => Reply::Remote(format!(
                "method {method:?} of {} panicked: {}",
                r.typeid(),
                panic_text(&*p)
            )),
        })
    }

    fn resolve(&self, ids: &[ObjId]) -> std::result::Result<Vec<ObjRef>, String> {
        resolve(&self.registry, ids)
    }

    fn ok_out(&self, out: Out, conn_id: ConnId) -> Reply {
        let ids = out.refs.iter().map(|r| r.id()).collect();
        for r in out.refs {
            self.registry.make_pending(r, conn_id);
        }
        Reply::Ok(Value {
            bytes: Raw(out.bytes),
            refs: ids,
        })
    }
}

/// What a failed pipelined call's answer says, for its `Reply::Deferred`.
fn failure_text(r: Reply) -> String {
    match r {
        Reply::Remote(m) | Reply::Deferred(m) => m,
        Reply::MethodError(Raw(b)) => match crate::codec::decode::<BuiltinError>(&b) {
            Ok(e) => crate::Error::from(e).to_string(),
            Err(_) => "the method returned an error".into(),
        },
        Reply::Ok(_) => String::new(),
    }
}

fn fail_reply(f: Fail) -> Option<Reply> {
    match f {
        Fail::Method(b) => Some(Reply::MethodError(Raw(b))),
        Fail::Remote(m) => Some(Reply::Remote(m)),
        Fail::Gone => None,
    }
}

/// The text of a panic payload.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

mod erased {
    /// Encodes a value with the codec (object-safe).
    pub(super) trait Enc {
        fn enc(&self) -> crate::Result<Vec<u8>>;
    }
    impl<T: serde::Serialize> Enc for T {
        fn enc(&self) -> crate::Result<Vec<u8>> {
            let mut b = super::Out::spare();
            crate::codec::encode_into(self, &mut b)?;
            Ok(b)
        }
    }
}
