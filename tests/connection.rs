//! Pipe, Connection, wait and descriptor passing, within a process and
//! across children of every start method.
multiproc::test_support!();

use multiproc::connection::{framing, wait, Connection, Pipe};
use multiproc::{Error, Process, StartMethod};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

#[macro_use]
mod common;

start_methods! {
    wait_on_connections_processes_and_fds,
    connection_as_process_argument,
    simplex_ends_to_child_and_large_messages,
    connection_sent_over_connection,
}

fn echo(c: Connection) -> u32 {
    let mut n = 0;
    while let Ok(v) = c.recv::<Option<String>>() {
        match v {
            Some(s) => c.send(&Some(s)).expect("echo send"),
            None => break,
        }
        n += 1;
    }
    n
}

fn sink_bytes(r: Connection, ack: Connection) -> u64 {
    let mut total = 0u64;
    let mut buf = Vec::new();
    loop {
        let n = r.recv_bytes_into(&mut buf).expect("recv_bytes_into");
        if n == 0 {
            break;
        }
        assert!(buf.iter().all(|&b| b == 0xa5));
        total += n as u64;
    }
    ack.send(&total).expect("ack");
    total
}

#[test]
fn duplex_typed_and_raw_round_trip() {
    let (a, b) = Pipe::duplex().unwrap();
    a.send(&(7u64, "seven".to_string(), vec![1.5f64])).unwrap();
    assert_eq!(
        b.recv::<(u64, String, Vec<f64>)>().unwrap(),
        (7, "seven".into(), vec![1.5])
    );
    for size in [0usize, 1, 100, 16 * 1024 - 4, 16 * 1024, 100_000, 3 << 20] {
        let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        // Both directions at once: one thread sends while the other receives.
        std::thread::scope(|s| {
            s.spawn(|| b.send_bytes(&msg).unwrap());
            s.spawn(|| a.send_bytes(&msg).unwrap());
            assert_eq!(a.recv_bytes().unwrap(), msg, "size {size}");
            assert_eq!(b.recv_bytes().unwrap(), msg, "size {size}");
        });
    }
}

#[test]
fn many_small_messages_back_to_back() {
    let (a, b) = Pipe::duplex().unwrap();
    let t = std::thread::spawn(move || {
        for i in 0..20_000u32 {
            a.send(&i).unwrap();
        }
    });
    for i in 0..20_000u32 {
        assert_eq!(b.recv::<u32>().unwrap(), i);
    }
    t.join().unwrap();
    assert!(matches!(b.recv::<u32>(), Err(Error::Closed)));
}

#[test]
fn simplex_directions() {
    let (r, w) = Pipe::simplex().unwrap();
    assert!(r.readable() && !r.writable());
    assert!(w.writable() && !w.readable());
    w.send_bytes(b"one way").unwrap();
    assert_eq!(r.recv_bytes().unwrap(), b"one way");
    assert!(matches!(r.send_bytes(b"x"), Err(Error::Unsupported { .. })));
    assert!(matches!(w.recv_bytes(), Err(Error::Unsupported { .. })));
    drop(w);
    assert!(matches!(r.recv_bytes(), Err(Error::Closed)));
}

#[test]
fn recv_after_peer_closed_is_closed_never_a_hang() {
    let (a, b) = Pipe::duplex().unwrap();
    b.send(&1u8).unwrap();
    b.close();
    assert_eq!(a.recv::<u8>().unwrap(), 1);
    assert!(matches!(a.recv::<u8>(), Err(Error::Closed)));
    assert!(matches!(a.recv::<u8>(), Err(Error::Closed)));
    // Sending to a closed peer is an error, not SIGPIPE.
    assert!(matches!(a.send(&1u8), Err(Error::Closed)));
}

