//! The child side: entering the library, running the target, reporting the
//! result or the panic, and exiting without running the rest of `main`.
//!
//! Wire formats (private to multiproc, between a parent and the children it
//! starts from the same binary):
//!
//! - *bootstrap* (spawn only, parent → child on the inherited socket):
//!   `b"MPBOOT01"`, `u32` little-endian payload length, the postcard-encoded
//!   [`BootMsg`], then a `u64` FNV-1a checksum of the payload;
//! - *report* (child → parent, every start method): `u32` little-endian length
//!   and a postcard-encoded [`Report`].
//!
//! The checksum only detects corruption. What keeps a crafted message from
//! steering a child: [`init`] refuses to act as a child in a privileged
//! (`AT_SECURE`) program, accepts the message only on a socket whose peer is
//! its parent, checks that it runs the parent's binary, and calls only a
//! function whose name [`fnref::resolve`] validates.

use super::fnref::{self, BinaryId};
use super::{ChildIdentity, CURRENT};
use crate::codec;
use crate::error::{Error, Result};
use crate::handoff::Importer;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// Environment variable naming the bootstrap socket of a spawned child.
pub(crate) const BOOT_ENV: &str = "MULTIPROC_BOOTSTRAP_FD";
const MAGIC: &[u8; 8] = b"MPBOOT01";
/// The largest bootstrap payload a child accepts.
const MAX_BOOT: u32 = 1 << 30;

/// A child's runner: imports the arguments, calls the target, returns the
/// encoded return value. One monomorphised instance per (target, args, result).
pub(crate) type Runner = fn(&mut Importer) -> Result<Vec<u8>>;

/// What the parent sends a spawned child.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BootMsg {
    pub(crate) binary: BinaryId,
    /// The runner's name: see [`fnref::name`] (checked by [`fnref::resolve`]).
    pub(crate) runner_offset: i64,
    pub(crate) identity: ChildIdentity,
    pub(crate) fds: Vec<RawFd>,
    pub(crate) args: Vec<u8>,
}

/// What a child reports to its parent before exiting.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// The target returned this encoded value.
    Returned(Vec<u8>),
    /// The target panicked.
    Panicked { message: String, backtrace: String },
    /// The child could not start the target.
    BootstrapFailed(String),
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Encodes a bootstrap message as it goes on the wire.
pub(crate) fn encode_boot(msg: &BootMsg) -> Result<Vec<u8>> {
    let payload = codec::encode(msg)?;
    let mut out = Vec::with_capacity(payload.len() + 20);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&fnv1a(&payload).to_le_bytes());
    Ok(out)
}

/// Reads and checks a bootstrap message.
pub(crate) fn read_boot(r: &mut impl Read) -> Result<BootMsg> {
    let bad = |what: &str| Error::Bootstrap(what.to_string());
    let mut head = [0u8; 12];
    r.read_exact(&mut head)
        .map_err(|e| bad(&format!("truncated bootstrap header ({e})")))?;
    if &head[..8] != MAGIC {
        return Err(bad("bootstrap message has a bad magic number"));
    }
    let len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if len > MAX_BOOT {
        return Err(bad(&format!(
            "bootstrap payload of {len} bytes is over the limit"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)
        .map_err(|e| bad(&format!("truncated bootstrap payload ({e})")))?;
    let mut sum = [0u8; 8];
    r.read_exact(&mut sum)
        .map_err(|e| bad(&format!("truncated bootstrap checksum ({e})")))?;
    if u64::from_le_bytes(sum) != fnv1a(&payload) {
        return Err(bad(
            "bootstrap payload checksum mismatch (corrupted message)",
        ));
    }
    codec::decode(&payload).map_err(|e| bad(&format!("undecodable bootstrap payload ({e})")))
}

/// Writes one report frame.
pub(crate) fn write_report(w: &mut impl Write, report: &Report) -> std::io::Result<()> {
    let body = codec::encode(report).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)
}

/// Parses a complete report frame from `buf`, if it holds one.
pub(crate) fn parse_report(buf: &[u8]) -> Option<Result<Report>> {
    if buf.len() < 4 {
        return None;
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if buf.len() < 4 + len {
        return None;
    }
    Some(codec::decode(&buf[4..4 + len]))
}

static PANIC_INFO: Mutex<Option<(String, String)>> = Mutex::new(None);

/// Set in a child started by *fork*: std's stdout/stderr locks may have been
/// held by another thread of the parent at the moment of the fork, and would
/// then stay locked forever in the child; such a child writes its panic
/// report straight to descriptor 2 and does not flush std's stdout buffer at
/// exit (which would also repeat bytes the parent had buffered).
pub(crate) static FORKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `text` to descriptor 2 without taking std's stderr lock.
fn write_stderr_raw(text: &str) {
    // SAFETY: fd 2 is borrowed only for this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(2) };
    let mut buf = text.as_bytes();
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf = &buf[n..],
        }
    }
}

/// A panic's message with its location: `"text (at file:line)"`.
pub(crate) fn panic_message(info: &std::panic::PanicHookInfo<'_>) -> String {
    let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = info.payload().downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    };
    match info.location() {
        Some(l) => format!("{message} (at {}:{})", l.file(), l.line()),
        None => message,
    }
}

