//! The forkserver start method: results and failures come back, handed-off
//! resources work, children copy the single-threaded server (not the
//! parent), and the server is private, replaced when it dies, gone when its
//! parent dies, and runs its preload functions once.

multiproc::test_support!();

use multiproc::process::__test::forkserver_pid;
use multiproc::process::{set_forkserver_preload, Preload};
use multiproc::{Error, Lock, Pipe, Process, Queue, StartMethod};
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);
const FS: StartMethod = StartMethod::Forkserver;

/// The fork server is per process: tests that kill or inspect it run one at
/// a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn fs() -> multiproc::Builder {
    Process::builder().start_method(FS)
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}
fn boom() -> u32 {
    panic!("kaboom {}", 7)
}
fn exit_with(code: i32) {
    std::process::exit(code)
}
fn sleep_secs(s: u64) {
    std::thread::sleep(Duration::from_secs(s))
}
fn my_ppid() -> i32 {
    // SAFETY: plain syscall.
    unsafe { libc::getppid() }
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses; a zombie has
        // ended.
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + LONG;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn values_panics_and_exit_codes_come_back() {
    let _g = serial();
    let mut p = fs().start(add, (40, 2)).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 42);
    assert_eq!(p.exitcode(), Some(0));
    // The child is the server's child, not ours.
    let mut p = fs().start(my_ppid, ()).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), forkserver_pid().unwrap());

    let mut p = fs().start(boom, ()).unwrap();
    let e = p.join_timeout(LONG).unwrap_err();
    let f = e.process_failure().expect("ProcessFailed");
    assert_eq!(f.exitcode, 1);
    assert!(f.panic_message.as_deref().unwrap().contains("kaboom 7"));

    let mut p = fs().start(exit_with, (5,)).unwrap();
    let e = p.join_timeout(LONG).unwrap_err();
    assert_eq!(e.process_failure().unwrap().exitcode, 5);
    assert_eq!(p.exitcode(), Some(5));
}

#[test]
fn sentinel_terminate_and_kill() {
    let _g = serial();
    let mut p = fs().start(sleep_secs, (30,)).unwrap();
    assert!(matches!(
        p.join_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    assert!(p.is_alive());
    let mut pfd = [libc::pollfd {
        fd: p.sentinel().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd.
    assert_eq!(unsafe { libc::poll(pfd.as_mut_ptr(), 1, 0) }, 0);
    p.terminate().unwrap();
    // SAFETY: one valid pollfd.
    assert_eq!(unsafe { libc::poll(pfd.as_mut_ptr(), 1, 60_000) }, 1);
    assert_eq!(p.wait(Some(LONG)).unwrap(), Some(-libc::SIGTERM));
    // Signalling a reaped child does nothing.
    p.kill().unwrap();

    let mut p = fs().start(sleep_secs, (30,)).unwrap();
    p.kill().unwrap();
    assert_eq!(p.wait(Some(LONG)).unwrap(), Some(-libc::SIGKILL));
}

fn use_resources(q: Queue<u64>, conn: multiproc::Connection, lock: Lock) -> u64 {
    let n: u64 = conn.recv().unwrap();
    // The parent holds the lock until it has seen our first message.
    q.put(n + 1).unwrap();
    let _g = lock.acquire().unwrap();
    q.put(n + 2).unwrap();
    n * 10
}

#[test]
fn handed_off_queue_pipe_and_lock_work() {
    let _g = serial();
    let q: Queue<u64> = Queue::new().unwrap();
    let (mine, theirs) = Pipe::duplex().unwrap();
    let lock = Lock::new().unwrap();
    let held = lock.acquire().unwrap();
    let mut p = fs()
        .start(use_resources, (q.clone(), theirs, lock.clone()))
        .unwrap();
    mine.send(&4u64).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), 5);
    drop(held);
    assert_eq!(q.get_timeout(LONG).unwrap(), 6);
    assert_eq!(p.join_timeout(LONG).unwrap(), 40);
}

static PARENT_LOCK: Mutex<u32> = Mutex::new(0);

/// (threads in this process, whether `PARENT_LOCK` could be taken).
fn threads_and_lock() -> (u64, bool) {
    let threads = std::fs::read_dir("/proc/self/task").unwrap().count() as u64;
    (threads, PARENT_LOCK.try_lock().is_ok())
}

#[test]
fn child_sees_no_thread_or_held_lock_of_the_parent() {
    let _g = serial();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _held = PARENT_LOCK.lock().unwrap();
        held_tx.send(()).unwrap();
        let _ = done_rx.recv();
    });
    held_rx.recv().unwrap();
    let mut p = fs().start(threads_and_lock, ()).unwrap();
    let (threads, lockable) = p.join_timeout(LONG).unwrap();
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(threads, 1, "a forkserver child has exactly one thread");
    assert!(lockable, "a lock held in the parent is free in the child");
}

