//! Section `manager`: a managed dict's round trip (one `insert` or one
//! `get`, each a request and its answer through the server) and a managed
//! queue's items/s (one producer process `put`s through its proxy, the
//! parent `get`s through its own) — as `bench_mp.py`'s `sec_manager`
//! (fork, clock from a barrier to the last `get`). The dict round trip is
//! paired with the C socketpair round trip.

use crate::{secs, Bench, Unit};
use multiproc::manager::{DictProxy, Manager, QueueProxy};
use multiproc::{Barrier, Process, StartMethod};
use std::time::Instant;

fn producer(q: QueueProxy<u64>, gate: Barrier, n: u64) {
    gate.wait().expect("gate");
    for i in 0..n {
        q.put(i).expect("put");
    }
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

/// Records the section's figures.
pub fn run(b: &mut Bench) {
    let m = Manager::builder()
        .start_method(StartMethod::Fork)
        .start()
        .expect("manager");
    let d = m.dict::<String, u64>().expect("dict");
    let n = b.n(10_000);
    b.record_paired(
        "manager_dict_rtt_us",
        Unit::Us("us/op"),
        "manager_dict_op_us",
        "socketpair_pingpong_1byte_rtt_us",
        || dict_setget(&d, n),
    );

    let q = m.queue::<u64>().expect("queue");
    let nq = b.n(10_000);
    b.record("manager_queue_items_per_s", Unit::Rate("items/s"), || {
        let gate = Barrier::new(2).expect("barrier");
        let mut p = Process::builder()
            .start_method(StartMethod::Fork)
            .start(producer, (q.clone(), gate.clone(), nq as u64))
            .expect("start");
        gate.wait().expect("gate");
        let t0 = Instant::now();
        for _ in 0..nq {
            q.get().expect("get");
        }
        let dt = secs(t0);
        p.join().expect("join");
        nq as f64 / dt
    });
}
