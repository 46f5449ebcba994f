//! Encoding many small values quickly: one postcard serializer writing
//! straight into a `Vec`, and one deserializer reading a whole batch (the
//! generic `codec` functions rebuild those per value, which dominates the
//! cost of a map over a million integers). Same bytes as [`crate::codec`].

use serde::{de::DeserializeOwned, Serialize};

struct VecOut<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for VecOut<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // Varints are a few bytes: a call to memcpy would cost more than the
        // copy. Fixed-size (overlapping) copies compile to plain moves.
        let n = data.len();
        if n > 16 {
            self.0.extend_from_slice(data);
            return Ok(());
        }
        let mut buf = [0u8; 16];
        if n >= 8 {
            let head: [u8; 8] = data[..8].try_into().expect("n >= 8");
            let tail: [u8; 8] = data[n - 8..].try_into().expect("n >= 8");
            buf[..8].copy_from_slice(&head);
            buf[n - 8..n].copy_from_slice(&tail);
        } else if n >= 4 {
            let head: [u8; 4] = data[..4].try_into().expect("n >= 4");
            let tail: [u8; 4] = data[n - 4..].try_into().expect("n >= 4");
            buf[..4].copy_from_slice(&head);
            buf[n - 4..n].copy_from_slice(&tail);
        } else {
            if n > 0 {
                buf[0] = data[0];
            }
            if n > 1 {
                buf[1] = data[1];
            }
            if n > 2 {
                buf[2] = data[2];
            }
        }
        let v = &mut *self.0;
        v.reserve(16);
        let len = v.len();
        // SAFETY: `reserve(16)` guarantees room for 16 more bytes after `len`;
        // all 16 are written from `buf`, and only the first `n` (<= 16) are
        // then counted as initialised.
        unsafe {
            std::ptr::copy_nonoverlapping(buf.as_ptr(), v.as_mut_ptr().add(len), 16);
            v.set_len(len + n);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends the postcard encoding of `value` to `out`.
#[inline]
pub(crate) fn put<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> postcard::Result<()> {
    postcard::serialize_with_flavor(value, VecOut(out))
}

/// Reads values one after another from a buffer.
pub(crate) struct Reader<'de> {
    de: postcard::Deserializer<'de, postcard::de_flavors::Slice<'de>>,
}

impl<'de> Reader<'de> {
    pub(crate) fn new(bytes: &'de [u8]) -> Self {
        Reader {
            de: postcard::Deserializer::from_bytes(bytes),
        }
    }

    /// The next value.
    #[inline]
    pub(crate) fn next<T: DeserializeOwned>(&mut self) -> postcard::Result<T> {
        T::deserialize(&mut self.de)
    }

    /// The next raw byte (an enum tag written by hand).
    #[inline]
    pub(crate) fn tag(&mut self) -> postcard::Result<u8> {
        u8::deserialize(&mut self.de)
    }
}

use serde::Deserialize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_as_the_codec() {
        let mut out = Vec::new();
        let mut want = Vec::new();
        let values: Vec<(u64, String, Vec<i32>, Option<f64>)> = (0..300u64)
            .map(|i| {
                (
                    i * 977,
                    "x".repeat(i as usize % 40),
                    vec![-(i as i32); 3],
                    Some(i as f64 / 3.0),
                )
            })
            .collect();
        for v in &values {
            put(v, &mut out).unwrap();
            crate::codec::encode_into(v, &mut want).unwrap();
        }
        assert_eq!(out, want);
        let mut rd = Reader::new(&out);
        for v in &values {
            assert_eq!(
                &rd.next::<(u64, String, Vec<i32>, Option<f64>)>().unwrap(),
                v
            );
        }
        assert!(rd.next::<u8>().is_err());
    }
}
