//! Queue semantics, in one process (threads) and across processes (under
//! every start method: see `common::start_methods!`). Several cases follow CPython's `_test_multiprocessing.py`
//! (`_TestQueue.test_put`, `test_get`, `test_fork`, `test_qsize`,
//! `test_task_done`, `test_timeout`, `test_closed_queue_put_get_exceptions`),
//! rewritten for Rust's types: `block=False` is `try_*`, `timeout=` is
//! `*_timeout`, `queue.Empty`/`queue.Full` are `Error::Empty`/`Error::Full`.
multiproc::test_support!();

use multiproc::queue::{JoinableQueue, Queue, SimpleQueue};
use multiproc::{Error, Process, StartMethod, TaskFn};
use std::sync::mpsc;
use std::time::Duration;

#[macro_use]
mod common;

start_methods! {
    joinable_join_waits_for_workers_in_children,
    items_from_one_producer_arrive_in_order,
    queue_handed_to_child_works_both_ways,
    seed_deadlock_example_completes,
    producer_exits_without_waiting_and_loses_nothing,
    consumer_killed_while_blocked_in_get_leaves_queue_usable,
    producer_killed_mid_put_leaves_no_half_item,
    producer_killed_between_claim_and_tail_move_is_reclaimed,
    producer_killed_mid_put_while_not_yet_dead_is_waited_for,
    consumer_killed_mid_get_does_not_block_producers,
    consumer_killed_between_take_and_head_move_does_not_block,
    child_sees_count_and_fullness,
    queue_passed_on_to_a_grandchild,
    joinable_task_of_a_producer_killed_mid_put_is_not_waited_for,
}
/// Only turns a hang into a failure; never a timing assertion.
const LONG: Duration = Duration::from_secs(30);

#[test]
fn put_get_fifo_and_empty_full() {
    let q: Queue<u32> = Queue::with_maxsize(3).unwrap();
    assert!(q.empty());
    assert!(!q.full());
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    assert!(matches!(
        q.get_timeout(Duration::from_millis(20)),
        Err(Error::Empty)
    ));
    q.put(1).unwrap();
    q.put_timeout(2, Duration::from_millis(20)).unwrap();
    q.try_put(3).unwrap();
    assert_eq!(q.qsize(), 3);
    assert!(q.full());
    assert!(matches!(q.try_put(4), Err(Error::Full)));
    assert!(matches!(
        q.put_timeout(4, Duration::from_millis(20)),
        Err(Error::Full)
    ));
    assert_eq!(q.qsize(), 3, "a failed put must not count");
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.try_get().unwrap(), 2);
    assert_eq!(q.get_timeout(Duration::from_millis(20)).unwrap(), 3);
    assert!(q.empty());
    assert_eq!(q.qsize(), 0);
}

#[test]
fn unbounded_queue_is_never_full_and_keeps_order() {
    let q: Queue<String> = Queue::new().unwrap();
    assert_eq!(q.maxsize(), 0);
    for i in 0..10_000 {
        q.put(format!("item {i}")).unwrap();
    }
    assert!(!q.full());
    assert_eq!(q.qsize(), 10_000);
    for i in 0..10_000 {
        assert_eq!(q.get().unwrap(), format!("item {i}"));
    }
}

#[test]
fn items_of_every_size_round_trip() {
    // inline (<= 32 B), one slot, several slots, and items wrapping the ring end
    let q: Queue<Vec<u8>> = Queue::builder().capacity_bytes(64 * 1024).build().unwrap();
    for round in 0..20u8 {
        for len in [0usize, 1, 20, 31, 32, 33, 127, 128, 129, 1000, 5000, 20_000] {
            let v: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_add(round)).collect();
            q.put(v.clone()).unwrap();
            assert_eq!(q.get().unwrap(), v);
        }
    }
}

#[test]
fn item_larger_than_the_ring_goes_through_and_too_large_is_refused() {
    let q: Queue<Vec<u8>> = Queue::builder()
        .capacity_bytes(64 * 1024)
        .spill_bytes(1 << 20)
        .build()
        .unwrap();
    q.put(vec![3u8; 40 * 1024]).unwrap();
    assert_eq!(q.get().unwrap(), vec![3u8; 40 * 1024]);
    let err = q.put(vec![0u8; 600 * 1024]).unwrap_err();
    assert!(matches!(err, Error::MessageTooLarge { .. }), "{err}");
    assert!(q.empty());
    q.put(vec![1u8; 16]).unwrap();
    assert_eq!(q.get().unwrap(), vec![1u8; 16]);
}

