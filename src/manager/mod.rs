//! Managers: a server process holding shared objects, and typed proxies to
//! them — Python's `multiprocessing.managers`.
//!
//! [`Manager::start`] starts a server process; its methods create shared
//! objects there and return proxies: [`DictProxy`] (`HashMap`-like),
//! [`ListProxy`] (`Vec`-like), [`NamespaceProxy`], [`QueueProxy`],
//! [`JoinableQueueProxy`], [`LockProxy`], [`RLockProxy`],
//! [`SemaphoreProxy`], [`BoundedSemaphoreProxy`], [`ConditionProxy`],
//! [`EventProxy`], [`BarrierProxy`], [`ValueProxy`], [`ArrayProxy`]. Every
//! method call on a proxy runs in the server.
//!
//! ```
//! use multiproc::manager::{DictProxy, Manager};
//! use multiproc::Process;
//!
//! fn child(d: DictProxy<String, u64>, n: u64) {
//!     d.insert(format!("child-{n}"), n * n).unwrap();
//! }
//!
//! fn main() -> multiproc::Result<()> {
//!     multiproc::init();
//!     let manager = Manager::start()?;
//!     let d = manager.dict::<String, u64>()?;
//!     let mut p = Process::start(child, (d.clone(), 7))?;
//!     p.join()?;
//!     assert_eq!(d.get(&"child-7".to_string())?, Some(49));
//!     Ok(())
//! }
//! ```
//!
//! # Proxies
//!
//! A proxy owns a connection to the server: it is `Send` but not `Sync`,
//! so sharing one between threads without a lock does not compile;
//! [`Clone`] opens a new connection for an independent handle that another
//! thread may use. When the proxy's thread and the server's are confined
//! to the same single CPU, a connection over a Unix socket (the default
//! address) moves, after the handshake, to a pair of pipes the server hands
//! the proxy: the same frames, limits and codec, at about half the cost of
//! a socket round trip on one CPU.
//!
//! ```compile_fail,E0277
//! # multiproc::init();
//! let manager = multiproc::manager::Manager::start().unwrap();
//! let d = manager.dict::<u32, u32>().unwrap();
//! std::thread::scope(|s| {
//!     s.spawn(|| d.len()); // error: `DictProxy` is not `Sync`
//!     d.len()
//! });
//! ```
//!
//! A proxy is serde-serializable as a *token* (server address, key, object
//! id), so it reaches children as [`Process`](crate::Process) and
//! [`Pool`](crate::Pool) arguments under every start method, and can be
//! stored inside a managed dict or list, where it stays a working proxy
//! (CPython's nested proxies). Decoding a token connects to the server.
//!
//! # Managed queues: shared memory, pipelined puts
//!
//! A [`QueueProxy`] or [`JoinableQueueProxy`] connected over a Unix socket
//! (the default address) maps the queue's shared memory, made by the
//! server, on its first call: its puts and gets then cost no round trip.
//! Over TCP, a put on an unbounded queue cannot block or fail, so it does
//! not wait for the server's answer: a producer streams items instead of
//! paying a round trip per item. Order and visibility are kept as a user
//! relies on them (see [`QueueProxy::put`] and [`ProxyCore`]'s *Pipelined
//! calls*): the proxy's next call, [`QueueProxy::flush`], or dropping the
//! proxy waits until its puts are in the queue. [`QueueProxy::get_many`]
//! takes several items in one round trip on the consumer's side.
//!
//! # Lifetime of shared objects
//!
//! Objects are reference-counted as in CPython: one object is freed when
//! its last proxy anywhere is dropped and no stored value refers to it.
//! References are tied to connections, so a process that dies — even by
//! `SIGKILL` — gives its references back. A proxy in transit (serialized
//! into process arguments or a message, not yet decoded) keeps its object
//! alive until it is decoded or the process that sent it exits.
//!
//! # Registered types
//!
//! `#[multiproc::managed]` on an ordinary `impl` block makes the type
//! shareable (CPython's `BaseManager.register`); the generated proxy
//! `<Type>Proxy` has the same `pub` methods, returning `Result`s. A method
//! returning `Result<T, E>` gives back its own `Err(e)` as
//! [`CallError::Method`]; a failure of the call itself (a panic in the
//! method, say) is [`CallError::Call`] holding [`Error::Remote`](crate::Error::Remote),
//! and the server keeps running.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Default)]
//! struct Counter { n: u64 }
//!
//! #[multiproc::managed]
//! impl Counter {
//!     pub fn add(&mut self, k: u64) -> u64 { self.n += k; self.n }
//!     pub fn checked_sub(&mut self, k: u64) -> Result<u64, String> {
//!         self.n = self.n.checked_sub(k).ok_or("underflow")?;
//!         Ok(self.n)
//!     }
//! }
//!
//! # multiproc::init();
//! let manager = multiproc::manager::Manager::builder().register::<Counter>().start()?;
//! let c = manager.create(Counter::default())?;
//! assert_eq!(c.add(5)?, 5);
//! assert_eq!(c.checked_sub(7).unwrap_err().method_error().map(|s| s.as_str()), Some("underflow"));
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! # Remote managers
//!
//! A manager can listen on TCP with an authkey ([`ManagerBuilder::address`],
//! [`ManagerBuilder::authkey`]); another program connects with
//! [`Manager::connect`] and uses objects the server
//! [published](Manager::publish) by name. See `examples/manager_server.rs`
//! and `examples/manager_client.rs` (CPython's "Using a remote manager").

mod builder;
mod collect;
mod custom;
mod fault;
mod handle;
mod link;
mod proxy;
mod registry;
mod remote;
mod scratch;
mod server;
mod token;
mod types;
mod wire;

pub use builder::{ManagerBuilder, NoInit, ServerInit, WithInit};
#[doc(hidden)]
pub use custom::__private;
pub use custom::{Managed, TypeList};
pub use fault::CallError;
pub use handle::Manager;
pub use proxy::ProxyCore;
pub use remote::ServerHandle;
pub use types::barrier::BarrierProxy;
pub use types::condition::ConditionProxy;
pub use types::dict::DictProxy;
pub use types::list::{ArrayProxy, ListProxy};
pub use types::namespace::{NamespaceProxy, ValueProxy};
pub use types::queue::{JoinableQueueProxy, QueueProxy};
pub use types::sync::{
    BoundedSemaphoreProxy, ConditionLock, EventProxy, LockProxy, RLockProxy, SemaphoreProxy,
};

/// A typed proxy: implemented by every builtin proxy and by the proxies
/// `#[multiproc::managed]` generates.
pub trait Proxy: Sized {
    /// The registered type name of the referent (`"dict"`, `"Queue"`, a
    /// registered type's name).
    const TYPEID: &'static str;
    /// Wraps an untyped proxy (its type is not checked: use
    /// [`Manager::lookup`] to get a checked one).
    #[doc(hidden)]
    fn from_core(core: ProxyCore) -> Self;
    /// The untyped proxy inside.
    fn core(&self) -> &ProxyCore;
}
