//! A forked child takes none of the locks another thread of its parent may
//! hold at the fork (stdout's, the process identity's, std's panic and
//! backtrace locks, the after-fork hook registry), never repeats output its
//! parent had buffered, keeps a resource that sits on descriptor 0, and gets
//! `Error::Closed` (not SIGPIPE) when writing to a closed pipe.
//!
//! The descriptor-0 case runs under every start method (in one fresh
//! process); closed pipes are in the start-method matrix.
//!
//! Scenarios that change process-wide state (descriptor 0, stdout contents,
//! `RUST_BACKTRACE`) run in a fresh copy of this test binary: the `inner_*`
//! tests are ignored in normal runs and started by their outer test.

multiproc::test_support!();

use multiproc::{current_process, Connection, Error, Pipe, Process, StartMethod};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

#[macro_use]
mod common;

use common::METHODS;

// Every other test here is about fork itself (what a forked child inherits
// from a multithreaded parent), so it is not in the start-method matrix.
start_methods! {
    writing_to_a_closed_pipe_gives_closed_not_sigpipe,
}
/// Only turns a hang into a failure.
const LONG: Duration = Duration::from_secs(60);

fn fork() -> multiproc::Builder {
    Process::builder().start_method(StartMethod::Fork)
}

/// Runs the ignored test `name` in a fresh copy of this binary, with `env`
/// added; returns its stdout after checking that it passed (killing it if it
/// hangs).
fn run_inner(name: &str, env: &[(&str, &str)]) -> String {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    });
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > LONG * 3 {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    // Only the end of a long stderr (panicking threads print backtraces).
    let tail = &stderr[stderr.len().saturating_sub(4000)..];
    assert!(
        status.is_some_and(|s| s.success()),
        "{name} failed or hung: {status:?}\nstdout:\n{stdout}\nstderr (end):\n{tail}"
    );
    stdout
}

/// Sets its flag when dropped: stops a helper thread even if the test fails.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Joins `p`, killing it if it is still running after `timeout` (so that a
/// failing test leaves no hung child behind).
fn join_or_kill<R: serde::de::DeserializeOwned>(
    p: &mut Process<R>,
    timeout: Duration,
) -> multiproc::Result<R> {
    let r = p.join_timeout(timeout);
    if matches!(r, Err(Error::Timeout)) {
        let _ = p.kill();
        let _ = p.wait(None);
    }
    r
}

fn flush_stdout() -> bool {
    std::io::stdout().flush().is_ok()
}

#[test]
fn fork_while_another_thread_holds_the_stdout_lock() {
    let (tx, rx) = mpsc::channel();
    let holder = std::thread::spawn(move || {
        let lock = std::io::stdout().lock();
        tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(lock);
    });
    rx.recv().unwrap();
    // The child uses stdout: it must not find the lock held by a thread that
    // does not exist in it.
    let mut p = fork().start(flush_stdout, ()).unwrap();
    assert!(join_or_kill(&mut p, LONG).unwrap());
    holder.join().unwrap();
}

fn name_len() -> usize {
    current_process().name.len()
}

/// In a child with a long name: forks `n` grandchildren while another thread
/// calls `current_process()` without pause. Returns how many finished.
fn fork_while_reading_identity(n: u32) -> u32 {
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let reader = {
        let stop = stop.0.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::black_box(current_process());
            }
        })
    };
    let mut finished = 0;
    for _ in 0..n {
        let mut p = fork().start(name_len, ()).unwrap();
        match join_or_kill(&mut p, Duration::from_secs(20)) {
            Ok(len) if len > 0 => finished += 1,
            _ => break,
        }
    }
    drop(stop);
    reader.join().unwrap();
    finished
}

#[test]
fn fork_while_another_thread_is_inside_current_process() {
    // A long name makes every `current_process()` copy it.
    let mut p = fork()
        .name("n".repeat(200_000))
        .start(fork_while_reading_identity, (30,))
        .unwrap();
    assert_eq!(join_or_kill(&mut p, LONG * 5).unwrap(), 30);
}

static HOOK_RAN: AtomicBool = AtomicBool::new(false);

fn mark_hook() {
    HOOK_RAN.store(true, Ordering::Relaxed);
}

fn other_hook() {}

fn hook_ran() -> bool {
    HOOK_RAN.load(Ordering::Relaxed)
}

#[test]
fn after_fork_hooks_always_run_while_another_thread_registers() {
    multiproc::util::register_after_fork(mark_hook);
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let registrar = {
        let stop = stop.0.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                multiproc::util::register_after_fork(other_hook);
            }
        })
    };
    let mut ran = 0;
    for _ in 0..20 {
        let mut p = fork().start(hook_ran, ()).unwrap();
        ran += join_or_kill(&mut p, LONG).unwrap() as u32;
    }
    drop(stop);
    registrar.join().unwrap();
    assert_eq!(ran, 20, "the after-fork hook was skipped in some children");
    assert!(!hook_ran(), "hooks run in children only");
}

fn boom() {
    panic!("child boom")
}

fn nothing() {}

#[test]
fn fork_while_another_thread_is_panicking() {
    // RUST_BACKTRACE=1 makes std's panic hook hold its backtrace lock for
    // most of each panic (capturing and printing the backtrace).
    run_inner(
        "inner_fork_while_another_thread_is_panicking",
        &[("RUST_BACKTRACE", "1")],
    );
}

