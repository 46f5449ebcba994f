//! Queue futures (feature `tokio`): `get_async`, `put_async`, `join_async`
//! with synchronous peers in other processes, under a current-thread and a
//! multi-threaded runtime.

multiproc::test_support!();

mod common;

use common::on_both_runtimes;

use multiproc::queue::{JoinableQueue, Queue, SimpleQueue};
use multiproc::{Process, StartMethod};

use std::time::Duration;

/// Generous: only turns a hang into a failure.
const DEADLINE: Duration = Duration::from_secs(120);

fn start<A: multiproc::handoff::Args, F: multiproc::TaskFn<A, ()>>(
    method: StartMethod,
    target: F,
    args: A,
) -> Process<()> {
    Process::builder()
        .start_method(method)
        .start(target, args)
        .unwrap()
}

/// Returns once an async waiter of `q` (another task) has armed its doorbell.
async fn armed<T, F: multiproc::queue::flavor::Flavor>(q: &multiproc::queue::GenericQueue<T, F>) {
    while !q.__doorbell_armed() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn methods() -> Vec<StartMethod> {
    let mut m = vec![StartMethod::Fork, StartMethod::Spawn];
    if StartMethod::Forkserver.is_available() {
        m.push(StartMethod::Forkserver);
    }
    m
}

/// Puts `(id, 0..n)`, pausing now and then so that the consumer runs dry
/// and has to wait on the doorbell (not only spin).
fn produce(q: Queue<(u32, u32)>, id: u32, n: u32) {
    for i in 0..n {
        q.put((id, i)).unwrap();
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn produce_simple(q: SimpleQueue<(u32, u32)>, id: u32, n: u32) {
    for i in 0..n {
        q.put((id, i)).unwrap();
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Checks that every producer's items came exactly once, in order.
fn check_order(next: &mut [u32], (id, i): (u32, u32)) {
    assert_eq!(
        i, next[id as usize],
        "producer {id}: item out of order or repeated"
    );
    next[id as usize] += 1;
}

#[test]
fn an_async_consumer_gets_every_item_once_in_order_from_producer_processes() {
    on_both_runtimes(|| async {
        const N: u32 = 5000;
        let q: Queue<(u32, u32)> = Queue::new().unwrap();
        let ms = methods();
        let mut ps: Vec<_> = ms
            .iter()
            .enumerate()
            .map(|(id, &m)| start(m, produce, (q.clone(), id as u32, N)))
            .collect();
        let mut next = vec![0u32; ms.len()];
        for _ in 0..N as usize * ms.len() {
            check_order(&mut next, q.get_async().await.unwrap());
        }
        assert!(next.iter().all(|&n| n == N));
        for p in &mut ps {
            p.join_async().await.unwrap();
        }
        assert!(q.try_get().is_err(), "no item may come twice");
    });
}

#[test]
fn simple_queue_get_async_from_producer_processes() {
    on_both_runtimes(|| async {
        const N: u32 = 1000;
        let q: SimpleQueue<(u32, u32)> = SimpleQueue::new().unwrap();
        let mut ps = vec![
            start(StartMethod::Fork, produce_simple, (q.clone(), 0, N)),
            start(StartMethod::Spawn, produce_simple, (q.clone(), 1, N)),
        ];
        let mut next = vec![0u32; 2];
        for _ in 0..2 * N {
            check_order(&mut next, q.get_async().await.unwrap());
        }
        for p in &mut ps {
            p.join_async().await.unwrap();
        }
        assert!(q.empty());
    });
}

/// Waits for `go`, then takes `n` items and passes them on to `out`.
fn take_after(q: Queue<u32>, go: Queue<()>, out: Queue<u32>, n: usize) {
    go.get().unwrap();
    for _ in 0..n {
        out.put(q.get().unwrap()).unwrap();
    }
}

#[test]
fn an_async_producer_blocked_on_a_full_queue_resumes_when_a_child_takes() {
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        on_both_runtimes(move || async move {
            let q: Queue<u32> = Queue::with_maxsize(2).unwrap();
            let go: Queue<()> = Queue::new().unwrap();
            let out: Queue<u32> = Queue::new().unwrap();
            let mut child = start(method, take_after, (q.clone(), go.clone(), out.clone(), 4));
            q.put_async(1).await.unwrap();
            q.put_async(2).await.unwrap();
            assert!(q.full());
            let blocked = {
                let q = q.clone();
                tokio::spawn(async move {
                    q.put_async(3).await.unwrap();
                    q.put_async(4).await.unwrap();
                })
            };
            // The producer task runs and must wait (the queue is full and
            // nobody takes until `go`), on the doorbell in the end.
            armed(&q).await;
            assert!(!blocked.is_finished(), "put_async did not wait for room");
            assert_eq!(q.qsize(), 2);
            go.put(()).unwrap();
            blocked.await.unwrap();
            let mut got = vec![];
            for _ in 0..4 {
                got.push(out.get_async().await.unwrap());
            }
            assert_eq!(got, [1, 2, 3, 4]);
            child.join_async().await.unwrap();
            assert!(q.__doorbell_rings() > 0, "the consumer rang for room");
        });
    }
}

/// Puts `0..n` slowly: one item every `pause_us` microseconds.
fn trickle(q: Queue<u32>, n: u32, pause_us: u64) {
    for i in 0..n {
        q.put(i).unwrap();
        std::thread::sleep(Duration::from_micros(pause_us));
    }
}

#[test]
fn a_dropped_get_async_loses_nothing() {
    on_both_runtimes(|| async {
        // A future dropped while it waits on the doorbell.
        let q: Queue<u32> = Queue::new().unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), q.get_async())
                .await
                .is_err()
        );
        let mut p = start(StartMethod::Fork, trickle, (q.clone(), 1, 0));
        assert_eq!(
            q.get_async().await.unwrap(),
            0,
            "the item arrives on the next get"
        );
        p.join_async().await.unwrap();

        // Futures dropped at every stage (first attempt, spinning, armed,
        // woken) while a child puts: every item still arrives once, in order.
        const N: u32 = 300;
        let mut p = start(StartMethod::Spawn, trickle, (q.clone(), N, 300));
        let mut next = 0;
        let mut dropped = 0;
        let mut k = 0u64;
        while next < N {
            k += 1;
            let patience = Duration::from_micros(k * 37 % 700);
            match tokio::time::timeout(patience, q.get_async()).await {
                Ok(item) => {
                    assert_eq!(item.unwrap(), next);
                    next += 1;
                }
                Err(_) => dropped += 1,
            }
        }
        // On a very loaded machine the items can pile up faster than the
        // consumer runs, so that no future times out: the property (every
        // item once, in order) was still checked, the drop path just not
        // exercised in this run (the first part above always exercises it).
        if dropped == 0 {
            eprintln!("note: no future was dropped mid-stream in this run");
        }
        p.join_async().await.unwrap();
        assert!(q.try_get().is_err());
    });
}

/// Puts `n` items and takes them all back, through blocking calls.
fn sync_traffic(q: JoinableQueue<u32>, n: u32) {
    for i in 0..n {
        q.put(i).unwrap();
    }
}

#[test]
fn the_sync_path_never_rings_the_doorbell() {
    let q: JoinableQueue<u32> = JoinableQueue::with_maxsize(16).unwrap();
    let mut ps: Vec<_> = methods()
        .into_iter()
        .map(|m| start(m, sync_traffic, (q.clone(), 2000)))
        .collect();
    // Blocking gets, with consumers that sleep (futex) and producers that
    // wait for room: every kind of synchronous wake-up happens.
    for _ in 0..2000 * ps.len() {
        q.get().unwrap();
        q.task_done().unwrap();
    }
    q.join().unwrap();
    for p in &mut ps {
        p.join().unwrap();
    }
    assert_eq!(q.__doorbell_rings(), 0, "a syscall on the synchronous path");

    // The same traffic with an async waiter armed rings it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(DEADLINE, async {
            let before = q.__doorbell_rings();
            let waiter = {
                let q = q.clone();
                tokio::spawn(async move { q.get_async().await.unwrap() })
            };
            armed(&q).await;
            let mut p = start(StartMethod::Spawn, sync_traffic, (q.clone(), 1));
            assert_eq!(waiter.await.unwrap(), 0);
            p.join_async().await.unwrap();
            assert!(q.__doorbell_rings() > before, "an armed waiter is rung");
        })
        .await
        .expect("timed out")
    });
}

