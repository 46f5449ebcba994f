//! `SharedMemory` and `ShareableList`: create, attach, unlink, errors, across
//! processes started by fork and spawn, and with a real `python3` both ways.
multiproc::test_support!();

use multiproc::shared::{Item, ShareableList, SharedMemory};
use multiproc::{Process, StartMethod};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[macro_use]
mod common;

start_methods! {
    across_processes,
    untracked_block_made_by_a_child_outlives_it,
    shareable_list_reaches_children_as_an_argument,
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "mp_test_{tag}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

#[test]
fn create_attach_unlink_in_process() {
    let a = SharedMemory::create(1000).unwrap();
    assert!(
        a.name().starts_with("psm_") && a.name().len() == 12,
        "{}",
        a.name()
    );
    assert_eq!(a.size(), 1000);
    assert!(exists(a.name()));
    a.write_at(10, b"abc").unwrap();
    let b = SharedMemory::open(a.name()).unwrap();
    assert_eq!(b.size(), 1000);
    let mut buf = [0u8; 3];
    b.read_at(10, &mut buf).unwrap();
    assert_eq!(&buf, b"abc");
    b.atomic_u64(0)
        .unwrap()
        .fetch_add(7, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        a.atomic_u64(0)
            .unwrap()
            .load(std::sync::atomic::Ordering::SeqCst),
        7
    );
    assert!(a.atomic_u64(4).is_err());
    assert!(a.read_at(998, &mut buf).is_err());
    b.close();
    a.unlink().unwrap();
    assert!(!exists(a.name()));
    // The mapping stays usable after unlink.
    a.read_at(10, &mut buf).unwrap();
    assert_eq!(&buf, b"abc");
    // A second unlink is a clear NotFound.
    let e = a.unlink().unwrap_err();
    assert!(
        matches!(&e, multiproc::Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound),
        "{e}"
    );
}

#[test]
fn attaching_a_missing_name_is_a_clear_error() {
    let name = unique("missing");
    let e = SharedMemory::open(&name).unwrap_err();
    assert!(
        matches!(&e, multiproc::Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("no shared memory block") && msg.contains(&name),
        "{msg}"
    );
    assert!(ShareableList::open(&name).is_err());
}

#[test]
fn creating_an_existing_name_is_a_clear_error() {
    let name = unique("exists");
    let a = SharedMemory::create_named(&name, 64).unwrap();
    let e = SharedMemory::create_named(&name, 128).unwrap_err();
    assert!(
        matches!(&e, multiproc::Error::Io(io) if io.kind() == std::io::ErrorKind::AlreadyExists),
        "{e}"
    );
    assert!(
        e.to_string().contains("already exists") && e.to_string().contains(&name),
        "{e}"
    );
    // The existing block is untouched.
    assert_eq!(SharedMemory::open(&format!("/{name}")).unwrap().size(), 64);
    a.unlink().unwrap();
}

#[test]
fn invalid_arguments() {
    assert!(SharedMemory::create(0).is_err());
    assert!(SharedMemory::create_named("a/b", 10).is_err());
    assert!(SharedMemory::create_named("", 10).is_err());
}

fn child_by_name(name: String, fill: u8) -> Vec<u8> {
    let shm = SharedMemory::open(&name).unwrap();
    let mut seen = vec![0u8; 4];
    shm.read_at(0, &mut seen).unwrap();
    shm.write_at(100, &[fill; 8]).unwrap();
    seen
}

fn child_by_handle(shm: SharedMemory, fill: u8) -> usize {
    shm.write_at(200, &[fill; 8]).unwrap();
    shm.size()
}

fn child_unlinks(name: String) {
    SharedMemory::open(&name).unwrap().unlink().unwrap();
}

fn across_processes(m: StartMethod) {
    let i = common::METHODS.iter().position(|&x| x == m).unwrap();
    let name = unique("xproc");
    let shm = SharedMemory::create_named(&name, 4096).unwrap();
    shm.write_at(0, b"ping").unwrap();
    let fill = 0x10 + i as u8;
    let mut p = Process::builder()
        .start_method(m)
        .start(child_by_name, (name.clone(), fill))
        .unwrap();
    assert_eq!(p.join().unwrap(), b"ping".to_vec(), "{m:?}");
    let mut buf = [0u8; 8];
    shm.read_at(100, &mut buf).unwrap();
    assert_eq!(buf, [fill; 8], "{m:?}");

    let mut p = Process::builder()
        .start_method(m)
        .start(child_by_handle, (shm, fill + 1))
        .unwrap();
    assert_eq!(p.join().unwrap(), 4096, "{m:?}");
    let shm = SharedMemory::open(&name).unwrap();
    shm.read_at(200, &mut buf).unwrap();
    assert_eq!(buf, [fill + 1; 8], "{m:?}");

    let mut p = Process::builder()
        .start_method(m)
        .start(child_unlinks, (name.clone(),))
        .unwrap();
    p.join().unwrap();
    assert!(!exists(&name), "{m:?}");
    assert!(SharedMemory::open(&name).is_err());
}

#[test]
fn shareable_list_round_trip() {
    let items = vec![
        Item::Int(-5),
        Item::Float(2.5),
        Item::Bool(true),
        Item::Bool(false),
        Item::Str("héllo".into()),
        Item::Bytes(b"\x01\x02".to_vec()),
        Item::None,
        Item::Str("exactly8".into()),
    ];
    let sl = ShareableList::new(&items).unwrap();
    assert_eq!(sl.len(), 8);
    let other = ShareableList::open(sl.name()).unwrap();
    assert_eq!(other.to_vec().unwrap(), items);
    assert_eq!(sl.format().unwrap(), "qdxxxxxxx?xxxxxxx?8s8sxxxxxx?x16s");
    other.set(0, Item::Str("now str".into())).unwrap();
    other.set(4, Item::Int(9)).unwrap();
    other.set(6, Item::Bytes(b"abc".to_vec())).unwrap();
    assert_eq!(sl.get(0).unwrap(), Item::Str("now str".into()));
    assert_eq!(sl.get(4).unwrap(), Item::Int(9));
    assert_eq!(sl.get(6).unwrap(), Item::Bytes(b"abc".to_vec()));
    assert!(sl.set(0, Item::Str("123456789".into())).is_err());
    assert!(sl.get(8).is_err());
    let empty = ShareableList::new(&[]).unwrap();
    assert!(ShareableList::open(empty.name()).unwrap().is_empty());
    empty.shm().unlink().unwrap();
    sl.shm().unlink().unwrap();
}

// ---------------------------------------------------------------- python3

fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "import multiprocessing.shared_memory"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Some("python3")
    } else {
        eprintln!("skipping: python3 with multiprocessing.shared_memory is not available");
        None
    }
}

