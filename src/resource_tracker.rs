//! The resource tracker's implementation (its public face and how it works:
//! [`shared::tracker`](crate::shared::tracker)). It sits below `process`,
//! which keeps the tracker's pipe open across `fork` and registers how to
//! start the helper process ([`set_launcher`]).
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The `log` target of the tracker's records.
const LOG_TARGET: &str = "multiproc::resource_tracker";

/// The resource type of shared memory blocks (CPython's name for it).
pub const SHARED_MEMORY: &str = "shared_memory";

/// This program's tracker: `(write end + 1) << 32 | pid`, 0 before it starts.
/// One atomic word, read without locking (a forked child may inherit a locked
/// mutex, never a half-written word). A write end is never closed: when its
/// tracker dies, it is replaced and the old (dead) pipe is leaked, so another
/// thread still writing to it gets `EPIPE`, never a reused descriptor.
static TRACKER: AtomicU64 = AtomicU64::new(0);
/// Serialises starting (and restarting) the tracker.
static START: Mutex<()> = Mutex::new(());
/// Starts the helper process (see [`set_launcher`]).
static LAUNCHER: OnceLock<Launcher> = OnceLock::new();

/// Starts a *spawned* helper process running [`launch`] with the read end
/// of the tracker's pipe, waits for it, and returns what `launch` returned.
pub(crate) type Launcher = fn(ReadEnd) -> Result<i32>;

/// Called by [`init`](crate::init): how to start the tracker's helper
/// process (the `process` module, above this one, knows how to spawn).
pub(crate) fn set_launcher(launcher: Launcher) {
    let _ = LAUNCHER.set(launcher);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tracker {
    pipe: i32,
    pid: i32,
}

impl Tracker {
    fn load() -> Option<Tracker> {
        match TRACKER.load(Ordering::Acquire) {
            0 => None,
            w => Some(Tracker {
                pipe: (w >> 32) as i32 - 1,
                pid: w as u32 as i32,
            }),
        }
    }

    fn store(self) {
        TRACKER.store(
            ((self.pipe as u64 + 1) << 32) | self.pid as u32 as u64,
            Ordering::Release,
        );
    }

    fn pipe(self) -> BorrowedFd<'static> {
        // SAFETY: tracker write ends are never closed (see `TRACKER`), so the
        // descriptor stays open for the rest of the process.
        unsafe { BorrowedFd::borrow_raw(self.pipe) }
    }
}

/// The tracker's write end, if this process (or the parent it was forked
/// from) started one: kept open in forked children, which report to the
/// same tracker.
pub(crate) fn inherited_fd() -> Option<std::os::fd::RawFd> {
    Tracker::load().map(|t| t.pipe)
}

/// Starts this program's tracker if it is not running yet, and returns its
/// process id (Python's `resource_tracker.ensure_running()`).
///
/// Like every *spawn*, this needs [`multiproc::init()`](crate::init) at the
/// top of `main` (or [`test_support!`](crate::test_support) in a test crate).
///
/// Creating a [`SharedMemory`](crate::SharedMemory) calls this; there is
/// rarely a reason to call it directly, except to pay the start-up cost early.
///
/// # Errors
///
/// The pipe or the helper process could not be created;
/// [`Error::InvalidState`] if [`init`](crate::init) was not called (e.g. a
/// spawned child whose `main` does not call it).
pub fn ensure_running() -> Result<i32> {
    tracker().map(|t| t.pid)
}

fn tracker() -> Result<Tracker> {
    if let Some(t) = Tracker::load() {
        return Ok(t);
    }
    let _guard = START.lock().unwrap_or_else(|e| e.into_inner());
    match Tracker::load() {
        Some(t) => Ok(t),
        None => start(),
    }
}

/// Replaces a tracker that died (its pipe gave `EPIPE`), as CPython does,
/// with a warning: what it had registered will not be cleaned up.
fn restart(dead: Tracker) -> Result<Tracker> {
    let _guard = START.lock().unwrap_or_else(|e| e.into_inner());
    match Tracker::load() {
        Some(t) if t != dead => Ok(t),
        _ => {
            crate::logging::mp_log!(
                warn,
                target: LOG_TARGET,
                "resource_tracker: process {} died unexpectedly, relaunching. \
                 Some resources might leak.",
                dead.pid
            );
            start()
        }
    }
}