#[test]
fn maxsize_put_blocks_until_a_get() {
    let q: Queue<u32> = Queue::with_maxsize(1).unwrap();
    q.put(1).unwrap();
    let (tx, rx) = mpsc::channel();
    let q2 = q.clone();
    let t = std::thread::spawn(move || {
        q2.put(2).unwrap();
        tx.send(()).unwrap();
    });
    // The put must still be waiting: the queue is full.
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    assert_eq!(q.get().unwrap(), 1);
    rx.recv_timeout(LONG)
        .expect("put did not complete after a get");
    assert_eq!(q.get().unwrap(), 2);
    t.join().unwrap();
}

#[test]
fn get_blocks_until_a_put() {
    let q: Queue<u32> = Queue::new().unwrap();
    let q2 = q.clone();
    let t = std::thread::spawn(move || q2.get_timeout(LONG));
    std::thread::sleep(Duration::from_millis(50));
    q.put(7).unwrap();
    assert_eq!(t.join().unwrap().unwrap(), 7);
}

#[test]
fn close_refuses_put_and_get_on_that_handle_only() {
    let q: Queue<u32> = Queue::new().unwrap();
    q.put(1).unwrap();
    let (other,) = multiproc::handoff::round_trip(&(q.clone(),)).unwrap();
    q.close();
    assert!(q.is_closed());
    assert!(matches!(q.put(2), Err(Error::Closed)));
    assert!(matches!(q.get(), Err(Error::Closed)));
    q.join_thread();
    q.cancel_join_thread();
    // another process's handle (here: a handed-off one) still works
    assert_eq!(other.get_timeout(LONG).unwrap(), 1);
    other.put(3).unwrap();
    assert_eq!(other.get().unwrap(), 3);
}

#[test]
fn simple_queue_basics() {
    let q: SimpleQueue<(u8, String)> = SimpleQueue::new().unwrap();
    assert!(q.empty());
    q.put((1, "a".into())).unwrap();
    q.put((2, "b".into())).unwrap();
    assert!(!q.empty());
    assert_eq!(q.get().unwrap(), (1, "a".into()));
    assert_eq!(q.get().unwrap(), (2, "b".into()));
    q.close();
    assert!(matches!(q.put((3, "c".into())), Err(Error::Closed)));
}

