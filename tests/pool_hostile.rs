//! The pool's framing under hostile bytes, through the real worker and
//! dispatcher paths: the connection framing's hostile cases (zero-length
//! frame, oversized length, negative length, truncated frame, garbage), sent
//! to a worker by a stranger holding its socket, and sent to the parent by a
//! worker gone wrong. Each gives a clear error or a replaced worker, never
//! a hang, a panic, or a wrong result.

multiproc::test_support!();

use multiproc::pool::__test::{send_raw_to_worker, worker_send_raw};
use multiproc::pool::Pool;
use std::time::{Duration, Instant};

/// Only turns a hang into a failure.
const LONG: Duration = Duration::from_secs(120);

fn sqr(x: u64) -> u64 {
    x * x
}

/// A pool frame with payload `kind` then `rest`, under CPython's header.
fn frame(kind: u8, rest: &[u8]) -> Vec<u8> {
    let mut f = ((rest.len() + 1) as i32).to_be_bytes().to_vec();
    f.push(kind);
    f.extend_from_slice(rest);
    f
}

/// Deterministic pseudo-random bytes (xorshift).
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The hostile streams, by name.
fn cases() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("zero-length frame", vec![0, 0, 0, 0]),
        ("oversized length", vec![0x7f, 0xff, 0xff, 0xff, 1, 2, 3]),
        ("negative length", vec![0xff, 0xff, 0xff, 0xfe, 9, 9, 9, 9]),
        (
            "over 2 GiB (long header)",
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0],
        ),
        ("unknown kind", frame(99, b"hello")),
        ("garbage", garbage(0x9e37_79b9_7f4a_7c15, 200)),
        ("a plausible length, then garbage", {
            let mut g = 5000i32.to_be_bytes().to_vec();
            g.extend(garbage(0x2545_f491_4f6c_dd1d, 5000));
            g
        }),
        // Refused by its first payload byte: the rest never comes.
        ("a long frame that never completes", {
            let mut g = 100_000i32.to_be_bytes().to_vec();
            g.extend(garbage(0x9e37_79b9_7f4a_7c15, 10));
            g
        }),
    ]
}

/// Waits (driving the pool) until `pid` is no longer one of its workers and
/// it has its full complement again.
fn wait_replaced(pool: &Pool, pid: i32, n: usize) {
    let deadline = Instant::now() + LONG;
    while pool.worker_pids().contains(&pid) || pool.worker_pids().len() != n {
        assert!(Instant::now() < deadline, "worker {pid} was not replaced");
        pool.apply(sqr, (1,)).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn still_serves(pool: &Pool) {
    let r = pool.map_async(sqr, 0..300u64).unwrap();
    assert_eq!(
        r.get_timeout(LONG).unwrap(),
        (0..300).map(sqr).collect::<Vec<_>>()
    );
}

/// A worker whose socket receives a malformed frame stops (it trusts that
/// socket no more), and the pool replaces it; work goes on unaffected.
#[test]
fn worker_receiving_a_malformed_frame_is_replaced() {
    let pool = Pool::new(2).unwrap();
    still_serves(&pool);
    for (name, bytes) in cases() {
        let pid = send_raw_to_worker(&pool, &bytes).unwrap();
        wait_replaced(&pool, pid, 2);
        still_serves(&pool);
        eprintln!("ok: {name}");
    }
}

/// A frame cut short towards a worker (a stranger wrote half a frame) never
/// runs: the pool still closes and joins (the worker sees the end of its
/// stream), with no hang.
#[test]
fn worker_holding_a_truncated_frame_still_ends() {
    let pool = Pool::new(1).unwrap();
    still_serves(&pool);
    let mut cut = frame(1, &[7; 100]);
    cut.truncate(30);
    send_raw_to_worker(&pool, &cut).unwrap();
    pool.close().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let r = pool.join();
        let _ = tx.send(());
        r
    });
    rx.recv_timeout(LONG).expect("join hung");
    t.join().unwrap().unwrap();
}

/// A task that writes `case`'s bytes on its worker's socket, ahead of its
/// own answer.
fn write_case(case: usize) -> u64 {
    let bytes = match cases().get(case) {
        Some((_, b)) => b.clone(),
        None => frame(1, &[]),
    };
    worker_send_raw(&bytes).unwrap();
    // Answers travel in batches: make sure this one is the first the
    // parent reads after the bytes.
    std::thread::sleep(Duration::from_millis(50));
    42
}

/// A worker that writes a malformed frame to the parent is killed: its
/// task fails with an error saying so, the pool replaces it and goes on.
#[test]
fn parent_facing_a_malformed_frame_fails_the_task_and_replaces_the_worker() {
    let pool = Pool::new(2).unwrap();
    for (i, (name, _)) in cases().iter().enumerate() {
        let before = pool.worker_pids();
        let r = pool.apply_async(write_case, (i,)).unwrap();
        let e = r.get_timeout(LONG).expect_err(name);
        assert!(
            e.to_string().contains("malformed"),
            "{name}: unclear error {e}"
        );
        // The worker that ran it is gone and replaced.
        let deadline = Instant::now() + LONG;
        while pool.worker_pids().len() != 2 || before.iter().all(|p| pool.worker_pids().contains(p))
        {
            assert!(Instant::now() < deadline, "{name}: no replacement");
            pool.apply(sqr, (1,)).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        still_serves(&pool);
    }
}

/// A task that writes half a frame, then its worker dies: the parent sees
/// the stream end inside a frame; the task fails as its worker died, never
/// a hang, and never a result made of those bytes.
fn write_half_then_die() -> u64 {
    let mut cut = frame(1, &[0; 100]);
    cut.truncate(30);
    worker_send_raw(&cut).unwrap();
    std::process::abort()
}

#[test]
fn parent_facing_a_truncated_frame_fails_the_task() {
    let pool = Pool::new(2).unwrap();
    let r = pool.apply_async(write_half_then_die, ()).unwrap();
    assert!(r.get_timeout(LONG).is_err());
    still_serves(&pool);
}
