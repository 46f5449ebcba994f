//! The child side: entering the library, running the target, reporting the
//! result or the panic, and exiting without running the rest of `main`.
//!
//! Wire formats (private to multiproc, between a parent and the children it
//! starts from the same binary):
//!
//! - *bootstrap* (spawn and forkserver, parent → child on the bootstrap
//!   socket, a spawned child's handed-off descriptors attached): one frame
//!   of the crate's [framing](crate::sys::framing) whose payload is
//!   `b"MPBOOT01"`, the postcard-encoded [`BootMsg`], then a `u64` FNV-1a
//!   checksum of the encoded message;
//! - *report* (child → parent, every start method): one frame holding a
//!   postcard-encoded [`Report`].
//!
//! The checksum only detects corruption. What keeps a crafted message from
//! steering a child: [`init`] refuses to act as a child in a privileged
//! (`AT_SECURE`) program, accepts the message only on a socket whose peer is
//! its parent, checks that it runs the parent's binary, and calls only a
//! function whose name [`fnref::resolve`] validates.
#![allow(unsafe_code)]

use super::fnref::{self, BinaryId};
use super::panics::{
    self, install_panic_hook, read_backtrace_env, take_child_panic, write_stderr_raw,
};
use super::{ChildIdentity, CURRENT};
use crate::codec;
use crate::error::{Error, Result};
use crate::handoff::Importer;
use crate::sys::conn_io::Kind;
use crate::sys::framing::{self, Frame, FrameReader, Source};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Environment variable naming the bootstrap socket of a spawned child.
pub(crate) const BOOT_ENV: &str = "MULTIPROC_BOOTSTRAP_FD";
const MAGIC: &[u8; 8] = b"MPBOOT01";
/// The largest bootstrap payload a child accepts.
const MAX_BOOT: u32 = 1 << 30;

/// A child's runner: imports the arguments, calls the target, returns the
/// encoded return value. One monomorphised instance per (target, args, result).
pub(crate) type Runner = fn(&mut Importer) -> Result<Vec<u8>>;

// SAFETY: a function pointer type with a kind of its own.
unsafe impl fnref::FnKind for Runner {
    const KIND: u64 = fnref::kind::PROCESS_RUNNER;
}

/// What the parent sends a spawned child.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BootMsg {
    pub(crate) binary: BinaryId,
    /// The runner's name: see [`fnref::name`] (checked by [`fnref::resolve`]).
    pub(crate) runner_offset: i64,
    pub(crate) identity: ChildIdentity,
    /// How many handed-off descriptors (in slot order) the child gets:
    /// attached to this message (spawn) or to the request to the fork server
    /// (forkserver).
    pub(crate) nfds: u32,
    /// The descriptors opted in with `Builder::pass_fd`, kept at these
    /// numbers (3 and up, sorted): inherited there (spawn), or the last ones
    /// of the request, which the child puts there (forkserver).
    pub(crate) keep: Vec<RawFd>,
    /// The spawn could not close the descriptors the child does not keep (a
    /// libc without `posix_spawn_file_actions_addclosefrom_np`): the child
    /// closes them itself.
    pub(crate) close_others: bool,
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

/// Encodes a bootstrap message as it goes on the wire: one frame.
pub(crate) fn encode_boot(msg: &BootMsg) -> Result<Vec<u8>> {
    let mut out = vec![0u8; 4];
    out.extend_from_slice(MAGIC);
    codec::encode_into(msg, &mut out)?;
    let sum = fnv1a(&out[4 + MAGIC.len()..]);
    out.extend_from_slice(&sum.to_le_bytes());
    let len = out.len() - 4;
    if len as u64 > u64::from(MAX_BOOT) {
        return Err(Error::Invalid(format!(
            "the bootstrap message is {len} bytes, over the limit of {MAX_BOOT}"
        )));
    }
    out[..4].copy_from_slice(&framing::short_header(len));
    Ok(out)
}

/// Reads and checks a bootstrap message (one frame) from `r`, which keeps
/// the descriptors that come with it.
pub(crate) fn read_boot(r: &mut impl Read) -> Result<BootMsg> {
    let bad = |what: &str| Error::bootstrap(what.to_string());
    let frame = framing::read_frame_from(r, u64::from(MAX_BOOT)).map_err(|e| match e {
        Error::MessageTooLarge { len, .. } => bad(&format!(
            "bootstrap payload of {len} bytes is over the limit"
        )),
        Error::Closed => bad("truncated bootstrap header (end of file)"),
        e => bad(&format!("truncated or malformed bootstrap message ({e})")),
    })?;
    let Some(body) = frame.strip_prefix(MAGIC) else {
        return Err(bad("bootstrap message has a bad magic number"));
    };
    let Some(split) = body.len().checked_sub(8) else {
        return Err(bad("truncated bootstrap checksum"));
    };
    let (payload, sum) = body.split_at(split);
    if u64::from_le_bytes(sum.try_into().expect("8 bytes")) != fnv1a(payload) {
        return Err(bad(
            "bootstrap payload checksum mismatch (corrupted message)",
        ));
    }
    codec::decode(payload).map_err(|e| bad(&format!("undecodable bootstrap payload ({e})")))
}

