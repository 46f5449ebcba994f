//! `MpiPool` under a real MPI launcher: each test starts this test binary as
//! a 3-rank job (`$MPIEXEC`, default `mpiexec.mpich`, else `mpiexec`), in
//! which rank 0 runs one of the `role_*` functions below (ignored when the
//! suite runs normally) and ranks 1 and 2 serve as workers from
//! `test_support!`'s call of `multiproc::init()`.
#![cfg(feature = "mpi")]

multiproc::test_support!();

use multiproc::mpi::MpiPool;
use multiproc::pool::{PendingResult, TaskPool};
use multiproc::Error;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One MPI job at a time (the machine may have few cores).
static JOBS: Mutex<()> = Mutex::new(());

fn mpiexec() -> String {
    if let Ok(m) = std::env::var("MPIEXEC") {
        return m;
    }
    let found = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    if found("mpiexec.mpich") {
        "mpiexec.mpich".into()
    } else {
        "mpiexec".into()
    }
}

struct Job {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `mpiexec -n 2 <this binary> role : -n 1 <rank2_exe> role` (rank 2
/// runs `rank2_exe`, by default this binary too) and returns its outcome;
/// a job still running after two minutes is killed and fails the test.
fn run_job(role: &str, rank2_exe: Option<&std::path::Path>, env: &[(&str, &str)]) -> Job {
    let _one = JOBS.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::env::current_exe().unwrap();
    let args = [
        "--ignored",
        "--exact",
        role,
        "--nocapture",
        "--test-threads=1",
    ];
    let mut cmd = Command::new(mpiexec());
    cmd.arg("-n").arg("2").arg(&me).args(args);
    cmd.arg(":").arg("-n").arg("1");
    cmd.arg(rank2_exe.unwrap_or(&me)).args(args);
    cmd.envs(env.iter().copied());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start mpiexec: install MPICH (see .ci/mpi) or set MPIEXEC");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "MPI job {role} hung: killed after 120 s\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Job {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_role_ok(role: &str) {
    assert_role_ok_with(role, &[]);
}

fn assert_role_ok_with(role: &str, env: &[(&str, &str)]) {
    let job = run_job(role, None, env);
    assert!(
        job.code == Some(0) && job.stdout.contains(&format!("ROLE {role} OK")),
        "{role} failed (exit {:?})\nstdout:\n{}\nstderr:\n{}",
        job.code,
        job.stdout,
        job.stderr
    );
}

// ---- task functions (every rank runs this binary) ----

fn square_where(x: u64) -> (u64, u32) {
    (x * x, std::process::id())
}

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Slow on one rank's share: item 0 sleeps, so the others overtake it.
fn slow_first(x: u64) -> u64 {
    if x == 0 {
        std::thread::sleep(Duration::from_millis(300));
    }
    x
}

fn fails_on_13(x: u64) -> u64 {
    if x == 13 {
        panic!("task 13 failed on purpose");
    }
    x
}

fn kill_self() -> u64 {
    // SAFETY: plain syscalls on our own pid.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    0
}

/// Generic over the pool kind: the trait every pool implements.
fn generic_job(pool: &impl TaskPool) -> multiproc::Result<()> {
    assert_eq!(pool.map(square, 0..100u64)?[9], 81);
    assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)])?, vec![3, 7]);
    assert_eq!(pool.apply(add, (2, 3))?, 5);
    let r = pool.apply_async(square, (12,))?;
    assert_eq!(r.get_timeout(Duration::from_secs(60))?, 144);
    let ordered: Vec<u64> = pool.imap(square, 0..50u64)?.collect::<Result<_, _>>()?;
    assert_eq!(ordered, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
    Ok(())
}

// ---- roles: rank 0's part of each job ----

#[test]
#[ignore = "rank 0 of the job started by map_10000_in_order_over_two_ranks"]
fn role_map() {
    let pool = MpiPool::new().unwrap();
    assert_eq!(pool.processes(), 2);
    for chunks in [Some(1), None] {
        let out = match chunks {
            Some(c) => pool.map_chunked(square_where, 0..10_000u64, c).unwrap(),
            None => pool.map(square_where, 0..10_000u64).unwrap(),
        };
        assert_eq!(out.len(), 10_000);
        for (i, (sq, _)) in out.iter().enumerate() {
            assert_eq!(*sq, (i * i) as u64);
        }
        // Both worker ranks did some of it, and only they did.
        let pids: BTreeSet<u32> = out.iter().map(|&(_, p)| p).collect();
        let ranks: BTreeSet<u32> = pool.ranks().iter().map(|r| r.pid as u32).collect();
        assert_eq!(pids, ranks, "chunksize {chunks:?}");
    }
    generic_job(&pool).unwrap();
    println!("ROLE role_map OK");
}

#[test]
#[ignore = "rank 0 of the job started by imap_unordered_returns_all"]
fn role_imap_unordered() {
    let pool = MpiPool::new().unwrap();
    let got: Vec<u64> = pool
        .imap_unordered(slow_first, 0..2_000u64)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got.len(), 2_000);
    // Results come as ranks finish: the slow first item is not first.
    assert_ne!(got[0], 0);
    let all: BTreeSet<u64> = got.into_iter().collect();
    assert_eq!(all, (0..2_000u64).collect());
    println!("ROLE role_imap_unordered OK");
}

