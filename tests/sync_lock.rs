//! `Lock`: CPython's `_TestLock` cases (lock part) across threads and
//! processes, plus robustness to a holder that dies.

multiproc::test_support!();

use multiproc::sync::{Lock, TryAcquireError};
use multiproc::{Error, Process, StartMethod};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[macro_use]
mod common;

start_methods! {
    processes_exclude_each_other,
    locked_seen_across_processes,
    holder_killed_gives_owner_died,
    waiter_blocked_when_holder_killed,
    try_acquire_detects_dead_holder,
    unreadable_proc_never_makes_a_live_holder_dead,
}

/// Turns a hang into a failure: polls `cond` for at most 30 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn temp_file(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "multiproc-sync-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&p, "0").expect("write temp file");
    p
}

/// `_TestLock.test_lock`: acquire → held, acquire(False) → False, release,
/// releasing an unlocked lock is an error.
#[test]
fn test_lock() {
    let lock = Lock::new().unwrap();
    assert!(!lock.locked());
    let g = lock.acquire().unwrap();
    assert!(lock.locked());
    assert!(matches!(lock.try_acquire(), Err(TryAcquireError::Timeout)));
    assert!(matches!(
        lock.acquire_timeout(Duration::from_millis(10)),
        Err(TryAcquireError::Timeout)
    ));
    drop(g);
    assert!(!lock.locked());
    assert!(matches!(lock.release(), Err(Error::NotHeld)));
    // The Python way: acquire without a guard, release explicitly.
    lock.acquire().unwrap().leak();
    assert!(lock.locked());
    lock.release().unwrap();
    assert!(lock.release().is_err());
    assert!(!lock.is_owner_died());
}

/// `_TestLock.test_lock_context`.
#[test]
fn test_lock_context() {
    let lock = Lock::new().unwrap();
    {
        let _g = lock.acquire().unwrap();
        assert!(lock.try_acquire().is_err());
    }
    let g = lock.try_acquire().unwrap();
    g.release();
    assert!(!lock.locked());
}

/// A lock acquired by one thread may be released by another (Python's `Lock`
/// has no owner).
#[test]
fn release_from_another_thread() {
    let lock = Lock::new().unwrap();
    lock.acquire().unwrap().leak();
    let l2 = lock.clone();
    std::thread::spawn(move || l2.release().unwrap())
        .join()
        .unwrap();
    assert!(!lock.locked());
}

#[test]
fn threads_exclude_each_other() {
    let lock = Lock::new().unwrap();
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let (lock, counter) = (lock.clone(), counter.clone());
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    let _g = lock.acquire().unwrap();
                    // A non-atomic read-modify-write: lost updates if the lock fails.
                    let v = counter.load(std::sync::atomic::Ordering::Relaxed);
                    counter.store(v + 1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 80_000);
}

fn bump_file(lock: Lock, path: String, n: u32) -> u32 {
    for _ in 0..n {
        let _g = lock.acquire().expect("acquire");
        let v: u32 = std::fs::read_to_string(&path)
            .expect("read")
            .trim()
            .parse()
            .expect("parse");
        std::fs::write(&path, (v + 1).to_string()).expect("write");
    }
    n
}

/// Mutual exclusion across processes: children and the parent do a
/// read-modify-write of a file under the lock; no update is lost.
fn processes_exclude_each_other(m: StartMethod) {
    let lock = Lock::new().unwrap();
    let path = temp_file("excl");
    let ps: Vec<_> = (0..3)
        .map(|_| {
            Process::builder()
                .start_method(m)
                .start(
                    bump_file,
                    (lock.clone(), path.to_string_lossy().into_owned(), 100),
                )
                .unwrap()
        })
        .collect();
    bump_file(lock.clone(), path.to_string_lossy().into_owned(), 100);
    for mut p in ps {
        assert_eq!(p.join().unwrap(), 100);
    }
    let v: u32 = std::fs::read_to_string(&path)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(v, 400, "{m:?}");
    assert!(!lock.locked());
}

fn acquire_and_keep(lock: Lock) {
    lock.acquire().expect("acquire").leak();
}

fn release_it(lock: Lock) -> bool {
    lock.release().is_ok()
}

/// `test_lock_locked_2processes`: a lock acquired in a child is locked in the
/// parent too; a lock may be released by another process.
fn locked_seen_across_processes(m: StartMethod) {
    let lock = Lock::new().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(acquire_and_keep, (lock.clone(),))
        .unwrap();
    p.join().unwrap();
    // The child exited holding it; releasing from another process is
    // still allowed, as in Python.
    assert!(lock.locked());
    let mut p = Process::builder()
        .start_method(m)
        .start(release_it, (lock.clone(),))
        .unwrap();
    assert!(p.join().unwrap());
    assert!(!lock.locked());
    let mut p = Process::builder()
        .start_method(m)
        .start(release_it, (lock.clone(),))
        .unwrap();
    assert!(
        !p.join().unwrap(),
        "releasing an unlocked lock is an error in the child too"
    );
}

