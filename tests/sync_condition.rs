//! `Condition`: CPython's `_TestCondition` cases across processes and
//! threads, with an `RLock` (the default) and with a `Lock`, plus waiters
//! that die; every case with children under each start method.

multiproc::test_support!();

mod sync_common;
#[macro_use]
mod common;

use common::{builder, partner};

start_methods! {
    test_notify_rlock,
    test_notify_lock,
    test_notify_all_rlock,
    test_notify_all_lock,
    test_notify_n,
    test_waitfor,
    test_waitfor_timeout,
    test_wait_result,
    dead_waiter_does_not_swallow_notify,
    holder_dies_while_waiter_reacquires,
}

use multiproc::sync::{Condition, ConditionLock, Lock, RLock};
use multiproc::{Error, Process, StartMethod};
use std::sync::atomic::Ordering;
use std::time::Duration;
use sync_common::{eventually, Cells};

const SLEEPING: usize = 0;
const WOKEN: usize = 1;
const TIMED_OUT: usize = 2;
const STATE: usize = 3;

/// Waits once on `cond` (timeout in ms, 0 = none), counting in `cells`.
fn waiter<L: ConditionLock>(cond: Condition<L>, cells: Cells, timeout_ms: u64) {
    let mut g = cond.acquire().unwrap_or_else(|e| e.into_inner());
    cells.get(SLEEPING).fetch_add(1, Ordering::SeqCst);
    let notified = if timeout_ms == 0 {
        cond.wait(&mut g).expect("wait");
        true
    } else {
        match cond.wait_timeout(&mut g, Duration::from_millis(timeout_ms)) {
            Ok(()) => true,
            Err(Error::Timeout) => false,
            Err(e) => panic!("wait: {e}"),
        }
    };
    cells
        .get(if notified { WOKEN } else { TIMED_OUT })
        .fetch_add(1, Ordering::SeqCst);
}

fn start_waiters<L: ConditionLock + Send + Sync + 'static>(
    m: StartMethod,
    cond: &Condition<L>,
    cells: &Cells,
    timeout_ms: u64,
) -> (Vec<Process<()>>, Vec<std::thread::JoinHandle<()>>) {
    let procs = [m, partner(m), m]
        .into_iter()
        .map(|m| {
            Process::builder()
                .start_method(m)
                .start(waiter::<L>, (cond.clone(), cells.clone(), timeout_ms))
                .unwrap()
        })
        .collect();
    let threads = (0..3)
        .map(|_| {
            let (c, k) = (cond.clone(), cells.clone());
            std::thread::spawn(move || waiter(c, k, timeout_ms))
        })
        .collect();
    (procs, threads)
}

fn join_all(procs: Vec<Process<()>>, threads: Vec<std::thread::JoinHandle<()>>) {
    for mut p in procs {
        p.join().unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
}

fn count(cells: &Cells, i: usize) -> u32 {
    cells.get(i).load(Ordering::SeqCst)
}

fn notify<L: ConditionLock>(cond: &Condition<L>, n: usize) {
    let _g = cond.acquire().unwrap_or_else(|e| e.into_inner());
    cond.notify(n).unwrap();
}

/// `_TestCondition.test_notify`: a process and a thread wait; each
/// `notify()` wakes exactly one.
fn check_notify<L: ConditionLock + Send + Sync + 'static>(m: StartMethod, cond: Condition<L>) {
    let cells = Cells::new(4);
    let mut p = Process::builder()
        .start_method(m)
        .start(waiter::<L>, (cond.clone(), cells.clone(), 0))
        .unwrap();
    let (c, k) = (cond.clone(), cells.clone());
    let t = std::thread::spawn(move || waiter(c, k, 0));
    eventually("both waiting", || cond.n_waiting() == 2);
    assert_eq!(count(&cells, WOKEN), 0);
    notify(&cond, 1);
    eventually("one woken", || count(&cells, WOKEN) == 1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(count(&cells, WOKEN), 1, "notify() woke more than one");
    notify(&cond, 1);
    eventually("both woken", || count(&cells, WOKEN) == 2);
    p.join().unwrap();
    t.join().unwrap();
    assert_eq!(cond.n_waiting(), 0);
}

fn test_notify_rlock(m: StartMethod) {
    check_notify(m, Condition::new().unwrap());
}

fn test_notify_lock(m: StartMethod) {
    check_notify(m, Condition::with_lock(Lock::new().unwrap()).unwrap());
}

/// `_TestCondition.test_notify_all`: 6 waiters with a short timeout all time
/// out; 6 more without timeout are all woken by one `notify_all()`.
fn check_notify_all<L: ConditionLock + Send + Sync + 'static>(m: StartMethod, cond: Condition<L>) {
    let cells = Cells::new(4);
    let (ps, ts) = start_waiters(m, &cond, &cells, 100);
    join_all(ps, ts);
    assert_eq!(count(&cells, TIMED_OUT), 6);
    assert_eq!(count(&cells, WOKEN), 0);
    assert_eq!(cond.n_waiting(), 0);

    let (ps, ts) = start_waiters(m, &cond, &cells, 0);
    eventually("six waiting", || cond.n_waiting() == 6);
    assert_eq!(count(&cells, WOKEN), 0);
    {
        let _g = cond.acquire().unwrap();
        cond.notify_all().unwrap();
    }
    join_all(ps, ts);
    assert_eq!(count(&cells, WOKEN), 6);
}

