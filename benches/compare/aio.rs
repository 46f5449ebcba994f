//! The tokio adapters' cost (built with `--features tokio`), each on a
//! current-thread runtime next to the blocking figure of its section: the
//! duplex `Pipe` round trip through [`AsyncConnection`] (section `pipe`)
//! and an awaited `apply_async` (section `pool`).
//!
//! Section `aio` (`--only aio`) puts each async figure next to its blocking
//! twin measured in the same run, repetitions interleaved (sync, async,
//! sync, ...) so that the machine's noise hits both alike, and prints the
//! ratios: the queue's items/s with an async consumer (`get_async`) against
//! a blocking one (`get`), one producer process putting ints; and the pipe
//! round trip through `AsyncConnection` against `Connection`.

use crate::{secs, Bench, Unit};
use multiproc::aio::AsyncConnection;
use multiproc::connection::{Connection, Pipe};
use multiproc::queue::Queue;
use multiproc::{Pool, Process, StartMethod};
use std::time::Instant;

fn echo(c: Connection) {
    while let Ok(Some(x)) = c.recv::<Option<i64>>() {
        c.send(&Some(x)).expect("echo");
    }
}

/// Records `pipe_pingpong_int_rtt_async_us`.
pub fn run(b: &mut Bench, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (a, c) = Pipe::duplex().expect("pipe");
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .start(echo, (c,))
        .expect("start");
    let a = rt
        .block_on(async { AsyncConnection::new(a) })
        .expect("register");
    b.record_paired(
        "pipe_pingpong_int_rtt_async_us",
        Unit::Us("us/roundtrip"),
        "pipe_pingpong_int_rtt_us",
        "socketpair_pingpong_1byte_rtt_us",
        || {
            rt.block_on(async {
                let t0 = Instant::now();
                for i in 0..n as i64 {
                    a.send(&Some(i)).await.expect("send");
                    let _: Option<i64> = a.recv().await.expect("recv");
                }
                secs(t0) / n as f64 * 1e6
            })
        },
    );
    rt.block_on(a.send(&None::<i64>)).expect("stop");
    p.join().expect("join");
}

/// Records `pool2_apply_async_await_latency_us`: `apply_async(..).await`,
/// one at a time.
pub fn apply_await(b: &mut Bench, pool: &Pool, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    b.record_paired(
        "pool2_apply_async_await_latency_us",
        Unit::Us("us/task"),
        "pool2_apply_async_get_latency_us",
        "",
        || {
            rt.block_on(async {
                let t0 = Instant::now();
                for i in 0..n as u64 {
                    pool.apply_async(crate::pool::sq, (i,))
                        .expect("apply")
                        .await
                        .expect("await");
                }
                secs(t0) / n as f64 * 1e6
            })
        },
    );
}

/// Items/s from one forked producer of ints to this process's consumer:
/// blocking `get`, or `get_async` on a current-thread runtime.
fn queue_ints(n: usize, rt: Option<&tokio::runtime::Runtime>) -> f64 {
    let q: Queue<u64> = Queue::new().expect("queue");
    let qc = q.clone();
    let dt = crate::queue::timed(
        1,
        crate::queue::ints_queue,
        |r, g| (q.clone(), r.clone(), g.clone(), n),
        move || match rt {
            None => {
                for _ in 0..n {
                    qc.get().expect("get");
                }
            }
            Some(rt) => rt.block_on(async {
                for _ in 0..n {
                    qc.get_async().await.expect("get_async");
                }
            }),
        },
    );
    n as f64 / dt
}

/// The duplex pipe round trip, blocking or through `AsyncConnection`.
fn pipe_rtt(n: usize, rt: Option<&tokio::runtime::Runtime>) -> f64 {
    let (a, c) = Pipe::duplex().expect("pipe");
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .start(echo, (c,))
        .expect("start");
    let us = match rt {
        None => {
            let t0 = Instant::now();
            for i in 0..n as i64 {
                a.send(&Some(i)).expect("send");
                let _: Option<i64> = a.recv().expect("recv");
            }
            a.send(&None::<i64>).expect("stop");
            secs(t0) / n as f64 * 1e6
        }
        Some(rt) => rt.block_on(async {
            let a = AsyncConnection::new(a).expect("register");
            let t0 = Instant::now();
            for i in 0..n as i64 {
                a.send(&Some(i)).await.expect("send");
                let _: Option<i64> = a.recv().await.expect("recv");
            }
            let us = secs(t0) / n as f64 * 1e6;
            a.send(&None::<i64>).await.expect("stop");
            us
        }),
    };
    p.join().expect("join");
    us
}

/// Records `name_sync` and `name_async` from `f(None)` and `f(Some(rt))`,
/// run alternately (one warm-up each, then `reps` each); returns the
/// medians (sync, async).
fn paired(
    b: &mut Bench,
    rt: &tokio::runtime::Runtime,
    names: [&str; 2],
    unit: Unit,
    f: impl Fn(Option<&tokio::runtime::Runtime>) -> f64,
) -> (f64, f64) {
    let (mut sync, mut asy) = (vec![], vec![]);
    for _ in 0..=b.reps {
        sync.push(f(None));
        asy.push(f(Some(rt)));
    }
    let (mut s, mut a) = (sync.into_iter(), asy.into_iter());
    b.record(names[0], unit, || s.next().expect("a sample per call"));
    b.record(names[1], unit, || a.next().expect("a sample per call"));
    let last = |k: usize| b.figure(names[k]).unwrap_or(f64::NAN);
    (last(0), last(1))
}

/// Section `aio`: async figures against their blocking twins, same run.
pub fn section(b: &mut Bench) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let n = b.n(200_000).max(4);
    let (s, a) = paired(
        b,
        &rt,
        [
            "aio_queue_1prod_int_sync_get_items_per_s",
            "aio_queue_1prod_int_get_async_items_per_s",
        ],
        Unit::Rate("items/s"),
        |rt| queue_ints(n, rt),
    );
    eprintln!(
        "  -> async consumer / sync consumer: {:.2} (target >= 0.50)",
        a / s
    );
    let n = b.n(20_000);
    let (s, a) = paired(
        b,
        &rt,
        [
            "aio_pipe_pingpong_int_rtt_sync_us",
            "aio_pipe_pingpong_int_rtt_async_us",
        ],
        Unit::Us("us/roundtrip"),
        |rt| pipe_rtt(n, rt),
    );
    eprintln!(
        "  -> async round trip / sync round trip: {:.2} (target <= 1.50)",
        a / s
    );
}
