//! The fork server itself: a single-threaded process that forks one child per
//! request and reports each child's pid and exit status.
//!
//! It runs as the runner of a spawned child (so it starts as a fresh, single
//! threaded copy of the binary) and never starts a thread: every `fork` it
//! makes copies a process in which no lock can be held by another thread.
#![allow(unsafe_code)]

use super::wire::{self, Header, FLAG_DAEMON, FLAG_STDERR, FLAG_STDIN, FLAG_STDOUT};
use crate::error::Result;
use crate::handoff::Importer;
use crate::process::bootstrap;
use crate::process::fnref;
use rustix::event::epoll;
use rustix::net::RecvFlags;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

/// The epoll key of the control socket (children are keyed by pid).
const CONTROL: u64 = u64::MAX;

/// One running child: its pidfd (in the epoll set) and the status socket of
/// the client that asked for it.
struct Child {
    pidfd: OwnedFd,
    status: OwnedFd,
}

/// The server's runner: runs the preload functions once, then serves
/// requests until the control socket reaches end-of-file (every client end
/// is closed: the parent is gone).
pub(super) fn serve(im: &mut Importer) -> Result<Vec<u8>> {
    let preload: Vec<i64> = im.read()?;
    let control = im.read_fd()?;
    for name in preload {
        let f = fnref::resolve::<fn()>(name)?;
        f();
    }
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(
        &ep,
        &control,
        epoll::EventData::new_u64(CONTROL),
        epoll::EventFlags::IN,
    )?;
    let mut children: HashMap<i32, Child> = HashMap::new();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
    loop {
        events.clear();
        match epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        for key in events.iter().map(|e| e.data.u64()) {
            if key == CONTROL {
                if !handle_request(&control, &ep, &mut children) {
                    return crate::codec::encode(&());
                }
            } else {
                reap(key as i32, &ep, &mut children);
            }
        }
    }
}

/// Reaps `pid` if it has ended and sends its raw wait status to its client.
fn reap(pid: i32, ep: &OwnedFd, children: &mut HashMap<i32, Child>) {
    let mut raw = 0;
    // SAFETY: plain syscall on a child of this process.
    let r = unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) };
    if r != pid {
        return;
    }
    if let Some(c) = children.remove(&pid) {
        let _ = epoll::delete(ep, c.pidfd.as_fd());
        // A client that is gone (or closed its end) does not matter here.
        let _ = rustix::net::send(
            &c.status,
            &raw.to_le_bytes(),
            rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT,
        );
    }
}

/// Handles one message on the control socket. `false` when the server
/// should exit (end-of-file or an unrecoverable socket error).
fn handle_request(control: &OwnedFd, ep: &OwnedFd, children: &mut HashMap<i32, Child>) -> bool {
    let mut head = [0u8; wire::HEADER_LEN + 1];
    let got = match crate::sys::scm::recv_with_fds(control.as_fd(), &mut head, RecvFlags::DONTWAIT)
    {
        Ok(m) => m,
        Err(rustix::io::Errno::AGAIN) => return true,
        Err(_) => return false,
    };
    if got.bytes == 0 {
        return false;
    }
    let fds = got.fds;
    // Defense in depth: the socket pair is reachable only by descriptor
    // holders, and its peer must also be a process of our own user.
    let uid_ok = rustix::net::sockopt::socket_peercred(control)
        .is_ok_and(|c| c.uid == rustix::process::geteuid());
    let truncated = got.truncated;
    let header = match Header::parse(&head[..got.bytes]) {
        Some(h) if uid_ok && !truncated && h.nfds as usize == fds.len() => h,
        // A malformed request: drop what came with it (its status socket
        // then reads end-of-file) and go on serving.
        _ => return true,
    };
    let mut fds = fds.into_iter();
    let (Some(boot), Some(status)) = (fds.next(), fds.next()) else {
        return true;
    };
    let stdio: [Option<OwnedFd>; 3] = [
        (header.flags & FLAG_STDIN != 0)
            .then(|| fds.next())
            .flatten(),
        (header.flags & FLAG_STDOUT != 0)
            .then(|| fds.next())
            .flatten(),
        (header.flags & FLAG_STDERR != 0)
            .then(|| fds.next())
            .flatten(),
    ];
    let args: Vec<OwnedFd> = fds.collect();
    let me = rustix::process::getpid().as_raw_nonzero().get();
    // SAFETY: this process is single-threaded (it never starts a thread), so
    // the child is a complete copy in which no lock is held.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = std::io::Error::last_os_error().raw_os_error().unwrap_or(1);
        let _ = wire::send_pid(&status, -err, None);
        return true;
    }
    if pid == 0 {
        child(boot, stdio, args, header.flags & FLAG_DAEMON != 0, me)
    }
    let pidfd = rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    let _ = wire::send_pid(&status, pid, pidfd.as_ref().map(|p| p.as_fd()));
    match pidfd {
        Some(pidfd)
            if epoll::add(
                ep,
                &pidfd,
                epoll::EventData::new_u64(pid as u64),
                epoll::EventFlags::IN,
            )
            .is_ok() =>
        {
            children.insert(pid, Child { pidfd, status });
        }
        // Without a pidfd to watch, the child cannot be reaped on time: end
        // it (its client sees its death at once).
        _ => {
            // SAFETY: plain syscalls on our own, unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
    true
}

/// The forked child: keeps only its own descriptors, takes the requester's
/// stdio, and runs the same bootstrap as a spawned child. Never returns.
fn child(
    boot: OwnedFd,
    stdio: [Option<OwnedFd>; 3],
    args: Vec<OwnedFd>,
    daemon: bool,
    server: i32,
) -> ! {
    let mut keep: Vec<RawFd> = vec![0, 1, 2, boot.as_raw_fd()];
    keep.extend(stdio.iter().flatten().map(|f| f.as_raw_fd()));
    keep.extend(args.iter().map(|f| f.as_raw_fd()));
    crate::sys::fds::close_all_but(&mut keep);
    let null = match &stdio[0] {
        Some(_) => None,
        None => rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok(),
    };
    let sources = [
        stdio[0].as_ref().or(null.as_ref()),
        stdio[1].as_ref(),
        stdio[2].as_ref(),
    ];
    for (target, src) in sources.iter().enumerate() {
        if let Some(src) = src {
            // SAFETY: dup2 onto a standard descriptor of this process; every
            // received descriptor sits above 2 (the server's own 0 to 2 were
            // open when they arrived).
            unsafe { libc::dup2(src.as_raw_fd(), target as i32) };
        }
    }
    drop(stdio);
    drop(null);
    if daemon {
        crate::sys::liveness::set_parent_death_signal(server);
    }
    crate::util::run_after_fork_hooks();
    bootstrap::run_forkserver_child(boot, args)
}