fn finish_tasks(q: JoinableQueue<u32>, n: usize) {
    for _ in 0..n {
        q.get().unwrap();
        std::thread::sleep(Duration::from_millis(1));
        q.task_done().unwrap();
    }
}

#[test]
fn join_async_waits_for_task_done_in_children() {
    on_both_runtimes(|| async {
        let q: JoinableQueue<u32> = JoinableQueue::new().unwrap();
        for i in 0..20 {
            q.put_async(i).await.unwrap();
        }
        let mut ps = vec![
            start(StartMethod::Fork, finish_tasks, (q.clone(), 10)),
            start(StartMethod::Spawn, finish_tasks, (q.clone(), 10)),
        ];
        q.join_async().await.unwrap();
        assert_eq!(q.unfinished_tasks(), 0);
        for p in &mut ps {
            p.join_async().await.unwrap();
        }
    });
}

#[test]
fn closed_queue_futures_fail_instead_of_waiting() {
    on_both_runtimes(|| async {
        let q: Queue<u32> = Queue::new().unwrap();
        q.close();
        assert!(matches!(q.get_async().await, Err(multiproc::Error::Closed)));
        assert!(matches!(
            q.put_async(1).await,
            Err(multiproc::Error::Closed)
        ));
    });
}

/// A producer killed mid-put: it has claimed a slot and written half its
/// item when it is killed.
fn hanging_producer(q: Queue<Vec<u8>>, ready: Queue<u8>) {
    ready.put(1).unwrap();
    q.__put_and_hang(vec![0xAB; 500], false).unwrap();
}

#[test]
fn an_async_consumer_gets_past_a_producer_killed_mid_put() {
    on_both_runtimes(|| async {
        let q: Queue<Vec<u8>> = Queue::new().unwrap();
        let ready: Queue<u8> = Queue::new().unwrap();
        let mut victim = start(
            StartMethod::Fork,
            hanging_producer,
            (q.clone(), ready.clone()),
        );
        ready.get_async().await.unwrap();
        while q.__pending_slots() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The consumer waits behind the claim before the producer dies.
        let consumer = {
            let q = q.clone();
            tokio::spawn(async move { q.get_async().await.unwrap() })
        };
        armed(&q).await;
        victim.kill().unwrap();
        assert!(victim.join_async().await.is_err());
        q.put(vec![2]).unwrap();
        // The half item is skipped, never returned; the next one arrives.
        assert_eq!(consumer.await.unwrap(), vec![2]);
        assert!(q.try_get().is_err());
    });
}
