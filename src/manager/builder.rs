//! `Manager` and its builder: starting the server process, creating shared
//! objects, shutting down.
#![allow(unsafe_code)]

use super::custom::{factory, Managed, TypeList};
use super::fault::reply_into_answer;
use super::fault::Answer;
use super::proxy::ProxyCore;
use super::server::{Server, CONN_THREAD_PREFIX};
use super::token::{Endpoint, WireAddr};
use super::types::sync::ConditionLock;
use super::wire::{Raw, Reply, Request};
use super::{
    ArrayProxy, BarrierProxy, BoundedSemaphoreProxy, ConditionProxy, DictProxy, EventProxy,
    JoinableQueueProxy, ListProxy, LockProxy, NamespaceProxy, Proxy, QueueProxy, RLockProxy,
    SemaphoreProxy, ValueProxy,
};
use crate::codec;
use crate::connection::{Address, Connection, Listener, Pipe};
use crate::error::{Error, Result};
use crate::process::{Process, TaskFn};
use crate::StartMethod;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long [`Manager::shutdown`] waits for the server process to exit
/// before killing it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Code run in the server process before it serves (Python's
/// `initializer`). Implemented by [`NoInit`] and [`WithInit`]; only the crate
/// can call (or implement) it.
pub trait ServerInit: 'static {
    /// Runs the initializer with its encoded arguments.
    #[doc(hidden)]
    fn run(_: sealed::Call, args: &[u8]) -> Result<()>;
}

mod sealed {
    /// Proof that the crate makes the call: it cannot be built outside it, so
    /// [`WithInit::run`](super::ServerInit::run) only runs for a builder that
    /// [`initializer_with`](super::ManagerBuilder::initializer_with) was
    /// handed a value of.
    #[derive(Debug)]
    pub struct Call(pub(super) ());
}

/// No initializer.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoInit;

impl ServerInit for NoInit {
    fn run(_: sealed::Call, _: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// An initializer `F` taking the argument tuple `A`, given to
/// [`ManagerBuilder::initializer_with`].
#[derive(Debug, Clone, Copy)]
pub struct WithInit<F, A = ()>(PhantomData<(F, fn() -> A)>);

impl<F, A> ServerInit for WithInit<F, A>
where
    F: TaskFn<A, ()>,
    A: DeserializeOwned + 'static,
{
    fn run(_: sealed::Call, args: &[u8]) -> Result<()> {
        let args: A = codec::decode(args)?;
        // SAFETY: only the crate can call `run` (it takes a `sealed::Call`),
        // and it does so for the `I` of a `ManagerBuilder`, which is
        // `WithInit<F, A>` only when `ManagerBuilder::initializer_with` was
        // handed a value of `F` (in this process, or in the parent that
        // started it).
        let f: F = unsafe { crate::process::fnref::conjure::<F, A, ()>() };
        f.call(args);
        Ok(())
    }
}

/// Options for a [`Manager`]: start method, address, authkey, initializer,
/// registered types. From [`Manager::builder`].
///
/// `L` lists the registered types ([`register`](Self::register) adds one);
/// `I` is the initializer.
#[must_use = "call start() to start the manager"]
pub struct ManagerBuilder<L = (), I = NoInit> {
    method: Option<StartMethod>,
    address: Option<Address>,
    authkey: Option<Vec<u8>>,
    max_message_size: u64,
    /// The initializer's encoded arguments, or why they could not be encoded.
    init_args: std::result::Result<Vec<u8>, String>,
    _t: PhantomData<fn() -> (L, I)>,
}

impl<L, I> fmt::Debug for ManagerBuilder<L, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerBuilder")
            .field("method", &self.method)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// What the server process is told.
#[derive(Serialize, Deserialize)]
struct ServerConfig {
    address: WireAddr,
    authkey: Vec<u8>,
    max_message_size: u64,
    init_args: Vec<u8>,
}

/// A fresh random authkey (CPython: `os.urandom(32)`).
fn random_key() -> Result<Vec<u8>> {
    use std::io::Read;
    let mut k = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut k)?;
    Ok(k)
}

/// The server process's target.
fn server_main<L: TypeList, I: ServerInit>(report: Connection, cfg: ServerConfig) {
    // A panic in a method is answered as a remote error: do not also print
    // it as if the server process had failed.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let serving = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with(CONN_THREAD_PREFIX));
        if !serving {
            previous(info)
        }
    }));
    if let Err(e) = I::run(sealed::Call(()), &cfg.init_args) {
        let _ = report.send(&Err::<WireAddr, String>(format!(
            "the initializer failed: {e}"
        )));
        return;
    }
    let address = Address::from(&cfg.address);
    let listener = match Listener::builder()
        .authkey(&cfg.authkey)
        .max_message_size(cfg.max_message_size)
        .bind(&address)
    {
        Ok(l) => l,
        Err(e) => {
            let _ = report.send(&Err::<WireAddr, String>(e.to_string()));
            return;
        }
    };
    let actual = WireAddr::from(listener.address());
    if report.send(&Ok::<WireAddr, String>(actual)).is_err() {
        return;
    }
    drop(report);
    let server = Server::new(factory::<L>);
    let _ = server.serve(listener);
}

