//! Processes: starting, joining, signalling and reaping children.
//!
//! ```
//! use multiproc::Process;
//!
//! fn greet(name: String) -> String {
//!     format!("hello {name} from {}", std::process::id())
//! }
//!
//! # fn main() -> multiproc::Result<()> {
//! multiproc::init();
//! let mut p = Process::start(greet, ("world".to_string(),))?;
//! println!("{}", p.join()?);
//! assert_eq!(p.exitcode(), Some(0));
//! # Ok(()) }
//! ```
#![allow(unsafe_code)]

mod bootstrap;
mod child;
pub(crate) mod fnref;
mod fork;
mod forkserver;
mod helper;
mod method;
mod registry;
mod spawn;
mod target;

pub(crate) use bootstrap::init;
pub(crate) use bootstrap::{capture_panics_per_thread, take_thread_panic};
pub use forkserver::{set_forkserver_preload, Preload};
pub use method::{get_all_start_methods, get_start_method, set_start_method, StartMethod};
pub use target::TaskFn;

use crate::error::{BootstrapError, CodecError, Error, ProcessFailure, Result};
use crate::handoff::{Args, Exporter, Importer};
use bootstrap::{Report, Runner};
pub(crate) use child::ChildShared;
use fnref::FnDesc;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who a child is: sent to it at start, readable with [`current_process`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildIdentity {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) parent_pid: i32,
    /// The parent's start token (see `sys::liveness`; 0 if unknown): tells
    /// the parent from a later process with its pid.
    pub(crate) parent_token: u32,
    pub(crate) parent_name: String,
    pub(crate) path: Vec<u32>,
}

/// This process's identity, readable without taking a lock: a forked child
/// must be able to read (and set) it whatever the parent's other threads were
/// doing at the fork.
pub(crate) struct Current {
    /// Null in the main process; else a leaked `Box<ChildIdentity>`, set once
    /// at the start of a child and never freed.
    identity: AtomicPtr<ChildIdentity>,
    counter: AtomicU32,
}

pub(crate) static CURRENT: Current = Current {
    identity: AtomicPtr::new(std::ptr::null_mut()),
    counter: AtomicU32::new(0),
};

impl Current {
    pub(crate) fn set_child(&self, id: ChildIdentity) {
        self.set_child_raw(Box::into_raw(Box::new(id)));
    }

    /// Sets this process's identity to `id`, a pointer from `Box::into_raw`
    /// that this process never frees (a forked child's copy of a box its
    /// parent prepared). Takes no lock and allocates nothing.
    pub(crate) fn set_child_raw(&self, id: *mut ChildIdentity) {
        // The identity it replaces (a forked child's copy of its parent's)
        // is leaked: a reader may still hold a reference to it.
        self.identity.store(id, Ordering::Release);
        self.counter.store(0, Ordering::Relaxed);
    }

    fn get(&self) -> Option<&'static ChildIdentity> {
        let p = self.identity.load(Ordering::Acquire);
        // SAFETY: a non-null pointer here came from `Box::into_raw` (see
        // `set_child_raw`) and is never freed by this process, so it is valid
        // for the rest of the process's life; the identity is never mutated.
        unsafe { p.as_ref() }
    }
}

/// What [`current_process`] tells about this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentProcess {
    /// `"MainProcess"` in the main process; `"Process-1"`, `"Process-1:2"`, …
    /// (or the builder's name) in children.
    pub name: String,
    /// This process's id.
    pub pid: i32,
    /// Whether this process was started as a daemon.
    pub daemon: bool,
}

/// This process's name, pid and daemon flag (Python's `current_process()`).
pub fn current_process() -> CurrentProcess {
    let pid = std::process::id() as i32;
    match CURRENT.get() {
        Some(id) => CurrentProcess {
            name: id.name.clone(),
            pid,
            daemon: id.daemon,
        },
        None => CurrentProcess {
            name: "MainProcess".into(),
            pid,
            daemon: false,
        },
    }
}

