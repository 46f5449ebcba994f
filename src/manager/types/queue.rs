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

mod proxy;

pub use proxy::{JoinableQueueProxy, QueueProxy};

use super::{args, args_in, err, ok, unknown, Wait};
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff};
use crate::manager::fault::BuiltinError;
use crate::manager::registry::{
    CallCx, ConnId, Fail, ObjRef, Object, Out, Registry, LIVENESS_SLICE,
};
use crate::manager::token::WireAddr;
use crate::manager::wire::{Raw, ValueRef};
use crate::queue::flavor::{Joinable, Plain};
use crate::queue::{Builder, GenericQueue};
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
/// `slice`: between two, `gone` says whether the peer (the client for the
/// server, the server for a proxy) has gone, which ends the wait with
/// `Ok(None)`.
pub(super) fn in_slices<R>(
    wait: Wait,
    slice: Duration,
    mut gone: impl FnMut() -> bool,
    mut f: impl FnMut(Option<Instant>) -> Result<R>,
) -> Result<Option<R>> {
    let deadline = wait.deadline();
    loop {
        let end = Instant::now() + slice;
        let last = deadline.is_some_and(|d| d <= end);
        match f(if last { deadline } else { Some(end) }) {
            Err(e) if !last && timed_out(&e) => {
                if gone() {
                    return Ok(None);
                }
            }
            r => return r.map(Some),
        }
    }
}

/// [`in_slices`] of [`LIVENESS_SLICE`], ending once the client has gone.
fn sliced_for<R>(
    cx: &CallCx<'_>,
    wait: Wait,
    f: impl FnMut(Option<Instant>) -> Result<R>,
) -> std::result::Result<R, Fail> {
    match in_slices(wait, LIVENESS_SLICE, || cx.client_gone(), f) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(Fail::Gone),
        Err(e) => Err(fail_of(e)),
    }
}

impl QueueObj {
    fn joinable(&self) -> Option<&GenericQueue<(), Joinable>> {
        match &self.shm {
            Shm::Joinable(q) => Some(q),
            Shm::Plain(_) => None,
        }
    }

    fn put(&self, cx: &CallCx<'_>, v: ValueRef<'_>, wait: Wait) -> std::result::Result<Out, Fail> {
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
            |d| with_shm!(&self.shm, q => q.put_encoded(v.bytes.0, d)),
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
                let (v, wait): (ValueRef<'_>, Wait) = args_in(a)?;
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
                sliced_for(cx, wait, |d| q.join_deadline(d))?;
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
