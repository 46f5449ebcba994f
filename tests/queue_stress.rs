//! 4 producer processes x 250k items, 2 consumer processes: every item
//! arrives exactly once.
multiproc::test_support!();

use multiproc::queue::Queue;
use multiproc::{Process, StartMethod};
use std::time::Duration;

const PRODUCERS: u32 = 4;
const PER_PRODUCER: u32 = 250_000;
const DONE: u32 = u32::MAX;

fn producer((q, id): (Queue<u32>, u32)) {
    for i in 0..PER_PRODUCER {
        q.put(id * PER_PRODUCER + i).unwrap();
    }
}

/// Returns every item it took, in the order taken.
fn consumer((q,): (Queue<u32>,)) -> Vec<u32> {
    let mut got = Vec::new();
    loop {
        let v = q.get_timeout(Duration::from_secs(60)).unwrap();
        if v == DONE {
            return got;
        }
        got.push(v);
    }
}

fn stress(m: StartMethod, maxsize: usize) {
    let q: Queue<u32> = Queue::builder().maxsize(maxsize).build().unwrap();
    let mut consumers: Vec<_> = (0..2)
        .map(|_| {
            Process::builder()
                .start_method(m)
                .start(consumer, (q.clone(),))
                .unwrap()
        })
        .collect();
    let mut producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            Process::builder()
                .start_method(m)
                .start(producer, (q.clone(), id))
                .unwrap()
        })
        .collect();
    for p in &mut producers {
        p.join_timeout(Duration::from_secs(60)).unwrap();
    }
    // Every item is committed before its producer exits; the markers come after.
    q.put(DONE).unwrap();
    q.put(DONE).unwrap();
    let mut seen = vec![0u8; (PRODUCERS * PER_PRODUCER) as usize];
    for c in &mut consumers {
        let got = c.join_timeout(Duration::from_secs(60)).unwrap();
        // per-producer order holds within each consumer's view
        let mut last = [None::<u32>; PRODUCERS as usize];
        for &v in &got {
            let id = (v / PER_PRODUCER) as usize;
            assert!(last[id].is_none_or(|l| l < v), "producer {id} out of order");
            last[id] = Some(v);
            seen[v as usize] += 1;
        }
    }
    let lost = seen.iter().filter(|&&n| n == 0).count();
    let dup = seen.iter().filter(|&&n| n > 1).count();
    assert_eq!(
        (lost, dup),
        (0, 0),
        "{m:?}: {lost} items lost, {dup} duplicated"
    );
    assert!(q.empty());
}

#[test]
fn four_producers_two_consumers_every_item_once_fork() {
    stress(StartMethod::Fork, 10_000);
}

#[test]
fn four_producers_two_consumers_every_item_once_spawn_unbounded() {
    // unbounded queue: only the ring's capacity applies back-pressure
    stress(StartMethod::Spawn, 0);
}
