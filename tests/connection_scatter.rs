//! `recv_bytes_into` with a reused buffer: after a large message the next
//! read goes straight into the caller's buffer (a scatter read). Whatever
//! the sizes and however the bytes arrive, exactly the messages sent come
//! out, in order; bad lengths are errors, never a hang or an allocation.
//! (`recv_bytes` and typed `recv`: `connection_scatter_recv.rs`.)

mod scatter_frames;

use multiproc::connection::{Connection, Pipe};
use multiproc::Error;
use proptest::prelude::*;
use scatter_frames::{frame, long_frame, message, oversized_start, pair, payload, write_in_pieces};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Receives a large message into `buf`: the next receive into `buf` reads
/// straight into it.
fn prime(c: &Connection, w: &mut UnixStream, buf: &mut Vec<u8>) {
    let p = payload(40_000, 1);
    w.write_all(&frame(&p)).unwrap();
    assert_eq!(c.recv_bytes_into(buf).unwrap(), p.len());
    assert_eq!(*buf, p);
}

#[test]
fn small_messages_read_at_once_into_a_big_buffer_come_out_in_order() {
    let (c, mut w) = pair();
    let mut buf = Vec::with_capacity(65_536);
    prime(&c, &mut w, &mut buf);
    // More than the buffer holds, all in the socket before the read.
    let msgs: Vec<Vec<u8>> = (0..400).map(|i| payload(i % 500, i as u8)).collect();
    let bytes: Vec<u8> = msgs.iter().flat_map(|m| frame(m)).collect();
    assert!(bytes.len() > 65_536);
    w.write_all(&bytes).unwrap();
    for m in &msgs {
        assert_eq!(c.recv_bytes_into(&mut buf).unwrap(), m.len());
        assert_eq!(buf, *m);
    }
    prime(&c, &mut w, &mut buf);
    drop(w);
    assert!(matches!(c.recv_bytes_into(&mut buf), Err(Error::Closed)));
}

#[test]
fn a_large_message_then_small_ones_in_one_write() {
    let (c, mut w) = pair();
    // A buffer smaller than the next message: it grows to it.
    let mut buf = Vec::new();
    prime(&c, &mut w, &mut buf);
    let msgs = vec![
        payload(60_000, 2),
        payload(3, 3),
        payload(0, 0),
        payload(9_000, 4),
        payload(1, 5),
        payload(45_000, 6),
    ];
    let mut bytes = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        bytes.extend(if i % 2 == 0 { long_frame(m) } else { frame(m) });
    }
    let t = std::thread::spawn(move || {
        w.write_all(&bytes).unwrap();
        w
    });
    for m in &msgs {
        assert_eq!(c.recv_bytes_into(&mut buf).unwrap(), m.len());
        assert_eq!(buf, *m);
    }
    drop(t.join().unwrap());
    assert!(matches!(c.recv_bytes_into(&mut buf), Err(Error::Closed)));
}

#[test]
fn messages_written_a_few_bytes_at_a_time_arrive_intact() {
    let (c, mut w) = pair();
    let mut buf = Vec::new();
    prime(&c, &mut w, &mut buf);
    let msgs = vec![
        payload(9_000, 1),
        payload(2, 2),
        payload(0, 0),
        payload(12_000, 3),
        payload(8_500, 4),
        payload(70, 5),
    ];
    let mut bytes = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        bytes.extend(if i == 3 { long_frame(m) } else { frame(m) });
    }
    let t = std::thread::spawn(move || {
        // 1, 2, 3, 5 and 7 bytes per write: headers split every way.
        let mut at = 0;
        for n in [1, 2, 3, 5, 7].into_iter().cycle() {
            if at == bytes.len() {
                break;
            }
            let end = (at + n).min(bytes.len());
            w.write_all(&bytes[at..end]).unwrap();
            at = end;
            if at % 64 < 7 {
                std::thread::yield_now();
            }
        }
    });
    for m in &msgs {
        assert_eq!(c.recv_bytes_into(&mut buf).unwrap(), m.len());
        assert_eq!(buf, *m);
    }
    t.join().unwrap();
    assert!(matches!(c.recv_bytes_into(&mut buf), Err(Error::Closed)));
}

