//! Every child this process started and has not reaped yet.
//!
//! A child's exit status is shared between its [`Process`](super::Process)
//! handle and this registry: whichever reaps it first stores the status, so a
//! handle dropped without `join` is still reaped (by the next `start`, by
//! [`active_children`](super::active_children), or at exit) and no zombie is
//! left behind, while a handle that outlives the reaping still sees the status.
//!
//! Finding the finished children costs the same with 10 or 10,000 living
//! ones: one descriptor per child sits in one `epoll` set, and a `start`
//! asks it (one `epoll_wait` with a zero timeout) which children have ended,
//! instead of calling `waitpid` on each (which is what CPython does).
//!
//! # One descriptor per living child
//!
//! Every descriptor this process holds is copied into each forked child and
//! closed there again, so each one held per living child makes every fork
//! start slower (some 75 ns per descriptor, the copy at the fork and the
//! close in the child together, on the machine the benchmarks run on). While a
//! fork or spawn child runs and its [`Process`](super::Process) handle
//! lives, the only descriptor this process holds for it is the parent's end
//! of its report socket: the epoll set watches it for the hang-up the
//! child's exit causes. The pidfd is opened only when something needs it
//! (the [`sentinel`](super::Process::sentinel), a `join`, a dropped handle,
//! or a child whose report socket closed before it could be reaped). A
//! forkserver child keeps its pidfd and status socket from the start.
//!
//! Where the process can have an `io_uring`, even that descriptor leaves the
//! table once more than a few children live: the report socket is parked in
//! the ring's fixed-file table (which a fork does not copy) and watched
//! there, until the handle first reads it (see [`register`]). Each `start`
//! then also drains the ring's completions, which costs no system call.
#![allow(unsafe_code)]

use super::child::ChildShared;
use crate::sys::uring::{self, Ring};
use rustix::event::epoll;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock};

/// The unreaped children of this process, and the epoll set that watches them.
pub(crate) struct Registry {
    children: BTreeMap<i32, Entry>,
    /// Children without a watched descriptor (old kernels): polled with
    /// `waitpid` instead.
    unwatched: Vec<i32>,
    /// The epoll set and the pid of the process that created it (a forked
    /// child inherits the descriptor, which still names the parent's set).
    epoll: Option<(OwnedFd, u32)>,
    /// The ring whose fixed-file table holds the parked report sockets
    /// (see [`park`]), with the pid of the process that created it; `None`
    /// inside when this process cannot have one.
    ring: Option<(Option<Ring>, u32)>,
}

/// One child, and which of its descriptors the epoll set watches.
struct Entry {
    child: Arc<ChildShared>,
    /// The parent's end of the child's report socket, owned by the child's
    /// [`Process`](super::Process) handle, watched for the hang-up while the
    /// handle lives: the handle calls [`release`] before it closes it.
    report: Option<RawFd>,
    /// Whether the child's [`watch_fd`](ChildShared::watch_fd) is in the set.
    exit_watched: bool,
    /// The ring slot holding the parked report socket (see [`register`])
    /// while the ring watches it for the hang-up. The slot belongs to the
    /// handle's [`ReportFd`], which frees it.
    parked: Option<u32>,
}

/// Marks an epoll event as coming from a report socket (the low 32 bits
/// hold the pid).
const FROM_REPORT: u64 = 1 << 32;

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    children: BTreeMap::new(),
    unwatched: Vec::new(),
    epoll: None,
    ring: None,
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held across `fork` so that the child gets the registry in a consistent,
/// unlocked state; see [`super::fork`].
pub(crate) fn lock_for_fork() -> MutexGuard<'static, Registry> {
    registry()
}

impl Registry {
    /// In a freshly forked child: forget the parent's children without
    /// freeing anything (no allocator call after `fork`) and close this
    /// copy of the parent's epoll descriptor.
    pub(crate) fn clear(&mut self) {
        std::mem::forget(std::mem::take(&mut self.children));
        std::mem::forget(std::mem::take(&mut self.unwatched));
        if let Some((fd, _)) = self.epoll.take() {
            drop(fd);
        }
        if let Some((Some(ring), _)) = self.ring.take() {
            ring.forget();
        }
    }

