//! `Listener`: handshakes run concurrently, so a silent or slow client never
//! delays a good one; failures still reach `accept`; `last_accepted`; and
//! `Address` printing and parsing.

use multiproc::connection::{Address, Client, Connection, Listener};
use multiproc::Error;
use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::mpsc;
use std::time::Duration;

const KEY: &[u8] = b"k3y";
/// Only to turn a hang into a failure.
const HANG: Duration = Duration::from_secs(60);

fn raw_connect(addr: &Address) -> UnixStream {
    match addr {
        Address::Abstract(n) => {
            UnixStream::connect_addr(&SocketAddr::from_abstract_name(n).unwrap()).unwrap()
        }
        other => panic!("{other:?}"),
    }
}

/// Accepts on another thread; the receiver gets each `accept` result.
fn acceptor(
    l: std::sync::Arc<Listener>,
    n: usize,
) -> mpsc::Receiver<multiproc::Result<Connection>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..n {
            if tx.send(l.accept()).is_err() {
                return;
            }
        }
    });
    rx
}

/// A client that connects and says nothing holds no one up: a good client
/// arriving after it is accepted and served while the silent one is still
/// pending (no handshake timeout at all, so only concurrency can get the
/// good one through). When the silent one finally hangs up, the next
/// `accept` reports its failure, and the one after serves again.
#[test]
fn a_silent_client_does_not_delay_a_good_one() {
    let l = std::sync::Arc::new(
        Listener::builder()
            .authkey(KEY)
            .handshake_timeout(None)
            .bind(&Address::arbitrary())
            .unwrap(),
    );
    let addr = l.address().clone();
    let silent = raw_connect(&addr);
    let rx = acceptor(l.clone(), 3);
    let a = addr.clone();
    let good = std::thread::spawn(move || {
        let c = Client::connect(&a, Some(KEY)).unwrap();
        c.send(&"hello").unwrap();
        c.recv::<u32>().unwrap()
    });
    let conn = rx
        .recv_timeout(HANG)
        .expect("the good client was held up by the silent one")
        .unwrap();
    assert_eq!(conn.recv::<String>().unwrap(), "hello");
    conn.send(&7u32).unwrap();
    assert_eq!(good.join().unwrap(), 7);
    // The silent client is still connected and pending.
    drop(silent);
    let e = rx.recv_timeout(HANG).expect("the failure reaches accept");
    assert!(
        matches!(
            e,
            Err(Error::AuthenticationFailed(_) | Error::Io(_) | Error::Closed)
        ),
        "{e:?}"
    );
    let a = addr.clone();
    let next = std::thread::spawn(move || Client::connect(&a, Some(KEY)).map(|_| ()));
    assert!(rx.recv_timeout(HANG).expect("next accept").is_ok());
    next.join().unwrap().unwrap();
}

/// Many slow clients, each sending half a frame and stalling, and good
/// clients among them: every good one is served while the slow ones wait.
#[test]
fn slow_clients_do_not_delay_good_ones() {
    let l = std::sync::Arc::new(
        Listener::builder()
            .authkey(KEY)
            .handshake_timeout(None)
            .bind(&Address::arbitrary())
            .unwrap(),
    );
    let addr = l.address().clone();
    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut s = raw_connect(&addr);
        s.write_all(&[0, 0, 0, 40, 1, 2]).unwrap();
        slow.push(s);
    }
    let rx = acceptor(l.clone(), 3);
    let goods: Vec<_> = (0..3u32)
        .map(|i| {
            let a = addr.clone();
            std::thread::spawn(move || {
                let c = Client::connect(&a, Some(KEY)).unwrap();
                c.send(&i).unwrap();
            })
        })
        .collect();
    let mut got = Vec::new();
    for _ in 0..3 {
        let c = rx
            .recv_timeout(HANG)
            .expect("a good client was held up")
            .unwrap();
        got.push(c.recv::<u32>().unwrap());
    }
    got.sort();
    assert_eq!(got, vec![0, 1, 2]);
    for g in goods {
        g.join().unwrap();
    }
    drop(slow);
}