impl<L: TypeList, I: ServerInit> ManagerBuilder<L, I> {
    /// The start method of the server process (default: the context's).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Where the server listens (default: a fresh abstract Unix socket;
    /// `Address::tcp("0.0.0.0:50000")` for remote clients).
    pub fn address(mut self, address: Address) -> Self {
        self.address = Some(address);
        self
    }

    /// The key clients must prove they know (default: 32 random bytes).
    pub fn authkey(mut self, key: &[u8]) -> Self {
        self.authkey = Some(key.to_vec());
        self
    }

    /// The largest request the server accepts (default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`](crate::connection::DEFAULT_MAX_MESSAGE_SIZE));
    /// a client announcing a longer one is disconnected.
    pub fn max_message_size(mut self, max: u64) -> Self {
        self.max_message_size = max;
        self
    }

    /// Runs `f` in the server process before it serves (Python's
    /// `initializer`): a `fn` item or a closure that captures nothing.
    pub fn initializer<F: TaskFn<(), ()>>(self, f: F) -> ManagerBuilder<L, WithInit<F>> {
        self.initializer_with(f, ())
    }

    /// Runs `f(args...)` in the server process before it serves (Python's
    /// `initializer` and `initargs`), with the crate's calling convention
    /// ([`TaskFn`]): `initializer_with(setup, ("db".to_string(), 3))` calls
    /// `setup("db".to_string(), 3)` in the server, whatever the start method.
    ///
    /// ```
    /// fn setup(name: String, level: u32) {
    ///     std::env::set_var("SERVER_NAME", format!("{name}-{level}"));
    /// }
    ///
    /// # multiproc::init();
    /// let manager = multiproc::manager::Manager::builder()
    ///     .initializer_with(setup, ("db".to_string(), 3))
    ///     .start()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// If the arguments cannot be encoded, or the initializer panics or its
    /// arguments do not decode in the server, [`start`](Self::start) fails.
    pub fn initializer_with<F, A>(self, f: F, args: A) -> ManagerBuilder<L, WithInit<F, A>>
    where
        F: TaskFn<A, ()>,
        A: Serialize + DeserializeOwned + 'static,
    {
        crate::process::fnref::check_target(f);
        let init_args = codec::encode(&args).map_err(|e| e.to_string());
        ManagerBuilder {
            init_args,
            ..self.retype()
        }
    }

    /// Registers `T` (Python's `BaseManager.register(typeid, callable)`):
    /// [`Manager::create`] can then make `T` objects in the server.
    pub fn register<T: Managed + DeserializeOwned>(self) -> ManagerBuilder<(T, L), I> {
        self.retype()
    }

