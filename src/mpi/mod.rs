//! The pool on MPI ranks: [`MpiPool`], for programs that outgrow one
//! machine (feature `mpi`; the model is Python's `mpi4py.futures`).
//!
//! The same binary is started N times by the cluster's MPI launcher
//! (`mpiexec -n N`, `mpiexec -f hostfile`, Slurm's `srun --mpi=pmix -n N`).
//! Rank 0 runs `main` and creates the pool; [`init`](crate::init), first in
//! `main`, turns every other rank into a worker that serves tasks until the
//! pool on rank 0 is dropped (MPI's "static world": no process is spawned,
//! which is what works under every launcher and scheduler).
//!
//! ```no_run
//! use multiproc::mpi::MpiPool;
//! use multiproc::pool::TaskPool;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> multiproc::Result<()> {
//!     multiproc::init();
//!     // `multiproc::Pool::new(2)?` runs the same code on local processes.
//!     let pool = MpiPool::new()?;
//!     let total: u64 = pool.map(square, 0..1_000u64)?.into_iter().sum();
//!     println!("{total} from {} ranks", pool.processes());
//!     Ok(())
//! }
//! ```
//!
//! Tasks are named as [`Pool`](crate::Pool) names them (the offset of a
//! task runner in the binary, rebuilt from the function's type), so every
//! rank must run the same code: [`MpiPool::new`] compares the ELF build-id
//! of every rank's executable (a SHA-256 of the file when it has none) with
//! rank 0's and refuses with an error naming the rank that differs; each
//! worker also checks rank 0's before running anything.
//!
//! `init` initializes MPI (`MPI_THREAD_SERIALIZED`) in every rank and the
//! pool owns it: a program that makes MPI calls of its own besides the pool
//! is not supported yet. MPI is finalized when rank 0 exits.
//!
//! # Dispatch
//!
//! Dynamic, as in `mpi4py.futures`: each worker holds at most two messages
//! of tasks and gets the next when it answers one, so a slow rank does not
//! hold back the others, and `imap_unordered` yields results as ranks
//! finish. A message carries whole chunks up to about a millisecond of work
//! (measured by the worker): thousands of cheap tasks, or one slow one.
//! Rank 0 does its MPI work in a background thread of the pool (so
//! callbacks run and futures complete with nobody waiting) and in the
//! threads that wait on it (`map`, `get`, iterating an `imap`), one at a
//! time.
//!
//! # Failures, and what MPI lets a program detect
//!
//! - A **panicking task** is that task's error ([`Error::ProcessFailed`]
//!   with the panic message and the worker rank's backtrace; `pid` is the
//!   worker's pid on its host). The rank goes on serving.
//! - A **rank that dies** (killed, crashed, `exit` in a task): MPI has no
//!   portable way to survive it. MPICH (whose `mpiexec` is hydra) ends the
//!   whole job when any rank dies, rank 0 included: `mpiexec` reports
//!   `BAD TERMINATION ... KILLED BY SIGNAL: 9` and exits non-zero, so the
//!   job fails instead of hanging. MPICH's `mpiexec -disable-auto-cleanup`
//!   (with `MPIR_CVAR_ENABLE_FT=1`) is meant to keep the other ranks
//!   running; with MPICH 4.0's ch4/UCX device (Debian 12) the job still
//!   ended. Open MPI aborts the job likewise (`mpirun` "proc ... exited on
//!   signal 9"); only an MPI with ULFM fault tolerance (Open MPI 5 built
//!   with `--with-ft=ulfm`, `mpirun --with-ft ulfm`) reports the failure to
//!   the other ranks. The pool sets `MPI_ERRORS_RETURN` on its communicator
//!   and checks every MPI call: when the MPI reports an error instead of
//!   ending the job, the call fails with [`Error::Io`] naming the MPI error,
//!   every unfinished task fails with [`Error::BrokenPool`], and later calls
//!   fail at once.
//! - A task that never ends keeps its rank busy for ever (as in `Pool`).
//!   Use the launcher's or scheduler's time limit (`srun -t`,
//!   `mpiexec -timeout`) to bound a job.
//!
//! [`Error::ProcessFailed`]: crate::Error::ProcessFailed
//! [`Error::Io`]: crate::Error::Io
//! [`Error::BrokenPool`]: crate::Error::BrokenPool
#![allow(unsafe_code)]

