//! The server's objects and their reference counts.
//!
//! Every object lives in one [`Registry`] slot with a count of references.
//! A reference is held by
//!
//! - a client connection (one per proxy: dropping the proxy closes the
//!   connection, and a process that dies closes all of its connections, even
//!   under `SIGKILL`), as an [`ObjRef`] owned by that connection's thread;
//! - a stored value that contains a proxy (a dict value, a queue item), as
//!   an [`ObjRef`] inside the container;
//! - a *pending* reference: a proxy in transit (serialized into process
//!   arguments, a message, or a reply) that a new connection will claim.
//!   A pending reference belongs to the connection that left it, and is
//!   dropped when that connection closes if nobody claimed it.
//!
//! When the count reaches zero the object is removed and dropped (CPython's
//! `Server.decref`), which drops the references its own stored values hold.
//!
//! An [`Object`] is called with a [`CallCx`]: what a method sees of its
//! caller (its connection, the server's objects, the server's address).

use super::token::WireAddr;
use super::wire::ObjId;
use crate::connection::Connection;
use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Identifies a client connection within a server.
pub(crate) type ConnId = u64;

/// What a call produced: the encoded result and the objects it refers to.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub(crate) bytes: Vec<u8>,
    pub(crate) refs: Vec<ObjRef>,
}

/// Results of calls grown past this are not kept for the next one.
const KEEP_RESULT: usize = 64 << 10;

thread_local! {
    /// The serving thread's spare result buffer: [`Out::encode`] encodes a
    /// result into it, and the server hands it back with [`Out::recycle`]
    /// once the answer is sent, so a call allocates no result buffer.
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Out {
    /// Encodes `value` as a call's result, with the objects it refers to.
    pub(crate) fn encode<T: serde::Serialize + ?Sized>(
        value: &T,
        refs: Vec<ObjRef>,
    ) -> Result<Out, Fail> {
        let mut bytes = Out::spare();
        crate::codec::encode_into(value, &mut bytes)?;
        Ok(Out { bytes, refs })
    }

    /// This thread's spare result buffer, empty (a new one if it is out).
    pub(crate) fn spare() -> Vec<u8> {
        let mut bytes = SPARE.take();
        bytes.clear();
        bytes
    }

    /// Keeps the buffer of a result whose answer has been sent for the
    /// next call of this thread (unless it grew large).
    pub(crate) fn recycle(bytes: Vec<u8>) {
        if bytes.capacity() <= KEEP_RESULT {
            SPARE.set(bytes);
        }
    }
}

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The method's own error, encoded (goes back as `Reply::MethodError`).
    Method(Vec<u8>),
    /// The server could not carry out the call (goes back as `Reply::Remote`).
    Remote(String),
    /// The calling client went away while the call was blocked: no answer.
    Gone,
}

impl Fail {
    pub(crate) fn remote(msg: impl fmt::Display) -> Fail {
        Fail::Remote(msg.to_string())
    }
}

impl From<crate::Error> for Fail {
    fn from(e: crate::Error) -> Fail {
        Fail::Remote(e.to_string())
    }
}

/// A shared object as the server sees it.
pub(crate) trait Object: Send + Sync + 'static {
    /// Runs `method` with the encoded `args`.
    fn call(&self, cx: &mut CallCx<'_>, method: &str, args: &[u8]) -> Result<Out, Fail>;

    /// Called when the connection `conn` closes: release what it held inside
    /// this object (a lock, say). Default: nothing.
    fn client_closed(&self, _conn: ConnId) {}

    /// The lock inside a `Lock` or `RLock` object (its
    /// `types::sync::LockCore`), for a `Condition` built on it, which
    /// downcasts it. Default: not a lock.
    fn lock_core(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        None
    }
}

pub(crate) struct Entry {
    pub(crate) id: ObjId,
    pub(crate) typeid: String,
    pub(crate) obj: Box<dyn Object>,
}

struct Slot {
    entry: Arc<Entry>,
    count: u64,
}

#[derive(Default)]
struct Inner {
    objects: HashMap<ObjId, Slot>,
    /// Pending references, by object: the connections that left them.
    pending: HashMap<ObjId, Vec<ConnId>>,
}

