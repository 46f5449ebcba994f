//! `Queue` and `JoinableQueue` of a manager (Python's `Manager().Queue()`).
//!
//! # Design
//!
//! The server backs each managed queue with one of the crate's own
//! shared-memory queues ([`crate::queue`], flavour `Plain` or `Joinable`),
//! made when the object is made. Its items are the codec's bytes of the
//! proxies' `T`, so the server never needs `T`.
//!
//! - A proxy connected over a **Unix socket** (the default address) asks
//!   the server once, on its first queue call, for the queue's descriptors
//!   (method `share`: they come by `SCM_RIGHTS`, through the queue's own
//!   [`Handoff`] export and import), maps the queue, and from then on puts,
//!   gets, counts and joins on the shared memory itself: no round trip per
//!   item.
//! - A proxy connected over **TCP** (a remote manager), or one whose attach
//!   failed, calls the server, which does the same operations on the same
//!   queue for it: local and remote clients see one queue, in order.
//! - A value that holds proxies is put through the server, which leaves a
//!   pending reference to each of their objects on behalf of the queue (so
//!   they stay alive while the item is queued; the proxy that decodes the
//!   item claims one), and drops what is left when the queue is freed.
//! - A wait on the shared memory (a blocking `get`, a `put` on a full
//!   bounded queue, `join`) waits in slices and looks at its connection in
//!   between: once the server is gone (shut down or dead) it fails with
//!   [`Error::Closed`](crate::Error::Closed), as a call through the server
//!   would. An item that is already there is still taken, and puts and
//!   counts that need no wait keep working on the memory this process maps.
//! - Everything the server sends for `share` is checked: the number and
//!   kind of descriptors (a sealed memfd, a non-blocking eventfd), the
//!   queue's header; a server that lies gets an error (and the proxy calls
//!   the server instead), never undefined behaviour. Once mapped, the
//!   memory is read as the crate's queues read any peer's: copied out with
//!   atomic loads, every length checked. (What a hostile server can still
//!   do is what any holder of a queue can: take or garble items, or keep a
//!   waiter waiting while it lives.)

use super::{args, builtin_proxy, decode_raw, err, ok, unknown, value_of, Wait};
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::manager::fault::BuiltinError;
use crate::manager::proxy::{ProxyCore, WireAddr};
use crate::manager::registry::{ConnId, Fail, ObjRef, Object, Out, Registry};
use crate::manager::server::{CallCx, LIVENESS_SLICE};
use crate::manager::wire::{Raw, Value};
use crate::queue::flavor::{Flavor, Joinable, Plain};
use crate::queue::{Builder, GenericQueue};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::{Cell, OnceCell};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub(crate) const TYPEID: &str = "Queue";
pub(crate) const JOINABLE_TYPEID: &str = "JoinableQueue";

/// Bytes of ring per managed queue (the crate's queues default to 4 MiB;
/// items that do not fit go to the queue's spill area as usual).
const RING_BYTES: usize = 1 << 20;

/// The most descriptors a `share` answer may bring (a queue sends two).
const MAX_SHARE_FDS: usize = 4;

/// How long a proxy waits on the shared memory before it looks whether
/// the server is still there.
const SERVER_CHECK: Duration = Duration::from_millis(100);

/// How often a server thread waiting to take an item for a client looks
/// whether the client is still there, at most.
const KEEP_CHECK: Duration = Duration::from_millis(1);

/// Owners of pending references left on behalf of queues: far above any
/// connection id (those count up from 1).
static NEXT_PARK_OWNER: AtomicU64 = AtomicU64::new(1 << 63);

// ------------------------------------------------------------ server side

/// The shared-memory queue behind a managed queue, of either flavour.
enum Shm {
    Plain(GenericQueue<(), Plain>),
    Joinable(GenericQueue<(), Joinable>),
}

macro_rules! with_shm {
    ($s:expr, $q:ident => $e:expr) => {
        match $s {
            Shm::Plain($q) => $e,
            Shm::Joinable($q) => $e,
        }
    };
}

