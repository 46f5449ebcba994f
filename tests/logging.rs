//! What the crate reports through the `log` facade (CPython's
//! `multiprocessing` logger): a replaced pool worker, a failed handshake at
//! a listener, the resource tracker's leak warning; and `log_to_stderr`.
//!
//! The test process installs a capturing logger; the children that check
//! standard error are spawned (no logger inherited) with their descriptor 2
//! on a pipe.

multiproc::test_support!();

use log::{Level, LevelFilter, Log, Metadata, Record};
use multiproc::connection::{Address, Client, Listener, Pipe};
use multiproc::pool::Pool;
use multiproc::{Connection, Process, SharedMemory, StartMethod};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

struct Capture;

static RECORDS: Mutex<Vec<(Level, String, String)>> = Mutex::new(Vec::new());
static CAPTURE: Capture = Capture;
/// The logger's per-record lock, as many loggers have one.
static GATE: Mutex<()> = Mutex::new(());

impl Log for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &Record<'_>) {
        let _gate = GATE.lock().unwrap_or_else(|e| e.into_inner());
        RECORDS.lock().unwrap_or_else(|e| e.into_inner()).push((
            r.level(),
            r.target().to_string(),
            r.args().to_string(),
        ));
    }
    fn flush(&self) {}
}

fn capture() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&CAPTURE).unwrap();
        log::set_max_level(LevelFilter::Trace);
    });
}

/// Waits (bounded) for a captured record matching `want`; returns it.
fn wait_for_record(
    what: &str,
    want: impl Fn(&(Level, String, String)) -> bool,
) -> (Level, String, String) {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(r) = RECORDS.lock().unwrap().iter().find(|r| want(r)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no record {what}; got {:?}",
            RECORDS.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads `conn`'s descriptor raw until end of file (bounded).
fn read_to_eof(conn: Connection) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rustix::io::read(conn.as_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&out).into_owned());
    });
    rx.recv_timeout(LONG).expect("standard error never closed")
}

/// Points this process's descriptor 2 at `w`.
fn stderr_to(w: &Connection) {
    // SAFETY: dup2 onto descriptor 2, which this process owns; `w` stays
    // open for the call.
    assert_eq!(unsafe { libc::dup2(w.as_raw_fd(), 2) }, 2);
}

fn sqr(x: u64) -> u64 {
    x * x
}

#[test]
fn a_killed_pool_worker_is_logged_as_replaced() {
    capture();
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.apply(sqr, (3,)).unwrap(), 9);
    let pid = pool.worker_pids()[0];
    // SAFETY: plain syscall on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let want = format!("pool worker {pid} exited with exitcode -9; a new worker replaces it");
    let (level, target, _) = wait_for_record(&want, |r| r.2 == want);
    assert_eq!(level, Level::Warn);
    assert_eq!(target, "multiproc::pool");
    // And it was: the pool goes on.
    assert_eq!(pool.apply(sqr, (4,)).unwrap(), 16);
}

#[test]
fn a_wrong_authkey_at_a_listener_is_logged() {
    capture();
    let l = Listener::bind(&Address::arbitrary(), Some(b"right key")).unwrap();
    let addr = l.address().clone();
    let shown = addr.to_string();
    let t = std::thread::spawn(move || Client::connect(&addr, Some(b"wrong key")));
    assert!(l.accept().is_err());
    assert!(t.join().unwrap().is_err());
    let (level, target, msg) = wait_for_record("about the handshake", |r| {
        r.1 == "multiproc::connection" && r.2.contains(&shown)
    });
    assert_eq!(level, Level::Warn);
    assert_eq!(target, "multiproc::connection");
    assert!(msg.contains("authentication failed"), "{msg}");
}

