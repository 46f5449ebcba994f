//! Frames and messages shared by the scatter-read tests
//! (`connection_scatter.rs`, `connection_scatter_recv.rs`).
#![allow(dead_code)]

use multiproc::connection::Connection;
use proptest::prelude::*;
use std::io::Write;
use std::os::unix::net::UnixStream;

/// A connection and the raw socket at its other end.
pub fn pair() -> (Connection, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (Connection::from_socket(a.into()), b)
}

pub fn frame(p: &[u8]) -> Vec<u8> {
    let mut v = (p.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(p);
    v
}

/// The 12-byte header CPython uses past 2 GiB (valid for any length).
pub fn long_frame(p: &[u8]) -> Vec<u8> {
    let mut v = (-1i32).to_be_bytes().to_vec();
    v.extend_from_slice(&(p.len() as u64).to_be_bytes());
    v.extend_from_slice(p);
    v
}

/// A header announcing more than the tests' maximum (200,000 bytes, or
/// 2^40 in the long form) followed by 30,000 bytes of it: the reader must
/// refuse the length, not allocate it.
pub fn oversized_start(long: bool) -> (Vec<u8>, u64) {
    let (mut v, announced) = if long {
        let mut h = (-1i32).to_be_bytes().to_vec();
        h.extend_from_slice(&(1u64 << 40).to_be_bytes());
        (h, 1 << 40)
    } else {
        (200_000i32.to_be_bytes().to_vec(), 200_000)
    };
    v.extend_from_slice(&[0xee; 30_000]);
    (v, announced)
}

/// Writes `bytes` to `w` from another thread, cut into `pieces` (cycled).
pub fn write_in_pieces(
    mut w: UnixStream,
    bytes: Vec<u8>,
    pieces: Vec<usize>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut at = 0;
        for &n in pieces.iter().cycle() {
            if at == bytes.len() {
                break;
            }
            let end = (at + n).min(bytes.len());
            w.write_all(&bytes[at..end]).unwrap();
            at = end;
        }
    })
}

pub fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn message() -> impl Strategy<Value = (usize, bool)> {
    (
        prop_oneof![0usize..40, 40usize..9_000, 9_000usize..90_000],
        prop::bool::weighted(0.2),
    )
}