#[test]
#[ignore = "rank 0 of the job started by a_panicking_task_fails_alone"]
fn role_panic() {
    let pool = MpiPool::new().unwrap();
    let e = pool.map_chunked(fails_on_13, 0..100u64, 1).unwrap_err();
    let f = e.process_failure().expect("a task panic");
    assert!(f
        .panic_message
        .as_deref()
        .unwrap()
        .contains("task 13 failed on purpose"));
    assert!(!f.backtrace.as_deref().unwrap_or("").is_empty());
    assert!(pool.ranks().iter().any(|r| r.pid == f.pid));
    // imap: that task's error, every other result.
    let all: Vec<_> = pool.imap(fails_on_13, 0..100u64).unwrap().collect();
    for (i, r) in all.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, i as u64),
            Err(Error::ProcessFailed(_)) => assert_eq!(i, 13),
            Err(e) => panic!("item {i}: {e}"),
        }
    }
    // The pool goes on.
    assert_eq!(pool.apply(add, (40, 2)).unwrap(), 42);
    println!("ROLE role_panic OK");
}

#[test]
#[ignore = "rank 0 of the job started by a_killed_worker_rank_ends_the_job"]
fn role_kill() {
    let pool = MpiPool::new().unwrap();
    println!("ROLE role_kill STARTED");
    let r = pool.apply(kill_self, ());
    println!("ROLE role_kill RETURNED {r:?}");
}

#[test]
#[ignore = "rank 0 of the job started by a_rank_running_another_build_is_refused"]
fn role_refused() {
    match MpiPool::new() {
        Ok(_) => println!("ROLE role_refused ACCEPTED"),
        Err(e) => println!("ROLE role_refused REFUSED: {e}"),
    }
}

