//! A pool of worker processes (Python's `multiprocessing.Pool`).
//!
//! ```no_run
//! use multiproc::pool::Pool;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//! fn add(a: u64, b: u64) -> u64 {
//!     a + b
//! }
//!
//! fn main() -> multiproc::Result<()> {
//!     multiproc::init(); // first line of main: workers started by spawn enter here
//!     let pool = Pool::new(4)?;
//!     let squares: Vec<u64> = pool.map(square, 0..1_000_000u64)?;
//!     assert_eq!(squares[3], 9);
//!     assert_eq!(pool.apply(add, (2, 3))?, 5);
//!     let r = pool.apply_async(square, (7,))?;
//!     assert_eq!(r.get()?, 49);
//!     for (i, sq) in pool.imap(square, 0..10u64)?.enumerate() {
//!         assert_eq!(sq?, (i * i) as u64);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Task functions
//!
//! A task is a `fn` item or a closure that captures nothing ([`TaskFn`]),
//! with `serde` arguments and result. `map`, `imap` and `imap_unordered` call
//! `f(item)`; `apply`, `apply_async` and `starmap` call `f(a, b, ...)` with
//! the elements of an argument tuple, like Python's `f(*args)`. Any function
//! can be sent to any pool: tasks name their function by its place in the
//! binary, which every worker runs.
//!
//! # Failures
//!
//! - A **panic in a task** becomes that task's error,
//!   [`Error::ProcessFailed`] with the panic message and the worker's
//!   backtrace (`exitcode` is 1 by convention; the worker itself goes on
//!   serving). Other tasks are not affected.
//! - A **worker that dies** (killed by a signal, `abort`, `exit` in a task):
//!   only the task it was running fails, with [`Error::WorkerDied`] carrying
//!   its exit code (`-9` for `SIGKILL`). Tasks it had completed keep their
//!   results, even those of the same chunk not sent yet (every answer is
//!   kept in shared memory the moment its task ends); tasks it had not
//!   started run on another worker; a new worker takes its place at once.
//!   `map`, `imap`, `get` never wait for a dead worker.
//! - With `maxtasksperchild`, a worker's successor is started when it is
//!   sent its last task, and takes its place as it exits: the retired
//!   worker is reaped at once, and [`worker_pids`](Pool::worker_pids)
//!   always lists `processes` workers.
//! - `map`/`map_async`/`starmap` return the error of the first failed task
//!   (by position) once every task has ended; `imap`/`imap_unordered` yield
//!   one `Result` per task, so the other results stay available.
//! - After [`terminate`](Pool::terminate) (or drop), every unfinished task
//!   fails with [`Error::BrokenPool`]; after `terminate` or
//!   [`close`](Pool::close), so does every call that submits work (Python's
//!   `ValueError: Pool not running`).
//!
//! # Speed
//!
//! Each worker has its own socket; tasks travel in batches (`chunksize`;
//! large chunks as messages of at most 65,536 tasks; many small batches per
//! write), results likewise, encoded by the [crate codec](crate::codec),
//! which writes straight into the message (a worker's answers straight into
//! its journal) and copies byte payloads (`Vec<u8>`, `Box<[u8]>`) whole, at
//! any depth of the arguments or result. A thread waiting for a result reads
//! the sockets itself (no hand-off to another thread), and idle workers and
//! waiting threads spin briefly before sleeping (see [`PoolBuilder::spin`]).
//! Small tasks are queued up to 256 per worker; slow ones only about 2 ms
//! of work ahead. A worker that runs out of work takes back the batches
//! another worker holds but has not started (and will skip), so no worker
//! idles while tasks wait behind another, whatever ran before.

#[doc(hidden)]
#[cfg(feature = "test-hooks")]
#[path = "test_hooks.rs"]
pub mod __test;
pub(crate) mod api;
mod batch;
mod builder;
mod dispatch;
pub(crate) mod engine;
mod imap;
mod journal;
mod link;
mod progress;
mod result;
mod sink;
pub(crate) mod submit;
mod wire;
mod worker;

