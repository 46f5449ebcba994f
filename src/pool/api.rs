//! The pool interface shared by [`Pool`](super::Pool) (worker processes on
//! this machine) and, with the `mpi` feature, `multiproc::mpi::MpiPool` (MPI
//! ranks): code written against [`TaskPool`] runs on either, and switching
//! is a change of one constructor.
//!
//! ```no_run
//! use multiproc::pool::{PendingResult, Pool, TaskPool};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! /// Runs on a local `Pool` or on an `MpiPool` alike.
//! fn sum_of_squares(pool: &impl TaskPool, n: u64) -> multiproc::Result<u64> {
//!     Ok(pool.map(square, 0..n)?.into_iter().sum())
//! }
//!
//! fn main() -> multiproc::Result<()> {
//!     multiproc::init();
//!     let pool = Pool::new(2)?; // or `multiproc::mpi::MpiPool::new()?`
//!     assert_eq!(sum_of_squares(&pool, 4)?, 14);
//!     assert_eq!(pool.apply_async(square, (7,))?.get()?, 49);
//!     Ok(())
//! }
//! ```
//!
//! This file also gathers what another backend reuses of the pool's
//! machinery (the value codec, panic capture, result sinks), so that it
//! reports answers and failures exactly as [`Pool`](super::Pool) does.

use super::engine::{Backend, Frames};
use super::submit;
use super::{AsyncResult, Callbacks, IMap, TaskFn};
use crate::error::Result;
use serde::{de::DeserializeOwned, Serialize};
use std::time::Duration;

/// What another backend (MPI) reuses of the pool's machinery: the codec
/// for many small values, the panic capture of workers, and the result
/// sinks, so that its tasks' answers and failures read as the pool's.
#[cfg(feature = "mpi")]
pub(crate) mod backend {
    pub(crate) use super::super::progress::Progress;
    pub(crate) use super::super::result::{Fail, Sink};
    pub(crate) use super::super::worker::{install_hook, take_panic};
    pub(crate) use crate::codec::{put as fast_put, Reader};
}

/// The pending result of [`TaskPool::apply_async`] (Python's `AsyncResult`).
pub trait PendingResult<V> {
    /// Whether the call has completed.
    fn ready(&self) -> bool;
    /// Waits at most `timeout`; `true` if the call completed.
    fn wait_timeout(&self, timeout: Duration) -> Result<bool>;
    /// Waits for the call and returns its value or the task's error.
    fn get(&self) -> Result<V>;
    /// [`get`](Self::get) with a timeout: [`Error::Timeout`](crate::Error::Timeout)
    /// if the call is still running when it passes.
    fn get_timeout(&self, timeout: Duration) -> Result<V>;
}

impl<V> PendingResult<V> for AsyncResult<V> {
    fn ready(&self) -> bool {
        AsyncResult::ready(self)
    }
    fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        AsyncResult::wait_timeout(self, timeout)
    }
    fn get(&self) -> Result<V> {
        AsyncResult::get(self)
    }
    fn get_timeout(&self, timeout: Duration) -> Result<V> {
        AsyncResult::get_timeout(self, timeout)
    }
}

/// What every pool offers (Python's `Pool` methods): implemented by
/// [`Pool`](super::Pool) and, with the `mpi` feature, by `MpiPool`. The
/// methods mean what [`Pool`](super::Pool)'s methods of the same names mean.
///
/// A pool implements the five `_with`/`_chunked` methods; the others are
/// written once, here, in their terms.
pub trait TaskPool {
    /// The pending result of [`apply_async`](Self::apply_async).
    type AsyncResult<V: Send + 'static>: PendingResult<V>;
    /// The iterator of [`imap`](Self::imap) and
    /// [`imap_unordered`](Self::imap_unordered): one `Result` per item.
    type IMap<I, R>: Iterator<Item = Result<R>>
    where
        I: Iterator,
        I::Item: Serialize,
        R: DeserializeOwned + Send + 'static;

    /// The number of workers.
    fn processes(&self) -> usize;

    /// `f(args...)` in a worker, not waited for (Python's `apply_async`),
    /// with callbacks called with its outcome.
    fn apply_async_with<F, A, R>(
        &self,
        f: F,
        args: A,
        callbacks: Callbacks<R>,
    ) -> Result<Self::AsyncResult<R>>
    where
        F: TaskFn<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// `f` applied to every item, not waited for (Python's `map_async`),
    /// in chunks of `chunksize` tasks (`None`: CPython's default), with
    /// callbacks called with the whole result.
    fn map_async_with<F, T, R, I>(
        &self,
        f: F,
        iter: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<Self::AsyncResult<Vec<R>>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// `f(a, b, ...)` for every argument tuple, not waited for (Python's
    /// `starmap_async`), as [`map_async_with`](Self::map_async_with).
    fn starmap_async_with<F, A, R, I>(
        &self,
        f: F,
        iter: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<Self::AsyncResult<Vec<R>>>
    where
        F: TaskFn<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// A lazy, ordered map (Python's `imap`) with `chunksize` items per
    /// message.
    fn imap_chunked<F, T, R, I>(
        &self,
        f: F,
        iter: I,
        chunksize: usize,
    ) -> Result<Self::IMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// Results as they complete (Python's `imap_unordered`), with
    /// `chunksize` items per message.
    fn imap_unordered_chunked<F, T, R, I>(
        &self,
        f: F,
        iter: I,
        chunksize: usize,
    ) -> Result<Self::IMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// `f` applied to every item, in order (Python's `map`), with CPython's
    /// default chunksize.
    fn map<F, T, R, I>(&self, f: F, iter: I) -> Result<Vec<R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async_with(f, iter, None, Callbacks::new())?.get()
    }

    /// [`map`](Self::map) with `chunksize` tasks per message.
    fn map_chunked<F, T, R, I>(&self, f: F, iter: I, chunksize: usize) -> Result<Vec<R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async_with(f, iter, Some(chunksize), Callbacks::new())?
            .get()
    }

