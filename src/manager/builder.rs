//! [`ManagerBuilder`]: the server's start method, address, key, initializer
//! and registered types, and starting the server process (or serving in
//! this one).
#![allow(unsafe_code)]

use super::custom::{factory, Managed, TypeList};
use super::handle::Manager;
use super::server::{Server, CONN_THREAD_PREFIX};
use super::token::{Endpoint, WireAddr};
use crate::codec;
use crate::connection::{Address, Connection, Listener, Pipe};
use crate::error::{Error, Result};
use crate::process::{Process, TaskFn};
use crate::StartMethod;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

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

// The manager's constructors that take options live beside the options.
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