/// The largest report a parent accepts: a child's return value is refused
/// past it (as the report's former 32-bit length did).
const MAX_REPORT: u64 = u32::MAX as u64;

/// Writes one report frame (blocking) on the report socket `fd`.
pub(crate) fn write_report(fd: BorrowedFd<'_>, report: &Report) -> std::io::Result<()> {
    let mut body = codec::encode(report).map_err(std::io::Error::other)?;
    if body.len() as u64 > MAX_REPORT {
        let too_large = Report::BootstrapFailed(format!(
            "the target's return value encodes to {} bytes, more than a report carries ({MAX_REPORT})",
            body.len()
        ));
        body = codec::encode(&too_large).map_err(std::io::Error::other)?;
    }
    framing::write_frame(fd, Kind::Socket, &body, &[]).map_err(std::io::Error::from)
}

/// The parent's side of a child's report socket: reads the one report
/// frame as it arrives, without blocking.
#[derive(Debug)]
pub(crate) struct ReportReader {
    frames: FrameReader,
    report: Option<Result<Vec<u8>>>,
    /// Nothing more will be read: end of file, or the stream is unusable.
    done: bool,
}

impl ReportReader {
    pub(crate) fn new() -> ReportReader {
        ReportReader {
            frames: FrameReader::new(16 << 10, 16 << 10),
            report: None,
            done: false,
        }
    }

    /// Whether the socket needs no more watching.
    pub(crate) fn done(&self) -> bool {
        self.done
    }

