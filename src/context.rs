//! Contexts (CPython's `multiprocessing.get_context`): a start method and
//! the same constructors as the crate root.
//!
//! Start methods and the process-wide default live in
//! [`process`](crate::process); this module is a facade over the whole
//! crate, so nothing below it depends on it.
//!
//! Every object here works under every start method: queues, locks, pipes
//! and shared memory are descriptors handed to children at start (see
//! [`handoff`](crate::handoff)), so an object created through one context can
//! be passed to a process of another, unlike CPython's fork-only objects.

use crate::connection::{Connection, Pipe};
use crate::error::Result;
use crate::manager::{Manager, ManagerBuilder};
use crate::pool::{Pool, PoolBuilder};
use crate::process::{get_start_method, Builder, Preload, StartMethod};
use crate::queue::{JoinableQueue, Queue, SimpleQueue};
use crate::shared::{Array, Value};
use crate::sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
use bytemuck::Pod;
use serde::{de::DeserializeOwned, Serialize};

/// A start method to build processes and pools with, plus the crate's
/// constructors (Python's context objects).
///
/// ```
/// use multiproc::{get_context, StartMethod};
///
/// # fn main() -> multiproc::Result<()> {
/// # multiproc::init();
/// let ctx = get_context(StartMethod::Fork);
/// let q = ctx.queue::<u32>()?;
/// let mut p = ctx.process().start(|q: multiproc::Queue<u32>| q.put(7).unwrap(), (q.clone(),))?;
/// assert_eq!(q.get()?, 7);
/// p.join()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    method: StartMethod,
}

impl Context {
    /// A context for `method`.
    pub fn new(method: StartMethod) -> Context {
        Context { method }
    }

    /// The context's start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// A process builder using this context's start method (Python's
    /// `ctx.Process`).
    pub fn process(&self) -> Builder {
        Builder::new().start_method(self.method)
    }

    /// Sets the functions a fork server runs once when it starts (CPython's
    /// `ctx.set_forkserver_preload`): the same process-wide list as
    /// [`set_forkserver_preload`](crate::process::set_forkserver_preload),
    /// whatever this context's method. Applies to fork servers started
    /// afterwards: call it before the first forkserver start.
    ///
    /// ```
    /// use multiproc::process::Preload;
    /// use multiproc::{get_context, StartMethod};
    ///
    /// fn warm_up() { /* load tables, open libraries, ... */ }
    ///
    /// get_context(StartMethod::Forkserver).set_forkserver_preload(&[Preload::new(warm_up)]);
    /// ```
    pub fn set_forkserver_preload(&self, fns: &[Preload]) {
        crate::process::set_forkserver_preload(fns)
    }

    /// A pool builder whose workers start with this context's method.
    pub fn pool_builder(&self) -> PoolBuilder {
        Pool::builder().start_method(self.method)
    }

    /// A pool of `processes` workers started with this context's method
    /// (Python's `ctx.Pool(processes)`).
    ///
    /// # Errors
    ///
    /// As [`Pool::new`].
    pub fn pool(&self, processes: usize) -> Result<Pool> {
        self.pool_builder().processes(processes).build()
    }

    /// A manager builder whose server process starts with this context's
    /// method.
    pub fn manager_builder(&self) -> ManagerBuilder {
        Manager::builder().start_method(self.method)
    }

    /// Starts a [`Manager`] with this context's method (Python's
    /// `ctx.Manager()`).
    ///
    /// # Errors
    ///
    /// As [`ManagerBuilder::start`].
    pub fn manager(&self) -> Result<Manager> {
        self.manager_builder().start()
    }

    /// An unbounded [`Queue`].
    ///
    /// # Errors
    ///
    /// As [`Queue::new`].
    pub fn queue<T: Serialize + DeserializeOwned + 'static>(&self) -> Result<Queue<T>> {
        Queue::new()
    }

    /// A [`SimpleQueue`].
    ///
    /// # Errors
    ///
    /// As [`SimpleQueue::new`].
    pub fn simple_queue<T: Serialize + DeserializeOwned + 'static>(
        &self,
    ) -> Result<SimpleQueue<T>> {
        SimpleQueue::new()
    }

    /// A [`JoinableQueue`].
    ///
    /// # Errors
    ///
    /// As [`JoinableQueue::new`].
    pub fn joinable_queue<T: Serialize + DeserializeOwned + 'static>(
        &self,
    ) -> Result<JoinableQueue<T>> {
        JoinableQueue::new()
    }

    /// A pair of connected [`Connection`]s (Python's `ctx.Pipe(duplex)`).
    ///
    /// # Errors
    ///
    /// As [`Pipe::new`].
    pub fn pipe(&self, duplex: bool) -> Result<(Connection, Connection)> {
        Pipe::new(duplex)
    }

    /// A [`Lock`].
    ///
    /// # Errors
    ///
    /// As [`Lock::new`].
    pub fn lock(&self) -> Result<Lock> {
        Lock::new()
    }

    /// An [`RLock`].
    ///
    /// # Errors
    ///
    /// As [`RLock::new`].
    pub fn rlock(&self) -> Result<RLock> {
        RLock::new()
    }

    /// A [`Semaphore`] with initial `value`.
    ///
    /// # Errors
    ///
    /// As [`Semaphore::new`].
    pub fn semaphore(&self, value: u32) -> Result<Semaphore> {
        Semaphore::new(value)
    }

    /// A [`BoundedSemaphore`] with initial and maximum `value`.
    ///
    /// # Errors
    ///
    /// As [`BoundedSemaphore::new`].
    pub fn bounded_semaphore(&self, value: u32) -> Result<BoundedSemaphore> {
        BoundedSemaphore::new(value)
    }

    /// A [`Condition`] over a new [`RLock`].
    ///
    /// # Errors
    ///
    /// As [`Condition::new`].
    pub fn condition(&self) -> Result<Condition<RLock>> {
        Condition::new()
    }

    /// An [`Event`].
    ///
    /// # Errors
    ///
    /// As [`Event::new`].
    pub fn event(&self) -> Result<Event> {
        Event::new()
    }

    /// A [`Barrier`] for `parties` parties.
    ///
    /// # Errors
    ///
    /// As [`Barrier::new`].
    pub fn barrier(&self, parties: usize) -> Result<Barrier> {
        Barrier::new(parties)
    }

    /// A shared [`Value`] with its lock.
    ///
    /// # Errors
    ///
    /// As [`Value::new`].
    pub fn value<T: Pod>(&self, value: T) -> Result<Value<T>> {
        Value::new(value)
    }

    /// A shared [`Array`] holding a copy of `items`, with its lock.
    ///
    /// # Errors
    ///
    /// As [`Array::from_slice`].
    pub fn array<T: Pod>(&self, items: &[T]) -> Result<Array<T>> {
        Array::from_slice(items)
    }
}

impl Default for Context {
    /// The context of the process-wide default start method.
    fn default() -> Context {
        Context::new(get_start_method())
    }
}

/// The context for `method` (Python's `get_context(method)`); use
/// [`Context::default()`] for the default method's (Python's
/// `get_context()`).
pub fn get_context(method: StartMethod) -> Context {
    Context::new(method)
}
