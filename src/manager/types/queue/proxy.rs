//! The proxy side of a managed queue: [`QueueProxy`] and
//! [`JoinableQueueProxy`], which map the queue's shared memory when they
//! can and call the server otherwise (see the [parent module](super)).

use super::super::{builtin_proxy, decode_all, decode_opt, with_value, Wait};
use super::MAX_SHARE_FDS;
use crate::error::{Error, Result};
use crate::handoff::{Handoff, Importer};
use crate::manager::proxy::ProxyCore;
use crate::manager::token::WireAddr;
use crate::manager::wire::Raw;
use crate::queue::flavor::{Flavor, Joinable, Plain};
use crate::queue::GenericQueue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::{Cell, OnceCell};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long a proxy waits on the shared memory before it looks whether
/// the server is still there.
const SERVER_CHECK: Duration = Duration::from_millis(100);

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
    f: impl FnMut(Option<Instant>) -> Result<R>,
) -> Result<R> {
    super::in_slices(wait, SERVER_CHECK, || core.server_gone(), f)?.ok_or(Error::Closed)
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
                with_value(&self.core, v, |value| {
                    if let Some(q) = self.shm() {
                        // A value holding proxies goes through the server,
                        // which keeps their objects alive while it is queued.
                        if value.refs.is_empty() {
                            return sliced(&self.core, wait, |d| q.put_encoded(value.bytes.0, d));
                        }
                    }
                    // Cannot block or fail: pipelined (see `put`). Not with
                    // proxies inside: their objects must be in the queue
                    // before this call returns and the caller drops them.
                    if matches!(wait, Wait::Block)
                        && self.unbounded.get() == Some(true)
                        && value.refs.is_empty()
                    {
                        return self.core.post("put", &(value, wait));
                    }
                    let unbounded: bool = self.core.call("put", &(value, wait))?;
                    self.unbounded.set(Some(unbounded));
                    Ok(())
                })
            }

            fn get_wait(&self, wait: Wait) -> Result<T> {
                if let Some(q) = self.shm() {
                    return sliced(&self.core, wait, |d| q.get_deadline(d));
                }
                match self.core.call_with("get", &wait, decode_opt)? {
                    Some(v) => Ok(v),
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
                    return self
                        .core
                        .call_with("get_many", &(max as u64, wait), decode_all);
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
            return sliced(&self.core, wait, |d| q.join_deadline(d));
        }
        self.core.call("join", &wait)
    }
}