#[test]
fn poll_and_timeouts() {
    let (a, b) = Pipe::duplex().unwrap();
    assert!(!a.poll(Some(Duration::ZERO)).unwrap());
    assert!(matches!(
        a.recv_timeout::<u8>(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    b.send(&5u8).unwrap();
    b.send(&6u8).unwrap();
    assert!(a.poll(Some(LONG)).unwrap());
    assert_eq!(a.recv::<u8>().unwrap(), 5);
    // The second message may already sit in the read-ahead buffer: still ready.
    assert!(a.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(a.recv_timeout::<u8>(LONG).unwrap(), 6);
    // A half-sent frame is not a message: timeout, then the rest completes it.
    let (raw, conn) = Pipe::duplex().unwrap();
    raw.send_bytes(b"").unwrap(); // a valid empty message first
    assert_eq!(conn.recv_bytes().unwrap(), b"");
    multiproc_test_write_raw(&raw, &[0, 0, 0, 3, b'a']);
    assert!(matches!(
        conn.recv_bytes_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    multiproc_test_write_raw(&raw, b"bc");
    assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"abc");
    // Same for a large message (read straight into its own buffer).
    let msg: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let (h, n) = framing::encode_header(msg.len() as u64);
    multiproc_test_write_raw(&raw, &h[..n]);
    multiproc_test_write_raw(&raw, &msg[..50_000]);
    assert!(matches!(
        conn.recv_bytes_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    multiproc_test_write_raw(&raw, &msg[50_000..70_000]);
    assert!(matches!(
        conn.recv_bytes_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    multiproc_test_write_raw(&raw, &msg[70_000..]);
    raw.send(&9u8).unwrap();
    assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), msg);
    assert_eq!(conn.recv::<u8>().unwrap(), 9);
}

/// Writes raw bytes (no framing) to a connection's socket.
fn multiproc_test_write_raw(c: &Connection, bytes: &[u8]) {
    use std::io::Write;
    use std::os::fd::AsFd;
    let fd = c.as_fd().try_clone_to_owned().unwrap();
    std::fs::File::from(fd).write_all(bytes).unwrap();
}

#[test]
fn oversized_length_is_refused_before_allocation() {
    let (raw, conn) = Pipe::duplex().unwrap();
    // -1 then 2^62: would be 4 EiB.
    let (h, n) = framing::encode_header(1 << 62);
    multiproc_test_write_raw(&raw, &h[..n]);
    match conn.recv_bytes() {
        Err(Error::MessageTooLarge { len, max }) => {
            assert_eq!(len, 1 << 62);
            assert_eq!(max, framing::DEFAULT_MAX_MESSAGE_SIZE);
        }
        other => panic!("{other:?}"),
    }
    let (raw, conn) = Pipe::duplex().unwrap();
    conn.set_max_message_size(1000);
    raw.send_bytes(&[0u8; 1000]).unwrap();
    raw.send_bytes(&[0u8; 1001]).unwrap();
    assert_eq!(conn.recv_bytes().unwrap().len(), 1000);
    assert!(matches!(
        conn.recv_bytes(),
        Err(Error::MessageTooLarge {
            len: 1001,
            max: 1000
        })
    ));
    // The stream position is lost: further reads refuse instead of misreading.
    assert!(conn.recv_bytes().is_err());
}

#[test]
fn truncated_frame_is_an_error() {
    for bytes in [
        &[0u8, 0][..],
        &[0, 0, 0, 10, 1, 2, 3],
        &[0xff, 0xff, 0xff, 0xff, 0, 0],
    ] {
        let (raw, conn) = Pipe::duplex().unwrap();
        multiproc_test_write_raw(&raw, bytes);
        drop(raw);
        match conn.recv_bytes() {
            Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
            other => panic!("{bytes:?}: {other:?}"),
        }
    }
    // A large message cut short.
    let (raw, conn) = Pipe::duplex().unwrap();
    let (h, n) = framing::encode_header(1 << 20);
    multiproc_test_write_raw(&raw, &h[..n]);
    multiproc_test_write_raw(&raw, &[0u8; 100_000]);
    drop(raw);
    assert!(matches!(conn.recv_bytes(), Err(Error::Io(_))));
    // A negative length other than -1.
    let (raw, conn) = Pipe::duplex().unwrap();
    multiproc_test_write_raw(&raw, &[0x80, 0, 0, 0]);
    assert!(matches!(conn.recv_bytes(), Err(Error::Codec(_))));
}

fn wait_on_connections_processes_and_fds(m: StartMethod) {
    let (a, b) = Pipe::duplex().unwrap();
    let (c, d) = Pipe::duplex().unwrap();
    assert!(wait(&[&a, &c], Some(Duration::from_millis(10)))
        .unwrap()
        .is_empty());
    d.send(&1u8).unwrap();
    assert_eq!(wait(&[&a, &c], Some(LONG)).unwrap(), vec![1]);
    b.send(&1u8).unwrap();
    assert_eq!(wait(&[&a, &c], Some(LONG)).unwrap(), vec![0, 1]);
    a.recv::<u8>().unwrap();
    c.recv::<u8>().unwrap();
    // A raw descriptor and a process sentinel.
    let (r, w) = rustix::pipe::pipe().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(echo, (b,))
        .unwrap();
    assert!(wait(&[&r, &p, &c], Some(Duration::from_millis(10)))
        .unwrap()
        .is_empty());
    rustix::io::write(&w, b"x").unwrap(); // (a forked child holds a copy of `w`: no EOF)
    assert!(wait(&[&r, &p, &c], Some(LONG)).unwrap().contains(&0));
    a.send(&None::<String>).unwrap();
    let ready = wait(&[&p], Some(LONG)).unwrap();
    assert_eq!(ready, vec![0]);
    assert_eq!(p.join().unwrap(), 0);
}

fn connection_as_process_argument(m: StartMethod) {
    let (a, b) = Pipe::duplex().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(echo, (b,))
        .unwrap();
    for i in 0..100 {
        a.send(&Some(format!("msg {i}"))).unwrap();
        assert_eq!(
            a.recv_timeout::<Option<String>>(LONG).unwrap(),
            Some(format!("msg {i}"))
        );
    }
    a.send(&None::<String>).unwrap();
    assert_eq!(p.join().unwrap(), 100, "{m:?}");
}

fn simplex_ends_to_child_and_large_messages(m: StartMethod) {
    let (r, w) = Pipe::simplex().unwrap();
    let (ack_r, ack_w) = Pipe::simplex().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(sink_bytes, (r, ack_w))
        .unwrap();
    // The parent's copies of the child's ends must go, or EOF never comes.
    let payload = vec![0xa5u8; 1 << 20];
    for _ in 0..8 {
        w.send_bytes(&payload).unwrap();
        w.send_bytes(&payload[..65536]).unwrap();
    }
    w.send_bytes(b"").unwrap();
    assert_eq!(
        ack_r.recv_timeout::<u64>(LONG).unwrap(),
        8 * ((1 << 20) + 65536)
    );
    assert_eq!(p.join().unwrap(), 8 * ((1 << 20) + 65536));
}

fn relay(carrier: Connection) -> String {
    let c = carrier.recv_connection().expect("recv_connection");
    c.send(&"via passed descriptor".to_string()).expect("send");
    carrier.recv::<String>().expect("recv after")
}

fn connection_sent_over_connection(m: StartMethod) {
    // In-process first.
    let (x, y) = Pipe::duplex().unwrap();
    let (inner_a, inner_b) = Pipe::duplex().unwrap();
    x.send(&"before".to_string()).unwrap();
    x.send_connection(&inner_b).unwrap();
    x.send(&"after".to_string()).unwrap();
    drop(inner_b);
    assert_eq!(y.recv::<String>().unwrap(), "before");
    let got = y.recv_connection().unwrap();
    assert_eq!(y.recv::<String>().unwrap(), "after");
    got.send(&3u8).unwrap();
    assert_eq!(inner_a.recv::<u8>().unwrap(), 3);
    // A plain message is not a connection.
    x.send(&1u8).unwrap();
    assert!(matches!(y.recv_connection(), Err(Error::Codec(_))));
    // Simplex pipes cannot carry descriptors.
    let (_r, w) = Pipe::simplex().unwrap();
    assert!(matches!(
        w.send_connection(&got),
        Err(Error::Unsupported { .. })
    ));

    // To a child, which received only the carrier at start.
    let (carrier_parent, carrier_child) = Pipe::duplex().unwrap();
    let mut p = Process::builder()
        .start_method(m)
        .start(relay, (carrier_child,))
        .unwrap();
    let (mine, theirs) = Pipe::duplex().unwrap();
    carrier_parent.send_connection(&theirs).unwrap();
    drop(theirs);
    assert_eq!(
        mine.recv_timeout::<String>(LONG).unwrap(),
        "via passed descriptor"
    );
    carrier_parent.send(&"bye".to_string()).unwrap();
    assert_eq!(p.join().unwrap(), "bye");
}

#[test]
fn handoff_refuses_unread_read_ahead() {
    let (a, b) = Pipe::duplex().unwrap();
    a.send(&1u8).unwrap();
    a.send(&2u8).unwrap();
    // Both messages are in the socket before the first recv: one read takes both.
    assert_eq!(b.recv::<u8>().unwrap(), 1);
    let b = {
        let b = (b,);
        assert!(matches!(
            multiproc::handoff::round_trip(&b),
            Err(Error::InvalidState(_))
        ));
        b.0
    };
    let (x, _y) = Pipe::duplex().unwrap();
    assert!(matches!(x.send_connection(&b), Err(Error::InvalidState(_))));
    // Nothing was lost; once drained, the connection travels.
    assert_eq!(b.recv::<u8>().unwrap(), 2);
    let (b2,) = multiproc::handoff::round_trip(&(b,)).unwrap();
    a.send(&3u8).unwrap();
    assert_eq!(b2.recv::<u8>().unwrap(), 3);
}
