//! The resource tracker: named blocks left behind by a program that is
//! SIGKILLed (or that simply forgets to unlink) are removed; unnamed shared
//! memory never appears in `/dev/shm` at all.
multiproc::test_support!();

use multiproc::handoff::{Exporter, Handoff, Importer};
use multiproc::shared::{tracker, Item, RawArray, RawValue, ShareableList, SharedMemory};
use multiproc::{Process, StartMethod};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

#[macro_use]
mod common;

start_methods! {
    sigkilled_program_leaves_nothing_in_dev_shm,
    names_never_unlinked_are_removed_when_the_program_ends,
    a_killed_tracker_is_replaced,
}

/// A pipe end as a process argument.
struct Fd(OwnedFd);

impl Handoff for Fd {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> multiproc::Result<()> {
        ex.write_fd(self.0.as_fd())
    }
    fn import(im: &mut Importer) -> multiproc::Result<Self> {
        Ok(Fd(im.read_fd()?))
    }
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// Waits (bounded) until none of `names` is in /dev/shm; returns those left.
fn wait_gone(names: &[String]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<String> = names.iter().filter(|n| exists(n)).cloned().collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The doomed program: creates named and unnamed shared memory, reports the
/// names and the tracker's pid, then waits to be killed.
fn doomed(out: Fd, tag: String) {
    let named = SharedMemory::create_named(&format!("mp_test_doomed_{tag}"), 4096).unwrap();
    let generated = SharedMemory::create(100).unwrap();
    let list = ShareableList::new(&[Item::Int(1), "x".into()]).unwrap();
    let value = RawValue::new(5u64).unwrap();
    let array = RawArray::<f64>::zeroed(1000).unwrap();
    let unlinked = SharedMemory::create(10).unwrap();
    unlinked.unlink().unwrap();
    let pid = tracker::ensure_running().unwrap();
    let mut w = std::fs::File::from(out.0);
    writeln!(
        w,
        "{} {} {} {} {pid}",
        named.name(),
        generated.name(),
        list.name(),
        unlinked.name()
    )
    .unwrap();
    drop(w);
    let _keep = (named, generated, list, value, array);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn forgetful(tag: String) -> String {
    let shm = SharedMemory::create_named(&format!("mp_test_forgot_{tag}"), 64).unwrap();
    let name = shm.name().to_string();
    drop(shm); // closed, never unlinked
    name
}

/// Kills the doomed child even when an assertion fails first.
struct KillOnDrop(Process<()>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

fn tracker_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// The test process itself never starts a tracker, so each child (spawned, or
/// forked) starts its own and the tracker's lifetime is the child's.
fn sigkilled_program_leaves_nothing_in_dev_shm(m: StartMethod) {
    let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let tag = format!("{}_{m:?}", std::process::id());
    let mut p = KillOnDrop(
        Process::builder()
            .start_method(m)
            .start(doomed, (Fd(wr), tag))
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(std::fs::File::from(rd))
        .read_line(&mut line)
        .unwrap();
    let fields: Vec<String> = line.split_whitespace().map(String::from).collect();
    assert_eq!(fields.len(), 5, "child said {line:?}");
    let names = fields[..3].to_vec();
    let tracker_pid: i32 = fields[4].parse().unwrap();
    for n in &names {
        assert!(exists(n), "{n} should exist while the program runs");
    }
    assert!(!exists(&fields[3]));
    // The unnamed value and array are memfds: the child maps nothing
    // from /dev/shm except the named blocks.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", p.0.pid())).unwrap();
    assert!(maps.contains("memfd:multiproc-value"), "{maps}");
    for l in maps.lines().filter(|l| l.contains("/dev/shm/")) {
        assert!(
            fields[..4]
                .iter()
                .any(|n| l.contains(&format!("/dev/shm/{n}"))),
            "unexpected mapping {l}"
        );
    }
    p.0.kill().unwrap();
    let code = p.0.wait(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(code, Some(-9));
    let left = wait_gone(&names);
    assert!(
        left.is_empty(),
        "{m:?}: still in /dev/shm after the tracker ran: {left:?}"
    );
    // The tracker itself ends once it has cleaned up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while tracker_alive(tracker_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !tracker_alive(tracker_pid),
        "{m:?}: tracker {tracker_pid} still running"
    );
}

fn names_never_unlinked_are_removed_when_the_program_ends(m: StartMethod) {
    let tag = format!("{}_{m:?}", std::process::id());
    let mut p = Process::builder()
        .start_method(m)
        .start(forgetful, (tag,))
        .unwrap();
    let name = p.join().unwrap();
    let left = wait_gone(&[name]);
    assert!(left.is_empty(), "{m:?}: {left:?}");
}

/// In a child: kill this program's tracker, then create a block: a new
/// tracker takes over (with a warning), and still cleans up at the end.
fn tracker_killed(tag: String) -> (i32, i32, String) {
    let first = tracker::ensure_running().unwrap();
    // SAFETY: plain kill(2) of the tracker's pid, which this program started.
    assert_eq!(unsafe { libc_kill(first, 9) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tracker_alive(first) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let shm = SharedMemory::create_named(&format!("mp_test_restart_{tag}"), 64).unwrap();
    let second = tracker::ensure_running().unwrap();
    let name = shm.name().to_string();
    drop(shm); // never unlinked: the new tracker must remove it
    (first, second, name)
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn a_killed_tracker_is_replaced(m: StartMethod) {
    let tag = format!("{}_{m:?}", std::process::id());
    let mut p = Process::builder()
        .start_method(m)
        .start(tracker_killed, (tag,))
        .unwrap();
    let (first, second, name) = p.join().unwrap();
    assert_ne!(first, second);
    let left = wait_gone(&[name]);
    assert!(left.is_empty(), "{left:?}");
}
