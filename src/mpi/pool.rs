//! [`MpiPool`]: the pool's interface over MPI worker ranks.

use super::driver::{Batch, Driver, Shared};
use super::result::{MpiAsyncResult, MpiIMap};
use super::runner::{offset_of_call, offset_of_map, task_frame};
use super::RankInfo;
use crate::error::Result;
use crate::pool::api::backend::{Collect, Outcome, Progress};
use crate::pool::{default_chunksize, Callbacks, TaskFn, TaskPool};
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;

/// The most tasks of a map in one batch.
const MAX_BATCH: usize = 64 << 10;

/// A pool whose workers are the other ranks of an MPI job
/// (`mpi4py.futures` style): rank 0 runs `main` and holds the pool, every
/// other rank serves tasks from [`init`](crate::init) until the pool is
/// dropped. Same methods as [`Pool`](crate::Pool), shared through
/// [`TaskPool`].
///
/// ```no_run
/// use multiproc::mpi::MpiPool;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init(); // ranks 1.. serve here and never return
///     let pool = MpiPool::new()?; // rank 0: every other rank is a worker
///     let squares = pool.map(square, 0..1000u64)?;
///     assert_eq!(squares[7], 49);
///     Ok(())
/// }
/// ```
///
/// Run it with `mpiexec -n 3 ./prog` (two workers), `srun -n 64 ./prog`, …
///
/// **Drop** ends the pool: queued tasks fail with [`Error::BrokenPool`](crate::Error::BrokenPool),
/// each worker finishes the tasks it holds (at most two messages of about
/// a millisecond of work each, or one long task), then exits.
pub struct MpiPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MpiPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiPool")
            .field("workers", &self.shared.ranks.len())
            .finish()
    }
}

fn only<R>(v: Vec<R>) -> R {
    v.into_iter().next().expect("one task, one result")
}

fn all<R>(v: Vec<R>) -> Vec<R> {
    v
}

impl MpiPool {
    /// The pool of every rank but this one (rank 0).
    ///
    /// Checks first that every rank runs the same code as rank 0 (ELF
    /// build-id, or a hash of the executable): tasks name functions by their
    /// place in the binary.
    ///
    /// # Errors
    ///
    /// - [`Error::Bootstrap`](crate::Error::Bootstrap) naming the rank (and its host) that runs a
    ///   different build, or a rank that did not report in time (it did not
    ///   call [`init`](crate::init) first in `main`).
    /// - [`Error::InvalidState`](crate::Error::InvalidState) if the program was not started by an MPI
    ///   launcher with at least two ranks, if [`init`](crate::init) was not
    ///   called, or if the pool was already created (MPI's world serves one
    ///   pool per run).
    pub fn new() -> Result<MpiPool> {
        let (comm, ranks) = super::start()?;
        let shared = Shared::new(Driver::new(comm, ranks.clone()), ranks);
        Ok(MpiPool { shared })
    }

    /// The number of worker ranks.
    pub fn processes(&self) -> usize {
        self.shared.ranks.len()
    }

    /// The worker ranks: rank, host and pid.
    pub fn ranks(&self) -> &[RankInfo] {
        &self.shared.ranks
    }

