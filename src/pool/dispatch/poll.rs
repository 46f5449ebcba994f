//! Polling: who reads the workers' sockets and watches their sentinels,
//! and how a waiting thread, a future or the supervisor drives the pool
//! (see the [parent module](super) for the poller role).

use super::{lock, Shared};

use crate::error::Result;
use crate::process::ChildShared;
use rustix::event::{PollFd, PollFlags};
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// While spinning, the poller polls on one pass in this many (the others
/// only read the sockets and yield): a `poll` per pass made the spin slower
/// to see an answer, and a worker's death (its sentinel) or a kick is still
/// seen within some tens of microseconds.
const POLL_EVERY: u32 = 16;

/// Polls a worker's sentinel (the process handle's pidfd): readable once it
/// has ended. Workers without one are refused at start; for the record,
/// one would poll `quiet` (an eventfd) for nothing, which never reports.
fn sentinel<'a>(child: &'a ChildShared, quiet: &'a OwnedFd) -> PollFd<'a> {
    match child.watch_fd() {
        Some(fd) => PollFd::from_borrowed_fd(fd, PollFlags::IN),
        None => PollFd::new(quiet, PollFlags::empty()),
    }
}

impl Shared {
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

    /// Drives the pool (the caller holds the role) until `stop()` or the
    /// deadline; the supervisor also stops when a waiter wants the role.
    pub(super) fn drive(
        &self,
        stop: &dyn Fn() -> bool,
        deadline: Option<Instant>,
        bg: bool,
    ) -> Result<()> {
        let mut dead: Vec<i32> = Vec::new();
        let mut spin_until = Instant::now() + self.config.spin;
        // While spinning, most passes read the sockets only; every
        // `POLL_EVERY`th also polls (sentinels, the kick, room to write).
        let (mut spinning, mut light_passes) = (false, 0u32);
        loop {
            let light = spinning && light_passes < POLL_EVERY;
            let mut done = Vec::new();
            let eta: Option<Duration>;
            let fds = {
                let mut core = lock(&self.core);
                let r = self.service(&mut core, &dead, &mut done);
                let now = Instant::now();
                eta = core.workers.iter().filter_map(|w| w.eta(now)).min();
                let fds: Vec<(Arc<OwnedFd>, Arc<ChildShared>, bool, i32)> = core
                    .workers
                    .iter()
                    .filter(|_| !light)
                    .map(|w| {
                        (
                            w.sock.clone(),
                            w.child.clone(),
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
            dead.clear();
            spinning = now < spin_until;
            if light {
                light_passes += 1;
                if spinning {
                    crate::sys::spin_pause();
                }
                continue;
            }
            light_passes = 0;
            let mut pfds: Vec<PollFd<'_>> = Vec::with_capacity(fds.len() * 2 + 1);
            for (sock, child, out, _) in &fds {
                let mut ev = PollFlags::IN;
                if *out {
                    ev |= PollFlags::OUT;
                }
                pfds.push(PollFd::new(&**sock, ev));
                pfds.push(sentinel(child, &self.kick));
            }
            pfds.push(PollFd::new(&self.kick, PollFlags::IN));
            let timeout = if spinning {
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
                crate::sys::spin_pause();
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
                // Pairs with `notify_done`'s: counted before `cond()` is
                // looked at again below.
                std::sync::atomic::fence(SeqCst);
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

    /// Sleeps until woken ([`wake_bg`](Self::wake_bg)), a worker exits, or
    /// `timeout` passes; returns the pids of workers that exited.
    pub(super) fn bg_sleep(&self, timeout: Option<Duration>) -> Vec<i32> {
        let watched: Vec<(Arc<ChildShared>, i32)> = lock(&self.core)
            .workers
            .iter()
            .map(|w| (w.child.clone(), w.pid))
            .collect();
        let mut pfds = Vec::with_capacity(watched.len() + 1);
        pfds.push(PollFd::new(&self.bg_kick, PollFlags::IN));
        for (child, _) in &watched {
            pfds.push(sentinel(child, &self.bg_kick));
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
}
