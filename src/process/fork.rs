//! The *fork* launcher: the child is a copy of the parent and runs the target
//! at once, after rebuilding its arguments through the handoff mechanism
//! (fresh handles from the inherited descriptors, so no in-process state of
//! the parent's handles — threads, buffers, locks — is relied on).
//!
//! A forked child keeps only what it was given: standard input, output and
//! error, the handed-off descriptors, its report socket, the resource
//! tracker's pipe (shared with fork children on purpose, as in CPython) and
//! the descriptors the caller opted in with
//! [`Builder::pass_fd`](super::Builder::pass_fd). Every other descriptor of
//! the parent is closed before the target runs, so an unrelated connection's
//! end-of-file is not delayed while a forked child lives (CPython's forked
//! children keep them all).
#![allow(unsafe_code)]

use super::bootstrap::{self, Runner};
use super::{registry, Launch, Stdin, CURRENT};
use crate::error::Result;
use crate::handoff::Importer;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Starts a forked child. Returns its pid and the parent's end of the report socket.
pub(crate) fn launch(
    launch: Launch<'_>,
    flush_stdout: bool,
    runner: Runner,
) -> Result<(i32, OwnedFd)> {
    let Launch {
        identity,
        stdin,
        args,
        fds,
        pass_fds,
    } = launch;
    let (parent_end, child_end) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let devnull = match stdin {
        Stdin::Null => Some(rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?),
        Stdin::Inherit => None,
    };
    warn_if_multithreaded();
    let daemon = identity.daemon;
    // SAFETY: plain syscall.
    let parent_pid = unsafe { libc::getpid() };
    // Everything the child needs is prepared here: between fork and the
    // target the child takes no lock (another thread of the parent may have
    // held it at the fork) and allocates only through the malloc of libc,
    // which is fork-safe.
    let identity = Box::into_raw(Box::new(identity));
    let args = args.to_vec();
    let mut dups: Vec<OwnedFd> = Vec::with_capacity(fds.len());
    // The descriptors the child keeps, filled in the child without growing
    // (room for stdio, the report socket and every duplicate is made here).
    let mut keep: Vec<RawFd> = Vec::with_capacity(pass_fds.len() + fds.len() + 5);
    keep.extend_from_slice(pass_fds);
    keep.extend(crate::resource_tracker::inherited_fd());
    let prep = bootstrap::ForkPrep::new(flush_stdout);
    // Hold the registry lock across fork: the child then gets it unlocked
    // (it drops its copy of the guard) and empties it.
    let mut guard = registry::lock_for_fork();
    let pid = match fork() {
        Ok(pid) => pid,
        Err(e) => {
            drop(guard);
            prep.parent();
            // SAFETY: `identity` came from `Box::into_raw` above and, with no
            // child made, nothing else refers to it.
            drop(unsafe { Box::from_raw(identity) });
            return Err(e);
        }
    };
    if pid == 0 {
        // In the child. Only this thread exists now.
        prep.child();
        guard.clear();
        drop(guard);
        drop(parent_end);
        // Inherited descriptors go to fresh numbers from 3 up first, so that
        // putting /dev/null on descriptor 0 cannot overwrite one of them (a
        // resource, or the report socket, may sit at 0, 1 or 2).
        let mut failed = None;
        for f in fds {
            match rustix::io::fcntl_dupfd_cloexec(f, 3) {
                Ok(d) => dups.push(d),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let report = if child_end.as_raw_fd() < 3 {
            rustix::io::fcntl_dupfd_cloexec(&child_end, 3).unwrap_or(child_end)
        } else {
            child_end
        };
        if let Some(null) = devnull {
            // SAFETY: dup2 onto descriptor 0, which this process owns; every
            // descriptor we still use was moved above 2 first.
            unsafe { libc::dup2(null.as_raw_fd(), 0) };
        }
        keep.extend([0, 1, 2, report.as_raw_fd()]);
        keep.extend(dups.iter().map(|d| d.as_raw_fd()));
        crate::sys::fds::close_all_but(&mut keep);
        if daemon {
            crate::sys::liveness::set_parent_death_signal(parent_pid);
        }
        CURRENT.set_child_raw(identity);
        crate::util::run_after_fork_hooks();
        if let Some(e) = failed {
            let _ = bootstrap::write_report(
                std::os::fd::AsFd::as_fd(&report),
                &bootstrap::Report::BootstrapFailed(format!(
                    "cannot duplicate inherited descriptors: {e}"
                )),
            );
            bootstrap::exit_child(1)
        }
        bootstrap::run_child(report, runner, Importer::new(args, dups))
    }
    drop(guard);
    prep.parent();
    // SAFETY: `identity` came from `Box::into_raw` above; the parent never
    // published it (the child uses its own copy of the heap).
    drop(unsafe { Box::from_raw(identity) });
    drop(child_end);
    Ok((pid, parent_end))
}

/// Logs once (through the `log` facade) that this process forks while other
/// threads run, as CPython 3.12 warns: a lock another thread holds at the
/// fork stays locked forever in the child.
fn warn_if_multithreaded() {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if WARNED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let threads = crate::sys::thread_count();
    if threads > 1 && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log::warn!(
            "this process is multi-threaded ({threads} threads): use of fork() may lead to \
             deadlocks in the child; the spawn start method is safe here"
        );
    }
}

/// `fork()`. Returns 0 in the child, the child's pid in the parent.
fn fork() -> Result<i32> {
    // SAFETY: the child only runs code that tolerates a forked copy of a
    // possibly multithreaded parent as far as this crate controls it: the
    // registry and stdout locks are held by this thread across the call, the
    // rest is prepared before it and read lock-free (see `launch`), and
    // glibc's malloc has its own fork handlers. Locks held by *other* threads
    // at this moment stay locked in the child: that is why `Spawn` is the
    // default start method, as documented on `StartMethod::Fork`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(pid)
}
