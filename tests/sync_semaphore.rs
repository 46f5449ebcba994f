//! `Semaphore` / `BoundedSemaphore`: CPython's `_TestSemaphore` cases across
//! threads and processes, and `Event`: `_TestEvent`.

multiproc::test_support!();

mod sync_common;

use multiproc::sync::{BoundedSemaphore, Event, Semaphore};
use multiproc::{Error, Process, StartMethod};
use std::sync::atomic::Ordering;
use std::time::Duration;
use sync_common::{eventually, Cells};

#[macro_use]
mod common;

start_methods! {
    releases_wake_blocked_processes,
    test_event,
    event_wakes_all_waiters,
}

/// `_TestSemaphore.test_semaphore`: 2 → 1 → 0, try fails, releases go to
/// 1, 2, then (unbounded) 3, 4.
#[test]
fn test_semaphore() {
    let s = Semaphore::new(2).unwrap();
    assert_eq!(s.value(), 2);
    s.acquire().unwrap().leak();
    assert_eq!(s.value(), 1);
    s.acquire().unwrap().leak();
    assert_eq!(s.value(), 0);
    assert!(matches!(s.try_acquire(), Err(Error::Timeout)));
    assert_eq!(s.value(), 0);
    for v in 1..=4 {
        s.release().unwrap();
        assert_eq!(s.value(), v);
    }
}

/// `_TestSemaphore.test_bounded_semaphore`, with the over-release check that
/// CPython leaves out (macOS cannot detect it; we can).
#[test]
fn test_bounded_semaphore() {
    let s = BoundedSemaphore::new(2).unwrap();
    assert_eq!(s.value(), 2);
    s.acquire().unwrap().leak();
    s.acquire().unwrap().leak();
    assert!(s.try_acquire().is_err());
    s.release().unwrap();
    s.release().unwrap();
    assert_eq!(s.value(), 2);
    assert!(matches!(s.release(), Err(Error::ReleasedTooOften)));
    assert_eq!(s.value(), 2);
}

/// `_TestSemaphore.test_timeout`: `Semaphore(0)`: non-blocking and timed
/// acquires fail.
#[test]
fn test_timeout() {
    let s = Semaphore::new(0).unwrap();
    assert!(matches!(s.try_acquire(), Err(Error::Timeout)));
    assert!(matches!(
        s.acquire_timeout(Duration::ZERO),
        Err(Error::Timeout)
    ));
    assert!(matches!(
        s.acquire_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert_eq!(s.value(), 0);
}

fn take_and_count(s: Semaphore, cells: Cells, n: u32) {
    for _ in 0..n {
        s.acquire().expect("acquire").leak();
        cells.get(0).fetch_add(1, Ordering::SeqCst);
    }
}

/// Children block on a zero semaphore and proceed exactly as often as the
/// parent releases.
fn releases_wake_blocked_processes(m: StartMethod) {
    let s = Semaphore::new(0).unwrap();
    let cells = Cells::new(1);
    let ps: Vec<_> = (0..2)
        .map(|_| {
            Process::builder()
                .start_method(m)
                .start(take_and_count, (s.clone(), cells.clone(), 3))
                .unwrap()
        })
        .collect();
    for i in 1..=6u32 {
        s.release().unwrap();
        eventually("a child takes the count", || {
            cells.get(0).load(Ordering::SeqCst) == i
        });
    }
    for mut p in ps {
        p.join().unwrap();
    }
    assert_eq!(s.value(), 0);
}

/// A semaphore bounding concurrency: never more than 2 inside.
#[test]
fn semaphore_bounds_concurrency() {
    let s = BoundedSemaphore::new(2).unwrap();
    let inside = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let max = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (s, inside, max) = (s.clone(), inside.clone(), max.clone());
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let _g = s.acquire().unwrap();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    std::thread::yield_now();
                    inside.fetch_sub(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert!(max.load(Ordering::SeqCst) <= 2);
    assert_eq!(s.value(), 2);
}

/// A timed-out waiter does not swallow a release meant for another waiter.
#[test]
fn timeouts_do_not_lose_releases() {
    let s = Semaphore::new(0).unwrap();
    let s2 = s.clone();
    let long = std::thread::spawn(move || {
        s2.acquire_timeout(Duration::from_secs(60))
            .map(|g| g.leak())
            .is_ok()
    });
    for _ in 0..20 {
        let _ = s.acquire_timeout(Duration::from_millis(1));
    }
    s.release().unwrap();
    assert!(long.join().unwrap(), "the release reached the long waiter");
    assert_eq!(s.value(), 0);
}

fn set_later(e: Event) {
    std::thread::sleep(Duration::from_millis(50));
    e.set();
}

/// `_TestEvent.test_event`.
fn test_event(m: StartMethod) {
    let e = Event::new().unwrap();
    assert!(!e.is_set());
    assert!(matches!(
        e.wait_timeout(Duration::ZERO),
        Err(Error::Timeout)
    ));
    assert!(matches!(
        e.wait_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    e.set();
    assert!(e.is_set());
    e.wait();
    e.wait_timeout(Duration::from_millis(20)).unwrap();
    e.clear();
    assert!(!e.is_set());
    let mut p = Process::builder()
        .start_method(m)
        .start(set_later, (e.clone(),))
        .unwrap();
    e.wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|err| panic!("{m:?}: the child sets it: {err}"));
    assert!(e.is_set());
    p.join().unwrap();
    assert_eq!(format!("{e:?}"), "<Event(set)>");
}

fn wait_event(e: Event, cells: Cells) -> bool {
    cells.get(0).fetch_add(1, Ordering::SeqCst);
    e.wait_timeout(Duration::from_secs(60)).is_ok()
}

/// `set` wakes every waiting process.
fn event_wakes_all_waiters(m: StartMethod) {
    let e = Event::new().unwrap();
    let cells = Cells::new(1);
    let ps: Vec<_> = (0..3)
        .map(|_| {
            Process::builder()
                .start_method(m)
                .start(wait_event, (e.clone(), cells.clone()))
                .unwrap()
        })
        .collect();
    eventually("children waiting", || {
        cells.get(0).load(Ordering::SeqCst) == 3
    });
    e.set();
    for mut p in ps {
        assert!(p.join().unwrap());
    }
}
