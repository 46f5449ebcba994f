//! Pool: results and ordering, async results and callbacks, chunksize,
//! empty input, task panics, close/join/terminate, initializer, start methods.
//!
//! Ports of CPython's `_TestPool` and `_TestPoolWorkerErrors`
//! (`Lib/test/_test_multiprocessing.py`, PSF licence), rewritten for Rust:
//! exceptions become `Err` values; `test_map_handle_iterable_exception` and
//! its imap variants do not apply (a Rust iterator cannot raise);
//! `test_release_task_refs` and `test_resource_warning` have no Rust
//! counterpart (ownership; `Drop` terminates).

multiproc::test_support!();

use multiproc::pool::{default_chunksize, Callbacks, Pool};
use multiproc::{Error, StartMethod};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[macro_use]
mod common;

use common::pool;

start_methods! {
    test_apply,
    test_map_chunks_finishing_out_of_order_keep_input_order,
    test_map,
    test_starmap,
    test_map_async,
    test_map_async_callbacks,
    test_apply_async_callback_without_waiting,
    test_map_chunksize_empty,
    test_empty_iterable,
    test_async,
    test_async_timeout,
    test_imap,
    test_imap_unordered,
    test_imap_is_lazy,
    test_imap_task_errors_do_not_stop_iteration,
    test_make_pool,
    test_terminate,
    test_context,
    test_close_join,
    test_traceback,
    test_map_no_failfast,
    test_unencodable_result,
    test_pool_initializer,
    test_large_pool,
    test_get_twice,
    test_results_from_many_threads,
    test_map_unencodable_input,
}

#[cfg(feature = "progress")]
start_methods! {
    test_progress_bar,
}

const LONG: Duration = Duration::from_secs(120);

fn sqr(x: u64) -> u64 {
    x * x
}
fn mul(a: u64, b: u64) -> u64 {
    a * b
}
fn sqr_slow(x: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x * x
}
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}
fn fail_on_odd(x: u64) -> u64 {
    if x % 2 == 1 {
        panic!("odd input {x}");
    }
    x
}
fn boom() -> u64 {
    panic!("task exploded")
}
fn pid(_: u64) -> i32 {
    std::process::id() as i32
}

/// A value whose serialisation always fails (Python's unpicklable result).
#[derive(Debug, Deserialize)]
struct Unencodable;
impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}
fn unencodable() -> Unencodable {
    Unencodable
}

fn expected(n: u64) -> Vec<u64> {
    (0..n).map(sqr).collect()
}

fn test_apply(m: StartMethod) {
    let pool = pool(m, 4).unwrap();
    assert_eq!(pool.apply(sqr, (5,)).unwrap(), 25);
    assert_eq!(pool.apply(mul, (6, 7)).unwrap(), 42);
    assert_eq!(pool.apply(|| 3u64, ()).unwrap(), 3);
    assert_eq!(pool.apply(|x: u64| x + 1, (9,)).unwrap(), 10);
}

/// The first chunk is slow, so later chunks finish before it.
fn sqr_first_slow(x: u64) -> u64 {
    if x < 5 {
        std::thread::sleep(Duration::from_millis(40));
    }
    x * x
}

fn test_map_chunks_finishing_out_of_order_keep_input_order(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    assert_eq!(
        pool.map_chunked(sqr_first_slow, 0..200u64, 5).unwrap(),
        expected(200)
    );
    // The same, from an iterator whose length is not known up front.
    let it = (0..200u64).filter(|_| true);
    assert_eq!(
        pool.map_chunked(sqr_first_slow, it, 5).unwrap(),
        expected(200)
    );
}

fn test_map(m: StartMethod) {
    let pool = pool(m, 4).unwrap();
    assert_eq!(pool.map(sqr, 0..10u64).unwrap(), expected(10));
    assert_eq!(pool.map_chunked(sqr, 0..100u64, 20).unwrap(), expected(100));
    assert_eq!(
        pool.map_chunked(sqr, 0..1000u64, 1).unwrap(),
        expected(1000)
    );
    let strings = pool
        .map(
            |s: String| s.to_uppercase(),
            vec!["a".to_string(), "bc".into()],
        )
        .unwrap();
    assert_eq!(strings, vec!["A", "BC"]);
}

#[test]
fn test_default_chunksize_is_cpythons() {
    // divmod(len, 4 * processes), +1 if there is a remainder.
    assert_eq!(default_chunksize(1_000_000, 2), 125_000);
    assert_eq!(default_chunksize(10, 4), 1);
    assert_eq!(default_chunksize(17, 4), 2);
    assert_eq!(default_chunksize(0, 4), 1);
}