/// All objects of one server.
#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    names: Mutex<HashMap<String, ObjRef>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("objects", &self.len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    pub(crate) fn new() -> Arc<Registry> {
        Arc::new(Registry {
            next_id: AtomicU64::new(1),
            ..Registry::default()
        })
    }

    /// How many objects are alive.
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).objects.len()
    }

    /// Adds an object; the returned reference is its only one.
    pub(crate) fn insert(self: &Arc<Self>, typeid: &str, obj: Box<dyn Object>) -> ObjRef {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            id,
            typeid: typeid.to_string(),
            obj,
        });
        lock(&self.inner).objects.insert(
            id,
            Slot {
                entry: entry.clone(),
                count: 1,
            },
        );
        ObjRef {
            reg: self.clone(),
            entry,
        }
    }

    /// A new reference to `id`, if it still exists.
    pub(crate) fn get(self: &Arc<Self>, id: ObjId) -> Option<ObjRef> {
        let mut g = lock(&self.inner);
        let slot = g.objects.get_mut(&id)?;
        slot.count += 1;
        Some(ObjRef {
            reg: self.clone(),
            entry: slot.entry.clone(),
        })
    }

    /// Turns `r` into a pending reference left by `conn`.
    pub(crate) fn make_pending(&self, r: ObjRef, conn: ConnId) {
        let id = r.entry.id;
        lock(&self.inner).pending.entry(id).or_default().push(conn);
        // The count `r` stood for now belongs to the pending entry.
        std::mem::forget(r);
    }

    /// Claims a pending reference to `id` (or takes a new one if none is
    /// pending and the object exists).
    pub(crate) fn claim(self: &Arc<Self>, id: ObjId) -> Option<ObjRef> {
        let mut g = lock(&self.inner);
        if let Some(list) = g.pending.get_mut(&id) {
            if list.pop().is_some() {
                if list.is_empty() {
                    g.pending.remove(&id);
                }
                let entry = g.objects.get(&id)?.entry.clone();
                return Some(ObjRef {
                    reg: self.clone(),
                    entry,
                });
            }
        }
        drop(g);
        self.get(id)
    }

    /// Drops the pending references `conn` left and nobody claimed.
    pub(crate) fn drop_pending_of(&self, conn: ConnId) {
        let mut ids = Vec::new();
        {
            let mut g = lock(&self.inner);
            g.pending.retain(|id, list| {
                list.retain(|c| {
                    if *c == conn {
                        ids.push(*id);
                        false
                    } else {
                        true
                    }
                });
                !list.is_empty()
            });
        }
        for id in ids {
            self.release(id);
        }
    }

    /// Drops one reference to `id`; frees the object at zero.
    fn release(&self, id: ObjId) {
        let freed = {
            let mut g = lock(&self.inner);
            match g.objects.get_mut(&id) {
                Some(slot) if slot.count > 1 => {
                    slot.count -= 1;
                    None
                }
                Some(_) => g.objects.remove(&id),
                None => None,
            }
        };
        // Dropped outside the lock: the object may hold references itself.
        drop(freed);
    }

    /// Publishes `r` under `name`, replacing any earlier object.
    pub(crate) fn publish(&self, name: &str, r: ObjRef) {
        let old = lock(&self.names).insert(name.to_string(), r);
        drop(old);
    }

    /// The object published under `name`.
    pub(crate) fn lookup(&self, name: &str) -> Option<ObjRef> {
        lock(&self.names).get(name).cloned()
    }

    /// Drops every published object (at shutdown).
    pub(crate) fn clear_names(&self) {
        let names = std::mem::take(&mut *lock(&self.names));
        drop(names);
    }
}

/// One counted reference to an object. Cloning adds a reference; dropping
/// removes one.
pub(crate) struct ObjRef {
    reg: Arc<Registry>,
    entry: Arc<Entry>,
}

impl ObjRef {
    pub(crate) fn id(&self) -> ObjId {
        self.entry.id
    }

    pub(crate) fn typeid(&self) -> &str {
        &self.entry.typeid
    }

    pub(crate) fn object(&self) -> &dyn Object {
        &*self.entry.obj
    }
}

impl Clone for ObjRef {
    fn clone(&self) -> ObjRef {
        let mut g = lock(&self.reg.inner);
        if let Some(slot) = g.objects.get_mut(&self.entry.id) {
            slot.count += 1;
        }
        ObjRef {
            reg: self.reg.clone(),
            entry: self.entry.clone(),
        }
    }
}

impl Drop for ObjRef {
    fn drop(&mut self) {
        self.reg.release(self.entry.id);
    }
}

impl fmt::Debug for ObjRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjRef({} {})", self.entry.typeid, self.entry.id)
    }
}

/// A value stored in a container: its bytes and the objects it refers to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stored {
    pub(crate) bytes: Vec<u8>,
    pub(crate) refs: Vec<ObjRef>,
}