    /// Reads whatever the socket `fd` holds now. Bytes after the report are
    /// read and dropped.
    pub(crate) fn drain(&mut self, fd: BorrowedFd<'_>) -> Result<()> {
        let src = Source {
            fd,
            kind: Kind::Socket,
            nonblocking: true,
        };
        while !self.done {
            match self.frames.next(
                src,
                MAX_REPORT,
                &mut Vec::new(),
                &mut || Ok(()),
                &mut |_, _| {},
            ) {
                Ok(Some(f)) => {
                    if self.report.is_none() {
                        self.report = Some(Ok(match f {
                            Frame::Own(v) => v,
                            f => self.frames.payload(&f).to_vec(),
                        }));
                    }
                }
                Ok(None) => break,
                // The end, or a report cut short (the child died writing it).
                Err(Error::Closed) => self.done = true,
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.done = true
                }
                Err(e @ (Error::MessageTooLarge { .. } | Error::Codec(_))) => {
                    if self.report.is_none() {
                        self.report = Some(Err(e));
                    }
                    self.done = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The report, if a whole one arrived (decoded).
    pub(crate) fn take(&mut self) -> Option<Result<Report>> {
        match self.report.take()? {
            Ok(bytes) => Some(codec::decode(&bytes)),
            Err(e) => Some(Err(e)),
        }
    }
}

/// Everything a forked child needs that is prepared in the parent: the panic
/// hook, the `RUST_BACKTRACE` setting, and std's stdout flushed and locked (so
/// the child neither repeats the parent's buffered output nor inherits a lock
/// held by another thread). Hold the returned guard across `fork`, then
/// [`ForkPrep::parent`] or [`ForkPrep::child`].
pub(crate) struct ForkPrep {
    stdout: Option<std::io::StdoutLock<'static>>,
}

/// Set in a forked child whose parent did not flush and hold stdout across
/// the fork: stdout's lock may be held by a vanished thread, and its buffer
/// may hold the parent's bytes, so the child does not flush it at exit.
static STDOUT_UNTOUCHABLE: AtomicBool = AtomicBool::new(false);

impl ForkPrep {
    /// Call in the parent, right before `fork`. With `flush_stdout`, waits
    /// for any other thread that holds std's stdout lock to release it, as
    /// CPython's `flush()` of `sys.stdout` before a fork waits for the
    /// stream's lock.
    pub(crate) fn new(flush_stdout: bool) -> ForkPrep {
        install_panic_hook();
        read_backtrace_env();
        let stdout = flush_stdout.then(|| {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.flush();
            stdout
        });
        ForkPrep { stdout }
    }

    /// In the parent after `fork`.
    pub(crate) fn parent(self) {
        drop(self.stdout);
    }

    /// In the child right after `fork`, before anything else. Takes no lock
    /// and allocates nothing.
    pub(crate) fn child(self) {
        // This thread is the copy of the one that locked stdout (same thread
        // id), so releasing its guard leaves stdout unlocked and empty.
        STDOUT_UNTOUCHABLE.store(self.stdout.is_none(), Ordering::Relaxed);
        drop(self.stdout);
        panics::forget_parent_state();
    }
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
            let (message, backtrace) =
                take_child_panic().unwrap_or_else(|| ("panic".to_string(), String::new()));
            (Report::Panicked { message, backtrace }, 1)
        }
    };
    let _ = write_report(report_fd.as_fd(), &report);
    drop(report_fd);
    exit_child(code)
}

/// The end of every child: join non-daemon children, end daemon ones, flush
/// the standard streams, and `_exit` without running the parent's `atexit`
/// handlers or the rest of `main`.
pub(crate) fn exit_child(code: i32) -> ! {
    super::registry::at_exit();
    // A forked child starts with stdout unlocked and empty (see `ForkPrep`),
    // unless its parent left stdout as it was.
    if !STDOUT_UNTOUCHABLE.load(Ordering::Relaxed) {
        let _ = std::io::stdout().flush();
    }
    // SAFETY: `_exit` ends the process at once; nothing after it runs.
    unsafe { libc::_exit(code) }
}

/// Reports a bootstrap failure on `fd` (best effort) and exits with code 1.
fn fail_bootstrap(fd: Option<&OwnedFd>, message: String) -> ! {
    write_stderr_raw(&format!("multiproc: child bootstrap failed: {message}\n"));
    if let Some(fd) = fd {
        let _ = write_report(fd.as_fd(), &Report::BootstrapFailed(message));
    }
    exit_child(1)
}

/// The process side of [`crate::init`]: enters a spawned child (never
/// returns there); in any other process returns at once.
pub(crate) fn init() {
    super::helper::register();
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
    // A target may run from a constructor (`test_support!`), before std's
    // runtime sets SIGPIPE to ignored: do as std does, so that writing to a
    // closed pipe returns `Error::Closed` instead of killing the child.
    // SAFETY: plain syscall; SIG_IGN needs no handler.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
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
    let (msg, fds) = read_checked_boot(
        &sock,
        "the child runs a different binary than the parent (was it rebuilt or replaced?)",
    );
    if msg.close_others {
        let mut keep: Vec<RawFd> = vec![0, 1, 2, sock.as_raw_fd()];
        keep.extend(fds.iter().map(|f| f.as_raw_fd()));
        keep.extend_from_slice(&msg.keep);
        crate::sys::fds::close_all_but(&mut keep);
    }
    if fds.len() != msg.nfds as usize {
        fail_bootstrap(
            Some(&sock),
            format!(
                "{} descriptors came with the start message, which names {}",
                fds.len(),
                msg.nfds
            ),
        );
    }
    if msg.identity.daemon {
        // After `execve` (the spawn copies nothing), and checked against the
        // parent's pid: a parent that died before this line is noticed here.
        crate::sys::liveness::set_parent_death_signal(msg.identity.parent_pid);
    }
    let im = Importer::new(msg.args, fds);
    CURRENT.set_child(msg.identity);
    let runner = resolve_runner(&sock, msg.runner_offset);
    run_child(sock, runner, im)
}

/// The child side of the *forkserver* method, in a child the fork server has
/// just forked (a single-threaded process): reads the [`BootMsg`] from the
/// bootstrap socket and runs the target as a spawned child does, with the
/// descriptors that came with the request (`args`, in slot order) instead of
/// inherited numbers. The peer check of [`init`] does not apply (the peer is
/// the requester, and the server checked it); the binary check does.
pub(crate) fn run_forkserver_child(sock: OwnedFd, mut args: Vec<OwnedFd>) -> ! {
    let (msg, extra) = read_checked_boot(
        &sock,
        "the fork server runs a different binary than its client",
    );
    if !extra.is_empty() || args.len() != msg.nfds as usize + msg.keep.len() {
        fail_bootstrap(
            Some(&sock),
            format!(
                "a forkserver child got {} descriptors for a start message naming {} and {} \
                 opted in ({} on the bootstrap socket)",
                args.len(),
                msg.nfds,
                msg.keep.len(),
                extra.len()
            ),
        );
    }
    // The opted-in descriptors go to their numbers, after moving the
    // bootstrap socket and the handed-off ones off those numbers.
    let passed = args.split_off(msg.nfds as usize);
    let mut sock = sock;
    let mut held: Vec<&mut OwnedFd> = std::iter::once(&mut sock).chain(args.iter_mut()).collect();
    // SAFETY: the fork server's child closed every descriptor but its
    // stdio, the bootstrap socket and the request's descriptors, which are
    // all in `held` or `passed`.
    if let Err(why) = unsafe { crate::sys::fds::place_at_numbers(passed, &msg.keep, &mut held) } {
        fail_bootstrap(Some(&sock), why);
    }
    let im = Importer::new(msg.args, args);
    CURRENT.set_child(msg.identity);
    let runner = resolve_runner(&sock, msg.runner_offset);
    run_child(sock, runner, im)
}

/// Reads the [`BootMsg`] from the bootstrap socket and checks that this
/// process runs the sender's binary; any failure is reported on the socket
/// and ends the child (`mismatch` says what a different binary means here).
/// Also returns the descriptors that came with the message.
fn read_checked_boot(sock: &OwnedFd, mismatch: &str) -> (BootMsg, Vec<OwnedFd>) {
    let mut reader = crate::sys::scm::ScmReader::new(sock.as_fd());
    let msg = match read_boot(&mut reader) {
        Ok(m) => m,
        Err(e) => fail_bootstrap(
            Some(sock),
            e.to_string()
                .trim_start_matches("child bootstrap failed: ")
                .into(),
        ),
    };
    if reader.truncated() {
        fail_bootstrap(
            Some(sock),
            "descriptors that came with the start message were lost".into(),
        );
    }
    match BinaryId::current() {
        Ok(id) if id == msg.binary => (msg, reader.into_fds()),
        Ok(_) => fail_bootstrap(Some(sock), mismatch.into()),
        Err(e) => fail_bootstrap(Some(sock), e.to_string()),
    }
}

/// The runner a bootstrap message names, validated (see [`fnref::resolve`]);
/// a bad name is reported on the socket and ends the child.
fn resolve_runner(sock: &OwnedFd, name: i64) -> Runner {
    match fnref::resolve::<Runner>(name) {
        Ok(r) => r,
        Err(e) => fail_bootstrap(
            Some(sock),
            format!(
                "the target cannot be found in this binary ({})",
                e.to_string().trim_start_matches("child bootstrap failed: ")
            ),
        ),
    }
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

/// Whether [`check_bootstrapped`] found this process fit to start processes.
static BOOTSTRAP_CHECKED: AtomicBool = AtomicBool::new(false);

/// Refuses to start processes in a spawned child whose program did not call
/// [`init`] first: it is running `main` again instead of its target, and every
/// process it started would do the same, without end (CPython's "attempt to
/// start a new process before the current process has finished its
/// bootstrapping phase").
///
/// Such a child reports the mistake to its parent (whose `join` returns
/// [`Error::Bootstrap`]), prints it, and exits with code 1. If the marker
/// variable names no bootstrap socket, the caller gets the error instead.
pub(crate) fn check_bootstrapped() -> Result<()> {
    if BOOTSTRAP_CHECKED.load(Ordering::Relaxed) {
        return Ok(());
    }
    // `init` removes the marker before it runs a target: a process that still
    // carries it never called `init`.
    let Some(raw) = std::env::var_os(BOOT_ENV) else {
        BOOTSTRAP_CHECKED.store(true, Ordering::Relaxed);
        return Ok(());
    };
    let message = "this program was started by multiproc as a spawned child process, but \
                   it used multiproc without calling `multiproc::init()` first, so it ran \
                   `main` again instead of its target (and every process it started would do \
                   the same). Add `multiproc::init();` as the first line of `main` (in a test \
                   crate: `multiproc::test_support!();` at the top level)"
        .to_string();
    let fd: Option<RawFd> = raw.to_str().and_then(|s| s.parse().ok());
    let sock = fd.filter(|&fd| fd >= 3).and_then(|fd| {
        // SAFETY: only borrowed for the duration of this check.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        crate::sys::fds::is_a(b, rustix::fs::FileType::Socket).then_some(b)
    });
    match sock {
        Some(b) => match b.try_clone_to_owned() {
            Ok(own) => fail_bootstrap(Some(&own), message),
            Err(_) => fail_bootstrap(None, message),
        },
        None => Err(Error::bootstrap(format!(
            "{BOOT_ENV} is set ({raw:?}) but names no bootstrap socket: {message}"
        ))),
    }
}
