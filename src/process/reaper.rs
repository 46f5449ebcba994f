//! The reaper thread: a child whose [`Process`](super::Process) handle is
//! dropped while it runs is reaped as soon as it ends, through its pidfd,
//! so no zombie lingers even if the program never starts another process
//! (CPython leaves it until the next `start` or `active_children()`).

use super::child::ChildShared;
use super::registry;
use std::sync::{Arc, Mutex};

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
        registry::reap_finished();
    }
}