fn test_starmap(m: StartMethod) {
    let pool = pool(m, 4).unwrap();
    let pairs: Vec<(u64, u64)> = (0..10).map(|i| (i, i + 1)).collect();
    let want: Vec<u64> = pairs.iter().map(|&(a, b)| a * b).collect();
    assert_eq!(pool.starmap(mul, pairs.clone()).unwrap(), want);
    let r = pool
        .starmap_async_with(mul, pairs.clone(), Some(20), Callbacks::new())
        .unwrap();
    assert_eq!(r.get().unwrap(), want);
    assert_eq!(pool.starmap_async(mul, pairs).unwrap().get().unwrap(), want);
}

fn test_map_async(m: StartMethod) {
    let pool = pool(m, 4).unwrap();
    let r = pool.map_async(sqr, 0..10u64).unwrap();
    assert_eq!(r.get().unwrap(), expected(10));
    assert!(r.ready());
    assert!(r.successful().unwrap());
}

fn test_map_async_callbacks(m: StartMethod) {
    let pool = pool(m, 4).unwrap();
    let got: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    let errs = Arc::new(AtomicUsize::new(0));
    let (g, e) = (got.clone(), errs.clone());
    let cb = Callbacks::new()
        .on_success(move |v: &Vec<u64>| g.lock().unwrap().push(v.clone()))
        .on_error(move |_| {
            e.fetch_add(1, Ordering::SeqCst);
        });
    pool.map_async_with(sqr, 0..10u64, None, cb)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(*got.lock().unwrap(), vec![expected(10)]);
    assert_eq!(errs.load(Ordering::SeqCst), 0);

    // Failure: the error callback gets the task's error, the success one nothing.
    let calls = Arc::new(AtomicUsize::new(0));
    let message: Arc<Mutex<String>> = Arc::default();
    let (c, m) = (calls.clone(), message.clone());
    let cb = Callbacks::new()
        .on_success(|_: &Vec<u64>| panic!("must not be called"))
        .on_error(move |e| {
            c.fetch_add(1, Ordering::SeqCst);
            *m.lock().unwrap() = e.to_string();
        });
    let r = pool.map_async_with(fail_on_odd, 0..4u64, None, cb).unwrap();
    assert!(r.get().is_err());
    assert!(!r.successful().unwrap());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(message.lock().unwrap().contains("odd input 1"));
}

