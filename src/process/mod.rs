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
mod builder;
mod child;
pub(crate) mod fnref;
mod fork;
mod forkserver;
mod helper;
mod method;
mod panics;
mod reaper;
mod registry;
mod spawn;
mod target;

pub(crate) use bootstrap::init;
pub use forkserver::{set_forkserver_preload, Preload};
pub use method::{get_all_start_methods, get_start_method, set_start_method, StartMethod};
pub(crate) use panics::{capture_panics_per_thread, take_thread_panic};
pub use target::TaskFn;

use crate::error::{BootstrapError, CodecError, Error, ProcessFailure, Result};
use crate::handoff::{Args, Exporter, Importer};
use bootstrap::{Report, Runner};
pub use builder::{Builder, Stdin};
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

/// What every start method hands a new child: who it is, its stdin, the
/// exported arguments with the descriptors they carry, and the descriptors
/// opted in with [`Builder::pass_fd`].
pub(crate) struct Launch<'a> {
    pub(crate) identity: ChildIdentity,
    pub(crate) stdin: Stdin,
    pub(crate) args: &'a [u8],
    pub(crate) fds: &'a [BorrowedFd<'a>],
    pub(crate) pass_fds: &'a [RawFd],
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
            reaper::orphan(self.shared.clone());
        }
    }
}

#[doc(hidden)]
/// Hooks for tests of hostile bootstrap input. Not part of the API.
#[cfg(feature = "test-hooks")]
#[path = "test_hooks.rs"]
pub mod __test;

/// The number of CPUs this process may run on (its affinity mask), as
/// `os.process_cpu_count()`; at least 1.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
