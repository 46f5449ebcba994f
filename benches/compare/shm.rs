//! Section `shm`: `SharedMemory` create+attach+close+unlink, and `Value`
//! incremented under its lock by two processes (CPython records the latter in
//! its `lock` section, which the harness runs for CPython whenever `shm` is
//! selected).

use crate::{secs, Bench, Unit};
use multiproc::shared::{SharedMemory, Value};
use multiproc::sync::Barrier;
use multiproc::{Process, StartMethod};
use std::time::Instant;

/// `bench_mp.py`'s block size.
const SIZE: usize = 4096;

fn shm_cycle(n: usize) -> f64 {
    let t0 = Instant::now();
    for _ in 0..n {
        let a = SharedMemory::create(SIZE).expect("create");
        let b = SharedMemory::open(a.name()).expect("attach");
        b.close();
        a.unlink().expect("unlink");
        a.close();
    }
    secs(t0) / n as f64 * 1e6
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process.
fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Python's `_value_incr`: wait at the barrier, `n` increments under the lock,
/// wait again. Returns when this process started and ended its increments.
fn value_incr(v: Value<i32>, n: u64, barrier: Barrier) -> (u64, u64) {
    let _ = barrier.wait();
    let t0 = now_ns();
    for _ in 0..n {
        let g = v.lock().expect("lock");
        g.set(g.get() + 1);
    }
    let t1 = now_ns();
    let _ = barrier.wait();
    (t0, t1)
}

/// Two processes increment under the lock. The time is from the first
/// process's first increment to the last one's last (taken in the children,
/// so a parent woken late cannot shrink it).
fn contended(per: u64) -> f64 {
    let v = Value::new(0i32).expect("value");
    let barrier = Barrier::new(3).expect("barrier");
    let mut ps: Vec<_> = (0..2)
        .map(|_| {
            Process::builder()
                .start_method(StartMethod::Fork)
                .start(value_incr, (v.clone(), per, barrier.clone()))
                .expect("start")
        })
        .collect();
    let _ = barrier.wait();
    let _ = barrier.wait();
    let spans: Vec<(u64, u64)> = ps.iter_mut().map(|p| p.join().expect("join")).collect();
    assert_eq!(v.get().expect("get") as u64, 2 * per);
    let start = spans.iter().map(|s| s.0).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.1).max().unwrap_or(0);
    2.0 * per as f64 / ((end.saturating_sub(start)).max(1) as f64 * 1e-9)
}

/// Records the section's figures.
pub fn run(b: &mut Bench) {
    // Start the resource tracker outside the timing (CPython's starts at the
    // first `SharedMemory` of the warm-up run, too).
    let _ = multiproc::shared::tracker::ensure_running();
    let n = b.n(2000);
    b.record_vs_floor(
        "shared_memory_create_attach_close_unlink_us",
        Unit::Us("us/cycle"),
        "shm_create_attach_close_unlink_us",
        || shm_cycle(n),
    );
    let per = b.n(200_000) as u64 / 2;
    b.record_vs_floor(
        "value_lock_2proc_contended_incr_ops_per_s",
        Unit::Rate("ops/s"),
        "sem_lock_2proc_contended_incr_ops_per_s",
        || contended(per),
    );
}