#[test]
fn joinable_accounting() {
    let q: JoinableQueue<u32> = JoinableQueue::new().unwrap();
    q.join().unwrap(); // nothing put: returns at once
    for i in 0..3 {
        q.put(i).unwrap();
    }
    assert_eq!(q.unfinished_tasks(), 3);
    assert!(matches!(
        q.join_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    for _ in 0..3 {
        q.get().unwrap();
    }
    // taken is not done
    assert!(matches!(
        q.join_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    q.task_done().unwrap();
    q.task_done().unwrap();
    assert_eq!(q.unfinished_tasks(), 1);
    q.task_done().unwrap();
    q.join().unwrap();
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooOften)));
    assert_eq!(q.unfinished_tasks(), 0);
}

fn joinable_worker(q: JoinableQueue<u64>, n: u64) -> u64 {
    let mut sum = 0;
    for _ in 0..n {
        sum += q.get_timeout(LONG).unwrap();
        q.task_done().unwrap();
    }
    sum
}

fn joinable_join_waits_for_workers_in_children(m: StartMethod) {
    let q: JoinableQueue<u64> = JoinableQueue::new().unwrap();
    let mut ps: Vec<_> = (0..2)
        .map(|_| {
            Process::builder()
                .start_method(m)
                .start(joinable_worker, (q.clone(), 50))
                .unwrap()
        })
        .collect();
    for i in 0..100 {
        q.put(i).unwrap();
    }
    q.join().unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
    let total: u64 = ps.iter_mut().map(|p| p.join().unwrap()).sum();
    assert_eq!(total, (0..100).sum::<u64>(), "{m:?}");
}

fn ordered_producer(q: Queue<(u32, u32)>, id: u32, n: u32) {
    for i in 0..n {
        q.put((id, i)).unwrap();
    }
}

fn items_from_one_producer_arrive_in_order(m: StartMethod) {
    let q: Queue<(u32, u32)> = Queue::with_maxsize(64).unwrap();
    let n = 20_000;
    let mut ps: Vec<_> = (0..3)
        .map(|id| {
            Process::builder()
                .start_method(m)
                .start(ordered_producer, (q.clone(), id, n))
                .unwrap()
        })
        .collect();
    let mut next = [0u32; 3];
    for _ in 0..3 * n {
        let (id, i) = q.get_timeout(LONG).unwrap();
        assert_eq!(i, next[id as usize], "producer {id} out of order ({m:?})");
        next[id as usize] += 1;
    }
    for p in &mut ps {
        p.join().unwrap();
    }
    assert!(q.empty());
}

fn child_put_in(q: Queue<String>) {
    q.put(format!("from {}", std::process::id())).unwrap();
}

fn queue_handed_to_child_works_both_ways(m: StartMethod) {
    let q: Queue<String> = Queue::new().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(child_put_in, (q.clone(),))
        .unwrap();
    let got = q.get_timeout(LONG).unwrap();
    assert_eq!(got, format!("from {}", p.pid()));
    p.join().unwrap();
}

/// CPython's documented deadlock ("Joining processes that use queues"):
/// the child puts a large item; the parent joins the child *before* getting.
fn seed_deadlock_child(q: Queue<String>) {
    q.put("X".repeat(1_000_000)).unwrap();
}

fn seed_deadlock_example_completes(m: StartMethod) {
    let q: Queue<String> = Queue::new().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(seed_deadlock_child, (q.clone(),))
        .unwrap();
    p.join_timeout(LONG)
        .expect("joining the producer before get must not deadlock");
    let obj = q.try_get().expect("the item outlives its producer");
    assert_eq!(obj.len(), 1_000_000);
    assert!(obj.bytes().all(|b| b == b'X'));
}

fn many_then_exit(q: Queue<u64>, n: u64) {
    for i in 0..n {
        q.put(i).unwrap();
    }
}

fn producer_exits_without_waiting_and_loses_nothing(m: StartMethod) {
    let q: Queue<u64> = Queue::new().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(many_then_exit, (q.clone(), 5000))
        .unwrap();
    p.join_timeout(LONG).unwrap();
    assert_eq!(q.qsize(), 5000);
    for i in 0..5000 {
        assert_eq!(q.try_get().unwrap(), i);
    }
    assert!(matches!(q.try_get(), Err(Error::Empty)));
}

/// The fault cases: a consumer killed while blocked in `get`.
fn blocked_consumer(q: Queue<u64>, ready: Queue<u8>) -> u64 {
    ready.put(1).unwrap();
    q.get().unwrap()
}

fn consumer_killed_while_blocked_in_get_leaves_queue_usable(m: StartMethod) {
    let q: Queue<u64> = Queue::new().unwrap();
    let ready: Queue<u8> = Queue::new().unwrap();
    let mut victims: Vec<_> = (0..2)
        .map(|_| {
            Process::builder()
                .start_method(m)
                .start(blocked_consumer, (q.clone(), ready.clone()))
                .unwrap()
        })
        .collect();
    for _ in 0..2 {
        ready.get_timeout(LONG).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100)); // let them reach FUTEX_WAIT
    for v in &victims {
        v.kill().unwrap();
    }
    for v in &mut victims {
        assert!(
            v.join_timeout(LONG).is_err(),
            "killed child reports failure"
        );
    }
    // the queue works for everyone else, with sleepers and without
    for i in 0..1000 {
        q.put(i).unwrap();
    }
    for i in 0..1000 {
        assert_eq!(q.get_timeout(LONG).unwrap(), i);
    }
    let q2 = q.clone();
    let t = std::thread::spawn(move || q2.get_timeout(LONG));
    std::thread::sleep(Duration::from_millis(20));
    q.put(99).unwrap();
    assert_eq!(t.join().unwrap().unwrap(), 99);
}

/// A producer killed mid-put: it has claimed a slot and written half its
/// item when it is killed.
fn hanging_producer(q: Queue<Vec<u8>>, ready: Queue<u8>) {
    ready.put(1).unwrap();
    q.__put_and_hang(vec![0xAB; 500], false).unwrap();
}

fn hanging_producer_small(q: Queue<Vec<u8>>, ready: Queue<u8>) {
    ready.put(1).unwrap();
    q.__put_and_hang(vec![0xCD; 8], false).unwrap();
}

/// Killed right after its claim CAS, before it moved `tail`.
fn hanging_producer_early(q: Queue<Vec<u8>>, ready: Queue<u8>) {
    ready.put(1).unwrap();
    q.__put_and_hang(vec![0xEF; 300], true).unwrap();
}

