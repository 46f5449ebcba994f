//! Section `queue`: items/s through `Queue` and `SimpleQueue` from 1 and 4
//! producer processes to the parent, and MB/s of 1 MiB byte items — as
//! `bench_mp.py`'s `sec_queue` (fork children, clock from a start gate to
//! the parent's last `get`).
//!
//! Python's `bytes` is serde's "bytes" type, `serde_bytes::ByteBuf` (one
//! memcpy to encode and to decode). A plain `Vec<u8>` is a *sequence* to
//! serde and goes through the codec byte by byte; it is recorded too, under
//! its own name (`queue_1prod_1MiB_vec_u8_MBps`, no CPython pair).

use crate::{secs, Bench, Unit};
use multiproc::queue::{Queue, SimpleQueue};
use multiproc::{Process, StartMethod, TaskFn};
use serde_bytes::ByteBuf;
use std::time::Instant;

/// What a producer does after the gate opens.
trait Produce: Sized {
    fn produce(&self, n: usize);
}

impl Produce for Queue<u64> {
    fn produce(&self, n: usize) {
        for i in 0..n as u64 {
            self.put(i).expect("put");
        }
    }
}

impl Produce for SimpleQueue<u64> {
    fn produce(&self, n: usize) {
        for i in 0..n as u64 {
            self.put(i).expect("put");
        }
    }
}

fn gate_then<Q: Produce>(ready: &Queue<u8>, go: &Queue<u8>, q: &Q, n: usize) {
    ready.put(1).expect("ready");
    go.get().expect("go");
    q.produce(n);
}

pub(crate) fn ints_queue(q: Queue<u64>, ready: Queue<u8>, go: Queue<u8>, n: usize) {
    gate_then(&ready, &go, &q, n);
}

fn ints_simple(q: SimpleQueue<u64>, ready: Queue<u8>, go: Queue<u8>, n: usize) {
    gate_then(&ready, &go, &q, n);
}

fn bytes_producer(q: Queue<ByteBuf>, ready: Queue<u8>, go: Queue<u8>, n: usize, size: usize) {
    let payload = ByteBuf::from(vec![0x5au8; size]);
    ready.put(1).expect("ready");
    go.get().expect("go");
    for _ in 0..n {
        q.put_ref(&payload).expect("put");
    }
}

fn vec_producer(q: Queue<Vec<u8>>, ready: Queue<u8>, go: Queue<u8>, n: usize, size: usize) {
    let payload = vec![0x5au8; size];
    ready.put(1).expect("ready");
    go.get().expect("go");
    for _ in 0..n {
        q.put_ref(&payload).expect("put");
    }
}

/// Starts `nprod` producers with `args(i)`, opens the gate, runs `consume`,
/// returns its elapsed seconds.
pub(crate) fn timed<A: multiproc::handoff::Args, F: TaskFn<A, ()>>(
    nprod: usize,
    target: F,
    args: impl Fn(&Queue<u8>, &Queue<u8>) -> A,
    consume: impl FnOnce(),
) -> f64 {
    let ready: Queue<u8> = Queue::new().expect("queue");
    let go: Queue<u8> = Queue::new().expect("queue");
    let mut ps: Vec<_> = (0..nprod)
        .map(|_| {
            Process::builder()
                .start_method(StartMethod::Fork)
                .start(target, args(&ready, &go))
                .expect("start")
        })
        .collect();
    for _ in 0..nprod {
        ready.get().expect("ready");
    }
    let t0 = Instant::now();
    for _ in 0..nprod {
        go.put(1).expect("go");
    }
    consume();
    let dt = secs(t0);
    for p in &mut ps {
        p.join().expect("producer");
    }
    dt
}

/// Records the section's figures.
pub fn run(b: &mut Bench) {
    let n_items = b.n(200_000).max(4);
    for nprod in [1usize, 4] {
        let per = n_items / nprod;
        b.record_vs_floor(
            &format!("queue_{nprod}prod_int_items_per_s"),
            Unit::Rate("items/s"),
            if nprod == 1 {
                "shm_spsc_ring_u64_items_per_s"
            } else {
                "shm_mpsc_ring_u64_4prod_items_per_s"
            },
            || {
                let q: Queue<u64> = Queue::new().expect("queue");
                let qc = q.clone();
                let dt = timed(
                    nprod,
                    ints_queue,
                    |r, g| (q.clone(), r.clone(), g.clone(), per),
                    move || {
                        for _ in 0..per * nprod {
                            qc.get().expect("get");
                        }
                    },
                );
                (per * nprod) as f64 / dt
            },
        );
    }
    for nprod in [1usize, 4] {
        let per = n_items / nprod;
        b.record(
            &format!("simplequeue_{nprod}prod_int_items_per_s"),
            Unit::Rate("items/s"),
            || {
                let q: SimpleQueue<u64> = SimpleQueue::new().expect("queue");
                let qc = q.clone();
                let dt = timed(
                    nprod,
                    ints_simple,
                    |r, g| (q.clone(), r.clone(), g.clone(), per),
                    move || {
                        for _ in 0..per * nprod {
                            qc.get().expect("get");
                        }
                    },
                );
                (per * nprod) as f64 / dt
            },
        );
    }
    let size = 1 << 20;
    let k = b.n(256).max(1);
    b.record_vs_floor(
        "queue_1prod_1MiB_bytes_MBps",
        Unit::MBps,
        "shm_spsc_ring_1MiB_MBps",
        || {
            let q: Queue<ByteBuf> = Queue::new().expect("queue");
            let qc = q.clone();
            let dt = timed(
                1,
                bytes_producer,
                |r, g| (q.clone(), r.clone(), g.clone(), k, size),
                move || {
                    for _ in 0..k {
                        assert_eq!(qc.get().expect("get").len(), size);
                    }
                },
            );
            (k * size) as f64 / dt / 1e6
        },
    );
    b.record("queue_1prod_1MiB_vec_u8_MBps", Unit::MBps, || {
        let q: Queue<Vec<u8>> = Queue::new().expect("queue");
        let qc = q.clone();
        let dt = timed(
            1,
            vec_producer,
            |r, g| (q.clone(), r.clone(), g.clone(), k, size),
            move || {
                for _ in 0..k {
                    assert_eq!(qc.get().expect("get").len(), size);
                }
            },
        );
        (k * size) as f64 / dt / 1e6
    });
}