/// Starts a tracker; the caller holds `START`.
fn start() -> Result<Tracker> {
    let Some(launcher) = LAUNCHER.get() else {
        // `init()` was not called (e.g. a spawned child whose `main` forgot
        // it, where spawning the tracker would run `main` again, and again).
        return Err(Error::InvalidState(
            "cannot start the resource tracker: call multiproc::init() first in main \
             (or multiproc::test_support!() in a test crate)"
                .into(),
        ));
    };
    // A socket pair, not a pipe: `send(MSG_NOSIGNAL)` turns a dead tracker
    // into `EPIPE` instead of a `SIGPIPE` that would kill a process which
    // does not ignore it (a spawned child runs before Rust's runtime does).
    let (rd, wr) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    let _ = rustix::net::shutdown(&rd, rustix::net::Shutdown::Write);
    let _ = rustix::net::shutdown(&wr, rustix::net::Shutdown::Read);
    // Roomy buffers: the tracker reads in bursts (see `serve`). Best effort.
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&wr, 1 << 20);
    let pid = launcher(ReadEnd(rd))?;
    if pid <= 0 {
        // `launch` returns `-errno` when its fork failed.
        return Err(Error::Io(std::io::Error::from_raw_os_error(-pid)));
    }
    let t = Tracker {
        pipe: wr.into_raw_fd(),
        pid,
    };
    t.store();
    Ok(t)
}

/// The read end of the tracker pipe, as a process argument.
pub(crate) struct ReadEnd(OwnedFd);

impl Handoff for ReadEnd {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        ex.write_fd(self.0.as_fd())
    }
    fn import(im: &mut Importer) -> Result<Self> {
        Ok(ReadEnd(im.read_fd()?))
    }
}

/// The helper child's target: forks the tracker and returns its pid (or
/// `-errno`).
pub(crate) fn launch(rd: ReadEnd) -> i32 {
    // SAFETY: this helper process is a fresh fork with one thread; the
    // grandchild only runs `serve`, which never returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        serve(rd.0)
    }
    if pid < 0 {
        return -std::io::Error::last_os_error().raw_os_error().unwrap_or(1);
    }
    pid
}

/// Closes every descriptor of this process except 0, 1, 2 and `keep`.
fn close_all_but(keep: i32) {
    let keep = keep as u32;
    // SAFETY: close_range only closes descriptors; the caller (the tracker,
    // single-threaded, right after fork) owns nothing else it still needs.
    unsafe {
        if keep > 3 {
            libc::close_range(3, keep - 1, 0);
        }
        libc::close_range(keep + 1, u32::MAX, 0);
    }
}

/// The tracker's main loop; never returns.
fn serve(rd: OwnedFd) -> ! {
    close_all_but(rd.as_raw_fd());
    // SAFETY: plain signal-disposition and prctl calls in a single-threaded process.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::prctl(
            libc::PR_SET_NAME,
            c"mp-res-tracker".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    // No program code runs here to install a logger: the tracker's warnings
    // go to standard error through the crate's own (see `crate::logging`).
    crate::logging::install_for_helper_process();
    let mut registered: BTreeSet<(String, String)> = BTreeSet::new();
    let mut reader = BufReader::with_capacity(1 << 16, std::fs::File::from(rd));
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        if let Some((cmd, name, rtype)) = parse(&line) {
            match cmd {
                "REGISTER" => {
                    registered.insert((rtype.to_string(), name.to_string()));
                }
                "UNREGISTER" => {
                    registered.remove(&(rtype.to_string(), name.to_string()));
                }
                _ => {}
            }
        }
        if reader.buffer().is_empty() {
            // Nap after a burst so that writers in a tight create/unlink loop
            // rarely have to wake a sleeping reader (the socket buffers them).
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    let mut removed = Vec::new();
    for (rtype, name) in &registered {
        if rtype == SHARED_MEMORY {
            match crate::sys::shm::unlink(name) {
                Ok(()) => removed.push(format!("'{name}'")),
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    crate::logging::mp_log!(warn, target: LOG_TARGET, "cannot unlink {name:?}: {e}")
                }
            }
        }
    }
    if !removed.is_empty() {
        crate::logging::mp_log!(
            warn,
            target: LOG_TARGET,
            "There appear to be {} leaked shared_memory objects to clean up at shutdown: [{}]",
            removed.len(),
            removed.join(", ")
        );
    }
    // SAFETY: ends the tracker; nothing of it must run after this.
    unsafe { libc::_exit(0) }
}

