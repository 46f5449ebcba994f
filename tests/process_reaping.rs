//! Zombies and descriptor leaks. The tests here take one lock, so that no
//! other test's processes or descriptors disturb the counts.

multiproc::test_support!();

use multiproc::{active_children, Process, StartMethod};
use std::time::{Duration, Instant};

fn noop() {}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[macro_use]
mod common;

use common::{builder, partner, scaled};

start_methods! {
    no_zombies_and_no_descriptor_leaks,
    dropped_handle_is_reaped_without_further_calls,
    a_live_child_costs_the_parent_one_descriptor(
        forkserver: ignore = "a forkserver child holds its report and status sockets and its pidfd"
    ),
    a_child_that_closes_its_report_socket_early_is_still_reaped(
        forkserver: ignore = "watched through the fork server's status socket, not the report socket"
    ),
    a_child_whose_grandchild_keeps_its_report_socket_is_reaped_by_active_children,
    a_child_started_by_a_finished_thread_is_reaped_by_the_next_start,
}

/// Runs every other test of this file again in a process that has no
/// io_uring (the registry keeps report sockets in the descriptor table and
/// its epoll set): both ways of watching children must keep working.
#[test]
fn every_test_passes_without_io_uring() {
    const NO_URING: &str = "MULTIPROC_NO_IO_URING";
    if std::env::var_os(NO_URING).is_some() {
        // This is that process.
        #[cfg(feature = "test-hooks")]
        assert!(!multiproc::process::__test::parks_report_sockets());
        return;
    }
    // Its pipes must not disturb the descriptor counts of the other tests.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(NO_URING, "1")
        .args(["--test-threads", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the tests failed without io_uring:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("test result: ok"), "{stdout}");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Children of this process in state `Z` (zombies), from `/proc/*/stat`.
fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 1 && f[0] == "Z" && f[1].parse::<i32>() == Ok(me) {
            out.push(pid);
        }
    }
    out
}