    /// This process's ring, created on first use; `None` when it cannot
    /// have one.
    fn ring(&mut self) -> Option<&mut Ring> {
        let me = std::process::id();
        if self.ring.as_ref().is_some_and(|(_, owner)| *owner != me) {
            // A forked child's copy of the parent's: never touched.
            if let Some((Some(ring), _)) = self.ring.take() {
                ring.forget();
            }
        }
        if self.ring.is_none() {
            let ring = ready_fd().and_then(|_| Ring::new());
            self.ring = Some((ring, me));
        }
        self.ring.as_mut().and_then(|(r, _)| r.as_mut())
    }

    /// This process's ring if it has one already (never creates it).
    fn ring_if_any(&mut self) -> Option<&mut Ring> {
        let me = std::process::id();
        match &mut self.ring {
            Some((Some(ring), owner)) if *owner == me => Some(ring),
            _ => None,
        }
    }

    /// This process's epoll set, created on first use.
    fn epoll(&mut self) -> Option<&OwnedFd> {
        let me = std::process::id();
        if self.epoll.as_ref().is_some_and(|(_, owner)| *owner != me) {
            self.epoll = None;
        }
        if self.epoll.is_none() {
            self.epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
                .ok()
                .map(|fd| (fd, me));
        }
        self.epoll.as_ref().map(|(fd, _)| fd)
    }

    /// Registers `child`, watched through `report` (see [`Entry::report`])
    /// if given, else through its [`watch_fd`](ChildShared::watch_fd).
    fn insert(&mut self, child: Arc<ChildShared>, report: Option<BorrowedFd<'_>>) {
        let pid = child.pid;
        self.children.insert(
            pid,
            Entry {
                child,
                report: None,
                exit_watched: false,
                parked: None,
            },
        );
        match report {
            Some(fd) => self.watch_report(pid, fd),
            None => self.watch_exit(pid),
        }
    }

    /// Watches the child's report socket `fd` (see [`Entry::report`]) in the
    /// epoll set, or its exit if that fails.
    fn watch_report(&mut self, pid: i32, fd: BorrowedFd<'_>) {
        // Only the hang-up (always reported) and RDHUP: the report's bytes
        // are the handle's business and must not wake every `start`.
        let added = self.epoll().is_some_and(|ep| {
            epoll::add(
                ep,
                fd,
                epoll::EventData::new_u64(pid as u32 as u64 | FROM_REPORT),
                epoll::EventFlags::RDHUP,
            )
            .is_ok()
        });
        match self.children.get_mut(&pid) {
            Some(e) if added => e.report = Some(fd.as_raw_fd()),
            Some(_) => self.watch_exit(pid),
            None => {}
        }
    }

    /// Gives back the report socket of child `pid` parked in `slot` as an
    /// ordinary descriptor, watched in the epoll set from now on if the ring
    /// watched it (see [`register`]).
    fn unpark(&mut self, pid: i32, slot: u32) -> std::io::Result<OwnedFd> {
        let Some(ring) = self.ring_if_any() else {
            return Err(std::io::Error::other(
                "the child's report socket is not held any more",
            ));
        };
        let mut fired = Vec::new();
        let fd = ring.unpark(slot, pid as u32, &mut fired);
        if let Ok(fd) = &fd {
            let watched = self.children.get_mut(&pid).is_some_and(|e| {
                let was = e.parked == Some(slot);
                if was {
                    e.parked = None;
                }
                was
            });
            if watched {
                self.watch_report(pid, fd.as_fd());
            }
        }
        self.on_ring_events(&fired);
        fd
    }

