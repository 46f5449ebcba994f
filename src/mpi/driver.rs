//! Rank 0's side: the queue of task batches, dynamic dispatch to the worker
//! ranks, delivery of their answers to the pool's result sinks, and the
//! background thread that drives it all while no caller waits.
//!
//! Each worker holds at most two task messages, so it starts the next as
//! soon as it answers one. A message carries whole batches (chunks) up to a
//! budget of about 1 ms of work, measured from the worker's own report of
//! its time per task: cheap tasks travel thousands per message, slow ones
//! one at a time, and a slow rank is simply given less.

use super::raw::{Comm, Idle, Sending};
use super::runner::{next, FAILED, RESULTS};
use super::{RankInfo, TAG_BYE, TAG_EXIT, TAG_RESULTS, TAG_TASKS};
use crate::error::{Error, Result};
use crate::pool::api::backend::{Fail, Sink};
use crate::pool::engine::{Chunk, Engine};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Messages a worker holds at once.
const IN_FLIGHT: usize = 2;
/// Work per message the budget aims at.
const TARGET_NS: f64 = 1_000_000.0;
/// The most tasks and bytes per message.
const MAX_TASKS: usize = 8192;
const MAX_BYTES: usize = 8 << 20;

struct Flight {
    count: u32,
    index: usize,
    sink: Arc<dyn Sink>,
}

struct Worker {
    info: RankInfo,
    msgs: VecDeque<Vec<Flight>>,
    /// Tasks per message.
    budget: usize,
    gone: bool,
}

/// Where the pool stands (Python's pool states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Takes tasks.
    Running,
    /// `close`d: takes no more tasks; the ranks are released once the
    /// queued tasks are done.
    Closed,
    /// The worker ranks were released (after `close`, `terminate` or an
    /// MPI error): nothing more runs.
    Stopped,
}

pub(crate) struct Driver {
    comm: Comm,
    workers: Vec<Worker>,
    queue: VecDeque<Chunk>,
    sends: Vec<Sending>,
    /// Tasks in `queue`.
    queued_tasks: usize,
    broken: Option<String>,
    next: usize,
    state: State,
}