    /// Calls `f(args...)` on a worker rank and waits for the result
    /// (Python's `apply`).
    pub fn apply<F, A, R>(&self, f: F, args: A) -> Result<R>
    where
        F: TaskFn<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async(f, args)?.get()
    }

    /// Sends `f(args...)` to a worker rank and returns at once (Python's
    /// `apply_async`).
    pub fn apply_async<F, A, R>(&self, f: F, args: A) -> Result<MpiAsyncResult<R>>
    where
        F: TaskFn<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let runner = offset_of_call::<F, A, R>();
        let (frame, count) = task_frame(runner, std::iter::once(&args))?;
        let out = Outcome::new(Callbacks::new());
        let sink = Collect::<R, R>::new(out.clone(), only::<R>, Progress::default());
        self.shared.submit(vec![Batch {
            frame,
            count,
            index: 0,
            sink: sink.clone(),
        }])?;
        sink.seal(1);
        Ok(MpiAsyncResult {
            out,
            shared: self.shared.clone(),
        })
    }

    /// Applies `f` to every item and returns the results in order (Python's
    /// `map`), with CPython's default chunksize (`len / (4 × workers)`,
    /// rounded up).
    ///
    /// # Errors
    ///
    /// The error of the first failed task, once every task has ended.
    pub fn map<F, T, R, I>(&self, f: F, iter: I) -> Result<Vec<R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async_chunked(f, iter, None)?.get()
    }

    /// [`map`](Self::map) with an explicit chunksize (tasks per batch).
    pub fn map_chunked<F, T, R, I>(&self, f: F, iter: I, chunksize: usize) -> Result<Vec<R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async_chunked(f, iter, Some(chunksize))?.get()
    }

    /// [`map`](Self::map) without waiting (Python's `map_async`); `None`
    /// for the default chunksize.
    pub fn map_async_chunked<F, T, R, I>(
        &self,
        f: F,
        iter: I,
        chunksize: Option<usize>,
    ) -> Result<MpiAsyncResult<Vec<R>>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.map_impl(offset_of_map::<F, T, R>(), iter.into_iter(), chunksize)
    }

    /// Calls `f(a, b, ...)` for every argument tuple and returns the results
    /// in order (Python's `starmap`).
    pub fn starmap<F, A, R, I>(&self, f: F, iter: I) -> Result<Vec<R>>
    where
        F: TaskFn<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        self.map_impl(offset_of_call::<F, A, R>(), iter.into_iter(), None)?
            .get()
    }

    fn map_impl<X: Serialize, R>(
        &self,
        runner: i64,
        items: impl Iterator<Item = X>,
        chunksize: Option<usize>,
    ) -> Result<MpiAsyncResult<Vec<R>>>
    where
        R: DeserializeOwned + Send + 'static,
    {
        let (lo, hi) = items.size_hint();
        match (chunksize, hi) {
            (Some(cs), _) => self.map_stream(runner, items, cs, hi.filter(|&h| h == lo)),
            (None, Some(hi)) if hi == lo => {
                let cs = default_chunksize(lo, self.processes());
                self.map_stream(runner, items, cs, Some(lo))
            }
            (None, _) => {
                let all: Vec<X> = items.collect();
                let n = all.len();
                let cs = default_chunksize(n, self.processes());
                self.map_stream(runner, all.into_iter(), cs, Some(n))
            }
        }
    }

    fn map_stream<X: Serialize, R>(
        &self,
        runner: i64,
        mut items: impl Iterator<Item = X>,
        cs: usize,
        len: Option<usize>,
    ) -> Result<MpiAsyncResult<Vec<R>>>
    where
        R: DeserializeOwned + Send + 'static,
    {
        let cs = cs.clamp(1, MAX_BATCH);
        let out = Outcome::new(Callbacks::new());
        let sink = Collect::<R, Vec<R>>::new(out.clone(), all::<R>, Progress::default());
        if let Some(n) = len {
            sink.reserve(n);
        }
        let mut group = Vec::new();
        let mut group_tasks = 0;
        let mut index = 0;
        loop {
            let (frame, count) = task_frame(runner, items.by_ref().take(cs))?;
            if count == 0 {
                break;
            }
            group.push(Batch {
                frame,
                count,
                index,
                sink: sink.clone(),
            });
            index += 1;
            group_tasks += count as usize;
            // Hand over work as it is encoded, so the ranks start early.
            if group_tasks >= 4096 || group.len() >= 256 {
                self.shared.submit(std::mem::take(&mut group))?;
                group_tasks = 0;
            }
        }
        self.shared.submit(group)?;
        sink.seal(index);
        Ok(MpiAsyncResult {
            out,
            shared: self.shared.clone(),
        })
    }

    /// A lazy, ordered map (Python's `imap` with `chunksize=1`).
    pub fn imap<F, T, R, I>(&self, f: F, iter: I) -> Result<MpiIMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_chunked(f, iter, 1)
    }

    /// [`imap`](Self::imap) with `chunksize` items per batch.
    pub fn imap_chunked<F, T, R, I>(
        &self,
        f: F,
        iter: I,
        chunksize: usize,
    ) -> Result<MpiIMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let runner = offset_of_map::<F, T, R>();
        Ok(MpiIMap::new(
            self.shared.clone(),
            iter.into_iter(),
            runner,
            chunksize,
            true,
        ))
    }

    /// As [`imap`](Self::imap), but yields results as the ranks finish them
    /// (Python's `imap_unordered`).
    pub fn imap_unordered<F, T, R, I>(&self, f: F, iter: I) -> Result<MpiIMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_unordered_chunked(f, iter, 1)
    }

    /// [`imap_unordered`](Self::imap_unordered) with `chunksize` items per batch.
    pub fn imap_unordered_chunked<F, T, R, I>(
        &self,
        f: F,
        iter: I,
        chunksize: usize,
    ) -> Result<MpiIMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = f;
        let runner = offset_of_map::<F, T, R>();
        Ok(MpiIMap::new(
            self.shared.clone(),
            iter.into_iter(),
            runner,
            chunksize,
            false,
        ))
    }
}

impl Drop for MpiPool {
    fn drop(&mut self) {
        self.shared.lock().shut_down();
    }
}

impl TaskPool for MpiPool {
    type AsyncResult<V: Send + 'static> = MpiAsyncResult<V>;
    type IMap<I, R>
        = MpiIMap<I, R>
    where
        I: Iterator,
        I::Item: Serialize,
        R: DeserializeOwned + Send + 'static;

    fn processes(&self) -> usize {
        MpiPool::processes(self)
    }

    fn map<F, T, R, I>(&self, f: F, iter: I) -> Result<Vec<R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        MpiPool::map(self, f, iter)
    }

    fn map_chunked<F, T, R, I>(&self, f: F, iter: I, chunksize: usize) -> Result<Vec<R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        MpiPool::map_chunked(self, f, iter, chunksize)
    }

    fn imap<F, T, R, I>(&self, f: F, iter: I) -> Result<MpiIMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        MpiPool::imap(self, f, iter)
    }

    fn imap_unordered<F, T, R, I>(&self, f: F, iter: I) -> Result<MpiIMap<I::IntoIter, R>>
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        I: IntoIterator<Item = T>,
        T: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        MpiPool::imap_unordered(self, f, iter)
    }

    fn starmap<F, A, R, I>(&self, f: F, iter: I) -> Result<Vec<R>>
    where
        F: TaskFn<A, R>,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        MpiPool::starmap(self, f, iter)
    }

    fn apply<F, A, R>(&self, f: F, args: A) -> Result<R>
    where
        F: TaskFn<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        MpiPool::apply(self, f, args)
    }

    fn apply_async<F, A, R>(&self, f: F, args: A) -> Result<MpiAsyncResult<R>>
    where
        F: TaskFn<A, R>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        MpiPool::apply_async(self, f, args)
    }
}