pub(crate) struct QueueObj {
    shm: Shm,
    /// The owner of the pending references this queue leaves for the
    /// proxies inside its items (see the module docs).
    park_owner: ConnId,
    /// The registry they are left in (known from the first such put).
    registry: OnceLock<Arc<Registry>>,
}

pub(crate) fn make(a: &[u8], joinable: bool) -> std::result::Result<Box<dyn Object>, Fail> {
    let maxsize: u64 = args(a)?;
    // The ring compares counts as i64: a larger maxsize is no bound at all.
    let b = Builder::default()
        .maxsize(maxsize.min(i64::MAX as u64) as usize)
        .capacity_bytes(RING_BYTES);
    let shm = if joinable {
        Shm::Joinable(b.build_flavor()?)
    } else {
        Shm::Plain(b.build_flavor()?)
    };
    Ok(Box::new(QueueObj {
        shm,
        park_owner: NEXT_PARK_OWNER.fetch_add(1, Ordering::Relaxed),
        registry: OnceLock::new(),
    }))
}

impl Drop for QueueObj {
    fn drop(&mut self) {
        if let Some(r) = self.registry.get() {
            r.drop_pending_of(self.park_owner);
        }
    }
}

/// Whether `e` is what a wait that ran out of time returns.
fn timed_out(e: &Error) -> bool {
    matches!(e, Error::Empty | Error::Full | Error::Timeout)
}

/// A queue error as the call's failure.
fn fail_of(e: Error) -> Fail {
    match e {
        Error::Empty => err(BuiltinError::Empty),
        Error::Full => err(BuiltinError::Full),
        Error::Timeout => err(BuiltinError::Timeout),
        Error::TaskDoneTooOften => err(BuiltinError::TaskDoneTooOften),
        e => Fail::Remote(e.to_string()),
    }
}

/// Takes an item for the client of `cx`, waiting as `wait` says; once the
/// client has gone, gives up without taking one ([`Fail::Gone`]): an item
/// that comes after it left stays in the queue for the living. (The check
/// runs before each attempt, at most every [`KEEP_CHECK`].)
fn take_for(cx: &CallCx<'_>, shm: &Shm, wait: Wait) -> std::result::Result<Vec<u8>, Fail> {
    let mut checked = Instant::now();
    let mut keep = || {
        if checked.elapsed() < KEEP_CHECK {
            return true;
        }
        checked = Instant::now();
        !cx.client_gone()
    };
    sliced_for(
        cx,
        wait,
        |d| with_shm!(shm, q => q.get_encoded(d, &mut keep)),
    )?
    .ok_or(Fail::Gone)
}

/// Runs the wait `f` (given a deadline) as `wait` says, in slices of
/// [`LIVENESS_SLICE`], ending it once the client has gone.
fn sliced_for<R>(
    cx: &CallCx<'_>,
    wait: Wait,
    mut f: impl FnMut(Option<Instant>) -> Result<R>,
) -> std::result::Result<R, Fail> {
    let deadline = wait.deadline();
    loop {
        let slice = Instant::now() + LIVENESS_SLICE;
        let last = deadline.is_some_and(|d| d <= slice);
        match f(if last { deadline } else { Some(slice) }) {
            Err(e) if !last && timed_out(&e) => {
                if cx.client_gone() {
                    return Err(Fail::Gone);
                }
            }
            r => return r.map_err(fail_of),
        }
    }
}

/// `join` with a deadline, as the queue's `join_timeout` takes it.
fn join_until(q: &GenericQueue<(), Joinable>, deadline: Option<Instant>) -> Result<()> {
    match deadline {
        None => q.join(),
        Some(d) => q.join_timeout(d.saturating_duration_since(Instant::now())),
    }
}

impl QueueObj {
    fn joinable(&self) -> Option<&GenericQueue<(), Joinable>> {
        match &self.shm {
            Shm::Joinable(q) => Some(q),
            Shm::Plain(_) => None,
        }
    }

