//! Managers across processes: proxies as process and pool arguments under
//! fork and spawn, registered types, many processes through one proxy,
//! clients killed mid-call, the server's own lifetime.
//!
//! Ports of CPython's `_TestMyManager`, `_TestManagerRestart` and the
//! process-level parts of `_TestContainers` (`Lib/test/_test_multiprocessing.py`,
//! PSF licence), rewritten for Rust: `register('Foo', FooBar)` becomes
//! `#[multiproc::managed]` on `impl FooBar`; exceptions become `Err`.

multiproc::test_support!();

mod common;
use multiproc::manager::{CallError, DictProxy, LockProxy, Manager, QueueProxy};
use multiproc::{Error, Pool, Process, StartMethod};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + LONG;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

// ------------------------------------------------------------ registered types

#[derive(Serialize, Deserialize, Default)]
struct Counter {
    value: u64,
}

#[multiproc::managed]
impl Counter {
    pub fn get(&self) -> u64 {
        self.value
    }
    pub fn set(&mut self, v: u64) {
        self.value = v;
    }
    pub fn add(&mut self, k: u64) -> u64 {
        self.value += k;
        self.value
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum FooError {
    Negative(i64),
}

#[derive(Serialize, Deserialize, Default)]
struct FooBar {
    log: Vec<String>,
}

#[multiproc::managed]
impl FooBar {
    /// Exposed.
    pub fn f(&mut self) -> String {
        self.log.push("f()".into());
        "f()".into()
    }
    /// Exposed: an error of the method itself.
    pub fn sqrt(&self, x: i64) -> Result<f64, FooError> {
        if x < 0 {
            Err(FooError::Negative(x))
        } else {
            Ok((x as f64).sqrt())
        }
    }
    /// Exposed: a panic is a remote error, the server survives.
    pub fn boom(&self, msg: &str) -> u32 {
        panic!("boom: {msg}")
    }
    /// Exposed, with borrowed arguments.
    pub fn join_words(&self, words: &[String], sep: &str) -> String {
        words.join(sep)
    }
    /// Exposed: returns a proxy created... by the caller (nested, as CPython's `_h`).
    pub fn log(&self) -> Vec<String> {
        self.log.clone()
    }
    /// Not exposed: private.
    #[allow(dead_code)]
    fn g(&self) -> u32 {
        1
    }
}

/// A registered type that holds a proxy and hands it out.
#[derive(Serialize, Deserialize)]
struct Holder {
    inner: DictProxy<String, u32>,
}

#[multiproc::managed]
impl Holder {
    pub fn put(&mut self, k: String, v: u32) -> Result<(), String> {
        self.inner
            .insert(k, v)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    pub fn inner(&self) -> DictProxy<String, u32> {
        self.inner.clone()
    }
}

#[test]
fn registered_objects_hold_and_return_proxies() {
    let m = Manager::builder().register::<Holder>().start().unwrap();
    let d = m.dict::<String, u32>().unwrap();
    let h = m.create(Holder { inner: d.clone() }).unwrap();
    h.put("a".into(), 1).unwrap();
    assert_eq!(d.get(&"a".into()).unwrap(), Some(1));
    let back = h.inner().unwrap();
    back.insert("b".into(), 2).unwrap();
    assert_eq!(d.get(&"b".into()).unwrap(), Some(2));
    // The holder keeps the dict alive after every outside proxy is gone.
    drop(d);
    drop(back);
    assert_eq!(h.inner().unwrap().len().unwrap(), 2);
    // Dropping the holder frees both.
    drop(h);
    assert!(eventually(|| m.number_of_objects().unwrap() == 0));
}

static INIT_RAN: AtomicBool = AtomicBool::new(false);

fn mark_init() {
    INIT_RAN.store(true, Ordering::SeqCst);
}

static INIT_ARGS: std::sync::Mutex<Option<(String, u64)>> = std::sync::Mutex::new(None);

fn init_with(name: String, n: u64) {
    *INIT_ARGS.lock().unwrap() = Some((name, n));
}

fn init_panics(why: String) {
    panic!("{why}");
}

#[derive(Serialize, Deserialize, Default)]
struct Probe;

#[multiproc::managed]
impl Probe {
    pub fn init_ran(&self) -> bool {
        INIT_RAN.load(Ordering::SeqCst)
    }
    pub fn pid(&self) -> u32 {
        std::process::id()
    }
    pub fn init_args(&self) -> Option<(String, u64)> {
        INIT_ARGS.lock().unwrap().clone()
    }
}

#[test]
fn registered_type_exposes_its_methods() {
    // _TestMyManager.test_mymanager (common part)
    let m = Manager::builder().register::<FooBar>().start().unwrap();
    let foo = m.create(FooBar::default()).unwrap();
    assert_eq!(foo.f().unwrap(), "f()");
    assert_eq!(foo.log().unwrap(), vec!["f()".to_string()]);
    assert_eq!(foo.sqrt(16).unwrap(), 4.0);
    assert_eq!(
        foo.join_words(&["a".to_string(), "b".to_string()], "-")
            .unwrap(),
        "a-b"
    );
    // The method's own error comes back as that error ...
    match foo.sqrt(-4) {
        Err(CallError::Method(e)) => assert_eq!(e, FooError::Negative(-4)),
        other => panic!("expected the method's error, got {other:?}"),
    }
    // ... distinct from a failure of the call (CPython's RemoteError).
    match foo.boom("bang") {
        Err(Error::Remote(msg)) => assert!(msg.contains("boom: bang"), "{msg}"),
        other => panic!("expected a remote error, got {other:?}"),
    }
    // The server keeps running, the object too.
    assert_eq!(foo.f().unwrap(), "f()");
    assert_eq!(foo.log().unwrap().len(), 2);
    // A method outside the exposed set cannot be reached, even by name.
    let hidden = multiproc::manager::Proxy::core(&foo).call_plain::<_, u32>("g", &());
    assert!(matches!(hidden, Err(Error::Remote(m)) if m.contains("exposes no method")));
}

#[test]
fn dropping_the_manager_ends_its_server() {
    // _TestMyManager.test_mymanager_context: leaving the `with` block shuts down.
    let m = Manager::builder().register::<FooBar>().start().unwrap();
    let pid = m.pid().unwrap();
    let foo = m.create(FooBar::default()).unwrap();
    assert!(alive(pid));
    drop(m);
    assert!(!alive(pid));
    assert!(foo.f().is_err());
}

#[test]
fn unregistered_type_is_a_remote_error() {
    let m = Manager::start().unwrap();
    assert!(matches!(
        m.create(Counter::default()),
        Err(Error::Remote(_))
    ));
}

#[test]
fn a_context_starts_managers_with_its_method() {
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        let m = multiproc::get_context(method).manager().unwrap();
        let l = m.list_from([1u8, 2]).unwrap();
        assert_eq!(l.len().unwrap(), 2);
    }
}

#[test]
fn initializer_runs_in_the_server() {
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        let m = Manager::builder()
            .start_method(method)
            .register::<Probe>()
            .initializer(mark_init)
            .start()
            .unwrap();
        let p = m.create(Probe).unwrap();
        assert!(p.init_ran().unwrap(), "{method:?}");
        assert_eq!(Some(p.pid().unwrap() as i32), m.pid());
        assert!(!INIT_RAN.load(Ordering::SeqCst)); // not here
    }
}

#[test]
fn initializer_gets_its_arguments_under_fork_and_spawn() {
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        let m = Manager::builder()
            .start_method(method)
            .register::<Probe>()
            .initializer_with(init_with, (format!("{method:?}"), 42))
            .start()
            .unwrap();
        let p = m.create(Probe).unwrap();
        assert_eq!(p.init_args().unwrap(), Some((format!("{method:?}"), 42)));
        assert_eq!(Some(p.pid().unwrap() as i32), m.pid());
        assert!(INIT_ARGS.lock().unwrap().is_none()); // not here
    }
}

