//! Section `start`: process start + join latency per start method, and 32
//! processes started then joined.

use crate::{secs, Bench, Unit};
use multiproc::{Process, StartMethod};
use std::time::Instant;

fn noop() {}

fn start_join(method: StartMethod, n: usize) -> f64 {
    let t0 = Instant::now();
    for _ in 0..n {
        let mut p = Process::builder()
            .start_method(method)
            .start(noop, ())
            .expect("start");
        p.join().expect("join");
    }
    secs(t0) / n as f64 * 1e3
}

fn burst32(method: StartMethod) -> f64 {
    let t0 = Instant::now();
    let mut ps: Vec<_> = (0..32)
        .map(|_| {
            Process::builder()
                .start_method(method)
                .start(noop, ())
                .expect("start")
        })
        .collect();
    for p in &mut ps {
        p.join().expect("join");
    }
    secs(t0) * 1e3
}

/// Records the section's figures.
pub fn run(b: &mut Bench) {
    let n_fork = b.n(100);
    let n_spawn = b.n(50);
    b.record_vs_floor(
        "process_start_join_fork_ms",
        Unit::Ms("ms/process"),
        "fork_exit_waitpid_us",
        || start_join(StartMethod::Fork, n_fork),
    );
    b.record_vs_floor(
        "process_start32_join_all_fork_ms",
        Unit::Ms("ms total"),
        "fork32_then_reap_all_ms",
        || burst32(StartMethod::Fork),
    );
    b.record_vs_floor(
        "process_start_join_spawn_ms",
        Unit::Ms("ms/process"),
        "fork_exec_static_waitpid_us",
        || start_join(StartMethod::Spawn, n_spawn),
    );
    b.record(
        "process_start32_join_all_spawn_ms",
        Unit::Ms("ms total"),
        || burst32(StartMethod::Spawn),
    );
}
