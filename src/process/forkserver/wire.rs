//! The fork server's messages (private to multiproc, between a process and
//! the server it started from the same binary).
//!
//! - *request* (client → server, one `SOCK_SEQPACKET` message): a
//!   [`Header`] and, with `SCM_RIGHTS`, the child's bootstrap socket, the
//!   status socket, the requester's stdio named by the flags, then the
//!   handed-off descriptors;
//! - *pid* (server → client on the status socket): `i32` little-endian (a
//!   negative errno if `fork` failed) with the child's pidfd attached;
//! - *status* (server → client, when the child is reaped): the raw wait
//!   status, `i32` little-endian.

use crate::sys::scm;
use rustix::net::{RecvFlags, SendFlags};
use std::os::fd::{BorrowedFd, OwnedFd};

/// The most descriptors one request carries (below the kernel's 253).
pub(crate) const MAX_FDS: usize = scm::MAX_FDS;
pub(crate) const HEADER_LEN: usize = 12;
const MAGIC: &[u8; 4] = b"MPFS";
const VERSION: u16 = 1;

/// The child is a daemon (`PR_SET_PDEATHSIG` on the server).
pub(crate) const FLAG_DAEMON: u16 = 1;
/// The request carries the requester's standard input.
pub(crate) const FLAG_STDIN: u16 = 2;
/// The request carries the requester's standard output.
pub(crate) const FLAG_STDOUT: u16 = 4;
/// The request carries the requester's standard error.
pub(crate) const FLAG_STDERR: u16 = 8;

/// A request's fixed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) flags: u16,
    /// How many descriptors come with the request.
    pub(crate) nfds: u32,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.nfds.to_le_bytes());
        b
    }

    /// Parses a received header; `None` unless it is exactly one well-formed
    /// header of this version whose descriptor count fits the flags.
    pub(crate) fn parse(b: &[u8]) -> Option<Header> {
        if b.len() != HEADER_LEN || &b[..4] != MAGIC {
            return None;
        }
        if u16::from_le_bytes([b[4], b[5]]) != VERSION {
            return None;
        }
        let flags = u16::from_le_bytes([b[6], b[7]]);
        let nfds = u32::from_le_bytes(b[8..12].try_into().ok()?);
        let stdio = [FLAG_STDIN, FLAG_STDOUT, FLAG_STDERR]
            .iter()
            .filter(|f| flags & **f != 0)
            .count() as u32;
        if flags & !(FLAG_DAEMON | FLAG_STDIN | FLAG_STDOUT | FLAG_STDERR) != 0
            || nfds < 2 + stdio
            || nfds as usize > MAX_FDS
        {
            return None;
        }
        Some(Header { flags, nfds })
    }
}

/// Sends one message with `fds` attached.
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> rustix::io::Result<()> {
    scm::send_with_fds(sock, bytes, fds, SendFlags::NOSIGNAL).map(drop)
}

/// Sends the pid message.
pub(crate) fn send_pid(
    status: &OwnedFd,
    pid: i32,
    pidfd: Option<BorrowedFd<'_>>,
) -> rustix::io::Result<()> {
    use std::os::fd::AsFd;
    let fds: Vec<BorrowedFd<'_>> = pidfd.into_iter().collect();
    send_with_fds(status.as_fd(), &pid.to_le_bytes(), &fds)
}

/// Receives one message of at most 4 bytes and at most one descriptor:
/// `Ok(None)` at end-of-file.
pub(crate) fn recv_word(
    sock: BorrowedFd<'_>,
    flags: RecvFlags,
) -> rustix::io::Result<Option<(i32, Option<OwnedFd>)>> {
    let mut word = [0u8; 5];
    let got = scm::recv_with_fds(sock, &mut word, flags)?;
    let fd = got.fds.into_iter().next();
    match got.bytes {
        0 => Ok(None),
        4 => Ok(Some((
            i32::from_le_bytes(word[..4].try_into().expect("4")),
            fd,
        ))),
        _ => Err(rustix::io::Errno::PROTO),
    }
}

/// Reads a forkserver child's raw wait status from its status socket:
/// `Ok(None)` at end-of-file (the server died without reporting it).
pub(crate) fn recv_status(
    sock: BorrowedFd<'_>,
    flags: RecvFlags,
) -> rustix::io::Result<Option<i32>> {
    Ok(recv_word(sock, flags)?.map(|(raw, _)| raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_rejects() {
        let h = Header {
            flags: FLAG_DAEMON | FLAG_STDOUT,
            nfds: 3,
        };
        assert_eq!(Header::parse(&h.encode()), Some(h));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert_eq!(Header::parse(&bad), None);
        assert_eq!(Header::parse(&h.encode()[..11]), None);
        let too_few = Header {
            flags: FLAG_STDIN | FLAG_STDOUT | FLAG_STDERR,
            nfds: 4,
        };
        assert_eq!(Header::parse(&too_few.encode()), None);
        let unknown = Header { flags: 64, nfds: 2 };
        assert_eq!(Header::parse(&unknown.encode()), None);
    }
}