pub use api::{PendingResult, TaskPool};
pub use builder::PoolBuilder;
pub use imap::IMap;
pub use result::{AsyncResult, Callbacks};
pub use worker::TaskFn;

use crate::error::{Error, Result};
use dispatch::{Config, Shared, State};
use engine::{Backend, Engine, PoolFrames, MAX_CHUNK};
use progress::Progress;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// **Drop** terminates the pool, as leaving Python's `with Pool() as p:`
/// block does: the workers are killed and reaped at once and unfinished
/// tasks fail with [`Error::BrokenPool`]. To let queued work finish first,
/// call [`close`](Self::close) then [`join`](Self::join) before dropping.
pub struct Pool {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.shared.config.processes)
            .field("state", &self.shared.state())
            .finish()
    }
}

/// CPython's default chunksize for a map of `len` items over `processes`.
pub fn default_chunksize(len: usize, processes: usize) -> usize {
    let per = 4 * processes.max(1);
    (len / per + usize::from(len % per != 0)).max(1)
}

/// Encodes a `TASKS` frame of the items of `items`.
fn task_frame<X: Serialize>(runner: i64, items: impl Iterator<Item = X>) -> Result<(Vec<u8>, u32)> {
    let (frame, _, count) = task_frame_split(runner, items, usize::MAX, usize::MAX)?;
    Ok((frame, count))
}

/// An item that is a `Vec<u8>` of this many bytes or more ends its `TASKS`
/// frame and is not copied into it: it is sent from where it lies, as the
/// frame's tail (see [`task_frame_split`]).
const TAIL_MIN: usize = 64 << 10;

/// Encodes a `TASKS` frame of the items of `items`, taking no more items
/// once the frame holds `max_bytes`. An item that is a `Vec<u8>` of at
/// least `tail_min` bytes ends the frame: the frame then holds its length
/// prefix, and the vector itself is returned as the frame's tail (the
/// frame's header counts it), to be written after the frame uncopied.
fn task_frame_split<X: Serialize>(
    runner: i64,
    items: impl Iterator<Item = X>,
    max_bytes: usize,
    tail_min: usize,
) -> Result<(Vec<u8>, Option<Vec<u8>>, u32)> {
    let hint = items.size_hint().0.min(1 << 24);
    let mut f = Vec::with_capacity(wire::TASK_HEADER + 8 + hint * (std::mem::size_of::<X>() + 2));
    let start = wire::begin(&mut f, wire::TASKS);
    f.extend_from_slice(&runner.to_le_bytes());
    f.extend_from_slice(&[0; 4]);
    let mut count: u32 = 0;
    let mut tail = None;
    for item in items {
        count += 1;
        match crate::codec::into_byte_vec(item) {
            Ok(v) if v.len() >= tail_min => {
                let (h, n) = crate::codec::bytes_header(v.len());
                f.extend_from_slice(&h[..n]);
                tail = Some(v);
                break;
            }
            Ok(v) => crate::codec::put(&v, &mut f)?,
            Err(item) => crate::codec::put(&item, &mut f)?,
        }
        if f.len() >= max_bytes {
            break;
        }
    }
    f[start + 13..start + wire::TASK_HEADER].copy_from_slice(&count.to_le_bytes());
    wire::finish_with(&mut f, start, tail.as_ref().map_or(0, Vec::len));
    Ok((f, tail, count))
}

impl Pool {
    /// A pool of `processes` workers with the default settings.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for 0; the error of a worker that cannot start.
    pub fn new(processes: usize) -> Result<Pool> {
        PoolBuilder::new().processes(processes).build()
    }