    /// Watches the child's [`watch_fd`](ChildShared::watch_fd) (opening its
    /// pidfd if needed), or polls it with `waitpid` if it has none.
    fn watch_exit(&mut self, pid: i32) {
        let Some(child) = self.children.get(&pid).map(|e| e.child.clone()) else {
            return;
        };
        let watched = match (child.watch_fd(), self.epoll()) {
            (Some(fd), Some(ep)) => epoll::add(
                ep,
                fd,
                epoll::EventData::new_u64(pid as u32 as u64),
                epoll::EventFlags::IN,
            )
            .is_ok(),
            _ => false,
        };
        match self.children.get_mut(&pid) {
            Some(e) if watched => e.exit_watched = true,
            _ => self.unwatched.push(pid),
        }
    }

    /// Stops watching the child's report socket (before its handle closes it).
    fn unwatch_report(&mut self, pid: i32) {
        let Some(fd) = self.children.get_mut(&pid).and_then(|e| e.report.take()) else {
            return;
        };
        if let Some((ep, _)) = &self.epoll {
            // SAFETY: a report descriptor stays in its entry only while the
            // handle owning it lives (the handle's drop calls `release`, which
            // takes it out under the registry lock held here, before closing it).
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = epoll::delete(ep, fd);
        }
    }

    /// Handles the ring's watches that ended: the child's report socket
    /// hung up, so it has ended or is about to; or the kernel cancelled the
    /// watch, and the child's pidfd takes over.
    fn on_ring_events(&mut self, events: &[uring::Event]) {
        for ev in events {
            let pid = ev.key as i32;
            let Some(e) = self.children.get_mut(&pid) else {
                continue;
            };
            if e.parked != Some(ev.slot) {
                continue;
            }
            e.parked = None;
            if e.child.try_reap().is_some() {
                self.remove(pid);
            } else {
                // Hung up a moment before the child became reapable (or the
                // child closed it and runs on, or the watch was cancelled):
                // its pidfd tells the rest.
                self.watch_exit(pid);
            }
        }
    }

    fn remove(&mut self, pid: i32) {
        self.unwatch_report(pid);
        if let Some(e) = self.children.remove(&pid) {
            if let (true, Some(fd), Some((ep, _))) =
                (e.exit_watched, e.child.watch_fd(), &self.epoll)
            {
                let _ = epoll::delete(ep, fd);
            }
        }
    }

    /// Reaps the children that have ended: those whose report socket hung up
    /// or whose pidfd the epoll set reports readable, plus any without a
    /// watched descriptor. Costs one `epoll_wait` and work in proportion to
    /// the number of finished children.
    fn reap_finished(&mut self) {
        const BATCH: usize = 64;
        let mut events: Vec<epoll::Event> = Vec::with_capacity(BATCH);
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let me = std::process::id();
        if let Some(ring) = self.ring_if_any() {
            let mut fired = Vec::new();
            ring.drain(&mut fired);
            self.on_ring_events(&fired);
        }
        // Ended children stay readable until removed (or moved from their
        // report socket to their pidfd), so a full batch means there may be
        // more: ask again once these are handled (a batch in which nothing
        // changed ends the loop).
        while let Some((ep, _)) = self.epoll.as_ref().filter(|(_, owner)| *owner == me) {
            events.clear();
            if epoll::wait(ep, rustix::buffer::spare_capacity(&mut events), Some(&zero)).is_err() {
                break;
            }
            let mut changed = false;
            for data in events.iter().map(|e| e.data.u64()) {
                let pid = data as u32 as i32;
                let Some(e) = self.children.get(&pid) else {
                    continue;
                };
                if e.child.try_reap().is_some() {
                    self.remove(pid);
                    changed = true;
                } else if data & FROM_REPORT != 0 && e.report.is_some() {
                    // The report socket hung up a moment before the child
                    // became reapable (or the child closed it and runs on):
                    // its pidfd tells the rest.
                    self.unwatch_report(pid);
                    self.watch_exit(pid);
                    changed = true;
                }
            }
            if events.len() < BATCH || !changed {
                break;
            }
        }
        let children = &self.children;
        let mut finished = Vec::new();
        self.unwatched.retain(|pid| match children.get(pid) {
            Some(e) if e.child.try_reap().is_none() => true,
            _ => {
                finished.push(*pid);
                false
            }
        });
        for pid in finished {
            self.remove(pid);
        }
    }
}

