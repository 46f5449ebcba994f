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
    // The reaper thread briefly holds duplicates of orphans' pidfds, so the
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