/// A spawned child (no logger inherited) with standard error on `w`: calls
/// `log_to_stderr(Info)`, logs, and meets a client with a wrong key.
fn child_logging_to_stderr(w: Connection) {
    stderr_to(&w);
    drop(w);
    multiproc::log_to_stderr(LevelFilter::Info).unwrap();
    log::info!(target: "multiproc::test", "hello from the child");
    log::debug!(target: "multiproc::test", "below the level");
    log::warn!(target: "another_crate", "not multiproc's");
    let l = Listener::bind(&Address::arbitrary(), Some(b"right key")).unwrap();
    let addr = l.address().clone();
    let t = std::thread::spawn(move || Client::connect(&addr, Some(b"wrong key")));
    assert!(l.accept().is_err());
    let _ = t.join();
    // Calling it again only changes the level.
    multiproc::log_to_stderr(LevelFilter::Error).unwrap();
    log::warn!(target: "multiproc::test", "below the new level");
}

#[test]
fn log_to_stderr_prints_multiprocs_records_in_a_child() {
    let (r, w) = Pipe::simplex().unwrap();
    let mut p = Process::builder()
        .name("logchild")
        .start_method(StartMethod::Spawn)
        .start(child_logging_to_stderr, (w,))
        .unwrap();
    let out = read_to_eof(r);
    p.join_timeout(LONG).unwrap();
    assert!(
        out.contains("[INFO/logchild] hello from the child\n"),
        "{out}"
    );
    assert!(
        out.lines().any(
            |l| l.starts_with("[WARNING/logchild] handshake with a client of ")
                && l.contains("authentication failed")
        ),
        "{out}"
    );
    assert!(!out.contains("below the"), "{out}");
    assert!(!out.contains("not multiproc's"), "{out}");
}

/// A spawned child with standard error on `w` creates a named block (and so
/// its own resource tracker, which inherits that standard error), reports
/// the name, and waits to be killed.
fn leaker(w: Connection, report: Connection) {
    stderr_to(&w);
    drop(w);
    let shm = SharedMemory::create(64).unwrap();
    report.send(&shm.name().to_string()).unwrap();
    std::thread::sleep(LONG);
}

#[test]
fn the_resource_tracker_warns_of_leaks_on_stderr() {
    let (r, w) = Pipe::simplex().unwrap();
    let (rep_r, rep_w) = Pipe::simplex().unwrap();
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .start(leaker, (w, rep_w))
        .unwrap();
    let name: String = rep_r.recv().unwrap();
    p.kill().unwrap();
    let _ = p.wait(Some(LONG));
    // The tracker sees the end of its pipe, cleans up, warns, and exits:
    // the last holder of the pipe's write end.
    let out = read_to_eof(r);
    assert!(
        out.contains(
            "[WARNING/resource_tracker] There appear to be 1 leaked shared_memory objects \
             to clean up at shutdown"
        ) && out.contains(&name),
        "{out}"
    );
    assert!(!std::path::Path::new("/dev/shm").join(&name).exists());
}

fn nothing() {}

/// In a child forked while another thread held the logger's lock: meets a
/// client with a wrong key, which the crate would log.
fn forked_child_meets_a_wrong_key() -> u8 {
    let l = Listener::bind(&Address::arbitrary(), Some(b"right key")).unwrap();
    let addr = l.address().clone();
    let t = std::thread::spawn(move || Client::connect(&addr, Some(b"wrong key")));
    assert!(l.accept().is_err());
    assert!(t.join().unwrap().is_err());
    7
}

/// The crate does not log through a logger whose lock another thread of
/// the parent held at the fork: the child would deadlock (it hangs here
/// without the guard, until the deadline fails the test).
#[test]
fn a_child_forked_while_the_logger_is_locked_does_not_deadlock() {
    capture();
    // The crate warns (in the parent, through the logger) about the first
    // fork from a multithreaded process: get that over with first.
    Process::builder()
        .start_method(StartMethod::Fork)
        .start(nothing, ())
        .unwrap()
        .join_timeout(LONG)
        .unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _held = GATE.lock().unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(LONG);
    });
    locked_rx.recv().unwrap();
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .start(forked_child_meets_a_wrong_key, ())
        .unwrap();
    let r = p.join_timeout(LONG);
    if r.is_err() {
        // Deadlocked: end it, so that the failure is reported, not a hang.
        let _ = p.kill();
        let _ = p.wait(Some(LONG));
    }
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(r.unwrap(), 7);
}
