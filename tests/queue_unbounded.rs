//! An unbounded queue (`maxsize = 0`) is unbounded, as in Python: `put`
//! never blocks for good and never refuses an item for its size, up to the
//! memory available; then it fails with a clear error. A bounded queue still
//! blocks at `maxsize` items, whatever their size.
multiproc::test_support!();

use multiproc::queue::{JoinableQueue, Queue};
use multiproc::{Error, Process, StartMethod};
use std::sync::mpsc;
use std::time::Duration;

#[macro_use]
mod common;

start_methods! {
    pipeline_of_100k_tasks_put_before_any_result_is_read,
    seed_deadlock_program_with_32_and_256_mib_items_completes,
    producer_of_8_items_of_1_mib_exits_before_the_parent_reads,
    order_per_producer_holds_across_ring_and_spill,
}
/// Only turns a hang into a failure; never a timing assertion.
const LONG: Duration = Duration::from_secs(120);

/// Runs `f` on a thread and fails the test if it has not returned within
/// [`LONG`] (a `put` that blocks forever would otherwise hang the test).
fn within<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LONG)
        .unwrap_or_else(|_| panic!("{what}: did not finish (deadlock)"))
}

const TASKS: u64 = 100_000;
const STOP: u64 = u64::MAX;

fn pipeline_worker(tasks: Queue<u64>, results: Queue<u64>) {
    loop {
        let t = tasks.get().unwrap();
        if t == STOP {
            return;
        }
        results.put(t * 3).unwrap();
    }
}

/// The pipeline from CPython's documentation style: the parent puts every
/// task before reading any result, with three workers in between. With a
/// finite ring this deadlocked once both queues filled up.
fn pipeline_of_100k_tasks_put_before_any_result_is_read(m: StartMethod) {
    // The full 100k under fork and spawn (as before the matrix), 25k under
    // forkserver (`common::scaled`).
    let n = common::scaled(m, &[StartMethod::Fork, StartMethod::Spawn], TASKS as usize) as u64;
    within(&format!("pipeline under {m:?}"), move || {
        let tasks: Queue<u64> = Queue::new().unwrap();
        let results: Queue<u64> = Queue::new().unwrap();
        let mut workers: Vec<_> = (0..3)
            .map(|_| {
                Process::builder()
                    .start_method(m)
                    .daemon(true)
                    .start(pipeline_worker, (tasks.clone(), results.clone()))
                    .unwrap()
            })
            .collect();
        for t in 0..n {
            tasks.put(t).unwrap();
        }
        for _ in 0..3 {
            tasks.put(STOP).unwrap();
        }
        let mut seen = vec![false; n as usize];
        for _ in 0..n {
            let r = results.get().unwrap();
            assert_eq!(r % 3, 0);
            let t = (r / 3) as usize;
            assert!(!seen[t], "result {r} came twice");
            seen[t] = true;
        }
        assert!(seen.iter().all(|&s| s));
        for w in &mut workers {
            w.join_timeout(LONG).unwrap();
        }
        assert!(results.empty());
    });
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 20) as u8)
        .collect()
}

#[test]
fn items_of_32_and_256_mib_through_a_default_queue() {
    within("large items", || {
        let q: Queue<Vec<u8>> = Queue::new().unwrap();
        assert!(q.max_item_bytes() >= 1 << 30);
        for (mib, seed) in [(32usize, 1u8), (256, 2)] {
            let v = pattern(mib << 20, seed);
            q.put_ref(&v).unwrap();
            assert_eq!(q.qsize(), 1);
            let back = q.get().unwrap();
            assert!(back == v, "{mib} MiB item came back different");
        }
        // Small items still go through after the large ones.
        q.put(vec![7u8; 3]).unwrap();
        assert_eq!(q.get().unwrap(), vec![7u8; 3]);
    });
}

fn big_child(q: Queue<String>, mib: usize) {
    q.put("X".repeat(mib << 20)).unwrap();
}

/// CPython's documented deadlock ("Joining processes that use queues") with
/// large items: the child puts one and exits; the parent joins it *before*
/// getting the item.
///
/// 256 MiB under fork only, as before the matrix: three such tests at once
/// would hold 1.5 GiB on a small CI machine.
fn seed_deadlock_program_with_32_and_256_mib_items_completes(m: StartMethod) {
    let sizes: &[usize] = if m == StartMethod::Fork {
        &[32, 256]
    } else {
        &[32]
    };
    for &mib in sizes {
        within(&format!("{mib} MiB under {m:?}"), move || {
            let q: Queue<String> = Queue::new().unwrap();
            let mut p = Process::builder()
                .start_method(m)
                .start(big_child, (q.clone(), mib))
                .unwrap();
            p.join_timeout(LONG)
                .expect("joining the producer before get must not deadlock");
            let obj = q.try_get().expect("the item outlives its producer");
            assert_eq!(obj.len(), mib << 20);
            assert!(obj.bytes().all(|b| b == b'X'));
        });
    }
}

fn eight_mib_then_exit(q: Queue<Vec<u8>>) {
    for i in 0..8 {
        q.put(pattern(1 << 20, i)).unwrap();
    }
}

