//! The parent side: workers, the task queue, sending and receiving, worker
//! death and replacement, and who waits for what.
//!
//! # Threads
//!
//! All parent state is in [`Core`], behind one mutex. Reading the workers'
//! sockets is done by whoever holds the *poller role* (the `role` mutex):
//!
//! - a thread waiting for a result (`get`, `map`, an imap `next`) takes the
//!   role itself when it is free, spins briefly on the sockets, then blocks
//!   in `poll`. The result then reaches the waiting thread with no hand-off
//!   between threads: one wake-up per round trip, in the worker;
//! - the supervisor thread (one per pool) starts and replaces workers, and
//!   takes the role only when work is outstanding and nobody else drives it
//!   (for callbacks and `*_async` without a waiter). It gives the role up as
//!   soon as a waiting thread asks (`fg_waiters` and the `kick` eventfd).
//!
//! A worker's death is seen on its sentinel, the pidfd of its process
//! handle (by the supervisor too when
//! nobody drives): what it answered is read from its socket and its
//! journal, only the task it was running fails with
//! [`Error::WorkerDied`](crate::Error::WorkerDied), what it had not started
//! goes back to the queue, and a replacement starts (see `link`).
//!
//! The parent is four things, one module each: per-worker I/O (`link`),
//! which worker gets which batch ([`window`]), who reads the sockets and
//! waits for what ([`poll`]), and starting, burying and replacing workers
//! ([`supervise`]). This module holds the state they share and the pool's
//! operations on it.

mod poll;
mod supervise;
mod window;

use super::batch::Spares;
pub(crate) use super::link::Batch;
use super::link::{Done, Worker};
use super::sink::Fail;
use crate::error::{Error, Result};
use crate::process::StartMethod;
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Whether the pool takes new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Running,
    Closed,
    Terminated,
}

pub(crate) struct Core {
    workers: Vec<Worker>,
    pending: VecDeque<Batch>,
    pub(crate) state: State,
    spawn_needed: usize,
    spawn_error: Option<String>,
    /// Workers in a row that died before starting any batch (respawns back
    /// off while this grows: a crashing initializer must not spin a core).
    early_deaths: u32,
    /// Started successors of workers that retire (maxtasksperchild), until
    /// a place is free.
    standby: Vec<Worker>,
    /// Pids of retired workers whose successor is still starting: listed by
    /// `worker_pids` until it takes their place.
    vacated: Vec<i32>,
}

/// What the pool was built with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) method: Option<StartMethod>,
    pub(crate) init: Option<(i64, Vec<u8>)>,
    pub(crate) maxtasks: u64,
    pub(crate) spin: Duration,
    #[cfg_attr(not(feature = "progress"), allow(dead_code))]
    pub(crate) progress: bool,
}

