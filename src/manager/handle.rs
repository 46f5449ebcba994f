//! [`Manager`]: the handle to a running server, which creates shared
//! objects there, publishes and looks them up, and shuts the server down.

use super::custom::Managed;
use super::fault::answer_in;
use super::proxy::ProxyCore;
use super::token::{Endpoint, WireAddr};
use super::types::sync::ConditionLock;
use super::wire::{Raw, Reply, Request};
use super::{
    ArrayProxy, BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, DictProxy, EventProxy,
    JoinableQueueProxy, ListProxy, LockProxy, NamespaceProxy, Proxy, QueueProxy, RLockProxy,
    SemaphoreProxy, ValueProxy,
};
use crate::codec;
use crate::connection::{Address, Connection};
use crate::error::{Error, Result};
use crate::process::Process;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A running manager: the handle to its server (Python's `SyncManager`
/// after `start()`, or a `BaseManager` after `connect()`). Its methods
/// create shared objects in the server and return proxies to them.
///
/// **Drop**: a manager that started its server shuts it down (objects die
/// with it; proxies then fail with connection errors); a connected one
/// just disconnects.
#[doc(alias = "SyncManager")]
#[doc(alias = "BaseManager")]
pub struct Manager {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) process: Mutex<Option<Process<()>>>,
    pub(super) control: Mutex<Option<Connection>>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

/// How long [`Manager::shutdown`] waits for the server process to exit
/// before killing it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Manager {
    /// Connects to a running manager's server (Python's
    /// `BaseManager(address, authkey).connect()`), here or on another machine.
    ///
    /// # Errors
    ///
    /// [`Error::AuthenticationFailed`] for a wrong key; I/O errors if
    /// nothing listens there.
    pub fn connect(address: &Address, authkey: &[u8]) -> Result<Manager> {
        let endpoint = Arc::new(Endpoint {
            address: WireAddr::from(address),
            authkey: authkey.to_vec(),
        });
        let control = endpoint.connect()?;
        Ok(Manager {
            endpoint,
            process: Mutex::new(None),
            control: Mutex::new(Some(control)),
        })
    }

    /// The server's address (with the actual port for TCP port 0).
    pub fn address(&self) -> Address {
        Address::from(&self.endpoint.address)
    }

    /// The key clients use.
    pub fn authkey(&self) -> &[u8] {
        &self.endpoint.authkey
    }

    /// The server process's pid, if this manager started it.
    pub fn pid(&self) -> Option<i32> {
        lock(&self.process).as_ref().map(|p| p.pid())
    }

    fn control<R: DeserializeOwned>(&self, req: &Request<'_>) -> Result<R> {
        let g = lock(&self.control);
        let conn = g.as_ref().ok_or(Error::Closed)?;
        conn.send_bytes(&codec::encode(req)?)?;
        codec::decode(answer_in(&conn.recv_bytes()?)?.result()?)
    }

    /// How many objects the server holds (CPython's `_number_of_objects`,
    /// used by its tests).
    pub fn number_of_objects(&self) -> Result<usize> {
        Ok(self.control::<u64>(&Request::NumberOfObjects)? as usize)
    }

    fn make<P: Proxy, A: Serialize + ?Sized>(&self, args: &A) -> Result<P> {
        Ok(P::from_core(ProxyCore::create(
            &self.endpoint,
            P::TYPEID,
            args,
        )?))
    }

    /// A new shared list holding `items` (Python's `manager.list(items)`).
    pub fn list_from<T: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ListProxy<T>> {
        let l = self.list()?;
        l.extend(items)?;
        Ok(l)
    }

    /// A new shared value (Python's `manager.Value(typecode, v)`).
    #[doc(alias = "Value")]
    pub fn value<T: Serialize + DeserializeOwned>(&self, v: T) -> Result<ValueProxy<T>> {
        self.make::<ValueProxy<T>, _>(&Raw(codec::encode(&v)?))
    }

    /// A new shared fixed-length array (Python's `manager.Array(typecode, seq)`).
    #[doc(alias = "Array")]
    pub fn array<T: Serialize + DeserializeOwned>(&self, items: Vec<T>) -> Result<ArrayProxy<T>> {
        let raw = items
            .iter()
            .map(|v| Ok(Raw(codec::encode(v)?)))
            .collect::<Result<Vec<Raw>>>()?;
        self.make::<ArrayProxy<T>, _>(&raw)
    }

    /// A new condition variable over `lock`, a managed [`LockProxy`] or
    /// [`RLockProxy`] of this manager (Python's `manager.Condition(lock)`):
    /// acquiring the condition acquires that lock, which its own proxies
    /// see taken.
    ///
    /// ```
    /// # multiproc::init();
    /// let manager = multiproc::manager::Manager::start()?;
    /// let lock = manager.lock()?;
    /// let c = manager.condition_with(&lock)?;
    /// c.acquire()?;
    /// assert!(lock.locked()?);
    /// c.release()?;
    /// assert!(!lock.locked()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if `lock` belongs to another manager.
    #[doc(alias = "Condition")]
    pub fn condition_with<L: ConditionLock>(&self, lock: &L) -> Result<ConditionProxy> {
        if lock.core().token().endpoint.address != self.endpoint.address {
            return Err(Error::Invalid(
                "a condition's lock must belong to the same manager".into(),
            ));
        }
        self.make(&Some(lock.core()))
    }

    /// Moves `value` into the server and returns its proxy (Python's
    /// `manager.TypeId(...)` for a registered type). `T` must have been
    /// [registered](super::ManagerBuilder::register) with the server.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server does not know `T`.
    pub fn create<T: Managed + Serialize>(&self, value: T) -> Result<T::Proxy> {
        Ok(T::Proxy::from_core(ProxyCore::create(
            &self.endpoint,
            T::TYPEID,
            &value,
        )?))
    }

    /// Publishes `proxy`'s object under `name` for as long as the server
    /// runs, for other programs to [`lookup`](Self::lookup) (CPython's
    /// `register('get_queue', callable=lambda: queue)` on the server side).
    pub fn publish<P: Proxy>(&self, name: &str, proxy: &P) -> Result<()> {
        proxy.core().publish_as(name)
    }

    /// A proxy to the object published under `name` (CPython's
    /// `manager.get_queue()` on the client side).
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if nothing is published under `name`;
    /// [`Error::Invalid`] if it is not a `P::TYPEID`.
    pub fn lookup<P: Proxy>(&self, name: &str) -> Result<P> {
        let core = ProxyCore::lookup(&self.endpoint, name)?;
        if core.typeid() != P::TYPEID {
            return Err(Error::Invalid(format!(
                "{name:?} is a {}, not a {}",
                core.typeid(),
                P::TYPEID
            )));
        }
        Ok(P::from_core(core))
    }

    /// Stops the server (Python's `manager.shutdown()`): its objects are
    /// freed and proxies to them fail from now on. For a manager that
    /// started its server, waits for the process to exit (killing it after
    /// a grace period). Calling it again does nothing.
    pub fn shutdown(&self) -> Result<()> {
        let control = lock(&self.control).take();
        let res = match control {
            Some(c) => {
                let sent = c.send_bytes(&codec::encode(&Request::Shutdown)?);
                let _ = c.recv::<Reply>();
                sent
            }
            None => Ok(()),
        };
        if let Some(mut p) = lock(&self.process).take() {
            match p.join_timeout(SHUTDOWN_GRACE) {
                Ok(()) => {}
                Err(Error::Timeout) => {
                    let _ = p.kill();
                    let _ = p.join();
                }
                Err(_) => {}
            }
        }
        res
    }
}