fn producer_killed_mid_put_leaves_no_half_item(m: StartMethod) {
    killed_mid_put(m, hanging_producer, false);
    killed_mid_put(m, hanging_producer_small, false);
}

fn producer_killed_between_claim_and_tail_move_is_reclaimed(m: StartMethod) {
    killed_mid_put(m, hanging_producer_early, true);
}

fn killed_mid_put<F: TaskFn<(Queue<Vec<u8>>, Queue<u8>), ()>>(m: StartMethod, f: F, early: bool) {
    let q: Queue<Vec<u8>> = Queue::new().unwrap();
    let ready: Queue<u8> = Queue::new().unwrap();
    q.put(vec![1]).unwrap(); // before the victim's claim
    let mut victim = Process::builder()
        .start_method(m)
        .start(f, (q.clone(), ready.clone()))
        .unwrap();
    ready.get_timeout(LONG).unwrap();
    if early {
        // Its claim does not move tail, so nothing shows it: give it time.
        std::thread::sleep(Duration::from_millis(300));
    } else {
        // Wait until its claim is in place (slots beyond our one item).
        let t0 = std::time::Instant::now();
        while q.__pending_slots() < 2 && t0.elapsed() < LONG {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    victim.kill().unwrap();
    assert!(victim.join_timeout(LONG).is_err());
    q.put(vec![2]).unwrap(); // after the victim's claim (moving tail past it if needed)
    assert_eq!(q.get_timeout(LONG).unwrap(), vec![1]);
    // the half item is skipped, never returned
    assert_eq!(q.get_timeout(LONG).unwrap(), vec![2]);
    assert!(matches!(
        q.get_timeout(Duration::from_millis(200)),
        Err(Error::Empty)
    ));
    assert_eq!(q.qsize(), 0, "the dead producer's item is not counted");
    // and the ring keeps working across its whole length
    for i in 0..100_000u32 {
        q.put(i.to_le_bytes().to_vec()).unwrap();
        assert_eq!(q.get().unwrap(), i.to_le_bytes().to_vec());
    }
}

fn producer_killed_mid_put_while_not_yet_dead_is_waited_for(m: StartMethod) {
    // Without the kill, a consumer behind an uncommitted claim of a live
    // producer waits (and times out as Empty) rather than skipping it.
    let q: Queue<Vec<u8>> = Queue::new().unwrap();
    let ready: Queue<u8> = Queue::new().unwrap();
    let mut victim = Process::builder()
        .start_method(m)
        .start(hanging_producer, (q.clone(), ready.clone()))
        .unwrap();
    ready.get_timeout(LONG).unwrap();
    let t0 = std::time::Instant::now();
    while q.__pending_slots() < 1 && t0.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(5));
    }
    q.put(vec![2]).unwrap();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(300)),
        Err(Error::Empty)
    ));
    victim.kill().unwrap();
    let _ = victim.join_timeout(LONG);
    assert_eq!(q.get_timeout(LONG).unwrap(), vec![2]);
}

/// A consumer killed after taking an item, before releasing its slots.
fn hanging_consumer(q: Queue<u64>, ready: Queue<u8>) {
    ready.put(1).unwrap();
    q.__get_and_hang(false).unwrap();
}

/// Killed right after its taker CAS, before it moved `head`.
fn hanging_consumer_early(q: Queue<u64>, ready: Queue<u8>) {
    ready.put(1).unwrap();
    q.__get_and_hang(true).unwrap();
}

fn consumer_killed_mid_get_does_not_block_producers(m: StartMethod) {
    killed_mid_get(m, hanging_consumer, false);
}

fn consumer_killed_between_take_and_head_move_does_not_block(m: StartMethod) {
    killed_mid_get(m, hanging_consumer_early, true);
}