fn run_python(py: &str, script: &str, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed: {stderr}");
    assert!(
        !stderr.contains("leaked"),
        "python's tracker complained: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Python 3.11 registers a block it attaches to with its own tracker (which
/// would unlink it when Python exits); unregister it there.
const PY_PRELUDE: &str = "import sys\n\
from multiprocessing import shared_memory, resource_tracker\n\
def untrack(shm):\n    resource_tracker.unregister(shm._name, 'shared_memory')\n";

#[test]
fn python_attaches_to_a_rust_block() {
    let Some(py) = python() else { return };
    let shm = SharedMemory::create(256).unwrap();
    shm.write_at(0, b"from rust").unwrap();
    let script = format!(
        "{PY_PRELUDE}\
s = shared_memory.SharedMemory(sys.argv[1]); untrack(s)\n\
print(bytes(s.buf[:9]).decode(), s.size)\n\
s.buf[100:111] = b'from python'\n\
s.close()\n"
    );
    let out = run_python(py, &script, &[shm.name()]);
    assert_eq!(out, "from rust 256");
    let mut buf = [0u8; 11];
    shm.read_at(100, &mut buf).unwrap();
    assert_eq!(&buf, b"from python");
    assert!(exists(shm.name()), "python must not have unlinked it");
    shm.unlink().unwrap();
}

#[test]
fn rust_attaches_to_a_python_block() {
    let Some(py) = python() else { return };
    let script = format!(
        "{PY_PRELUDE}\
s = shared_memory.SharedMemory(create=True, size=300)\n\
s.buf[:11] = b'from python'\n\
print(s.name, flush=True)\n\
sys.stdin.readline()\n\
print(bytes(s.buf[50:59]).decode(), flush=True)\n\
s.close(); s.unlink()\n"
    );
    let mut child = Command::new(py)
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut name = String::new();
    out.read_line(&mut name).unwrap();
    let name = name.trim().to_string();
    assert!(name.starts_with("psm_"), "{name}");
    let shm = SharedMemory::open(&name).unwrap();
    assert!(shm.size() >= 300);
    let mut buf = [0u8; 11];
    shm.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"from python");
    shm.write_at(50, b"from rust").unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "from rust");
    assert!(child.wait().unwrap().success());
    assert!(!exists(&name), "python unlinked it");
}

