//! Interop with real CPython `multiprocessing.connection`: a Python `Client`
//! against a multiproc `Listener`, a multiproc `Client` against a Python
//! `Listener`, both authenticated, with raw bytes of several sizes and (with
//! the `pickle` feature) typed values. Skips, saying why, when `python3` is
//! missing.

use multiproc::connection::{Address, Client, Listener};
use multiproc::Error;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const KEY: &[u8] = b"interop secret";

fn python_available() -> bool {
    match Command::new("python3")
        .arg("-c")
        .arg("import multiprocessing.connection")
        .status()
    {
        Ok(s) if s.success() => true,
        _ => {
            eprintln!("SKIPPED: python3 with multiprocessing.connection is not available");
            false
        }
    }
}

/// A python3 child killed on drop, so a failed test leaves none behind.
struct Py(Option<Child>);

impl Drop for Py {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `python3 -c script args...`; its stdout is returned for reading.
fn python(script: &str, args: &[&str]) -> (Py, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    (Py(Some(child)), out)
}

/// Waits for the child, with a deadline turning a hang into a failure.
fn finish(mut py: Py) -> std::process::ExitStatus {
    let child = py.0.as_mut().expect("child");
    for _ in 0..600 {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("python3 did not finish");
}

fn python_address(addr: &Address) -> String {
    match addr {
        Address::Tcp(a) => format!("('{}', {})", a.ip(), a.port()),
        Address::Abstract(n) => format!("'\\0{}'", String::from_utf8_lossy(n)),
        Address::Unix(p) => format!("{:?}", p.display().to_string()),
    }
}

const SIZES: [usize; 4] = [0, 1, 1000, 1 << 20];

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 7 % 256) as u8).collect()
}

const PY_PAYLOAD: &str = "def payload(n): return bytes((i * 7) % 256 for i in range(n))\n";

/// Python client: receives each size, checks it, echoes it back reversed.
const PY_CLIENT: &str = r#"
import sys
from multiprocessing.connection import Client
addr = eval(sys.argv[1])
c = Client(addr, authkey=sys.argv[2].encode())
for n in (0, 1, 1000, 1 << 20):
    m = c.recv_bytes()
    assert m == payload(n), (n, len(m))
    c.send_bytes(m[::-1])
c.send_bytes(b"done")
c.close()
"#;

fn serve_python_client(addr: &Address) {
    let listener = Listener::bind(addr, Some(KEY)).unwrap();
    let script = format!("{PY_PAYLOAD}{PY_CLIENT}");
    let (child, _out) = python(
        &script,
        &[&python_address(listener.address()), "interop secret"],
    );
    let conn = listener.accept().unwrap();
    for n in SIZES {
        let p = payload(n);
        conn.send_bytes(&p).unwrap();
        let back = conn.recv_bytes_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(
            back,
            p.iter().rev().copied().collect::<Vec<u8>>(),
            "size {n}"
        );
    }
    assert_eq!(
        conn.recv_bytes_timeout(Duration::from_secs(60)).unwrap(),
        b"done"
    );
    assert!(finish(child).success());
}