/// In a child, a panic prints as Python prints an exception in a child
/// (`Process NAME (pid N) panicked: ...`, with the backtrace when
/// `RUST_BACKTRACE` asks for it) and is kept for the report to the parent.
///
/// Installed once per process (before the first fork, so a forked child never
/// calls `set_hook`, whose lock a panicking parent thread may hold); outside
/// a child it defers to the previous hook.
pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(install_panic_hook_now);
}

fn install_panic_hook_now() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if super::parent_process().is_none() {
            return previous(info);
        }
        let message = panic_message(info);
        let bt = std::backtrace::Backtrace::force_capture().to_string();
        let me = super::current_process();
        let show_bt = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
        if show_bt {
            eprintln!(
                "Process {} (pid {}) panicked: {message}\n{bt}",
                me.name, me.pid
            );
        } else {
            eprintln!("Process {} (pid {}) panicked: {message}", me.name, me.pid);
        }
        if let Ok(mut slot) = PANIC_INFO.lock() {
            if slot.is_none() {
                *slot = Some((message, bt));
            }
        }
    }));
}

/// Runs the target in a child and exits; never returns.
pub(crate) fn run_child(report_fd: OwnedFd, runner: Runner, mut im: Importer) -> ! {
    install_panic_hook();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner(&mut im)));
    drop(im);
    let (report, code) = match outcome {
        Ok(Ok(bytes)) => (Report::Returned(bytes), 0),
        Ok(Err(e)) => (
            Report::BootstrapFailed(format!("cannot receive the arguments: {e}")),
            1,
        ),
        Err(_) => {
            let (message, backtrace) = PANIC_INFO
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .unwrap_or_else(|| ("panic".to_string(), String::new()));
            (Report::Panicked { message, backtrace }, 1)
        }
    };
    let mut sock = std::fs::File::from(report_fd);
    let _ = write_report(&mut sock, &report);
    drop(sock);
    exit_child(code)
}

/// The end of every child: join non-daemon children, end daemon ones, flush
/// the standard streams, and `_exit` without running the parent's `atexit`
/// handlers or the rest of `main`.
pub(crate) fn exit_child(code: i32) -> ! {
    super::registry::at_exit();
    if !FORKED.load(std::sync::atomic::Ordering::Relaxed) {
        let _ = std::io::stdout().flush();
    }
    // SAFETY: `_exit` ends the process at once; nothing after it runs.
    unsafe { libc::_exit(code) }
}

/// Reports a bootstrap failure on `fd` (best effort) and exits with code 1.
fn fail_bootstrap(fd: Option<&OwnedFd>, message: String) -> ! {
    write_stderr_raw(&format!("multiproc: child bootstrap failed: {message}\n"));
    if let Some(fd) = fd {
        if let Ok(dup) = fd.as_fd().try_clone_to_owned() {
            let _ = write_report(
                &mut std::fs::File::from(dup),
                &Report::BootstrapFailed(message),
            );
        }
    }
    exit_child(1)
}

