//! Section `pool`: `Pool(2)` throughput and latency, as `bench_mp.py`'s
//! `sec_pool`, plus CPU-bound scaling from 1 to 2 workers.

use crate::{secs, Bench, Unit};
use multiproc::pool::Pool;
use std::time::Instant;

pub(crate) fn sq(x: u64) -> u64 {
    x.wrapping_mul(x)
}

/// Deliberately CPU-bound: counts the primes below `n` by trial division.
fn count_primes(n: u64) -> u64 {
    (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}

/// The length of a byte payload (Python's `len` on `bytes`).
fn nbytes(v: Vec<u8>) -> u64 {
    v.len() as u64
}

const MIB: usize = 1 << 20;

fn cpu_bound_secs(workers: usize, tasks: usize) -> f64 {
    let pool = Pool::new(workers).expect("pool");
    // Warm the workers up.
    pool.map(count_primes, vec![1000u64; 4]).expect("map");
    let t0 = Instant::now();
    let r = pool
        .map_chunked(count_primes, vec![100_000u64; tasks], 1)
        .expect("map");
    let dt = secs(t0);
    assert_eq!(r.len(), tasks);
    dt
}

/// Records the section's figures.
pub fn run(b: &mut Bench) {
    let pool = Pool::new(2).expect("pool");
    let check = pool.map(sq, 0..1000u64).expect("map");
    assert_eq!(check, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());

    let n1 = b.n(1_000_000);
    b.record(
        "pool2_map_default_chunksize_tasks_per_s",
        Unit::Rate("tasks/s"),
        || {
            let t0 = Instant::now();
            let r = pool.map(sq, 0..n1 as u64).expect("map");
            let dt = secs(t0);
            assert_eq!(r.len(), n1);
            n1 as f64 / dt
        },
    );

    let n2 = b.n(20_000);
    b.record(
        "pool2_map_chunksize1_tasks_per_s",
        Unit::Rate("tasks/s"),
        || {
            let t0 = Instant::now();
            let r = pool.map_chunked(sq, 0..n2 as u64, 1).expect("map");
            let dt = secs(t0);
            assert_eq!(r.len(), n2);
            n2 as f64 / dt
        },
    );

    b.record(
        "pool2_imap_unordered_chunksize1_tasks_per_s",
        Unit::Rate("tasks/s"),
        || {
            let t0 = Instant::now();
            let mut c = 0;
            for r in pool.imap_unordered(sq, 0..n2 as u64).expect("imap") {
                r.expect("task");
                c += 1;
            }
            let dt = secs(t0);
            assert_eq!(c, n2);
            n2 as f64 / dt
        },
    );

    let n3 = b.n(2000);
    b.record(
        "pool2_apply_async_get_latency_us",
        Unit::Us("us/task"),
        || {
            let t0 = Instant::now();
            for i in 0..n3 as u64 {
                pool.apply_async(sq, (i,))
                    .expect("apply")
                    .get()
                    .expect("get");
            }
            secs(t0) / n3 as f64 * 1e6
        },
    );
    #[cfg(feature = "tokio")]
    crate::aio::apply_await(b, &pool, n3);

    let blobs = b.n(200);
    b.record("pool2_map_1MiB_bytes_MBps", Unit::MBps, || {
        let items: Vec<Vec<u8>> = (0..blobs).map(|i| vec![i as u8; MIB]).collect();
        let t0 = Instant::now();
        let r = pool.map(nbytes, items).expect("map");
        let dt = secs(t0);
        assert!(r.len() == blobs && r.iter().all(|&n| n == MIB as u64));
        (blobs * MIB) as f64 / dt / 1e6
    });
    drop(pool);

    let tasks = b.n(32).max(2);
    b.record(
        "pool_cpu_bound_speedup_2_vs_1_workers",
        Unit::Rate("x (1-worker time / 2-worker time)"),
        || cpu_bound_secs(1, tasks) / cpu_bound_secs(2, tasks),
    );
}
