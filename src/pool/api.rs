//! The pool interface shared by [`Pool`] (worker processes on this machine)
//! and, with the `mpi` feature, `multiproc::mpi::MpiPool` (MPI ranks): code
//! written against [`TaskPool`] runs on either, and switching is a change
//! of one constructor.
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
//! reports answers and failures exactly as [`Pool`] does.

use super::{AsyncResult, Pool, TaskFn};
use crate::error::Result;
use serde::{de::DeserializeOwned, Serialize};
use std::time::Duration;

/// What another backend (MPI) reuses of the pool's machinery: the codec
/// for many small values, the panic capture of workers, and the result
/// sinks, so that its tasks' answers and failures read as the pool's.
#[cfg(feature = "mpi")]
pub(crate) mod backend {
    pub(crate) use super::super::fast::{put as fast_put, Reader};
    pub(crate) use super::super::progress::Progress;
    pub(crate) use super::super::result::{Fail, Sink};
    pub(crate) use super::super::worker::{install_hook, take_panic};
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
/// [`Pool`] and, with the `mpi` feature, by `MpiPool`. The methods mean
/// what [`Pool`]'s methods of the same names mean.
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

    /// `f` applied to every item, in order (Python's `map`), with CPython's
    /// default chunksize.
    fn map<F, T, R, I>(&self, f: F, iter: I) -> Result<Vec<R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// [`map`](Self::map) with `chunksize` tasks per message.
    fn map_chunked<F, T, R, I>(&self, f: F, iter: I, chunksize: usize) -> Result<Vec<R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// A lazy, ordered map (Python's `imap`).
    fn imap<F, T, R, I>(&self, f: F, iter: I) -> Result<Self::IMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// Results as they complete (Python's `imap_unordered`).
    fn imap_unordered<F, T, R, I>(&self, f: F, iter: I) -> Result<Self::IMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// `f(a, b, ...)` for every argument tuple, in order (Python's `starmap`).
    fn starmap<F, A, R, I>(&self, f: F, iter: I) -> Result<Vec<R>>
    where
        F: TaskFn<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// `f(args...)` in a worker, waited for (Python's `apply`).
    fn apply<F, A, R>(&self, f: F, args: A) -> Result<R>
    where
        F: TaskFn<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// `f(args...)` in a worker, not waited for (Python's `apply_async`).
    fn apply_async<F, A, R>(&self, f: F, args: A) -> Result<Self::AsyncResult<R>>
    where
        F: TaskFn<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static;
}

/// Implements [`TaskPool`] for a pool type by its inherent methods of the
/// same names (every pool hands out [`AsyncResult`] and [`IMap`]).
macro_rules! impl_task_pool {
    ($pool:ty) => {
        impl $crate::pool::TaskPool for $pool {
            type AsyncResult<V: Send + 'static> = $crate::pool::AsyncResult<V>;
            type IMap<I, R>
                = $crate::pool::IMap<I, R>
            where
                I: Iterator,
                I::Item: serde::Serialize,
                R: serde::de::DeserializeOwned + Send + 'static;

            fn processes(&self) -> usize {
                <$pool>::processes(self)
            }

            fn map<F, T, R, I>(&self, f: F, iter: I) -> $crate::Result<Vec<R>>
            where
                F: Fn(T) -> R + Copy + Send + Sync + 'static,
                I: IntoIterator<Item = T>,
                T: serde::Serialize + serde::de::DeserializeOwned,
                R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
            {
                <$pool>::map(self, f, iter)
            }

            fn map_chunked<F, T, R, I>(
                &self,
                f: F,
                iter: I,
                chunksize: usize,
            ) -> $crate::Result<Vec<R>>
            where
                F: Fn(T) -> R + Copy + Send + Sync + 'static,
                I: IntoIterator<Item = T>,
                T: serde::Serialize + serde::de::DeserializeOwned,
                R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
            {
                <$pool>::map_chunked(self, f, iter, chunksize)
            }

            fn imap<F, T, R, I>(
                &self,
                f: F,
                iter: I,
            ) -> $crate::Result<$crate::pool::IMap<I::IntoIter, R>>
            where
                F: Fn(T) -> R + Copy + Send + Sync + 'static,
                I: IntoIterator<Item = T>,
                T: serde::Serialize + serde::de::DeserializeOwned,
                R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
            {
                <$pool>::imap(self, f, iter)
            }

            fn imap_unordered<F, T, R, I>(
                &self,
                f: F,
                iter: I,
            ) -> $crate::Result<$crate::pool::IMap<I::IntoIter, R>>
            where
                F: Fn(T) -> R + Copy + Send + Sync + 'static,
                I: IntoIterator<Item = T>,
                T: serde::Serialize + serde::de::DeserializeOwned,
                R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
            {
                <$pool>::imap_unordered(self, f, iter)
            }

            fn starmap<F, A, R, I>(&self, f: F, iter: I) -> $crate::Result<Vec<R>>
            where
                F: $crate::pool::TaskFn<A, R>,
                I: IntoIterator<Item = A>,
                A: serde::Serialize + serde::de::DeserializeOwned,
                R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
            {
                <$pool>::starmap(self, f, iter)
            }

            fn apply<F, A, R>(&self, f: F, args: A) -> $crate::Result<R>
            where
                F: $crate::pool::TaskFn<A, R>,
                A: serde::Serialize + serde::de::DeserializeOwned,
                R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
            {
                <$pool>::apply(self, f, args)
            }

            fn apply_async<F, A, R>(
                &self,
                f: F,
                args: A,
            ) -> $crate::Result<$crate::pool::AsyncResult<R>>
            where
                F: $crate::pool::TaskFn<A, R>,
                A: serde::Serialize + serde::de::DeserializeOwned,
                R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
            {
                <$pool>::apply_async(self, f, args)
            }
        }
    };
}
#[cfg(feature = "mpi")]
pub(crate) use impl_task_pool;

impl_task_pool!(Pool);
