//! The value codec: serde in postcard's compact binary format.
//!
//! Arguments, return values and messages are `Serialize + DeserializeOwned`,
//! so a value that cannot cross a process boundary is a compile error rather
//! than Python's runtime `PicklingError`. The format is postcard's (varint
//! integers and lengths, no field names), written and read by the crate's own
//! serializer and deserializer: one serializer reused for a whole batch
//! writes straight into its output (a `Vec`, or the pool worker's shared
//! journal), several times faster than postcard's per-value set-up for small
//! values. The format is private to multiproc peers (Python interop uses raw
//! bytes, or the `pickle` feature of [`Connection`](crate::connection)).
//!
//! # Byte payloads
//!
//! serde sees a `Vec<u8>` as a *sequence* of `u8`, one call per byte. This
//! codec recognises the common byte containers — `Vec<u8>`, `Box<[u8]>`,
//! `[u8]` and `&[u8]` — wherever they appear (a pool task's argument or
//! result, a field of a struct, an element of a tuple or a `Vec`, a value of
//! a map, a `Connection::send` value, a manager value) and moves them with
//! one `memcpy` each way. The bytes are the same as serde's sequence form,
//! so nothing changes on the wire. `String` and `&str` are already copied
//! whole.
//!
//! Other byte-like containers (a `VecDeque<u8>`, `[u8; N]`, a type of your
//! own) still go byte by byte. Mark such fields with
//! [`serde_bytes`](https://docs.rs/serde_bytes) to make them fast, or use its
//! `ByteBuf`:
//!
//! ```
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Frame {
//!     id: u64,
//!     pixels: Vec<u8>, // fast already
//!     #[serde(with = "serde_bytes")]
//!     raw: Box<[u8]>, // fast with or without the attribute
//! }
//! let f = Frame { id: 7, pixels: vec![1; 1 << 20], raw: vec![2; 16].into() };
//! let bytes = multiproc::codec::encode(&f)?;
//! assert_eq!(multiproc::codec::decode::<Frame>(&bytes)?, f);
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! Decoding treats every byte as untrusted: a truncated value, an overlong
//! varint or bad UTF-8 is an error, and an announced length never allocates
//! more than the input holds.

mod bytes;
mod de;
mod ser;
#[cfg(test)]
mod tests;

use crate::error::Result;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub(crate) use bytes::{as_bytes, into_byte_vec};
pub(crate) use de::Reader;

/// Encodes `value`, appending to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    if let Some(b) = as_bytes(value) {
        out.reserve(b.len() + 10);
    }
    put(value, out)?;
    Ok(())
}

/// Encodes `value` into a new buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Decodes a value from the front of `bytes` (bytes after it are ignored).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(Reader::new(bytes).next()?)
}

/// Decodes one value from the front of `bytes`, returning it and the rest.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8])> {
    Ok(decode_borrowed(bytes)?)
}

/// Decodes one value that may borrow from `bytes` (a `&str`, a `&[u8]`),
/// returning it and the rest.
pub(crate) fn decode_borrowed<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
) -> postcard::Result<(T, &'de [u8])> {
    let mut rd = Reader::new(bytes);
    let v = rd.next()?;
    Ok((v, rd.rest()))
}

/// Appends the encoding of `value` to `out`.
#[inline]
pub(crate) fn put<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> postcard::Result<()> {
    ser::Ser::new(out).value(value)
}

/// Appends the encoding of `value` to any [`Out`].
#[inline]
pub(crate) fn put_into<T: Serialize + ?Sized, O: Out>(
    value: &T,
    out: &mut O,
) -> postcard::Result<()> {
    ser::Ser::new(out).value(value)
}