/// The parent of a process started by multiproc (Python's `parent_process()`):
/// the process that called `start`, under every start method (a forkserver
/// child's parent is the process that asked for it, not the fork server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentProcess {
    /// The parent's name.
    pub name: String,
    /// The parent's pid.
    pub pid: i32,
    /// The parent's start token, to tell it from a later process that gets
    /// its pid.
    token: u32,
}

impl ParentProcess {
    /// Whether the parent is still running: it is our parent (`getppid()`
    /// names it), or — for a forkserver child, whose parent in the kernel's
    /// eyes is the fork server — a process with its pid and its start time
    /// exists and has not ended.
    pub fn is_alive(&self) -> bool {
        // SAFETY: plain syscall.
        if unsafe { libc::getppid() } == self.pid {
            return true;
        }
        let Ok(pid) = u32::try_from(self.pid) else {
            return false;
        };
        self.token != 0
            && crate::sys::liveness::check(pid, self.token) == crate::sys::liveness::Liveness::Alive
    }
}

/// The parent process, or `None` in a process not started by multiproc.
pub fn parent_process() -> Option<ParentProcess> {
    CURRENT.get().map(|id| ParentProcess {
        name: id.parent_name.clone(),
        pid: id.parent_pid,
        token: id.parent_token,
    })
}

/// A living child, as listed by [`active_children`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// The child's pid.
    pub pid: i32,
    /// The child's name.
    pub name: String,
    /// Whether it is a daemon.
    pub daemon: bool,
}

/// Reaps every finished child and lists the living ones (Python's
/// `active_children()`).
pub fn active_children() -> Vec<ChildInfo> {
    registry::reap_all()
        .iter()
        .map(|c| ChildInfo {
            pid: c.pid,
            name: c.name.clone(),
            daemon: c.daemon,
        })
        .collect()
}

/// What a child's standard input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stdin {
    /// `/dev/null` (the default): a child never competes with its parent for
    /// the terminal (CPython's "beware of replacing sys.stdin").
    #[default]
    Null,
    /// The parent's standard input.
    Inherit,
}

/// Configures a process before starting it (Python's `Process(name=...,
/// daemon=...)` with a context's start method).
#[derive(Debug, Clone, Default)]
#[must_use = "a Builder does nothing until `start` is called"]
pub struct Builder {
    name: Option<String>,
    daemon: Option<bool>,
    method: Option<StartMethod>,
    stdin: Stdin,
    /// A helper of the crate itself (the resource tracker), allowed from a
    /// daemon process as CPython's tracker is.
    internal: bool,
    /// Fork without flushing std's stdout first (pool workers, started by a
    /// thread of the pool while the program's thread may hold stdout's lock).
    leave_stdout: bool,
    /// Descriptors kept open at their numbers in the child (opt-in).
    pass_fds: Vec<RawFd>,
}

impl Builder {
    /// A builder with the defaults: generated name, daemon flag inherited from
    /// this process, the default start method, stdin from `/dev/null`.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The child's name.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Whether the child is a daemon: ended when this process exits, or is
    /// killed (`PR_SET_PDEATHSIG`), instead of being joined.
    ///
    /// The death signal follows the *thread* that started the child: a daemon
    /// started from a thread that ends is killed then (Linux semantics).
    ///
    /// As in CPython, a daemon process may not start children of its own:
    /// `start` in a daemon returns [`Error::InvalidState`] ("daemonic processes
    /// are not allowed to have children"), since they would be orphaned
    /// when it is ended.
    pub fn daemon(mut self, daemon: bool) -> Builder {
        self.daemon = Some(daemon);
        self
    }

    /// The start method (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// The child's standard input.
    pub fn stdin(mut self, stdin: Stdin) -> Builder {
        self.stdin = stdin;
        self
    }

