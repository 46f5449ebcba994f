//! Zombies and descriptor leaks. One test in this binary, so that no other
//! test's processes or descriptors disturb the counts.

multiproc::test_support!();

use multiproc::{active_children, Process, StartMethod};
use std::time::{Duration, Instant};

fn noop(_: ()) {}

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

#[test]
fn no_zombies_and_no_descriptor_leaks() {
    // Warm up (lazily opened descriptors, the at-exit hook, ...).
    Process::start(noop, ()).unwrap().join().unwrap();
    Process::builder()
        .start_method(StartMethod::Fork)
        .start(noop, ())
        .unwrap()
        .join()
        .unwrap();
    let before = open_fds();

    // 2,000 short children started without join: handles dropped at once.
    for i in 0..2000 {
        let m = if i % 2 == 0 {
            StartMethod::Spawn
        } else {
            StartMethod::Fork
        };
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
    for m in [StartMethod::Spawn, StartMethod::Fork] {
        for _ in 0..50 {
            let mut p = Process::builder().start_method(m).start(noop, ()).unwrap();
            p.join().unwrap();
        }
    }
    assert_eq!(open_fds(), before, "descriptors leaked");
}