    fn put(&self, cx: &CallCx<'_>, v: Value, wait: Wait) -> std::result::Result<Out, Fail> {
        let refs = cx.resolve(&v.refs).map_err(Fail::Remote)?;
        // Left pending before the item is visible, so that a proxy that
        // takes and decodes it at once claims one of them.
        let ids: Vec<_> = refs.iter().map(ObjRef::id).collect();
        if !refs.is_empty() {
            let reg = self.registry.get_or_init(|| cx.registry().clone());
            for r in refs {
                reg.make_pending(r, self.park_owner);
            }
        }
        let put = sliced_for(
            cx,
            wait,
            |d| with_shm!(&self.shm, q => q.put_encoded(&v.bytes.0, d)),
        );
        if let Err(f) = put {
            // Not queued: take the references back (one each).
            for id in ids {
                drop(cx.registry().claim(id));
            }
            return Err(f);
        }
        // Tells the proxy whether its puts may be pipelined.
        ok(&(with_shm!(&self.shm, q => q.maxsize()) == 0))
    }

    fn get_many(&self, cx: &CallCx<'_>, max: u64, wait: Wait) -> std::result::Result<Out, Fail> {
        let mut items = vec![Raw(take_for(cx, &self.shm, wait)?)];
        while (items.len() as u64) < max {
            match with_shm!(&self.shm, q => q.get_encoded(Some(Instant::now()), || true)) {
                Ok(Some(b)) => items.push(Raw(b)),
                _ => break,
            }
        }
        ok(&items)
    }

    /// Sends the queue's descriptors to the caller (see the module docs);
    /// answers with the handoff bytes and how many descriptors went.
    fn share(&self, cx: &CallCx<'_>) -> std::result::Result<Out, Fail> {
        if !matches!(
            cx.address(),
            Some(WireAddr::Unix(_) | WireAddr::Abstract(_))
        ) {
            return Err(Fail::remote(
                "a queue's memory is shared over a Unix socket only",
            ));
        }
        let mut ex = Exporter::new();
        with_shm!(&self.shm, q => q.export(&mut ex))?;
        let (bytes, fds) = ex.into_parts();
        cx.send_fds(&fds)?;
        ok(&(Raw(bytes), fds.len() as u32))
    }
}

impl Object for QueueObj {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, a: &[u8]) -> std::result::Result<Out, Fail> {
        let shm = &self.shm;
        match method {
            "put" => {
                let (v, wait): (Value, Wait) = args(a)?;
                self.put(cx, v, wait)
            }
            "get" => {
                let wait: Wait = args(a)?;
                ok(&Some(Raw(take_for(cx, shm, wait)?)))
            }
            "get_many" => {
                let (max, wait): (u64, Wait) = args(a)?;
                self.get_many(cx, max.max(1), wait)
            }
            "qsize" => ok(&(with_shm!(shm, q => q.qsize()) as u64)),
            "empty" => ok(&with_shm!(shm, q => q.empty())),
            "full" => ok(&with_shm!(shm, q => q.full())),
            "share" => self.share(cx),
            "task_done" if self.joinable().is_some() => {
                let q = self.joinable().expect("checked");
                q.task_done().map_err(fail_of)?;
                ok(&())
            }
            "join" if self.joinable().is_some() => {
                let q = self.joinable().expect("checked");
                let wait: Wait = args(a)?;
                sliced_for(cx, wait, |d| join_until(q, d))?;
                ok(&())
            }
            _ => Err(unknown(
                if self.joinable().is_some() {
                    JOINABLE_TYPEID
                } else {
                    TYPEID
                },
                method,
            )),
        }
    }
}

// ------------------------------------------------------------ proxy side

/// How a proxy handle reaches its queue, decided at its first queue call:
/// `Some` = the shared memory, mapped here; `None` = through the server.
type Route<T, F> = OnceCell<Option<GenericQueue<T, F>>>;

/// Maps the proxy's queue if its server is reached over a Unix socket and
/// agrees; `None` (calls go through the server) otherwise.
fn attach<T, F: Flavor>(core: &ProxyCore) -> Option<GenericQueue<T, F>> {
    if !matches!(
        core.token().endpoint.address,
        WireAddr::Unix(_) | WireAddr::Abstract(_)
    ) {
        return None;
    }
    match try_attach(core) {
        Ok(q) => Some(q),
        Err(e) => {
            log::debug!(
                "{} proxy {}: shared memory refused ({e}); calling the server instead",
                core.typeid(),
                core.id()
            );
            None
        }
    }
}