    /// Keeps descriptor `fd` open, at the same number, in the child (as
    /// `subprocess`'s `pass_fds`).
    ///
    /// A child gets its resources as arguments; every other descriptor of
    /// this process is closed in the child under every start method (under
    /// *fork* too, where CPython keeps them all). Use this for a descriptor
    /// the child finds by number, e.g. a log file opened before the start.
    /// `fd` must stay open until [`start`](Self::start) returns.
    pub fn pass_fd(mut self, fd: impl AsRawFd) -> Builder {
        self.pass_fds.push(fd.as_raw_fd());
        self
    }

    /// Marks a helper process of the crate itself, which a daemon process
    /// may start (the resource tracker).
    pub(crate) fn internal(mut self) -> Builder {
        self.internal = true;
        self
    }

    /// Forks without flushing std's stdout (see `leave_stdout`); the child
    /// then leaves stdout's buffer unflushed at exit.
    pub(crate) fn leave_stdout(mut self) -> Builder {
        self.leave_stdout = true;
        self
    }

    /// Starts `target(*args)` in a new process: `Process::start(add, (2, 3))`
    /// calls `add(2, 3)`, and a one-argument target takes a one-tuple,
    /// `Process::start(square, (7,))`, as in Python.
    ///
    /// `target` must be a `fn` item or a closure that captures nothing (a
    /// compile-time check, see [`TaskFn`]); `args` is a tuple of values and
    /// resources (see [`handoff`](crate::handoff)).
    pub fn start<F, A, R>(self, target: F, args: A) -> Result<Process<R>>
    where
        F: TaskFn<A, R>,
        A: Args,
        R: Serialize + DeserializeOwned,
    {
        fnref::check_target(target);
        self.start_runner(RunnerOf::<F, A, R>::DESC, &args, None)
    }

    fn start_runner<A: Args, R>(
        self,
        runner: &'static FnDesc<Runner>,
        args: &A,
        tamper: Option<spawn::Tamper>,
    ) -> Result<Process<R>> {
        bootstrap::check_bootstrapped()?;
        registry::reap_finished();
        let me = current_process();
        if me.daemon && !self.internal {
            return Err(Error::InvalidState(
                "daemonic processes are not allowed to have children".into(),
            ));
        }
        let parent_path = CURRENT.get().map(|i| i.path.clone()).unwrap_or_default();
        let n = CURRENT.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let mut path = parent_path;
        path.push(n);
        let name = self.name.unwrap_or_else(|| {
            let p: Vec<String> = path.iter().map(|i| i.to_string()).collect();
            format!("Process-{}", p.join(":"))
        });
        let daemon = self.daemon.unwrap_or(me.daemon);
        let identity = ChildIdentity {
            name: name.clone(),
            daemon,
            parent_pid: me.pid,
            parent_token: crate::sys::liveness::current_token(),
            parent_name: me.name,
            path,
        };
        let mut ex = Exporter::new();
        args.export_all(&mut ex)?;
        let (shared, report, watch_report) = match self.method.unwrap_or_else(get_start_method) {
            StartMethod::Fork => {
                let (pid, report) = fork::launch(
                    identity,
                    self.stdin,
                    !self.leave_stdout,
                    runner.get(),
                    ex.bytes(),
                    ex.fds(),
                    &self.pass_fds,
                )?;
                (ChildShared::new(pid, name, daemon), report, true)
            }
            StartMethod::Spawn => {
                let (pid, report) = spawn::launch(
                    identity,
                    self.stdin,
                    fnref::name(runner),
                    ex.bytes(),
                    ex.fds(),
                    &self.pass_fds,
                    tamper,
                )?;
                (ChildShared::new(pid, name, daemon), report, true)
            }
            StartMethod::Forkserver => {
                let s = forkserver::launch(
                    identity,
                    self.stdin,
                    fnref::name(runner),
                    ex.bytes(),
                    ex.fds(),
                    &self.pass_fds,
                )?;
                let shared = ChildShared::forkserver_child(s.pid, name, daemon, s.pidfd, s.status);
                (shared, s.report, false)
            }
        };
        // A fork or spawn child is watched through its report socket while
        // this handle lives: no other descriptor is held for it meanwhile
        // (see the registry's docs on why that matters).
        let report = registry::register(shared.clone(), report, watch_report);
        Ok(Process {
            shared,
            report,
            reports: bootstrap::ReportReader::new(),
            result: None,
            _r: PhantomData,
        })
    }
}

