//! A program that forgot `multiproc::init()`: this test binary deliberately
//! has no `multiproc::test_support!()`, so a child spawned from it reruns the
//! test harness (its `main`) instead of the target, and reaches
//! `Process::start` again. CPython refuses that ("bootstrapping phase"); so
//! does multiproc: the parent gets a clear `Error::Bootstrap`, and no process
//! is started beyond the first child (no fork bomb).
//!
//! One test only: the spawned copies of this binary run every test in it.
//! Spawn only, not the start-method matrix: it is about a re-executed copy
//! of the binary that never reaches `init` (a forked child runs no `main`;
//! the fork server's own start is covered in `process_forkserver.rs`).

use multiproc::{Error, Process, StartMethod};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How deep in the chain of spawned copies a process is (0: the test itself).
const DEPTH: &str = "MULTIPROC_TEST_FORGOT_INIT_DEPTH";
/// Where each copy leaves a marker file (to count them).
const DIR: &str = "MULTIPROC_TEST_FORGOT_INIT_DIR";
/// What a copy does: `start` a process, or `sleep` without using multiproc.
const ROLE: &str = "MULTIPROC_TEST_FORGOT_INIT_ROLE";

fn take(_: Vec<u8>) {}

/// What a spawned copy of this binary does when the harness reruns the test.
fn in_a_copy(depth: u32) {
    let dir = PathBuf::from(std::env::var_os(DIR).unwrap());
    std::fs::write(
        dir.join(format!("depth{depth}-pid{}", std::process::id())),
        b"",
    )
    .unwrap();
    if depth >= 3 {
        // Without the fix, each copy starts another one: stop the chain here.
        return;
    }
    if std::env::var(ROLE).as_deref() == Ok("sleep") {
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    std::env::set_var(DEPTH, (depth + 1).to_string());
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .start(take, (vec![0u8; 16],))
        .unwrap();
    let _ = p.join();
}

fn markers(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_names_init(e: &Error) {
    match e {
        Error::Bootstrap(m) => assert!(
            m.message().contains("multiproc::init()")
                && m.message().contains("first line of `main`"),
            "unclear message: {m}"
        ),
        other => panic!("expected Error::Bootstrap, got {other:?}"),
    }
}

#[test]
fn a_program_that_forgot_init_gets_a_clear_error_not_a_fork_bomb() {
    let depth: u32 = std::env::var(DEPTH)
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    if depth > 0 {
        return in_a_copy(depth);
    }
    let dir = std::env::temp_dir().join(format!("multiproc-forgot-init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::env::set_var(DIR, &dir);
    std::env::set_var(DEPTH, "1");

    // The copy reaches `Process::start` without reading its start message:
    // the arguments (larger than a socket buffer) must not block the parent,
    // and the copy must start nothing.
    std::env::set_var(ROLE, "start");
    let mut p = Process::builder()
        .start_method(StartMethod::Spawn)
        .start(take, (vec![7u8; 4 << 20],))
        .unwrap();
    let e = p.join_timeout(Duration::from_secs(120)).unwrap_err();
    assert_names_init(&e);
    assert_eq!(p.exitcode(), Some(1));
    let seen = markers(&dir);
    assert_eq!(seen.len(), 1, "processes that ran the test: {seen:?}");
    assert!(seen[0].starts_with("depth1-"), "{seen:?}");

    // The copy never uses multiproc and never reads its start message: the
    // parent gives up on it instead of waiting forever.
    #[cfg(feature = "test-hooks")]
    {
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::env::set_var(ROLE, "sleep");
        multiproc::process::__test::set_boot_stall(Duration::from_secs(2));
        let e = Process::builder()
            .start_method(StartMethod::Spawn)
            .start(take, (vec![7u8; 4 << 20],))
            .unwrap_err();
        assert!(
            matches!(&e, Error::Bootstrap(m) if m.message().contains("multiproc::init()")),
            "{e:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