#[test]
fn a_killed_fork_server_is_replaced_at_the_next_start() {
    let _g = serial();
    let mut p = fs().start(add, (1, 1)).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 2);
    let old = forkserver_pid().unwrap();
    // SAFETY: plain syscall on our own child (the server).
    assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);
    assert!(wait_gone(old));
    let mut p = fs().start(add, (2, 2)).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 4);
    let new = forkserver_pid().unwrap();
    assert_ne!(new, old);
}

#[test]
fn a_child_of_a_dead_server_reports_instead_of_hanging() {
    let _g = serial();
    let mut p = fs().daemon(true).start(sleep_secs, (30,)).unwrap();
    let server = forkserver_pid().unwrap();
    // SAFETY: plain syscall on our own child (the server).
    assert_eq!(unsafe { libc::kill(server, libc::SIGKILL) }, 0);
    // The daemon child dies with its server; its status is lost with the
    // server, so it reads as 255 (or its real signal if reported in time).
    let code = p.wait(Some(LONG)).unwrap().expect("ended");
    assert!(code == 255 || code == -libc::SIGKILL, "{code}");
    assert!(wait_gone(p.pid()));
    // And the next start works.
    let mut p = fs().start(add, (3, 3)).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 6);
}

const ROLE: &str = "MULTIPROC_TEST_FS_ROLE";

/// Run as a subprocess by `a_fork_server_exits_when_its_parent_is_killed`:
/// starts a fork server, prints its pid, and waits to be killed.
#[test]
fn fork_server_parent_role() {
    if std::env::var_os(ROLE).is_none() {
        return;
    }
    let mut p = fs().start(add, (1, 2)).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 3);
    println!("SERVER {}", forkserver_pid().unwrap());
    sleep_secs(120);
}

#[test]
fn a_fork_server_exits_when_its_parent_is_killed() {
    use std::io::BufRead;
    let mut parent = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "fork_server_parent_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(parent.stdout.take().unwrap());
    let mut server = None;
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        // The harness prints "test NAME ... " first on the same line.
        if let Some((_, pid)) = line.trim().split_once("SERVER ") {
            server = Some(pid.trim().parse::<i32>().unwrap());
            break;
        }
        line.clear();
    }
    let server = server.expect("the parent printed its server's pid");
    assert!(alive(server));
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(wait_gone(server), "the fork server outlived its parent");
}

/// The unix sockets `pid` holds: (inode, bound path or "").
fn unix_sockets_of(pid: i32) -> Vec<(u64, String)> {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let e = e.unwrap();
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        let t = target.display().to_string();
        let Some(inode) = t
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        // Opening a socket through /proc is refused: holding its number in
        // another process's table gives no access.
        assert!(std::fs::File::open(e.path()).is_err());
        for row in table.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            if cols.get(6).and_then(|c| c.parse::<u64>().ok()) == Some(inode) {
                out.push((inode, cols.get(7).unwrap_or(&"").to_string()));
            }
        }
    }
    out
}

fn ppid_of(pid: i32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = s.rsplit_once(')').unwrap();
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// (this process's pid, its fork server's pid, the server's parent).
fn server_of_a_forked_child() -> (i32, i32, i32) {
    let mut p = fs().start(add, (5, 5)).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 10);
    let server = forkserver_pid().unwrap();
    (std::process::id() as i32, server, ppid_of(server))
}

#[test]
fn the_server_cannot_be_reached_without_its_descriptor() {
    let _g = serial();
    let mut p = fs().start(add, (0, 1)).unwrap();
    p.join_timeout(LONG).unwrap();
    let server = forkserver_pid().unwrap();
    let sockets = unix_sockets_of(server);
    assert!(!sockets.is_empty());
    // No socket of the server has an address another process could
    // connect to.
    for (inode, path) in &sockets {
        assert!(path.is_empty(), "socket {inode} is bound to {path}");
    }
    // A forked child inherits the descriptor number but is not the server's
    // client: it starts (and is answered by) a server of its own.
    let mut c = Process::builder()
        .start_method(StartMethod::Fork)
        .start(server_of_a_forked_child, ())
        .unwrap();
    let (child, child_server, child_server_parent) = c.join_timeout(LONG).unwrap();
    assert_eq!(child, c.pid());
    assert_ne!(child_server, server);
    assert_eq!(child_server_parent, child);
}