#[test]
fn a_message_cut_short_after_a_large_one_is_an_error_not_a_hang() {
    // Cut in the payload, in the long header, in the short header.
    let mut long_cut = (-1i32).to_be_bytes().to_vec();
    long_cut.extend_from_slice(&[0, 0, 0]);
    let mut payload_cut = frame(&payload(100_000, 7));
    payload_cut.truncate(50_000);
    for cut in [payload_cut, long_cut, vec![0, 0]] {
        let (c, mut w) = pair();
        let mut buf = Vec::new();
        prime(&c, &mut w, &mut buf);
        let t = std::thread::spawn(move || {
            w.write_all(&cut).unwrap();
        });
        let e = c.recv_bytes_into(&mut buf).unwrap_err();
        assert!(
            matches!(e, Error::Io(ref e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{e:?}"
        );
        t.join().unwrap();
    }
}

#[test]
fn an_oversized_length_is_refused_with_a_large_reused_buffer() {
    for long in [false, true] {
        let (c, mut w) = pair();
        c.set_max_message_size(100_000);
        let mut buf = Vec::with_capacity(1 << 20);
        prime(&c, &mut w, &mut buf);
        let cap = buf.capacity();
        assert!(cap >= 1 << 20, "the buffer was reused");
        let (bytes, want) = oversized_start(long);
        w.write_all(&bytes).unwrap();
        // Closed: a reader that accepted the length fails, not hangs.
        drop(w);
        let e = c.recv_bytes_into(&mut buf).unwrap_err();
        assert!(
            matches!(e, Error::MessageTooLarge { len, max: 100_000 } if len == want),
            "{e:?}"
        );
        // Nothing of the announced size was allocated.
        assert_eq!(buf.capacity(), cap);
    }
}

#[test]
fn a_descriptor_stays_with_its_message_between_large_ones() {
    let (a, b) = Pipe::duplex().unwrap();
    let (x, y) = Pipe::duplex().unwrap();
    let big = payload(20_000, 9);
    // All in the socket before the first read: the second large message's
    // last read takes the start of the descriptor's message with it.
    a.send_bytes(&big).unwrap();
    a.send_bytes(&big).unwrap();
    a.send_connection(&x).unwrap();
    a.send_bytes(&big).unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), big.len());
        assert_eq!(buf, big);
    }
    let x2 = b.recv_connection().unwrap();
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), big.len());
    assert_eq!(buf, big);
    y.send(&5u32).unwrap();
    assert_eq!(x2.recv_timeout::<u32>(Duration::from_secs(30)).unwrap(), 5);
}

#[test]
fn a_simplex_pipe_streams_large_and_small_messages() {
    let (r, w) = Pipe::simplex().unwrap();
    let msgs: Vec<Vec<u8>> = (0..60)
        .map(|i| payload([70_000, 9_000, 0, 5, 65_536][i % 5], i as u8))
        .collect();
    let sent = msgs.clone();
    let t = std::thread::spawn(move || {
        for m in &sent {
            w.send_bytes(m).unwrap();
        }
    });
    let mut buf = Vec::new();
    for m in &msgs {
        assert_eq!(r.recv_bytes_into(&mut buf).unwrap(), m.len());
        assert_eq!(buf, *m);
    }
    t.join().unwrap();
    assert!(matches!(r.recv_bytes_into(&mut buf), Err(Error::Closed)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random message sizes (both header forms), written in random pieces
    /// by another thread, received with `recv_bytes_into` into one reused
    /// buffer of random starting size: exactly the messages sent.
    #[test]
    fn random_messages_in_random_pieces_arrive_exactly(
        msgs in prop::collection::vec(message(), 1..12),
        pieces in prop::collection::vec(
            prop_oneof![1usize..16, 16usize..5_000, 5_000usize..120_000], 1..5),
        start_cap in prop_oneof![Just(0usize), 1usize..20_000, 20_000usize..200_000],
    ) {
        let (c, w) = pair();
        let msgs: Vec<(Vec<u8>, bool)> = msgs
            .iter()
            .enumerate()
            .map(|(i, &(n, long))| (payload(n, i as u8), long))
            .collect();
        let bytes: Vec<u8> = msgs
            .iter()
            .flat_map(|(m, long)| if *long { long_frame(m) } else { frame(m) })
            .collect();
        let t = write_in_pieces(w, bytes, pieces);
        let mut buf = Vec::with_capacity(start_cap);
        for (m, _) in &msgs {
            prop_assert_eq!(c.recv_bytes_into(&mut buf).unwrap(), m.len());
            prop_assert_eq!(&buf, m);
        }
        t.join().unwrap();
        prop_assert!(matches!(c.recv_bytes_into(&mut buf), Err(Error::Closed)));
    }
}