    /// The same options for other type parameters.
    fn retype<L2, I2>(self) -> ManagerBuilder<L2, I2> {
        ManagerBuilder {
            method: self.method,
            address: self.address,
            authkey: self.authkey,
            max_message_size: self.max_message_size,
            init_args: self.init_args,
            _t: PhantomData,
        }
    }

    fn init_args(&self) -> Result<Vec<u8>> {
        self.init_args
            .clone()
            .map_err(|e| Error::Invalid(format!("cannot encode the initializer's arguments: {e}")))
    }

    fn parts(&self) -> Result<(Address, Vec<u8>)> {
        let address = self.address.clone().unwrap_or_else(Address::arbitrary);
        let key = match &self.authkey {
            Some(k) => k.clone(),
            None => random_key()?,
        };
        Ok((address, key))
    }

    /// Starts the server process and connects to it (Python's
    /// `manager.start()`).
    ///
    /// The server is a daemon child: it ends with [`Manager::shutdown`],
    /// when the `Manager` is dropped, or when this process dies (it is
    /// killed with its parent, never left behind as an orphan). As for every
    /// daemon child, the kernel's parent-death signal follows the *thread*
    /// that started it: start a manager from a thread that outlives its use
    /// (the main thread, say), not from a short-lived helper thread.
    ///
    /// # Errors
    ///
    /// An I/O error if the address cannot be bound (the server reports it),
    /// or the errors of starting a process.
    pub fn start(self) -> Result<Manager> {
        let (address, authkey) = self.parts()?;
        let (mine, theirs) = Pipe::duplex()?;
        let mut b = Process::builder().daemon(true).name("SyncManager");
        if let Some(m) = self.method {
            b = b.start_method(m);
        }
        let cfg = ServerConfig {
            address: WireAddr::from(&address),
            authkey: authkey.clone(),
            max_message_size: self.max_message_size,
            init_args: self.init_args()?,
        };
        let mut process = b.start(server_main::<L, I>, (theirs, cfg))?;
        let reported = mine.recv::<std::result::Result<WireAddr, String>>();
        let actual = match reported {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                let _ = process.join();
                return Err(Error::Io(std::io::Error::other(format!(
                    "manager server could not listen on {address}: {e}"
                ))));
            }
            // The server ended before it listened (its initializer
            // panicked, say): its own failure says why.
            Err(e) => return Err(process.join().err().unwrap_or(e)),
        };
        let endpoint = Arc::new(Endpoint {
            address: actual,
            authkey,
        });
        let control = endpoint.connect()?;
        Ok(Manager {
            endpoint,
            process: Mutex::new(Some(process)),
            control: Mutex::new(Some(control)),
        })
    }

    /// Serves in this process, on a background thread, instead of a child
    /// (Python's `manager.get_server()`); see [`ServerHandle`](super::ServerHandle).
    pub fn serve(self) -> Result<super::ServerHandle> {
        let (address, authkey) = self.parts()?;
        I::run(sealed::Call(()), &self.init_args()?)?;
        let listener = Listener::builder()
            .authkey(&authkey)
            .max_message_size(self.max_message_size)
            .bind(&address)?;
        let server = Server::new(factory::<L>);
        super::remote::serve_in_background(server, listener, authkey)
    }
}

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
    endpoint: Arc<Endpoint>,
    process: Mutex<Option<Process<()>>>,
    control: Mutex<Option<Connection>>,
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Manager {
    /// Starts a manager with the defaults (Python's `multiprocessing.Manager()`).
    pub fn start() -> Result<Manager> {
        Manager::builder().start()
    }

    /// Options: start method, address, authkey, initializer, registered types.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder {
            method: None,
            address: None,
            authkey: None,
            max_message_size: crate::connection::DEFAULT_MAX_MESSAGE_SIZE,
            init_args: Ok(Vec::new()),
            _t: PhantomData,
        }
    }

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
        match reply_into_answer(conn.recv::<Reply>()?)? {
            Answer::Ok(b) => codec::decode(&b),
            Answer::Method(_) => Err(Error::Remote("unexpected answer".into())),
        }
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
    /// [registered](ManagerBuilder::register) with the server.
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
