//! `Barrier`: CPython's `_TestBarrier` cases (N = 5 parties: 4 worker
//! processes of two start methods mixed, plus the test thread), and parties
//! that die; every case under each start method (`common::start_methods!`).

multiproc::test_support!();

mod sync_common;
#[macro_use]
mod common;

use common::{partner, scaled, METHODS};

start_methods! {
    test_barrier,
    test_barrier_10,
    test_wait_return,
    test_action,
    test_abort,
    test_reset,
    test_abort_and_reset,
    test_timeout,
    test_default_timeout,
    test_thousand,
    party_killed_while_waiting_breaks_barrier,
    last_arrival_sees_dead_party,
}

use multiproc::sync::{Barrier, Lock};
use multiproc::{Error, Process, StartMethod};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;
use sync_common::{eventually, Cells};

const N: usize = 5;

/// Starts N-1 workers running `$f($args)`, alternating `$m` and its
/// partner (`common::partner`: fork with spawn, spawn with forkserver,
/// forkserver with fork).
macro_rules! workers {
    ($m:expr, $f:expr, $args:expr) => {
        (0..N - 1)
            .map(|i| {
                let m = if i % 2 == 0 { $m } else { partner($m) };
                Process::builder()
                    .start_method(m)
                    .start($f, $args.clone())
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
}

fn join<R: serde::Serialize + serde::de::DeserializeOwned>(ps: Vec<Process<R>>) -> Vec<R> {
    ps.into_iter().map(|mut p| p.join().unwrap()).collect()
}

/// CPython's `multipass`: lockstep check with two counters.
fn multipass(b: Barrier, cells: Cells, passes: u32) -> bool {
    let m = b.parties() as u32;
    for i in 0..passes {
        cells.get(0).fetch_add(1, Ordering::SeqCst);
        if cells.get(1).load(Ordering::SeqCst) != i * m {
            return false;
        }
        b.wait().expect("wait");
        cells.get(1).fetch_add(1, Ordering::SeqCst);
        if cells.get(0).load(Ordering::SeqCst) != (i + 1) * m {
            return false;
        }
        b.wait().expect("wait");
    }
    true
}

fn check_multipass(m: StartMethod, passes: u32) {
    let b = Barrier::new(N).unwrap();
    let cells = Cells::new(2);
    let ps = workers!(m, multipass, (b.clone(), cells.clone(), passes));
    assert!(multipass(b.clone(), cells.clone(), passes));
    assert!(join(ps).into_iter().all(|ok| ok));
    assert_eq!(b.n_waiting(), 0);
    assert!(!b.broken());
}

/// `test_barrier`: one pass in lockstep.
fn test_barrier(m: StartMethod) {
    check_multipass(m, 1);
}

/// `test_barrier_10`: ten passes (the barrier is reusable).
fn test_barrier_10(m: StartMethod) {
    check_multipass(m, 10);
}

fn wait_return(b: Barrier) -> usize {
    b.wait().expect("wait")
}

/// `test_wait_return`: the indices are 0..N, exactly one is 0.
fn test_wait_return(m: StartMethod) {
    let b = Barrier::new(N).unwrap();
    let ps = workers!(m, wait_return, (b.clone(),));
    let mut idx = vec![b.wait().unwrap()];
    idx.extend(join(ps));
    idx.sort();
    assert_eq!(idx, (0..N).collect::<Vec<_>>());
}

/// One slot per start method: the matrix runs the three `test_action`s at
/// once in this binary, and the action (a plain `fn()`) finds its test's
/// cells through its own slot.
static ACTION_CELLS: [OnceLock<Cells>; 3] = [const { OnceLock::new() }; 3];

fn action_in(slot: usize) {
    if let Some(c) = ACTION_CELLS[slot].get() {
        c.get(0).fetch_add(1, Ordering::SeqCst);
    }
}

fn action_0() {
    action_in(0)
}
fn action_1() {
    action_in(1)
}
fn action_2() {
    action_in(2)
}

fn action_worker(b: Barrier, cells: Cells, slot: usize) -> bool {
    let _ = ACTION_CELLS[slot].set(cells.clone());
    b.wait().expect("wait");
    // The action ran exactly once, before anybody was released.
    let ok = cells.get(0).load(Ordering::SeqCst) == 1;
    b.wait().expect("wait");
    ok
}

/// `test_action`: the action runs exactly once per pass, before release, in
/// whichever process arrives last (children of every method alike).
fn test_action(m: StartMethod) {
    let slot = METHODS.iter().position(|&x| x == m).unwrap();
    let cells = Cells::new(1);
    let _ = ACTION_CELLS[slot].set(cells.clone());
    let b = match slot {
        0 => Barrier::with_action(N, action_0),
        1 => Barrier::with_action(N, action_1),
        _ => Barrier::with_action(N, action_2),
    }
    .unwrap();
    let ps = workers!(m, action_worker, (b.clone(), cells.clone(), slot));
    b.wait().unwrap();
    assert_eq!(cells.get(0).load(Ordering::SeqCst), 1);
    b.wait().unwrap();
    assert!(join(ps).into_iter().all(|ok| ok));
    assert_eq!(cells.get(0).load(Ordering::SeqCst), 2);
}

const R1: usize = 0;
const R2: usize = 1;
const R3: usize = 2;

fn abort_worker(b: Barrier, cells: Cells) {
    let r = (|| -> multiproc::Result<()> {
        let i = b.wait()?;
        if i == N / 2 {
            b.abort();
            return Ok(());
        }
        b.wait()?;
        cells.get(R1).fetch_add(1, Ordering::SeqCst);
        Ok(())
    })();
    if let Err(e) = r {
        assert!(matches!(e, Error::BrokenBarrier), "{e}");
        cells.get(R2).fetch_add(1, Ordering::SeqCst);
    }
}

/// `test_abort`: one party aborts instead of waiting again; the others get
/// BrokenBarrier; nobody passes.
fn test_abort(m: StartMethod) {
    let b = Barrier::new(N).unwrap();
    let cells = Cells::new(3);
    let ps = workers!(m, abort_worker, (b.clone(), cells.clone()));
    abort_worker(b.clone(), cells.clone());
    join(ps);
    assert_eq!(cells.get(R1).load(Ordering::SeqCst), 0);
    assert_eq!(cells.get(R2).load(Ordering::SeqCst), N as u32 - 1);
    assert!(b.broken());
}

fn reset_worker(b: Barrier, cells: Cells) {
    let i = b.wait().expect("wait");
    if i == N / 2 {
        eventually("the others wait", || b.n_waiting() == N - 1);
        b.reset();
    } else {
        match b.wait() {
            Ok(_) => cells.get(R1).fetch_add(1, Ordering::SeqCst),
            Err(Error::BrokenBarrier) => cells.get(R2).fetch_add(1, Ordering::SeqCst),
            Err(e) => panic!("{e}"),
        };
    }
    b.wait().expect("pass again after the reset");
    cells.get(R3).fetch_add(1, Ordering::SeqCst);
}

/// `test_reset`: a reset while N-1 wait breaks their wait; then all N pass.
fn test_reset(m: StartMethod) {
    let b = Barrier::new(N).unwrap();
    let cells = Cells::new(3);
    let ps = workers!(m, reset_worker, (b.clone(), cells.clone()));
    reset_worker(b.clone(), cells.clone());
    join(ps);
    assert_eq!(cells.get(R1).load(Ordering::SeqCst), 0);
    assert_eq!(cells.get(R2).load(Ordering::SeqCst), N as u32 - 1);
    assert_eq!(cells.get(R3).load(Ordering::SeqCst), N as u32);
}

fn abort_and_reset_worker(b: Barrier, b2: Barrier, cells: Cells) {
    let r = (|| -> multiproc::Result<()> {
        let i = b.wait()?;
        if i == N / 2 {
            b.abort();
            return Ok(());
        }
        b.wait()?;
        cells.get(R1).fetch_add(1, Ordering::SeqCst);
        Ok(())
    })();
    if r.is_err() {
        cells.get(R2).fetch_add(1, Ordering::SeqCst);
    }
    // Synchronise and reset the barrier; one party resets it.
    if b2.wait().expect("b2") == N / 2 {
        b.reset();
    }
    b2.wait().expect("b2");
    b.wait().expect("pass after reset");
    cells.get(R3).fetch_add(1, Ordering::SeqCst);
}

/// `test_abort_and_reset`.
fn test_abort_and_reset(m: StartMethod) {
    let b = Barrier::new(N).unwrap();
    let b2 = Barrier::new(N).unwrap();
    let cells = Cells::new(3);
    let ps = workers!(
        m,
        abort_and_reset_worker,
        (b.clone(), b2.clone(), cells.clone())
    );
    abort_and_reset_worker(b.clone(), b2.clone(), cells.clone());
    join(ps);
    assert_eq!(cells.get(R1).load(Ordering::SeqCst), 0);
    assert_eq!(cells.get(R2).load(Ordering::SeqCst), N as u32 - 1);
    assert_eq!(cells.get(R3).load(Ordering::SeqCst), N as u32);
}

fn timeout_worker(b: Barrier, cells: Cells, explicit: bool) {
    let i = b.wait().expect("wait");
    if i == N / 2 {
        std::thread::sleep(Duration::from_millis(1000));
    }
    let r = if explicit {
        b.wait_timeout(Duration::from_millis(500))
    } else {
        b.wait()
    };
    match r {
        Err(Error::BrokenBarrier) => {
            cells.get(0).fetch_add(1, Ordering::SeqCst);
        }
        Err(Error::Timeout) => {
            cells.get(0).fetch_add(1, Ordering::SeqCst);
            cells.get(1).fetch_add(1, Ordering::SeqCst);
        }
        _ => {}
    }
}

/// `test_timeout`: one party is late; the others' timed waits break the
/// barrier, so nobody passes: a party whose own timeout expired gets
/// `Timeout`, the others (the late one at least) `BrokenBarrier`.
fn test_timeout(m: StartMethod) {
    let b = Barrier::new(N).unwrap();
    let cells = Cells::new(2);
    let ps = workers!(m, timeout_worker, (b.clone(), cells.clone(), true));
    timeout_worker(b.clone(), cells.clone(), true);
    join(ps);
    assert_eq!(cells.get(0).load(Ordering::SeqCst), N as u32);
    let timed_out = cells.get(1).load(Ordering::SeqCst);
    assert!((1..N as u32).contains(&timed_out), "{timed_out} timed out");
}

/// `test_default_timeout`: the same with `Barrier(N, timeout=0.5)`; the
/// default timeout travels to the children.
fn test_default_timeout(m: StartMethod) {
    let b = Barrier::new(N)
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    let cells = Cells::new(2);
    let ps = workers!(m, timeout_worker, (b.clone(), cells.clone(), false));
    timeout_worker(b.clone(), cells.clone(), false);
    join(ps);
    assert_eq!(cells.get(0).load(Ordering::SeqCst), N as u32);
    let timed_out = cells.get(1).load(Ordering::SeqCst);
    assert!((1..N as u32).contains(&timed_out), "{timed_out} timed out");
}

/// `test_single_thread`.
#[test]
fn test_single_thread() {
    let b = Barrier::new(1).unwrap();
    assert_eq!(b.wait().unwrap(), 0);
    assert_eq!(b.wait().unwrap(), 0);
    assert!(Barrier::new(0).is_err());
}

fn thousand_worker(b: Barrier, lock: Lock, cells: Cells, passes: u32) -> bool {
    let mut ok = true;
    for i in 0..passes {
        b.wait().expect("wait");
        let _g = lock.acquire().expect("lock");
        let c = cells.get(0).load(Ordering::SeqCst);
        ok &= c / N as u32 == i;
        cells.get(0).store(c + 1, Ordering::SeqCst);
    }
    ok
}

/// `test_thousand`: N processes pass 1000 times; each records its pass under
/// a Lock; every pass index is recorded exactly N times, in pass order.
///
/// 1000 passes when fork leads (fork and spawn mixed, as before the
/// matrix), 250 for the other pairs (`common::scaled`).
fn test_thousand(m: StartMethod) {
    let passes = scaled(m, &[StartMethod::Fork], 1000) as u32;
    let b = Barrier::new(N).unwrap();
    let lock = Lock::new().unwrap();
    let cells = Cells::new(1);
    let ps: Vec<_> = (0..N)
        .map(|i| {
            let m = if i % 2 == 0 { m } else { partner(m) };
            Process::builder()
                .start_method(m)
                .start(
                    thousand_worker,
                    (b.clone(), lock.clone(), cells.clone(), passes),
                )
                .unwrap()
        })
        .collect();
    assert!(join(ps).into_iter().all(|ok| ok));
    assert_eq!(cells.get(0).load(Ordering::SeqCst), passes * N as u32);
}

fn wait_then_hang(b: Barrier) {
    let _ = b.wait();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn wait_result(b: Barrier) -> Result<usize, String> {
    b.wait().map_err(|e| e.to_string())
}

/// A party killed while waiting at the barrier: the others get
/// BrokenBarrier, not a hang — whether they were already waiting or arrive
/// later to complete the count. After a reset the barrier works again.
fn party_killed_while_waiting_breaks_barrier(m: StartMethod) {
    let b = Barrier::new(3).unwrap();
    // One live party already waiting…
    let mut waiting = Process::builder()
        .start_method(m)
        .start(wait_result, (b.clone(),))
        .unwrap();
    eventually("first party waiting", || b.n_waiting() == 1);
    // …then the victim arrives and is killed while waiting.
    let victim = Process::builder()
        .start_method(m)
        .start(wait_then_hang, (b.clone(),))
        .unwrap();
    eventually("victim waiting", || b.n_waiting() == 2);
    victim.kill().unwrap();
    // The waiting party notices on its own.
    let r = waiting.join().unwrap();
    assert_eq!(r, Err(Error::BrokenBarrier.to_string()), "{m:?}");
    // And a late arrival does not complete a pass with a dead party.
    assert!(matches!(
        b.wait_timeout(Duration::from_secs(60)),
        Err(Error::BrokenBarrier)
    ));
    b.reset();
    assert!(!b.broken());
    let mut p1 = Process::builder()
        .start_method(m)
        .start(wait_result, (b.clone(),))
        .unwrap();
    let mut p2 = Process::builder()
        .start_method(m)
        .start(wait_result, (b.clone(),))
        .unwrap();
    let mine = b.wait_timeout(Duration::from_secs(60)).unwrap();
    let mut idx = vec![
        mine,
        p1.join().unwrap().unwrap(),
        p2.join().unwrap().unwrap(),
    ];
    idx.sort();
    assert_eq!(idx, vec![0, 1, 2]);
}

/// The last party to arrive checks the others live: a party that arrived and
/// died does not count towards a pass.
fn last_arrival_sees_dead_party(m: StartMethod) {
    let b = Barrier::new(2).unwrap();
    let victim = Process::builder()
        .start_method(m)
        .start(wait_then_hang, (b.clone(),))
        .unwrap();
    eventually("victim waiting", || b.n_waiting() == 1);
    victim.kill().unwrap();
    let mut victim = victim;
    let _ = victim.wait(Some(Duration::from_secs(30)));
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    assert_eq!(b.n_waiting(), 0);
    b.reset();
    let b2 = b.clone();
    let t = std::thread::spawn(move || b2.wait().unwrap());
    let mine = b.wait().unwrap();
    assert_eq!(mine + t.join().unwrap(), 1);
}