/// Children of `m` and of its partner method (`common::partner`) mixed:
/// 2,000 when fork leads (fork and spawn, as before the matrix), 500 for the
/// other pairs (`common::scaled`).
fn no_zombies_and_no_descriptor_leaks(m: StartMethod) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let methods = [m, partner(m)];
    // Warm up (lazily opened descriptors, the reaper thread, the at-exit
    // hook, a fork server's connection).
    drop(builder(m).start(sleep_ms, (50,)).unwrap());
    for m in methods {
        builder(m).start(noop, ()).unwrap().join().unwrap();
    }
    let before = open_fds();

    // 2,000 short children started without join: handles dropped at once.
    for i in 0..scaled(m, &[StartMethod::Fork], 2000) {
        let m = methods[i % 2];
        drop(Process::builder().start_method(m).start(noop, ()).unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !active_children().is_empty() {
        assert!(
            Instant::now() < deadline,
            "children still running after 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(zombie_children(), Vec::<i32>::new(), "zombies left behind");

    // Joined children, both methods, leave no descriptor behind either.
    for m in methods {
        for _ in 0..50 {
            let mut p = Process::builder().start_method(m).start(noop, ()).unwrap();
            p.join().unwrap();
        }
    }
    // Orphans' pidfds close as the reaper thread lets go of them, so the
    // count settles rather than being exact at every instant; a leak would
    // add descriptors per child, thousands here.
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds() > before {
        assert!(
            Instant::now() < deadline,
            "descriptors leaked: {} open, {before} before",
            open_fds()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms))
}

fn dropped_handle_is_reaped_without_further_calls(m: StartMethod) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Drop the handle of a running child, then start nothing and call
    // nothing: the reaper thread must reap it when it ends.
    let p = builder(m).start(sleep_ms, (200,)).unwrap();
    let pid = p.pid();
    drop(p);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        match st {
            Err(_) => break, // reaped: gone from /proc
            Ok(s) => assert!(Instant::now() < deadline, "child {pid} not reaped: {s}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn hold(gate: multiproc::Event) {
    gate.wait();
}

/// Every descriptor the parent holds is copied into each forked child (and
/// closed there), so a start costs more with each one held per living
/// child: while its handle lives, a fork or spawn child costs the parent its
/// report socket and nothing else (the pidfd comes only when needed).
fn a_live_child_costs_the_parent_one_descriptor(m: StartMethod) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Warm up (the registry's epoll set, the event's own descriptors).
    builder(m).start(noop, ()).unwrap().join().unwrap();
    let gate = multiproc::Event::new().unwrap();
    let before = open_fds();
    const N: usize = 100;
    let live: Vec<Process<()>> = (0..N)
        .map(|_| builder(m).start(hold, (gate.clone(),)).unwrap())
        .collect();
    // Starting more children while these live also reaps (nothing): no
    // descriptor is opened for a child that has not ended.
    builder(m).start(noop, ()).unwrap().join().unwrap();
    let held = open_fds().saturating_sub(before);
    // With an io_uring, the report sockets of live children are parked in
    // its fixed-file table once more than a few (16) live: those are not in
    // the descriptor table.
    #[cfg(feature = "test-hooks")]
    if multiproc::process::__test::parks_report_sockets() {
        assert!(
            held <= 16 + 2,
            "{held} descriptors held for {N} live children (at most 16 expected with io_uring)"
        );
    }
    // Living children whose handles were dropped: their pidfds, watched by
    // the reaper thread and the registry, and nothing more (the reaper
    // thread's wake-up pipe once). Given a moment to reach the reaper.
    for _ in 0..N {
        drop(builder(m).start(hold, (gate.clone(),)).unwrap());
    }
    std::thread::sleep(Duration::from_millis(300));
    let held_with_orphans = open_fds().saturating_sub(before);
    gate.set();
    for mut p in live {
        p.join().unwrap();
    }
    assert!(
        held <= N + 2,
        "{held} descriptors held for {N} live children (at most one each expected)"
    );
    assert!(
        held_with_orphans <= 2 * N + 4,
        "{held_with_orphans} descriptors held for {N} live children and {N} orphans \
         (at most one each expected)"
    );
}

/// Closes every descriptor from 3 up (the report socket among them), then
/// lives on a while and exits without a report.
fn close_all_then_linger(ms: u64) {
    // SAFETY: plain syscalls; nothing in this process uses a descriptor
    // from 3 up afterwards (it exits without returning to the library).
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::usleep((ms * 1000) as libc::c_uint);
        libc::_exit(7);
    }
}

/// Is `pid` still in the process table (running or a zombie)?
fn exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The registry watches a child's report socket for the hang-up its exit
/// causes; a child that closes the socket and runs on is then watched
/// through its pidfd, and reaped when it ends by a later `start`, its
/// handle still alive and never asked.
fn a_child_that_closes_its_report_socket_early_is_still_reaped(m: StartMethod) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let p = builder(m).start(close_all_then_linger, (300,)).unwrap();
    let pid = p.pid();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Starts (which reap what has ended) while the child lingers without
    // its report socket, and after it has exited.
    while exists(pid) {
        assert!(Instant::now() < deadline, "child {pid} never reaped");
        builder(m).start(noop, ()).unwrap().join().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(p.exitcode(), Some(7));
}

/// Forks a grandchild (with `fork` itself, so it keeps every descriptor,
/// the report socket among them) that outlives this child; returns its pid.
fn fork_a_lingering_grandchild() -> i32 {
    // SAFETY: the grandchild only sleeps and exits (async-signal-safe calls).
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::sleep(120);
            libc::_exit(0);
        }
        pid
    }
}

/// A child ends while a grandchild keeps its report socket open, so the
/// socket never hangs up: `active_children` still finds it ended.
fn a_child_whose_grandchild_keeps_its_report_socket_is_reaped_by_active_children(m: StartMethod) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut p = builder(m).start(fork_a_lingering_grandchild, ()).unwrap();
    let pid = p.pid();
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        if !active_children().iter().any(|c| c.pid == pid) {
            break false;
        }
        if Instant::now() > deadline {
            break true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let gone = !exists(pid);
    let grandchild = p.join().unwrap();
    assert!(grandchild > 0);
    // SAFETY: plain syscall.
    unsafe { libc::kill(grandchild, libc::SIGKILL) };
    assert!(!listed, "ended child {pid} still listed as active");
    assert!(gone, "child {pid} left as a zombie");
    assert_eq!(p.exitcode(), Some(0));
}

/// A child started from a thread that has ended since (the thread that
/// armed the watch on its report socket), held but never joined: the next
/// `start` reaps it once it has ended, leaving no zombie.
fn a_child_started_by_a_finished_thread_is_reaped_by_the_next_start(m: StartMethod) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gate = multiproc::Event::new().unwrap();
    let g = gate.clone();
    let held: Process<()> = std::thread::spawn(move || builder(m).start(hold, (g,)).unwrap())
        .join()
        .unwrap();
    let pid = held.pid();
    gate.set();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Each start reaps the children that have ended.
        builder(m).start(noop, ()).unwrap().join().unwrap();
        // Gone from /proc: ended and reaped (not by `held`, never asked).
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        assert!(Instant::now() < deadline, "child {pid} was never reaped");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The registry kept the status for the handle.
    assert_eq!(held.exitcode(), Some(0));
}
