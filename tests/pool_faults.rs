//! Pool under faults and worker turnover: workers killed by signals or
//! aborting mid-task, terminate during a long map, `maxtasksperchild`
//! (ports of CPython's `_TestPoolWorkerLifetime`), and imap streaming.
//!
//! CPython's `Pool.map` hangs forever when a worker dies; here the task that
//! worker was running fails with `Error::WorkerDied`, the rest complete, and
//! the pool replaces the worker.

multiproc::test_support!();

use multiproc::pool::Pool;
use multiproc::{Error, StartMethod};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[macro_use]
mod common;

use common::pool;

start_methods! {
    sigkill_worker_during_map_of_1000,
    map_returns_when_a_worker_kills_itself,
    imap_keeps_other_results_when_a_task_kills_its_worker,
    abort_and_exit_in_a_task,
    idle_worker_killed_is_replaced,
    imap_streams_results_before_the_last_task_is_done,
    terminate_during_long_map_leaves_no_workers,
    drop_terminates,
    test_pool_worker_lifetime,
    maxtasksperchild_loses_no_task,
    test_pool_worker_lifetime_early_close,
    test_pool_maxtasksperchild_zero_means_unlimited,
    pool_outlives_the_thread_that_built_it,
    crashing_initializer_fails_tasks_instead_of_hanging,
}

const LONG: Duration = Duration::from_secs(120);

fn sqr(x: u64) -> u64 {
    x * x
}
/// Task 300 records its worker's pid in the file named by [`MARK`] and then
/// blocks, so the test knows a worker that certainly holds a running task.
fn mark_and_block_at_300(x: u64) -> u64 {
    if x == 300 {
        if let Some(path) = MARK.get() {
            let _ = std::fs::write(path, format!("{}\n", std::process::id()));
        }
        std::thread::sleep(Duration::from_secs(600));
    }
    std::thread::sleep(Duration::from_micros(500));
    x * x
}
/// The marker file of this worker's pool, set by its initializer
/// ([`set_mark`]): a file per test, as the matrix runs the three methods'
/// tests at once (an environment variable would not reach forkserver workers,
/// which copy the fork server, nor be safe to set with other tests running).
static MARK: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn set_mark(path: String) {
    let _ = MARK.set(path);
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}
fn pid_of(_: u64) -> i32 {
    std::process::id() as i32
}
fn slow_pid(_: u64) -> i32 {
    std::thread::sleep(Duration::from_millis(20));
    std::process::id() as i32
}
/// Kills its own worker with SIGKILL on `x == 500`.
fn die_on_500(x: u64) -> u64 {
    std::thread::sleep(Duration::from_micros(200));
    if x == 500 {
        // SAFETY: plain syscall on ourselves.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    x * x
}
fn abort_now() -> u64 {
    std::process::abort()
}
fn exit_now(code: i32) -> u64 {
    std::process::exit(code)
}

fn alive(pid: i32) -> bool {
    // SAFETY: plain syscall; signal 0 only checks existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn sigkill(pid: i32) {
    // SAFETY: plain syscall on a worker of our own pool.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

/// SIGKILL of a worker during a map of 1,000 tasks: the call returns, the
/// tasks of the killed worker fail with `WorkerDied { exitcode: -9 }`, every
/// other result is present and right, and the pool then maps correctly.
fn sigkill_worker_during_map_of_1000(m: StartMethod) {
    let mark = std::env::temp_dir().join(format!(
        "multiproc-pool-mark-{}-{}",
        std::process::id(),
        m.name()
    ));
    let _ = std::fs::remove_file(&mark);
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .initializer(set_mark, (mark.to_string_lossy().into_owned(),))
        .build()
        .unwrap();
    let mut it = pool.imap(mark_and_block_at_300, 0..1000u64).unwrap();
    let mut results = Vec::new();
    for _ in 0..20 {
        results.push(it.next().unwrap());
    }
    // The worker running task 300 is blocked inside it: kill that one.
    let deadline = Instant::now() + LONG;
    let victim: i32 = loop {
        if let Ok(s) = std::fs::read_to_string(&mark) {
            if let Ok(pid) = s.trim().parse() {
                break pid;
            }
        }
        assert!(Instant::now() < deadline, "task 300 never started");
        std::thread::sleep(Duration::from_millis(5));
    };
    sigkill(victim);
    results.extend(it);
    assert_eq!(results.len(), 1000);
    let mut failed = 0;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(v, sqr(i as u64)),
            Err(Error::WorkerDied { exitcode }) => {
                assert_eq!(exitcode, -9);
                assert_eq!(i, 300, "task {i} failed, not the one running");
                failed += 1;
            }
            Err(e) => panic!("unexpected error for task {i}: {e}"),
        }
    }
    // Only the task that was running fails: what the worker had
    // completed is kept, what it had not started runs elsewhere.
    assert_eq!(
        failed, 1,
        "only task 300, running in the killed worker, fails"
    );
    // Replaced, and working.
    assert_eq!(
        pool.map(sqr, 0..1000u64).unwrap(),
        (0..1000).map(sqr).collect::<Vec<_>>()
    );
    assert!(!pool.worker_pids().contains(&victim));
    assert_eq!(pool.worker_pids().len(), 2);
    let _ = std::fs::remove_file(&mark);
}