/// The child side of a target: imports the arguments, calls the target, and
/// encodes its return value. Reached only through [`RunnerOf::DESC`].
fn runner<F, A, R>(im: &mut Importer) -> Result<Vec<u8>>
where
    F: TaskFn<A, R>,
    A: Args,
    R: Serialize,
{
    let args = A::import_all(im)?;
    // SAFETY: this runner is reached only through `RunnerOf::<F, A, R>::DESC`,
    // which `Builder::start` names after receiving a value of `F` (in this
    // process, or in the parent that started it from the same binary).
    let f: F = unsafe { fnref::conjure::<F, A, R>() };
    let value = f.call(args);
    crate::codec::encode(&value)
}

/// The named descriptor of `runner::<F, A, R>`.
struct RunnerOf<F, A, R>(PhantomData<(F, A, R)>);

impl<F, A, R> RunnerOf<F, A, R>
where
    F: TaskFn<A, R>,
    A: Args,
    R: Serialize,
{
    const DESC: &'static FnDesc<Runner> = &FnDesc::new(runner::<F, A, R>);
}

/// A started child process (Python's `Process` after `start()`).
///
/// `R` is the target's return type, handed back by [`join`](Self::join).
///
/// **Drop**: dropping a handle does not kill or wait for the child. It stays
/// registered and is reaped by the next [`Process::start`], by
/// [`active_children`], or at exit, so it never lingers as a zombie; a
/// non-daemon child is joined when this process exits normally, as in Python.
/// Its return value is discarded.
#[derive(Debug)]
pub struct Process<R = ()> {
    shared: Arc<ChildShared>,
    report: registry::ReportFd,
    reports: bootstrap::ReportReader,
    /// `Some` once the outcome is known: `Ok(None)` after the value was taken.
    result: Option<Result<Option<R>, JoinError>>,
    _r: PhantomData<fn() -> R>,
}

#[derive(Debug, Clone)]
enum JoinError {
    Failed(ProcessFailure),
    Bootstrap(BootstrapError),
    Codec(CodecError),
}

impl From<JoinError> for Error {
    fn from(e: JoinError) -> Error {
        match e {
            JoinError::Failed(f) => Error::ProcessFailed(Box::new(f)),
            JoinError::Bootstrap(b) => Error::Bootstrap(b),
            JoinError::Codec(c) => Error::Codec(c),
        }
    }
}

impl Process<()> {
    /// Starts `target(*args)` with the default settings; see [`Builder::start`].
    pub fn start<F, A, R>(target: F, args: A) -> Result<Process<R>>
    where
        F: TaskFn<A, R>,
        A: Args,
        R: Serialize + DeserializeOwned,
    {
        Builder::new().start(target, args)
    }

    /// A [`Builder`] to set a name, the daemon flag, the start method or stdin.
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// What this handle shares with the registry: the child's pidfd
    /// (opened on first use) or a forkserver child's status socket among
    /// it, for owners that watch many children in one `poll` (the pool).
    pub(crate) fn child(&self) -> &Arc<ChildShared> {
        &self.shared
    }

    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.shared.pid
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether the child is a daemon.
    pub fn daemon(&self) -> bool {
        self.shared.daemon
    }

    /// Python's `exitcode`: `None` while running, `Some(0)` on success,
    /// `Some(N)` after `exit(N)` (1 after a panic), `Some(-SIG)` when killed
    /// by a signal. Never blocks.
    pub fn exitcode(&self) -> Option<i32> {
        self.shared.try_reap()
    }

    /// Whether the child is still running.
    pub fn is_alive(&self) -> bool {
        self.exitcode().is_none()
    }