fn hold_forever(lock: Lock) {
    let _g = lock.acquire().expect("acquire");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A child SIGKILLed while holding the lock: the parent's next acquire
/// returns with the owner-died signal, holding the lock; the lock keeps
/// working, and the signal stays until cleared.
fn holder_killed_gives_owner_died(m: StartMethod) {
    let lock = Lock::new().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(hold_forever, (lock.clone(),))
        .unwrap();
    eventually("child holds the lock", || lock.locked());
    p.kill().unwrap();
    // Not joined yet: the holder is a zombie, and must count as dead.
    let died = match lock.acquire() {
        Err(d) => d,
        Ok(_) => panic!("{m:?}: expected OwnerDied"),
    };
    let g = died.into_inner();
    assert!(lock.locked());
    assert!(lock.is_owner_died());
    drop(g);
    assert!(!lock.locked());
    // The signal persists until cleared.
    assert!(lock.acquire().is_err());
    lock.clear_owner_died();
    let g = lock.acquire().expect("clean after clear");
    assert!(lock.try_acquire().is_err());
    drop(g);
    let _ = p.join();
}

/// Same, with the parent already blocked in acquire when the holder dies,
/// and with a timed acquire.
fn waiter_blocked_when_holder_killed(m: StartMethod) {
    let lock = Lock::new().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(hold_forever, (lock.clone(),))
        .unwrap();
    eventually("child holds the lock", || lock.locked());
    assert!(matches!(
        lock.acquire_timeout(Duration::from_millis(50)),
        Err(TryAcquireError::Timeout)
    ));
    let l2 = lock.clone();
    let waiter = std::thread::spawn(move || match l2.acquire_timeout(Duration::from_secs(60)) {
        Err(TryAcquireError::OwnerDied(d)) => {
            drop(d.into_inner());
            true
        }
        _ => false,
    });
    std::thread::sleep(Duration::from_millis(20));
    p.kill().unwrap();
    assert!(waiter.join().unwrap(), "the blocked waiter gets OwnerDied");
    let _ = p.join();
    let e: Error = lock.acquire().map(|_| ()).unwrap_err().into();
    assert!(matches!(e, Error::OwnerDied));
    lock.clear_owner_died();
    assert!(lock.try_acquire().is_ok());
}

/// A holder that dies is detected by try_acquire too.
fn try_acquire_detects_dead_holder(m: StartMethod) {
    let lock = Lock::new().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(hold_forever, (lock.clone(),))
        .unwrap();
    eventually("child holds the lock", || lock.locked());
    p.kill().unwrap();
    let _ = p.join();
    match lock.try_acquire() {
        Err(TryAcquireError::OwnerDied(d)) => drop(d.into_inner()),
        other => panic!("expected OwnerDied, got {other:?}"),
    };
}

fn die_holding(lock: Lock) {
    lock.acquire().unwrap().leak();
}

/// In a child that can no longer read `/proc` (its own mount namespace,
/// `/proc` unmounted): a lock held by a live process is not taken over
/// (unknown is not dead), and a lock whose holder really died still is
/// (`kill(pid, 0)` says so). `None` if the namespace cannot be made.
fn without_proc(held_by_parent: Lock) -> Option<(bool, bool)> {
    // Learn our identity while /proc is there, as a long-running process would.
    drop(Lock::new().unwrap().acquire().unwrap());
    // SAFETY: plain syscalls with valid NUL-terminated strings; this
    // child changes only its own mount namespace.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0
            || libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            || libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH) != 0
        {
            return None;
        }
    }
    assert!(
        std::fs::metadata("/proc/self/stat").is_err(),
        "/proc is gone"
    );
    let live_kept = matches!(
        held_by_parent.acquire_timeout(Duration::from_millis(350)),
        Err(TryAcquireError::Timeout)
    );
    let dead_lock = Lock::new().unwrap();
    // Fork whatever started this child: spawn and forkserver would need the
    // /proc that is gone here (this case is about the lock, not the start).
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .start(die_holding, (dead_lock.clone(),))
        .unwrap();
    p.join().unwrap();
    let dead_taken = matches!(
        dead_lock.acquire_timeout(Duration::from_secs(30)),
        Err(TryAcquireError::OwnerDied(_))
    );
    Some((live_kept, dead_taken))
}

fn unreadable_proc_never_makes_a_live_holder_dead(m: StartMethod) {
    let lock = Lock::new().unwrap();
    let _held = lock.acquire().unwrap();
    let r = Process::builder()
        .start_method(m)
        .start(without_proc, (lock.clone(),))
        .unwrap()
        .join()
        .unwrap();
    let Some((live_kept, dead_taken)) = r else {
        eprintln!("skipped: cannot make a private mount namespace here (needs root)");
        return;
    };
    assert!(live_kept, "a live holder was declared dead without /proc");
    assert!(dead_taken, "a dead holder is still detected without /proc");
    assert!(lock.locked(), "the parent still holds its lock");
}
