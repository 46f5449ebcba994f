//! CPython's message framing, byte for byte.
//!
//! Every message is a length prefix followed by the payload
//! (`multiprocessing/connection.py`, `Connection._send_bytes`):
//!
//! - payload of at most `0x7fffffff` bytes: 4-byte big-endian *signed* length;
//! - larger: the 4 bytes `ff ff ff ff` (`-1`), then an 8-byte big-endian
//!   unsigned length.
//!
//! Any other negative length is a protocol error.
//!
//! It lives below `process` (whose bootstrap and report messages are
//! frames) and is public as `multiproc::connection::framing`.
//!
//! This is the crate's one framing layer: [`Connection`](crate::connection::Connection)
//! drives it in blocking mode, the pool's parent drives it in non-blocking
//! mode for every worker, and a child's bootstrap and report messages are
//! frames too. It has two halves:
//!
//! - `FrameReader` reads into a read-ahead buffer, checks an announced
//!   length against the reader's maximum before allocating anything, yields
//!   small frames where they lie (no copy) and reads large payloads straight
//!   into a buffer of their own (its spare capacity: no zeroing), which the
//!   caller then owns — in one system call per frame when large frames
//!   follow each other (a scatter read: header, payload and the next
//!   header land where each belongs);
//! - `FrameWriter` queues frames (small ones coalesced into one buffer,
//!   large ones shared, not copied) and flushes as much as the descriptor
//!   takes without blocking (`MSG_DONTWAIT | MSG_NOSIGNAL`, several frames
//!   per `sendmsg`); `write_frame` writes one frame, blocking, header and
//!   payload in one system call.

mod read;
mod write;

pub(crate) use read::{read_frame_from, Frame, FrameReader, Source};
pub(crate) use write::{write_all, write_frame, FrameWriter};

use crate::error::{Error, Result};

/// Largest payload sent with the short (4-byte) header.
pub const SHORT_MAX: u64 = 0x7fff_ffff;

/// Longest possible header.
pub const MAX_HEADER: usize = 12;

/// The maximum message size a new connection accepts, unless changed with
/// [`Connection::set_max_message_size`](crate::connection::Connection::set_max_message_size)
/// or the [`Listener`](crate::connection::Listener) / [`Client`](crate::connection::Client) builders:
/// 256 MiB. A longer length prefix is refused with
/// [`Error::MessageTooLarge`] before anything of that size is allocated.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 256 << 20;

/// Encodes the header for a payload of `len` bytes; returns the buffer and
/// how many of its bytes are used (4 or 12).
pub fn encode_header(len: u64) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0u8; MAX_HEADER];
    if len <= SHORT_MAX {
        h[..4].copy_from_slice(&(len as i32).to_be_bytes());
        (h, 4)
    } else {
        h[..4].copy_from_slice(&(-1i32).to_be_bytes());
        h[4..].copy_from_slice(&len.to_be_bytes());
        (h, 12)
    }
}

/// The short (4-byte) header of a payload of `len <= SHORT_MAX` bytes, for
/// frames whose header is filled in after their payload was written (the
/// pool's, all far below 2 GiB).
pub(crate) fn short_header(len: usize) -> [u8; 4] {
    debug_assert!(len as u64 <= SHORT_MAX, "a short header for {len} bytes");
    (len.min(SHORT_MAX as usize) as i32).to_be_bytes()
}

/// The result of looking at the front of a byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// More bytes are needed to know the length.
    Incomplete,
    /// A complete header of `header_len` bytes announcing `payload_len` bytes.
    Complete {
        /// 4 or 12.
        header_len: usize,
        /// The announced payload length.
        payload_len: u64,
    },
}

/// Parses the header at the front of `buf`.
///
/// # Errors
///
/// [`Error::Codec`] for a negative length other than `-1`.
pub fn parse_header(buf: &[u8]) -> Result<Header> {
    let Some(short) = buf.get(..4) else {
        return Ok(Header::Incomplete);
    };
    let n = i32::from_be_bytes([short[0], short[1], short[2], short[3]]);
    if n >= 0 {
        return Ok(Header::Complete {
            header_len: 4,
            payload_len: n as u64,
        });
    }
    if n != -1 {
        return Err(Error::codec(format!("bad message length {n}")));
    }
    let Some(long) = buf.get(4..12) else {
        return Ok(Header::Incomplete);
    };
    let mut b = [0u8; 8];
    b.copy_from_slice(long);
    Ok(Header::Complete {
        header_len: 12,
        payload_len: u64::from_be_bytes(b),
    })
}

/// The header at the front of `buf`, checked against `max`: `(header
/// length, payload length)`, or `None` while it is incomplete.
///
/// # Errors
///
/// As [`parse_header`], and [`Error::MessageTooLarge`] for a length above
/// `max`.
pub(crate) fn checked_header(buf: &[u8], max: u64) -> Result<Option<(usize, usize)>> {
    match parse_header(buf)? {
        Header::Incomplete => Ok(None),
        Header::Complete {
            payload_len,
            header_len,
        } if payload_len <= max => Ok(Some((header_len, payload_len as usize))),
        Header::Complete { payload_len, .. } => Err(Error::MessageTooLarge {
            len: payload_len,
            max,
        }),
    }
}

/// The complete frame at the front of `buf`, if there is one: its payload's
/// range in `buf` (the frame ends where the payload does).
///
/// # Errors
///
/// As [`checked_header`], as soon as the header is in, whether or not the
/// rest has arrived.
pub(crate) fn split(buf: &[u8], max: u64) -> Result<Option<std::ops::Range<usize>>> {
    match checked_header(buf, max)? {
        Some((h, len)) if buf.len() - h >= len => Ok(Some(h..h + len)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_headers_match_cpython() {
        // struct.pack("!i", 5)
        assert_eq!(&encode_header(5).0[..encode_header(5).1], &[0, 0, 0, 5]);
        // struct.pack("!i", -1) + struct.pack("!Q", 0x80000000)
        let (h, n) = encode_header(0x8000_0000);
        assert_eq!(
            &h[..n],
            &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]
        );
        assert_eq!(
            parse_header(&h[..n]).unwrap(),
            Header::Complete {
                header_len: 12,
                payload_len: 0x8000_0000
            }
        );
        assert_eq!(parse_header(&h[..11]).unwrap(), Header::Incomplete);
        assert_eq!(parse_header(&[0, 0, 0]).unwrap(), Header::Incomplete);
        assert!(parse_header(&[0xff, 0xff, 0xff, 0xfe]).is_err());
    }
}
