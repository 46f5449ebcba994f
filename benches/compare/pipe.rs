//! Section `pipe`: `Pipe` round trips (duplex and simplex, across CPUs and
//! pinned to one CPU) and one-way `send_bytes` throughput, named as in
//! `bench_mp.py` and paired with `limits.c`'s socketpair / pipe floors.

use crate::{secs, Bench, Unit};
use multiproc::connection::{Connection, Pipe};
use multiproc::{Process, StartMethod};
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
use std::time::Instant;

fn echo(c: Connection) {
    while let Ok(Some(x)) = c.recv::<Option<i64>>() {
        c.send(&Some(x)).expect("echo");
    }
}

fn echo2(r: Connection, w: Connection) {
    while let Ok(Some(x)) = r.recv::<Option<i64>>() {
        w.send(&Some(x)).expect("echo");
    }
}

/// Per round: a count k, then k messages; acks the total bytes.
/// For each round: a count `k` and how to receive (into one reused buffer,
/// or `recv_bytes()`'s fresh vector each, as CPython's `recv_bytes`), then
/// `k` byte messages; answers the byte total.
fn sink(data: Connection, ack: Connection) {
    let mut buf = Vec::new();
    while let Ok(Some((k, fresh))) = data.recv::<Option<(u64, bool)>>() {
        let mut total = 0u64;
        for _ in 0..k {
            total += if fresh {
                data.recv_bytes().expect("recv_bytes").len()
            } else {
                data.recv_bytes_into(&mut buf).expect("recv_bytes_into")
            } as u64;
        }
        ack.send(&total).expect("ack");
    }
}

fn pingpong(send: &Connection, recv: &Connection, n: usize) -> f64 {
    let t0 = Instant::now();
    for i in 0..n as i64 {
        send.send(&Some(i)).expect("send");
        let _: Option<i64> = recv.recv().expect("recv");
    }
    secs(t0) / n as f64 * 1e6
}

fn duplex_pingpong(b: &mut Bench, name: &str, floor: &str, n: usize) {
    let (a, c) = Pipe::duplex().expect("pipe");
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .start(echo, (c,))
        .expect("start");
    a.send(&Some(0i64)).expect("send");
    let _: Option<i64> = a.recv().expect("child up");
    b.record_vs_floor(name, Unit::Us("us/roundtrip"), floor, || {
        pingpong(&a, &a, n)
    });
    a.send(&None::<i64>).expect("stop");
    p.join().expect("join");
}

/// Records the section's figures.
pub fn run(b: &mut Bench) {
    let n = b.n(20000);
    duplex_pingpong(
        b,
        "pipe_pingpong_int_rtt_us",
        "socketpair_pingpong_1byte_rtt_us",
        n,
    );
    #[cfg(feature = "tokio")]
    crate::aio::run(b, n);

    // Same, both processes pinned to the first allowed CPU (the child inherits it).
    let old = sched_getaffinity(None).expect("getaffinity");
    let first = (0..CpuSet::MAX_CPU).find(|&i| old.is_set(i)).unwrap_or(0);
    let mut one = CpuSet::new();
    one.set(first);
    sched_setaffinity(None, &one).expect("setaffinity");
    duplex_pingpong(
        b,
        "pipe_pingpong_int_rtt_same_cpu_us",
        "socketpair_pingpong_1byte_rtt_same_cpu_us",
        n,
    );
    sched_setaffinity(None, &old).expect("restore affinity");

    // Two simplex pipes.
    let (r1, w1) = Pipe::simplex().expect("pipe");
    let (r2, w2) = Pipe::simplex().expect("pipe");
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .start(echo2, (r1, w2))
        .expect("start");
    w1.send(&Some(0i64)).expect("send");
    let _: Option<i64> = r2.recv().expect("child up");
    b.record_vs_floor(
        "pipe_simplex_pingpong_int_rtt_us",
        Unit::Us("us/roundtrip"),
        "pipe_pingpong_1byte_rtt_us",
        || pingpong(&w1, &r2, n),
    );
    w1.send(&None::<i64>).expect("stop");
    p.join().expect("join");
    drop((w1, r2));

    // One-way throughput.
    let total = b.n(256 << 20);
    for duplex in [true, false] {
        let (data_parent, data_child) = if duplex {
            Pipe::duplex().expect("pipe")
        } else {
            let (r, w) = Pipe::simplex().expect("pipe");
            (w, r)
        };
        let (ack_r, ack_w) = Pipe::simplex().expect("pipe");
        let mut p = Process::builder()
            .start_method(StartMethod::Fork)
            .start(sink, (data_child, ack_w))
            .expect("start");
        for (size, sname) in [(64usize << 10, "64k"), (1 << 20, "1m")] {
            let payload = vec![0xa5u8; size];
            let k = (total / size).max(1);
            let (label, floor_kind) = if duplex {
                ("pipe", "socketpair")
            } else {
                ("pipe_simplex", "pipe")
            };
            let name = format!("{label}_send_bytes_{sname}_MBps");
            let floor = format!("{floor_kind}_throughput_{sname}_writes_MBps");
            let stream = |fresh: bool| {
                let t0 = Instant::now();
                data_parent
                    .send(&Some((k as u64, fresh)))
                    .expect("send count");
                for _ in 0..k {
                    data_parent.send_bytes(&payload).expect("send_bytes");
                }
                let got: u64 = ack_r.recv().expect("ack");
                let dt = secs(t0);
                assert_eq!(got, (k * size) as u64);
                (k * size) as f64 / dt / 1e6
            };
            b.record_vs_floor(&name, Unit::MBps, &floor, || stream(false));
            if duplex && size == 64 << 10 {
                // The receiver as CPython's: a new buffer per message.
                b.record_paired(
                    "pipe_send_bytes_64k_fresh_MBps",
                    Unit::MBps,
                    &name,
                    &floor,
                    || stream(true),
                );
            }
        }
        data_parent.send(&None::<(u64, bool)>).expect("stop");
        p.join().expect("join");
    }
}
