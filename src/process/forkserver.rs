//! The *forkserver* launcher (CPython's `forkserver` start method).
//!
//! On first use a process starts a fork server: a fresh, single-threaded copy
//! of the binary (started by the spawn launcher, so it holds no lock of
//! another thread), which runs the [preload](set_forkserver_preload)
//! functions once and then forks one child per request. A child built this
//! way starts from the server's clean state, not from a copy of a possibly
//! multithreaded parent, and costs a `fork` of a small process instead of an
//! `exec`.
//!
//! The server is reached only through a socket pair its parent created and
//! handed to it at start: nothing else can connect to it (no address exists;
//! this is the authentication), and each request's peer is also checked to
//! belong to the server's user. A process other than the one that started the
//! server (a forked child that inherited the descriptor) starts its own.
//!
//! Per start, one request carries the child's bootstrap socket, a status
//! socket, the requester's stdio and the handed-off descriptors
//! (`SCM_RIGHTS`); the server forks, and the child rebuilds its arguments
//! exactly as a spawned child does (the same bootstrap message, received
//! descriptors instead of inherited numbers). The server answers on the
//! status socket with the child's pid and pidfd (for signals), and later
//! with its wait status: that socket is the child's sentinel and how it is
//! reaped (see `child::ChildShared`). A dead server is replaced at the
//! next start; a server whose parent is gone exits (end-of-file on its
//! control socket; a server started from the main thread is also a daemon
//! child, killed with its parent).
#![allow(unsafe_code)]

mod server;
pub(super) mod wire;

use super::bootstrap::{self, BootMsg, Runner};
use super::fnref::{self, BinaryId, FnDesc};
use super::{spawn, ChildIdentity, Launch, Stdin, TaskFn};
use crate::error::{Error, Result};
use crate::handoff::Exporter;
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType};
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a start waits for the server to answer with the child's pid.
const ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// A function run once in the fork server when it starts (an element of
/// CPython's `set_forkserver_preload` list): warm-up work every forkserver
/// child then inherits, such as loading data or initialising a library.
///
/// Built from a `fn` item (or a closure that captures nothing) and named
/// across processes like a target, never by address.
///
/// ```
/// use multiproc::process::{set_forkserver_preload, Preload};
///
/// fn warm_up() { /* load tables, open libraries, ... */ }
///
/// set_forkserver_preload(&[Preload::new(warm_up)]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preload {
    name: i64,
}

impl Preload {
    /// A preload function.
    pub fn new<F: TaskFn<(), ()>>(f: F) -> Preload {
        fnref::check_target(f);
        Preload {
            name: fnref::name(PreloadOf::<F>::DESC),
        }
    }
}

struct PreloadOf<F>(PhantomData<F>);

impl<F: TaskFn<(), ()>> PreloadOf<F> {
    /// Named only by [`Preload::new`], which was handed a value of `F`.
    const DESC: &'static FnDesc<fn()> = &FnDesc::new(run_preload::<F>);
}

fn run_preload<F: TaskFn<(), ()>>() {
    // SAFETY: reached only through `PreloadOf::<F>::DESC`, named by
    // `Preload::new`, which was handed a value of `F` (in the process that
    // started this server, running the same binary).
    let f: F = unsafe { fnref::conjure::<F, (), ()>() };
    f.call(());
}

/// Sets the functions a fork server runs once when it starts (CPython's
/// `set_forkserver_preload`). Applies to servers started afterwards: call it
/// before the first forkserver start.
pub fn set_forkserver_preload(fns: &[Preload]) {
    *lock(&client().preload) = fns.iter().map(|p| p.name).collect();
}

/// The runner of the server process.
const SERVER: &FnDesc<Runner> = &FnDesc::new(server::serve);

/// A running fork server, as its parent sees it.
struct Server {
    pid: i32,
    control: OwnedFd,
    /// The report socket of the spawned server process (kept so it does not
    /// see its parent hang up; never read).
    _report: OwnedFd,
}