    /// [`map`](Self::map) without waiting (Python's `map_async`).
    fn map_async<F, T, R, I>(&self, f: F, iter: I) -> Result<Self::AsyncResult<Vec<R>>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async_with(f, iter, None, Callbacks::new())
    }

    /// A lazy, ordered map (Python's `imap` with `chunksize=1`).
    fn imap<F, T, R, I>(&self, f: F, iter: I) -> Result<Self::IMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_chunked(f, iter, 1)
    }

    /// Results as they complete (Python's `imap_unordered` with
    /// `chunksize=1`).
    fn imap_unordered<F, T, R, I>(&self, f: F, iter: I) -> Result<Self::IMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_unordered_chunked(f, iter, 1)
    }

    /// `f(a, b, ...)` for every argument tuple, in order (Python's `starmap`).
    fn starmap<F, A, R, I>(&self, f: F, iter: I) -> Result<Vec<R>>
    where
        F: TaskFn<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.starmap_async_with(f, iter, None, Callbacks::new())?
            .get()
    }

    /// `f(args...)` in a worker, waited for (Python's `apply`).
    fn apply<F, A, R>(&self, f: F, args: A) -> Result<R>
    where
        F: TaskFn<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async_with(f, args, Callbacks::new())?.get()
    }

    /// `f(args...)` in a worker, not waited for (Python's `apply_async`).
    fn apply_async<F, A, R>(&self, f: F, args: A) -> Result<Self::AsyncResult<R>>
    where
        F: TaskFn<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async_with(f, args, Callbacks::new())
    }
}

/// Every pool ([`Pool`](super::Pool), `MpiPool`): the calls written once,
/// over the pool's engine and task frames (`engine.rs`).
impl<B: Backend> TaskPool for B {
    type AsyncResult<V: Send + 'static> = AsyncResult<V>;
    type IMap<I, R>
        = IMap<I, R>
    where
        I: Iterator,
        I::Item: Serialize,
        R: DeserializeOwned + Send + 'static;

    fn processes(&self) -> usize {
        Backend::processes(self)
    }

    fn apply_async_with<F, A, R>(
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
        let _ = f;
        let runner = B::Frames::call_runner::<F, A, R>();
        submit::submit_one::<B::Frames, A, R>(&self.engine()?, runner, &args, callbacks)
    }

    fn map_async_with<F, T, R, I>(
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
        let _ = f;
        let runner = B::Frames::map_runner::<F, T, R>();
        map(self, runner, iter.into_iter(), chunksize, callbacks)
    }

    fn starmap_async_with<F, A, R, I>(
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
        let _ = f;
        let runner = B::Frames::call_runner::<F, A, R>();
        map(self, runner, iter.into_iter(), chunksize, callbacks)
    }

    fn imap_chunked<F, T, R, I>(
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
        let _ = f;
        let runner = B::Frames::map_runner::<F, T, R>();
        imap(self, runner, iter.into_iter(), chunksize, true)
    }

    fn imap_unordered_chunked<F, T, R, I>(
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
        let _ = f;
        let runner = B::Frames::map_runner::<F, T, R>();
        imap(self, runner, iter.into_iter(), chunksize, false)
    }
}

/// A map (or starmap) of the runner `runner` over `items`.
fn map<B: Backend, X: Serialize, R>(
    pool: &B,
    runner: i64,
    items: impl Iterator<Item = X>,
    chunksize: Option<usize>,
    callbacks: Callbacks<Vec<R>>,
) -> Result<AsyncResult<Vec<R>>>
where
    R: DeserializeOwned + Send + 'static,
{
    let engine = pool.engine()?;
    submit::submit_map::<B::Frames, X, R>(
        &engine,
        runner,
        items,
        chunksize,
        pool.limits(),
        callbacks,
        |len| pool.progress(len),
    )
}

/// A lazy map of the runner `runner` over `iter`, in order or not.
fn imap<B: Backend, I, R>(
    pool: &B,
    runner: i64,
    iter: I,
    chunksize: usize,
    ordered: bool,
) -> Result<IMap<I, R>>
where
    I: Iterator,
    I::Item: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    let engine = pool.engine()?;
    let (lo, hi) = iter.size_hint();
    let len = (Some(lo) == hi).then_some(lo);
    Ok(IMap::new::<B::Frames>(
        engine,
        iter,
        runner,
        chunksize,
        ordered,
        pool.progress(len),
    ))
}