mod driver;
mod identity;
mod pool;
mod raw;
mod runner;
mod worker;

pub use pool::MpiPool;

use crate::error::{Error, Result};
use raw::{Comm, Idle};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Message tags (MPI guarantees tags up to 32767). worker → rank 0: a [`Hello`].
const TAG_HELLO: i32 = 0x6d01;
/// rank 0 → worker: a [`Welcome`]; tasks may follow.
const TAG_WELCOME: i32 = 0x6d02;
/// rank 0 → worker: task frames.
const TAG_TASKS: i32 = 0x6d03;
/// worker → rank 0: its time spent (`u64` ns) and one answer frame per task frame.
const TAG_RESULTS: i32 = 0x6d04;
/// rank 0 → worker: finish what you hold, then exit.
const TAG_EXIT: i32 = 0x6d05;
/// worker → rank 0: exiting.
const TAG_BYE: i32 = 0x6d06;

/// How long rank 0 waits for every rank to report in.
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);

/// What a worker rank reports at start.
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    code: String,
    pid: i32,
    host: String,
}

/// Rank 0's answer to a rank whose code matches: its own code identity.
#[derive(Debug, Serialize, Deserialize)]
struct Welcome {
    code: String,
}

/// A worker rank of an [`MpiPool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankInfo {
    /// Its rank in `MPI_COMM_WORLD`.
    pub rank: i32,
    /// Its host name.
    pub host: String,
    /// Its process id on that host.
    pub pid: i32,
}

/// Rank 0's MPI state between `init` and the pool.
struct World {
    universe: Option<mpi::environment::Universe>,
    /// Taken by the pool; still here at exit means the workers must be
    /// released.
    comm: Option<Comm>,
    pool_started: bool,
    /// The pool, ended at exit if the program did not drop it.
    pool: Option<std::sync::Weak<driver::Shared>>,
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);