/// The constructors that only pass their arguments on: name, proxy type,
/// parameters, what the server gets.
macro_rules! constructors {
    ($($(#[$m:meta])* fn $name:ident$(<$($g:ident),*>)?($($arg:ident: $t:ty),*) -> $proxy:ty = $args:expr;)*) => {
        impl Manager {
            $(
                $(#[$m])*
                pub fn $name$(<$($g: Serialize + DeserializeOwned),*>)?(&self, $($arg: $t),*) -> Result<$proxy> {
                    self.make(&$args)
                }
            )*
        }
    };
}

constructors! {
    /// A new shared dict (Python's `manager.dict()`).
    fn dict<K, V>() -> DictProxy<K, V> = ();
    /// A new shared list (Python's `manager.list()`).
    fn list<T>() -> ListProxy<T> = Vec::<Raw>::new();
    /// A new namespace (Python's `manager.Namespace()`).
    #[doc(alias = "Namespace")]
    fn namespace() -> NamespaceProxy = ();
    /// A new unbounded queue (Python's `manager.Queue()`).
    #[doc(alias = "Queue")]
    fn queue<T>() -> QueueProxy<T> = 0u64;
    /// A new queue holding at most `maxsize` items (`0`: unbounded).
    fn queue_with_maxsize<T>(maxsize: usize) -> QueueProxy<T> = maxsize as u64;
    /// A new joinable queue (Python's `manager.JoinableQueue()`).
    #[doc(alias = "JoinableQueue")]
    fn joinable_queue<T>() -> JoinableQueueProxy<T> = 0u64;
    /// A new lock (Python's `manager.Lock()`).
    #[doc(alias = "Lock")]
    fn lock() -> LockProxy = ();
    /// A new re-entrant lock (Python's `manager.RLock()`).
    #[doc(alias = "RLock")]
    fn rlock() -> RLockProxy = ();
    /// A new semaphore with value `n` (Python's `manager.Semaphore(n)`).
    #[doc(alias = "Semaphore")]
    fn semaphore(n: u64) -> SemaphoreProxy = n;
    /// A new bounded semaphore (Python's `manager.BoundedSemaphore(n)`).
    #[doc(alias = "BoundedSemaphore")]
    fn bounded_semaphore(n: u64) -> BoundedSemaphoreProxy = n;
    /// A new condition variable with its own re-entrant lock (Python's
    /// `manager.Condition()`); see [`condition_with`](Self::condition_with)
    /// for one over an existing lock.
    #[doc(alias = "Condition")]
    fn condition() -> ConditionProxy = None::<&ProxyCore>;
    /// A new event (Python's `manager.Event()`).
    #[doc(alias = "Event")]
    fn event() -> EventProxy = ();
    /// A new barrier for `parties` (Python's `manager.Barrier(parties)`).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if `parties` is 0.
    #[doc(alias = "Barrier")]
    fn barrier(parties: u64) -> BarrierProxy = parties;
}

impl Drop for Manager {
    fn drop(&mut self) {
        if lock(&self.process).is_some() {
            let _ = self.shutdown();
        }
    }
}