fn test_notify_all_rlock(m: StartMethod) {
    check_notify_all(m, Condition::new().unwrap());
}

fn test_notify_all_lock(m: StartMethod) {
    check_notify_all(m, Condition::with_lock(Lock::new().unwrap()).unwrap());
}

/// `_TestCondition.test_notify_n`: `notify(2)` wakes 2, `notify(4)` the other
/// 4, `notify(3)` with nobody waiting changes nothing.
fn test_notify_n(m: StartMethod) {
    let cond = Condition::new().unwrap();
    let cells = Cells::new(4);
    let (ps, ts) = start_waiters(m, &cond, &cells, 0);
    eventually("six waiting", || cond.n_waiting() == 6);
    notify(&cond, 2);
    eventually("two woken", || count(&cells, WOKEN) == 2);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(count(&cells, WOKEN), 2, "notify(2) woke more than two");
    assert_eq!(cond.n_waiting(), 4);
    notify(&cond, 4);
    eventually("six woken", || count(&cells, WOKEN) == 6);
    notify(&cond, 3);
    join_all(ps, ts);
    assert_eq!(count(&cells, WOKEN), 6);
    assert_eq!(cond.n_waiting(), 0);
}

/// `_TestCondition.test_timeout`: `wait(t)` with nobody notifying → false.
#[test]
fn test_timeout() {
    let cond = Condition::new().unwrap();
    let mut g = cond.acquire().unwrap();
    assert!(matches!(
        cond.wait_timeout(&mut g, Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    assert_eq!(g.lock().count(), 1, "the lock is held again after wait");
}

fn waitfor_child(cond: Condition, cells: Cells) -> bool {
    let mut g = cond.acquire().unwrap();
    cells.get(STATE).store(0, Ordering::SeqCst);
    cond.notify(1).unwrap();
    cond.wait_for(
        &mut g,
        || cells.get(STATE).load(Ordering::SeqCst) == 4,
        None,
    )
    .unwrap();
    cells.get(STATE).load(Ordering::SeqCst) == 4
}

/// `_TestCondition.test_waitfor`.
fn test_waitfor(m: StartMethod) {
    let cond = Condition::new().unwrap();
    let cells = Cells::new(4);
    cells.get(STATE).store(u32::MAX, Ordering::SeqCst);
    let mut g = cond.acquire().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(waitfor_child, (cond.clone(), cells.clone()))
        .unwrap();
    cond.wait_for(
        &mut g,
        || cells.get(STATE).load(Ordering::SeqCst) == 0,
        Some(Duration::from_secs(60)),
    )
    .unwrap();
    drop(g);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(10));
        let _g = cond.acquire().unwrap();
        cells.get(STATE).fetch_add(1, Ordering::SeqCst);
        cond.notify(1).unwrap();
    }
    assert!(p.join().unwrap(), "{m:?}");
}

fn waitfor_timeout_child(cond: Condition, cells: Cells) -> bool {
    let mut g = cond.acquire().unwrap();
    cells.get(SLEEPING).store(1, Ordering::SeqCst);
    let r = cond.wait_for(
        &mut g,
        || cells.get(STATE).load(Ordering::SeqCst) == 4,
        Some(Duration::from_millis(100)),
    );
    matches!(r, Err(Error::Timeout))
}

/// `_TestCondition.test_waitfor_timeout`: the predicate never becomes true
/// within the timeout → false, despite notifications.
fn test_waitfor_timeout(m: StartMethod) {
    let cond = Condition::new().unwrap();
    let cells = Cells::new(4);
    let mut p = builder(m)
        .start(waitfor_timeout_child, (cond.clone(), cells.clone()))
        .unwrap();
    eventually("child waiting", || {
        cells.get(SLEEPING).load(Ordering::SeqCst) == 1
    });
    for _ in 0..3 {
        let _g = cond.acquire().unwrap();
        cells.get(STATE).fetch_add(1, Ordering::SeqCst);
        cond.notify(1).unwrap();
    }
    assert!(
        p.join().unwrap(),
        "wait_for returned true without the predicate"
    );
}

fn notify_once(cond: Condition) {
    let _g = cond.acquire().unwrap();
    cond.notify(1).unwrap();
}

/// `_TestCondition.test_wait_result`: `wait(0)`, `wait(0.1)` → false; a
/// child's notify makes `wait(60)` → true.
fn test_wait_result(m: StartMethod) {
    let cond = Condition::new().unwrap();
    let mut g = cond.acquire().unwrap();
    assert!(matches!(
        cond.wait_timeout(&mut g, Duration::ZERO),
        Err(Error::Timeout)
    ));
    assert!(matches!(
        cond.wait_timeout(&mut g, Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    let mut p = builder(m).start(notify_once, (cond.clone(),)).unwrap();
    cond.wait_timeout(&mut g, Duration::from_secs(60)).unwrap();
    drop(g);
    p.join().unwrap();
}

/// Notifying or waiting without holding the lock is an error; a guard of
/// another lock is refused.
#[test]
fn misuse_is_an_error() {
    let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
    assert!(matches!(cond.notify(1), Err(Error::NotHeld)));
    assert!(matches!(cond.notify_all(), Err(Error::NotHeld)));
    let other = Lock::new().unwrap();
    let mut g = other.acquire().unwrap();
    assert!(matches!(
        cond.wait_timeout(&mut g, Duration::ZERO),
        Err(Error::Invalid(_))
    ));
    let rcond = Condition::new().unwrap();
    let r2 = RLock::new().unwrap();
    let mut g2 = r2.acquire().unwrap();
    assert!(matches!(
        rcond.wait_timeout(&mut g2, Duration::ZERO),
        Err(Error::Invalid(_))
    ));
}

/// An RLock held several times is fully released while waiting, and held at
/// the same depth afterwards.
#[test]
fn rlock_depth_is_restored() {
    let cond = Condition::new().unwrap();
    let mut g = cond.acquire().unwrap();
    let g2 = cond.acquire().unwrap();
    let c2 = cond.clone();
    let t = std::thread::spawn(move || {
        let _g = c2.acquire().unwrap();
        c2.notify(1).unwrap();
    });
    cond.wait_timeout(&mut g, Duration::from_secs(60)).unwrap();
    assert_eq!(cond.lock().count(), 2);
    drop(g2);
    drop(g);
    t.join().unwrap();
    assert!(!cond.lock().locked());
}

/// A waiter that dies does not use up a notification: `notify(1)` skips its
/// slot and wakes the live waiter.
fn dead_waiter_does_not_swallow_notify(m: StartMethod) {
    let cond = Condition::new().unwrap();
    let cells = Cells::new(4);
    let mut dead = Process::builder()
        .start_method(m)
        .start(waiter::<RLock>, (cond.clone(), cells.clone(), 0))
        .unwrap();
    eventually("first waiting", || cond.n_waiting() == 1);
    dead.kill().unwrap();
    // SIGKILL is delivered asynchronously: until the waiter has really ended
    // it is alive, and a notify may rightly go to it. Wait for its end.
    assert!(dead.wait(Some(Duration::from_secs(60))).unwrap().is_some());
    let (c, k) = (cond.clone(), cells.clone());
    let live = std::thread::spawn(move || waiter(c, k, 0));
    eventually("second waiting", || {
        count(&cells, SLEEPING) == 2 && cond.n_waiting() == 2
    });
    notify(&cond, 1);
    live.join().unwrap();
    assert_eq!(count(&cells, WOKEN), 1);
    assert_eq!(cond.n_waiting(), 0, "the dead waiter's slot was reclaimed");
}

fn hold_cond_lock_forever(cond: Condition<Lock>, cells: Cells) {
    let _g = cond.acquire().expect("acquire");
    cond.notify_all().expect("notify");
    cells.get(STATE).store(1, Ordering::SeqCst);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The lock's holder dies while a notified waiter waits to re-acquire it:
/// the wait returns `OwnerDied` with the lock held again (no hang), and the
/// condition keeps working after `clear_owner_died`.
fn holder_dies_while_waiter_reacquires(m: StartMethod) {
    let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
    let cells = Cells::new(4);
    let mut g = cond.acquire().unwrap();
    let p = Process::builder()
        .start_method(m)
        .start(hold_cond_lock_forever, (cond.clone(), cells.clone()))
        .unwrap();
    let k = cells.clone();
    let killer = std::thread::spawn(move || {
        let mut p = p;
        eventually("child holds the lock and notified", || {
            k.get(STATE).load(Ordering::SeqCst) == 1
        });
        std::thread::sleep(Duration::from_millis(20));
        p.kill().unwrap();
        let _ = p.join();
    });
    // The child's notify wakes us; re-acquiring then waits for the child,
    // which dies holding the lock.
    let r = cond.wait(&mut g);
    assert!(matches!(r, Err(Error::OwnerDied)), "{m:?}: {r:?}");
    assert!(cond.lock().locked(), "the waiter holds the lock again");
    cond.lock().clear_owner_died();
    assert!(matches!(
        cond.wait_timeout(&mut g, Duration::from_millis(10)),
        Err(Error::Timeout)
    ));
    drop(g);
    killer.join().unwrap();
    assert!(!cond.lock().locked());
}
