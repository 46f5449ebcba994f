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

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // Varints are a few bytes: a call to memcpy would cost more.
        if data.len() <= 16 {
            let v = &mut *self.0;
            v.reserve(16);
            let len = v.len();
            let spare = &mut v.spare_capacity_mut()[..data.len()];
            for (dst, &b) in spare.iter_mut().zip(data) {
                dst.write(b);
            }
            // SAFETY: the `data.len()` bytes after `len` were just written
            // (and `reserve(16)` made room for them).
            unsafe { v.set_len(len + data.len()) };
        } else {
            self.0.extend_from_slice(data);
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
