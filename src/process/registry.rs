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
#![allow(unsafe_code)]

use rustix::event::epoll;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock};

/// What the handle and the registry share about one child.
#[derive(Debug)]
pub(crate) struct ChildShared {
    pub(crate) pid: i32,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    /// The child's pidfd (the handle's sentinel, the registry's epoll entry
    /// once the report socket is gone, the reaper's watch), when the kernel
    /// has them: opened on first use, while the child is unreaped (see
    /// [`pidfd`](Self::pidfd)); given at once for a forkserver child.
    pidfd: OnceLock<Option<OwnedFd>>,
    /// A forkserver child's status socket: the fork server writes the raw
    /// wait status there when it reaps the child (which is the server's
    /// child, not ours); end-of-file without a status means the server died.
    status_sock: Option<OwnedFd>,
    status: Mutex<Option<i32>>,
}

/// Python's exitcode for a raw wait status.
pub(crate) fn exitcode_of(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        255
    }
}

impl ChildShared {
    /// A fork or spawn child, our own (reaped with `waitpid`). Its pidfd is
    /// opened on first use.
    pub(crate) fn new(pid: i32, name: String, daemon: bool) -> Arc<ChildShared> {
        Arc::new(ChildShared {
            pid,
            name,
            daemon,
            pidfd: OnceLock::new(),
            status_sock: None,
            status: Mutex::new(None),
        })
    }

    /// A child started by the fork server: signalled through `pidfd` (sent
    /// by the server, which opened it before the child could be reaped), and
    /// reaped by reading its wait status from `status_sock`.
    pub(crate) fn forkserver_child(
        pid: i32,
        name: String,
        daemon: bool,
        pidfd: Option<OwnedFd>,
        status_sock: OwnedFd,
    ) -> Arc<ChildShared> {
        Arc::new(ChildShared {
            pid,
            name,
            daemon,
            pidfd: OnceLock::from(pidfd),
            status_sock: Some(status_sock),
            status: Mutex::new(None),
        })
    }