fn test_apply_async_callback_without_waiting(m: StartMethod) {
    // Callbacks run even if nobody waits for the result.
    let pool = pool(m, 2).unwrap();
    let total = Arc::new(AtomicU64::new(0));
    for i in 0..20u64 {
        let t = total.clone();
        let cb = Callbacks::new().on_success(move |v: &u64| {
            t.fetch_add(*v, Ordering::SeqCst);
        });
        pool.apply_async_with(sqr, (i,), cb).unwrap();
    }
    let deadline = std::time::Instant::now() + LONG;
    while total.load(Ordering::SeqCst) != expected(20).iter().sum::<u64>() {
        assert!(std::time::Instant::now() < deadline, "callbacks never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn test_map_chunksize_empty(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    let r = pool
        .map_async_with(sqr, Vec::<u64>::new(), Some(1), Callbacks::new())
        .unwrap();
    assert_eq!(r.get_timeout(LONG).unwrap(), Vec::<u64>::new());
}

fn test_empty_iterable(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    assert_eq!(pool.map(sqr, Vec::<u64>::new()).unwrap(), Vec::<u64>::new());
    assert_eq!(pool.imap(sqr, Vec::<u64>::new()).unwrap().count(), 0);
    assert_eq!(
        pool.imap_unordered(sqr, Vec::<u64>::new()).unwrap().count(),
        0
    );
    assert_eq!(
        pool.map_async(sqr, Vec::<u64>::new())
            .unwrap()
            .get()
            .unwrap(),
        Vec::<u64>::new()
    );
}

fn test_async(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    let r = pool.apply_async(sqr_slow, (7, 100)).unwrap();
    assert_eq!(r.get().unwrap(), 49);
    assert!(r.ready());
    assert!(r.successful().unwrap());
}

fn test_async_timeout(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    let r = pool.apply_async(sqr_slow, (6, 2000)).unwrap();
    assert!(matches!(
        r.get_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(!r.ready());
    assert!(matches!(r.successful(), Err(Error::NotReady)));
    pool.terminate();
    // Terminated before it finished: the result fails, never hangs.
    assert!(matches!(r.get_timeout(LONG), Err(Error::BrokenPool)));
}

fn test_imap(m: StartMethod) {
    let pool = pool(m, 4).unwrap();
    let all: Vec<u64> = pool
        .imap(sqr, 0..10u64)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(all, expected(10));

    let mut it = pool.imap(sqr, 0..10u64).unwrap();
    for i in 0..10u64 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    assert!(it.next().is_none());
    assert!(it.next().is_none());

    let mut it = pool.imap_chunked(sqr, 0..1000u64, 100).unwrap();
    for i in 0..1000u64 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    assert!(it.next().is_none());
}

fn test_imap_unordered(m: StartMethod) {
    let pool = pool(m, 4).unwrap();
    let mut got: Vec<u64> = pool
        .imap_unordered(sqr, 0..1000u64)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    got.sort();
    assert_eq!(got, expected(1000));
    let mut got: Vec<u64> = pool
        .imap_unordered_chunked(sqr, 0..1000u64, 100)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    got.sort();
    assert_eq!(got, expected(1000));
}

fn test_imap_is_lazy(m: StartMethod) {
    // The input is read only as far as the look-ahead, not collected up front.
    let pool = pool(m, 2).unwrap();
    let pulled = Arc::new(AtomicU64::new(0));
    let p = pulled.clone();
    let input = (0..u64::MAX).inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    let first: Vec<u64> = pool
        .imap(sqr, input)
        .unwrap()
        .take(10)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, expected(10));
    assert!(pulled.load(Ordering::SeqCst) < 1_000_000);
}

fn test_imap_task_errors_do_not_stop_iteration(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    let got: Vec<Result<u64, Error>> = pool.imap(fail_on_odd, 0..10u64).unwrap().collect();
    assert_eq!(got.len(), 10);
    for (i, r) in got.into_iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(v, i as u64),
            Err(e) => {
                assert_eq!(i % 2, 1);
                let f = e.process_failure().expect("a task panic is ProcessFailed");
                assert!(f
                    .panic_message
                    .as_deref()
                    .unwrap()
                    .contains(&format!("odd input {i}")));
            }
        }
    }
}

fn test_make_pool(m: StartMethod) {
    assert!(matches!(Pool::new(0), Err(Error::Invalid(_))));
    let pool = pool(m, 3).unwrap();
    assert_eq!(pool.processes(), 3);
    assert_eq!(pool.worker_pids().len(), 3);
}

fn test_terminate(m: StartMethod) {
    let pool = pool(m, 4).unwrap();
    let r = pool.map_async(sleep_ms, vec![100u64; 10_000]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pids = pool.worker_pids();
    pool.terminate();
    pool.join().unwrap();
    assert!(matches!(r.get_timeout(LONG), Err(Error::BrokenPool)));
    for p in pids {
        // SAFETY: plain syscall; signal 0 only checks existence.
        let alive = unsafe { libc::kill(p, 0) } == 0;
        assert!(!alive, "worker {p} still exists after terminate");
    }
}

fn test_context(m: StartMethod) {
    // Python's `with Pool(2) as p:` — leaving the block terminates.
    let pool = pool(m, 2).unwrap();
    assert_eq!(
        pool.map_async(sqr, 0..10u64).unwrap().get().unwrap(),
        expected(10)
    );
    pool.terminate();
    pool.join().unwrap();
    assert!(matches!(
        pool.map_async(sqr, 0..10u64),
        Err(Error::BrokenPool)
    ));
    assert!(matches!(
        pool.apply_async(sqr, (1,)),
        Err(Error::BrokenPool)
    ));
}

fn test_close_join(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    assert!(
        matches!(pool.join(), Err(Error::InvalidState(_))),
        "join before close"
    );
    let r = pool.map_async(sqr_slow_one, 0..20u64).unwrap();
    let pids = pool.worker_pids();
    pool.close().unwrap();
    assert!(matches!(
        pool.apply_async(sqr, (1,)),
        Err(Error::BrokenPool)
    ));
    pool.join().unwrap();
    // Queued work finished before the workers left.
    assert_eq!(r.get().unwrap(), expected(20));
    assert!(pool.worker_pids().is_empty());
    for p in pids {
        // SAFETY: plain syscall; signal 0 only checks existence.
        assert!(unsafe { libc::kill(p, 0) } != 0, "worker {p} still exists");
    }
}

fn sqr_slow_one(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(10));
    x * x
}

fn test_traceback(m: StartMethod) {
    // A task's panic comes back with its message, location and the worker's
    // backtrace; the worker survives and the pool keeps working.
    let pool = pool(m, 1).unwrap();
    let before = pool.worker_pids();
    let err = pool.apply(boom, ()).unwrap_err();
    let f = err.process_failure().expect("ProcessFailed");
    assert!(f
        .panic_message
        .as_deref()
        .unwrap()
        .contains("task exploded"));
    assert!(f
        .panic_message
        .as_deref()
        .unwrap()
        .contains("tests/pool.rs"));
    assert!(f.backtrace.is_some());
    assert_eq!(f.pid, before[0]);
    assert_eq!(pool.apply(sqr, (3,)).unwrap(), 9);
    assert_eq!(
        pool.worker_pids(),
        before,
        "a task panic must not cost a worker"
    );
}

fn test_map_no_failfast(m: StartMethod) {
    // Two failing tasks: map reports the error; close/join afterwards do not deadlock.
    let pool = pool(m, 2).unwrap();
    let r = pool.map_chunked(fail_on_odd, vec![1u64, 3], 1);
    assert!(r.unwrap_err().to_string().contains("odd input 1"));
    pool.close().unwrap();
    pool.join().unwrap();
}

fn test_unencodable_result(m: StartMethod) {
    // _TestPoolWorkerErrors.test_unpickleable_result
    let pool = pool(m, 2).unwrap();
    let pids = pool.worker_pids();
    for _ in 0..20 {
        let errs = Arc::new(AtomicUsize::new(0));
        let e2 = errs.clone();
        let cb = Callbacks::new().on_error(move |e| {
            assert!(matches!(e, Error::Codec(_)));
            e2.fetch_add(1, Ordering::SeqCst);
        });
        let r = pool.apply_async_with(unencodable, (), cb).unwrap();
        match r.get() {
            Err(Error::Codec(m)) => assert!(m.message().contains("cannot encode"), "{m}"),
            other => panic!("expected a codec error, got {other:?}"),
        }
        assert_eq!(errs.load(Ordering::SeqCst), 1);
    }
    assert_eq!(pool.worker_pids(), pids, "the pool keeps all its workers");
}

static INIT_VALUE: AtomicU64 = AtomicU64::new(0);

fn initializer(v: u64) {
    INIT_VALUE.fetch_add(v, Ordering::SeqCst);
}
fn read_init(_: u64) -> u64 {
    INIT_VALUE.load(Ordering::SeqCst)
}

fn test_pool_initializer(m: StartMethod) {
    let pool = Pool::builder()
        .processes(2)
        .initializer(initializer, (41,))
        .start_method(m)
        .build()
        .unwrap();
    // Ran exactly once in each worker.
    assert_eq!(
        pool.map_chunked(read_init, 0..20u64, 1).unwrap(),
        vec![41; 20]
    );
}

/// Not in the matrix: it is about choosing fork through the builder (the
/// matrix's pools come through `get_context(m).pool(n)`).
#[test]
fn test_fork_start_method() {
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Fork)
        .build()
        .unwrap();
    assert_eq!(pool.map(sqr, 0..1000u64).unwrap(), expected(1000));
    assert_eq!(pool.apply(mul, (3, 4)).unwrap(), 12);
}

