//! What happens to children when their parent exits or is killed.

multiproc::test_support!();

use multiproc::StartMethod;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[macro_use]
mod common;

use common::builder;

start_methods! {
    daemon_dies_when_its_parent_is_killed,
    normal_exit_joins_children_and_ends_daemons,
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("multiproc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn alive(pid: i32) -> bool {
    // A zombie (reparented to an init that does not reap) counts as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_for_file(path: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s.trim().to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sleeper() {
    std::thread::sleep(Duration::from_secs(60));
}

fn late_writer(path: String) {
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(path, "done\n").unwrap();
}

fn method(name: &str) -> StartMethod {
    StartMethod::from_name(name).unwrap()
}

/// Starts a daemon grandchild (by `m`), writes its pid to `path`, then sleeps.
fn parent_of_daemon(path: String, m: String) {
    let p = builder(method(&m)).daemon(true).start(sleeper, ()).unwrap();
    std::fs::write(path, format!("{}\n", p.pid())).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Starts a non-daemon grandchild that writes a file late, and a daemon one
/// that would sleep for a minute (both by `m`); returns at once.
fn returns_early(dir: String, m: String) -> i32 {
    let m = method(&m);
    let _slow = builder(m)
        .start(late_writer, (format!("{dir}/late"),))
        .unwrap();
    let d = builder(m).daemon(true).start(sleeper, ()).unwrap();
    d.pid()
}

fn daemon_dies_when_its_parent_is_killed(m: StartMethod) {
    let dir = tmpdir(&format!("daemon-{}", m.name()));
    let path = dir.join("pid").display().to_string();
    let mut parent = builder(m)
        .start(parent_of_daemon, (path.clone(), m.name().to_string()))
        .unwrap();
    let daemon: i32 = wait_for_file(path.as_ref()).parse().unwrap();
    assert!(alive(daemon));
    parent.kill().unwrap();
    parent.wait(Some(Duration::from_secs(60))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(daemon) {
        assert!(
            Instant::now() < deadline,
            "daemon {daemon} outlived its killed parent"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn normal_exit_joins_children_and_ends_daemons(m: StartMethod) {
    let dir = tmpdir(&format!("atexit-{}", m.name()));
    let mut p = builder(m)
        .start(
            returns_early,
            (dir.display().to_string(), m.name().to_string()),
        )
        .unwrap();
    let daemon = p.join_timeout(Duration::from_secs(60)).unwrap();
    // The non-daemon grandchild was joined before the child exited...
    assert_eq!(std::fs::read_to_string(dir.join("late")).unwrap(), "done\n");
    // ...and the daemon one was terminated and reaped.
    assert!(
        !alive(daemon),
        "daemon grandchild {daemon} survived its parent's exit"
    );
}
