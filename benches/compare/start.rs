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

/// Blocks until the parent sets `gate` (a live, idle child).
fn hold(gate: multiproc::Event) {
    gate.wait();
}

/// `start_join` with `live` idle children alive the whole time: the cost of
/// a start must not grow with the number of children (reaping is
/// O(finished)). The idle children are spawned, so they share no pages with
/// this process: forked ones would make the kernel's copy-on-write and
/// `anon_vma` bookkeeping, not the library, grow with their number.
fn start_join_with_live(method: StartMethod, n: usize, live: usize) -> f64 {
    let gate = multiproc::Event::new().expect("event");
    let idle: Vec<Process<()>> = (0..live)
        .map(|_| {
            Process::builder()
                .start_method(StartMethod::Spawn)
                .start(hold, (gate.clone(),))
                .expect("start idle child")
        })
        .collect();
    let t = start_join(method, n);
    gate.set();
    for mut p in idle {
        p.join().expect("join idle child");
    }
    t
}

/// `start_join` from a parent holding `mib` MiB of touched memory: a start
/// that copies the parent's page tables grows with it; `posix_spawn` does not.
fn start_join_big_parent(method: StartMethod, n: usize, mib: usize) -> f64 {
    let mut ballast = vec![0u8; mib << 20];
    for page in ballast.chunks_mut(4096) {
        page[0] = 1;
    }
    let t = start_join(method, n);
    std::hint::black_box(&ballast);
    t
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
    b.record_paired(
        "process_start_join_fork_2000_live_ms",
        Unit::Ms("ms/process"),
        "process_start_join_fork_ms",
        "fork_exit_waitpid_2000_live_us",
        || start_join_with_live(StartMethod::Fork, n_fork, 2000),
    );
    // The same figure against the kernel's cost of what a live child needs
    // of its parent (one descriptor, copied by each fork and closed by the child).
    b.again_vs_floor(
        "process_start_join_fork_2000_live_vs_fds_ms",
        "fork_close_fds_exit_waitpid_2000_live_2000_fds_us",
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
    // Spawn execs this program: the floor that counts its own start-up
    // (dynamic loading, the Rust runtime) is starting it and nothing else.
    b.again_vs_floor(
        "process_start_join_spawn_vs_self_ms",
        "fork_exec_self_waitpid_us",
    );
    b.record_vs_floor(
        "process_start_join_spawn_1gib_parent_ms",
        Unit::Ms("ms/process"),
        "posix_spawn_static_1gib_parent_us",
        || start_join_big_parent(StartMethod::Spawn, n_spawn, 1024),
    );
    b.again_vs_floor(
        "process_start_join_spawn_1gib_parent_vs_self_ms",
        "fork_exec_self_waitpid_us",
    );
    b.record(
        "process_start32_join_all_spawn_ms",
        Unit::Ms("ms total"),
        || burst32(StartMethod::Spawn),
    );
    // The first start launches the fork server: warm it up outside the timing.
    start_join(StartMethod::Forkserver, 1);
    b.record_vs_floor(
        "process_start_join_forkserver_ms",
        Unit::Ms("ms/process"),
        "fork_exit_waitpid_us",
        || start_join(StartMethod::Forkserver, n_fork),
    );
    b.record(
        "process_start32_join_all_forkserver_ms",
        Unit::Ms("ms total"),
        || burst32(StartMethod::Forkserver),
    );
}
