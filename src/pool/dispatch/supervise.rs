//! Supervision: starting workers, burying the dead (what they answered is
//! delivered, what they had not started goes back to the queue) and
//! replacing them, and the supervisor thread.

use super::super::journal;
use super::super::link::{Done, Worker};
use super::super::sink::Fail;
use super::super::wire::{self, WorkerEnd};
use super::super::worker::{worker_main, WorkerArgs};
use super::{lock, Core, Shared, State};
use crate::error::{Error, Result};
use crate::process::Process;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A batch whose workers keep dying before they start it (an initializer
/// that crashes, say) fails after this many tries instead of cycling forever.
const MAX_RESENDS: u8 = 3;

impl Shared {
    /// Starts one worker (slow: fork or spawn).
    pub(super) fn start_worker(&self) -> Result<Worker> {
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
        let mut proc = b.start(worker_main, args)?;
        if proc.child().watch_fd().is_none() {
            // No pidfd (an old kernel): nothing would tell the pool it died.
            let _ = proc.kill();
            let _ = proc.wait(None);
            return Err(Error::Io(std::io::Error::other(
                "cannot watch a pool worker: the kernel has no pidfd",
            )));
        }
        Ok(Worker::new(proc, parent, journal, self.spares.clone()))
    }

    /// One pass over the workers: read answers, notice deaths (logged, see
    /// [`crate::logging`]), send work.
    pub(super) fn service(
        &self,
        core: &mut Core,
        dead: &[i32],
        done: &mut Vec<Done>,
    ) -> Result<()> {
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
    pub(super) fn fill(&self, core: &mut Core) {
        while core.workers.len() < self.config.processes {
            let Some(w) = core.standby.pop() else { break };
            core.vacated.pop();
            core.workers.push(w);
        }
        if core.state != State::Running {
            core.vacated.clear();
        }
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

    pub(super) fn respawn(&self) {
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
