//! # multiproc
//!
//! Python's `multiprocessing`, built in Rust: real OS processes started by
//! *fork* or *spawn*, talking through pipes, queues, locks and shared memory,
//! with a process pool on top.
//!
//! ```
//! use multiproc::Process;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> multiproc::Result<()> {
//!     multiproc::init(); // first line of main: a spawned child enters here
//!     let mut p = Process::start(square, (7,))?;
//!     assert_eq!(p.join()?, 49);
//!     Ok(())
//! }
//! ```
//!
//! CPython's programming guidelines become guarantees here:
//!
//! - **Picklability**: arguments, results and messages are
//!   `Serialize + DeserializeOwned`; anything else does not compile.
//! - **Explicitly pass resources**: a target is a `fn` item or a closure that
//!   captures nothing; a capturing closure is a compile-time error:
//!
//! ```compile_fail,E0080
//! let n = 5u64;
//! let p = multiproc::Process::start(move || n + 1, ());
//! ```
//!
//! - **Inherit rather than pickle**: queues, pipes, locks and shared memory
//!   are [`Handoff`](handoff::Handoff) resources that travel only as process
//!   arguments, never through a queue (they are not `Serialize`).
//! - **Joining zombies**: starting a process reaps finished children;
//!   [`active_children`] reaps; dropping a handle never leaves a zombie for long.
//! - **Stdin**: a child's standard input is `/dev/null` unless asked otherwise.
//! - **Fork-safe writers**: [`util::ForkSafeWriter`] and
//!   [`util::register_after_fork`].
//! - **Thread safety of proxies**: [`manager`] proxies are `Send` but
//!   not `Sync`; sharing one between threads without a lock does not compile.
//!
//! ## Test binaries
//!
//! A child started by *spawn* re-executes the current binary. In `main`,
//! [`init`] catches it; in a test binary (whose `main` belongs to the test
//! harness) put [`test_support!`] once at the top level of the test crate.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
// Unsafe code only where a module allows it (`#![allow(unsafe_code)]` at its
// top), every unsafe operation in an explicit block, every block with a
// `// SAFETY:` comment.
#![deny(
    unsafe_code,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

#[cfg(feature = "tokio")]
pub mod aio;
pub mod codec;
pub mod connection;
mod context;
mod error;
pub mod handoff;
pub mod logging;
pub mod manager;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod pool;
pub mod process;
pub mod queue;
mod resource_tracker;
pub mod shared;
pub mod sync;
pub(crate) mod sys;
pub mod util;

pub use connection::{Address, Client, Connection, Listener, Pipe};
pub use context::{get_context, Context};
pub use error::{AuthError, BootstrapError, CodecError, Error, ProcessFailure, Result};
pub use logging::log_to_stderr;
pub use manager::Manager;
pub use multiproc_derive::managed;
pub use pool::{AsyncResult, Pool, PoolBuilder};
pub use process::{
    active_children, cpu_count, current_process, get_all_start_methods, get_start_method,
    parent_process, set_forkserver_preload, set_start_method, Builder, ChildInfo, CurrentProcess,
    ParentProcess, Process, StartMethod, Stdin, TaskFn,
};
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use shared::{Array, RawArray, RawValue, ShareableList, SharedMemory, Value};
pub use sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};

/// Makes a test binary (or any binary whose `main` you do not control)
/// re-enterable as a spawned child: expands to a constructor that runs before
/// `main` and, in a spawned child, runs the target and exits.
///
/// Put it once at the top level of each integration-test crate:
///
/// ```ignore
/// multiproc::test_support!();
/// ```
#[macro_export]
macro_rules! test_support {
    () => {
        #[used]
        #[unsafe(link_section = ".init_array")]
        static __MULTIPROC_CHILD_ENTRY: extern "C" fn() = {
            extern "C" fn __multiproc_child_entry() {
                $crate::init();
            }
            __multiproc_child_entry
        };
    };
}

/// Enters the library in a spawned child; in any other process, records that
/// this is the main process and returns at once.
///
/// Call it first in `main`. In a process started by the *spawn* method it
/// never returns: it receives the target and its arguments from the parent,
/// runs the target, reports the result and exits. In test binaries use
/// [`test_support!`](crate::test_support) instead (it calls this before the
/// test harness starts).
///
/// A spawned child whose program forgot to call it runs `main` again instead
/// of its target; its first [`Process::start`](crate::Process::start) then
/// ends it with a message saying what to add, and its parent's `join`
/// returns [`Error::Bootstrap`] (no chain of processes each starting the
/// next).
///
/// With the `mpi` feature, in a program started by an MPI launcher
/// (`mpiexec`, `srun`), every rank but 0 becomes a worker of
/// `multiproc::mpi::MpiPool` here and exits when rank 0's pool ends.
pub fn init() {
    // The layers below call no layer above them: `process` enters a spawned
    // child (and does not return there); the MPI layer, above `pool`, is
    // entered from here.
    process::init();
    #[cfg(feature = "mpi")]
    mpi::enter();
}
