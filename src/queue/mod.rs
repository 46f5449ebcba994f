//! Queues between processes: [`Queue`], [`SimpleQueue`], [`JoinableQueue`]
//! (Python's `multiprocessing.Queue`, `SimpleQueue`, `JoinableQueue`).
//!
//! ```
//! use multiproc::queue::Queue;
//!
//! let q = Queue::new()?;
//! q.put((1u32, "one".to_string()))?;
//! assert_eq!(q.get()?, (1, "one".to_string()));
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! A queue reaches a child as a [`Process`](crate::Process) argument
//! ([`Handoff`](crate::handoff::Handoff)); it is not `Serialize`, so it cannot
//! travel through another queue (that does not compile).
//!
//! # Design
//!
//! CPython's `Queue` pickles each item, hands it to a feeder thread, and the
//! thread writes it into a pipe with a length prefix; the reader takes a lock
//! and reads it back. That is two syscalls per item at least, a thread per
//! producer, and items that live in a process-private buffer until the
//! feeder gets to them — which is why a producer must "join the feeder
//! thread" at exit, and why the documented deadlock exists.
//!
//! Here a queue is one **shared-memory ring** in a `memfd` region, mapped by
//! every process holding a handle, backed by a **spill log** in the same
//! memfd for what the ring cannot take. No crate offers a multi-producer,
//! multi-consumer queue across processes that lives in memory both sides
//! map, tolerates a peer dying mid-operation, and grows without anyone
//! resizing a shared file (crossbeam's and Vyukov's queues are in-process;
//! `ipc-channel` and pipes copy through the kernel and need a feeder to be
//! unbounded) — hence this hand-written one, in `ring/` and `spill.rs`:
//!
//! - **Slots with sequence numbers** (after Dmitry Vyukov's bounded MPMC
//!   queue): `cap` slots, each with a 64-byte cell holding a sequence word
//!   (free for ticket `t` / committed / released), a *claim word* and a
//!   *taker word*, the length, and 32 bytes for a small item inline, plus
//!   128 bytes of payload in a data array. A producer claims the ticket at
//!   `tail` by one CAS of the claim word to `(round tag, span, pid)`, then
//!   moves `tail` by the span (any producer that finds the claimed word
//!   first moves it on the owner's behalf); it copies the encoded item in
//!   and publishes it with one store. A consumer takes the item at `head`
//!   the same way with the taker word `(round tag, pid)`, copies it out
//!   (below), and releases the slots with stores. Per-producer FIFO follows
//!   from the tickets. Because the owner's pid *is* the claim, there is no
//!   instant at which a slot is claimed but its owner unknown.
//! - **Small items cost no syscall and one cache line.** An item whose
//!   encoding fits 32 bytes (integers, short strings, small structs) lives in
//!   its cell; up to 128 bytes it takes one data slot. A sleeper
//!   raises a flag before its `FUTEX_WAIT`; a producer or consumer calls
//!   `FUTEX_WAKE` only when it sees that flag, so while both sides keep up
//!   there are no syscalls at all (waiters spin briefly before sleeping).
//! - **Large items are moved through shared memory**, not through a pipe in
//!   pieces: an item spans consecutive slots and is copied in once and
//!   decoded out once. `Vec<u8>` items (a *sequence* to serde, which the
//!   codec would walk byte by byte) are written in the codec's own format by
//!   one `memcpy` each way; `serde_bytes::ByteBuf` and `String` are already
//!   one copy in the codec. An item that would wrap past the end of the ring is
//!   padded to start at slot 0, so every payload is contiguous. Items up to
//!   half the ring (2 MiB encoded by default, see
//!   [`Builder::capacity_bytes`]) go through it.
//! - **No feeder thread; `put` is done when it returns.** The item is in
//!   shared memory, where it stays until some process takes it, whether its
//!   producer is alive or not. So a producer never waits at exit, and
//!   CPython's "joining processes that use queues" deadlock (parent joins a
//!   child that put a large item, before getting it) cannot happen: the
//!   child exits right after `put`, the parent joins it, then gets the item.
//!   [`Queue::join_thread`] and [`Queue::cancel_join_thread`] are therefore
//!   no-ops: there is nothing to flush and nothing that could be lost.
//! - **Unbounded means unbounded.** Python's `put` on an unbounded queue
//!   never blocks, because its feeder thread buffers without limit in the
//!   producer. Here an item the ring cannot take goes to the **spill log**
//!   (`spill.rs`) instead: an item larger than half the ring; an item put
//!   while the ring is full and no consumer has taken anything for 100 ms
//!   (while consumers are taking items, room comes within microseconds and
//!   `put` waits for it, keeping the fast path); and every item put while the
//!   log still holds items, so that one producer's items stay in order
//!   (consumers take from the log only once the ring is drained — `head`
//!   has reached `tail` — so a slot claimed by a producer still writing it
//!   holds the log back too: an earlier item of another producer may sit
//!   behind it). The log is a
//!   FIFO of length-prefixed records under one lock, in the memfd after the
//!   ring: a large, sparse range (256 GiB of address space by default,
//!   [`Builder::spill_bytes`]; mapped by a process only once it spills)
//!   whose pages are reserved with `fallocate` before the write head reaches
//!   them and punched out (`FALLOC_FL_PUNCH_HOLE`) once read, so it costs the
//!   memory of what it holds, and nobody ever resizes the file (its size is
//!   sealed). When the memory is not there, `put` fails with an
//!   [`Error::Io`](crate::Error::Io) of kind `OutOfMemory` naming the size —
//!   never a hang, and never SIGBUS, since no page is written before it is
//!   reserved (the ring's own pages are reserved at creation). The largest
//!   item is half the log (128 GiB by default);
//!   [`Error::MessageTooLarge`](crate::Error::MessageTooLarge) beyond.
//!   A try / timed `put` on an unbounded queue therefore never reports
//!   [`Error::Full`](crate::Error::Full); a bounded one does at `maxsize`
//!   items, whatever their size.
//! - **An item is copied out of shared memory before it is decoded**
//!   (`shared_bytes.rs`): with relaxed atomic loads, into the `Vec<u8>`
//!   returned for byte items, else into a buffer reused by the thread (words
//!   on the stack for small items). The protocol says nobody writes a taken
//!   slot before its release, but a peer that breaks it (a corrupt or hostile
//!   process holding the memfd) could, and a plain read racing a write is
//!   undefined behaviour; an atomic copy is defined whatever the peer does,
//!   and the decoder then works on private bytes, where garbage is a
//!   [`Codec`](crate::Error::Codec) error. Likewise every length read from
//!   shared memory (a slot's length, a spill record's header, the log's
//!   positions) is checked against the room it claims before use: a corrupt
//!   one is an error, never a read out of bounds or a huge allocation.
//! - `maxsize` (an item count, as in Python) is an atomic counter reserved
//!   before the claim (bounded queues only: it is a cache line both sides
//!   write). An unbounded queue's `qsize()` is items committed minus items
//!   taken (two counters, one per side) plus the spill log's count,
//!   approximate while others work.
//!   `JoinableQueue`'s unfinished-task count is a futex word in the region.
//!
//! Measured on the project's 2-vCPU VM (`cargo bench --bench compare --
//! --only queue`, CPython 3.11 and the C floor of `limits.c` in the same
//! run; medians of 5; the VM is noisy, figures move by up to 2x between
//! runs): ints from 1 producer process 6.2M items/s (42x CPython's `Queue`;
//! the C SPSC ring of u64 did 17.4M), from 4 producers 8.9M items/s (66x;
//! the C MPSC ring 6.7M), 1 MiB `bytes` items 5.4 GB/s as
//! `serde_bytes::ByteBuf` and 8.5 GB/s as `Vec<u8>` (7.6x and 12x CPython's
//! 0.71 GB/s; the C ring of 8 x 1 MiB slots 9.8 GB/s). A put plus a get of
//! an integer costs about 150 ns on one thread, 100 ns of it the ring's nine
//! atomic read-modify-writes — the price of the fault tolerance below (a
//! plain Vyukov ring without owner words measured 50 ns).
//!
//! - **One implementation, three interfaces.** [`Queue`], [`SimpleQueue`]
//!   and [`JoinableQueue`] are aliases of one [`GenericQueue`] with a
//!   [flavour](flavor) marker each (after crossbeam-channel's flavours):
//!   the same ring, the same code; the flavour selects the methods, and a
//!   joinable ring counts unfinished tasks.
//! - **Async waiters** (feature `tokio`: `get_async`, `put_async`,
//!   `join_async`, see [`aio`](crate::aio)) sleep on the queue's
//!   *doorbell*, an eventfd handed to children with the memfd, which a
//!   process rings only when it sees an async waiter's flag beside the
//!   futex sleepers' flag: the synchronous path makes no extra syscall
//!   (`wake.rs` proves the ordering).
//!
//! # Faults
//!
//! - A consumer killed while **blocked** in `get` held nothing: it leaves at
//!   most a stale sleeper flag (one needless wake-up later).
//! - A producer killed **mid-put** never committed its slot, so nobody reads
//!   the half-written item. Consumers that wait behind its claim for 50 ms
//!   read its pid from the claim word: if the process is gone or a zombie,
//!   one of them takes the claim over (taker word), skips its slots and
//!   carries on; its item never existed (the counters are corrected). If it
//!   died before moving `tail`, the next producer moves it.
//! - A consumer killed **after taking an item** (while copying it out, or
//!   before moving `head`) loses that item, as a Python consumer killed
//!   after `get` would; the next consumer moves `head` for it, and producers
//!   that need its slots read its pid from the taker word and release them.
//! - Residual hazards (documented, not handled): a reused pid makes a dead
//!   owner look alive, and then waiters wait (they never read garbage). A
//!   producer killed between counting its item (maxsize reservation,
//!   `JoinableQueue` task: a few instructions before its claim) leaves that
//!   count behind: one place less in a bounded queue, or a `join()` that
//!   waits for a task that will never come. The same holds for a producer
//!   killed while appending to the spill log (its record is not in the log:
//!   the log's lock word is the holder's pid, and a waiter that finds the
//!   holder dead takes the lock over; every log operation commits with its
//!   last store, so the log is as the dead holder found it).
//!
//! # Memory
//!
//! The region is a `memfd`: it has no name in `/dev/shm` and vanishes when
//! the last process holding a handle drops it (or dies). Its size is fixed
//! and sealed at creation: 4 MiB of payload slots plus 2 MiB of cells by
//! default, reserved at once, then the sparse spill range, which costs
//! nothing until items spill and is given back as they are read.
//!
//! # Model checking
//!
//! The ring's protocol is model checked with loom (every interleaving of a
//! few producers and consumers, up to a preemption bound):
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib queue::loom_tests`.

mod builder;
pub mod flavor;
mod generic;
mod item;
mod joinable;
#[cfg(all(test, loom))]
mod loom_tests;
#[allow(clippy::module_inception)]
mod queue;
mod ring;
mod shared_bytes;
mod simple;
mod spill;
mod sync;
mod wake;

pub use builder::Builder;
pub use generic::GenericQueue;
pub use joinable::JoinableQueue;
pub use queue::Queue;
pub use simple::SimpleQueue;

#[cfg(feature = "tokio")]
pub(crate) use ring::{Ring, SPIN_FOR, STUCK_CHECK};
/// For the async adapters (`aio/queue.rs`).
#[cfg(feature = "tokio")]
pub(crate) use wake::Await;
