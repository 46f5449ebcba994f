//! Model checks of the ring's claim / publish / take / release protocol
//! with [loom](https://docs.rs/loom): every interleaving (up to a preemption
//! bound) of a few producers and consumers on a 4-slot ring, including
//! wrap-around, multi-slot items and the padding of an item that would
//! cross the end. Each checks that every item is taken exactly once, intact,
//! and that items from one producer come out in order.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test --release --lib queue::loom_tests
//! ```
//!
//! (The spill log is not modelled: it is a plain lock, and loom runs here
//! with no clock, so a full ring waits instead of spilling.)

use super::ring::{Ring, Stall};
use super::spill::MIN_SPILL;
use crate::error::Error;

fn ring() -> Ring {
    Ring::new(4, MIN_SPILL, 0, false, "loom").unwrap()
}

/// An item of `len` bytes saying who put it and its number.
fn item(producer: u8, n: u8, len: usize) -> Vec<u8> {
    let mut v = vec![producer ^ n; len.max(2)];
    v[0] = producer;
    v[1] = n;
    v
}

fn take(r: &Ring) -> Vec<u8> {
    r.get(None, Stall::No, |b| {
        let mut v = Vec::new();
        b.append_to(&mut v);
        v
    })
    .unwrap()
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bound(2, f)
}

fn model_bound(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    // Waiting (for an item, or for room) is a loop of attempts and yields.
    b.max_branches = 100_000;
    b.check(f);
}

/// Checks a producer's items arrive in order and intact.
fn check(next: &mut [u8], got: &[u8], len_of: impl Fn(u8, u8) -> usize) {
    let (p, n) = (got[0], got[1]);
    assert_eq!(n, next[p as usize], "producer {p} out of order");
    assert_eq!(got, item(p, n, len_of(p, n)), "item corrupted");
    next[p as usize] += 1;
}

#[test]
fn one_producer_one_consumer_wrapping_the_ring() {
    model(|| {
        let r = ring();
        let p = {
            let r = r.clone();
            loom::thread::spawn(move || {
                for n in 0..5 {
                    r.put(&[&item(0, n, 2)], None, Stall::No).unwrap();
                }
            })
        };
        let mut next = [0u8];
        for _ in 0..5 {
            check(&mut next, &take(&r), |_, _| 2);
        }
        p.join().unwrap();
        assert!(matches!(
            r.get(Some(std::time::Instant::now()), Stall::No, |_| ()),
            Err(Error::Empty)
        ));
    });
}

#[test]
fn two_producers_one_consumer() {
    model(|| {
        let r = ring();
        let ps: Vec<_> = (0..2u8)
            .map(|id| {
                let r = r.clone();
                loom::thread::spawn(move || {
                    for n in 0..2 {
                        r.put(&[&item(id, n, 2)], None, Stall::No).unwrap();
                    }
                })
            })
            .collect();
        let mut next = [0u8; 2];
        for _ in 0..4 {
            check(&mut next, &take(&r), |_, _| 2);
        }
        for p in ps {
            p.join().unwrap();
        }
    });
}

#[test]
fn one_producer_two_consumers_take_each_item_once() {
    // Two spinning consumers make the state space large: one preemption.
    model_bound(1, || {
        let r = ring();
        let cs: Vec<_> = (0..2)
            .map(|_| {
                let r = r.clone();
                loom::thread::spawn(move || take(&r))
            })
            .collect();
        for n in 0..2 {
            r.put(&[&item(0, n, 2)], None, Stall::No).unwrap();
        }
        let mut seen = [false; 2];
        for c in cs {
            let g = c.join().unwrap();
            assert_eq!(g, item(0, g[1], 2));
            assert!(!seen[g[1] as usize], "item {} taken twice", g[1]);
            seen[g[1] as usize] = true;
        }
    });
}

#[test]
fn multi_slot_items_padded_at_the_end() {
    // Items of 200 bytes take two 128-byte slots; on a 4-slot ring one of
    // them must be padded to start at slot 0.
    let len_of = |_: u8, n: u8| if n % 2 == 0 { 200 } else { 2 };
    model(move || {
        let r = ring();
        let p = {
            let r = r.clone();
            loom::thread::spawn(move || {
                for n in 0..4 {
                    r.put(&[&item(0, n, len_of(0, n))], None, Stall::No)
                        .unwrap();
                }
            })
        };
        let mut next = [0u8];
        for _ in 0..4 {
            check(&mut next, &take(&r), len_of);
        }
        p.join().unwrap();
    });
}

/// The async doorbell (`wake.rs`): a waiter that registers (here: notes
/// the ring count, as an edge-triggered registration sees every later
/// write), arms, re-checks and then waits for a ring is always woken — in
/// every interleaving with a producer, and with a consumer that takes the
/// item first and makes room (the waiter then waits for the next item).
/// A lost wake-up would leave the waiter yielding forever, which loom
/// reports (branch limit).
#[test]
fn async_waiter_is_woken() {
    use super::wake::Await;
    model(|| {
        let r = ring();
        let p = {
            let r = r.clone();
            loom::thread::spawn(move || {
                for n in 0..2 {
                    r.put(&[&item(0, n, 2)], None, Stall::No).unwrap();
                }
            })
        };
        let mut next = [0u8];
        for _ in 0..2 {
            let got = loop {
                if let Ok(v) = try_take(&r) {
                    break v;
                }
                let seen = r.doorbell_rings(); // W1
                r.arm(Await::Item); // W2
                if let Ok(v) = try_take(&r) {
                    break v; // W3
                }
                while r.doorbell_rings() == seen {
                    loom::thread::yield_now(); // W4
                }
            };
            check(&mut next, &got, |_, _| 2);
        }
        p.join().unwrap();
    });
}

fn try_take(r: &Ring) -> Result<Vec<u8>, Error> {
    r.get(Some(std::time::Instant::now()), Stall::No, |b| {
        let mut v = Vec::new();
        b.append_to(&mut v);
        v
    })
}