/// `map` itself returns (with the error) when a worker dies mid-map.
fn map_returns_when_a_worker_kills_itself(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    let t = std::thread::spawn(move || {
        let r = pool.map_chunked(die_on_500, 0..1000u64, 1);
        let after = pool.map(sqr, 0..100u64);
        (r, after)
    });
    let deadline = Instant::now() + LONG;
    while !t.is_finished() {
        assert!(Instant::now() < deadline, "map hung after a worker died");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (r, after) = t.join().unwrap();
    assert!(
        matches!(r, Err(Error::WorkerDied { exitcode: -9 })),
        "{r:?}"
    );
    assert_eq!(after.unwrap(), (0..100).map(sqr).collect::<Vec<_>>());
}

/// With imap the other 999 tasks' results stay available when one task
/// kills its worker: only tasks held by that worker fail.
fn imap_keeps_other_results_when_a_task_kills_its_worker(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    let results: Vec<_> = pool.imap(die_on_500, 0..1000u64).unwrap().collect();
    assert_eq!(results.len(), 1000);
    assert!(matches!(
        results[500],
        Err(Error::WorkerDied { exitcode: -9 })
    ));
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(ok >= 500, "only {ok} results");
    for (i, r) in results.iter().enumerate() {
        if let Ok(v) = r {
            assert_eq!(*v, sqr(i as u64));
        }
    }
}

fn abort_and_exit_in_a_task(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    match pool.apply(abort_now, ()) {
        Err(Error::WorkerDied { exitcode }) => assert_eq!(exitcode, -libc::SIGABRT),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    match pool.apply(exit_now, (7,)) {
        Err(Error::WorkerDied { exitcode }) => assert_eq!(exitcode, 7),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert_eq!(pool.apply(sqr, (5,)).unwrap(), 25);
    let r = pool.apply_async(abort_now, ()).unwrap();
    assert!(matches!(r.get_timeout(LONG), Err(Error::WorkerDied { .. })));
}

/// A worker killed while idle is replaced; later work is not affected.
fn idle_worker_killed_is_replaced(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    let before = pool.worker_pids();
    sigkill(before[1]);
    for _ in 0..5 {
        assert_eq!(
            pool.map_chunked(sqr, 0..200u64, 1).unwrap(),
            (0..200).map(sqr).collect::<Vec<_>>()
        );
    }
    let deadline = Instant::now() + LONG;
    while pool.worker_pids().contains(&before[1]) || pool.worker_pids().len() != 2 {
        assert!(Instant::now() < deadline, "no replacement worker");
        // Results are only read while someone waits: give it a reason to look.
        pool.apply(sqr, (1,)).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `imap` yields its first results long before the last task is done: the
/// last task only finishes once the consumer has seen a first result.
fn imap_streams_results_before_the_last_task_is_done(m: StartMethod) {
    let dir = std::env::temp_dir().join(format!(
        "multiproc-pool-{}-{}",
        std::process::id(),
        m.name()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("first-result-seen");
    let _ = std::fs::remove_file(&marker);
    let pool = pool(m, 2).unwrap();
    let n = 50u64;
    let items: Vec<(u64, String)> = (0..n)
        .map(|i| (i, marker.to_string_lossy().into_owned()))
        .collect();
    let mut it = pool.imap(wait_for_marker_if_last, items).unwrap();
    let first = it.next().unwrap().unwrap();
    assert_eq!(first, 0);
    std::fs::write(&marker, b"seen").unwrap();
    let rest: Vec<u64> = it.map(Result::unwrap).collect();
    assert_eq!(rest.len() as u64, n - 1);
    // The last task saw the marker: it was still running when the first
    // result reached us.
    assert_eq!(*rest.last().unwrap(), u64::MAX);
    let _ = std::fs::remove_dir_all(&dir);
}

fn wait_for_marker_if_last((i, marker): (u64, String)) -> u64 {
    if i + 1 < 50 {
        return i;
    }
    let marker = PathBuf::from(marker);
    let deadline = Instant::now() + LONG;
    while Instant::now() < deadline {
        if marker.exists() {
            return u64::MAX;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    0
}

/// `terminate` during a long map returns promptly (well before the map
/// would end) and leaves no worker process behind.
fn terminate_during_long_map_leaves_no_workers(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    let pids = pool.worker_pids();
    // 2 workers × 1 s tasks × 1000: ~8 minutes if it ran to the end.
    let r = pool.map_async(sleep_ms, vec![1000u64; 1000]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    pool.terminate();
    assert!(t0.elapsed() < LONG, "terminate waited for the map");
    assert!(matches!(r.get_timeout(LONG), Err(Error::BrokenPool)));
    for p in &pids {
        assert!(!alive(*p), "worker {p} still exists after terminate");
    }
    assert!(pool.worker_pids().is_empty());
    drop(pool);
}

/// Dropping a pool terminates it (Python's `with Pool() as p:` exit).
fn drop_terminates(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    let pids = pool.worker_pids();
    let _r = pool.map_async(sleep_ms, vec![1000u64; 100]).unwrap();
    drop(pool);
    for p in &pids {
        assert!(!alive(*p), "worker {p} still exists after drop");
    }
}

/// `_TestPoolWorkerLifetime.test_pool_worker_lifetime`.
fn test_pool_worker_lifetime(m: StartMethod) {
    let pool = Pool::builder()
        .start_method(m)
        .processes(3)
        .maxtasksperchild(10)
        .build()
        .unwrap();
    let origworkerpids = pool.worker_pids();
    assert_eq!(origworkerpids.len(), 3);
    let results: Vec<_> = (0..100u64)
        .map(|i| pool.apply_async(sqr, (i,)).unwrap())
        .collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.get().unwrap(), sqr(i as u64));
    }
    // Every task ran, on more workers than the original three.
    let pids = pool.map_chunked(pid_of, 0..60u64, 1).unwrap();
    let mut distinct = pids.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() > 3,
        "workers were not replaced: {distinct:?}"
    );
    let deadline = Instant::now() + LONG;
    let finalworkerpids = loop {
        let p = pool.worker_pids();
        if p.len() == 3 || Instant::now() > deadline {
            break p;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(finalworkerpids.len(), 3);
    let mut a = origworkerpids.clone();
    a.sort();
    let mut b = finalworkerpids;
    b.sort();
    assert_ne!(a, b);
}

/// maxtasksperchild replaces workers without losing a task (chunks of
/// several tasks, many replacements).
fn maxtasksperchild_loses_no_task(m: StartMethod) {
    let pool = Pool::builder()
        .start_method(m)
        .processes(2)
        .maxtasksperchild(3)
        .build()
        .unwrap();
    let got = pool.map_chunked(sqr, 0..300u64, 5).unwrap();
    assert_eq!(got, (0..300).map(sqr).collect::<Vec<_>>());
    let mut un: Vec<u64> = pool
        .imap_unordered(sqr, 0..100u64)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    un.sort();
    assert_eq!(un, (0..100).map(sqr).collect::<Vec<_>>());
}

/// `_TestPoolWorkerLifetime.test_pool_worker_lifetime_early_close`.
fn test_pool_worker_lifetime_early_close(m: StartMethod) {
    let pool = Pool::builder()
        .start_method(m)
        .processes(3)
        .maxtasksperchild(1)
        .build()
        .unwrap();
    let results: Vec<_> = (0..6u64)
        .map(|i| pool.apply_async(slow_pid, (i,)).unwrap())
        .collect();
    pool.close().unwrap();
    pool.join().unwrap();
    let mut pids: Vec<i32> = results.iter().map(|r| r.get().unwrap()).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 6, "each task ran in its own worker");
}

fn test_pool_maxtasksperchild_zero_means_unlimited(m: StartMethod) {
    // Python rejects 0; here 0 means "no limit" (documented), so the same
    // workers serve every task.
    let pool = Pool::builder()
        .start_method(m)
        .processes(1)
        .maxtasksperchild(0)
        .build()
        .unwrap();
    let pids = pool.map_chunked(pid_of, 0..50u64, 1).unwrap();
    assert!(pids.iter().all(|p| *p == pids[0]));
}

/// Workers belong to the pool, not to the thread that created it: they
/// survive that thread's end (their parent-death signal follows the pool's
/// own supervisor thread).
fn pool_outlives_the_thread_that_built_it(m: StartMethod) {
    let pool = std::thread::spawn(move || pool(m, 2).unwrap())
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        pool.map(sqr, 0..100u64).unwrap(),
        (0..100).map(sqr).collect::<Vec<_>>()
    );
    assert_eq!(pool.worker_pids().len(), 2);
}

fn bad_initializer() {
    panic!("initializer failed");
}

/// Workers that die in their initializer never run a task: the tasks fail
/// with `WorkerDied` after a few tries instead of cycling forever.
fn crashing_initializer_fails_tasks_instead_of_hanging(m: StartMethod) {
    let pool = Pool::builder()
        .start_method(m)
        .processes(2)
        .initializer(bad_initializer, ())
        .build()
        .unwrap();
    let r = pool.map_chunked(sqr, 0..10u64, 1);
    assert!(matches!(r, Err(Error::WorkerDied { exitcode: 1 })), "{r:?}");
    let r = pool.apply_async(sqr, (3,)).unwrap();
    assert!(matches!(r.get_timeout(LONG), Err(Error::WorkerDied { .. })));
}
