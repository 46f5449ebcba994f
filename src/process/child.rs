//! What a child's [`Process`](super::Process) handle and the registry
//! share about it: its pid, its pidfd (opened on first need), and its exit
//! status, stored by whichever reaps it first.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

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
            match super::forkserver::wire::recv_status(sock.as_fd(), flags) {
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