/// Registers a child; `report` is the parent's end of its report socket,
/// owned by the child's handle, which must call [`release`] before closing
/// it (`None` for a forkserver child, watched through its status socket).
///
/// # Parked report sockets
///
/// Where this process can have an `io_uring` (see [`crate::sys::uring`]),
/// and once [`PARK_AFTER`] children are registered, a watched report socket
/// is *parked*: moved out of the descriptor table
/// into the ring's table of fixed files, where the ring watches it for the
/// hang-up and a fork does not copy it. It comes back as an ordinary
/// descriptor the first time the handle needs it ([`ReportFd::get`]), and
/// is watched in the epoll set from then on.
pub(crate) fn register(child: Arc<ChildShared>, report: OwnedFd, watch: bool) -> ReportFd {
    let pid = child.pid;
    let mut reg = register_locked();
    if !watch {
        reg.insert(child, None);
        return ReportFd::held(report);
    }
    // While few children live, their descriptors cost a fork little, and
    // parking one (a few system calls at the start, more to take it out at
    // `join`) would cost more than it saves.
    let ring = if reg.children.len() >= PARK_AFTER {
        reg.ring()
    } else {
        None
    };
    let parked = match ring {
        Some(ring) => ring.park(report, pid as u32),
        None => Err(report),
    };
    let report = match parked {
        Ok(slot) => {
            reg.children.insert(
                pid,
                Entry {
                    child,
                    report: None,
                    exit_watched: false,
                    parked: Some(slot),
                },
            );
            return ReportFd {
                fd: OnceLock::new(),
                parked: Some((slot, pid)),
            };
        }
        Err(fd) => fd,
    };
    reg.insert(child, Some(report.as_fd()));
    ReportFd::held(report)
}

/// How many children must be registered before the next one's report
/// socket is parked (see [`register`]).
const PARK_AFTER: usize = 16;

/// The parent's end of a child's report socket, as the child's handle holds
/// it: in the descriptor table, or parked in the registry's ring until first
/// needed (see [`register`]).
#[derive(Debug)]
pub(crate) struct ReportFd {
    /// The descriptor, once in the table.
    fd: OnceLock<OwnedFd>,
    /// The ring slot holding it until then, and the child's pid (the key of
    /// its watch). Freed when `fd` is set or this is dropped.
    parked: Option<(u32, i32)>,
}

impl ReportFd {
    fn held(fd: OwnedFd) -> ReportFd {
        ReportFd {
            fd: OnceLock::from(fd),
            parked: None,
        }
    }

    /// The descriptor, taken out of the ring if it is parked there.
    pub(crate) fn get(&self) -> std::io::Result<BorrowedFd<'_>> {
        if let Some(fd) = self.fd.get() {
            return Ok(fd.as_fd());
        }
        let Some((slot, pid)) = self.parked else {
            return Err(std::io::Error::other("no report socket"));
        };
        // Under the registry lock, so that two threads cannot both take it
        // out: the second finds it set.
        let mut reg = registry();
        if let Some(fd) = self.fd.get() {
            return Ok(fd.as_fd());
        }
        let fd = reg.unpark(pid, slot)?;
        let fd = self.fd.get_or_init(|| fd);
        drop(reg);
        Ok(fd.as_fd())
    }
}

impl Drop for ReportFd {
    fn drop(&mut self) {
        if let (Some((slot, pid)), None) = (self.parked, self.fd.get()) {
            let mut reg = registry();
            if let Some(e) = reg.children.get_mut(&pid) {
                if e.parked == Some(slot) {
                    e.parked = None;
                }
            }
            // A forked child's copy (never dropped in practice) finds no ring.
            if let Some(ring) = reg.ring_if_any() {
                ring.discard(slot, pid as u32);
            }
        }
    }
}

