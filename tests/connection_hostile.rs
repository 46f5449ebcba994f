//! Hostile peers: wrong keys, garbage, truncated frames, stalls, oversized
//! lengths; and property tests feeding random and truncated byte streams to
//! the frame decoder and to both halves of the handshake (no panic, no hang).

use multiproc::connection::{framing, Address, Client, Connection, Listener, Pipe};
use multiproc::Error;
use proptest::prelude::*;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

const KEY: &[u8] = b"k3y";

fn raw_connect(addr: &Address) -> UnixStream {
    match addr {
        Address::Abstract(n) => {
            UnixStream::connect_addr(&SocketAddr::from_abstract_name(n).unwrap()).unwrap()
        }
        other => panic!("{other:?}"),
    }
}

fn listener(timeout: Duration) -> Listener {
    Listener::builder()
        .authkey(KEY)
        .handshake_timeout(Some(timeout))
        .bind(&Address::arbitrary())
        .unwrap()
}

/// After a failed accept, a well-behaved client is still served.
fn still_serves(l: &Listener) {
    let addr = l.address().clone();
    let t = std::thread::spawn(move || {
        let c = Client::connect(&addr, Some(KEY)).unwrap();
        c.recv::<u32>().unwrap()
    });
    let c = l.accept().unwrap();
    c.send(&99u32).unwrap();
    assert_eq!(t.join().unwrap(), 99);
}

#[test]
fn wrong_authkey_fails_on_both_sides_and_closes() {
    let l = listener(Duration::from_secs(30));
    let addr = l.address().clone();
    let t = std::thread::spawn(move || Client::connect(&addr, Some(b"not the key")));
    assert!(matches!(l.accept(), Err(Error::AuthenticationFailed(_))));
    assert!(matches!(
        t.join().unwrap(),
        Err(Error::AuthenticationFailed(_))
    ));
    still_serves(&l);
    // A client with a key against a server that checks another: same, the
    // other way round (the client verifies the server too).
    let l2 = listener(Duration::from_secs(30));
    let addr = l2.address().clone();
    let t = std::thread::spawn(move || Client::connect(&addr, Some(KEY)));
    drop(l2.accept());
    assert!(t.join().unwrap().is_ok());
}

#[test]
fn garbage_instead_of_handshake() {
    let l = listener(Duration::from_secs(30));
    let mut s = raw_connect(l.address());
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(matches!(l.accept(), Err(Error::AuthenticationFailed(_))));
    drop(s);
    // A well-framed but wrong answer, then a frame that is not a digest.
    let mut s = raw_connect(l.address());
    let t = std::thread::spawn(move || {
        let mut challenge = [0u8; 4 + 11 + 8 + 40];
        s.read_exact(&mut challenge).unwrap();
        assert_eq!(&challenge[4..23], b"#CHALLENGE#{sha256}");
        s.write_all(&[0, 0, 0, 3, b'a', b'b', b'c']).unwrap();
        // The verdict: #FAILURE#.
        let mut verdict = [0u8; 13];
        s.read_exact(&mut verdict).unwrap();
        assert_eq!(&verdict[4..], b"#FAILURE#");
    });
    assert!(matches!(l.accept(), Err(Error::AuthenticationFailed(_))));
    t.join().unwrap();
    still_serves(&l);
}

#[test]
fn peer_closing_mid_frame_in_handshake() {
    let l = listener(Duration::from_secs(30));
    let mut s = raw_connect(l.address());
    s.write_all(&[0, 0, 0, 16, 1, 2, 3]).unwrap();
    drop(s);
    let e = l.accept().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Io(_) | Error::AuthenticationFailed(_) | Error::Closed
        ),
        "{e:?}"
    );
    still_serves(&l);
}

#[test]
fn stalled_client_times_out_and_listener_keeps_serving() {
    let l = listener(Duration::from_millis(200));
    let s = raw_connect(l.address());
    assert!(matches!(l.accept(), Err(Error::Timeout)));
    drop(s);
    // A peer that sends half a frame and stalls.
    let mut s = raw_connect(l.address());
    s.write_all(&[0, 0, 0, 16, 1]).unwrap();
    assert!(matches!(l.accept(), Err(Error::Timeout)));
    drop(s);
    still_serves(&l);
}

/// A fake server on a fresh abstract address; `serve` runs on its one client.
fn fake_server(serve: fn(UnixStream)) -> (Address, std::thread::JoinHandle<()>) {
    let Address::Abstract(name) = Address::arbitrary() else {
        unreachable!()
    };
    let l = UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        serve(s)
    });
    (Address::Abstract(name), t)
}

