//! One timeout shape across `multiproc::sync`: every timed or non-blocking
//! operation reports a timeout as an `Err` that converts into
//! `Error::Timeout` (so `?` and `is_timeout()` work the same everywhere).
multiproc::test_support!();

use multiproc::sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
use multiproc::Error;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_millis(5);

/// `r` is an `Err` that becomes `Error::Timeout` through `?`.
fn is_timeout<V, E>(r: Result<V, E>) -> bool
where
    Error: From<E>,
{
    fn lift<V, E>(r: Result<V, E>) -> multiproc::Result<V>
    where
        Error: From<E>,
    {
        Ok(r?)
    }
    matches!(lift(r), Err(Error::Timeout))
}

#[test]
fn every_sync_timeout_is_error_timeout() {
    let lock = Lock::new().unwrap();
    let _held = lock.acquire().unwrap();
    let other = lock.clone();
    let soon = Instant::now() + T;
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(is_timeout(other.try_acquire()));
            assert!(is_timeout(other.acquire_timeout(T)));
            assert!(is_timeout(other.acquire_deadline(soon)));
            assert!(other.try_acquire().unwrap_err().is_timeout());
        });
    });

    let rlock = RLock::new().unwrap();
    let _rheld = rlock.acquire().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(is_timeout(rlock.try_acquire()));
            assert!(is_timeout(rlock.acquire_timeout(T)));
        });
    });

    let sem = Semaphore::new(0).unwrap();
    assert!(is_timeout(sem.try_acquire()));
    assert!(is_timeout(sem.acquire_timeout(T)));
    let bsem = BoundedSemaphore::new(1).unwrap();
    let _b = bsem.acquire().unwrap();
    assert!(is_timeout(bsem.acquire_timeout(T)));

    let ev = Event::new().unwrap();
    assert!(is_timeout(ev.wait_timeout(T)));
    assert!(is_timeout(ev.wait_until(Some(Instant::now() + T))));
    ev.set();
    assert!(ev.wait_timeout(T).is_ok());

    let cond = Condition::new().unwrap();
    let mut g = cond.acquire().unwrap();
    assert!(is_timeout(cond.wait_timeout(&mut g, T)));
    assert!(is_timeout(cond.wait_for(&mut g, || false, Some(T))));
    assert!(cond.wait_for(&mut g, || true, Some(T)).is_ok());
    assert_eq!(cond.lock().count(), 1, "held again after the timeouts");
    drop(g);

    let barrier = Barrier::new(2).unwrap();
    assert!(is_timeout(barrier.wait_timeout(T)));
    assert!(matches!(barrier.wait(), Err(Error::BrokenBarrier)));
}
