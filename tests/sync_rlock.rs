//! `RLock`: CPython's `_TestLock.test_rlock` cases, ownership by (process,
//! thread), and robustness to a holder that dies.

multiproc::test_support!();

mod sync_common;

use multiproc::sync::{RLock, TryAcquireError};
use multiproc::{Error, Process, StartMethod};
use std::time::Duration;
use sync_common::eventually;

#[macro_use]
mod common;

start_methods! {
    other_process_cannot_take_or_release,
    holder_killed_gives_owner_died,
}

/// `_TestLock.test_rlock` (extended): three nested acquires, three releases,
/// a fourth release is an error; `locked()` until the last release.
#[test]
fn test_rlock() {
    let r = RLock::new().unwrap();
    for _ in 0..3 {
        r.acquire().unwrap().leak();
    }
    assert_eq!(r.count(), 3);
    for i in 0..3 {
        assert!(r.locked(), "still locked before release {i}");
        r.release().unwrap();
    }
    assert!(!r.locked());
    assert!(matches!(r.release(), Err(Error::NotHeld)));
}

/// `_TestLock.test_rlock_context`, with guards nesting.
#[test]
fn test_rlock_context() {
    let r = RLock::new().unwrap();
    {
        let _a = r.acquire().unwrap();
        let _b = r.try_acquire().unwrap();
        let _c = r.acquire_timeout(Duration::from_millis(1)).unwrap();
        assert_eq!(r.count(), 3);
    }
    assert!(!r.locked());
    assert_eq!(r.count(), 0);
}

/// Owned by a thread: another thread can neither take nor release it.
#[test]
fn other_thread_cannot_take_or_release() {
    let r = RLock::new().unwrap();
    let g = r.acquire().unwrap();
    let r2 = r.clone();
    let (tried, released) = std::thread::spawn(move || {
        let tried = r2.try_acquire().is_err();
        let released = r2.release().is_err();
        (tried, released)
    })
    .join()
    .unwrap();
    assert!(tried, "another thread must not acquire a held RLock");
    assert!(released, "another thread must not release it");
    assert_eq!(r.count(), 1);
    drop(g);
    let r2 = r.clone();
    assert!(
        std::thread::spawn(move || r2.try_acquire().map(drop).is_ok())
            .join()
            .unwrap()
    );
}

fn child_try(r: RLock) -> (bool, bool, bool) {
    let locked = r.locked();
    let try_failed = r.try_acquire().is_err();
    let release_failed = r.release().is_err();
    (locked, try_failed, release_failed)
}

/// `test_rlock_locked_2processes`-style: held in the parent, a child sees it
/// locked and can neither acquire nor release it.
fn other_process_cannot_take_or_release(m: StartMethod) {
    let r = RLock::new().unwrap();
    let g = r.acquire().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(child_try, (r.clone(),))
        .unwrap();
    assert_eq!(p.join().unwrap(), (true, true, true), "{m:?}");
    drop(g);
    assert!(!r.locked());
}

fn hold_nested_forever(r: RLock) {
    let _a = r.acquire().expect("acquire");
    let _b = r.acquire().expect("acquire again");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A child killed holding the RLock (twice): the parent takes it over with
/// OwnerDied, at depth 1, and it works afterwards.
fn holder_killed_gives_owner_died(m: StartMethod) {
    let r = RLock::new().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(hold_nested_forever, (r.clone(),))
        .unwrap();
    eventually("child holds the rlock", || r.locked());
    p.kill().unwrap();
    match r.acquire_timeout(Duration::from_secs(60)) {
        Err(TryAcquireError::OwnerDied(d)) => {
            let g = d.into_inner();
            assert_eq!(r.count(), 1);
            drop(g);
        }
        other => panic!("{m:?}: expected OwnerDied, got {other:?}"),
    }
    assert!(!r.locked());
    r.clear_owner_died();
    let g = r.acquire().unwrap();
    assert!(r.is_mine());
    drop(g);
    let _ = p.join();
}