    /// A descriptor that becomes readable when the child ends, for
    /// `poll`/`epoll` or [`connection::wait`](crate::connection): the
    /// child's pidfd, or (forkserver) the socket on which the fork server
    /// reports its exit.
    pub fn sentinel(&self) -> BorrowedFd<'_> {
        if let Some(fd) = self.shared.watch_fd() {
            return fd;
        }
        self.report_or_ready()
    }

    /// The report socket or, if it cannot be taken out of the registry's
    /// ring, the registry's always-ready descriptor (so that a waiter wakes
    /// and `join` reports the error).
    fn report_or_ready(&self) -> BorrowedFd<'_> {
        match (self.report_fd(), registry::ready_fd()) {
            (Ok(fd), _) => fd,
            (Err(_), Some(ready)) => ready,
            // Only a parked report socket can fail, and parking needs the
            // ready descriptor to exist.
            (Err(e), None) => {
                unreachable!("a report socket parked without a ready descriptor: {e}")
            }
        }
    }

    /// The parent's end of the report socket (taken out of the registry's
    /// ring if it is parked there).
    fn report_fd(&self) -> std::io::Result<BorrowedFd<'_>> {
        self.report.get()
    }

    /// The descriptor from which [`wait`](Self::wait) learns the exit: the
    /// pidfd, or (forkserver) the status socket, readable only once the
    /// fork server has reported the status. `None` without pidfds.
    pub(crate) fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        self.shared.watch_fd()
    }

    /// The descriptors a waiter must watch: the report socket (the child may
    /// block writing a large report until it is read) and [`exit_fd`](Self::exit_fd),
    /// if any. Not a forkserver child's pidfd: it becomes readable before the
    /// fork server has reported the status, and an edge-triggered waiter
    /// that looked then would get no further event.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn wait_fds(&self) -> (BorrowedFd<'_>, Option<BorrowedFd<'_>>) {
        (self.report_or_ready(), self.exit_fd())
    }

    /// Sends SIGTERM (Python's `terminate()`). Does nothing once the child is reaped.
    pub fn terminate(&self) -> Result<()> {
        Ok(self.shared.signal(libc::SIGTERM)?)
    }

    /// Sends SIGKILL (Python's `kill()`). Does nothing once the child is reaped.
    pub fn kill(&self) -> Result<()> {
        Ok(self.shared.signal(libc::SIGKILL)?)
    }

    /// Waits for the child to end and returns the target's return value.
    ///
    /// A panic in the child gives [`Error::ProcessFailed`] with the panic
    /// message and the child's backtrace; `exit(N)` or a signal gives the same
    /// error with that exitcode; a child that could not start gives
    /// [`Error::Bootstrap`]. The value can be taken once: a later `join`
    /// returns [`Error::AlreadyTaken`]; failures are returned every time.
    pub fn join(&mut self) -> Result<R> {
        self.wait_until(None)?;
        self.take_result()
    }

    /// [`join`](Self::join) with a timeout: [`Error::Timeout`] if the child
    /// is still running when it passes (the child is left running, and can be
    /// joined again).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R> {
        if !self.wait_until(crate::sys::deadline_after(Some(timeout)))? {
            return Err(Error::Timeout);
        }
        self.take_result()
    }

    /// Waits for the child to end without taking its value; returns its
    /// exitcode. With a timeout, `Ok(None)` means it is still running.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Option<i32>> {
        if self.wait_until(crate::sys::deadline_after(timeout))? {
            Ok(self.shared.try_reap())
        } else {
            Ok(None)
        }
    }

    fn take_result(&mut self) -> Result<R> {
        match self.result.as_mut().expect("wait_until returned true") {
            Ok(v) => v.take().ok_or_else(|| Error::AlreadyTaken),
            Err(e) => Err(e.clone().into()),
        }
    }

    /// Reads whatever the report socket holds without blocking.
    fn drain(&mut self) -> Result<()> {
        if self.reports.done() {
            return Ok(());
        }
        let fd = self.report.get()?;
        self.reports.drain(fd)
    }

    /// Waits until the child has ended and its report is read. `false` if the
    /// deadline passed first.
    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<bool> {
        if self.result.is_some() {
            return Ok(true);
        }
        loop {
            self.drain()?;
            if let Some(code) = self.shared.try_reap() {
                self.drain()?;
                self.result = Some(self.outcome(code));
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            // Wait for report bytes or for the exit. Without a pidfd, a closed
            // report socket only says the child is about to end: poll briefly.
            match (self.shared.watch_fd(), self.reports.done()) {
                (Some(p), false) => {
                    crate::sys::poll_readable(&[self.report_fd()?, p], deadline)?;
                }
                (Some(p), true) => {
                    crate::sys::poll_readable(&[p], deadline)?;
                }
                (None, false) => {
                    crate::sys::poll_readable(&[self.report_fd()?], deadline)?;
                }
                (None, true) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    fn outcome(&mut self, code: i32) -> Result<Option<R>, JoinError> {
        let pid = self.shared.pid;
        let failed = |message: Option<String>, backtrace: Option<String>| {
            JoinError::Failed(ProcessFailure {
                pid,
                exitcode: code,
                panic_message: message,
                backtrace,
            })
        };
        let report = self.reports.take();
        match report {
            Some(Ok(Report::Returned(bytes))) if code == 0 => {
                crate::codec::decode(&bytes).map(Some).map_err(|e| match e {
                    Error::Codec(c) => JoinError::Codec(c),
                    e => JoinError::Codec(CodecError::with_source(
                        "cannot decode the child's return value",
                        e,
                    )),
                })
            }
            Some(Ok(Report::Panicked { message, backtrace })) => {
                Err(failed(Some(message), Some(backtrace)))
            }
            Some(Ok(Report::BootstrapFailed(m))) => Err(JoinError::Bootstrap(m.into())),
            Some(Err(e)) => Err(JoinError::Codec(CodecError::with_source(
                "unreadable report from the child",
                e,
            ))),
            // The target called exit(0) itself: success, with a value only if
            // the return type needs none (`()`).
            None if code == 0 => crate::codec::decode(&[]).map(Some).map_err(|_| {
                failed(
                    Some("the child exited with code 0 before its target returned a value".into()),
                    None,
                )
            }),
            _ => Err(failed(None, None)),
        }
    }
}

/// A process is ready for [`wait`](crate::connection::wait) when it has
/// exited (its [`sentinel`](Process::sentinel)).
impl<R: DeserializeOwned> crate::sys::wait::Waitable for Process<R> {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.sentinel()
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        // Before `report` closes: the registry may watch it.
        registry::release(&self.shared);
        if self.shared.try_reap().is_none() {
            registry::orphan(self.shared.clone());
        }
    }
}

#[doc(hidden)]
/// Hooks for tests of hostile bootstrap input. Not part of the API.
#[cfg(feature = "test-hooks")]
pub mod __test {
    use super::*;
    use std::sync::Mutex;

    /// Kinds of damage done to a spawned child's bootstrap message.
    #[derive(Debug, Clone, Copy)]
    pub enum Damage {
        /// Only the first N bytes are sent.
        Truncate(usize),
        /// One payload byte is flipped.
        FlipByte(usize),
        /// The binary identity is changed (as if the binary were replaced).
        WrongBinary,
        /// The runner offset points outside any runner.
        BadTarget,
        /// The runner offset points inside the body of the target's runner
        /// function (code of this binary, but no descriptor).
        InsideFunction,
        /// The runner offset names a genuine descriptor of another kind (a
        /// barrier action's), not a process runner's.
        WrongKind,
        /// Random bytes instead of a message.
        Garbage,
    }

    fn nothing() {}

    /// A genuine descriptor of another kind (a barrier action's).
    const ACTION: &FnDesc<fn()> = &FnDesc::new(nothing);

    /// Starts `nothing` by spawn with a damaged bootstrap message.
    pub fn spawn_damaged(damage: Damage) -> Result<Process<()>> {
        static DAMAGE: Mutex<Option<Damage>> = Mutex::new(None);
        *DAMAGE.lock().unwrap() = Some(damage);
        fn tamper(msg: &mut bootstrap::BootMsg, wire: &mut Vec<u8>) {
            let d = DAMAGE.lock().unwrap().take();
            match d {
                Some(Damage::WrongBinary) => {
                    msg.binary = {
                        let mut b = msg.binary;
                        b.scramble();
                        b
                    }
                }
                Some(Damage::BadTarget) => {
                    msg.runner_offset = msg.runner_offset.wrapping_add(1 << 40)
                }
                Some(Damage::InsideFunction) => {
                    let code = runner_of(nothing).get() as usize;
                    msg.runner_offset = fnref::offset_of(code + 16);
                }
                Some(Damage::WrongKind) => msg.runner_offset = fnref::name(ACTION),
                _ => {}
            }
            *wire = bootstrap::encode_boot(msg).unwrap();
            match d {
                Some(Damage::Truncate(n)) => wire.truncate(n),
                Some(Damage::FlipByte(i)) => {
                    let i = 12 + i % (wire.len() - 20);
                    wire[i] ^= 0x5a;
                }
                Some(Damage::Garbage) => {
                    for (i, b) in wire.iter_mut().enumerate() {
                        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
                    }
                }
                _ => {}
            }
        }
        Builder::new()
            .start_method(StartMethod::Spawn)
            .start_runner::<(), ()>(runner_of(nothing), &(), Some(tamper))
    }

    /// A genuine bootstrap message (as a parent sends it) that starts
    /// `nothing`, for tests of the channel it arrives on.
    pub fn boot_message() -> Result<Vec<u8>> {
        bootstrap::encode_boot(&bootstrap::BootMsg {
            binary: fnref::BinaryId::current()?,
            runner_offset: fnref::name(runner_of(nothing)),
            identity: ChildIdentity {
                name: "Process-crafted".into(),
                daemon: false,
                parent_pid: std::process::id() as i32,
                parent_token: 0,
                parent_name: "MainProcess".into(),
                path: vec![1],
            },
            nfds: 0,
            keep: Vec::new(),
            close_others: false,
            args: Vec::new(),
        })
    }

    /// The pid of this process's fork server, if one is running.
    pub fn forkserver_pid() -> Option<i32> {
        forkserver::server_pid()
    }

    /// Sends a hand-made request (these bytes, `nfds` descriptors) to this
    /// process's fork server; `Ok(true)` if it forked a child for it.
    pub fn forkserver_raw_request(bytes: &[u8], nfds: usize) -> Result<bool> {
        forkserver::raw_request(bytes, nfds)
    }

    /// A well-formed fork server request header for `nfds` descriptors.
    pub fn forkserver_header(nfds: u32) -> Vec<u8> {
        forkserver::header(nfds)
    }

    /// Sets how long a spawned child may leave its start message unread
    /// before `start` gives up (default 30 s).
    pub fn set_boot_stall(limit: Duration) {
        spawn::set_boot_stall(limit)
    }

    /// Makes spawned children close the descriptors they do not keep
    /// themselves after `exec` (the path taken with a libc whose
    /// `posix_spawn` cannot close them), or not (the default).
    pub fn spawn_child_closes(on: bool) {
        spawn::set_child_closes(on)
    }

    /// Whether this process parks its children's report sockets in an
    /// `io_uring` (so that a live child costs it no descriptor), or keeps
    /// them in its descriptor table (no `io_uring`, or the environment
    /// variable `MULTIPROC_NO_IO_URING` set).
    pub fn parks_report_sockets() -> bool {
        registry::parks_report_sockets()
    }

    fn runner_of<F, A, R>(f: F) -> &'static FnDesc<Runner>
    where
        F: TaskFn<A, R>,
        A: Args,
        R: Serialize,
    {
        fnref::check_target(f);
        RunnerOf::<F, A, R>::DESC
    }
}

/// The number of CPUs this process may run on (its affinity mask), as
/// `os.process_cpu_count()`; at least 1.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