/// Enters the library in a spawned child; in any other process, records that
/// this is the main process and returns at once.
///
/// Call it first in `main`. In a process started by the *spawn* method it
/// never returns: it receives the target and its arguments from the parent,
/// runs the target, reports the result and exits. In test binaries use
/// [`test_support!`](crate::test_support) instead (it calls this before the
/// test harness starts).
pub fn init() {
    let Some(raw) = std::env::var_os(BOOT_ENV) else {
        return;
    };
    if is_secure_exec() {
        // A set-user-ID (or otherwise privileged) program must not take its
        // instructions from whoever set its environment.
        fail_bootstrap(
            None,
            format!(
                "{BOOT_ENV} is set in a privileged (AT_SECURE) program: refusing to act as a child"
            ),
        );
    }
    // SAFETY: called at start-up (first line of `main`, or a constructor
    // before it), before this process starts threads that read the environment.
    unsafe { std::env::remove_var(BOOT_ENV) };
    let fd: RawFd = match raw.to_str().and_then(|s| s.parse().ok()) {
        Some(fd) if fd >= 3 => fd,
        _ => fail_bootstrap(
            None,
            format!("{BOOT_ENV} is not a descriptor number: {raw:?}"),
        ),
    };
    if rustix::io::fcntl_getfd(
        // SAFETY: only used for the duration of this call, to test the number.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
    )
    .is_err()
    {
        fail_bootstrap(
            None,
            format!("{BOOT_ENV} names descriptor {fd}, which is not open"),
        );
    }
    // SAFETY: the parent passed this descriptor for us alone; we just checked
    // that it is open, and nothing else in this fresh process owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = crate::sys::set_cloexec(sock.as_fd(), true);
    if let Err(why) = check_parent_socket(&sock) {
        fail_bootstrap(None, format!("{BOOT_ENV} names descriptor {fd}, {why}"));
    }
    let msg = {
        let mut reader = match sock.try_clone() {
            Ok(d) => std::fs::File::from(d),
            Err(e) => fail_bootstrap(
                Some(&sock),
                format!("cannot duplicate the bootstrap socket: {e}"),
            ),
        };
        match read_boot(&mut reader) {
            Ok(m) => m,
            Err(e) => fail_bootstrap(
                Some(&sock),
                e.to_string()
                    .trim_start_matches("child bootstrap failed: ")
                    .into(),
            ),
        }
    };
    match BinaryId::current() {
        Ok(id) if id == msg.binary => {}
        Ok(_) => fail_bootstrap(
            Some(&sock),
            "the child runs a different binary than the parent (was it rebuilt or replaced?)"
                .into(),
        ),
        Err(e) => fail_bootstrap(Some(&sock), e.to_string()),
    }
    for &f in &msg.fds {
        // SAFETY: only borrowed for the duration of the check.
        if rustix::io::fcntl_getfd(unsafe { std::os::fd::BorrowedFd::borrow_raw(f) }).is_err() {
            fail_bootstrap(Some(&sock), format!("inherited descriptor {f} is not open"));
        }
    }
    // SAFETY: the parent kept exactly these descriptors open across exec for
    // this child; they are checked open above and owned by nothing else here.
    let im = unsafe { Importer::from_raw(msg.args, &msg.fds) };
    CURRENT.set_child(msg.identity);
    let runner = match fnref::resolve::<Runner>(msg.runner_offset) {
        Ok(r) => r,
        Err(e) => fail_bootstrap(
            Some(&sock),
            format!(
                "the target cannot be found in this binary ({})",
                e.to_string().trim_start_matches("child bootstrap failed: ")
            ),
        ),
    };
    run_child(sock, runner, im)
}

/// Whether this program runs with `AT_SECURE` (set-user-ID, set-group-ID or
/// file capabilities): then its environment comes from a less privileged user.
fn is_secure_exec() -> bool {
    // SAFETY: `getauxval` reads the auxiliary vector; no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Checks that the bootstrap descriptor is a socket whose peer is our parent
/// (the socket pair the spawning parent created), not a file, a pipe or a
/// socket someone else handed us.
fn check_parent_socket(sock: &OwnedFd) -> std::result::Result<(), String> {
    let cred = match rustix::net::sockopt::socket_peercred(sock) {
        Ok(c) => c,
        Err(rustix::io::Errno::NOTSOCK) => return Err("which is not a socket".into()),
        Err(e) => return Err(format!("whose peer cannot be identified ({e})")),
    };
    let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    if Some(cred.pid.as_raw_nonzero().get()) != parent {
        return Err(format!(
            "a socket whose peer (pid {}) is not this process's parent (pid {})",
            cred.pid.as_raw_nonzero(),
            parent.unwrap_or(0)
        ));
    }
    Ok(())
}
