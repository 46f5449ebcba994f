//! The resource tracker: a process that outlives the program and unlinks the
//! named resources it left behind (CPython's `multiprocessing.resource_tracker`).
//!
//! # How it works
//!
//! The first time a process creates a named resource (a [`SharedMemory`]
//! block), it starts the tracker: a Unix socket pair (used as a one-way
//! pipe) is made, a helper child is started
//! with the *spawn* start method (so the tracker is a small fresh image, not
//! a copy-on-write copy of a big program, and no lock another thread held can
//! be inherited) and handed the pipe's read end; the
//! helper forks the tracker proper and returns at once, so the tracker is
//! reparented away and never becomes a zombie or a child that `exit` would
//! wait for. The tracker closes every other descriptor and reads lines from
//! the pipe:
//!
//! - `REGISTER:<name>:<rtype>` when a named resource is created,
//! - `UNREGISTER:<name>:<rtype>` when it is unlinked,
//!
//! (CPython's own wire format). The program keeps the write end. When the
//! tracker reads end-of-file, every process holding the write end has ended —
//! by returning from `main`, `exit`, a panic, or `SIGKILL` alike — and the
//! tracker unlinks each name still registered, logs one warning listing
//! those it removed (on standard error: the tracker installs the crate's
//! stderr logger, see [`crate::logging`]), and exits. A name that someone else already
//! unlinked is skipped silently.
//!
//! Children started by *fork* inherit the write end and report to the same
//! tracker (as in CPython), so the tracker runs until the last of them ends.
//! A child started by *spawn* starts its own tracker the first time it creates
//! a named resource. The tracker ignores `SIGINT` and `SIGTERM` (a Ctrl-C to
//! the process group must not make it skip its clean-up).
//!
//! Unnamed resources — the memory of [`Value`](crate::Value),
//! [`Array`](crate::Array), queues and locks — are `memfd` regions: they have
//! no name in `/dev/shm` and vanish with their last descriptor and mapping, so
//! they cannot leak however the program ends, and the tracker never sees them.
//!
//! The tracker's implementation sits below [`process`](crate::process)
//! (which keeps its pipe open across `fork`), so it does not start the
//! helper itself: the `process` module registers how to in
//! [`init`](crate::init).
//!
//! [`SharedMemory`]: crate::SharedMemory

pub use crate::resource_tracker::{ensure_running, register, unregister, SHARED_MEMORY};
