//! Processes: return values, failures, exit codes, signals, timeouts, stdin,
//! names, daemons, reaping, and hostile bootstrap input.
//! (Ports `_TestProcess` cases from CPython's `_test_multiprocessing.py`.)

multiproc::test_support!();

#[cfg(feature = "test-hooks")]
use multiproc::process::__test::{spawn_damaged, Damage};
use multiproc::{
    active_children, current_process, parent_process, Error, Process, StartMethod, Stdin,
};
use std::time::Duration;

#[macro_use]
mod common;
use common::{builder, LONG};

start_methods! {
    return_values_cross_back,
    large_return_value_is_not_truncated,
    panic_message_and_backtrace_reach_parent,
    exit_codes_follow_python,
    join_timeout_on_a_sleeping_child_then_terminate_and_kill,
    sentinel_becomes_readable_at_exit,
    stdin_is_dev_null_unless_inherited,
    names_pids_and_parent,
    active_children_lists_the_living,
    non_capturing_closures_are_targets,
    targets_are_called_with_star_args,
    daemon_children_cannot_have_children,
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}
fn boom() -> u32 {
    panic!("kaboom {}", 42)
}
fn exit_with(code: i32) {
    std::process::exit(code)
}
fn sleep_secs(s: u64) {
    std::thread::sleep(Duration::from_secs(s))
}
fn raise(sig: i32) {
    // SAFETY: plain syscall on ourselves.
    unsafe { libc::raise(sig) };
}
fn stdin_target() -> String {
    std::fs::read_link("/proc/self/fd/0")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}
fn whoami() -> (String, i32, bool, Option<(String, i32)>) {
    let me = current_process();
    (
        me.name,
        me.pid,
        me.daemon,
        parent_process().map(|p| (p.name, p.pid)),
    )
}
fn big(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn return_values_cross_back(m: StartMethod) {
    let mut p = builder(m).start(add, (2, 40)).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 42, "{m:?}");
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    // The value is taken once; a second join says so.
    assert!(matches!(p.join(), Err(Error::AlreadyTaken)));
}

fn large_return_value_is_not_truncated(m: StartMethod) {
    let n = 3 << 20;
    let mut p = builder(m).start(big, (n,)).unwrap();
    let v = p.join_timeout(LONG).unwrap();
    assert_eq!(v.len(), n);
    assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
}

fn panic_message_and_backtrace_reach_parent(m: StartMethod) {
    let mut p = builder(m).start(boom, ()).unwrap();
    let e = p.join_timeout(LONG).unwrap_err();
    let f = e.process_failure().expect("ProcessFailed");
    assert_eq!(f.exitcode, 1);
    assert!(
        f.panic_message.as_deref().unwrap().contains("kaboom 42"),
        "{f:?}"
    );
    let bt = f.backtrace.as_deref().unwrap();
    assert!(
        bt.contains("boom") || bt.contains("process::"),
        "backtrace text: {bt}"
    );
    assert_eq!(p.exitcode(), Some(1));
    // Failures are reported on every join.
    assert!(p.join().unwrap_err().process_failure().is_some());
}

fn exit_codes_follow_python(m: StartMethod) {
    let mut p = builder(m).start(exit_with, (3,)).unwrap();
    let e = p.join_timeout(LONG).unwrap_err();
    assert_eq!(e.process_failure().unwrap().exitcode, 3, "{m:?}");
    assert_eq!(p.exitcode(), Some(3));
    // exit(0) in a `()` target is a success, as in Python.
    let mut p = builder(m).start(exit_with, (0,)).unwrap();
    p.join_timeout(LONG).unwrap();
    assert_eq!(p.exitcode(), Some(0));
    let mut p = builder(m).start(raise, (libc::SIGUSR1,)).unwrap();
    let e = p.join_timeout(LONG).unwrap_err();
    assert_eq!(e.process_failure().unwrap().exitcode, -libc::SIGUSR1);
}

fn join_timeout_on_a_sleeping_child_then_terminate_and_kill(m: StartMethod) {
    let mut p = builder(m).start(sleep_secs, (30,)).unwrap();
    assert!(matches!(
        p.join_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert_eq!(p.wait(Some(Duration::from_millis(10))).unwrap(), None);
    p.terminate().unwrap();
    let e = p.join_timeout(LONG).unwrap_err();
    assert_eq!(e.process_failure().unwrap().exitcode, -libc::SIGTERM);
    assert_eq!(p.exitcode(), Some(-libc::SIGTERM));
    // Signalling a reaped child is a no-op, never a stray signal.
    p.kill().unwrap();

    let mut p = builder(m).start(sleep_secs, (30,)).unwrap();
    p.kill().unwrap();
    assert_eq!(p.wait(Some(LONG)).unwrap(), Some(-libc::SIGKILL));
}

fn sentinel_becomes_readable_at_exit(m: StartMethod) {
    let mut p = builder(m).start(sleep_secs, (0,)).unwrap();
    let mut pfd = [libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&p.sentinel()),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(pfd.as_mut_ptr(), 1, 60_000) };
    assert_eq!(n, 1);
    p.join().unwrap();
}

fn stdin_is_dev_null_unless_inherited(m: StartMethod) {
    let mut p = builder(m).start(stdin_target, ()).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), "/dev/null", "{m:?}");
    let ours = std::fs::read_link("/proc/self/fd/0")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut p = builder(m)
        .stdin(Stdin::Inherit)
        .start(stdin_target, ())
        .unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), ours);
}