/// A descriptor that is always readable: what a handle offers as its
/// sentinel in the unlikely case that it has neither a pidfd nor its report
/// socket (taken out of the ring while the descriptor table was full), so
/// that a waiter wakes and finds the error at `join`. Exists before any
/// report socket is parked.
pub(crate) fn ready_fd() -> Option<BorrowedFd<'static>> {
    static READY: OnceLock<Option<OwnedFd>> = OnceLock::new();
    READY
        .get_or_init(|| rustix::event::eventfd(1, rustix::event::EventfdFlags::CLOEXEC).ok())
        .as_ref()
        .map(|fd| fd.as_fd())
}

/// Whether report sockets are parked in a ring (see [`register`]).
#[cfg(feature = "test-hooks")]
pub(crate) fn parks_report_sockets() -> bool {
    registry().ring().is_some()
}

/// Takes the registry lock, installing the at-exit hook on the first call.
fn register_locked() -> MutexGuard<'static, Registry> {
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        extern "C" fn hook() {
            at_exit();
        }
        // SAFETY: registering a plain `extern "C" fn` with libc.
        unsafe { libc::atexit(hook) };
    });
    registry()
}

/// Called by a child's handle before it closes its end of the report
/// socket: the registry stops watching that socket, and watches the child's
/// pidfd instead; a child the handle has reaped is forgotten at once (with
/// its descriptors), whatever watched it.
pub(crate) fn release(child: &Arc<ChildShared>) {
    let mut reg = registry();
    let pid = child.pid;
    let had_report = match reg.children.get(&pid) {
        Some(e) if Arc::ptr_eq(&e.child, child) => e.report.is_some() || e.parked.is_some(),
        _ => return,
    };
    reg.unwatch_report(pid);
    if let Some(e) = reg.children.get_mut(&pid) {
        // The handle's `ReportFd`, dropped next, frees the slot.
        e.parked = None;
    }
    if child.is_reaped() {
        reg.remove(pid);
    } else if had_report {
        reg.watch_exit(pid);
    }
}

/// Reaps every finished child (cost in proportion to the finished ones).
pub(crate) fn reap_finished() {
    registry().reap_finished();
}

/// Reaps every finished child; returns the living ones.
pub(crate) fn reap_all() -> Vec<Arc<ChildShared>> {
    let mut reg = registry();
    reg.reap_finished();
    // Every child is asked (the list costs as much anyway): one its handle
    // has reaped is gone even while its watched descriptor is not readable
    // yet (a forkserver child's status socket reaches end-of-file only when
    // the server closes its end, just after sending the status the handle
    // has already read), and one whose report socket a grandchild keeps open
    // has ended without a hang-up.
    let reaped: Vec<i32> = reg
        .children
        .iter()
        .filter(|(_, e)| e.child.try_reap().is_some())
        .map(|(&pid, _)| pid)
        .collect();
    for pid in reaped {
        reg.remove(pid);
    }
    reg.children.values().map(|e| e.child.clone()).collect()
}

/// Python's exit behaviour: terminate daemon children, then join them and all
/// the others. Runs at a normal exit of any process that started children.
pub(crate) fn at_exit() {
    // try_lock: if another thread holds the registry while the process exits,
    // skip rather than deadlock.
    let children: Vec<Arc<ChildShared>> = match REGISTRY.try_lock() {
        Ok(mut g) => std::mem::take(&mut g.children)
            .into_values()
            .map(|e| e.child)
            .collect(),
        Err(std::sync::TryLockError::Poisoned(p)) => std::mem::take(&mut p.into_inner().children)
            .into_values()
            .map(|e| e.child)
            .collect(),
        Err(_) => return,
    };
    for c in children.iter().filter(|c| c.daemon) {
        let _ = c.signal(libc::SIGTERM);
    }
    for c in &children {
        c.reap_blocking();
    }
}
