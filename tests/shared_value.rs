//! `Value`, `Array`, `RawValue`, `RawArray`: updates by several processes
//! (fork and spawn) under the lock add up exactly; atomic views; a holder that
//! dies does not deadlock the value.
multiproc::test_support!();

use multiproc::shared::{Array, RawArray, RawValue, Value};
use multiproc::sync::{Lock, RLock};
use multiproc::{Process, StartMethod};
use std::sync::atomic::Ordering;

const N: u64 = 2000;
const PROCS: usize = 3;

#[macro_use]
mod common;

start_methods! {
    value_increments_under_the_lock_add_up,
    array_updates_under_the_lock_add_up,
    atomic_views_add_up_without_a_lock,
    pod_structs_and_shared_lock,
    a_holder_that_dies_does_not_deadlock_the_value,
    python_get_lock_idiom_does_not_deadlock,
    with_lock_accepts_an_rlock,
}

fn incr_value(v: Value<u64>, n: u64) {
    for _ in 0..n {
        let g = v.lock().unwrap();
        g.set(g.get() + 1);
    }
}

fn incr_array(a: Array<i32>, n: u64) {
    for _ in 0..n {
        let g = a.lock().unwrap();
        for i in 0..g.len() {
            g.set(i, g.get(i).unwrap() + i as i32).unwrap();
        }
    }
}

fn incr_atomic(v: RawValue<i64>, a: RawArray<u32>, n: u64) {
    for _ in 0..n {
        v.as_atomic().fetch_add(1, Ordering::Relaxed);
        for x in a.as_atomic_slice() {
            x.fetch_add(2, Ordering::Relaxed);
        }
    }
}

fn value_increments_under_the_lock_add_up(m: StartMethod) {
    let v = Value::new(0u64).unwrap();
    let ps: Vec<_> = (0..PROCS)
        .map(|_| {
            Process::builder()
                .start_method(m)
                .start(incr_value, (v.clone(), N))
                .unwrap()
        })
        .collect();
    incr_value(v.clone(), N);
    for mut p in ps {
        p.join().unwrap();
    }
    assert_eq!(v.get().unwrap(), N * (PROCS as u64 + 1), "{m:?}");
}

fn array_updates_under_the_lock_add_up(m: StartMethod) {
    let a = Array::<i32>::zeroed(8).unwrap();
    let ps: Vec<_> = (0..PROCS)
        .map(|_| {
            Process::builder()
                .start_method(m)
                .start(incr_array, (a.clone(), N / 4))
                .unwrap()
        })
        .collect();
    for mut p in ps {
        p.join().unwrap();
    }
    let want: Vec<i32> = (0..8).map(|i| i * (N / 4) as i32 * PROCS as i32).collect();
    assert_eq!(a.to_vec().unwrap(), want, "{m:?}");
}

fn atomic_views_add_up_without_a_lock(m: StartMethod) {
    let v = RawValue::new(0i64).unwrap();
    let a = RawArray::<u32>::zeroed(4).unwrap();
    let ps: Vec<_> = (0..PROCS)
        .map(|_| {
            Process::builder()
                .start_method(m)
                .start(incr_atomic, (v.clone(), a.clone(), N))
                .unwrap()
        })
        .collect();
    for mut p in ps {
        p.join().unwrap();
    }
    assert_eq!(v.get(), (N * PROCS as u64) as i64, "{m:?}");
    assert_eq!(a.to_vec(), vec![(2 * N * PROCS as u64) as u32; 4], "{m:?}");
}

#[repr(C)]
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    bytemuck::Pod,
    bytemuck::Zeroable,
    serde::Serialize,
    serde::Deserialize,
)]
struct Point {
    x: f64,
    y: f64,
    tag: u32,
    _pad: u32,
}

fn move_point(v: Value<Point, Lock>, dx: f64) -> Point {
    let g = v.lock().unwrap();
    let mut p = g.get();
    p.x += dx;
    p.tag += 1;
    g.set(p);
    p
}

fn pod_structs_and_shared_lock(m: StartMethod) {
    let lock = Lock::new().unwrap();
    let v = Value::with_lock(
        Point {
            x: 1.0,
            y: 2.0,
            tag: 0,
            _pad: 0,
        },
        lock.clone(),
    )
    .unwrap();
    let a = Array::with_lock(&[1u8, 2, 3], lock.clone()).unwrap();
    {
        let _g = lock.acquire().unwrap();
        assert!(v.get_lock().locked() && a.get_lock().locked());
    }
    // Two children, of `m` and of another method.
    for m in [m, common::partner(m)] {
        let mut p = Process::builder()
            .start_method(m)
            .start(move_point, (v.clone(), 0.5))
            .unwrap();
        p.join().unwrap();
    }
    assert_eq!(
        v.get().unwrap(),
        Point {
            x: 2.0,
            y: 2.0,
            tag: 2,
            _pad: 0
        }
    );
    assert_eq!(a.to_vec().unwrap(), vec![1, 2, 3]);
    // Threads: the handoff round trip gives an independent handle to the same memory.
    let (v2,) = multiproc::handoff::round_trip(&(v.clone(),)).unwrap();
    std::thread::spawn(move || move_point(v2, 1.0))
        .join()
        .unwrap();
    assert_eq!(v.get().unwrap().x, 3.0);
}