/// How often a call blocked in the server checks that its client is still
/// connected (a dead client's blocked call ends and its references go).
pub(crate) const LIVENESS_SLICE: Duration = Duration::from_millis(100);

/// What a method call sees of its caller.
pub(crate) struct CallCx<'a> {
    /// The calling connection (owner of locks it acquires).
    pub(crate) conn_id: ConnId,
    conn: &'a Connection,
    /// References to the objects named in the request's `refs`: they stay
    /// alive for the duration of the call.
    _refs: Vec<ObjRef>,
    registry: &'a Arc<Registry>,
    address: Option<&'a WireAddr>,
    /// When `wait` last checked that the client is still there.
    checked_at: std::cell::Cell<Option<Instant>>,
}

impl<'a> CallCx<'a> {
    /// The context of a call on connection `conn_id` (`conn`), holding
    /// `refs` (the objects the request names) for the call's duration.
    pub(crate) fn new(
        conn_id: ConnId,
        conn: &'a Connection,
        refs: Vec<ObjRef>,
        registry: &'a Arc<Registry>,
        address: Option<&'a WireAddr>,
    ) -> CallCx<'a> {
        CallCx {
            conn_id,
            conn,
            _refs: refs,
            registry,
            address,
            // Set at the first wait: most calls never wait, and skip the clock.
            checked_at: std::cell::Cell::new(None),
        }
    }

    /// `true` once the client has hung up.
    pub(crate) fn client_gone(&self) -> bool {
        use rustix::event::{poll, PollFd, PollFlags};
        let mut p = [PollFd::new(
            self.conn,
            PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR,
        )];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match poll(&mut p, Some(&zero)) {
            Ok(_) => p[0]
                .revents()
                .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR),
            Err(_) => false,
        }
    }

    /// Waits on `cv` until woken, `deadline` passes or the client goes.
    /// Returns the guard and whether the deadline has passed.
    pub(crate) fn wait<'g, T>(
        &self,
        cv: &Condvar,
        g: MutexGuard<'g, T>,
        deadline: Option<Instant>,
    ) -> std::result::Result<(MutexGuard<'g, T>, bool), (MutexGuard<'g, T>, Fail)> {
        let now = Instant::now();
        if let Some(d) = deadline {
            if now >= d {
                return Ok((g, true));
            }
        }
        let slice = match deadline {
            Some(d) => (d - now).min(LIVENESS_SLICE),
            None => LIVENESS_SLICE,
        };
        let (g, _) = cv.wait_timeout(g, slice).unwrap_or_else(|e| e.into_inner());
        // Check the client about once a slice, not at every wake-up (a call
        // that hands something out checks `client_gone` itself first).
        let started = now;
        let now = Instant::now();
        let checked = self.checked_at.get().unwrap_or_else(|| {
            self.checked_at.set(Some(started));
            started
        });
        if now.duration_since(checked) >= LIVENESS_SLICE {
            self.checked_at.set(Some(now));
            if self.client_gone() {
                return Err((g, Fail::Gone));
            }
        }
        let passed = deadline.is_some_and(|d| Instant::now() >= d);
        Ok((g, passed))
    }

    /// New references to the objects `ids`.
    pub(crate) fn resolve(&self, ids: &[ObjId]) -> std::result::Result<Vec<ObjRef>, String> {
        resolve(self.registry, ids)
    }

    /// The server's own address.
    pub(crate) fn address(&self) -> Option<&WireAddr> {
        self.address
    }

    /// The server's objects (to leave references pending on behalf of an
    /// object, see [`Registry::make_pending`]).
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        self.registry
    }

    /// Sends `fds` to the client ahead of this call's answer, each in a
    /// frame of its own holding [`FD_FRAME`](super::wire::FD_FRAME) (see
    /// the [wire](super::wire) docs). Only over a Unix socket.
    pub(crate) fn send_fds(&self, fds: &[std::os::fd::BorrowedFd<'_>]) -> crate::Result<()> {
        for fd in fds {
            self.conn
                .send_bytes_with_fd(super::wire::FD_FRAME, fd.as_fd())?;
        }
        Ok(())
    }
}

/// New references to the objects `ids`.
pub(crate) fn resolve(
    registry: &Arc<Registry>,
    ids: &[ObjId],
) -> std::result::Result<Vec<ObjRef>, String> {
    if ids.is_empty() {
        // Most calls: no value holding proxies.
        return Ok(Vec::new());
    }
    ids.iter()
        .map(|&id| {
            registry
                .get(id)
                .ok_or_else(|| format!("object {id} no longer exists"))
        })
        .collect()
}