impl Driver {
    pub(crate) fn new(comm: Comm, ranks: Vec<RankInfo>) -> Driver {
        Driver {
            comm,
            workers: ranks
                .into_iter()
                .map(|info| Worker {
                    info,
                    msgs: VecDeque::new(),
                    budget: 1,
                    gone: false,
                })
                .collect(),
            queue: VecDeque::new(),
            sends: Vec::new(),
            queued_tasks: 0,
            broken: None,
            next: 0,
            state: State::Running,
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// Whether tasks are queued or held by a worker rank.
    fn busy(&self) -> bool {
        !self.queue.is_empty()
            || !self.sends.is_empty()
            || self.workers.iter().any(|w| !w.msgs.is_empty())
    }

    fn check(&self) -> Result<()> {
        match &self.broken {
            Some(why) => Err(Error::Io(std::io::Error::other(why.clone()))),
            None => Ok(()),
        }
    }

    /// Queues batches and sends what the workers can take.
    pub(crate) fn submit(&mut self, batches: Vec<Chunk>) -> Result<()> {
        if self.state != State::Running && self.broken.is_none() {
            return Err(Error::BrokenPool);
        }
        if let Err(e) = self.check() {
            for b in batches {
                b.sink.complete(b.index, b.count, 0, Err(&Fail::Broken));
            }
            return Err(e);
        }
        self.queued_tasks += batches.iter().map(|b| b.count as usize).sum::<usize>();
        self.queue.extend(batches);
        self.pump().map(|_| ())
    }

    /// Takes the answers that arrived and sends more work; `true` if an
    /// answer arrived. After an MPI error every call fails with it and every
    /// unfinished task fails with [`Error::BrokenPool`].
    pub(crate) fn pump(&mut self) -> Result<bool> {
        self.check()?;
        match self.pump_inner() {
            Ok(any) => Ok(any),
            Err(e) => {
                self.broken = Some(format!("the MPI pool is broken: {e}"));
                self.fail_all();
                Err(e)
            }
        }
    }

    fn pump_inner(&mut self) -> Result<bool> {
        let mut any = false;
        while let Some((src, tag, msg)) = self.comm.try_recv(None)? {
            any |= self.on_message(src, tag, &msg);
        }
        self.dispatch()?;
        let mut i = 0;
        while i < self.sends.len() {
            if self.sends[i].test()? {
                self.sends.swap_remove(i);
            } else {
                i += 1;
            }
        }
        Ok(any)
    }

    fn on_message(&mut self, src: i32, tag: i32, msg: &[u8]) -> bool {
        let Some(w) = self.workers.iter_mut().find(|w| w.info.rank == src) else {
            return false;
        };
        match tag {
            TAG_RESULTS => {
                answer(w, msg);
                true
            }
            TAG_BYE => {
                w.gone = true;
                false
            }
            _ => false,
        }
    }

    /// Sends messages while some worker has room: first to workers holding
    /// nothing, then to those holding one message; each message takes at
    /// most the worker's budget and a fair share of what is queued.
    fn dispatch(&mut self) -> Result<()> {
        let n = self.workers.len();
        for level in 0..IN_FLIGHT {
            for k in 0..n {
                if self.queue.is_empty() {
                    return Ok(());
                }
                let w = (self.next + k) % n;
                if self.workers[w].gone || self.workers[w].msgs.len() != level {
                    continue;
                }
                let fair = self.queued_tasks.div_ceil(n);
                let budget = self.workers[w].budget.min(fair).max(1);
                let mut buf: Vec<u8> = Vec::new();
                let mut flights = Vec::new();
                let mut tasks = 0usize;
                while let Some(b) = self.queue.front() {
                    if !flights.is_empty()
                        && (tasks + b.count as usize > budget || buf.len() >= MAX_BYTES)
                    {
                        break;
                    }
                    let b = self.queue.pop_front().expect("front exists");
                    tasks += b.count as usize;
                    if buf.is_empty() {
                        buf = b.frame;
                    } else {
                        buf.extend_from_slice(&b.frame);
                    }
                    // (MPI's frames have no tail; one would follow its frame.)
                    if let Some(tail) = &b.tail {
                        buf.extend_from_slice(tail);
                    }
                    flights.push(Flight {
                        count: b.count,
                        index: b.index,
                        sink: b.sink,
                    });
                }
                self.queued_tasks -= tasks;
                let rank = self.workers[w].info.rank;
                self.sends.push(self.comm.isend(rank, TAG_TASKS, buf)?);
                self.workers[w].msgs.push_back(flights);
            }
        }
        self.next = (self.next + 1) % n.max(1);
        Ok(())
    }

    fn fail_all(&mut self) {
        self.queued_tasks = 0;
        for b in self.queue.drain(..) {
            b.sink.complete(b.index, b.count, 0, Err(&Fail::Broken));
        }
        for w in &mut self.workers {
            for f in w.msgs.drain(..).flatten() {
                f.sink.complete(f.index, f.count, 0, Err(&Fail::Broken));
            }
        }
    }

    /// Stops taking tasks (Python's `close`); the ranks are released once
    /// the queued tasks are done ([`release_if_idle`](Self::release_if_idle)).
    pub(crate) fn close(&mut self) {
        if self.state == State::Running {
            self.state = State::Closed;
        }
    }

    /// After `close`: releases the ranks once nothing is queued or running.
    pub(crate) fn release_if_idle(&mut self) {
        if self.state == State::Closed && (!self.busy() || self.broken.is_some()) {
            self.shut_down();
        }
    }

    /// Ends the pool (Python's `terminate`): every unfinished task fails
    /// with [`Error::BrokenPool`] at once; each worker is told to exit,
    /// finishes what it holds (its answers are dropped) and acknowledges.
    pub(crate) fn terminate(&mut self) {
        self.fail_all();
        self.shut_down();
    }

    /// Releases the worker ranks: queued tasks fail with
    /// [`Error::BrokenPool`], the tasks the workers hold finish, then every
    /// worker is told to exit and acknowledges.
    fn shut_down(&mut self) {
        if self.state == State::Stopped {
            return;
        }
        self.state = State::Stopped;
        self.queued_tasks = 0;
        for b in self.queue.drain(..) {
            b.sink.complete(b.index, b.count, 0, Err(&Fail::Broken));
        }
        if self.broken.is_some() {
            return;
        }
        for w in &self.workers {
            if !w.gone {
                if let Err(e) = self.comm.send(w.info.rank, TAG_EXIT, &[]) {
                    crate::logging::mp_log!(
                        error,
                        target: "multiproc::mpi",
                        "cannot stop MPI rank {}: {e}",
                        w.info.rank
                    );
                    return;
                }
            }
        }
        let mut idle = Idle::new(Duration::from_millis(1));
        while self.workers.iter().any(|w| !w.gone) {
            match self.pump_inner() {
                Ok(true) => idle = Idle::new(Duration::from_millis(1)),
                Ok(false) => idle.pause(),
                Err(e) => {
                    crate::logging::mp_log!(
                        error,
                        target: "multiproc::mpi",
                        "MPI error while stopping the pool: {e}"
                    );
                    self.fail_all();
                    return;
                }
            }
        }
        self.sends.clear();
    }
}

/// Delivers a worker's answer to the batches of its oldest message.
fn answer(w: &mut Worker, msg: &[u8]) {
    let Some(flights) = w.msgs.pop_front() else {
        return;
    };
    let pid = w.info.pid;
    let rank = w.info.rank;
    let malformed = || Fail::Failed(format!("malformed answer from MPI rank {rank}"));
    let (busy, mut rest) = match msg.split_first_chunk::<8>() {
        Some((b, rest)) => (u64::from_le_bytes(*b), rest),
        None => (0, &[][..]),
    };
    let mut tasks = 0usize;
    for f in flights {
        tasks += f.count as usize;
        match next(rest) {
            Some((RESULTS, payload, len)) => {
                f.sink.complete(f.index, f.count, pid, Ok(payload));
                rest = &rest[len..];
            }
            Some((FAILED, payload, len)) => {
                let why = Fail::Failed(String::from_utf8_lossy(payload).into_owned());
                f.sink.complete(f.index, f.count, pid, Err(&why));
                rest = &rest[len..];
            }
            _ => {
                f.sink.complete(f.index, f.count, pid, Err(&malformed()));
                rest = &[];
            }
        }
    }
    // About TARGET_NS of work per message, from the worker's own timing.
    if tasks > 0 {
        let per_task = (busy as f64 / tasks as f64).max(1.0);
        let ideal = (TARGET_NS / per_task) as usize;
        // Grow at most 16-fold per answer (the first tasks may be unusually cheap).
        w.budget = ideal
            .clamp(1, MAX_TASKS)
            .min(w.budget.saturating_mul(16).max(16));
    }
}

/// The driver behind a lock, the thread that drives it in the background,
/// and waiting on it.
pub(crate) struct Shared {
    driver: Mutex<Driver>,
    /// The thread holding `driver` (0: none): a callback that calls its
    /// pool would wait for itself.
    holder: AtomicU64,
    pub(crate) ranks: Vec<RankInfo>,
    /// Wakes the background thread (work submitted, pool stopping).
    bg_lock: Mutex<bool>,
    bg_cv: Condvar,
    stop: AtomicBool,
    bg: Mutex<Option<JoinHandle<()>>>,
}

/// How long the background thread sleeps at most when nothing runs.
const BG_IDLE: Duration = Duration::from_millis(50);

fn thread_tag() -> u64 {
    thread_local!(static TAG: u8 = const { 0 });
    TAG.with(|t| t as *const u8 as u64)
}

/// The locked driver (see [`Shared::lock`]).
pub(crate) struct Locked<'a> {
    guard: MutexGuard<'a, Driver>,
    holder: &'a AtomicU64,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Driver;
    fn deref(&self) -> &Driver {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Driver {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.holder.store(0, Ordering::Release);
    }
}

impl Shared {
    /// The pool's state, with its background thread started.
    pub(crate) fn start(driver: Driver, ranks: Vec<RankInfo>) -> Result<Arc<Shared>> {
        let shared = Arc::new(Shared {
            driver: Mutex::new(driver),
            holder: AtomicU64::new(0),
            ranks,
            bg_lock: Mutex::new(false),
            bg_cv: Condvar::new(),
            stop: AtomicBool::new(false),
            bg: Mutex::new(None),
        });
        let weak = Arc::downgrade(&shared);
        let handle = std::thread::Builder::new()
            .name("multiproc-mpi".into())
            .spawn(move || background(weak))?;
        *shared.bg.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(shared)
    }

    /// Locks the driver; [`Error::InvalidState`] if this thread holds it already
    /// (a callback calling its own pool).
    pub(crate) fn lock(&self) -> Result<Locked<'_>> {
        let me = thread_tag();
        if self.holder.load(Ordering::Acquire) == me {
            return Err(Error::InvalidState(
                "an MpiPool callback cannot call its own pool (it runs while the pool \
                 delivers results)"
                    .into(),
            ));
        }
        let guard = self.driver.lock().unwrap_or_else(|e| e.into_inner());
        self.holder.store(me, Ordering::Release);
        Ok(Locked {
            guard,
            holder: &self.holder,
        })
    }

    fn wake_background(&self) {
        *self.bg_lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.bg_cv.notify_one();
    }

    /// Stops and joins the background thread (not from the thread itself).
    fn stop_background(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake_background();
        let h = self.bg.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = h {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    pub(crate) fn state(&self) -> Result<State> {
        Ok(self.lock()?.state())
    }

    /// Python's `close`.
    pub(crate) fn close(&self) -> Result<()> {
        let mut d = self.lock()?;
        d.close();
        d.release_if_idle();
        drop(d);
        self.wake_background();
        Ok(())
    }

    /// Python's `terminate`; also what dropping the pool and the end of
    /// `main` do. Returns once the ranks acknowledged.
    pub(crate) fn terminate(&self) -> Result<()> {
        self.stop_background();
        self.lock()?.terminate();
        Ok(())
    }

    /// Drives the pool until `done()` or the deadline (`None`: no limit);
    /// `Ok(false)` at the deadline.
    pub(crate) fn wait_until(
        &self,
        done: &dyn Fn() -> bool,
        deadline: Option<Instant>,
    ) -> Result<bool> {
        let mut idle = Idle::new(Duration::from_micros(200));
        loop {
            if done() {
                return Ok(true);
            }
            let got = {
                let mut d = self.lock()?;
                let got = d.pump()?;
                d.release_if_idle();
                got
            };
            if done() {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            if got {
                idle = Idle::new(Duration::from_micros(200));
            } else {
                idle.pause();
            }
        }
    }
}

/// The background thread of rank 0: drives the pool while tasks are
/// outstanding (so callbacks run and futures wake with nobody waiting),
/// releases the ranks after `close`, and sleeps otherwise.
fn background(shared: std::sync::Weak<Shared>) {
    let mut idle = Idle::new(Duration::from_micros(500));
    loop {
        let Some(s) = shared.upgrade() else { return };
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        let (got, busy) = match s.lock() {
            Ok(mut d) => {
                let got = d.pump().unwrap_or(false);
                d.release_if_idle();
                (
                    got,
                    d.busy() && d.state() != State::Stopped && d.broken.is_none(),
                )
            }
            Err(_) => (false, false),
        };
        if busy {
            drop(s);
            if got {
                idle = Idle::new(Duration::from_micros(500));
            } else {
                idle.pause();
            }
            continue;
        }
        let mut woken = s.bg_lock.lock().unwrap_or_else(|e| e.into_inner());
        if !*woken {
            woken = s
                .bg_cv
                .wait_timeout(woken, BG_IDLE)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *woken = false;
        drop(woken);
        idle = Idle::new(Duration::from_micros(500));
    }
}

impl Engine for Shared {
    fn workers(&self) -> usize {
        self.ranks.len()
    }

    fn submit(&self, chunks: Vec<Chunk>) -> Result<()> {
        self.lock()?.submit(chunks)?;
        self.wake_background();
        Ok(())
    }

    fn wait_until(&self, done: &dyn Fn() -> bool, deadline: Option<Instant>) -> Result<bool> {
        Shared::wait_until(self, done, deadline)
    }

    #[cfg(feature = "tokio")]
    fn drive_for(&self, cond: &dyn Fn() -> bool, budget: Duration) -> Result<bool> {
        Shared::wait_until(self, cond, Instant::now().checked_add(budget))
    }

    #[cfg(feature = "tokio")]
    fn wake_for_async(&self) {
        self.wake_background();
    }
}