fn test_large_pool(m: StartMethod) {
    let pool = pool(m, 12).unwrap();
    assert_eq!(pool.map(sqr, 0..1000u64).unwrap(), expected(1000));
    let mut pids = pool.map_chunked(pid, 0..200u64, 1).unwrap();
    pids.sort();
    pids.dedup();
    assert!(pids.len() > 1);
}

fn test_get_twice(m: StartMethod) {
    let pool = pool(m, 1).unwrap();
    let r = pool.apply_async(sqr, (4,)).unwrap();
    assert_eq!(r.get().unwrap(), 16);
    assert!(matches!(r.get(), Err(Error::AlreadyTaken)));
    let r = pool.apply_async(boom, ()).unwrap();
    assert!(r.get().is_err());
    assert!(r.get().is_err(), "an error is returned every time");
}

fn test_results_from_many_threads(m: StartMethod) {
    // Several threads drive one pool at once.
    let pool = Arc::new(pool(m, 2).unwrap());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    assert_eq!(pool.apply(mul, (t, i)).unwrap(), t * i);
                }
                assert_eq!(pool.map(sqr, 0..500u64).unwrap(), expected(500));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[cfg(feature = "progress")]
fn test_progress_bar(m: StartMethod) {
    // The bar draws on stderr when it is a terminal; either way the results
    // are unchanged.
    let pool = Pool::builder()
        .start_method(m)
        .processes(2)
        .progress(true)
        .build()
        .unwrap();
    assert_eq!(pool.map_chunked(sqr, 0..400u64, 7).unwrap(), expected(400));
    let got: Vec<u64> = pool
        .imap(sqr, 0..100u64)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, expected(100));
}

fn consume(_: Unencodable) -> u64 {
    0
}

fn test_map_unencodable_input(m: StartMethod) {
    // _TestPool.test_map_unplicklable: the encoding error comes back, no hang,
    // and the pool stays usable.
    let pool = pool(m, 2).unwrap();
    let r = pool.map(consume, vec![Unencodable, Unencodable]);
    assert!(matches!(r, Err(Error::Codec(_))), "{r:?}");
    let r = pool
        .imap(consume, vec![Unencodable])
        .unwrap()
        .next()
        .unwrap();
    assert!(matches!(r, Err(Error::Codec(_))), "{r:?}");
    assert_eq!(pool.map(sqr, 0..10u64).unwrap(), expected(10));
}
