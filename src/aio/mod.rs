//! Futures for tokio programs (feature `tokio`, off by default).
//!
//! A tokio task can wait for a child, a message or a pool result without
//! blocking a runtime thread:
//!
//! | blocking call | future | cancel safe |
//! |---|---|---|
//! | [`Process::join`](crate::Process::join) | [`Process::join_async`](crate::Process::join_async) | yes |
//! | [`Connection::recv`](crate::Connection::recv), `recv_bytes` | [`AsyncConnection::recv`], [`recv_bytes`](AsyncConnection::recv_bytes) | yes |
//! | [`Connection::send`](crate::Connection::send), `send_bytes` | [`AsyncConnection::send`], [`send_bytes`](AsyncConnection::send_bytes) | the message is sent whole or not at all, see below |
//! | [`AsyncResult::get`](crate::AsyncResult::get) | `async_result.await` ([`AsyncResult`](crate::AsyncResult) is a `Future`) | yes |
//! | [`Pool::imap`](crate::Pool::imap), `imap_unordered` | the same [`IMap`](crate::pool::IMap) as a [`futures_core::Stream`] | yes |
//! | [`Queue::get`](crate::Queue::get) (and `SimpleQueue`'s, `JoinableQueue`'s) | [`get_async`](crate::queue::GenericQueue::get_async) | yes |
//! | [`Queue::put`](crate::Queue::put) (likewise) | [`put_async`](crate::queue::GenericQueue::put_async) | no: a dropped future drops its item, never put |
//! | [`JoinableQueue::join`](crate::queue::JoinableQueue::join) | [`join_async`](crate::queue::GenericQueue::join_async) | yes |
//!
//! *Cancel safe* means what it means in tokio's documentation: if the
//! future is dropped before it completes (say, the other branch of a
//! `tokio::select!` won), nothing is lost.
//!
//! - `join_async`: the child keeps running; join it again later.
//! - `recv`/`recv_bytes`: a message that had partly arrived stays buffered
//!   in the connection, and the next receive returns it whole. No message
//!   is ever split or dropped.
//! - `send`/`send_bytes`: the message is queued in the connection when the
//!   future is first polled, and from then on it goes out whole: if the
//!   future is dropped midway, the rest is written by the next `send`,
//!   `send_bytes` or [`flush`](AsyncConnection::flush) on that connection
//!   (so drop an `AsyncConnection` only after a completed send or flush, or
//!   the peer sees a truncated message). A send future dropped before its
//!   first poll sends nothing.
//! - awaiting an `AsyncResult`: the task keeps running in the pool; the
//!   result is lost only with the `AsyncResult` itself.
//! - `IMap` as a `Stream`: results not yet yielded stay in the iterator.
//! - `get_async`: an item is taken only in the poll that returns it; a
//!   future dropped before leaves every item in the queue.
//! - `put_async`: the item is put whole or not at all; a future dropped
//!   before completing drops the item unput (as tokio's `mpsc` `send`).
//! - `join_async`: it only watches the unfinished-task count.
//!
//! How they wait: a process's pidfd and report socket, and a connection's
//! socket or pipe, are registered with tokio's reactor ([`tokio::io::unix::AsyncFd`]).
//! A polled pool result (or imap stream) first drives the pool from the
//! runtime thread for at most 100 µs, which catches a quick answer; then the
//! pool's supervisor thread drives it and wakes the task when the result
//! arrives. A queue future tries the ordinary operation without blocking,
//! spins for up to 50 µs like a blocking call (2 µs on the CPU, then
//! yielding to the runtime between attempts), then sleeps on the
//! queue's *doorbell*: an eventfd created with the queue and handed to
//! children with it, registered with the reactor. A process that puts (or
//! takes) an item rings it only if an async waiter has raised a flag in the
//! queue's shared header, so the synchronous path stays free of syscalls.
//! No thread is started per waiter. Queue futures need the runtime's time
//! driver as well (`enable_all`): a consumer held up by a producer that may
//! have died mid-put looks again every 50 ms.
//!
//! ```no_run
//! use multiproc::aio::AsyncConnection;
//! use multiproc::{Pipe, Pool, Process};
//!
//! fn double(x: u64) -> u64 {
//!     2 * x
//! }
//!
//! fn echo(c: multiproc::Connection) {
//!     while let Ok(x) = c.recv::<u64>() {
//!         c.send(&x).unwrap();
//!     }
//! }
//!
//! fn main() -> multiproc::Result<()> {
//!     multiproc::init();
//!     let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//!     rt.block_on(async {
//!         let pool = Pool::new(2)?;
//!         assert_eq!(pool.apply_async(double, (21,))?.await?, 42);
//!
//!         let (mine, theirs) = Pipe::duplex()?;
//!         let mut child = Process::start(echo, (theirs,))?;
//!         let conn = AsyncConnection::new(mine)?;
//!         conn.send(&7u64).await?;
//!         assert_eq!(conn.recv::<u64>().await?, 7);
//!         drop(conn); // the child sees end of file and returns
//!         child.join_async().await
//!     })
//! }
//! ```

mod connection;
mod pool;
mod process;
mod queue;

pub use connection::AsyncConnection;