fn mark_preload() {
    // SAFETY: plain syscalls.
    let (me, parent) = unsafe { (libc::getpid(), libc::getppid()) };
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join(format!("multiproc-preload-{parent}")))
        .unwrap();
    writeln!(f, "{me}").unwrap();
}

#[test]
fn preload_runs_once_in_the_server() {
    let _g = serial();
    let marker = std::env::temp_dir().join(format!("multiproc-preload-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    // Start from a fresh server, which takes the preload list.
    let mut p = fs().start(add, (0, 0)).unwrap();
    p.join_timeout(LONG).unwrap();
    let old = forkserver_pid().unwrap();
    // SAFETY: plain syscall on our own child (the server).
    unsafe { libc::kill(old, libc::SIGKILL) };
    assert!(wait_gone(old));
    set_forkserver_preload(&[Preload::new(mark_preload)]);
    for i in 0..2 {
        let mut p = fs().start(add, (i, i)).unwrap();
        assert_eq!(p.join_timeout(LONG).unwrap(), 2 * i);
    }
    set_forkserver_preload(&[]);
    let server = forkserver_pid().unwrap();
    let text = std::fs::read_to_string(&marker).unwrap();
    let _ = std::fs::remove_file(&marker);
    assert_eq!(text, format!("{server}\n"), "one run, in the server");
}

#[test]
fn malformed_requests_make_the_server_fork_nothing() {
    use multiproc::process::__test::{forkserver_header, forkserver_raw_request};
    let _g = serial();
    let mut p = fs().start(add, (1, 0)).unwrap();
    p.join_timeout(LONG).unwrap();
    let server = forkserver_pid().unwrap();
    // The hook can make it fork with a well-formed request...
    assert!(forkserver_raw_request(&forkserver_header(2), 2).unwrap());
    // ...but not with garbage, a short or long header, or a descriptor
    // count that does not match what came with it.
    let mut bad_magic = forkserver_header(2);
    bad_magic[0] ^= 0xff;
    let mut long = forkserver_header(2);
    long.extend_from_slice(&[0; 64]);
    for (bytes, nfds) in [
        (vec![0u8; 12], 2),
        (bad_magic, 2),
        (forkserver_header(2)[..11].to_vec(), 2),
        (long, 2),
        (forkserver_header(3), 2),
        (forkserver_header(2), 3),
        (forkserver_header(1), 1),
    ] {
        assert!(!forkserver_raw_request(&bytes, nfds).unwrap(), "{bytes:?}");
    }
    // The server is still there and serving.
    let mut p = fs().start(add, (2, 0)).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 2);
    assert_eq!(forkserver_pid(), Some(server));
}

/// Whether descriptor `fd` is open on the file whose inode is `ino`.
fn holds(fd: i32, ino: u64) -> bool {
    // SAFETY: only borrowed for this check.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    rustix::fs::fstat(b).is_ok_and(|st| st.st_ino == ino)
}

/// For each (number, inode): whether the child holds that file at that
/// number; also uses a handed-off connection, so that handed-off and opted-in
/// descriptors arrive together.
fn holds_all(wanted: Vec<(i32, u64)>, conn: multiproc::Connection) -> Vec<bool> {
    conn.send(&7u32).unwrap();
    wanted.iter().map(|&(fd, ino)| holds(fd, ino)).collect()
}

#[test]
fn pass_fd_keeps_descriptors_at_their_numbers() {
    let _g = serial();
    let pipes: Vec<_> = (0..3).map(|_| rustix::pipe::pipe().unwrap()).collect();
    let wanted: Vec<(i32, u64)> = pipes
        .iter()
        .map(|(r, _)| (r.as_raw_fd(), rustix::fs::fstat(r).unwrap().st_ino))
        .collect();
    // Passed: the first two (one of them twice); not passed: the third.
    let (mine, theirs) = Pipe::duplex().unwrap();
    let mut p = fs()
        .pass_fd(pipes[0].0.as_raw_fd())
        .pass_fd(pipes[1].0.as_raw_fd())
        .pass_fd(pipes[0].0.as_raw_fd())
        .start(holds_all, (wanted, theirs))
        .unwrap();
    assert_eq!(mine.recv::<u32>().unwrap(), 7);
    assert_eq!(p.join_timeout(LONG).unwrap(), vec![true, true, false]);
    // A passed pipe end works in the child: it reads what we wrote.
    use std::io::Write;
    let (r, w) = &pipes[2];
    std::fs::File::from(w.try_clone().unwrap())
        .write_all(b"x")
        .unwrap();
    let mut p = fs()
        .pass_fd(r.as_raw_fd())
        .start(read_byte, (r.as_raw_fd(),))
        .unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), b'x');
}

