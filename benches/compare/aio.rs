//! The tokio adapters' cost (built with `--features tokio`), each on a
//! current-thread runtime next to the blocking figure of its section: the
//! duplex `Pipe` round trip through [`AsyncConnection`] (section `pipe`)
//! and an awaited `apply_async` (section `pool`).

use crate::{secs, Bench, Unit};
use multiproc::aio::AsyncConnection;
use multiproc::connection::{Connection, Pipe};
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