#[test]
fn client_against_hostile_servers() {
    // Garbage.
    let (addr, t) = fake_server(|mut s| {
        let _ = s.write_all(&[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
    });
    assert!(matches!(
        Client::connect(&addr, Some(KEY)),
        Err(Error::AuthenticationFailed(_))
    ));
    t.join().unwrap();
    // A challenge too short to be one.
    let (addr, t) = fake_server(|mut s| {
        let _ = s.write_all(&[0, 0, 0, 12]);
        let _ = s.write_all(b"#CHALLENGE#x");
    });
    assert!(matches!(
        Client::connect(&addr, Some(KEY)),
        Err(Error::AuthenticationFailed(_))
    ));
    t.join().unwrap();
    // A stall: the client's own handshake timeout ends it.
    let (addr, t) = fake_server(|s| {
        let mut buf = [0u8; 1];
        let _ = (&s).read(&mut buf); // until the client gives up
    });
    let r = Client::builder()
        .authkey(KEY)
        .handshake_timeout(Some(Duration::from_millis(200)))
        .connect(&addr);
    assert!(matches!(r, Err(Error::Timeout)));
    t.join().unwrap();
    // An oversized handshake message is refused without reading it.
    let (addr, t) = fake_server(|mut s| {
        let _ = s.write_all(&[0x7f, 0xff, 0xff, 0xff]);
    });
    assert!(matches!(
        Client::connect(&addr, Some(KEY)),
        Err(Error::AuthenticationFailed(_))
    ));
    t.join().unwrap();
}

/// Reference decoder: the complete frames at the front of `bytes`.
fn reference_frames(bytes: &[u8], max: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(framing::Header::Complete {
        header_len,
        payload_len,
    }) = framing::parse_header(&bytes[pos..])
    {
        if payload_len > max || (bytes.len() - pos - header_len) < payload_len as usize {
            break;
        }
        let s = pos + header_len;
        out.push(bytes[s..s + payload_len as usize].to_vec());
        pos = s + payload_len as usize;
    }
    out
}

fn feed(bytes: &[u8], max: u64) -> (Vec<Vec<u8>>, Error) {
    let (raw, conn): (Connection, Connection) = Pipe::duplex().unwrap();
    conn.set_max_message_size(max);
    let t = {
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            use std::os::fd::AsFd;
            let fd = raw.as_fd().try_clone_to_owned().unwrap();
            drop(raw);
            let _ = std::fs::File::from(fd).write_all(&bytes);
        })
    };
    let mut got = Vec::new();
    let err = loop {
        match conn.recv_bytes_timeout(Duration::from_secs(30)) {
            Ok(m) => got.push(m),
            Err(e) => break e,
        }
    };
    t.join().unwrap();
    assert!(!matches!(err, Error::Timeout), "decoder hung");
    (got, err)
}

fn frames_then_noise() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
        prop::collection::vec(any::<u8>(), 0..40),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(frames, noise, cut, truncate)| {
            let mut v = Vec::new();
            for f in frames {
                let (h, n) = framing::encode_header(f.len() as u64);
                v.extend_from_slice(&h[..n]);
                v.extend_from_slice(&f);
            }
            v.extend_from_slice(&noise);
            if truncate && !v.is_empty() {
                v.truncate(cut.index(v.len()));
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn frame_decoder_matches_reference_on_random_streams(bytes in frames_then_noise(), max in 0u64..2000) {
        let (got, err) = feed(&bytes, max);
        let expected = reference_frames(&bytes, max);
        prop_assert_eq!(&got, &expected);
        // What ends the stream: a clean end exactly after the last frame, else an error.
        let consumed: usize = expected.iter().map(|f| f.len() + 4).sum();
        if consumed == bytes.len() {
            prop_assert!(matches!(err, Error::Closed), "{:?}", err);
        } else {
            prop_assert!(!matches!(err, Error::Closed), "{:?}", err);
        }
    }

    #[test]
    fn listener_handshake_survives_random_clients(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let l = listener(Duration::from_secs(20));
        let mut s = raw_connect(l.address());
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(Shutdown::Write);
        let r = l.accept();
        prop_assert!(r.is_err());
        prop_assert!(!matches!(r, Err(Error::Timeout)));
    }

    #[test]
    fn client_handshake_survives_random_servers(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let Address::Abstract(name) = Address::arbitrary() else { unreachable!() };
        let l = UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let _ = s.write_all(&bytes);
            let _ = s.shutdown(Shutdown::Write);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        });
        let r = Client::builder()
            .authkey(KEY)
            .handshake_timeout(Some(Duration::from_secs(20)))
            .connect(&Address::Abstract(name));
        prop_assert!(r.is_err());
        prop_assert!(!matches!(r, Err(Error::Timeout)));
        drop(r);
        t.join().unwrap();
    }
}