fn try_attach<T, F: Flavor>(core: &ProxyCore) -> Result<GenericQueue<T, F>> {
    let ((bytes, n), fds): ((Raw, u32), Vec<OwnedFd>) =
        core.call_with_fds("share", &(), MAX_SHARE_FDS)?;
    if fds.len() != n as usize {
        return Err(Error::Remote(format!(
            "the server announced {n} descriptors and sent {}",
            fds.len()
        )));
    }
    if let Some(bad) = fds.iter().find(|fd| !plausible_fd(fd)) {
        return Err(Error::Remote(format!(
            "the server sent descriptor {} of an unexpected kind",
            bad.as_raw_fd()
        )));
    }
    let mut im = Importer::new(bytes.0, fds);
    let q = GenericQueue::<T, F>::import(&mut im)?;
    if !im.is_done() {
        return Err(Error::Remote(
            "the server's queue description has trailing bytes".into(),
        ));
    }
    Ok(q)
}

/// Whether `fd` is what a queue is made of: a memfd sealed against
/// shrinking (its region; `Region::from_fd` checks it again, and its size)
/// or a non-blocking eventfd (its doorbell: it is written when an async
/// waiter asks, and must never block the writer).
fn plausible_fd(fd: &OwnedFd) -> bool {
    use rustix::fs::{fcntl_get_seals, fcntl_getfl, OFlags, SealFlags};
    if fcntl_get_seals(fd).is_ok_and(|s| s.contains(SealFlags::SHRINK)) {
        return true;
    }
    let eventfd = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|p| p.as_os_str() == "anon_inode:[eventfd]");
    eventfd && fcntl_getfl(fd).is_ok_and(|f| f.contains(OFlags::NONBLOCK))
}

/// Runs the wait `f` on the shared memory as `wait` says, in slices of
/// [`SERVER_CHECK`]: [`Error::Closed`] once the server is gone.
fn sliced<R>(
    core: &ProxyCore,
    wait: Wait,
    mut f: impl FnMut(Option<Instant>) -> Result<R>,
) -> Result<R> {
    let deadline = wait.deadline();
    loop {
        let slice = Instant::now() + SERVER_CHECK;
        let last = deadline.is_some_and(|d| d <= slice);
        match f(if last { deadline } else { Some(slice) }) {
            Err(e) if !last && timed_out(&e) => {
                if core.server_gone() {
                    return Err(Error::Closed);
                }
            }
            r => return r,
        }
    }
}

builtin_proxy! {
    /// A proxy to a queue of the manager (Python's `Manager().Queue()`).
    /// Unlike a [`crate::Queue`] it can be reached by remote clients and
    /// stored in other managed objects.
    ///
    /// In a process connected to the manager over a Unix socket (the
    /// default), the proxy maps the queue's shared memory on its first call
    /// and puts and gets there, without a round trip; over TCP every call
    /// goes to the server. Both kinds of proxy see one queue, in order.
    /// Once the server is gone, a wait (a blocking `get`, a `put` on a full
    /// queue) fails with [`Error::Closed`](crate::Error::Closed) within a
    /// fraction of a second.
    ///
    /// ```
    /// # multiproc::init();
    /// use std::time::Duration;
    /// let manager = multiproc::manager::Manager::start()?;
    /// let q = manager.queue::<String>()?;
    /// q.put("job".to_string())?;
    /// assert_eq!(q.get()?, "job");
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "Queue")]
    QueueProxy[T] "Queue" { unbounded: Cell<Option<bool>>, route: Route<T, Plain> }
}

builtin_proxy! {
    /// A proxy to a joinable queue of the manager (Python's
    /// `Manager().JoinableQueue()`): a [`QueueProxy`]'s methods plus
    /// [`task_done`](Self::task_done) and [`join`](Self::join), whose count
    /// is shared by every proxy and process.
    ///
    /// ```
    /// # multiproc::init();
    /// let manager = multiproc::manager::Manager::start()?;
    /// let q = manager.joinable_queue::<u32>()?;
    /// q.put(1)?;
    /// assert_eq!(q.get()?, 1);
    /// q.task_done()?;
    /// q.join()?;
    /// assert!(q.task_done().is_err()); // Python's ValueError
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "JoinableQueue")]
    JoinableQueueProxy[T] "JoinableQueue" { unbounded: Cell<Option<bool>>, route: Route<T, Joinable> }
}

