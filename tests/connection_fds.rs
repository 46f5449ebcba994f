//! A peer that sends descriptors nobody asked for cannot fill the receiver's
//! descriptor table: a `Connection` keeps only the descriptor that
//! `recv_connection` takes, and closes every other one as soon as the
//! message it came with is read.
//!
//! One test in this binary, so that no other test opens descriptors while
//! it counts them.
multiproc::test_support!();

use multiproc::connection::{Connection, Pipe};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Writes one CPython frame (4-byte big-endian length, payload) carrying
/// `fds` with `SCM_RIGHTS`, as a hostile peer would.
fn send_frame_with_fds(to: BorrowedFd<'_>, payload: &[u8], fds: &[BorrowedFd<'_>]) {
    let header = (payload.len() as u32).to_be_bytes();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    let bufs = [IoSlice::new(&header), IoSlice::new(payload)];
    let n = rustix::net::sendmsg(to, &bufs, &mut control, SendFlags::NOSIGNAL).unwrap();
    assert_eq!(n, header.len() + payload.len());
}

fn dev_nulls(n: usize) -> Vec<OwnedFd> {
    (0..n)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect()
}

#[test]
fn unsolicited_descriptors_are_closed() {
    let (rx, tx) = Pipe::duplex().unwrap();
    let nulls = dev_nulls(8);
    let borrowed: Vec<BorrowedFd<'_>> = nulls.iter().map(|f| f.as_fd()).collect();
    let before = open_fds();

    // 64 ordinary messages, each with 8 descriptors, read with recv_bytes.
    for i in 0..64u32 {
        send_frame_with_fds(tx.as_fd(), &i.to_le_bytes(), &borrowed);
        assert_eq!(rx.recv_bytes().unwrap(), i.to_le_bytes());
    }
    assert_eq!(
        open_fds(),
        before,
        "descriptors sent with ordinary messages are closed"
    );

    // Sent all at once before any read: the same once they are read.
    for i in 0..64u32 {
        send_frame_with_fds(tx.as_fd(), &i.to_le_bytes(), &borrowed);
    }
    for i in 0..64u32 {
        assert_eq!(rx.recv_bytes().unwrap(), i.to_le_bytes());
    }
    assert_eq!(open_fds(), before, "read-ahead descriptors are closed too");

    // A message with descriptors given to recv_connection is refused and
    // its descriptors closed.
    send_frame_with_fds(tx.as_fd(), b"not a connection", &borrowed);
    assert!(rx.recv_connection().is_err());
    assert_eq!(open_fds(), before);

    // A real connection still arrives, after and between hostile messages;
    // extra descriptors riding on it are closed.
    let (a, b) = Pipe::duplex().unwrap();
    let before_pair = open_fds();
    send_frame_with_fds(tx.as_fd(), b"noise", &borrowed);
    tx.send_connection(&a).unwrap();
    send_frame_with_fds(tx.as_fd(), b"more noise", &borrowed);
    assert_eq!(rx.recv_bytes().unwrap(), b"noise");
    let got: Connection = rx.recv_connection().unwrap();
    assert_eq!(rx.recv_bytes().unwrap(), b"more noise");
    assert_eq!(
        open_fds(),
        before_pair + 1,
        "only the asked-for descriptor is kept"
    );
    got.send(&7u32).unwrap();
    assert_eq!(
        b.recv::<u32>().unwrap(),
        7,
        "the kept descriptor is the sent connection"
    );
    drop(got);
    assert_eq!(open_fds(), before_pair);
    drop((a, b));
    assert_eq!(open_fds(), before);
}