fn parse(line: &[u8]) -> Option<(&str, &str, &str)> {
    let s = std::str::from_utf8(line).ok()?.strip_suffix('\n')?;
    let (cmd, rest) = s.split_once(':')?;
    let (name, rtype) = rest.rsplit_once(':')?;
    Some((cmd, name, rtype))
}

fn send(cmd: &str, name: &str, rtype: &str) -> Result<()> {
    let name = normalize(name, rtype);
    let t = tracker()?;
    match write_msg(t.pipe(), cmd, &name, rtype) {
        Err(Error::Io(e)) if e.raw_os_error() == Some(libc::EPIPE) => {
            write_msg(restart(t)?.pipe(), cmd, &name, rtype)
        }
        r => r,
    }
}

/// Shared memory names travel in their POSIX form, with the leading `/`
/// (as CPython's tracker gets them); accept both.
fn normalize<'a>(name: &'a str, rtype: &str) -> std::borrow::Cow<'a, str> {
    if rtype == SHARED_MEMORY && !name.starts_with('/') {
        std::borrow::Cow::Owned(format!("/{name}"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

fn write_msg(fd: BorrowedFd<'_>, cmd: &str, name: &str, rtype: &str) -> Result<()> {
    let mut buf = [0u8; 512];
    let len = cmd.len() + name.len() + rtype.len() + 3;
    if len > buf.len() || name.contains('\n') {
        return Err(Error::Invalid(format!(
            "name too long or malformed for the resource tracker: {name:?}"
        )));
    }
    let mut at = 0;
    for part in [
        cmd.as_bytes(),
        b":",
        name.as_bytes(),
        b":",
        rtype.as_bytes(),
        b"\n",
    ] {
        buf[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    let msg = &buf[..len];
    // One small `send` on a Unix stream socket is queued as one buffer, so
    // concurrent writers (forked children) never interleave their lines.
    loop {
        match rustix::net::send(fd, msg, rustix::net::SendFlags::NOSIGNAL) {
            Ok(n) if n == msg.len() => return Ok(()),
            Ok(_) => {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "short write to the resource tracker",
                )))
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Records `name` (of type `rtype`, e.g. [`SHARED_MEMORY`]; a block's name
/// may be given with or without its leading `/`) with the tracker,
/// starting it if needed (Python's `resource_tracker.register`). Unless
/// [`unregister`]ed, the tracker unlinks it when the program ends.
///
/// # Errors
///
/// The tracker could not be started. (A tracker that died is replaced, with
/// a warning on standard error, as CPython does.)
pub fn register(name: &str, rtype: &str) -> Result<()> {
    send("REGISTER", name, rtype)
}

/// Forgets `name` (Python's `resource_tracker.unregister`). Does nothing if
/// this program has no tracker running (then nothing was registered here),
/// or if its tracker died.
///
/// # Errors
///
/// Writing to the tracker failed otherwise.
pub fn unregister(name: &str, rtype: &str) -> Result<()> {
    match Tracker::load() {
        Some(t) => match write_msg(t.pipe(), "UNREGISTER", &normalize(name, rtype), rtype) {
            // A dead tracker has nothing registered to forget.
            Err(Error::Io(e)) if e.raw_os_error() == Some(libc::EPIPE) => Ok(()),
            r => r,
        },
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_cpython_lines() {
        assert_eq!(
            parse(b"REGISTER:/psm_12ab:shared_memory\n"),
            Some(("REGISTER", "/psm_12ab", "shared_memory"))
        );
        assert_eq!(
            parse(b"REGISTER:/a:b:shared_memory\n"),
            Some(("REGISTER", "/a:b", "shared_memory"))
        );
        assert_eq!(parse(b"garbage"), None);
    }
}
