//! Dropping every handle frees a queue's shared memory, and nothing is ever
//! created in `/dev/shm`. (Its own test binary: it counts this process's
//! mappings, which other tests would disturb.)
multiproc::test_support!();

use multiproc::queue::{JoinableQueue, Queue, SimpleQueue};
use multiproc::Process;

mod common;

fn dev_shm() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn queue_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:multiproc-queue"))
        .count()
}

fn child_uses(q: Queue<u64>, s: SimpleQueue<u64>, j: JoinableQueue<u64>) {
    q.put(1).unwrap();
    s.put(2).unwrap();
    j.put(3).unwrap();
}

#[test]
fn dropping_every_handle_frees_the_memory() {
    let shm_before = dev_shm();
    let maps_before = queue_mappings();
    {
        let q: Queue<u64> = Queue::new().unwrap();
        let s: SimpleQueue<u64> = SimpleQueue::new().unwrap();
        let j: JoinableQueue<u64> = JoinableQueue::new().unwrap();
        let q2 = q.clone();
        assert!(queue_mappings() >= maps_before + 3);
        // One test looping over the methods, not the matrix: it counts this
        // process's mappings, which a test running alongside would change.
        for m in common::METHODS {
            let mut p = Process::builder()
                .start_method(m)
                .start(child_uses, (q.clone(), s.clone(), j.clone()))
                .unwrap();
            p.join().unwrap();
            assert_eq!(q2.get().unwrap(), 1);
            assert_eq!(s.get().unwrap(), 2);
            assert_eq!(j.get().unwrap(), 3);
            j.task_done().unwrap();
        }
        assert_eq!(
            dev_shm(),
            shm_before,
            "a queue must not create names in /dev/shm"
        );
    }
    assert_eq!(
        queue_mappings(),
        maps_before,
        "the last handle's drop unmaps the ring"
    );
    assert_eq!(dev_shm(), shm_before);
}