/// A wrong key is still `accept`'s error (CPython's `AuthenticationError`),
/// and `last_accepted` names the client, over TCP.
#[test]
fn wrong_key_is_reported_and_last_accepted_names_the_client() {
    let l = Listener::builder()
        .authkey(KEY)
        .bind(&Address::tcp("127.0.0.1:0").unwrap())
        .unwrap();
    assert_eq!(l.last_accepted(), None);
    let addr = l.address().clone();
    let a = addr.clone();
    let bad = std::thread::spawn(move || Client::connect(&a, Some(b"other")).map(|_| ()));
    assert!(matches!(l.accept(), Err(Error::AuthenticationFailed(_))));
    assert!(bad.join().unwrap().is_err());
    let a = addr.clone();
    let good = std::thread::spawn(move || {
        let c = Client::connect(&a, Some(KEY)).unwrap();
        // The client's own address, as the server sees it.
        c.send(&"sent").unwrap();
        c.recv::<String>().unwrap()
    });
    let c = l.accept().unwrap();
    let peer = l.last_accepted().expect("a TCP client has an address");
    match &peer {
        Address::Tcp(a) => assert!(a.ip().is_loopback() && a.port() != 0, "{a}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.recv::<String>().unwrap(), "sent");
    c.send(&peer.to_string()).unwrap();
    let seen = good.join().unwrap();
    assert_eq!(seen.parse::<Address>().unwrap(), peer);
}

/// A listener without an authkey accepts at once, and an unnamed Unix
/// client has no address.
#[test]
fn no_authkey_and_unnamed_unix_client() {
    let l = Listener::bind(&Address::arbitrary(), None).unwrap();
    let addr = l.address().clone();
    let t = std::thread::spawn(move || Client::connect(&addr, None).unwrap().send(&5u8).unwrap());
    let c = l.accept().unwrap();
    assert_eq!(c.recv::<u8>().unwrap(), 5);
    assert_eq!(l.last_accepted(), None);
    t.join().unwrap();
}

/// `Address` prints and parses back, for the three forms.
#[test]
fn address_round_trips() {
    let tcp = Address::tcp("127.0.0.1:6000").unwrap();
    let path = Address::unix("/tmp/multiproc-test.sock");
    let abs = Address::abstract_name("multiproc-test");
    for (a, s) in [
        (&tcp, "127.0.0.1:6000"),
        (&path, "/tmp/multiproc-test.sock"),
        (&abs, "@multiproc-test"),
    ] {
        assert_eq!(a.to_string(), s);
        assert_eq!(&s.parse::<Address>().unwrap(), a);
    }
    // An arbitrary address prints without a NUL, and parses back.
    let arb = Address::arbitrary();
    assert!(!arb.to_string().contains('\0'));
    assert_eq!(arb.to_string().parse::<Address>().unwrap(), arb);
    // Python's spelling of an abstract name.
    assert_eq!("\0multiproc-test".parse::<Address>().unwrap(), abs);
}

/// Dropping a listener ends the handshakes it was running: their clients
/// see the connection close instead of waiting forever.
#[test]
fn dropping_the_listener_ends_pending_handshakes() {
    let l = std::sync::Arc::new(
        Listener::builder()
            .authkey(KEY)
            .handshake_timeout(None)
            .bind(&Address::arbitrary())
            .unwrap(),
    );
    let addr = l.address().clone();
    // A client that connects but never answers: its handshake stays pending.
    let a = addr.clone();
    let mut silent = raw_connect(&a);
    let rx = acceptor(l.clone(), 1);
    // A good client gets through, so the silent one's handshake has started.
    let good = std::thread::spawn(move || Client::connect(&a, Some(KEY)).map(|_| ()));
    rx.recv_timeout(HANG).unwrap().unwrap();
    good.join().unwrap().unwrap();
    drop(l);
    // The silent client reads the challenge, then the end of the stream.
    silent.set_read_timeout(Some(HANG)).unwrap();
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut silent, &mut all).expect("closed, not stalled");
}
