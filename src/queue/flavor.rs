//! The flavours of [`GenericQueue`](super::GenericQueue): what tells a
//! [`Queue`](super::Queue) from a [`SimpleQueue`](super::SimpleQueue) and a
//! [`JoinableQueue`](super::JoinableQueue).
//!
//! As in crossbeam-channel, where one `Sender` serves every channel flavour,
//! the three queues are one implementation: the same shared ring, the same
//! `put` and `get`. A flavour only decides which methods a queue has (a
//! `SimpleQueue` has Python's small interface, a `JoinableQueue` adds
//! `task_done` and `join`) and whether its ring counts unfinished tasks.
//! Flavours are marker types known at compile time, so the choice costs
//! nothing at run time.

/// A queue flavour: [`Plain`], [`Simple`] or [`Joinable`] (sealed: the
/// crate's three are all there are).
pub trait Flavor: sealed::Sealed + Send + Sync + 'static {
    /// The public type's name (for `Debug`).
    const NAME: &'static str;
    /// Whether the ring counts unfinished tasks (`JoinableQueue`).
    const JOINABLE: bool;
}

/// The flavours with [`Queue`](super::Queue)'s whole interface (timeouts,
/// `qsize`, `maxsize`, ...): [`Plain`] and [`Joinable`].
pub trait FullApi: Flavor {}

/// The flavour of [`Queue`](super::Queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plain {}

/// The flavour of [`SimpleQueue`](super::SimpleQueue): `put`, `get`,
/// `empty`, `close` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Simple {}

/// The flavour of [`JoinableQueue`](super::JoinableQueue): a queue that
/// counts unfinished tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Joinable {}

impl Flavor for Plain {
    const NAME: &'static str = "Queue";
    const JOINABLE: bool = false;
}

impl Flavor for Simple {
    const NAME: &'static str = "SimpleQueue";
    const JOINABLE: bool = false;
}

impl Flavor for Joinable {
    const NAME: &'static str = "JoinableQueue";
    const JOINABLE: bool = true;
}

impl FullApi for Plain {}
impl FullApi for Joinable {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Plain {}
    impl Sealed for super::Simple {}
    impl Sealed for super::Joinable {}
}
