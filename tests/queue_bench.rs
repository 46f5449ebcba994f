//! Throughput measurements for the queue (run with
//! `cargo test --release --test queue_bench -- --ignored --nocapture`);
//! the same figures as `benches/compare/queue.rs`, for use before the harness.
multiproc::test_support!();

use multiproc::queue::{Queue, SimpleQueue};
use multiproc::{Process, StartMethod};
use std::time::Instant;

fn prod_ints(q: Queue<u64>, n: u64) {
    for i in 0..n {
        q.put(i).unwrap();
    }
}

fn prod_simple(q: SimpleQueue<u64>, n: u64) {
    for i in 0..n {
        q.put(i).unwrap();
    }
}

fn prod_bytes(q: Queue<Vec<u8>>, n: u64, size: usize) {
    let payload = vec![0x5au8; size];
    for _ in 0..n {
        q.put_ref(&payload).unwrap();
    }
}

fn prod_bytebuf(q: Queue<serde_bytes::ByteBuf>, n: u64, size: usize) {
    let payload = serde_bytes::ByteBuf::from(vec![0x5au8; size]);
    for _ in 0..n {
        q.put_ref(&payload).unwrap();
    }
}

fn bytebuf(k: u64, size: usize) -> f64 {
    let q: Queue<serde_bytes::ByteBuf> = Queue::new().unwrap();
    let t0 = Instant::now();
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .start(prod_bytebuf, (q.clone(), k, size))
        .unwrap();
    let mut total = 0;
    for _ in 0..k {
        total += q.get().unwrap().len();
    }
    let dt = t0.elapsed().as_secs_f64();
    p.join().unwrap();
    total as f64 / dt / 1e6
}

fn ints(nprod: u64, total: u64) -> f64 {
    let q: Queue<u64> = Queue::new().unwrap();
    let per = total / nprod;
    let t0 = Instant::now();
    let mut ps: Vec<_> = (0..nprod)
        .map(|_| {
            Process::builder()
                .start_method(StartMethod::Fork)
                .start(prod_ints, (q.clone(), per))
                .unwrap()
        })
        .collect();
    let mut sum = 0;
    for _ in 0..per * nprod {
        sum += q.get().unwrap();
    }
    let dt = t0.elapsed().as_secs_f64();
    for p in &mut ps {
        p.join().unwrap();
    }
    assert_eq!(sum, nprod * per * (per - 1) / 2);
    (per * nprod) as f64 / dt
}

fn simple(nprod: u64, total: u64) -> f64 {
    let q: SimpleQueue<u64> = SimpleQueue::new().unwrap();
    let per = total / nprod;
    let t0 = Instant::now();
    let mut ps: Vec<_> = (0..nprod)
        .map(|_| {
            Process::builder()
                .start_method(StartMethod::Fork)
                .start(prod_simple, (q.clone(), per))
                .unwrap()
        })
        .collect();
    for _ in 0..per * nprod {
        q.get().unwrap();
    }
    let dt = t0.elapsed().as_secs_f64();
    for p in &mut ps {
        p.join().unwrap();
    }
    (per * nprod) as f64 / dt
}

fn bytes(k: u64, size: usize) -> f64 {
    let q: Queue<Vec<u8>> = Queue::new().unwrap();
    let t0 = Instant::now();
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .start(prod_bytes, (q.clone(), k, size))
        .unwrap();
    let mut total = 0;
    for _ in 0..k {
        total += q.get().unwrap().len();
    }
    let dt = t0.elapsed().as_secs_f64();
    p.join().unwrap();
    total as f64 / dt / 1e6
}

#[test]
#[ignore]
fn queue_throughput() {
    for _ in 0..3 {
        println!("queue_1prod_int_items_per_s {:.0}", ints(1, 2_000_000));
        println!("queue_4prod_int_items_per_s {:.0}", ints(4, 2_000_000));
        println!(
            "simplequeue_1prod_int_items_per_s {:.0}",
            simple(1, 2_000_000)
        );
        println!(
            "simplequeue_4prod_int_items_per_s {:.0}",
            simple(4, 2_000_000)
        );
        println!("queue_1prod_1MiB_vec_u8_MBps {:.0}", bytes(512, 1 << 20));
        println!(
            "queue_1prod_1MiB_bytes_MBps (ByteBuf) {:.0}",
            bytebuf(2000, 1 << 20)
        );
    }
}

#[test]
#[ignore]
fn codec_cost_1mib() {
    let v = vec![0x5au8; 1 << 20];
    let mut buf = Vec::new();
    let t0 = Instant::now();
    for _ in 0..200 {
        buf.clear();
        multiproc::codec::encode_into(&v, &mut buf).unwrap();
    }
    println!(
        "encode {:.0} MB/s",
        200.0 * 1.048576 / t0.elapsed().as_secs_f64()
    );
    let t0 = Instant::now();
    for _ in 0..200 {
        let w: Vec<u8> = multiproc::codec::decode(&buf).unwrap();
        assert_eq!(w.len(), 1 << 20);
    }
    println!(
        "decode {:.0} MB/s",
        200.0 * 1.048576 / t0.elapsed().as_secs_f64()
    );
    let mut dst = vec![0u8; 1 << 20];
    let t0 = Instant::now();
    for _ in 0..200 {
        dst.copy_from_slice(&v);
        std::hint::black_box(&mut dst);
    }
    println!(
        "memcpy {:.0} MB/s",
        200.0 * 1.048576 / t0.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore]
fn single_thread_put_get_cost() {
    let q: Queue<u64> = Queue::new().unwrap();
    let n = 2_000_000u64;
    let t0 = Instant::now();
    for i in 0..n {
        q.put(i).unwrap();
        q.get().unwrap();
    }
    println!(
        "put+get same thread: {:.1} ns",
        t0.elapsed().as_nanos() as f64 / n as f64
    );
    let t0 = Instant::now();
    for i in 0..n / 100 {
        for j in 0..100 {
            q.put(i + j).unwrap();
        }
        for _ in 0..100 {
            q.get().unwrap();
        }
    }
    println!(
        "put x100 then get x100: {:.1} ns/item",
        t0.elapsed().as_nanos() as f64 / n as f64
    );
}

#[test]
#[ignore]
fn atomic_costs() {
    use std::sync::atomic::{AtomicU64, Ordering::*};
    let a = AtomicU64::new(0);
    let n = 10_000_000u64;
    let t0 = Instant::now();
    for i in 0..n {
        let _ = a.compare_exchange(i, i + 1, SeqCst, Relaxed);
    }
    println!("cas: {:.1} ns", t0.elapsed().as_nanos() as f64 / n as f64);
    let t0 = Instant::now();
    for i in 0..n {
        a.store(i, SeqCst);
    }
    println!(
        "seqcst store: {:.1} ns",
        t0.elapsed().as_nanos() as f64 / n as f64
    );
    let t0 = Instant::now();
    for _ in 0..n {
        std::hint::black_box(multiproc::codec::encode(&12345u64).unwrap());
    }
    println!(
        "encode u64 to new vec: {:.1} ns",
        t0.elapsed().as_nanos() as f64 / n as f64
    );
    let t0 = Instant::now();
    for _ in 0..n / 10 {
        std::hint::black_box(Instant::now());
    }
    println!(
        "Instant::now: {:.1} ns",
        t0.elapsed().as_nanos() as f64 / (n / 10) as f64
    );
}
