//! Remote managers: CPython's "Using a remote manager" example as two
//! separate programs (`examples/manager_server.rs`,
//! `examples/manager_client.rs`) talking over TCP on loopback; a wrong key
//! is refused; a client killed mid-call harms no other client.
//!
//! Port of CPython's `_TestRemoteManager` (`Lib/test/_test_multiprocessing.py`,
//! PSF licence) plus the documentation example.

multiproc::test_support!();

mod common;
use multiproc::connection::Address;
use multiproc::manager::QueueProxy;
use multiproc::{Manager, Process, StartMethod};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// The example binaries, built next to this test binary's directory
/// (`target/<profile>/examples/`); built on demand if missing.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--example",
            "manager_server",
            "--example",
            "manager_client",
        ]);
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    assert!(path.exists(), "{} not built", path.display());
    path
}

struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(key: &str) -> Server {
    let mut child = Command::new(example("manager_server"))
        .args(["127.0.0.1:0", key])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected server output {line:?}"))
        .to_string();
    Server { child, address }
}

fn client(server: &Server, key: &str, args: &[&str]) -> std::process::Output {
    Command::new(example("manager_client"))
        .arg(&server.address)
        .arg(key)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_remote_manager_example_as_two_programs() {
    let mut server = start_server("abracadabra");
    let put = client(&server, "abracadabra", &["put", "hello"]);
    assert!(put.status.success(), "{put:?}");
    let get = client(&server, "abracadabra", &["get"]);
    assert!(get.status.success(), "{get:?}");
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "hello");

    // A wrong key is refused; the server goes on.
    let bad = client(&server, "not the key", &["put", "intruder"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("authentication failed"),
        "{bad:?}"
    );

    // This process can use the same queue, as any client.
    let m = Manager::connect(
        &Address::tcp(server.address.as_str()).unwrap(),
        b"abracadabra",
    )
    .unwrap();
    let q: QueueProxy<String> = m.lookup("get_queue").unwrap();
    assert!(q.empty().unwrap()); // the intruder put nothing
    q.put("from the test".into()).unwrap();
    let get = client(&server, "abracadabra", &["get"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "from the test");

    // Shutdown ends the server program cleanly.
    let stop = client(&server, "abracadabra", &["shutdown"]);
    assert!(stop.status.success(), "{stop:?}");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

fn remote_getter(address: String, key: Vec<u8>) {
    let m = Manager::connect(&Address::tcp(address.as_str()).unwrap(), &key).unwrap();
    let ready: QueueProxy<u32> = m.lookup("ready").unwrap();
    let jobs: QueueProxy<String> = m.lookup("jobs").unwrap();
    ready.put(1).unwrap();
    let _ = jobs.get(); // blocks until killed
    unreachable!("nobody puts a job before this process is killed");
}

#[test]
fn a_remote_client_killed_mid_call_harms_nobody() {
    // _TestRemoteManager.test_remote, plus a client killed while blocked.
    let server = Manager::builder()
        .address(Address::tcp("127.0.0.1:0").unwrap())
        .authkey(b"k")
        .serve()
        .unwrap();
    let local = server.manager().unwrap();
    let ready = local.queue::<u32>().unwrap();
    let jobs = local.queue::<String>().unwrap();
    local.publish("ready", &ready).unwrap();
    local.publish("jobs", &jobs).unwrap();
    let address = server.address().to_string();

    let mut victim = Process::builder()
        .start_method(StartMethod::Spawn)
        .start(remote_getter, (address.clone(), b"k".to_vec()))
        .unwrap();
    assert_eq!(ready.get_timeout(LONG).unwrap(), 1);
    // Give the victim's `get` time to reach the server (not needed for
    // the test to pass: it widens the window the test is about).
    std::thread::sleep(Duration::from_millis(100));
    victim.kill().unwrap();
    assert_eq!(victim.wait(Some(LONG)).unwrap(), Some(-9));

    // Items go to live clients, not to the dead one's abandoned call.
    let other = Manager::connect(&server.address(), b"k").unwrap();
    let q: QueueProxy<String> = other.lookup("jobs").unwrap();
    q.put("first".into()).unwrap();
    q.put("second".into()).unwrap();
    assert_eq!(jobs.get_timeout(LONG).unwrap(), "first");
    assert_eq!(q.get_timeout(LONG).unwrap(), "second");
    server.shutdown().unwrap();
}

#[test]
fn an_in_process_server_with_tcp_and_key() {
    // _TestRemoteManager.test_remote with the server in this process.
    let server = Manager::builder()
        .address(Address::tcp("127.0.0.1:0").unwrap())
        .authkey(b"key")
        .serve()
        .unwrap();
    let local = server.manager().unwrap();
    let ns = local.namespace().unwrap();
    local.publish("ns", &ns).unwrap();
    let remote = Manager::connect(&server.address(), b"key").unwrap();
    let ns2: multiproc::manager::NamespaceProxy = remote.lookup("ns").unwrap();
    ns2.set("x", &vec![1u8, 2, 3]).unwrap();
    assert_eq!(ns.get::<Vec<u8>>("x").unwrap(), Some(vec![1, 2, 3]));
    assert!(matches!(
        remote.lookup::<QueueProxy<u8>>("ns"),
        Err(multiproc::Error::Invalid(_))
    ));
    assert!(matches!(
        remote.lookup::<QueueProxy<u8>>("nothing"),
        Err(multiproc::Error::Remote(_))
    ));

    // _TestRemoteManager.test_remote: assorted values through a remote queue.
    type Item = (String, Option<u8>, bool, f64, Vec<u8>);
    let values: Vec<Item> = vec![
        (
            "hello world".into(),
            None,
            true,
            2.25,
            b"hall\xe5 v\xe4rld".to_vec(),
        ),
        ("hall\u{e5} v\u{e4}rld".into(), Some(7), false, -0.5, vec![]),
        (
            "\u{43f}\u{440}\u{438}\u{432}\u{456}\u{442} \u{441}\u{432}\u{456}\u{442}".into(),
            Some(0),
            true,
            0.0,
            vec![0; 3],
        ),
    ];
    let q: QueueProxy<Item> = local.queue().unwrap();
    local.publish("values", &q).unwrap();
    let rq: QueueProxy<Item> = remote.lookup("values").unwrap();
    for v in &values {
        rq.put(v.clone()).unwrap();
    }
    for v in &values {
        assert_eq!(&q.get().unwrap(), v);
    }
    server.shutdown().unwrap();
}

#[test]
fn an_in_process_server_on_a_unix_socket_ends_its_clients_calls_at_shutdown() {
    // Proxies on a Unix socket that share one CPU with the server talk over
    // pipes the server hands them; a shutdown must still end them: the next
    // call fails, it does not hang or get served by a thread left behind.
    common::pin_to_one_cpu();
    let address = Address::abstract_name(format!("multiproc-unix-stop-{}", std::process::id()));
    let server = Manager::builder()
        .address(address.clone())
        .authkey(b"key")
        .serve()
        .unwrap();
    let client = Manager::connect(&address, b"key").unwrap();
    let d = client.dict::<String, u32>().unwrap();
    d.insert("a".into(), 1).unwrap();
    assert_eq!(d.get(&"a".to_string()).unwrap(), Some(1));
    let (tx, rx) = std::sync::mpsc::channel();
    // The call runs on another thread so a hang fails the test instead of
    // stalling it.
    let caller = std::thread::spawn(move || {
        rx.recv().unwrap();
        let after = d.get(&"a".to_string());
        drop(d);
        after.is_err()
    });
    server.shutdown().unwrap();
    tx.send(()).unwrap();
    let deadline = std::time::Instant::now() + LONG;
    while !caller.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "a call after shutdown hangs"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(caller.join().unwrap(), "a call after shutdown was served");
}
