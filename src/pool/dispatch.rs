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
//! A worker's death is seen on its pidfd (by the supervisor too when
//! nobody drives): what it answered is read from its socket and its
//! journal, only the task it was running fails with
//! [`Error::WorkerDied`](crate::Error::WorkerDied), what it had not started
//! goes back to the queue, and a replacement starts (see `link`).

use super::journal;
pub(crate) use super::link::Batch;
use super::link::{Done, Worker};
use super::result::Fail;
use super::wire::{self, WorkerEnd};
use super::worker::{worker_main, WorkerArgs};
use crate::error::{Error, Result};
use crate::process::Process;
use crate::process::StartMethod;
use rustix::event::{PollFd, PollFlags};
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A batch whose workers keep dying before they start it (an initializer
/// that crashes, say) fails after this many tries instead of cycling forever.
const MAX_RESENDS: u8 = 3;

/// An idle worker takes back the batches another worker has not started
/// when they hold at least this much work (ns, estimated): below it, the
/// round trip costs more than waiting.
const STEAL_MIN_NS: f64 = 300e3;

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

    /// A future is waiting for a result: asks the supervisor to drive the
    /// pool now (no thread of the program will block in `get` to do it).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn wake_for_async(&self) {
        if !self.async_waiting.swap(true, SeqCst) {
            self.wake_bg();
        }
    }

    /// Drives the pool from the calling thread until `cond()` holds, for at
    /// most `budget`, if no other thread drives it now (a future's short
    /// spin, feature `tokio`). Returns `cond()`.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn drive_for(&self, cond: &dyn Fn() -> bool, budget: Duration) -> Result<bool> {
        if cond() {
            return Ok(true);
        }
        if let Ok(role) = self.role.try_lock() {
            let r = self.drive(cond, Some(Instant::now() + budget), false);
            drop(role);
            self.notify_done();
            r?;
        }
        Ok(cond())
    }

    fn notify_done(&self) {
        let _g = lock(&self.done_lock);
        self.done_cv.notify_all();
    }

    /// Starts one worker (slow: fork or spawn).
    fn start_worker(&self) -> Result<Worker> {
        let (parent, child) = wire::pair()?;
        let journal = journal::Reader::new()?;
        let n = self.started.fetch_add(1, SeqCst) + 1;
        let mut b = Process::builder()
            .daemon(true)
            .leave_stdout()
            .name(format!("PoolWorker-{n}"));
        if let Some(m) = self.config.method {
            b = b.start_method(m);
        }
        let args: WorkerArgs = (
            WorkerEnd(child),
            journal.region().clone(),
            self.config.init.clone(),
            self.config.maxtasks,
            self.config.spin.as_micros() as u64,
        );
        let proc = b.start(worker_main, args)?;
        let pid = proc.pid();
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid)
                .ok_or_else(|| Error::Io(std::io::Error::other("a worker has pid 0")))?,
            rustix::process::PidfdFlags::empty(),
        )?;
        Ok(Worker::new(proc, parent, pidfd, journal))
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

    fn dispatch(&self, core: &mut Core) -> Result<()> {
        let maxtasks = self.config.maxtasks;
        for round in 0..2 {
            while let Some(b) = core.pending.front() {
                let best = core
                    .workers
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.can_take(b, maxtasks))
                    .min_by_key(|(_, w)| w.inflight_tasks)
                    .map(|(i, _)| i);
                let Some(i) = best else { break };
                let b = core.pending.pop_front().expect("front exists");
                let w = &mut core.workers[i];
                w.push(b);
                if maxtasks > 0 && w.sent_batches >= maxtasks && !w.replaced {
                    // It retires after this batch: start its successor now.
                    w.replaced = true;
                    if core.state == State::Running {
                        core.spawn_needed += 1;
                        self.wake_bg();
                    }
                }
            }
            if round == 0 && core.pending.is_empty() && !self.steal(core) {
                break;
            }
        }
        for w in &mut core.workers {
            w.flush()?;
        }
        if core.state == State::Closed && core.pending.is_empty() {
            for w in &mut core.workers {
                if !w.exiting && w.inflight.is_empty() {
                    w.exiting = true;
                    let mut f = Vec::new();
                    let start = wire::begin(&mut f, wire::EXIT);
                    wire::finish(&mut f, start);
                    w.queue(&Arc::new(f));
                    w.flush()?;
                }
            }
        }
        Ok(())
    }

    /// A worker idles while another holds batches it has not started: take
    /// those back into the queue (the caller dispatches them again).
    /// `true` if any were taken.
    fn steal(&self, core: &mut Core) -> bool {
        let maxtasks = self.config.maxtasks;
        // A thief must be able to take what it steals at once (else the
        // batches would only go back where they were, again and again).
        if !core
            .workers
            .iter()
            .any(|w| w.inflight.is_empty() && w.open(maxtasks) && w.unsent() == 0)
        {
            return false;
        }
        let victim = core
            .workers
            .iter()
            .enumerate()
            .filter(|(_, w)| !w.inflight.is_empty())
            .filter_map(|(i, w)| {
                let (tasks, ns) = w.unstarted();
                let ns = ns?;
                (tasks > 0 && ns >= STEAL_MIN_NS).then_some((i, ns))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i);
        let Some(v) = victim else { return false };
        let back = core.workers[v].take_back();
        let any = !back.is_empty();
        for b in back.into_iter().rev() {
            core.pending.push_front(b);
        }
        any
    }

    /// One pass over the workers: read answers, notice deaths (logged, see
    /// [`crate::logging`]), send work.
    fn service(&self, core: &mut Core, dead: &[i32], done: &mut Vec<Done>) -> Result<()> {
        let mut i = 0;
        while i < core.workers.len() {
            let w = &mut core.workers[i];
            w.read(done)?;
            w.flush()?;
            let gone = dead.contains(&w.pid)
                || ((w.broken || w.exiting) && w.proc.wait(Some(Duration::ZERO))?.is_some());
            if !gone {
                i += 1;
                continue;
            }
            let code = w.proc.wait(Some(Duration::ZERO))?.unwrap_or(-9);
            if !w.started_any() && code != 0 {
                core.early_deaths = core.early_deaths.saturating_add(1);
            } else {
                core.early_deaths = 0;
            }
            // What it completed is delivered; only the task it was running
            // fails; what it had not started goes back to the queue, in order.
            let again = w.bury(code, MAX_RESENDS, done);
            for b in again.into_iter().rev() {
                core.pending.push_front(b);
            }
            let w = core.workers.remove(i);
            let successor = if w.replaced {
                // Its successor is on its way (or here): it keeps its place
                // in `worker_pids` until then.
                if core.state == State::Running {
                    core.vacated.push(w.pid);
                }
                true
            } else if core.state == State::Running
                || (core.state == State::Closed && (!core.pending.is_empty() || !w.exiting))
            {
                core.spawn_needed += 1;
                true
            } else {
                false
            };
            log_worker_exit(w.pid, code, successor);
        }
        self.fill(core);
        if core.spawn_needed > 0 {
            self.wake_bg();
        }
        self.dispatch(core)
    }

    /// Moves started successors into free places.
    fn fill(&self, core: &mut Core) {
        while core.workers.len() < self.config.processes {
            let Some(w) = core.standby.pop() else { break };
            core.vacated.pop();
            core.workers.push(w);
        }
        if core.state != State::Running {
            core.vacated.clear();
        }
    }

    fn complete(&self, done: Vec<Done>) {
        if done.is_empty() {
            return;
        }
        let n = done.len();
        for d in done {
            d.deliver();
        }
        self.outstanding.fetch_sub(n, SeqCst);
        self.notify_done();
    }

    /// Drives the pool (the caller holds the role) until `stop()` or the
    /// deadline; the supervisor also stops when a waiter wants the role.
    fn drive(&self, stop: &dyn Fn() -> bool, deadline: Option<Instant>, bg: bool) -> Result<()> {
        let mut dead: Vec<i32> = Vec::new();
        let mut spin_until = Instant::now() + self.config.spin;
        loop {
            let mut done = Vec::new();
            let eta: Option<Duration>;
            let fds = {
                let mut core = lock(&self.core);
                let r = self.service(&mut core, &dead, &mut done);
                let now = Instant::now();
                eta = core.workers.iter().filter_map(|w| w.eta(now)).min();
                let fds: Vec<(Arc<OwnedFd>, Arc<OwnedFd>, bool, i32)> = core
                    .workers
                    .iter()
                    .map(|w| {
                        (
                            w.sock.clone(),
                            w.pidfd.clone(),
                            w.unsent() > 0 && !w.broken,
                            w.pid,
                        )
                    })
                    .collect();
                drop(core);
                if let Err(e) = r {
                    self.complete(done);
                    return Err(e);
                }
                fds
            };
            let progressed = !done.is_empty();
            self.complete(done);
            if stop() {
                return Ok(());
            }
            if bg
                && (self.fg_waiters.load(SeqCst) > 0
                    || self.shutdown.load(SeqCst)
                    || lock(&self.core).spawn_needed > 0)
            {
                return Ok(());
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(());
            }
            if progressed {
                spin_until = now + self.config.spin;
            }
            // Spinning only pays when an answer is due within the spin; while
            // long batches run it would take a CPU from the workers.
            if eta.is_some_and(|e| e > self.config.spin) {
                spin_until = now;
            }
            let mut pfds: Vec<PollFd<'_>> = Vec::with_capacity(fds.len() * 2 + 1);
            for (sock, pidfd, out, _) in &fds {
                let mut ev = PollFlags::IN;
                if *out {
                    ev |= PollFlags::OUT;
                }
                pfds.push(PollFd::new(&**sock, ev));
                pfds.push(PollFd::new(&**pidfd, PollFlags::IN));
            }
            pfds.push(PollFd::new(&self.kick, PollFlags::IN));
            let timeout = if now < spin_until {
                Some(Duration::ZERO)
            } else {
                crate::sys::remaining(deadline)
            };
            let ts = timeout.map(|d| rustix::time::Timespec {
                tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: d.subsec_nanos() as _,
            });
            match rustix::event::poll(&mut pfds, ts.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            dead.clear();
            for (k, (_, _, _, pid)) in fds.iter().enumerate() {
                if !pfds[2 * k + 1].revents().is_empty() {
                    dead.push(*pid);
                }
            }
            if !pfds[pfds.len() - 1].revents().is_empty() {
                let mut b = [0u8; 8];
                let _ = rustix::io::read(&self.kick, &mut b);
            }
            if timeout == Some(Duration::ZERO) {
                std::hint::spin_loop();
            }
        }
    }

    /// Waits until `cond()` holds or the deadline passes (`false` then),
    /// driving the pool when nobody else does.
    pub(crate) fn wait_until(
        &self,
        cond: &dyn Fn() -> bool,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        let mut asked = false;
        let result = loop {
            if cond() {
                break Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Ok(false);
            }
            if let Ok(role) = self.role.try_lock() {
                if asked {
                    self.fg_waiters.fetch_sub(1, SeqCst);
                    asked = false;
                }
                let r = self.drive(cond, deadline, false);
                drop(role);
                // Hand on: another waiter, or the supervisor for what remains.
                self.notify_done();
                if let Err(e) = r {
                    break Err(e);
                }
                continue;
            }
            if !asked {
                asked = true;
                self.fg_waiters.fetch_add(1, SeqCst);
                self.kick();
            }
            let g = lock(&self.done_lock);
            if cond() {
                break Ok(true);
            }
            let step = Duration::from_millis(5);
            let step = crate::sys::remaining(deadline).map_or(step, |r| r.min(step));
            let _ = self.done_cv.wait_timeout(g, step);
        };
        if asked {
            self.fg_waiters.fetch_sub(1, SeqCst);
        }
        result
    }

    /// The supervisor thread: starts the first workers (reporting to
    /// `ready`), replaces dead ones, and drives the pool when nobody else does.
    pub(crate) fn supervise(self: Arc<Shared>, ready: std::sync::mpsc::Sender<Result<()>>) {
        for _ in 0..self.config.processes {
            match self.start_worker() {
                Ok(w) => lock(&self.core).workers.push(w),
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            }
        }
        let _ = ready.send(Ok(()));
        drop(ready);
        let mut armed = false;
        let mut idle_ticks = 0u32;
        let tick = Duration::from_millis(1);
        while !self.shutdown.load(SeqCst) {
            let need = lock(&self.core).spawn_needed;
            if need > 0 {
                self.respawn();
                continue;
            }
            let outstanding = self.outstanding.load(SeqCst);
            if outstanding == 0 {
                // Nothing to drive: whatever a future waited for has arrived.
                self.async_waiting.store(false, SeqCst);
            }
            // Someone else drives: look again later.
            let mut nap = tick;
            if outstanding > 0 && self.fg_waiters.load(SeqCst) == 0 {
                idle_ticks = 0;
                if armed || self.async_waiting.swap(false, SeqCst) {
                    if let Ok(role) = self.role.try_lock() {
                        let stop = || self.outstanding.load(SeqCst) == 0;
                        let r = self.drive(&stop, None, true);
                        drop(role);
                        self.notify_done();
                        if let Err(e) = r {
                            crate::logging::mp_log!(
                                error,
                                target: "multiproc::pool",
                                "pool supervisor: {e}"
                            );
                            std::thread::sleep(tick);
                        }
                        armed = false;
                        continue;
                    }
                    nap = 5 * tick;
                }
                armed = true;
            } else {
                armed = false;
                if outstanding == 0 {
                    idle_ticks += 1;
                } else {
                    nap = 5 * tick;
                }
            }
            let exited = if idle_ticks > 50 {
                self.bg_idle.store(true, SeqCst);
                let exited = if self.outstanding.load(SeqCst) == 0
                    && !self.async_waiting.load(SeqCst)
                    && !self.shutdown.load(SeqCst)
                    && lock(&self.core).spawn_needed == 0
                {
                    self.bg_sleep(None)
                } else {
                    Vec::new()
                };
                self.bg_idle.store(false, SeqCst);
                idle_ticks = 0;
                exited
            } else if self.async_waiting.load(SeqCst)
                && self.outstanding.load(SeqCst) > 0
                && self.fg_waiters.load(SeqCst) == 0
            {
                // A future asked for a driver: drive now, no nap.
                Vec::new()
            } else {
                self.bg_sleep(Some(nap))
            };
            if !exited.is_empty() {
                // A worker exited (retired, or killed) while nobody drives:
                // reap it and start its successor now, not at the next call.
                match self.role.try_lock() {
                    Ok(role) => {
                        let mut done = Vec::new();
                        let r = {
                            let mut core = lock(&self.core);
                            self.service(&mut core, &exited, &mut done)
                        };
                        drop(role);
                        self.complete(done);
                        if let Err(e) = r {
                            crate::logging::mp_log!(
                                error,
                                target: "multiproc::pool",
                                "pool supervisor: {e}"
                            );
                        }
                    }
                    // Whoever drives sees it too.
                    Err(_) => std::thread::sleep(tick),
                }
            }
        }
    }

    /// Sleeps until woken ([`wake_bg`](Self::wake_bg)), a worker exits, or
    /// `timeout` passes; returns the pids of workers that exited.
    fn bg_sleep(&self, timeout: Option<Duration>) -> Vec<i32> {
        let watched: Vec<(Arc<OwnedFd>, i32)> = lock(&self.core)
            .workers
            .iter()
            .map(|w| (w.pidfd.clone(), w.pid))
            .collect();
        let mut pfds = Vec::with_capacity(watched.len() + 1);
        pfds.push(PollFd::new(&self.bg_kick, PollFlags::IN));
        for (fd, _) in &watched {
            pfds.push(PollFd::new(&**fd, PollFlags::IN));
        }
        let ts = timeout.map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        if rustix::event::poll(&mut pfds, ts.as_ref()).is_err() {
            return Vec::new();
        }
        if !pfds[0].revents().is_empty() {
            let mut b = [0u8; 8];
            let _ = rustix::io::read(&self.bg_kick, &mut b);
        }
        watched
            .iter()
            .zip(&pfds[1..])
            .filter(|(_, p)| !p.revents().is_empty())
            .map(|((_, pid), _)| *pid)
            .collect()
    }

    fn respawn(&self) {
        let early = lock(&self.core).early_deaths;
        if early > 2 {
            let pause = Duration::from_millis(20 * u64::from(early.min(50)));
            let until = Instant::now() + pause;
            while let Some(left) = crate::sys::remaining(Some(until)).filter(|d| !d.is_zero()) {
                if self.shutdown.load(SeqCst) {
                    return;
                }
                let _ = self.bg_sleep(Some(left));
            }
            if self.shutdown.load(SeqCst) {
                return;
            }
        }
        match self.start_worker() {
            Ok(w) => {
                let mut core = lock(&self.core);
                core.spawn_needed = core.spawn_needed.saturating_sub(1);
                core.spawn_error = None;
                if core.state == State::Terminated {
                    drop(core);
                    let mut w = w;
                    let _ = w.proc.kill();
                    let _ = w.proc.wait(None);
                    return;
                }
                core.standby.push(w);
                self.fill(&mut core);
                let _ = self.dispatch(&mut core);
                drop(core);
                self.kick();
            }
            Err(e) => {
                let mut failed = Vec::new();
                {
                    let mut core = lock(&self.core);
                    core.spawn_error = Some(e.to_string());
                    core.vacated.clear();
                    if core.workers.is_empty() {
                        // No worker can run what is queued: fail it rather than hang.
                        failed.extend(core.pending.drain(..).map(|b| b.fail(Fail::Broken)));
                    }
                }
                self.complete(failed);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
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

    pub(crate) fn stop_supervisor(&self) {
        self.shutdown.store(true, SeqCst);
        self.kick();
        self.wake_bg();
    }
}

/// Reports a worker's exit (CPython's pool logs "cleaning up worker"): a
/// warning when it died (non-zero exit code or a signal), a debug record
/// when it left as asked. Called by the parent that reaped it, never in a
/// child (see `crate::logging` on fork safety).
fn log_worker_exit(pid: i32, exitcode: i32, replaced: bool) {
    let then = if replaced {
        "a new worker replaces it"
    } else {
        "not replaced"
    };
    if exitcode != 0 {
        crate::logging::mp_log!(
            warn,
            target: "multiproc::pool",
            "pool worker {pid} exited with exitcode {exitcode}; {then}"
        );
    } else {
        crate::logging::mp_log!(
            debug,
            target: "multiproc::pool",
            "pool worker {pid} exited; {then}"
        );
    }
}