impl Server {
    /// Starts a server with the given preload names.
    fn start(preload: &[i64]) -> Result<Server> {
        let (control, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        let me = super::current_process();
        // A daemon dies with the thread that started it (Linux's parent
        // death signal follows the thread): only the main thread makes the
        // server a daemon; from other threads, end-of-file on the control
        // socket is what ends it.
        let main_thread = rustix::thread::gettid() == rustix::process::getpid();
        let identity = ChildIdentity {
            name: "ForkServer".into(),
            daemon: main_thread,
            parent_pid: me.pid,
            parent_token: crate::sys::liveness::current_token(),
            parent_name: me.name,
            path: Vec::new(),
        };
        let mut ex = Exporter::new();
        ex.write(&preload.to_vec())?;
        ex.write_fd(theirs.as_fd())?;
        let launch = Launch {
            identity,
            stdin: Stdin::Null,
            args: ex.bytes(),
            fds: ex.fds(),
            pass_fds: &[],
        };
        let (pid, report) = spawn::launch(launch, fnref::name(SERVER), None)?;
        Ok(Server {
            pid,
            control,
            _report: report,
        })
    }

    /// Ends and reaps a server that failed (it is our child).
    fn retire(self) {
        drop(self.control);
        // SAFETY: plain syscalls on our own, unreaped child (not recycled).
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            while libc::waitpid(self.pid, std::ptr::null_mut(), 0) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
        }
    }
}

/// The client state of one process. A forked child inherits its parent's
/// copy (possibly locked by a thread that does not exist in the child), so a
/// process that finds another process's state replaces it (see [`client`]).
struct ClientState {
    owner: u32,
    server: Mutex<Option<Server>>,
    preload: Mutex<Vec<i64>>,
    /// The control descriptor's number and its socket's inode, readable
    /// without the lock, so that a forked child can close its inherited copy
    /// (and only that: the inode tells whether the number still names it).
    control_raw: std::sync::atomic::AtomicI32,
    control_ino: std::sync::atomic::AtomicU64,
}

/// Leaked `Box<ClientState>` of this process (or of its parent).
static CLIENT: AtomicPtr<ClientState> = AtomicPtr::new(std::ptr::null_mut());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's client state, created on first use.
fn client() -> &'static ClientState {
    let me = std::process::id();
    loop {
        let cur = CLIENT.load(Ordering::Acquire);
        // SAFETY: a non-null pointer here came from `Box::into_raw` below and
        // is never freed (a replaced state is leaked).
        let cur_ref = unsafe { cur.as_ref() };
        if let Some(c) = cur_ref.filter(|c| c.owner == me) {
            return c;
        }
        // Another process's state (we are its forked child): its preload
        // list is the parent's choice; read it only if unlocked.
        let preload = cur_ref
            .and_then(|c| c.preload.try_lock().ok().map(|p| p.clone()))
            .unwrap_or_default();
        let new = Box::into_raw(Box::new(ClientState {
            owner: me,
            server: Mutex::new(None),
            preload: Mutex::new(preload),
            control_raw: std::sync::atomic::AtomicI32::new(-1),
            control_ino: std::sync::atomic::AtomicU64::new(0),
        }));
        match CLIENT.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                if let Some(old) = cur_ref {
                    close_inherited(
                        old.control_raw.load(Ordering::Acquire),
                        old.control_ino.load(Ordering::Acquire),
                    );
                }
            }
            Err(_) => {
                // SAFETY: `new` came from `Box::into_raw` above and was not
                // published.
                drop(unsafe { Box::from_raw(new) });
            }
        }
    }
}

/// Closes this process's inherited copy of its parent's control socket, if
/// descriptor `raw` still is that socket (inode `ino`): then the parent's
/// server sees end-of-file when its parent exits, whatever this process does.
fn close_inherited(raw: i32, ino: u64) {
    if raw < 0 {
        return;
    }
    // SAFETY: only borrowed for the duration of the check.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    if rustix::fs::fstat(fd).is_ok_and(|st| st.st_ino == ino) {
        // SAFETY: the number names the socket the parent's client state
        // owned, inherited by this process; that state is never used again
        // here (it is leaked), so nothing else in this process owns it.
        unsafe { libc::close(raw) };
    }
}