fn killed_mid_get<F: TaskFn<(Queue<u64>, Queue<u8>), ()>>(m: StartMethod, f: F, early: bool) {
    // a tiny ring (4 slots), so producers soon need the victim's slot
    let q: Queue<u64> = Queue::builder().capacity_bytes(4 * 128).build().unwrap();
    let ready: Queue<u8> = Queue::new().unwrap();
    q.put(1000).unwrap();
    let mut victim = Process::builder()
        .start_method(m)
        .start(f, (q.clone(), ready.clone()))
        .unwrap();
    ready.get_timeout(LONG).unwrap();
    if early {
        std::thread::sleep(Duration::from_millis(300));
    } else {
        let t0 = std::time::Instant::now();
        while !q.empty() && t0.elapsed() < LONG {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    victim.kill().unwrap();
    assert!(victim.join_timeout(LONG).is_err());
    // The taken item is gone with its taker (as in Python); the ring's
    // slots come back, so producers get through the whole ring again.
    let q2 = q.clone();
    let prod = std::thread::spawn(move || {
        for i in 0..100u64 {
            q2.put_timeout(i, LONG).unwrap();
        }
    });
    for i in 0..100u64 {
        assert_eq!(q.get_timeout(LONG).unwrap(), i);
    }
    prod.join().unwrap();
}

/// CPython's `test_queue_feeder_donot_stop_onexc`: an item that fails to
/// encode is refused without taking a place in a bounded queue.
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this item cannot be encoded"))
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
enum Item {
    Good(u32),
    #[serde(skip_deserializing)]
    Bad(UnencodableField),
}

#[derive(Debug, PartialEq, Default)]
struct UnencodableField;

impl serde::Serialize for UnencodableField {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Unencodable.serialize(s)
    }
}

#[test]
fn an_item_that_fails_to_encode_takes_no_place() {
    let q: Queue<Item> = Queue::with_maxsize(1).unwrap();
    let err = q.put(Item::Bad(UnencodableField)).unwrap_err();
    assert!(matches!(err, Error::Codec(_)), "{err}");
    assert!(q.empty());
    q.try_put(Item::Good(1)).unwrap();
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get().unwrap(), Item::Good(1));
    assert!(q.empty());
}

/// CPython's `_TestListenerClient`-era `test_queue`: a child sees the
/// parent's items, count and fullness.
fn sees_full_queue(q: Queue<u32>) -> (usize, bool, u32, u32, bool) {
    let (n, full) = (q.qsize(), q.full());
    let a = q.get().unwrap();
    let b = q.get().unwrap();
    (n, full, a, b, q.empty())
}

fn child_sees_count_and_fullness(m: StartMethod) {
    let q: Queue<u32> = Queue::with_maxsize(2).unwrap();
    q.put(5).unwrap();
    q.put(6).unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(sees_full_queue, (q.clone(),))
        .unwrap();
    assert_eq!(p.join().unwrap(), (2, true, 5, 6, true), "{m:?}");
    assert!(q.empty());
    assert!(!q.full());
}

/// CPython's `test_nested_startmethod`: a child hands the queue it received
/// on to a grandchild; both items arrive.
fn grandchild(q: Queue<u32>) {
    q.put(1).unwrap();
}

fn child_with_grandchild(q: Queue<u32>, method: String) {
    let m = StartMethod::from_name(&method).unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(grandchild, (q.clone(),))
        .unwrap();
    p.join().unwrap();
    q.put(2).unwrap();
}

fn queue_passed_on_to_a_grandchild(m: StartMethod) {
    let q: Queue<u32> = Queue::new().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(child_with_grandchild, (q.clone(), m.name().to_string()))
        .unwrap();
    p.join().unwrap();
    assert_eq!(q.try_get().unwrap(), 1);
    assert_eq!(q.try_get().unwrap(), 2);
}

fn hanging_joinable_producer(q: JoinableQueue<u32>, ready: Queue<u8>) {
    ready.put(1).unwrap();
    q.__put_and_hang(7, false).unwrap();
}

fn joinable_task_of_a_producer_killed_mid_put_is_not_waited_for(m: StartMethod) {
    let q: JoinableQueue<u32> = JoinableQueue::new().unwrap();
    let ready: Queue<u8> = Queue::new().unwrap();
    q.put(1).unwrap();
    let mut victim = Process::builder()
        .start_method(m)
        .start(hanging_joinable_producer, (q.clone(), ready.clone()))
        .unwrap();
    ready.get_timeout(LONG).unwrap();
    let t0 = std::time::Instant::now();
    while q.unfinished_tasks() < 2 && t0.elapsed() < LONG {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50)); // counted just before its claim
    victim.kill().unwrap();
    assert!(victim.join_timeout(LONG).is_err());
    assert_eq!(q.get_timeout(LONG).unwrap(), 1);
    q.task_done().unwrap();
    // A consumer waiting behind the dead claim reclaims it ...
    assert!(matches!(
        q.get_timeout(Duration::from_millis(300)),
        Err(Error::Empty)
    ));
    // ... and its task is no longer unfinished.
    q.join_timeout(LONG).unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
}