#[test]
fn shareable_list_with_python_both_ways() {
    let Some(py) = python() else { return };
    // Rust makes, Python reads and writes.
    let sl = ShareableList::new(&[
        Item::Int(42),
        Item::Float(-1.25),
        Item::Bool(true),
        "text".into(),
        Item::Bytes(b"raw".to_vec()),
        Item::None,
    ])
    .unwrap();
    let script = format!(
        "{PY_PRELUDE}\
sl = shared_memory.ShareableList(name=sys.argv[1]); untrack(sl.shm)\n\
print(repr(list(sl)), sl.format)\n\
sl[0] = 'py'; sl[2] = 7; sl[5] = 3.5\n\
sl.shm.close()\n"
    );
    let out = run_python(py, &script, &[sl.name()]);
    assert_eq!(
        out,
        "[42, -1.25, True, 'text', b'raw', None] qdxxxxxxx?8s8sxxxxxx?x"
    );
    assert_eq!(
        sl.to_vec().unwrap(),
        vec![
            Item::Str("py".into()),
            Item::Float(-1.25),
            Item::Int(7),
            "text".into(),
            Item::Bytes(b"raw".to_vec()),
            Item::Float(3.5)
        ]
    );
    sl.shm().unlink().unwrap();

    // Python makes, Rust reads and writes, Python reads back.
    let script = format!(
        "{PY_PRELUDE}\
sl = shared_memory.ShareableList([1, 2.0, False, 'abc', b'xy', None, 'a longer string'])\n\
print(sl.shm.name, flush=True)\n\
sys.stdin.readline()\n\
print(repr(list(sl)), flush=True)\n\
sl.shm.close(); sl.shm.unlink()\n"
    );
    let mut child = Command::new(py)
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut name = String::new();
    out.read_line(&mut name).unwrap();
    let sl = ShareableList::open(name.trim()).unwrap();
    assert_eq!(
        sl.to_vec().unwrap(),
        vec![
            Item::Int(1),
            Item::Float(2.0),
            Item::Bool(false),
            "abc".into(),
            Item::Bytes(b"xy".to_vec()),
            Item::None,
            "a longer string".into()
        ]
    );
    sl.set(0, Item::Bool(true)).unwrap();
    sl.set(3, Item::Int(-3)).unwrap();
    sl.set(5, "rs".into()).unwrap();
    sl.set(6, Item::Bytes(b"bytes now".to_vec())).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "[True, 2.0, False, -3, b'xy', 'rs', b'bytes now']"
    );
    assert!(child.wait().unwrap().success());
}

fn child_creates(name: String, untracked: bool) -> String {
    let shm = if untracked {
        SharedMemory::create_untracked(Some(&name), 128).unwrap()
    } else {
        SharedMemory::create_named(&name, 128).unwrap()
    };
    shm.write_at(0, b"made by the child").unwrap();
    shm.name().to_string()
}

fn untracked_block_made_by_a_child_outlives_it(m: StartMethod) {
    let name = unique("untracked");
    let mut p = Process::builder()
        .start_method(m)
        .start(child_creates, (name.clone(), true))
        .unwrap();
    assert_eq!(p.join().unwrap(), name);
    // Give a (wrong) tracker time to act, then check the block is still there.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let shm = SharedMemory::open(&name).unwrap();
    let mut buf = [0u8; 17];
    shm.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"made by the child");
    // Adopt it: this program's tracker now owns the name; unlink unregisters.
    multiproc::shared::tracker::register(&name, multiproc::shared::tracker::SHARED_MEMORY).unwrap();
    shm.unlink().unwrap();
    assert!(!exists(&name));
}

fn child_edits_list(sl: ShareableList) -> Vec<String> {
    sl.set(0, Item::Int(sl.len() as i64)).unwrap();
    sl.set(1, "child".into()).unwrap();
    sl.to_vec()
        .unwrap()
        .iter()
        .map(|i| format!("{i:?}"))
        .collect()
}

fn shareable_list_reaches_children_as_an_argument(m: StartMethod) {
    let sl = ShareableList::new(&[Item::None, "parent".into()]).unwrap();
    let name = sl.name().to_string();
    let mut p = Process::builder()
        .start_method(m)
        .start(child_edits_list, (sl,))
        .unwrap();
    assert_eq!(
        p.join().unwrap(),
        vec!["Int(2)".to_string(), "Str(\"child\")".to_string()]
    );
    let sl = ShareableList::open(&name).unwrap();
    assert_eq!(
        sl.to_vec().unwrap(),
        vec![Item::Int(2), "child".into()],
        "{m:?}"
    );
    sl.shm().unlink().unwrap();
}
