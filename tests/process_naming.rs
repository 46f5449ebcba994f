//! How a child finds the function it must run, and whom it takes orders from:
//! crafted names are refused, the bootstrap channel must be the parent's
//! socket, and the program keeps working from an odd path or after its file
//! was replaced on disk.

multiproc::test_support!();

use multiproc::process::__test::{boot_message, spawn_damaged, Damage};
use multiproc::{Error, Pool, Process, StartMethod};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);
const BOOT_ENV: &str = "MULTIPROC_BOOTSTRAP_FD";

/// A name pointing inside a function body, or at a descriptor of the wrong
/// kind, is refused before any jump: the child reports a bootstrap error.
#[test]
fn crafted_runner_names_are_refused() {
    for d in [Damage::InsideFunction, Damage::WrongKind, Damage::BadTarget] {
        let mut p = spawn_damaged(d).unwrap();
        match p.join_timeout(LONG) {
            Err(Error::Bootstrap(msg)) => {
                assert!(msg.message().contains("cannot be found"), "{d:?}: {msg}")
            }
            other => panic!("{d:?}: expected a bootstrap error, got {other:?}"),
        }
        assert_eq!(p.exitcode(), Some(1), "{d:?}");
    }
}

/// Runs this test binary as a would-be spawned child, with `fd3` at
/// descriptor 3 and `MULTIPROC_BOOTSTRAP_FD=3`; through `sh` when `via_shell`
/// (so that its parent is not the process that made `fd3`). Should it not
/// act as a child, it runs no test (`--exact` of a name that does not exist).
fn run_as_child(program: &Path, fd3: &OwnedFd, via_shell: bool) -> Output {
    let mut cmd = if via_shell {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("\"$0\" --exact no_such_test; exit $?")
            .arg(program);
        c
    } else {
        let mut c = Command::new(program);
        c.args(["--exact", "no_such_test"]);
        c
    };
    let raw = fd3.as_raw_fd();
    cmd.env(BOOT_ENV, "3").stdin(Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe and touch only descriptors.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 || libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = spawn_retrying(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
    wait_output(child)
}

fn wait_output(mut child: std::process::Child) -> Output {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > LONG {
            let _ = child.kill();
            panic!("the child did not finish");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

fn assert_refused(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child ran: {out:?}");
    assert!(
        err.contains("child bootstrap failed") && err.contains(needle),
        "{err}"
    );
}

fn socket_pair() -> (OwnedFd, OwnedFd) {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap()
}

/// A genuine bootstrap message arriving from a file or a pipe (say
/// `MULTIPROC_BOOTSTRAP_FD=3 prog 3<crafted`) is refused: the channel must be
/// a socket made by the parent.
#[test]
fn bootstrap_from_a_file_or_a_pipe_is_refused() {
    let exe = std::env::current_exe().unwrap();
    let msg = boot_message().unwrap();
    let dir = TempDir::new("file");
    let path = dir.0.join("boot");
    std::fs::write(&path, &msg).unwrap();
    let file: OwnedFd = std::fs::File::open(&path).unwrap().into();
    assert_refused(&run_as_child(&exe, &file, false), "not a socket");

    let (rd, wr) = rustix::pipe::pipe().unwrap();
    std::fs::File::from(wr).write_all(&msg).unwrap();
    assert_refused(&run_as_child(&exe, &rd, false), "not a socket");
}

/// A socket whose peer is not the child's parent is refused too; the same
/// message on a socket the parent made is accepted (the control).
#[test]
fn bootstrap_from_a_stranger_socket_is_refused() {
    let exe = std::env::current_exe().unwrap();
    let msg = boot_message().unwrap();
    let (mine, theirs) = socket_pair();
    std::fs::File::from(mine).write_all(&msg).unwrap();
    assert_refused(
        &run_as_child(&exe, &theirs, true),
        "not this process's parent",
    );

    let (mine, theirs) = socket_pair();
    let mut f = std::fs::File::from(mine);
    f.write_all(&msg).unwrap();
    let out = run_as_child(&exe, &theirs, false);
    assert!(out.status.success(), "{out:?}");
}

/// A set-user-ID copy of the program (`AT_SECURE`) refuses to act as a
/// child, whatever its environment says.
#[test]
fn a_privileged_program_refuses_to_be_a_child() {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("needs root to make a set-user-ID copy; not run");
        return;
    }
    let dir = TempDir::new("suid");
    let mount = rustix::fs::statvfs(&dir.0).unwrap();
    if mount.f_flag.contains(rustix::fs::StatVfsMountFlags::NOSUID) {
        eprintln!("the temporary directory is on a nosuid mount; not run");
        return;
    }
    let copy = dir.0.join("suid-copy");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    std::os::unix::fs::chown(&copy, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    let (mine, theirs) = socket_pair();
    std::fs::File::from(mine)
        .write_all(&boot_message().unwrap())
        .unwrap();
    assert_refused(&run_as_child(&copy, &theirs, false), "AT_SECURE");
}

// --- the program at an odd path, or replaced on disk -----------------------

fn square(x: u64) -> u64 {
    x * x
}

static ACTION_RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
fn action() {
    ACTION_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

fn pass_barrier(b: multiproc::Barrier) -> usize {
    b.wait().unwrap()
}

const READY_ENV: &str = "MULTIPROC_NAMING_READY";
const GO_ENV: &str = "MULTIPROC_NAMING_GO";

/// Not a test of its own: run by the two tests below in a copy of this
/// binary. Starts processes (every method), runs a spawn pool and a barrier
/// with an action; with `MULTIPROC_NAMING_GO` set, first says it is ready
/// and waits for the go-ahead (the file is replaced meanwhile).
#[test]
#[ignore]
fn inner_spawn_and_pool() {
    if let (Some(ready), Some(go)) = (std::env::var_os(READY_ENV), std::env::var_os(GO_ENV)) {
        std::fs::write(ready, b"ready").unwrap();
        let t0 = Instant::now();
        while !Path::new(&go).exists() {
            assert!(t0.elapsed() < LONG, "no go-ahead");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for m in [
        StartMethod::Spawn,
        StartMethod::Fork,
        StartMethod::Forkserver,
    ] {
        let mut p = Process::builder()
            .start_method(m)
            .start(square, (12,))
            .unwrap();
        assert_eq!(p.join_timeout(LONG).unwrap(), 144, "{m:?}");
    }
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Spawn)
        .build()
        .unwrap();
    assert_eq!(
        pool.map(square, 0..10u64).unwrap(),
        (0..10u64).map(|x| x * x).collect::<Vec<_>>()
    );
    let b = multiproc::Barrier::with_action(2, action).unwrap();
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .start(pass_barrier, (b.clone(),))
        .unwrap();
    let mine = b.wait_timeout(LONG).unwrap();
    let theirs = p.join_timeout(LONG).unwrap();
    assert_eq!(mine + theirs, 1);
    println!("inner: all good");
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "multiproc naming {tag} {}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn inner_command(program: &Path) -> Command {
    let mut c = Command::new(program);
    c.args([
        "--exact",
        "inner_spawn_and_pool",
        "--ignored",
        "--nocapture",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

/// Starts `c`, retrying while the kernel says the program is busy: the copy
/// was just written, and a child another test thread forked meanwhile may
/// still hold the writer's descriptor for a moment (it closes it right
/// after the fork), which makes `execve` fail with `ETXTBSY`.
fn spawn_retrying(c: &mut Command) -> std::process::Child {
    let t0 = Instant::now();
    loop {
        match c.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && t0.elapsed() < LONG => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r.unwrap(),
        }
    }
}

fn assert_inner_passed(out: &Output) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("inner: all good"),
        "{}\n{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The program runs from a path containing spaces: spawn, pool and barrier
/// actions still find their functions.
#[test]
fn works_from_a_path_with_spaces() {
    let dir = TempDir::new("space");
    let copy = dir.0.join("copy of the test");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    let out = wait_output(spawn_retrying(&mut inner_command(&copy)));
    assert_inner_passed(&out);
}

/// The program's file is replaced on disk (renamed over) while it runs:
/// its spawned children still run the running image, and find their
/// functions in it.
#[test]
fn works_after_the_binary_is_replaced_on_disk() {
    let dir = TempDir::new("replaced");
    let copy = dir.0.join("prog");
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    let ready = dir.0.join("ready");
    let go = dir.0.join("go");
    let child = spawn_retrying(inner_command(&copy).env(READY_ENV, &ready).env(GO_ENV, &go));
    let t0 = Instant::now();
    while !ready.exists() {
        assert!(t0.elapsed() < LONG, "the copy never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    let other = dir.0.join("other");
    std::fs::write(&other, b"#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&other, &copy).unwrap();
    std::fs::write(&go, b"go").unwrap();
    assert_inner_passed(&wait_output(child));
}