fn sleep_then(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Results arrive with nobody waiting (the pool's background thread), and
/// callbacks run; a callback calling its own pool gets an error, not a
/// hang; `close` lets queued work finish, then `join` returns.
#[test]
#[ignore = "rank 0 of the job started by callbacks_run_and_close_lets_work_finish"]
fn role_callbacks() {
    use multiproc::pool::Callbacks;
    use std::sync::mpsc;
    let pool = std::sync::Arc::new(MpiPool::new().unwrap());
    let limit = Duration::from_secs(60);

    let (tx, rx) = mpsc::channel();
    let ok = tx.clone();
    let r = pool
        .apply_async_with(
            square,
            (9,),
            Callbacks::new().on_success(move |v: &u64| ok.send(Ok(*v)).unwrap()),
        )
        .unwrap();
    // Nobody calls get: the callback comes from the pool's thread.
    assert_eq!(rx.recv_timeout(limit).unwrap(), Ok(81));
    assert_eq!(r.get().unwrap(), 81);

    let err = tx.clone();
    pool.apply_async_with(
        fails_on_13,
        (13,),
        Callbacks::new().on_error(move |e: &Error| err.send(Err(e.to_string())).unwrap()),
    )
    .unwrap();
    let e = rx.recv_timeout(limit).unwrap().unwrap_err();
    assert!(e.contains("task 13 failed on purpose"), "{e}");

    // A callback that calls its own pool: an error for that call.
    let p = pool.clone();
    let inner = tx.clone();
    pool.map_async_with(
        square,
        0..4u64,
        None,
        Callbacks::new().on_success(move |_: &Vec<u64>| {
            inner
                .send(p.apply(square, (2,)).map_err(|e| e.to_string()))
                .unwrap()
        }),
    )
    .unwrap();
    let e = rx.recv_timeout(limit).unwrap().unwrap_err();
    assert!(e.contains("callback"), "{e}");

    #[cfg(feature = "tokio")]
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let v = rt.block_on(async {
            tokio::time::timeout(limit, pool.apply_async(sleep_then, (50,)).unwrap()).await
        });
        assert_eq!(v.unwrap().unwrap(), 50);
    }

    // close: queued tasks still run; new ones are refused; join waits.
    let queued: Vec<_> = (0..6u64)
        .map(|i| pool.apply_async(sleep_then, (20 + i,)).unwrap())
        .collect();
    assert!(matches!(pool.join(), Err(Error::InvalidState(_))));
    pool.close().unwrap();
    assert!(matches!(pool.apply(square, (1,)), Err(Error::BrokenPool)));
    pool.join().unwrap();
    for (i, r) in queued.iter().enumerate() {
        assert_eq!(r.get().unwrap(), 20 + i as u64);
    }
    println!("ROLE role_callbacks OK");
}

/// `terminate` fails what has not finished, releases the ranks and
/// returns; the job then ends cleanly.
#[test]
#[ignore = "rank 0 of the job started by terminate_fails_unfinished_tasks"]
fn role_terminate() {
    let pool = MpiPool::new().unwrap();
    // 10 s of work for two ranks: most of it is still queued when
    // `terminate` comes.
    let slow: Vec<_> = (0..100)
        .map(|_| pool.apply_async(sleep_then, (100,)).unwrap())
        .collect();
    pool.terminate().unwrap();
    let mut broken = 0;
    for r in &slow {
        match r.get_timeout(Duration::from_secs(60)) {
            Ok(v) => assert_eq!(v, 100),
            Err(Error::BrokenPool) => broken += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(broken > 0, "terminate failed none of the unfinished tasks");
    pool.join().unwrap();
    assert!(matches!(pool.apply(square, (1,)), Err(Error::BrokenPool)));
    println!("ROLE role_terminate OK");
}

/// Rank 0 of a job whose rank 1 enters `MPI_Finalize` late.
#[cfg(feature = "test-hooks")]
#[test]
#[ignore = "rank 0 of the job started by a_rank_late_to_finalize_does_not_hang_the_job"]
fn role_late() {
    let pool = MpiPool::new().unwrap();
    assert_eq!(pool.map(square, 0..100u64).unwrap()[9], 81);
    println!("ROLE role_late OK");
}

// ---- the tests ----

#[test]
fn callbacks_run_and_close_lets_work_finish() {
    assert_role_ok("role_callbacks");
}

#[test]
fn terminate_fails_unfinished_tasks() {
    assert_role_ok("role_terminate");
}

/// MPICH 4.0 over UCX's TCP: a rank that reaches `MPI_Finalize` after the
/// others (as a descheduled rank does on a loaded machine) used to wait for
/// ever in its connections' flush; the job must end, and end well.
#[cfg(feature = "test-hooks")]
#[test]
fn a_rank_late_to_finalize_does_not_hang_the_job() {
    assert_role_ok_with(
        "role_late",
        &[
            ("UCX_TLS", "tcp,self"),
            ("MULTIPROC_TEST_MPI_LATE", "1:1500"),
        ],
    );
}

#[test]
fn map_10000_in_order_over_two_ranks() {
    assert_role_ok("role_map");
}

#[test]
fn imap_unordered_returns_all() {
    assert_role_ok("role_imap_unordered");
}

#[test]
fn a_panicking_task_fails_alone() {
    assert_role_ok("role_panic");
}

/// MPICH ends the whole job when a rank dies (see the `mpi` module docs):
/// the job must fail promptly, never hang and never report success.
#[test]
fn a_killed_worker_rank_ends_the_job() {
    let job = run_job("role_kill", None, &[]);
    assert!(
        job.stdout.contains("ROLE role_kill STARTED"),
        "{}",
        job.stderr
    );
    assert!(!job.stdout.contains("RETURNED Ok"), "{}", job.stdout);
    if !job.stdout.contains("RETURNED Err") {
        // The MPI ended the job: the launcher reports failure.
        assert_ne!(job.code, Some(0), "{}\n{}", job.stdout, job.stderr);
        assert!(
            job.stdout.contains("signal 9")
                || job.stderr.contains("signal 9")
                || job.stdout.contains("KILLED")
                || job.stderr.contains("Killed"),
            "stdout:\n{}\nstderr:\n{}",
            job.stdout,
            job.stderr
        );
    }
}

/// Rank 2 runs a copy of this binary whose build-id differs in one byte
/// (a different build as far as the check can tell): rank 0 refuses to
/// start the pool and names rank 2. (`.ci/mpi` also runs two genuinely
/// different programs.)
#[test]
fn a_rank_running_another_build_is_refused() {
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let other = patched_build_id(&me);
    let dir = std::env::temp_dir().join(format!("multiproc-mpi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("other-build");
    std::fs::write(&path, other).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let job = run_job("role_refused", Some(&path), &[]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        job.stdout.contains("ROLE role_refused REFUSED")
            && job.stdout.contains("MPI rank 2")
            && job.stdout.contains("different build"),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        job.code,
        job.stdout,
        job.stderr
    );
    // The refused pool released every rank: the job ends cleanly.
    assert_eq!(job.code, Some(0), "{}", job.stderr);
}

/// A copy of an ELF executable with the first byte of its GNU build-id
/// note flipped.
fn patched_build_id(exe: &[u8]) -> Vec<u8> {
    let at = exe
        .windows(4)
        .enumerate()
        .find_map(|(i, w)| {
            // Note header: namesz 4, descsz > 0, type 3 (NT_GNU_BUILD_ID), "GNU\0".
            (w == b"GNU\0"
                && i >= 12
                && exe[i - 12..i - 8] == 4u32.to_le_bytes()
                && exe[i - 4..i] == 3u32.to_le_bytes())
            .then_some(i + 4)
        })
        .expect("this test binary has a GNU build-id note");
    let mut other = exe.to_vec();
    other[at] ^= 0xff;
    other
}