fn die_holding(v: Value<u64>) {
    let g = v.lock().unwrap();
    g.set(99);
    std::mem::forget(g);
    std::process::exit(3);
}

fn a_holder_that_dies_does_not_deadlock_the_value(m: StartMethod) {
    let v = Value::new(1u64).unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(die_holding, (v.clone(),))
        .unwrap();
    assert!(p.join().is_err());
    let died = v
        .lock()
        .expect_err("the next acquirer is told the owner died");
    assert_eq!(died.get_ref().get(), 99);
    drop(died);
    v.get_lock().clear_owner_died();
    assert_eq!(v.get().unwrap(), 99);
}

#[test]
fn raw_array_basics() {
    let a = RawArray::from_slice(&[1i16, 2, 3]).unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(a.get(2), Some(3));
    assert_eq!(a.get(3), None);
    assert!(a.set(3, 1).is_err());
    assert!(a.copy_from_slice(&[1, 2]).is_err());
    a.copy_from_slice(&[4, 5, 6]).unwrap();
    assert_eq!(a.to_vec(), vec![4, 5, 6]);
    let empty = RawArray::<u64>::zeroed(0).unwrap();
    assert!(empty.is_empty() && empty.to_vec().is_empty());
    let e = Array::<u64>::zeroed(0).unwrap();
    assert!(e.to_vec().unwrap().is_empty());
}

/// CPython's documented idiom, line for line: hold `get_lock()` while
/// reading and writing `.value` (which take the lock again).
fn incr_python_style(v: Value<u64>, a: Array<u32>, n: u64) {
    for _ in 0..n {
        let _g = v.get_lock().acquire().unwrap();
        v.set(v.get().unwrap() + 1).unwrap();
        let _h = a.get_lock().acquire().unwrap();
        a.set(0, a.get(0).unwrap() + 2).unwrap();
        assert_eq!(a.to_vec().unwrap().len(), 2);
    }
}

fn python_get_lock_idiom_does_not_deadlock(m: StartMethod) {
    let v = Value::new(0u64).unwrap();
    let a = Array::<u32>::zeroed(2).unwrap();
    let ps: Vec<_> = (0..PROCS)
        .map(|_| {
            Process::builder()
                .start_method(m)
                .start(incr_python_style, (v.clone(), a.clone(), N))
                .unwrap()
        })
        .collect();
    // In a thread, so that a deadlock here fails the test instead of hanging it.
    let (done_tx, done) = std::sync::mpsc::channel();
    let (v2, a2) = (v.clone(), a.clone());
    std::thread::spawn(move || {
        incr_python_style(v2, a2, N);
        let _ = done_tx.send(());
    });
    done.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the idiom must not deadlock");
    for mut p in ps {
        p.join_timeout(std::time::Duration::from_secs(60))
            .expect("the idiom must not deadlock");
    }
    let total = N * (PROCS as u64 + 1);
    assert_eq!(v.get().unwrap(), total, "{m:?}");
    assert_eq!(a.get(0).unwrap() as u64, 2 * total, "{m:?}");
}

fn incr_shared_rlock(v: Value<u64, RLock>, w: Value<u64, RLock>, n: u64) {
    for _ in 0..n {
        // One lock guards both values: hold it, update both consistently.
        let _g = v.get_lock().acquire().unwrap();
        v.set(v.get().unwrap() + 1).unwrap();
        w.set(w.get().unwrap() + 1).unwrap();
        assert_eq!(v.get().unwrap(), w.get().unwrap());
    }
}

fn with_lock_accepts_an_rlock(m: StartMethod) {
    let lock = RLock::new().unwrap();
    let v = Value::with_lock(0u64, lock.clone()).unwrap();
    let w = Value::with_lock(0u64, lock.clone()).unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(incr_shared_rlock, (v.clone(), w.clone(), N))
        .unwrap();
    incr_shared_rlock(v.clone(), w.clone(), N);
    p.join().unwrap();
    assert_eq!(v.get().unwrap(), 2 * N);
    assert_eq!(w.get().unwrap(), 2 * N);
    let _g = lock.acquire().unwrap();
    assert!(v.get_lock().is_mine() && w.get_lock().is_mine());
}