fn names_pids_and_parent(m: StartMethod) {
    let mut p = builder(m).name("worker-x").start(whoami, ()).unwrap();
    let pid = p.pid();
    let (name, cpid, daemon, parent) = p.join_timeout(LONG).unwrap();
    assert_eq!(name, "worker-x");
    assert_eq!(cpid, pid);
    assert!(!daemon);
    assert_eq!(
        parent,
        Some((current_process().name, std::process::id() as i32))
    );
    let mut p = builder(m).daemon(true).start(whoami, ()).unwrap();
    assert!(p.name().starts_with("Process-"), "{}", p.name());
    assert!(p.join_timeout(LONG).unwrap().2);
    assert_eq!(current_process().name, "MainProcess");
    assert!(parent_process().is_none());
    assert!(multiproc::cpu_count() >= 1);
}

fn active_children_lists_the_living(m: StartMethod) {
    let mut p = builder(m).start(sleep_secs, (30,)).unwrap();
    assert!(active_children().iter().any(|c| c.pid == p.pid()));
    p.kill().unwrap();
    p.wait(Some(LONG)).unwrap();
    assert!(!active_children().iter().any(|c| c.pid == p.pid()));
}

/// Spawn only: the hook damages the bootstrap message of a spawned child
/// (forkserver children read theirs the same way, through the same
/// `read_checked_boot`; fork children receive none).
#[test]
#[cfg(feature = "test-hooks")]
fn hostile_bootstrap_messages_give_clear_errors() {
    for d in [
        Damage::Truncate(5),
        Damage::Truncate(30),
        Damage::FlipByte(7),
        Damage::Garbage,
        Damage::WrongBinary,
        Damage::BadTarget,
    ] {
        let mut p = spawn_damaged(d).unwrap();
        match p.join_timeout(LONG) {
            Err(Error::Bootstrap(msg)) => assert!(!msg.message().is_empty(), "{d:?}"),
            other => panic!("{d:?}: expected a bootstrap error, got {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(1), "{d:?}");
    }
}

#[test]
fn start_method_names_round_trip() {
    for m in [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::Forkserver,
    ] {
        assert_eq!(StartMethod::from_name(m.name()).unwrap(), m);
    }
    assert!(StartMethod::from_name("bogus").is_err());
    assert!(multiproc::StartMethod::from_name("nope").is_err());
    assert!(StartMethod::Forkserver.is_available());
}

fn non_capturing_closures_are_targets(m: StartMethod) {
    let mut p = builder(m).start(|x: u32| x * 2, (21,)).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 42);
}

fn square(x: u64) -> u64 {
    x * x
}

fn add3(a: u64, b: u64, c: String) -> String {
    format!("{c}{}", a + b)
}

/// One calling convention, Python's `target(*args)`: a one-argument target
/// takes a one-tuple and a two-argument target is called `f(a, b)`, as
/// `Pool::apply` does.
fn targets_are_called_with_star_args(m: StartMethod) {
    let mut p = builder(m).start(square, (7,)).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 49);
    let mut p = builder(m).start(add3, (2, 3, "sum=".to_string())).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), "sum=5");
    let mut p = Process::start(square, (9,)).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 81);
}

fn try_grandchild() -> String {
    match Process::start(noop_target, ()) {
        Ok(mut p) => {
            let _ = p.join();
            "started".into()
        }
        Err(e) => e.to_string(),
    }
}

fn noop_target() {}

/// CPython: "daemonic processes are not allowed to have children".
fn daemon_children_cannot_have_children(m: StartMethod) {
    let mut p = builder(m).daemon(true).start(try_grandchild, ()).unwrap();
    let msg = p.join_timeout(LONG).unwrap();
    assert!(
        msg.contains("daemonic processes are not allowed to have children"),
        "{m:?}: {msg}"
    );
    // A non-daemon child may.
    let mut p = builder(m).daemon(false).start(try_grandchild, ()).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), "started", "{m:?}");
}

/// Not in the matrix: it is about the process-wide default itself (and is
/// the only test of this binary that changes it).
///
/// `set_start_method` once; a second call needs `force` (CPython's
/// "context has already been set"); `get_all_start_methods` lists the
/// default first.
#[test]
fn start_method_is_set_once() {
    use multiproc::{get_all_start_methods, get_start_method, set_start_method};
    // Other tests in this binary pass explicit methods; only this one sets it.
    set_start_method(StartMethod::Spawn, false).unwrap();
    let e = set_start_method(StartMethod::Fork, false).unwrap_err();
    assert!(e.to_string().contains("already been set"), "{e}");
    assert_eq!(get_start_method(), StartMethod::Spawn);
    set_start_method(StartMethod::Spawn, true).unwrap();
    let all = get_all_start_methods();
    assert_eq!(all[0], StartMethod::Spawn);
    assert!(all.contains(&StartMethod::Fork));
    assert!(all.contains(&StartMethod::Forkserver));
    set_start_method(StartMethod::Forkserver, true).unwrap();
    assert_eq!(get_start_method(), StartMethod::Forkserver);
    set_start_method(StartMethod::Spawn, true).unwrap();
    let ctx = multiproc::get_context(StartMethod::Fork);
    assert_eq!(ctx.start_method(), StartMethod::Fork);
    let mut p = ctx.process().start(square, (5,)).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 25);
}