#[test]
fn a_failing_initializer_fails_start() {
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        let r = Manager::builder()
            .start_method(method)
            .initializer_with(init_panics, ("no database".to_string(),))
            .start();
        let e = r.unwrap_err().to_string();
        assert!(e.contains("no database"), "{method:?}: {e}");
    }
}

// ------------------------------------------------------------ proxies to children

fn child_fill(d: DictProxy<String, u64>, n: u64) {
    d.insert(format!("child-{n}"), n * n).unwrap();
}

#[test]
fn proxies_reach_children_under_fork_and_spawn() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, u64>().unwrap();
    let mut ps = Vec::new();
    for (i, method) in [StartMethod::Fork, StartMethod::Spawn]
        .into_iter()
        .enumerate()
    {
        ps.push(
            Process::builder()
                .start_method(method)
                .start(child_fill, (d.clone(), i as u64 + 2))
                .unwrap(),
        );
    }
    for mut p in ps {
        p.join().unwrap();
    }
    assert_eq!(d.get(&"child-2".into()).unwrap(), Some(4));
    assert_eq!(d.get(&"child-3".into()).unwrap(), Some(9));
}

/// Puts `0..n`; with `exit_at_once`, ends the process right after the last
/// put (no flush, no destructor).
fn put_items(q: QueueProxy<u64>, n: u64, exit_at_once: bool) {
    for i in 0..n {
        q.put(i).unwrap();
    }
    if exit_at_once {
        std::process::exit(0);
    }
}