pub(crate) struct Shared {
    core: Mutex<Core>,
    role: Mutex<()>,
    done_lock: Mutex<()>,
    done_cv: Condvar,
    /// Wakes the supervisor ([`wake_bg`](Self::wake_bg)).
    bg_kick: OwnedFd,
    bg_idle: AtomicBool,
    /// A future awaits a result (feature `tokio`): the supervisor drives
    /// at once instead of leaving a tick for a blocking waiter to do it.
    async_waiting: AtomicBool,
    kick: OwnedFd,
    fg_waiters: AtomicUsize,
    outstanding: AtomicUsize,
    /// Answer buffers given back by delivered batches, for the next ones.
    pub(super) spares: Arc<Spares>,
    shutdown: AtomicBool,
    started: AtomicUsize,
    pub(crate) config: Config,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(config: Config) -> Result<Arc<Shared>> {
        let kick = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        Ok(Arc::new(Shared {
            core: Mutex::new(Core {
                workers: Vec::new(),
                pending: VecDeque::new(),
                state: State::Running,
                spawn_needed: 0,
                spawn_error: None,
                early_deaths: 0,
                standby: Vec::new(),
                vacated: Vec::new(),
            }),
            role: Mutex::new(()),
            done_lock: Mutex::new(()),
            done_cv: Condvar::new(),
            bg_kick: rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )?,
            bg_idle: AtomicBool::new(false),
            async_waiting: AtomicBool::new(false),
            kick,
            fg_waiters: AtomicUsize::new(0),
            outstanding: AtomicUsize::new(0),
            spares: Arc::default(),
            shutdown: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            config,
        }))
    }

    pub(crate) fn state(&self) -> State {
        lock(&self.core).state
    }

    pub(crate) fn pids(&self) -> Vec<i32> {
        let core = lock(&self.core);
        let mut pids: Vec<i32> = core.workers.iter().map(|w| w.pid).collect();
        pids.extend(&core.vacated);
        pids
    }

    fn kick(&self) {
        let _ = rustix::io::write(&self.kick, &1u64.to_ne_bytes());
    }

    fn wake_bg(&self) {
        let _ = rustix::io::write(&self.bg_kick, &1u64.to_ne_bytes());
    }

    /// Wakes the threads waiting in `wait_until` for a result or for the
    /// poller role. They count themselves in `fg_waiters` before they look
    /// at their condition, so with nobody counted there is nobody to wake
    /// (and no `futex` call, which every result would otherwise cost):
    /// either this load sees a waiter's count, or that waiter's check of its
    /// condition, after the fence pairing with this one, sees what was
    /// delivered before it.
    fn notify_done(&self) {
        std::sync::atomic::fence(SeqCst);
        if self.fg_waiters.load(SeqCst) == 0 {
            return;
        }
        let _g = lock(&self.done_lock);
        self.done_cv.notify_all();
    }

    /// Queues batches and sends what the workers can take now.
    pub(crate) fn submit(&self, batches: Vec<Batch>) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let unsent = {
            let mut core = lock(&self.core);
            if core.state != State::Running {
                return Err(Error::BrokenPool);
            }
            self.outstanding.fetch_add(batches.len(), SeqCst);
            core.pending.extend(batches);
            self.dispatch(&mut core)?;
            core.workers.iter().any(|w| w.unsent() > 0) || !core.pending.is_empty()
        };
        if unsent {
            self.kick();
        }
        if self.bg_idle.load(SeqCst) {
            self.wake_bg();
        }
        Ok(())
    }

    fn complete(&self, done: Vec<Done>) {
        if done.is_empty() {
            return;
        }
        let n = done.len();
        for d in done {
            self.spares.put(d.deliver());
        }
        self.outstanding.fetch_sub(n, SeqCst);
        self.notify_done();
    }

    /// `close()`: no new work; workers exit once the queue is done.
    pub(crate) fn close(&self) -> Result<()> {
        let mut core = lock(&self.core);
        if core.state == State::Running {
            core.state = State::Closed;
        }
        self.fill(&mut core);
        self.dispatch(&mut core)?;
        drop(core);
        self.kick();
        self.wake_bg();
        Ok(())
    }

    /// Waits for every worker to exit after `close()`.
    pub(crate) fn join_workers(&self) -> Result<()> {
        let cond = || {
            let core = lock(&self.core);
            core.workers.is_empty()
                && core.standby.is_empty()
                && core.spawn_needed == 0
                && core.pending.is_empty()
        };
        self.wait_until(&cond, None)?;
        Ok(())
    }

    /// `terminate()`: kill the workers, fail everything not done.
    pub(crate) fn terminate(&self) {
        let (mut workers, pending) = {
            let mut core = lock(&self.core);
            core.state = State::Terminated;
            core.spawn_needed = 0;
            core.vacated.clear();
            let mut workers = std::mem::take(&mut core.workers);
            workers.append(&mut core.standby);
            (workers, std::mem::take(&mut core.pending))
        };
        for w in &workers {
            let _ = w.proc.kill();
        }
        let mut failed: Vec<Done> = pending.into_iter().map(|b| b.fail(Fail::Broken)).collect();
        for w in &mut workers {
            let _ = w.proc.wait(None);
            for sent in w.inflight.drain(..) {
                failed.push(sent.fail(w.pid, Fail::Broken));
            }
        }
        self.complete(failed);
        self.stop_supervisor();
    }

    /// Calls `f` with the pid and socket of the first worker (test hooks).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn with_worker_socket<T>(
        &self,
        f: impl FnOnce(i32, std::os::fd::BorrowedFd<'_>) -> Result<T>,
    ) -> Result<T> {
        use std::os::fd::AsFd;
        let core = lock(&self.core);
        let w = core
            .workers
            .first()
            .ok_or_else(|| Error::InvalidState("the pool has no worker".into()))?;
        f(w.pid, w.sock.as_fd())
    }

    pub(crate) fn stop_supervisor(&self) {
        self.shutdown.store(true, SeqCst);
        self.kick();
        self.wake_bg();
    }
}
