//! Byte payloads (`Vec<u8>` and its kin, which the codec moves whole) cross
//! pools and pipes intact, at the top of a value or nested in it, and a
//! damaged byte payload is an error, not a panic or a wrong value.
multiproc::test_support!();

use multiproc::connection::{Connection, Pipe};
use multiproc::pool::Pool;
use multiproc::{Error, Process};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// Sizes around the varint steps of the length prefix, and large ones.
const SIZES: [usize; 8] = [0, 1, 127, 128, 16_383, 16_384, 70_000, (1 << 20) + 3];

fn reversed(mut v: Vec<u8>) -> Vec<u8> {
    v.reverse();
    v
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Packet {
    id: u32,
    body: Vec<u8>,
    parts: Vec<Vec<u8>>,
    tail: Option<Box<[u8]>>,
    name: String,
}

fn bump(mut p: Packet) -> Packet {
    p.id += 1;
    p.body.push(p.id as u8);
    p.parts.reverse();
    p
}

#[allow(clippy::boxed_local)] // the point: a Box<[u8]> argument crossing the pool
fn concat(a: Vec<u8>, b: Box<[u8]>, sep: String) -> Vec<u8> {
    [&a[..], sep.as_bytes(), &b[..]].concat()
}

fn packet(i: usize) -> Packet {
    let n = SIZES[i % SIZES.len()];
    Packet {
        id: i as u32,
        body: payload(n, i as u8),
        parts: vec![payload(i, 1), vec![], payload(n / 3, 2)],
        tail: (i % 2 == 0).then(|| payload(i * 10, 3).into_boxed_slice()),
        name: format!("packet {i}"),
    }
}

#[test]
fn pool_tasks_take_and_return_byte_payloads() {
    let pool = Pool::new(2).expect("pool");
    let items: Vec<Vec<u8>> = SIZES.iter().map(|&n| payload(n, n as u8)).collect();
    let want: Vec<Vec<u8>> = items.iter().cloned().map(reversed).collect();
    assert_eq!(pool.map(reversed, items.clone()).expect("map"), want);
    assert_eq!(
        pool.map_chunked(reversed, items.clone(), 3).expect("map"),
        want
    );

    // Nested: struct fields, a Vec of them, an Option of a Box<[u8]>.
    let packets: Vec<Packet> = (0..12).map(packet).collect();
    let got = pool.map(bump, packets.clone()).expect("map");
    assert_eq!(got, packets.into_iter().map(bump).collect::<Vec<_>>());

    // In argument tuples (apply, starmap).
    let a = payload(300_000, 9);
    let b: Box<[u8]> = payload(5, 8).into();
    let joined = pool
        .apply(concat, (a.clone(), b.clone(), "--".to_string()))
        .expect("apply");
    assert_eq!(joined, concat(a.clone(), b.clone(), "--".into()));
    let many = pool
        .starmap(
            concat,
            SIZES.map(|n| (payload(n, 1), payload(n / 2, 2).into(), "|".to_string())),
        )
        .expect("starmap");
    for (got, n) in many.iter().zip(SIZES) {
        assert_eq!(
            got,
            &concat(payload(n, 1), payload(n / 2, 2).into(), "|".into())
        );
    }
}

fn echo_values(c: Connection) {
    while let Ok(v) = c.recv::<Option<Vec<u8>>>() {
        match v {
            Some(v) => {
                c.send(&v).expect("send bytes");
                c.send(&bump(Packet {
                    id: v.len() as u32,
                    body: v,
                    parts: vec![vec![1, 2]],
                    tail: None,
                    name: String::new(),
                }))
                .expect("send packet");
            }
            None => return,
        }
    }
}

#[test]
fn pipes_carry_byte_payloads_between_processes() {
    let (ours, theirs) = Pipe::duplex().expect("pipe");
    let mut child = Process::start(echo_values, (theirs,)).expect("child");
    for n in SIZES {
        let v = payload(n, 7);
        ours.send(&Some(v.clone())).expect("send");
        // Sent as Vec<u8> (large ones straight from the vector), received as
        // any of the byte containers.
        let back: Box<[u8]> = ours.recv_timeout(LONG).expect("recv bytes");
        assert_eq!(&back[..], &v[..]);
        let p: Packet = ours.recv_timeout(LONG).expect("recv packet");
        assert_eq!(p.id, n as u32 + 1);
        assert_eq!(&p.body[..n], &v[..]);
        assert_eq!(p.body.len(), n + 1);
    }
    // A borrowed slice encodes as a Vec<u8> does.
    let v = payload(200_000, 1);
    ours.send(&Some(&v[..])).expect("send slice");
    let back: serde_bytes::ByteBuf = ours.recv_timeout(LONG).expect("recv");
    assert_eq!(back.into_vec(), v);
    let _: Packet = ours.recv_timeout(LONG).expect("recv packet");
    ours.send(&None::<Vec<u8>>).expect("send end");
    child.join_timeout(LONG).expect("join");
}

#[test]
fn damaged_byte_payloads_are_errors() {
    let (a, b) = Pipe::duplex().expect("pipe");
    // The length prefix announces 1000 bytes; 10 follow.
    let mut msg = vec![0xe8, 0x07];
    msg.extend_from_slice(&[5; 10]);
    a.send_bytes(&msg).expect("send");
    assert!(matches!(b.recv::<Vec<u8>>(), Err(Error::Codec(_))));
    // A length far beyond the message (it is not allocated).
    a.send_bytes(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1])
        .expect("send");
    assert!(matches!(b.recv::<Box<[u8]>>(), Err(Error::Codec(_))));
    // Nested, in a struct.
    let mut good = multiproc::codec::encode(&packet(6)).expect("encode");
    good.truncate(good.len() - 3);
    a.send_bytes(&good).expect("send");
    assert!(matches!(b.recv::<Packet>(), Err(Error::Codec(_))));
    // The connection is still in step.
    a.send(&payload(100_000, 4)).expect("send");
    assert_eq!(b.recv::<Vec<u8>>().expect("recv"), payload(100_000, 4));
}