#[test]
fn a_child_s_puts_reach_the_queue_even_if_it_ends_at_once() {
    let m = Manager::start().unwrap();
    let q = m.queue::<u64>().unwrap();
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        for exit_at_once in [false, true] {
            let mut p = Process::builder()
                .start_method(method)
                .start(put_items, (q.clone(), 200, exit_at_once))
                .unwrap();
            p.join().unwrap();
            if !exit_at_once {
                // Returned (its proxy dropped): all in, as with Python's
                // synchronous put, no waiting needed.
                assert_eq!(q.qsize().unwrap(), 200, "{method:?}");
            }
            // Ended at once: every put that returned still arrives.
            let got: Vec<u64> = (0..200).map(|_| q.get_timeout(LONG).unwrap()).collect();
            assert_eq!(
                got,
                (0..200).collect::<Vec<_>>(),
                "{method:?} {exit_at_once}"
            );
        }
    }
}

fn child_adopts_the_only_proxy(d: DictProxy<u32, u32>, back: QueueProxy<DictProxy<u32, u32>>) {
    // Give the parent time to drop its copy of `d` first.
    std::thread::sleep(Duration::from_millis(200));
    d.insert(1, 42).unwrap();
    back.put(d).unwrap();
}

#[test]
fn a_proxy_handed_to_a_child_outlives_the_parents_copy() {
    let m = Manager::start().unwrap();
    let back = m.queue::<DictProxy<u32, u32>>().unwrap();
    // The dict's only proxy travels to the child; the parent's copy is
    // dropped at once, before the spawned child has connected.
    let d = m.dict::<u32, u32>().unwrap();
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .start(child_adopts_the_only_proxy, (d, back.clone()))
        .unwrap();
    p.join().unwrap();
    let d = back.get_timeout(LONG).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(42));
}

fn pool_task(d: DictProxy<u64, u64>, x: u64) -> u64 {
    d.insert(x, x * 10).unwrap();
    x
}

#[test]
fn proxies_reach_pool_workers() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u64, u64>().unwrap();
    let pool = Pool::new(2).unwrap();
    let args: Vec<(DictProxy<u64, u64>, u64)> = (0..20).map(|i| (d.clone(), i)).collect();
    let out = pool.starmap(pool_task, args).unwrap();
    assert_eq!(out, (0..20).collect::<Vec<_>>());
    assert_eq!(d.len().unwrap(), 20);
    assert_eq!(d.get(&7).unwrap(), Some(70));
}

// ------------------------------------------------------------ many processes

fn increment(c: CounterProxy, lock: LockProxy, n: u64) {
    for _ in 0..n {
        lock.acquire().unwrap();
        let v = c.get().unwrap();
        c.set(v + 1).unwrap();
        lock.release().unwrap();
    }
}

#[test]
fn eight_processes_increment_a_registered_counter_exactly() {
    let m = Manager::builder().register::<Counter>().start().unwrap();
    let c = m.create(Counter::default()).unwrap();
    let lock = m.lock().unwrap();
    let ps: Vec<_> = (0..8)
        .map(|i| {
            let method = if i % 2 == 0 {
                StartMethod::Fork
            } else {
                StartMethod::Spawn
            };
            Process::builder()
                .start_method(method)
                .start(increment, (c.clone(), lock.clone(), 1000))
                .unwrap()
        })
        .collect();
    for mut p in ps {
        p.join().unwrap();
    }
    assert_eq!(c.get().unwrap(), 8000);
}

// ------------------------------------------------------------ faults

fn blocked_forever(q: QueueProxy<u32>, mine: DictProxy<u32, u32>, ready: QueueProxy<u32>) {
    mine.insert(1, 1).unwrap();
    ready.put(1).unwrap();
    let _ = q.get(); // blocks in the server until killed
    unreachable!("nobody puts into this queue");
}

fn busy_caller(c: CounterProxy, n: u64) -> u64 {
    for _ in 0..n {
        c.add(1).unwrap();
    }
    c.get().unwrap()
}