/// "A producer exits at once and loses nothing", beyond what the ring holds.
fn producer_of_8_items_of_1_mib_exits_before_the_parent_reads(m: StartMethod) {
    within(&format!("8 x 1 MiB under {m:?}"), move || {
        let q: Queue<Vec<u8>> = Queue::new().unwrap();
        let mut p = Process::builder()
            .start_method(m)
            .start(eight_mib_then_exit, (q.clone(),))
            .unwrap();
        p.join_timeout(LONG).expect("the producer exits at once");
        assert_eq!(q.qsize(), 8);
        for i in 0..8 {
            assert!(q.try_get().unwrap() == pattern(1 << 20, i), "item {i}");
        }
        assert!(matches!(q.try_get(), Err(Error::Empty)));
    });
}

#[test]
fn try_put_on_an_unbounded_queue_never_reports_full() {
    // A ring of 4 slots: everything past them goes to the spill area.
    let q: Queue<u64> = Queue::builder().capacity_bytes(4 * 128).build().unwrap();
    for i in 0..1000 {
        q.try_put(i).unwrap();
    }
    q.put_timeout(1000, Duration::from_millis(1)).unwrap();
    assert_eq!(q.qsize(), 1001);
    for i in 0..=1000 {
        assert_eq!(q.try_get().unwrap(), i);
    }
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    assert_eq!(q.qsize(), 0);
}

/// When the memory for an item is not there, `put` says so (naming the
/// size) instead of blocking or dying of SIGBUS, and the queue goes on.
#[test]
fn exhausted_memory_is_an_error_and_the_queue_recovers() {
    let q: Queue<Vec<u8>> = Queue::builder()
        .capacity_bytes(64 << 10)
        .spill_bytes(1 << 20)
        .build()
        .unwrap();
    let item = |i: usize| pattern(100 << 10, i as u8);
    let mut n = 0;
    let err = loop {
        match q.try_put(item(n)) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        assert!(
            n < 100,
            "a 1 MiB spill area cannot hold 100 items of 100 KiB"
        );
    };
    match &err {
        Error::Io(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory, "{err}");
            let msg = err.to_string();
            assert!(msg.contains("could not reserve 1024"), "{msg}");
            assert!(msg.contains("1048576 bytes"), "{msg}");
        }
        other => panic!("expected an out-of-memory error, got {other:?}"),
    }
    assert!(n >= 5, "only {n} items fit");
    assert_eq!(q.qsize(), n, "the failed put left nothing behind");
    for i in 0..n {
        assert!(q.get().unwrap() == item(i), "item {i}");
    }
    // The memory came back: rounds that together hold several times the
    // area go through, in order (one item fewer than the first time: an
    // item that would cross the area's end starts again at its beginning,
    // which may waste up to one item's room).
    for round in 0..5 {
        for i in 0..n - 1 {
            q.put(item(i + round)).unwrap();
        }
        for i in 0..n - 1 {
            assert!(q.get().unwrap() == item(i + round));
        }
    }
    // An item larger than half the area can never fit: refused for its size.
    let err = q.put(vec![0; 600 << 10]).unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { .. }), "{err}");
}

#[test]
fn bounded_queue_blocks_at_maxsize_items_whatever_their_size() {
    let q: Queue<Vec<u8>> = Queue::builder().maxsize(2).build().unwrap();
    q.put(vec![1; 3 << 20]).unwrap();
    q.put(vec![2; 3 << 20]).unwrap();
    assert!(q.full());
    assert!(matches!(q.try_put(vec![3; 10]), Err(Error::Full)));
    assert!(matches!(
        q.put_timeout(vec![3; 3 << 20], Duration::from_millis(20)),
        Err(Error::Full)
    ));
    assert_eq!(q.get().unwrap(), vec![1; 3 << 20]);
    q.try_put(vec![3; 10]).unwrap();
    assert_eq!(q.get().unwrap(), vec![2; 3 << 20]);
    assert_eq!(q.get().unwrap(), vec![3; 10]);
    assert!(q.empty());
}

fn ordered_producer(q: Queue<(u32, u32)>, id: u32, n: u32) {
    for i in 0..n {
        q.put((id, i)).unwrap();
    }
}

/// Items from one producer arrive in order even when they go partly through
/// the ring and partly through the spill area (the parent reads nothing
/// until every producer is done).
fn order_per_producer_holds_across_ring_and_spill(m: StartMethod) {
    within("ordered producers", move || {
        let q: Queue<(u32, u32)> = Queue::builder().capacity_bytes(8 << 10).build().unwrap();
        let n = 20_000;
        let mut ps: Vec<_> = (0..3)
            .map(|id| {
                Process::builder()
                    .start_method(m)
                    .start(ordered_producer, (q.clone(), id, n))
                    .unwrap()
            })
            .collect();
        for p in &mut ps {
            p.join_timeout(LONG).unwrap();
        }
        let mut next = [0u32; 3];
        for _ in 0..3 * n {
            let (id, i) = q.get().unwrap();
            assert_eq!(i, next[id as usize], "producer {id} out of order");
            next[id as usize] += 1;
        }
        assert!(matches!(q.try_get(), Err(Error::Empty)));
    });
}

#[test]
fn joinable_queue_counts_spilled_items() {
    let q: JoinableQueue<Vec<u8>> =
        JoinableQueue::with_builder(Queue::builder().capacity_bytes(4 << 10)).unwrap();
    for i in 0..50u8 {
        q.put(vec![i; 5000]).unwrap();
    }
    assert_eq!(q.unfinished_tasks(), 50);
    for i in 0..50u8 {
        assert_eq!(q.get().unwrap(), vec![i; 5000]);
        q.task_done().unwrap();
    }
    q.join_timeout(LONG).unwrap();
}
