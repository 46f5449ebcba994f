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
//! A worker's death is seen on its pidfd: what it had already answered is
//! read first, then every batch it still held fails with
//! [`Error::WorkerDied`](crate::Error::WorkerDied) and a replacement starts.

use super::result::{Fail, Sink};
use super::wire::{self, WorkerEnd};
use super::worker::{worker_main, WorkerArgs};
use crate::error::{Error, Result};
use crate::process::Process;
use crate::process::StartMethod;
use crate::sys::Region;
use rustix::event::{PollFd, PollFlags};
use rustix::net::{RecvFlags, SendFlags};
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A batch whose workers keep dying before they start it (an initializer
/// that crashes, say) fails after this many tries instead of cycling forever.
const MAX_RESENDS: u8 = 3;

/// Most tasks one worker holds at a time (small tasks are pipelined).
const WINDOW_TASKS: usize = 256;
/// Most unsent bytes queued for one worker.
const WINDOW_BYTES: usize = 8 << 20;

/// A batch of tasks ready to send: a complete `TASKS` frame.
pub(crate) struct Batch {
    pub(crate) frame: Vec<u8>,
    /// How many workers died before starting it (it fails at [`MAX_RESENDS`]).
    pub(crate) resent: u8,
    pub(crate) count: u32,
    pub(crate) index: usize,
    pub(crate) sink: Arc<dyn Sink>,
}

struct Sent {
    resent: u8,
    /// Its frame, kept until answered: a batch the worker never started is
    /// sent again to another worker if this one dies.
    frame: Arc<Vec<u8>>,
    count: u32,
    index: usize,
    sink: Arc<dyn Sink>,
}

/// A finished batch, to hand to its sink outside the lock.
struct Done {
    sent: Sent,
    pid: i32,
    /// The answer frame's buffer and where its payload starts.
    outcome: std::result::Result<(Vec<u8>, usize), Fail>,
}

struct Worker {
    proc: Process<()>,
    pid: i32,
    sock: Arc<OwnedFd>,
    pidfd: Arc<OwnedFd>,
    /// What the worker reports through shared memory: batches started.
    counters: Region,
    /// Batches answered so far.
    answered: u64,
    inbuf: Vec<u8>,
    /// Frames not yet (fully) sent; small frames share a buffer.
    out: VecDeque<OutBuf>,
    /// Bytes of `out[0]` already sent.
    out_pos: usize,
    unsent: usize,
    inflight: VecDeque<Sent>,
    inflight_tasks: usize,
    sent_batches: u64,
    /// Smoothed time per task (ns), to size the window: slow tasks are not
    /// queued far ahead, so the load stays balanced between workers.
    task_ns: f64,
    /// When the batch now at the head of `inflight` started (roughly).
    head_since: Instant,
    /// The socket is gone (EOF or EPIPE): send nothing more.
    broken: bool,
    /// `EXIT` was queued: send nothing more.
    exiting: bool,
}

impl Worker {
    fn unsent(&self) -> usize {
        self.unsent
    }

    fn queue(&mut self, frame: &Arc<Vec<u8>>) {
        self.unsent += frame.len();
        if frame.len() > 64 << 10 {
            self.out.push_back(OutBuf::Frame(frame.clone()));
            return;
        }
        match self.out.back_mut() {
            Some(OutBuf::Merged(back)) if back.len() + frame.len() <= 256 << 10 => {
                back.extend_from_slice(frame)
            }
            _ => self.out.push_back(OutBuf::Merged(frame.to_vec())),
        }
    }

    /// How many batches the worker has started (read from shared memory).
    fn started(&self) -> u64 {
        // SAFETY: offset 0 is aligned and within the region (16 bytes); any
        // bit pattern is a valid AtomicU64, and both sides only use atomics.
        unsafe { self.counters.get::<AtomicU64>(0) }.load(Acquire)
    }

    fn can_take(&self, b: &Batch, maxtasks: u64) -> bool {
        !self.broken
            && !self.exiting
            && (maxtasks == 0 || self.sent_batches < maxtasks)
            && self.unsent() < WINDOW_BYTES
            && (self.inflight.len() < 2
                || (self.inflight_tasks + b.count as usize <= self.window()
                    && self.inflight.len() < WINDOW_TASKS))
    }

    /// Roughly how long until the batch at the head of `inflight` is
    /// answered (zero when unknown or overdue; `None` when nothing is held).
    fn eta(&self, now: Instant) -> Option<Duration> {
        let head = self.inflight.front()?;
        if self.task_ns <= 0.0 {
            return Some(Duration::ZERO);
        }
        let expect = Duration::from_nanos((self.task_ns * head.count as f64) as u64);
        Some(expect.saturating_sub(now.duration_since(self.head_since)))
    }

    /// How many tasks this worker may hold: about 2 ms of work, 2..=256.
    fn window(&self) -> usize {
        if self.task_ns <= 0.0 {
            return WINDOW_TASKS;
        }
        ((2e6 / self.task_ns) as usize).clamp(2, WINDOW_TASKS)
    }

    fn push(&mut self, b: Batch) {
        if self.inflight.is_empty() {
            self.head_since = Instant::now();
        }
        let frame = Arc::new(b.frame);
        self.queue(&frame);
        self.inflight.push_back(Sent {
            resent: b.resent,
            frame,
            count: b.count,
            index: b.index,
            sink: b.sink,
        });
        self.inflight_tasks += b.count as usize;
        self.sent_batches += 1;
    }

    fn flush(&mut self) -> Result<()> {
        while let Some(front) = self.out.front() {
            if self.broken {
                break;
            }
            let before = self.out_pos;
            let front = front.as_slice();
            if !wire::write_some(&*self.sock, front, &mut self.out_pos, SendFlags::DONTWAIT)? {
                self.broken = true;
            }
            self.unsent -= self.out_pos - before;
            if self.out_pos < front.len() {
                break;
            }
            self.out.pop_front();
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Reads every answer available now.
    fn read(&mut self, done: &mut Vec<Done>) -> Result<()> {
        for _ in 0..64 {
            match wire::read_some(&*self.sock, &mut self.inbuf, RecvFlags::DONTWAIT)? {
                wire::Read::Data => self.parse(done),
                wire::Read::Empty => break,
                wire::Read::Eof => {
                    self.broken = true;
                    break;
                }
            }
        }
        Ok(())
    }

    fn parse(&mut self, done: &mut Vec<Done>) {
        let mut pos = 0;
        while let Some((kind, payload, len)) = wire::next_frame(&self.inbuf[pos..]) {
            let outcome = if kind == wire::FAILED {
                Err(Fail::Failed(String::from_utf8_lossy(payload).into_owned()))
            } else if pos == 0 && len == self.inbuf.len() && len > 4096 {
                // The frame is the whole buffer: take it, no copy.
                Ok((std::mem::take(&mut self.inbuf), 5))
            } else {
                Ok((payload.to_vec(), 0))
            };
            pos += len;
            let Some(sent) = self.inflight.pop_front() else {
                // An answer nobody asked for: the worker is confused; stop using it.
                self.broken = true;
                continue;
            };
            self.inflight_tasks -= sent.count as usize;
            self.answered += 1;
            let now = Instant::now();
            let per =
                now.duration_since(self.head_since).as_nanos() as f64 / sent.count.max(1) as f64;
            self.task_ns = if self.task_ns <= 0.0 {
                per
            } else {
                0.7 * self.task_ns + 0.3 * per
            };
            self.head_since = now;
            done.push(Done {
                sent,
                pid: self.pid,
                outcome,
            });
            if self.inbuf.is_empty() {
                return;
            }
        }
        if pos == self.inbuf.len() {
            self.inbuf.clear();
        } else if pos > 0 {
            self.inbuf.drain(..pos);
        }
    }
}

/// A piece of a worker's output queue.
enum OutBuf {
    /// Small frames copied together (one `send` for many tasks).
    Merged(Vec<u8>),
    /// A large frame, shared with its [`Sent`] record.
    Frame(Arc<Vec<u8>>),
}

impl OutBuf {
    fn as_slice(&self) -> &[u8] {
        match self {
            OutBuf::Merged(v) => v,
            OutBuf::Frame(f) => f,
        }
    }
}

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
    bg_lock: Mutex<()>,
    bg_cv: Condvar,
    bg_idle: AtomicBool,
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
            }),
            role: Mutex::new(()),
            done_lock: Mutex::new(()),
            done_cv: Condvar::new(),
            bg_lock: Mutex::new(()),
            bg_cv: Condvar::new(),
            bg_idle: AtomicBool::new(false),
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
        lock(&self.core).workers.iter().map(|w| w.pid).collect()
    }

    fn kick(&self) {
        let _ = rustix::io::write(&self.kick, &1u64.to_ne_bytes());
    }

    fn wake_bg(&self) {
        let _g = lock(&self.bg_lock);
        self.bg_cv.notify_all();
    }

    fn notify_done(&self) {
        let _g = lock(&self.done_lock);
        self.done_cv.notify_all();
    }

    /// Starts one worker (slow: fork or spawn).
    fn start_worker(&self) -> Result<Worker> {
        let (parent, child) = wire::pair()?;
        let counters = Region::new(16, "multiproc-pool-worker")?;
        let n = self.started.fetch_add(1, SeqCst) + 1;
        let mut b = Process::builder()
            .daemon(true)
            .name(format!("PoolWorker-{n}"));
        if let Some(m) = self.config.method {
            b = b.start_method(m);
        }
        let args: WorkerArgs = (
            WorkerEnd(child),
            counters.clone(),
            self.config.init.clone(),
            self.config.maxtasks,
            self.config.spin.as_micros() as u64,
        );
        let proc = b.start(worker_main, args)?;
        let pid = proc.pid();
        let pidfd = rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid)
                .ok_or_else(|| Error::Invalid("worker pid 0".into()))?,
            rustix::process::PidfdFlags::empty(),
        )?;
        Ok(Worker {
            proc,
            pid,
            sock: Arc::new(parent),
            pidfd: Arc::new(pidfd),
            counters,
            answered: 0,
            inbuf: Vec::new(),
            out: VecDeque::new(),
            out_pos: 0,
            unsent: 0,
            inflight: VecDeque::new(),
            inflight_tasks: 0,
            sent_batches: 0,
            task_ns: 0.0,
            head_since: Instant::now(),
            broken: false,
            exiting: false,
        })
    }

    /// Queues batches and sends what the workers can take now.
    pub(crate) fn submit(&self, batches: Vec<Batch>) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let unsent = {
            let mut core = lock(&self.core);
            if core.state != State::Running {
                return Err(Error::Invalid("the pool is not running".into()));
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
            core.workers[i].push(b);
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

    /// One pass over the workers: read answers, notice deaths, send work.
    fn service(&self, core: &mut Core, dead: &[i32], done: &mut Vec<Done>) -> Result<()> {
        let mut i = 0;
        while i < core.workers.len() {
            let w = &mut core.workers[i];
            w.read(done)?;
            w.flush()?;
            let gone = dead.contains(&w.pid)
                || ((w.broken || w.exiting) && w.proc.wait(Some(Duration::ZERO))?.is_some());
            if gone {
                let code = w.proc.wait(Some(Duration::ZERO))?.unwrap_or(-9);
                w.read(done)?;
                let mut w = core.workers.swap_remove(i);
                // The batches it had started fail (it may have been running
                // them, or finished them without its answer getting out);
                // those it never started go back to the queue, in order.
                let started = w.started();
                if started == 0 && code != 0 {
                    core.early_deaths = core.early_deaths.saturating_add(1);
                } else {
                    core.early_deaths = 0;
                }
                let held = started.saturating_sub(w.answered) as usize;
                let mut again = Vec::new();
                for (j, sent) in w.inflight.drain(..).enumerate() {
                    if j < held || sent.resent + 1 >= MAX_RESENDS {
                        done.push(Done {
                            sent,
                            pid: w.pid,
                            outcome: Err(Fail::Died(code)),
                        });
                    } else {
                        again.push(Batch {
                            resent: sent.resent + 1,
                            frame: Arc::try_unwrap(sent.frame).unwrap_or_else(|a| (*a).clone()),
                            count: sent.count,
                            index: sent.index,
                            sink: sent.sink,
                        });
                    }
                }
                for b in again.into_iter().rev() {
                    core.pending.push_front(b);
                }
                let replace = core.state == State::Running
                    || (core.state == State::Closed && (!core.pending.is_empty() || !w.exiting));
                if replace {
                    core.spawn_needed += 1;
                }
                continue;
            }
            i += 1;
        }
        if core.spawn_needed > 0 {
            self.wake_bg();
        }
        self.dispatch(core)
    }

    fn complete(&self, done: Vec<Done>) {
        if done.is_empty() {
            return;
        }
        let n = done.len();
        for d in done {
            let outcome = match &d.outcome {
                Ok((bytes, start)) => Ok(&bytes[*start..]),
                Err(f) => Err(f),
            };
            d.sent
                .sink
                .complete(d.sent.index, d.sent.count, d.pid, outcome);
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
            // Someone else drives: look again later.
            let mut nap = tick;
            if outstanding > 0 && self.fg_waiters.load(SeqCst) == 0 {
                idle_ticks = 0;
                if armed {
                    if let Ok(role) = self.role.try_lock() {
                        let stop = || self.outstanding.load(SeqCst) == 0;
                        let r = self.drive(&stop, None, true);
                        drop(role);
                        self.notify_done();
                        if let Err(e) = r {
                            eprintln!("multiproc: pool supervisor: {e}");
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
            let g = lock(&self.bg_lock);
            if idle_ticks > 50 {
                self.bg_idle.store(true, SeqCst);
                if self.outstanding.load(SeqCst) == 0
                    && !self.shutdown.load(SeqCst)
                    && lock(&self.core).spawn_needed == 0
                {
                    let _g = self.bg_cv.wait(g);
                }
                self.bg_idle.store(false, SeqCst);
                idle_ticks = 0;
            } else {
                let _ = self.bg_cv.wait_timeout(g, nap);
            }
        }
    }

    fn respawn(&self) {
        let early = lock(&self.core).early_deaths;
        if early > 2 {
            let pause = Duration::from_millis(20 * u64::from(early.min(50)));
            let g = lock(&self.bg_lock);
            let _ = self.bg_cv.wait_timeout(g, pause);
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
                core.workers.push(w);
                let _ = self.dispatch(&mut core);
                drop(core);
                self.kick();
            }
            Err(e) => {
                let mut failed = Vec::new();
                {
                    let mut core = lock(&self.core);
                    core.spawn_error = Some(e.to_string());
                    if core.workers.is_empty() {
                        // No worker can run what is queued: fail it rather than hang.
                        failed.extend(core.pending.drain(..).map(|b| Done {
                            sent: Sent {
                                resent: 0,
                                frame: Arc::new(Vec::new()),
                                count: b.count,
                                index: b.index,
                                sink: b.sink,
                            },
                            pid: 0,
                            outcome: Err(Fail::Broken),
                        }));
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
            core.workers.is_empty() && core.spawn_needed == 0 && core.pending.is_empty()
        };
        self.wait_until(&cond, None)?;
        Ok(())
    }

    /// `terminate()`: kill the workers, fail everything not done.
    pub(crate) fn terminate(&self) {
        let (workers, pending) = {
            let mut core = lock(&self.core);
            core.state = State::Terminated;
            core.spawn_needed = 0;
            (
                std::mem::take(&mut core.workers),
                std::mem::take(&mut core.pending),
            )
        };
        for w in &workers {
            let _ = w.proc.kill();
        }
        let mut failed: Vec<Done> = pending
            .into_iter()
            .map(|b| Done {
                sent: Sent {
                    resent: 0,
                    frame: Arc::new(Vec::new()),
                    count: b.count,
                    index: b.index,
                    sink: b.sink,
                },
                pid: 0,
                outcome: Err(Fail::Broken),
            })
            .collect();
        for mut w in workers {
            let _ = w.proc.wait(None);
            for sent in w.inflight.drain(..) {
                failed.push(Done {
                    sent,
                    pid: w.pid,
                    outcome: Err(Fail::Broken),
                });
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