/// A child started by the fork server, as its requester holds it.
pub(crate) struct Started {
    pub(crate) pid: i32,
    /// The report socket (bootstrap message out, report in).
    pub(crate) report: OwnedFd,
    /// Where the server writes the child's wait status.
    pub(crate) status: OwnedFd,
    pub(crate) pidfd: Option<OwnedFd>,
}

/// Why a request failed.
enum Failure {
    /// The server is gone: start another and try again.
    ServerGone,
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Other(e)
    }
}

impl From<rustix::io::Errno> for Failure {
    fn from(e: rustix::io::Errno) -> Failure {
        Failure::Other(e.into())
    }
}

/// Starts a child through this process's fork server (starting or replacing
/// the server as needed).
pub(crate) fn launch(launch: Launch<'_>, runner_offset: i64) -> Result<Started> {
    let Launch {
        identity,
        stdin,
        args,
        fds,
        pass_fds,
    } = launch;
    let keep = spawn::opted_in(pass_fds);
    if fds.len() + keep.len() + 5 > wire::MAX_FDS {
        return Err(Error::unsupported(format!(
            "the forkserver start method passes at most {} descriptors to a child ({} given)",
            wire::MAX_FDS - 5,
            fds.len() + keep.len()
        )));
    }
    // SAFETY: each opted-in number is borrowed for this start only; the
    // caller keeps it open until `start` returns (`Builder::pass_fd`).
    let passed: Vec<BorrowedFd<'_>> = keep
        .iter()
        .map(|&k| unsafe { BorrowedFd::borrow_raw(k) })
        .collect();
    if let Some(k) = passed.iter().find(|k| rustix::io::fcntl_getfd(k).is_err()) {
        return Err(Error::Invalid(format!(
            "Builder::pass_fd: descriptor {} is not open",
            k.as_raw_fd()
        )));
    }
    let daemon = identity.daemon;
    let wire_msg = bootstrap::encode_boot(&BootMsg {
        binary: BinaryId::current()?,
        runner_offset,
        identity,
        nfds: fds.len() as u32,
        keep,
        close_others: false,
        args: args.to_vec(),
    })?;
    let c = client();
    let mut server = lock(&c.server);
    for attempt in 0..2 {
        if server.is_none() {
            let preload = lock(&c.preload).clone();
            let s = Server::start(&preload)?;
            let ino = rustix::fs::fstat(&s.control).map_or(0, |st| st.st_ino);
            c.control_ino.store(ino, Ordering::Release);
            c.control_raw
                .store(s.control.as_raw_fd(), Ordering::Release);
            *server = Some(s);
        }
        let s = server.as_ref().expect("just set");
        match request(s, daemon, stdin, fds, &passed) {
            Ok(started) => {
                drop(server);
                if let Err(e) = spawn::send_all(&started.report, &wire_msg, &[]) {
                    if let Some(p) = &started.pidfd {
                        let _ =
                            rustix::process::pidfd_send_signal(p, rustix::process::Signal::KILL);
                    }
                    return Err(e);
                }
                return Ok(started);
            }
            Err(Failure::ServerGone) => {
                c.control_raw.store(-1, Ordering::Release);
                if let Some(old) = server.take() {
                    old.retire();
                }
                if attempt == 1 {
                    return Err(Error::Bootstrap(
                        "the fork server died twice in a row while starting a child".into(),
                    ));
                }
            }
            Err(Failure::Other(e)) => return Err(e),
        }
    }
    unreachable!("the loop returns on its second attempt")
}

