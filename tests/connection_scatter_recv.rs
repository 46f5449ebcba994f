//! `recv_bytes` and typed `recv` read large messages by scatter reads:
//! after a large message the next read goes straight into a buffer of its
//! size — a fresh vector (`recv_bytes`, trimmed to the message), the
//! connection's receive buffer (`recv`). Whatever the sizes and however
//! the bytes arrive, exactly the messages sent come out, in order; bad
//! lengths are errors, never a hang or an allocation of the announced size.
#![allow(unsafe_code)]

mod scatter_frames;

use multiproc::connection::{Connection, Pipe};
use multiproc::Error;
use proptest::prelude::*;
use scatter_frames::{frame, long_frame, message, oversized_start, pair, payload, write_in_pieces};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

/// The system allocator, noting the largest single request made by a
/// thread inside [`largest_allocation`].
struct Tracking;

thread_local! {
    static LARGEST: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|c| {
        if let Some(m) = c.get() {
            c.set(Some(m.max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; `note` only reads and writes a thread-local `Cell`
// (const-initialised, no destructor: it never allocates).
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// Runs `f`; returns its result and the largest allocation this thread
/// asked for meanwhile.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|c| c.set(Some(0)));
    let out = f();
    let m = LARGEST.with(|c| c.take()).unwrap_or(0);
    (out, m)
}

/// How a test message is sent and received.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Api {
    /// `send_bytes` / `recv_bytes`.
    Bytes,
    /// `send` / `recv` of a `Vec<u8>` (moved whole by the codec).
    TypedBytes,
    /// `send` / `recv` of a `(u32, String, Vec<u64>)` (decoded field by field).
    TypedTuple,
}

type Tuple = (u32, String, Vec<u64>);

fn tuple(len: usize, seed: u8) -> Tuple {
    let s: String = (0..len / 2)
        .map(|i| (b'a' + ((i as u8 ^ seed) % 26)) as char)
        .collect();
    (
        len as u32,
        s,
        (0..len as u64 / 16).map(|i| i * 7 + seed as u64).collect(),
    )
}

/// The frame payload of message (`api`, `len`, `seed`).
fn encoded(api: Api, len: usize, seed: u8) -> Vec<u8> {
    match api {
        Api::Bytes => payload(len, seed),
        Api::TypedBytes => multiproc::codec::encode(&payload(len, seed)).unwrap(),
        Api::TypedTuple => multiproc::codec::encode(&tuple(len, seed)).unwrap(),
    }
}

fn send(c: &Connection, api: Api, len: usize, seed: u8) {
    match api {
        Api::Bytes => c.send_bytes(&payload(len, seed)).unwrap(),
        Api::TypedBytes => c.send(&payload(len, seed)).unwrap(),
        Api::TypedTuple => c.send(&tuple(len, seed)).unwrap(),
    }
}

/// Receives message (`api`, `len`, `seed`) and checks it; a vector from
/// `recv_bytes` holds no more than its message.
fn expect(c: &Connection, api: Api, len: usize, seed: u8) {
    match api {
        Api::Bytes => {
            let v = c.recv_bytes().unwrap();
            assert_eq!(v, payload(len, seed), "message of {len} bytes");
            assert_eq!(v.capacity(), v.len(), "trimmed to its message");
        }
        Api::TypedBytes => assert_eq!(c.recv::<Vec<u8>>().unwrap(), payload(len, seed)),
        Api::TypedTuple => assert_eq!(c.recv::<Tuple>().unwrap(), tuple(len, seed)),
    }
}

/// Large messages in runs (64 KiB after 64 KiB), growing and shrinking,
/// small ones between, past the 16 KiB read-ahead and past 1 MiB.
const SIZES: [usize; 14] = [
    65_536, 65_536, 65_536, 100, 70_000, 65_536, 9_000, 0, 200_000, 65_536, 3, 40_000, 1_500_000,
    65_536,
];

/// Sends `msgs` from another thread over `w`, all at once or each only
/// when the receiver asks for it (`lockstep`: the reader then always
/// finds the read-ahead empty), and receives them on `r`.
fn stream(r: Connection, w: Connection, msgs: Vec<(Api, usize)>, lockstep: bool) {
    let (go, wait) = mpsc::channel::<()>();
    let sent = msgs.clone();
    let t = std::thread::spawn(move || {
        for (i, &(api, len)) in sent.iter().enumerate() {
            if lockstep && wait.recv().is_err() {
                return;
            }
            send(&w, api, len, i as u8);
        }
    });
    for (i, &(api, len)) in msgs.iter().enumerate() {
        if lockstep {
            go.send(()).unwrap();
        }
        expect(&r, api, len, i as u8);
    }
    t.join().unwrap();
    assert!(matches!(r.recv_bytes(), Err(Error::Closed)));
}

fn pipes() -> Vec<(Connection, Connection)> {
    let (a, b) = Pipe::duplex().unwrap();
    let (r, w) = Pipe::simplex().unwrap();
    vec![(a, b), (r, w)]
}

#[test]
fn recv_bytes_streams_large_and_small_messages_exactly() {
    for lockstep in [true, false] {
        for (r, w) in pipes() {
            let msgs = (0..3)
                .flat_map(|_| SIZES.map(|n| (Api::Bytes, n)))
                .collect();
            stream(r, w, msgs, lockstep);
        }
    }
}

#[test]
fn typed_recv_of_large_and_small_values_mixed_with_recv_bytes() {
    let apis = [
        Api::TypedBytes,
        Api::TypedBytes,
        Api::TypedTuple,
        Api::Bytes,
    ];
    for lockstep in [true, false] {
        for (r, w) in pipes() {
            let msgs = (0..3)
                .flat_map(|k| {
                    SIZES
                        .iter()
                        .enumerate()
                        .map(move |(i, &n)| (apis[(i + k) % 4], n))
                })
                .collect();
            stream(r, w, msgs, lockstep);
        }
    }
}

/// Receives a large message with `recv_bytes` (`typed`: with `recv`), so
/// that the next read is a scatter read into a fresh buffer of its size.
fn prime_fresh(c: &Connection, w: &mut UnixStream, typed: bool) {
    let api = if typed { Api::TypedBytes } else { Api::Bytes };
    w.write_all(&frame(&encoded(api, 40_000, 1))).unwrap();
    expect(c, api, 40_000, 1);
}

/// Receives the next message with `recv_bytes` or, if `typed`, `recv`.
fn recv_next(c: &Connection, typed: bool) -> multiproc::Result<usize> {
    if typed {
        c.recv::<Vec<u8>>().map(|v| v.len())
    } else {
        c.recv_bytes().map(|v| v.len())
    }
}

#[test]
fn recv_bytes_and_recv_of_a_message_cut_short_after_a_large_one_fail_cleanly() {
    let mut long_cut = (-1i32).to_be_bytes().to_vec();
    long_cut.extend_from_slice(&[0, 0, 0]);
    let mut payload_cut = frame(&encoded(Api::TypedBytes, 100_000, 7));
    payload_cut.truncate(50_000);
    for typed in [false, true] {
        for cut in [payload_cut.clone(), long_cut.clone(), vec![0, 0]] {
            let (c, mut w) = pair();
            prime_fresh(&c, &mut w, typed);
            // Written after the receive has started waiting, in two pieces.
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                let (a, b) = cut.split_at(cut.len() / 2);
                w.write_all(a).unwrap();
                std::thread::sleep(Duration::from_millis(20));
                w.write_all(b).unwrap();
            });
            let e = recv_next(&c, typed).unwrap_err();
            assert!(
                matches!(e, Error::Io(ref e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
                "{e:?}"
            );
            t.join().unwrap();
            // The stream's place is lost: later receives refuse.
            assert!(matches!(c.recv_bytes(), Err(Error::InvalidState(_))));
        }
    }
}

#[test]
fn an_oversized_length_after_a_large_message_allocates_nothing_of_its_size() {
    for typed in [false, true] {
        for long in [false, true] {
            let (c, mut w) = pair();
            c.set_max_message_size(100_000);
            prime_fresh(&c, &mut w, typed);
            let (bytes, want) = oversized_start(long);
            w.write_all(&bytes).unwrap();
            // Closed: a reader that accepted the length fails, not hangs.
            drop(w);
            let (e, largest) = largest_allocation(|| recv_next(&c, typed).unwrap_err());
            assert!(
                matches!(e, Error::MessageTooLarge { len, max: 100_000 } if len == want),
                "{e:?}"
            );
            assert!(largest <= 100_000, "allocated {largest} bytes");
        }
    }
}

#[test]
fn a_lowered_maximum_bounds_the_buffer_offered_after_a_large_message() {
    for typed in [false, true] {
        let (c, mut w) = pair();
        prime_fresh(&c, &mut w, typed);
        // Below the last message's size: nothing of that size either.
        c.set_max_message_size(10_000);
        w.write_all(&frame(&payload(20_000, 3))).unwrap();
        drop(w);
        let (e, largest) = largest_allocation(|| recv_next(&c, typed).unwrap_err());
        assert!(
            matches!(
                e,
                Error::MessageTooLarge {
                    len: 20_000,
                    max: 10_000
                }
            ),
            "{e:?}"
        );
        assert!(largest <= 16 << 10, "allocated {largest} bytes");
    }
}

#[test]
fn a_large_message_interrupted_by_a_timeout_continues_on_the_next_receive() {
    for typed in [false, true] {
        let (c, mut w) = pair();
        prime_fresh(&c, &mut w, typed);
        let api = if typed { Api::TypedBytes } else { Api::Bytes };
        let f = frame(&encoded(api, 50_000, 4));
        w.write_all(&f[..30_000]).unwrap();
        let short = Duration::from_millis(50);
        let r = if typed {
            c.recv_timeout::<Vec<u8>>(short).map(|_| ())
        } else {
            c.recv_bytes_timeout(short).map(|_| ())
        };
        assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
        w.write_all(&f[30_000..]).unwrap();
        expect(&c, api, 50_000, 4);
        w.write_all(&frame(&encoded(api, 7, 5))).unwrap();
        expect(&c, api, 7, 5);
    }
}

#[test]
fn a_descriptor_stays_with_its_message_between_large_recv_bytes_and_recv() {
    for typed in [false, true] {
        let (a, b) = Pipe::duplex().unwrap();
        let (x, y) = Pipe::duplex().unwrap();
        let api = if typed { Api::TypedBytes } else { Api::Bytes };
        send(&a, api, 20_000, 1);
        send(&a, api, 20_000, 2);
        a.send_connection(&x).unwrap();
        send(&a, api, 20_000, 3);
        expect(&b, api, 20_000, 1);
        expect(&b, api, 20_000, 2);
        let x2 = b.recv_connection().unwrap();
        expect(&b, api, 20_000, 3);
        y.send(&5u32).unwrap();
        assert_eq!(x2.recv_timeout::<u32>(Duration::from_secs(30)).unwrap(), 5);
    }
}

fn api() -> impl Strategy<Value = Api> {
    prop_oneof![
        Just(Api::Bytes),
        Just(Api::TypedBytes),
        Just(Api::TypedTuple)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random raw and typed messages of random sizes (both header forms),
    /// written in random pieces by another thread, received with
    /// `recv_bytes` and `recv`: exactly the messages sent.
    #[test]
    fn random_recv_bytes_and_recv_in_random_pieces_arrive_exactly(
        msgs in prop::collection::vec((api(), message()), 1..12),
        pieces in prop::collection::vec(
            prop_oneof![1usize..16, 16usize..5_000, 5_000usize..120_000], 1..5),
    ) {
        let (c, w) = pair();
        let bytes: Vec<u8> = msgs
            .iter()
            .enumerate()
            .flat_map(|(i, &(api, (n, long)))| {
                let p = encoded(api, n, i as u8);
                if long { long_frame(&p) } else { frame(&p) }
            })
            .collect();
        let t = write_in_pieces(w, bytes, pieces);
        for (i, &(api, (n, _))) in msgs.iter().enumerate() {
            expect(&c, api, n, i as u8);
        }
        t.join().unwrap();
        prop_assert!(matches!(c.recv_bytes(), Err(Error::Closed)));
    }
}
