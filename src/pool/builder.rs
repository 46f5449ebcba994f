//! [`PoolBuilder`]: the pool's settings.

use super::dispatch::Config;
use super::worker::{InitOf, TaskFn};
use super::Pool;
use crate::error::{Error, Result};
use crate::process::fnref;
use crate::process::StartMethod;
use serde::{de::DeserializeOwned, Serialize};
use std::time::Duration;

/// How long idle workers and waiting threads spin before sleeping, by
/// default: several times the cost of a cross-CPU wake-up, so that a steady
/// request/answer stream stays on the fast path.
const DEFAULT_SPIN_US: u64 = 300;

/// Configures a [`Pool`] (Python's `Pool(processes, initializer, initargs,
/// maxtasksperchild, context)`).
///
/// ```no_run
/// use multiproc::pool::Pool;
/// use multiproc::StartMethod;
///
/// fn setup(name: String) {
///     eprintln!("worker {} ready for {name}", std::process::id());
/// }
///
/// # fn main() -> multiproc::Result<()> {
/// let pool = Pool::builder()
///     .processes(4)
///     .initializer(setup, ("demo".to_string(),))
///     .maxtasksperchild(100)
///     .start_method(StartMethod::Spawn)
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a PoolBuilder does nothing until `build` is called"]
pub struct PoolBuilder {
    processes: Option<usize>,
    init: Option<(i64, Vec<u8>)>,
    init_err: Option<String>,
    maxtasks: u64,
    method: Option<StartMethod>,
    spin: Option<Duration>,
    progress: bool,
}

impl PoolBuilder {
    /// The defaults: [`cpu_count()`](crate::process::cpu_count) workers, no
    /// initializer, workers live forever, the default start method.
    pub fn new() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of worker processes (at least 1).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Runs `f(args...)` in each worker when it starts (Python's
    /// `initializer` and `initargs`). `f` follows the rules of task functions
    /// ([`TaskFn`]); a panic in it ends that worker (the pool replaces it).
    pub fn initializer<F, A>(mut self, f: F, args: A) -> Self
    where
        F: TaskFn<A, ()>,
        A: Serialize + DeserializeOwned,
    {
        fnref::check_target(f);
        match crate::codec::encode(&args) {
            Ok(bytes) => self.init = Some((fnref::name(InitOf::<F, A>::DESC), bytes)),
            Err(e) => self.init_err = Some(e.to_string()),
        }
        self
    }

    /// Replaces each worker after it has run `n` tasks (Python's
    /// `maxtasksperchild`; a chunk of a map counts as one task, as in
    /// Python). No task is lost: a worker is sent at most `n` tasks, and
    /// its replacement takes the rest. 0 means no limit.
    pub fn maxtasksperchild(mut self, n: u64) -> Self {
        self.maxtasks = n;
        self
    }

    /// How workers are started (default: [`get_start_method`](crate::process::get_start_method)).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// How long an idle worker, and a thread waiting for a result, spin
    /// before sleeping (default 300 µs). Spinning cuts the latency of short
    /// tasks (`apply`) at the cost of some CPU; `Duration::ZERO` never spins.
    /// A spinning thread yields the CPU between polls, so on a busy machine
    /// it does not keep the process it waits for from running.
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = Some(spin);
        self
    }

    /// Shows a progress bar (on stderr, with `indicatif`) during each
    /// `map`, `starmap` and `imap` of this pool. Off by default.
    #[cfg(feature = "progress")]
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Starts the workers and returns the pool.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for 0 processes; the start error of a worker.
    pub fn build(self) -> Result<Pool> {
        if let Some(e) = self.init_err {
            return Err(Error::codec(e));
        }
        let processes = self.processes.unwrap_or_else(crate::process::cpu_count);
        if processes == 0 {
            return Err(Error::Invalid(
                "the number of processes must be at least 1".into(),
            ));
        }
        Pool::start(Config {
            processes,
            method: self.method,
            init: self.init,
            maxtasks: self.maxtasks,
            spin: self.spin.unwrap_or(Duration::from_micros(DEFAULT_SPIN_US)),
            progress: self.progress,
        })
    }
}