/// One request to `s`. Returns the started child, whose bootstrap message
/// is then sent on its report socket without holding the lock.
fn request(
    s: &Server,
    daemon: bool,
    stdin: Stdin,
    fds: &[BorrowedFd<'_>],
    passed: &[BorrowedFd<'_>],
) -> std::result::Result<Started, Failure> {
    let (report, child_end) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let (status, server_end) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let mut flags = if daemon { wire::FLAG_DAEMON } else { 0 };
    let mut send: Vec<BorrowedFd<'_>> = vec![child_end.as_fd(), server_end.as_fd()];
    let std_flags = [wire::FLAG_STDIN, wire::FLAG_STDOUT, wire::FLAG_STDERR];
    for (n, flag) in std_flags.into_iter().enumerate() {
        if n == 0 && stdin == Stdin::Null {
            continue;
        }
        // SAFETY: borrowed for the duration of this request only, after
        // checking that the number is open.
        let fd = unsafe { BorrowedFd::borrow_raw(n as i32) };
        if rustix::io::fcntl_getfd(fd).is_ok() {
            flags |= flag;
            send.push(fd);
        }
    }
    send.extend_from_slice(fds);
    send.extend_from_slice(passed);
    let header = wire::Header {
        flags,
        nfds: send.len() as u32,
    };
    match wire::send_with_fds(s.control.as_fd(), &header.encode(), &send) {
        Ok(()) => {}
        Err(rustix::io::Errno::PIPE)
        | Err(rustix::io::Errno::CONNRESET)
        | Err(rustix::io::Errno::CONNREFUSED)
        | Err(rustix::io::Errno::NOTCONN) => return Err(Failure::ServerGone),
        Err(e) => return Err(e.into()),
    }
    drop(child_end);
    drop(server_end);
    let deadline = Instant::now() + ANSWER_LIMIT;
    if !crate::sys::wait_readable(status.as_fd(), Some(deadline))? {
        return Err(Failure::Other(Error::bootstrap(format!(
            "the fork server (pid {}) did not answer within {} s",
            s.pid,
            ANSWER_LIMIT.as_secs()
        ))));
    }
    match wire::recv_word(status.as_fd(), RecvFlags::DONTWAIT) {
        Ok(Some((pid, pidfd))) if pid > 0 => Ok(Started {
            pid,
            report,
            status,
            pidfd,
        }),
        Ok(Some((err, _))) => Err(Failure::Other(
            std::io::Error::from_raw_os_error(-err).into(),
        )),
        Ok(None) | Err(rustix::io::Errno::CONNRESET) => Err(Failure::ServerGone),
        Err(e) => Err(e.into()),
    }
}

/// Whether the kernel supports what the server needs (pidfds, Linux 5.3+).
pub(crate) fn supported() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        rustix::process::pidfd_open(
            rustix::process::getpid(),
            rustix::process::PidfdFlags::empty(),
        )
        .is_ok()
    })
}

/// The pid of this process's fork server, if one runs (tests).
#[cfg(feature = "test-hooks")]
pub(crate) fn server_pid() -> Option<i32> {
    lock(&client().server).as_ref().map(|s| s.pid)
}

/// Sends a hand-made request on this process's server's control socket,
/// with `nfds` descriptors (a bootstrap socket, a status socket, then copies
/// of the bootstrap socket). `true` if the server answered with a pid (it
/// forked; the child then finds no bootstrap message and exits). Tests.
#[cfg(feature = "test-hooks")]
pub(crate) fn raw_request(bytes: &[u8], nfds: usize) -> Result<bool> {
    let c = client();
    let server = lock(&c.server);
    let Some(s) = server.as_ref() else {
        return Err(Error::InvalidState("no fork server is running".into()));
    };
    let (boot, child_end) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let (status, server_end) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let mut fds = vec![child_end.as_fd(), server_end.as_fd()];
    while fds.len() < nfds {
        fds.push(child_end.as_fd());
    }
    fds.truncate(nfds);
    wire::send_with_fds(s.control.as_fd(), bytes, &fds)?;
    drop((child_end, server_end, boot));
    if !crate::sys::wait_readable(status.as_fd(), Some(Instant::now() + ANSWER_LIMIT))? {
        return Err(Error::Timeout);
    }
    Ok(matches!(
        wire::recv_word(status.as_fd(), RecvFlags::DONTWAIT),
        Ok(Some((pid, _))) if pid > 0
    ))
}

/// A well-formed request header for `nfds` descriptors (tests).
#[cfg(feature = "test-hooks")]
pub(crate) fn header(nfds: u32) -> Vec<u8> {
    wire::Header { flags: 0, nfds }.encode().to_vec()
}