#[test]
fn a_client_killed_mid_call_harms_nobody_and_its_objects_are_freed() {
    let m = Manager::builder().register::<Counter>().start().unwrap();
    let c = m.create(Counter::default()).unwrap();
    let never = m.queue::<u32>().unwrap();
    let ready = m.queue::<u32>().unwrap();
    let baseline = m.number_of_objects().unwrap();

    // The victim owns an object nobody else holds, then blocks in a call.
    let mut victim = {
        let mine = m.dict::<u32, u32>().unwrap();
        Process::builder()
            .start_method(StartMethod::Spawn)
            .start(blocked_forever, (never.clone(), mine, ready.clone()))
            .unwrap()
    };
    assert_eq!(ready.get_timeout(LONG).unwrap(), 1);
    assert_eq!(m.number_of_objects().unwrap(), baseline + 1);

    let others: Vec<_> = (0..3)
        .map(|_| Process::start(busy_caller, (c.clone(), 300)).unwrap())
        .collect();
    victim.kill().unwrap();
    assert_eq!(victim.wait(Some(LONG)).unwrap(), Some(-9));
    for mut p in others {
        assert!(p.join().unwrap() >= 300);
    }
    assert_eq!(c.get().unwrap(), 900);
    // The victim's dict is freed with its connections.
    assert!(eventually(|| m.number_of_objects().unwrap() == baseline));
    // The queue it was blocked on still works.
    never.put(5).unwrap();
    assert_eq!(never.get().unwrap(), 5);
}

// ------------------------------------------------------------ server lifetime

#[test]
fn manager_restarts_on_the_same_address() {
    // _TestManagerRestart.test_rapid_restart
    let addr = multiproc::connection::Address::tcp("127.0.0.1:0").unwrap();
    let m = Manager::builder()
        .address(addr)
        .authkey(b"restart")
        .start()
        .unwrap();
    let addr = m.address();
    let q = m.queue::<String>().unwrap();
    q.put("hello world".into()).unwrap();
    assert_eq!(q.get().unwrap(), "hello world");
    drop(q);
    m.shutdown().unwrap();
    let m2 = Manager::builder()
        .address(addr.clone())
        .authkey(b"restart")
        .start()
        .unwrap();
    assert_eq!(m2.address(), addr);
    let d = m2.dict::<u8, u8>().unwrap();
    d.insert(1, 2).unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(2));
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn own_a_manager(pids: multiproc::Queue<i32>) {
    let m = Manager::start().unwrap();
    pids.put(m.pid().unwrap()).unwrap();
    std::thread::sleep(Duration::from_secs(3600));
}

#[test]
fn the_server_dies_with_its_owner() {
    let pids = multiproc::Queue::new().unwrap();
    let mut owner = Process::builder()
        .start_method(StartMethod::Spawn)
        .start(own_a_manager, (pids.clone(),))
        .unwrap();
    let server = pids.get_timeout(LONG).unwrap();
    assert!(alive(server));
    owner.kill().unwrap();
    owner.wait(Some(LONG)).unwrap();
    assert!(
        eventually(|| !alive(server)),
        "server {server} outlived its owner"
    );
}

/// A client whose `SIGPIPE` is at its default action (a C host, say): once
/// the server is killed its calls fail, and it lives on. (Over a pipe whose
/// reader is gone a write would raise `SIGPIPE` and kill it.)
fn calls_after_the_server_is_killed(d: DictProxy<String, u32>, server: i32) {
    // SAFETY: plain syscalls in a single-threaded child.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mine = d.try_clone().unwrap(); // a connection made under SIG_DFL
    mine.insert("a".into(), 1).unwrap();
    unsafe { libc::kill(server, libc::SIGKILL) };
    let deadline = Instant::now() + LONG;
    while alive(server) {
        assert!(Instant::now() < deadline, "the server outlived SIGKILL");
        std::thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..3 {
        assert!(mine.insert("a".into(), 2).is_err());
    }
}

#[test]
fn a_client_that_does_not_ignore_sigpipe_survives_its_server() {
    // Server and client on one CPU: they would talk over pipes.
    common::pin_to_one_cpu();
    let m = Manager::builder()
        .start_method(StartMethod::Fork)
        .start()
        .unwrap();
    let d = m.dict::<String, u32>().unwrap();
    let mut p = Process::builder()
        .start_method(StartMethod::Fork)
        .start(calls_after_the_server_is_killed, (d, m.pid().unwrap()))
        .unwrap();
    p.join_timeout(LONG).unwrap();
    assert_eq!(p.exitcode(), Some(0), "the client died");
}