    /// The descriptor that becomes readable when the child has ended and can
    /// be reaped: the status socket of a forkserver child, else the pidfd.
    pub(crate) fn watch_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.status_sock {
            Some(s) => Some(s.as_fd()),
            None => self.pidfd(),
        }
    }

    /// The child's pidfd, opened on the first call; `None` when the kernel
    /// has none, or when the child was reaped before any call (its pid may
    /// name another process by now, so it is not opened then).
    ///
    /// Takes the status lock: never call it while holding that lock.
    pub(crate) fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd
            .get_or_init(|| {
                // Opened under the status lock, before any reaping: the pid
                // still names this child (an unreaped child keeps its pid).
                let st = self.lock();
                if st.is_some() {
                    return None;
                }
                let pid = rustix::process::Pid::from_raw(self.pid)?;
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            })
            .as_ref()
            .map(|f| f.as_fd())
    }

    fn lock(&self) -> MutexGuard<'_, Option<i32>> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the child's status is known (it was reaped).
    pub(crate) fn is_reaped(&self) -> bool {
        self.lock().is_some()
    }

    /// The exitcode if the child has ended (reaping it if needed); never blocks.
    pub(crate) fn try_reap(&self) -> Option<i32> {
        self.reap(false)
    }

    /// Waits for the child to end and reaps it.
    pub(crate) fn reap_blocking(&self) -> i32 {
        self.reap(true).unwrap_or(255)
    }

    fn reap(&self, block: bool) -> Option<i32> {
        let mut st = self.lock();
        if let (None, Some(sock)) = (*st, &self.status_sock) {
            let flags = if block {
                rustix::net::RecvFlags::empty()
            } else {
                rustix::net::RecvFlags::DONTWAIT
            };
            match super::forkserver::recv_status(sock.as_fd(), flags) {
                Ok(Some(raw)) => *st = Some(exitcode_of(raw)),
                // The server died before reporting this child: its status is lost.
                Ok(None) => *st = Some(255),
                Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => *st = Some(255),
            }
            return *st;
        }
        if st.is_none() {
            let mut raw = 0;
            loop {
                let flags = if block { 0 } else { libc::WNOHANG };
                // SAFETY: plain syscall on a pid we started and have not reaped
                // (the status lock makes us the only reaper of this pid).
                let r = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
                if r == self.pid {
                    *st = Some(exitcode_of(raw));
                } else if r < 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                {
                    continue;
                } else if r < 0 {
                    // ECHILD: somebody else reaped it (e.g. SIGCHLD ignored);
                    // the status is lost.
                    *st = Some(255);
                }
                break;
            }
        }
        *st
    }

    /// Sends `sig` if the child has not been reaped (so its pid is still ours).
    pub(crate) fn signal(&self, sig: i32) -> std::io::Result<()> {
        let st = self.lock();
        if let (None, Some(_)) = (*st, &self.status_sock) {
            // Not our child: only its pidfd names it safely (the pid may be
            // reaped by the server and reused before its status reaches us).
            // A forkserver child's pidfd is set at creation, so `get` never
            // waits for the status lock held here.
            let Some(Some(pidfd)) = self.pidfd.get() else {
                return Ok(());
            };
            let sig = rustix::process::Signal::from_named_raw(sig)
                .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            return match rustix::process::pidfd_send_signal(pidfd, sig) {
                // Ended, not yet reported by the server: nothing to signal.
                Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        if st.is_none() {
            // SAFETY: plain syscall; the pid is unreaped, so it cannot have
            // been recycled for another process.
            if unsafe { libc::kill(self.pid, sig) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The unreaped children of this process, and the epoll set that watches them.
pub(crate) struct Registry {
    children: BTreeMap<i32, Entry>,
    /// Children without a watched descriptor (old kernels): polled with
    /// `waitpid` instead.
    unwatched: Vec<i32>,
    /// The epoll set and the pid of the process that created it (a forked
    /// child inherits the descriptor, which still names the parent's set).
    epoll: Option<(OwnedFd, u32)>,
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
}

/// Marks an epoll event as coming from a report socket (the low 32 bits
/// hold the pid).
const FROM_REPORT: u64 = 1 << 32;

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    children: BTreeMap::new(),
    unwatched: Vec::new(),
    epoll: None,
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
        // Only the hang-up (always reported) and RDHUP: the report's bytes
        // are the handle's business and must not wake every `start`.
        let report = report.filter(|fd| {
            self.epoll().is_some_and(|ep| {
                epoll::add(
                    ep,
                    fd,
                    epoll::EventData::new_u64(pid as u32 as u64 | FROM_REPORT),
                    epoll::EventFlags::RDHUP,
                )
                .is_ok()
            })
        });
        let watched_report = report.is_some();
        self.children.insert(
            pid,
            Entry {
                child,
                report: report.map(|fd| fd.as_raw_fd()),
                exit_watched: false,
            },
        );
        if !watched_report {
            self.watch_exit(pid);
        }
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
pub(crate) fn register(child: Arc<ChildShared>, report: Option<BorrowedFd<'_>>) {
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        extern "C" fn hook() {
            at_exit();
        }
        // SAFETY: registering a plain `extern "C" fn` with libc.
        unsafe { libc::atexit(hook) };
    });
    registry().insert(child, report);
}

/// Called by a child's handle before it closes its end of the report
/// socket: the registry stops watching that socket, and watches the child's
/// pidfd instead; a child the handle has reaped is forgotten at once (with
/// its descriptors), whatever watched it.
pub(crate) fn release(child: &Arc<ChildShared>) {
    let mut reg = registry();
    let pid = child.pid;
    let had_report = match reg.children.get(&pid) {
        Some(e) if Arc::ptr_eq(&e.child, child) => e.report.is_some(),
        _ => return,
    };
    reg.unwatch_report(pid);
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

/// Children whose handles were dropped while they ran, watched by the reaper
/// thread through their pidfds.
static ORPHANS: Mutex<Vec<Arc<ChildShared>>> = Mutex::new(Vec::new());
/// The write end of the reaper's wake-up pipe and the pid of the process
/// whose thread it is (a forked child inherits the memory but not the
/// thread, and must not use it).
static REAPER_WAKE: std::sync::OnceLock<Option<(std::os::fd::OwnedFd, u32)>> =
    std::sync::OnceLock::new();

/// Hands a running child whose handle is being dropped to the reaper thread,
/// which reaps it as soon as it ends: no zombie lingers even if this program
/// never starts another process. Without a pidfd the child is reaped by the
/// next `start`, `active_children()` or at exit instead.
pub(crate) fn orphan(child: Arc<ChildShared>) {
    if child.watch_fd().is_none() {
        return;
    }
    let wake = REAPER_WAKE.get_or_init(|| {
        let (r, w) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )
        .ok()?;
        // The thread owns the read end: it must not look it up in
        // `REAPER_WAKE`, which is still being initialised while it starts.
        let spawned = std::thread::Builder::new()
            .name("multiproc-reaper".into())
            .spawn(move || reaper_loop(r));
        spawned.ok().map(|_| (w, std::process::id()))
    });
    let Some((w, owner)) = wake else { return };
    if *owner != std::process::id() {
        return;
    }
    ORPHANS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(child);
    let _ = rustix::io::write(w, &[1]);
}

fn reaper_loop(wake_r: std::os::fd::OwnedFd) {
    use rustix::event::{PollFd, PollFlags};
    use std::os::fd::AsFd;
    let wake_r = &wake_r;
    loop {
        // Snapshot the orphans (the list can change while we sleep; these
        // references keep their descriptors open meanwhile, without a
        // duplicate per child, which every fork would copy).
        let watched: Vec<Arc<ChildShared>> =
            ORPHANS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut pfds: Vec<PollFd<'_>> = vec![PollFd::new(wake_r, PollFlags::IN)];
        pfds.extend(
            watched
                .iter()
                .filter_map(|c| c.watch_fd())
                .map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN)),
        );
        if let Err(e) = rustix::event::poll(&mut pfds, None) {
            if e != rustix::io::Errno::INTR {
                // Out of kernel memory or similar: try again soon rather
                // than leave orphans unreaped for the rest of the program.
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let mut buf = [0u8; 64];
        while matches!(rustix::io::read(wake_r.as_fd(), &mut buf), Ok(n) if n > 0) {}
        let mut orphans = ORPHANS.lock().unwrap_or_else(|e| e.into_inner());
        orphans.retain(|c| c.try_reap().is_none());
        drop(orphans);
        registry().reap_finished();
    }
}