fn read_byte(fd: i32) -> u8 {
    let mut b = [0u8];
    // SAFETY: only borrowed for this read.
    rustix::io::read(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, &mut b).unwrap();
    b[0]
}

#[test]
fn pass_fd_of_a_closed_descriptor_is_a_clear_error() {
    let _g = serial();
    let (r, _w) = rustix::pipe::pipe().unwrap();
    let n = r.as_raw_fd();
    drop(r);
    match fs().pass_fd(n).start(add, (1, 1)) {
        Err(Error::Invalid(m)) => assert!(m.contains("not open"), "{m}"),
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

/// (the parent's pid as `parent_process()` tells it, whether it is alive).
fn my_parent() -> (i32, bool) {
    let p = multiproc::parent_process().unwrap();
    (p.pid, p.is_alive())
}

#[test]
fn parent_process_is_the_process_that_called_start() {
    let _g = serial();
    let mut p = fs().start(my_parent, ()).unwrap();
    assert_eq!(
        p.join_timeout(LONG).unwrap(),
        (std::process::id() as i32, true)
    );
}

/// In the grandchild: tells the middle process that it saw it alive, then
/// waits (up to a minute) until `parent_process()` says it has ended.
fn outlive_parent(to_parent: multiproc::Connection, to_top: multiproc::Connection) {
    let parent = multiproc::parent_process().unwrap();
    to_parent.send(&(parent.pid, parent.is_alive())).unwrap();
    let deadline = Instant::now() + LONG;
    while parent.is_alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    to_top.send(&(parent.pid, parent.is_alive())).unwrap();
}

/// The middle process: starts `outlive_parent` by forkserver, passes on what
/// it saw, and ends at once (`_exit`: no joining of its children).
fn start_and_vanish(to_top: multiproc::Connection, for_grandchild: multiproc::Connection) {
    let (mine, theirs) = Pipe::duplex().unwrap();
    let p = fs()
        .start(outlive_parent, (theirs, for_grandchild))
        .unwrap();
    let seen: (i32, bool) = mine.recv().unwrap();
    to_top.send(&(p.pid(), seen)).unwrap();
    // SAFETY: ends this process at once.
    unsafe { libc::_exit(0) }
}

#[test]
fn parent_process_of_a_forkserver_child_dies_with_the_real_parent() {
    let _g = serial();
    let (top, theirs) = Pipe::duplex().unwrap();
    let (from_grandchild, grandchilds) = Pipe::duplex().unwrap();
    let mut middle = Process::builder()
        .start_method(StartMethod::Spawn)
        .start(start_and_vanish, (theirs, grandchilds))
        .unwrap();
    assert!(
        top.poll(Some(LONG)).unwrap(),
        "no word from the middle process"
    );
    let (grandchild, (seen_pid, seen_alive)): (i32, (i32, bool)) = top.recv().unwrap();
    assert_eq!(
        seen_pid,
        middle.pid(),
        "the parent is the process that called start"
    );
    assert!(seen_alive, "alive while it runs");
    let _ = middle.wait(Some(LONG));
    assert!(
        from_grandchild.poll(Some(LONG)).unwrap(),
        "no word from the grandchild"
    );
    let (pid, alive): (i32, bool) = from_grandchild.recv().unwrap();
    assert_eq!(pid, middle.pid());
    assert!(!alive, "parent_process().is_alive() after the parent ended");
    assert!(wait_gone(grandchild));
}

#[test]
fn a_context_sets_the_forkserver_preload() {
    let _g = serial();
    let marker = std::env::temp_dir().join(format!("multiproc-preload-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let mut p = fs().start(add, (0, 0)).unwrap();
    p.join_timeout(LONG).unwrap();
    let old = forkserver_pid().unwrap();
    // SAFETY: plain syscall on our own child (the server).
    unsafe { libc::kill(old, libc::SIGKILL) };
    assert!(wait_gone(old));
    let ctx = multiproc::get_context(FS);
    ctx.set_forkserver_preload(&[Preload::new(mark_preload)]);
    let mut p = ctx.process().start(add, (1, 1)).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 2);
    ctx.set_forkserver_preload(&[]);
    let server = forkserver_pid().unwrap();
    let text = std::fs::read_to_string(&marker).unwrap();
    let _ = std::fs::remove_file(&marker);
    assert_eq!(text, format!("{server}\n"), "run once, in the server");
}