/// Encodes `value` into `buf`; the bytes used, or
/// `postcard::Error::SerializeBufferFull` (a long sequence stops at its next
/// element once the buffer is full).
pub(crate) fn encode_to_slice<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut [u8],
) -> postcard::Result<usize> {
    let mut out = SliceOut {
        buf,
        len: 0,
        full: false,
    };
    put_into(value, &mut out)?;
    if out.full {
        return Err(postcard::Error::SerializeBufferFull);
    }
    Ok(out.len)
}

/// The length prefix the codec writes before a byte payload of `len` bytes
/// (for callers that send the payload itself from elsewhere, without
/// copying it into the encoding): the buffer and the bytes of it used.
pub(crate) fn bytes_header(len: usize) -> ([u8; MAX_VARINT], usize) {
    let mut buf = [0u8; MAX_VARINT];
    let n = leb128(len as u64, |i, b| buf[i] = b);
    (buf, n)
}

/// Reads the length prefix of a byte payload (see [`bytes_header`]): the
/// length and the bytes the prefix used, or `None` if it is malformed or
/// incomplete.
pub(crate) fn read_bytes_header(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut rd = Reader::new(bytes);
    let len = rd.varint().ok()?;
    Some((len, bytes.len() - rd.remaining()))
}

/// The most bytes of a `u64` varint.
pub(crate) const MAX_VARINT: usize = 10;

/// LEB128 (postcard's varint), one byte at a time to `put(index, byte)`;
/// returns the bytes written (at most [`MAX_VARINT`]).
#[inline(always)]
fn leb128(mut v: u64, mut put: impl FnMut(usize, u8)) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        put(i, (v as u8) | 0x80);
        v >>= 7;
        i += 1;
    }
    put(i, v as u8);
    i + 1
}

/// Where the serializer writes: a `Vec`, a fixed buffer, or the pool
/// worker's journal in shared memory, which notes on its own when it is
/// full (the caller then checks and takes the slow way).
pub(crate) trait Out {
    /// Appends one byte.
    fn push(&mut self, b: u8);
    /// Appends bytes.
    fn extend_from_slice(&mut self, s: &[u8]);
    /// Appends `v` as a varint.
    #[inline(always)]
    fn varint(&mut self, v: u64) {
        leb128(v, |_, b| self.push(b));
    }
    /// Whether a write was dropped for lack of room (the serializer then
    /// stops at the next element of a sequence or map).
    #[inline(always)]
    fn full(&self) -> bool {
        false
    }
}

impl Out for Vec<u8> {
    #[inline(always)]
    fn push(&mut self, b: u8) {
        Vec::push(self, b)
    }
    #[inline(always)]
    fn extend_from_slice(&mut self, s: &[u8]) {
        Vec::extend_from_slice(self, s)
    }
    #[inline(always)]
    fn varint(&mut self, v: u64) {
        if v < 0x80 {
            Vec::push(self, v as u8);
            return;
        }
        self.reserve(MAX_VARINT);
        let len = self.len();
        let spare = &mut self.spare_capacity_mut()[..MAX_VARINT];
        let n = leb128(v, |i, b| {
            spare[i].write(b);
        });
        // SAFETY: `leb128` wrote bytes `len..len + n` (n <= MAX_VARINT, for
        // which `reserve` made room).
        #[allow(unsafe_code)]
        unsafe {
            self.set_len(len + n)
        };
    }
}

/// A fixed buffer as an [`Out`]: a write that does not fit sets `full`.
struct SliceOut<'a> {
    buf: &'a mut [u8],
    len: usize,
    full: bool,
}

impl Out for SliceOut<'_> {
    #[inline]
    fn push(&mut self, b: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = b;
                self.len += 1;
            }
            None => self.full = true,
        }
    }
    #[inline]
    fn extend_from_slice(&mut self, s: &[u8]) {
        match self.buf.get_mut(self.len..self.len + s.len()) {
            Some(dst) => {
                dst.copy_from_slice(s);
                self.len += s.len();
            }
            None => self.full = true,
        }
    }
    #[inline]
    fn full(&self) -> bool {
        self.full
    }
}