fn world() -> std::sync::MutexGuard<'static, Option<World>> {
    WORLD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an MPI launcher started this process (MPICH's hydra and PMI,
/// PMIx under Slurm or Open MPI, Open MPI's own variables).
fn launched_by_mpi() -> bool {
    [
        "PMI_RANK",
        "PMI_SIZE",
        "PMIX_RANK",
        "OMPI_COMM_WORLD_RANK",
        "MPI_LOCALRANKID",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

/// Called by [`init`](crate::init): under an MPI launcher, initializes MPI;
/// rank 0 returns to `main`, every other rank serves as a worker and exits.
pub(crate) fn enter() {
    if !launched_by_mpi() || world().is_some() {
        return;
    }
    raw::note_inherited_sockets();
    let Some(universe) = raw::initialize() else {
        return; // MPI already initialized by the program itself.
    };
    let comm = match Comm::world() {
        Ok(c) => c,
        Err(e) => {
            // A last word before exit, not a log record (see `crate::logging`):
            // `main` has had no chance to install a logger yet.
            crate::logging::write_stderr(format!("multiproc: cannot set up MPI: {e}\n").as_bytes());
            std::process::exit(1);
        }
    };
    let rank = comm.rank;
    *world() = Some(World {
        universe: Some(universe),
        comm: Some(comm),
        pool_started: false,
        pool: None,
    });
    if rank == 0 {
        // SAFETY: registers a plain `extern "C" fn()` to run at exit.
        unsafe { libc::atexit(at_exit) };
        return;
    }
    let comm = world()
        .as_mut()
        .and_then(|w| w.comm.take())
        .expect("just stored");
    worker::serve(comm)
}

/// How long `MPI_Finalize` may take before this rank closes its TCP
/// connections (see [`finalize`]).
const FINALIZE_GRACE: Duration = Duration::from_secs(5);

/// Ends MPI in this process (once), together with the other ranks.
///
/// MPICH 4.0's ch4/UCX `MPI_Finalize` closes every connection with a flush
/// and then waits in the launcher's (PMI) barrier without serving UCX any
/// more; over UCX's TCP transport (1.12 and later) that flush waits for the
/// peer to acknowledge. A rank that reaches its flush after a peer already
/// waits in the barrier (a rank descheduled on a loaded machine) waits for
/// ever, and so does the whole job after its work is done. MPICH 4.2
/// reorders its finalize; here, all ranks first meet in a barrier (so they
/// enter together), and a rank whose `MPI_Finalize` has not returned after
/// [`FINALIZE_GRACE`] shuts its TCP connections down: the pending flushes
/// then fail at once on both sides and finalize completes normally.
fn finalize() {
    let universe = world().as_mut().and_then(|w| w.universe.take());
    if universe.is_none() {
        return;
    }
    if let Err(e) = raw::barrier_world() {
        crate::logging::mp_log!(error, target: "multiproc::mpi", "{e}");
    }
    #[cfg(feature = "test-hooks")]
    let grace = test_hooks::finalize();
    #[cfg(not(feature = "test-hooks"))]
    let grace = FINALIZE_GRACE;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = done.clone();
    let watchdog = std::thread::Builder::new()
        .name("multiproc-mpi-finalize".into())
        .spawn(move || {
            let start = Instant::now();
            while start.elapsed() < grace {
                if seen.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !seen.load(std::sync::atomic::Ordering::Acquire) {
                crate::logging::mp_log!(
                    warn,
                    target: "multiproc::mpi",
                    "MPI_Finalize has not returned after {} s: shutting down this rank's TCP \
                     connections (MPICH 4.0 over UCX's TCP waits for ever otherwise)",
                    grace.as_secs()
                );
                raw::shut_down_tcp();
            }
        });
    drop(universe);
    done.store(true, std::sync::atomic::Ordering::Release);
    if let Ok(h) = watchdog {
        let _ = h.join();
    }
}

/// Test hooks (feature `test-hooks`): `MULTIPROC_TEST_MPI_LATE=<rank>:<ms>`
/// makes that rank enter `MPI_Finalize` late (as a descheduled rank does on
/// a loaded machine); `MULTIPROC_TEST_MPI_GRACE=<s>` sets the finalize grace.
#[cfg(feature = "test-hooks")]
mod test_hooks {
    use super::{Duration, FINALIZE_GRACE};

    /// Sleeps if this rank is the late one; returns the finalize grace.
    pub(super) fn finalize() -> Duration {
        let rank = std::env::var("PMI_RANK").ok();
        if let Some((r, ms)) = std::env::var("MULTIPROC_TEST_MPI_LATE").ok().and_then(|v| {
            v.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        }) {
            if Some(r) == rank {
                std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            }
        }
        std::env::var("MULTIPROC_TEST_MPI_GRACE")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(FINALIZE_GRACE)
    }
}

/// Records the pool, so that the end of `main` ends it if the program did
/// not (the ranks wait for it before MPI can finalize).
fn adopt(pool: &std::sync::Arc<driver::Shared>) {
    if let Some(w) = world().as_mut() {
        w.pool = Some(std::sync::Arc::downgrade(pool));
    }
}

/// At exit of rank 0: ends the pool if it is still alive (its background
/// thread stops: MPI is called from one thread at a time), releases the
/// workers if no pool did, then ends MPI.
extern "C" fn at_exit() {
    let pool = world().as_mut().and_then(|w| w.pool.take());
    if let Some(pool) = pool.and_then(|p| p.upgrade()) {
        if let Err(e) = pool.terminate() {
            crate::logging::mp_log!(error, target: "multiproc::mpi", "cannot end the MPI pool: {e}");
        }
    }
    let comm = world().as_mut().and_then(|w| w.comm.take());
    if let Some(comm) = comm {
        for r in 1..comm.size {
            let _ = comm.send(r, TAG_EXIT, &[]);
        }
    }
    finalize();
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Takes the world for a pool: collects every worker's report, checks its
/// code against ours, and welcomes them (or releases them all and fails).
fn start() -> Result<(Comm, Vec<RankInfo>)> {
    let mut guard = world();
    let Some(w) = guard.as_mut() else {
        return Err(Error::InvalidState(
            "MpiPool needs a program started by an MPI launcher (mpiexec -n N, srun -n N) \
             that calls multiproc::init() first in main"
                .into(),
        ));
    };
    if w.pool_started {
        return Err(Error::InvalidState(
            "an MpiPool was already created: MPI's world serves one pool per run".into(),
        ));
    }
    let Some(comm) = w.comm.take() else {
        return Err(Error::InvalidState("MPI is already finalized".into()));
    };
    w.pool_started = true;
    drop(guard);
    if comm.size < 2 {
        return Err(Error::InvalidState(format!(
            "MpiPool needs worker ranks, but the MPI world has {} rank: start with mpiexec -n N (N >= 2)",
            comm.size
        )));
    }
    match handshake(&comm) {
        Ok(ranks) => Ok((comm, ranks)),
        Err(e) => {
            for r in 1..comm.size {
                let _ = comm.send(r, TAG_EXIT, &[]);
            }
            Err(e)
        }
    }
}

fn handshake(comm: &Comm) -> Result<Vec<RankInfo>> {
    let ours = identity::current();
    let mut hellos: Vec<Option<Hello>> = (0..comm.size).map(|_| None).collect();
    let deadline = Instant::now() + HELLO_TIMEOUT;
    let mut idle = Idle::new(Duration::from_millis(1));
    let mut missing = comm.size as usize - 1;
    while missing > 0 {
        match comm.try_recv(None)? {
            Some((src, TAG_HELLO, bytes)) if src > 0 && src < comm.size => {
                let slot = &mut hellos[src as usize];
                if slot.is_none() {
                    *slot = Some(crate::codec::decode::<Hello>(&bytes).map_err(|e| {
                        Error::bootstrap(format!("MPI rank {src} sent a malformed report: {e}"))
                    })?);
                    missing -= 1;
                }
            }
            Some(_) => {}
            None if Instant::now() >= deadline => {
                let silent: Vec<String> = (1..comm.size)
                    .filter(|&r| hellos[r as usize].is_none())
                    .map(|r| r.to_string())
                    .collect();
                return Err(Error::bootstrap(format!(
                    "MPI rank(s) {} did not report within {} s: every rank must run this \
                     program and call multiproc::init() first in main",
                    silent.join(", "),
                    HELLO_TIMEOUT.as_secs()
                )));
            }
            None => idle.pause(),
        }
    }
    let mut ranks = Vec::new();
    for (rank, h) in hellos.into_iter().enumerate().skip(1) {
        let h = h.expect("every rank reported");
        if h.code != ours {
            return Err(Error::bootstrap(format!(
                "MPI rank {rank} (host {}, pid {}) runs a different build ({}) than rank 0 \
                 ({ours}): every rank must run the same executable",
                h.host, h.pid, h.code
            )));
        }
        ranks.push(RankInfo {
            rank: rank as i32,
            host: h.host,
            pid: h.pid,
        });
    }
    let welcome = crate::codec::encode(&Welcome { code: ours })?;
    for r in &ranks {
        comm.send(r.rank, TAG_WELCOME, &welcome)?;
    }
    Ok(ranks)
}