#[test]
fn python_client_to_multiproc_listener_tcp_and_unix() {
    if !python_available() {
        return;
    }
    serve_python_client(&Address::tcp("127.0.0.1:0").unwrap());
    serve_python_client(&Address::arbitrary());
    let dir = std::env::temp_dir().join(format!("multiproc-conn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("l.sock");
    serve_python_client(&Address::unix(&path));
    assert!(!path.exists(), "the listener removes its socket file");
    let _ = std::fs::remove_dir(&dir);
}

/// Python listener: prints its address, accepts one client, sends each size,
/// expects it back reversed.
const PY_LISTENER: &str = r#"
import sys
from multiprocessing.connection import Listener
fam = sys.argv[1]
addr = ('127.0.0.1', 0) if fam == 'tcp' else '\0multiproc-py-' + sys.argv[3]
with Listener(addr, authkey=sys.argv[2].encode()) as l:
    a = l.address
    if fam != 'tcp':
        a = a[1:].decode() if isinstance(a, bytes) else a[1:]
    print(repr(a) if fam == 'tcp' else a, flush=True)
    try:
        c = l.accept()
    except Exception as e:
        print('ERR', type(e).__name__, flush=True)
        sys.exit(3)
    for n in (0, 1, 1000, 1 << 20):
        c.send_bytes(payload(n))
        m = c.recv_bytes()
        assert m == payload(n)[::-1], n
    c.close()
"#;

fn read_line(out: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("read python stdout");
    line.trim().to_string()
}

fn parse_py_address(fam: &str, line: &str) -> Address {
    if fam == "tcp" {
        // ('127.0.0.1', 40123)
        let inner = line.trim_matches(|c| c == '(' || c == ')');
        let (host, port) = inner.split_once(", ").expect("tuple");
        Address::tcp(format!("{}:{}", host.trim_matches('\''), port)).unwrap()
    } else {
        Address::abstract_name(line.as_bytes().to_vec())
    }
}

#[test]
fn multiproc_client_to_python_listener() {
    if !python_available() {
        return;
    }
    for fam in ["tcp", "abstract"] {
        let script = format!("{PY_PAYLOAD}{PY_LISTENER}");
        let tag = format!("{}-{fam}", std::process::id());
        let (child, mut out) = python(&script, &[fam, "interop secret", &tag]);
        let addr = parse_py_address(fam, &read_line(&mut out));
        let conn = Client::builder()
            .authkey(KEY)
            .handshake_timeout(Some(Duration::from_secs(60)))
            .connect(&addr)
            .unwrap();
        for n in SIZES {
            let m = conn.recv_bytes_timeout(Duration::from_secs(60)).unwrap();
            assert_eq!(m, payload(n), "{fam} size {n}");
            conn.send_bytes(&m.iter().rev().copied().collect::<Vec<u8>>())
                .unwrap();
        }
        assert!(matches!(
            conn.recv_bytes_timeout(Duration::from_secs(60)),
            Err(Error::Closed)
        ));
        assert!(finish(child).success(), "{fam}");
    }
}

#[test]
fn wrong_authkey_against_python_fails_on_both_sides() {
    if !python_available() {
        return;
    }
    // multiproc client, Python listener (3.11 form, HMAC-MD5).
    let script = format!("{PY_PAYLOAD}{PY_LISTENER}");
    let tag = format!("{}-wrong", std::process::id());
    let (child, mut out) = python(&script, &["abstract", "the right key", &tag]);
    let addr = parse_py_address("abstract", &read_line(&mut out));
    match Client::connect(&addr, Some(b"a wrong key")) {
        Err(Error::AuthenticationFailed(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(read_line(&mut out), "ERR AuthenticationError");
    assert_eq!(finish(child).code(), Some(3));

    // Python client, multiproc listener (3.12 form, answered by 3.11 with MD5).
    let listener = Listener::bind(&Address::arbitrary(), Some(b"the right key")).unwrap();
    let py = r#"
import sys
from multiprocessing.connection import Client, AuthenticationError
try:
    Client(eval(sys.argv[1]), authkey=b'a wrong key')
except AuthenticationError:
    sys.exit(7)
"#;
    let (child, _out) = python(py, &[&python_address(listener.address())]);
    match listener.accept() {
        Err(Error::AuthenticationFailed(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(finish(child).code(), Some(7));
}

#[cfg(feature = "pickle")]
#[test]
fn pickle_values_round_trip_with_python() {
    use std::collections::BTreeMap;
    if !python_available() {
        return;
    }
    let listener = Listener::bind(&Address::arbitrary(), Some(KEY)).unwrap();
    // Python receives each object, checks it, sends back its own.
    let py = r#"
import sys
from multiprocessing.connection import Client
c = Client(eval(sys.argv[1]), authkey=b'interop secret')
assert c.recv() == 42
assert c.recv() == "héllo"
assert c.recv() == [1, 2, 3]
assert c.recv() == {"a": 1, "b": 2}
assert c.recv() == (7, "seven", [1.5])
c.send(-5)
c.send("wörld")
c.send([10, 20])
c.send({"x": 9})
c.send((1, "one", 2.5))
c.send([(1, "a"), (2, "b")])
"#;
    let (child, _out) = python(py, &[&python_address(listener.address())]);
    let c = listener.accept().unwrap();
    c.send_pickle(&42i64).unwrap();
    c.send_pickle("héllo").unwrap();
    c.send_pickle(&vec![1i64, 2, 3]).unwrap();
    c.send_pickle(&BTreeMap::from([
        ("a".to_string(), 1i64),
        ("b".to_string(), 2),
    ]))
    .unwrap();
    c.send_pickle(&(7i64, "seven".to_string(), vec![1.5f64]))
        .unwrap();
    assert_eq!(c.recv_pickle::<i64>().unwrap(), -5);
    assert_eq!(c.recv_pickle::<String>().unwrap(), "wörld");
    assert_eq!(c.recv_pickle::<Vec<i64>>().unwrap(), vec![10, 20]);
    assert_eq!(
        c.recv_pickle::<BTreeMap<String, i64>>().unwrap(),
        BTreeMap::from([("x".to_string(), 9)])
    );
    assert_eq!(
        c.recv_pickle::<(i64, String, f64)>().unwrap(),
        (1, "one".to_string(), 2.5)
    );
    assert_eq!(
        c.recv_pickle::<Vec<(i64, String)>>().unwrap(),
        vec![(1, "a".to_string()), (2, "b".to_string())]
    );
    assert!(finish(child).success());
}