macro_rules! queue_methods {
    ($name:ident, $flavor:ty) => {
        impl<T: Serialize + DeserializeOwned + 'static> $name<T> {
            /// The shared memory, if this handle uses it (attaching on
            /// first use).
            fn shm(&self) -> Option<&GenericQueue<T, $flavor>> {
                self.route.get_or_init(|| attach(&self.core)).as_ref()
            }

            fn put_wait(&self, v: &T, wait: Wait) -> Result<()> {
                let value = value_of(&self.core.token().endpoint, v)?;
                if let Some(q) = self.shm() {
                    // A value holding proxies goes through the server,
                    // which keeps their objects alive while it is queued.
                    if value.refs.is_empty() {
                        return sliced(&self.core, wait, |d| q.put_encoded(&value.bytes.0, d));
                    }
                }
                if matches!(wait, Wait::Block) && self.unbounded.get() == Some(true) {
                    // Cannot block or fail: pipelined (see `put`).
                    return self.core.post("put", &(value, wait));
                }
                let unbounded: bool = self.core.call("put", &(value, wait))?;
                self.unbounded.set(Some(unbounded));
                Ok(())
            }

            fn get_wait(&self, wait: Wait) -> Result<T> {
                if let Some(q) = self.shm() {
                    return sliced(&self.core, wait, |d| q.get_deadline(d));
                }
                let r: Option<Raw> = self.core.call("get", &wait)?;
                match r {
                    Some(r) => decode_raw(&r),
                    None => Err(crate::Error::Empty),
                }
            }

            /// Puts `v`, waiting for room if the queue has a `maxsize`.
            ///
            /// Through shared memory (see the type's docs) the item is in
            /// the queue when `put` returns. Through the server (TCP), a put
            /// on an unbounded queue cannot block or fail, so it is
            /// *pipelined* (after this proxy's first put, which learns the
            /// queue's kind): sent without waiting for the server's answer.
            /// It then runs in order with this proxy's other calls (a `get`
            /// on this proxy after it sees the item), it is carried out even
            /// if this process dies right after, and other processes see it
            /// at the latest when this proxy's next other call (or
            /// [`flush`](Self::flush)) returns, or once it is dropped (a
            /// child's puts are in the queue when it has returned). Before
            /// telling another process through another channel (an event, a
            /// pipe) that items are there, call `flush`. A put of a value
            /// holding proxies, and every put on a bounded queue, waits for
            /// its answer as Python's does. Should the server fail a
            /// pipelined put all the same, the next call of this proxy (or
            /// `flush`) returns that error, and neither it nor the puts
            /// after the failed one were made.
            pub fn put(&self, v: T) -> Result<()> {
                self.put_wait(&v, Wait::Block)
            }

            /// Waits until every put of this proxy is in the queue (and
            /// reports a failed pipelined put; see [`put`](Self::put)).
            /// Costs one round trip if a put was pipelined since this
            /// proxy's last answer, nothing otherwise.
            pub fn flush(&self) -> Result<()> {
                self.core.flush()
            }

            /// Puts `v` or fails with [`Error::Full`](crate::Error::Full)
            /// at once (Python's `put_nowait`).
            #[doc(alias = "put_nowait")]
            pub fn try_put(&self, v: T) -> Result<()> {
                self.put_wait(&v, Wait::Try)
            }

            /// Puts `v`, failing with [`Error::Full`](crate::Error::Full)
            /// after `timeout`.
            pub fn put_timeout(&self, v: T, timeout: Duration) -> Result<()> {
                self.put_wait(&v, Wait::For(timeout))
            }

            /// Takes the oldest item, waiting for one.
            pub fn get(&self) -> Result<T> {
                self.get_wait(Wait::Block)
            }

            /// Takes an item or fails with [`Error::Empty`](crate::Error::Empty)
            /// at once (Python's `get_nowait`).
            #[doc(alias = "get_nowait")]
            pub fn try_get(&self) -> Result<T> {
                self.get_wait(Wait::Try)
            }

            /// Takes an item, failing with [`Error::Empty`](crate::Error::Empty)
            /// after `timeout`.
            pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
                self.get_wait(Wait::For(timeout))
            }

            /// Takes at least one item, waiting for one, and at most `max`
            /// (at least 1): the oldest ones there are, in order (in one
            /// round trip through the server). The way to drain a queue
            /// fast; the items taken are gone for other consumers even
            /// before they are used. Should an item after the first fail to
            /// decode, the items before it are returned (the bad one is
            /// consumed and logged).
            pub fn get_many(&self, max: usize) -> Result<Vec<T>> {
                self.get_many_wait(max, Wait::Block)
            }

            /// [`get_many`](Self::get_many), failing with
            /// [`Error::Empty`](crate::Error::Empty) if no item comes within
            /// `timeout` (`Duration::ZERO`: if there is none now).
            pub fn get_many_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>> {
                self.get_many_wait(max, Wait::For(timeout))
            }

            fn get_many_wait(&self, max: usize, wait: Wait) -> Result<Vec<T>> {
                let Some(q) = self.shm() else {
                    let r: Vec<Raw> = self.core.call("get_many", &(max as u64, wait))?;
                    return r.iter().map(decode_raw).collect();
                };
                let mut out = vec![sliced(&self.core, wait, |d| q.get_deadline(d))?];
                while out.len() < max {
                    match q.get_deadline(Some(Instant::now())) {
                        Ok(v) => out.push(v),
                        Err(crate::Error::Empty) => break,
                        Err(e) => {
                            log::warn!("{}::get_many: an item was dropped: {e}", stringify!($name));
                            break;
                        }
                    }
                }
                Ok(out)
            }

            /// The number of items.
            pub fn qsize(&self) -> Result<usize> {
                if let Some(q) = self.shm() {
                    return Ok(q.qsize());
                }
                Ok(self.core.call::<_, u64>("qsize", &())? as usize)
            }

            /// `true` if there are no items.
            pub fn empty(&self) -> Result<bool> {
                if let Some(q) = self.shm() {
                    return Ok(q.empty());
                }
                self.core.call("empty", &())
            }

            /// `true` if a `maxsize` is set and reached.
            pub fn full(&self) -> Result<bool> {
                if let Some(q) = self.shm() {
                    return Ok(q.full());
                }
                self.core.call("full", &())
            }

            /// Test support: makes this handle call the server for
            /// everything, as a proxy connected over TCP does (before its
            /// first queue call; `false` if that was already made).
            #[doc(hidden)]
            #[cfg(feature = "test-hooks")]
            pub fn __through_server(&self) -> bool {
                self.route.set(None).is_ok()
            }

            /// Test support: whether this handle works on the shared memory.
            #[doc(hidden)]
            #[cfg(feature = "test-hooks")]
            pub fn __shares_memory(&self) -> bool {
                matches!(self.route.get(), Some(Some(_)))
            }
        }
    };
}
queue_methods!(QueueProxy, Plain);
queue_methods!(JoinableQueueProxy, Joinable);

impl<T: Serialize + DeserializeOwned + 'static> JoinableQueueProxy<T> {
    /// Marks one taken item as processed.
    ///
    /// # Errors
    ///
    /// [`Error::TaskDoneTooOften`](crate::Error::TaskDoneTooOften) if called more times than
    /// items were put (Python's `ValueError`).
    pub fn task_done(&self) -> Result<()> {
        if let Some(q) = self.shm() {
            return q.task_done();
        }
        self.core.call("task_done", &())
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<()> {
        self.join_wait(Wait::Block)
    }

    /// [`join`](Self::join), failing with [`Error::Timeout`](crate::Error::Timeout)
    /// after `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_wait(Wait::For(timeout))
    }

    fn join_wait(&self, wait: Wait) -> Result<()> {
        if let Some(q) = self.shm() {
            return sliced(&self.core, wait, |d| match d {
                None => q.join(),
                Some(d) => q.join_timeout(d.saturating_duration_since(Instant::now())),
            });
        }
        self.core.call("join", &wait)
    }
}