#[test]
#[ignore = "run in a fresh process by fork_while_another_thread_is_panicking"]
fn inner_fork_while_another_thread_is_panicking() {
    // Install multiproc's hook first, so the panicking thread runs through it.
    fork().start(nothing, ()).unwrap().join().unwrap();
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let panicker = {
        let stop = stop.0.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::panic::catch_unwind(|| panic!("a parent thread panics"));
            }
        })
    };
    for i in 0..20 {
        // Each child panics too: its report must reach us.
        let mut p = fork().start(boom, ()).unwrap();
        match join_or_kill(&mut p, Duration::from_secs(20)) {
            Err(e) => {
                let f = e
                    .process_failure()
                    .unwrap_or_else(|| panic!("child {i}: {e:?}"));
                assert!(
                    f.panic_message
                        .as_deref()
                        .unwrap_or("")
                        .contains("child boom"),
                    "{f:?}"
                );
            }
            Ok(()) => panic!("child {i} did not panic"),
        }
    }
    drop(stop);
    panicker.join().unwrap();
}

fn write_stdout(text: String, tail: String) {
    let mut out = std::io::stdout();
    out.write_all(text.as_bytes()).unwrap();
    // No newline and no flush: written when the child exits.
    out.write_all(tail.as_bytes()).unwrap();
}

#[test]
fn buffered_stdout_is_not_repeated_by_a_forked_child() {
    let out = run_inner("inner_buffered_stdout", &[]);
    assert_eq!(out.matches("parent-partial").count(), 1, "{out}");
    assert_eq!(out.matches("child-line").count(), 1, "{out}");
    assert_eq!(out.matches("child-unterminated").count(), 1, "{out}");
    assert_eq!(out.matches("parent-end").count(), 1, "{out}");
}

#[test]
#[ignore = "run in a fresh process by buffered_stdout_is_not_repeated_by_a_forked_child"]
fn inner_buffered_stdout() {
    let mut out = std::io::stdout();
    // No newline: stays in stdout's buffer until the next newline or flush.
    out.write_all(b"<parent-partial>").unwrap();
    let mut p = fork()
        .start(
            write_stdout,
            (
                "<child-line>\n".to_string(),
                "<child-unterminated>".to_string(),
            ),
        )
        .unwrap();
    join_or_kill(&mut p, LONG).unwrap();
    out.write_all(b"<parent-end>\n").unwrap();
    out.flush().unwrap();
}

fn recv_and_stdin(r: Connection) -> (Vec<u8>, String) {
    let msg = r.recv_bytes().unwrap_or_default();
    let stdin = std::fs::read_link("/proc/self/fd/0")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    (msg, stdin)
}

#[test]
fn a_resource_on_descriptor_0_survives_the_handoff() {
    run_inner("inner_resource_on_descriptor_0", &[]);
}

#[test]
#[ignore = "run in a fresh process by a_resource_on_descriptor_0_survives_the_handoff"]
fn inner_resource_on_descriptor_0() {
    for m in METHODS {
        // SAFETY: closing our own stdin in a process that does not use it.
        unsafe { libc::close(0) };
        let (r, w) = Pipe::simplex().unwrap();
        assert_eq!(r.as_raw_fd(), 0, "the reader should land on descriptor 0");
        let mut p = Process::builder()
            .start_method(m)
            .start(recv_and_stdin, (r,))
            .unwrap();
        w.send_bytes(b"through fd 0").unwrap();
        let (msg, stdin) = join_or_kill(&mut p, LONG).unwrap();
        assert_eq!(msg, b"through fd 0", "{m:?}");
        assert_eq!(stdin, "/dev/null", "{m:?}: the child's stdin");
    }
}

fn write_to_closed_pipe(w: Connection) -> String {
    match w.send_bytes(b"nobody reads this") {
        Err(Error::Closed) => "closed".into(),
        other => format!("{other:?}"),
    }
}

fn writing_to_a_closed_pipe_gives_closed_not_sigpipe(m: StartMethod) {
    let (r, w) = Pipe::simplex().unwrap();
    drop(r);
    let mut p = Process::builder()
        .start_method(m)
        .start(write_to_closed_pipe, (w,))
        .unwrap();
    assert_eq!(join_or_kill(&mut p, LONG).unwrap(), "closed", "{m:?}");
}

fn double(x: u64) -> u64 {
    x * 2
}

#[test]
fn a_pool_replaces_forked_workers_while_this_thread_holds_stdout() {
    // Workers are replaced (maxtasksperchild) by the pool's own thread while
    // this thread holds stdout's lock, as a program writing results in a
    // loop does: replacing a worker must not wait for that lock.
    let pool = multiproc::Pool::builder()
        .processes(1)
        .maxtasksperchild(1)
        .start_method(StartMethod::Fork)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut out = std::io::stdout().lock();
        let r = pool.map(double, (0..6u64).collect::<Vec<_>>());
        let _ = out.flush();
        tx.send(r.map_err(|e| e.to_string())).unwrap();
    });
    let Ok(got) = rx.recv_timeout(LONG) else {
        // The stuck thread holds stdout: the harness could not even report.
        eprintln!("the pool hung while another thread held stdout's lock");
        std::process::abort();
    };
    assert_eq!(got.unwrap(), vec![0, 2, 4, 6, 8, 10]);
    t.join().unwrap();
}
