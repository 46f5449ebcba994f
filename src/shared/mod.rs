//! Shared memory: [`Value`], [`Array`], [`RawValue`], [`RawArray`],
//! [`SharedMemory`], [`ShareableList`] and the [resource tracker](tracker).
//!
//! Two kinds of memory, as in CPython:
//!
//! - **Unnamed** — [`Value`], [`Array`] and their unsynchronized twins
//!   [`RawValue`], [`RawArray`] (Python's `multiprocessing.Value`, `Array`,
//!   `sharedctypes.RawValue`, `RawArray`). Their memory is a `memfd`: it has
//!   no name in `/dev/shm` and vanishes with the last process that maps it,
//!   so it cannot leak however the program ends. It reaches a child only as a
//!   [`Process`](crate::Process) argument.
//! - **Named** — [`SharedMemory`] and [`ShareableList`] (Python's
//!   `multiprocessing.shared_memory`): POSIX shared memory objects any
//!   process can attach to by name, Python processes included. Names outlive
//!   processes, so each one created is registered with the
//!   [resource tracker](tracker), which unlinks those left behind when the
//!   program ends, even by `SIGKILL`.
//!
//! ```
//! multiproc::test_support!();
//! use multiproc::shared::RawValue;
//!
//! # fn main() -> multiproc::Result<()> {
//! let v = RawValue::new(41i64)?;
//! v.as_atomic().fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//! assert_eq!(v.get(), 42);
//! # Ok(()) }
//! ```

mod shareable_list;
mod shared_memory;
mod synchronized;
pub mod tracker;
mod value;

pub use shareable_list::{Item, ShareableList};
pub use shared_memory::SharedMemory;
pub use synchronized::{Array, ArrayGuard, Value, ValueGuard};
pub use value::{AtomicView, RawArray, RawValue};