    /// A [`PoolBuilder`] (number of workers, initializer, maxtasksperchild,
    /// start method, progress bar).
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    fn start(config: Config) -> Result<Pool> {
        let shared = Shared::new(config)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("multiproc-pool".into())
            .spawn(move || s.supervise(tx))?;
        let pool = Pool {
            shared,
            supervisor: Mutex::new(Some(handle)),
        };
        match rx.recv() {
            Ok(Ok(())) => Ok(pool),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::BrokenPool),
        }
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.shared.config.processes
    }

    /// The pids of the current workers (they change as workers are replaced).
    pub fn worker_pids(&self) -> Vec<i32> {
        self.shared.pids()
    }

    /// Calls `f(args...)` in a worker and waits for the result (Python's
    /// `apply`).
    ///
    /// ```no_run
    /// # use multiproc::pool::Pool;
    /// fn add(a: u64, b: u64) -> u64 { a + b }
    /// # fn main() -> multiproc::Result<()> {
    /// let pool = Pool::new(2)?;
    /// assert_eq!(pool.apply(add, (2, 3))?, 5);
    /// # Ok(()) }
    /// ```
    pub fn apply<F, A, R>(&self, f: F, args: A) -> Result<R>
    where
        F: TaskFn<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::apply(self, f, args)
    }

    /// Sends `f(args...)` to a worker and returns at once (Python's
    /// `apply_async`).
    pub fn apply_async<F, A, R>(&self, f: F, args: A) -> Result<AsyncResult<R>>
    where
        F: TaskFn<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::apply_async(self, f, args)
    }

    /// [`apply_async`](Self::apply_async) with callbacks (Python's
    /// `callback` and `error_callback`), called in a pool thread when the
    /// result arrives.
    pub fn apply_async_with<F, A, R>(
        &self,
        f: F,
        args: A,
        callbacks: Callbacks<R>,
    ) -> Result<AsyncResult<R>>
    where
        F: TaskFn<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::apply_async_with(self, f, args, callbacks)
    }

    /// Applies `f` to every item and returns the results in order (Python's
    /// `map`), with CPython's default chunksize (`len / (4 × processes)`,
    /// rounded up). The input is collected first, as in Python; use
    /// [`imap`](Self::imap) to stream it.
    ///
    /// # Errors
    ///
    /// The error of the first failed task (see the [module docs](self)).
    pub fn map<F, T, R, I>(&self, f: F, iter: I) -> Result<Vec<R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::map(self, f, iter)
    }

    /// [`map`](Self::map) with an explicit chunksize (tasks per message).
    pub fn map_chunked<F, T, R, I>(&self, f: F, iter: I, chunksize: usize) -> Result<Vec<R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::map_chunked(self, f, iter, chunksize)
    }

    /// [`map`](Self::map) without waiting (Python's `map_async`).
    pub fn map_async<F, T, R, I>(&self, f: F, iter: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::map_async(self, f, iter)
    }

    /// [`map_async`](Self::map_async) with a chunksize (`None`: the default)
    /// and callbacks called with the whole result.
    pub fn map_async_with<F, T, R, I>(
        &self,
        f: F,
        iter: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::map_async_with(self, f, iter, chunksize, callbacks)
    }

    /// Calls `f(a, b, ...)` for every argument tuple and returns the results
    /// in order (Python's `starmap`).
    ///
    /// ```no_run
    /// # use multiproc::pool::Pool;
    /// fn add(a: u64, b: u64) -> u64 { a + b }
    /// # fn main() -> multiproc::Result<()> {
    /// let pool = Pool::new(2)?;
    /// assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)])?, vec![3, 7]);
    /// # Ok(()) }
    /// ```
    pub fn starmap<F, A, R, I>(&self, f: F, iter: I) -> Result<Vec<R>>
    where
        F: TaskFn<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::starmap(self, f, iter)
    }

    /// [`starmap`](Self::starmap) without waiting (Python's `starmap_async`).
    pub fn starmap_async<F, A, R, I>(&self, f: F, iter: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: TaskFn<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::starmap_async_with(self, f, iter, None, Callbacks::new())
    }

    /// [`starmap_async`](Self::starmap_async) with a chunksize and callbacks.
    pub fn starmap_async_with<F, A, R, I>(
        &self,
        f: F,
        iter: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: TaskFn<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::starmap_async_with(self, f, iter, chunksize, callbacks)
    }

    /// A lazy, ordered map (Python's `imap` with `chunksize=1`): yields one
    /// `Result` per item, in input order, while later tasks still run. The
    /// input is read only as far as a bounded look-ahead.
    pub fn imap<F, T, R, I>(&self, f: F, iter: I) -> Result<IMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::imap(self, f, iter)
    }

    /// [`imap`](Self::imap) with `chunksize` items per message.
    pub fn imap_chunked<F, T, R, I>(
        &self,
        f: F,
        iter: I,
        chunksize: usize,
    ) -> Result<IMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::imap_chunked(self, f, iter, chunksize)
    }

    /// As [`imap`](Self::imap), but yields results as they complete
    /// (Python's `imap_unordered`).
    pub fn imap_unordered<F, T, R, I>(&self, f: F, iter: I) -> Result<IMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::imap_unordered(self, f, iter)
    }

    /// [`imap_unordered`](Self::imap_unordered) with `chunksize` items per message.
    pub fn imap_unordered_chunked<F, T, R, I>(
        &self,
        f: F,
        iter: I,
        chunksize: usize,
    ) -> Result<IMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        <Self as TaskPool>::imap_unordered_chunked(self, f, iter, chunksize)
    }

    /// Stops accepting tasks (submitting one now fails with
    /// [`Error::BrokenPool`]); the workers exit once the queued tasks are
    /// done (Python's `close`).
    pub fn close(&self) -> Result<()> {
        self.shared.close()
    }

    /// Kills the workers at once (Python's `terminate`): every unfinished
    /// task fails with [`Error::BrokenPool`]. Returns once the workers are
    /// reaped.
    pub fn terminate(&self) {
        self.shared.terminate();
        self.join_supervisor();
    }

    /// Waits for the workers to exit (Python's `join`): after
    /// [`close`](Self::close), once every queued task is done; after
    /// [`terminate`](Self::terminate), at once.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidState`] if the pool is still running (Python's `ValueError`).
    pub fn join(&self) -> Result<()> {
        match self.shared.state() {
            State::Running => Err(Error::InvalidState(
                "join() needs close() or terminate() first".into(),
            )),
            State::Closed => {
                self.shared.join_workers()?;
                self.shared.stop_supervisor();
                self.join_supervisor();
                Ok(())
            }
            State::Terminated => {
                self.join_supervisor();
                Ok(())
            }
        }
    }

    fn join_supervisor(&self) {
        let h = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = h {
            if h.thread().id() == std::thread::current().id() {
                // Called from a callback running in the supervisor itself: it
                // ends on its own once it returns.
                return;
            }
            let _ = h.join();
        }
    }
}

/// The local pool's engine is its dispatcher.
impl Backend for Pool {
    type Frames = PoolFrames;

    fn processes(&self) -> usize {
        self.shared.config.processes
    }

    fn engine(&self) -> Result<Arc<dyn Engine>> {
        if self.shared.state() != State::Running {
            return Err(Error::BrokenPool);
        }
        Ok(self.shared.clone())
    }

    fn limits(&self) -> (usize, usize) {
        if self.shared.config.maxtasks == 0 {
            // A message may also end at BATCH_BYTES (a chunk is then
            // several messages, as with MAX_CHUNK).
            (MAX_CHUNK, engine::BATCH_BYTES)
        } else {
            // With maxtasksperchild a chunk stays one message (one task,
            // as Python counts).
            (usize::MAX, usize::MAX)
        }
    }

    fn progress(&self, len: Option<usize>) -> Progress {
        Progress::new(self.shared.config.progress, len.map(|n| n as u64))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}
