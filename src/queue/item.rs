//! How an item becomes bytes in the ring and back: the codec, except for
//! `Vec<u8>`, which is written and read in the codec's own format with one
//! copy each way (see [`put_item`] and [`decode_item`]).
#![allow(unsafe_code)]

use super::ring::{Ring, Stall};
use super::shared_bytes::{SharedBytes, SmallBuf};
use crate::codec;
use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::any::Any;
use std::cell::RefCell;
use std::time::Instant;

thread_local! {
    static ENCODE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static DECODE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Encodes `item` into a per-thread buffer and hands the bytes to `f`.
pub(crate) fn with_encoded<T: Serialize + ?Sized, R>(
    item: &T,
    f: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R> {
    ENCODE_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            codec::encode_into(item, &mut buf)?;
            let r = f(&buf);
            if buf.capacity() > 4 << 20 {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => f(&codec::encode(item)?),
    })
}

/// Encodes `item` and puts it. `Vec<u8>` (a *sequence* of `u8` to serde,
/// which the codec would walk byte by byte) is written directly in the
/// codec's own format for it — a length varint and the bytes — with one
/// copy; every other type goes through the codec.
pub(super) fn put_item<T: Serialize + 'static>(
    ring: &Ring,
    item: &T,
    deadline: Option<Instant>,
    stall: Stall,
) -> Result<()> {
    if let Some(bytes) = (item as &dyn Any).downcast_ref::<Vec<u8>>() {
        let (len, n) = codec::bytes_header(bytes.len());
        return ring.put(&[&len[..n], bytes], deadline, stall);
    }
    // Small items: encode on the stack (no thread-local, no Vec); an item
    // that does not fit stops the attempt at the first byte too many.
    let mut stack = [0u8; 128];
    match codec::encode_to_slice(item, &mut stack) {
        Ok(used) => ring.put(&[&stack[..used]], deadline, stall),
        Err(postcard::Error::SerializeBufferFull) => {
            with_encoded(item, |bytes| ring.put(&[bytes], deadline, stall))
        }
        Err(e) => Err(e.into()),
    }
}

/// Decodes an item; the twin of [`put_item`]'s `Vec<u8>` path. The bytes
/// are in shared memory: they are copied out first (see `shared_bytes.rs`)
/// — a `Vec<u8>` straight into the vector returned, anything else into a
/// buffer reused by the thread (on the stack for small items) — and decoded
/// from private memory.
#[inline]
pub(super) fn decode_item<T: DeserializeOwned + 'static>(bytes: SharedBytes<'_>) -> Result<T> {
    let mut out: Option<T> = None;
    if let Some(slot) = (&mut out as &mut dyn Any).downcast_mut::<Option<Vec<u8>>>() {
        let mut pre = [const { std::mem::MaybeUninit::<u8>::uninit() }; 10];
        let n = bytes.copy_into(0, &mut pre);
        // SAFETY: `copy_into` initialised the first `n` bytes.
        let pre = unsafe { std::slice::from_raw_parts(pre.as_ptr().cast::<u8>(), n) };
        let (len, used) = codec::read_bytes_header(pre)
            .ok_or_else(|| Error::Codec("bad length prefix".into()))?;
        if len != (bytes.len() - used) as u64 {
            return Err(Error::Codec("truncated bytes item".into()));
        }
        let mut body = Vec::with_capacity(len as usize);
        let got = bytes.copy_into(used, &mut body.spare_capacity_mut()[..len as usize]);
        // SAFETY: `copy_into` initialised the first `got` (= len) bytes.
        unsafe { body.set_len(got) };
        *slot = Some(body);
        return out.ok_or_else(|| Error::Codec("unreachable".into()));
    }
    let mut words = SmallBuf::new();
    if let Some(small) = bytes.copy_small(&mut words) {
        return codec::decode(small);
    }
    DECODE_BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            bytes.append_to(&mut buf);
            let r = codec::decode(&buf);
            if buf.capacity() > 4 << 20 {
                *buf = Vec::new();
            }
            r
        }
        Err(_) => {
            let mut buf = Vec::new();
            bytes.append_to(&mut buf);
            codec::decode(&buf)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_private<T: DeserializeOwned + 'static>(b: &[u8]) -> Result<T> {
        // SAFETY: a private slice nobody writes meanwhile.
        decode_item(unsafe { SharedBytes::new(b.as_ptr(), b.len(), b.len()) })
    }

    #[test]
    fn vec_u8_fast_path_matches_the_codec() {
        for len in [0usize, 1, 127, 128, 300, 16_384, 1 << 20] {
            let v: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let (pre, n) = codec::bytes_header(len);
            let mut fast = pre[..n].to_vec();
            fast.extend_from_slice(&v);
            assert_eq!(fast, codec::encode(&v).unwrap(), "encode, len {len}");
            assert_eq!(decode_private::<Vec<u8>>(&fast).unwrap(), v);
            assert_eq!(codec::decode::<Vec<u8>>(&fast).unwrap(), v);
        }
        assert!(decode_private::<Vec<u8>>(&[5, 1, 2]).is_err());
        assert!(decode_private::<Vec<u8>>(&[0xff; 12]).is_err());
        assert!(decode_private::<String>(&[200, 1, b'a']).is_err());
        let long = codec::encode(&"x".repeat(500)).unwrap();
        assert_eq!(decode_private::<String>(&long).unwrap(), "x".repeat(500));
    }
}
