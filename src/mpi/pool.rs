//! [`MpiPool`]: the pool's interface over MPI worker ranks.

use super::driver::{Shared, State};
use super::runner::MpiFrames;
use super::RankInfo;
use crate::error::{Error, Result};
use crate::pool::api::backend::Progress;
use crate::pool::engine::{Backend, Engine, MAX_CHUNK};
#[cfg(doc)]
use crate::pool::TaskPool;
use std::sync::Arc;

/// A pool whose workers are the other ranks of an MPI job
/// (`mpi4py.futures` style): rank 0 runs `main` and holds the pool, every
/// other rank serves tasks from [`init`](crate::init) until the pool ends.
/// Its calls are [`TaskPool`]'s methods (`map`, `imap`, `apply_async_with`,
/// …), with the same result types as [`Pool`](crate::Pool)'s.
///
/// ```no_run
/// use multiproc::mpi::MpiPool;
/// use multiproc::pool::TaskPool;
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
/// A background thread on rank 0 sends the tasks and collects the answers
/// while no caller waits, so callbacks ([`TaskPool::apply_async_with`])
/// run and futures (feature `tokio`) complete on their own. A callback runs
/// in that thread while the pool delivers results: keep it short; calling
/// its own pool from it fails with [`Error::InvalidState`].
///
/// **Ending it**: [`close`](Self::close) then [`join`](Self::join) lets
/// every queued task finish, then releases the ranks;
/// [`terminate`](Self::terminate) (and drop) fails every unfinished task
/// with [`Error::BrokenPool`] at once and releases the ranks: each finishes
/// the task it is running (an MPI rank cannot be killed from here), its
/// answer is dropped, and it exits. Either way the ranks end with the
/// pool: MPI's world serves one pool per run.
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

impl MpiPool {
    /// The pool of every rank but this one (rank 0).
    ///
    /// Checks first that every rank runs the same code as rank 0 (ELF
    /// build-id, or a hash of the executable): tasks name functions by their
    /// place in the binary.
    ///
    /// # Errors
    ///
    /// - [`Error::Bootstrap`] naming the rank (and its host) that runs a
    ///   different build, or a rank that did not report in time (it did not
    ///   call [`init`](crate::init) first in `main`).
    /// - [`Error::InvalidState`] if the program was not started by an MPI
    ///   launcher with at least two ranks, if [`init`](crate::init) was not
    ///   called, or if the pool was already created (MPI's world serves one
    ///   pool per run).
    pub fn new() -> Result<MpiPool> {
        let (comm, ranks) = super::start()?;
        let shared = Shared::start(super::driver::Driver::new(comm, ranks.clone()), ranks)?;
        super::adopt(&shared);
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

    /// Stops taking tasks (Python's `close`): the ranks are released once
    /// every queued task is done.
    pub fn close(&self) -> Result<()> {
        self.shared.close()
    }

    /// Fails every unfinished task with [`Error::BrokenPool`] at once and
    /// releases the ranks (Python's `terminate`); returns once each rank
    /// has finished the task it was running and acknowledged.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidState`] from a callback of this pool.
    pub fn terminate(&self) -> Result<()> {
        self.shared.terminate()
    }

    /// Waits until the ranks are released (Python's `join`): after
    /// [`close`](Self::close), once every queued task is done; after
    /// [`terminate`](Self::terminate), at once.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidState`] if the pool is still running (Python's
    /// `ValueError`); the MPI error that broke the pool, if one did.
    pub fn join(&self) -> Result<()> {
        if self.shared.state()? == State::Running {
            return Err(Error::InvalidState(
                "join() needs close() or terminate() first".into(),
            ));
        }
        let shared = &self.shared;
        let stopped = || matches!(shared.state(), Ok(State::Stopped) | Err(_));
        shared.wait_until(&stopped, None).map(|_| ())
    }
}

impl Drop for MpiPool {
    fn drop(&mut self) {
        if let Err(e) = self.shared.terminate() {
            crate::logging::mp_log!(error, target: "multiproc::mpi", "cannot end the MPI pool: {e}");
        }
    }
}

/// The pool's calls ([`TaskPool`]'s methods) go to the worker ranks.
impl Backend for MpiPool {
    type Frames = MpiFrames;

    fn processes(&self) -> usize {
        MpiPool::processes(self)
    }

    fn engine(&self) -> Result<Arc<dyn Engine>> {
        if self.shared.state()? != State::Running {
            return Err(Error::BrokenPool);
        }
        Ok(self.shared.clone())
    }

    fn limits(&self) -> (usize, usize) {
        (MAX_CHUNK, usize::MAX)
    }

    fn progress(&self, _len: Option<usize>) -> Progress {
        Progress::default()
    }
}
