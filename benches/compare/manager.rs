//! Section `manager`: a managed dict's round trip (one `insert` or one
//! `get`, each a request and its answer through the server), the same with
//! the client and the server process on one CPU, a managed queue's put then
//! get through one proxy, and its items/s (one producer process `put`s
//! through its proxy, the parent takes them through its own: one `get` per
//! item, and `get_many`) — as
//! `bench_mp.py`'s `sec_manager` (fork, clock from a barrier to the last
//! item). The dict round trip is paired with the C socketpair round trip
//! (what CPython's proxies use), the one on one CPU with the C round trip
//! over two pipes (what a proxy on a Unix socket moves to: see
//! `manager/link.rs`).

use crate::{secs, Bench, Unit};
use multiproc::manager::{DictProxy, Manager, QueueProxy};
use multiproc::{Barrier, Process, StartMethod};
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};
use std::time::Instant;

/// How many items one `get_many` takes at most.
const BATCH: usize = 256;

fn producer(q: QueueProxy<u64>, gate: Barrier, n: u64) {
    gate.wait().expect("gate");
    for i in 0..n {
        q.put(i).expect("put");
    }
    q.flush().expect("flush");
}

fn dict_setget(d: &DictProxy<String, u64>, n: usize) -> f64 {
    let k = "k".to_string();
    let t0 = Instant::now();
    for i in 0..n as u64 {
        d.insert(k.clone(), i).expect("insert");
        d.get(&k).expect("get");
    }
    secs(t0) / (2 * n) as f64 * 1e6
}

fn fork_manager() -> Manager {
    Manager::builder()
        .start_method(StartMethod::Fork)
        .start()
        .expect("manager")
}

/// Items/s from a producer process to this one through `q`; `take` takes
/// some items and says how many.
fn queue_rate(q: &QueueProxy<u64>, n: usize, take: impl Fn(&QueueProxy<u64>) -> usize) -> f64 {
    let gate = Barrier::new(2).expect("barrier");
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .start(producer, (q.clone(), gate.clone(), n as u64))
        .expect("start");
    gate.wait().expect("gate");
    let t0 = Instant::now();
    let mut got = 0;
    while got < n {
        got += take(q);
    }
    let dt = secs(t0);
    p.join().expect("join");
    n as f64 / dt
}

/// Records the section's figures.
pub fn run(b: &mut Bench) {
    let m = fork_manager();
    let d = m.dict::<String, u64>().expect("dict");
    let n = b.n(10_000);
    b.record_paired(
        "manager_dict_rtt_us",
        Unit::Us("us/op"),
        "manager_dict_op_us",
        "socketpair_pingpong_1byte_rtt_us",
        || dict_setget(&d, n),
    );

    // Same, this process and a server started now (it inherits the mask)
    // pinned to the first allowed CPU.
    let old = sched_getaffinity(None).expect("getaffinity");
    let first = (0..CpuSet::MAX_CPU).find(|&i| old.is_set(i)).unwrap_or(0);
    let mut one = CpuSet::new();
    one.set(first);
    sched_setaffinity(None, &one).expect("setaffinity");
    {
        let pinned = fork_manager();
        let d = pinned.dict::<String, u64>().expect("dict");
        b.record_paired(
            "manager_dict_rtt_same_cpu_us",
            Unit::Us("us/op"),
            "manager_dict_op_same_cpu_us",
            "pipe_pingpong_1byte_rtt_same_cpu_us",
            || dict_setget(&d, n),
        );
    }
    sched_setaffinity(None, &old).expect("restore affinity");

    let q = m.queue::<u64>().expect("queue");
    let nq = b.n(10_000);
    // Python's `q.put(i); q.get()` in one process, through one proxy.
    b.record("manager_queue_put_get_us", Unit::Us("us/put+get"), || {
        let t0 = Instant::now();
        for i in 0..nq as u64 {
            q.put(i).expect("put");
            q.get().expect("get");
        }
        secs(t0) / nq as f64 * 1e6
    });
    b.record("manager_queue_items_per_s", Unit::Rate("items/s"), || {
        queue_rate(&q, nq, |q| {
            q.get().expect("get");
            1
        })
    });
    let nb = b.n(100_000);
    b.record(
        "manager_queue_get_many_items_per_s",
        Unit::Rate("items/s"),
        || queue_rate(&q, nb, |q| q.get_many(BATCH).expect("get_many").len()),
    );
    // The same job as CPython's one-get-per-item loop: move the items.
    if let Some(last) = b.figures.last_mut() {
        last.python = Some("manager_queue_items_per_s".to_string());
    }
}
