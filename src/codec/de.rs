//! The deserializer: postcard's format read from a byte slice, byte
//! payloads whole (see [`super::bytes`]). Every byte is untrusted.
#![allow(unsafe_code)]

use super::bytes;
use serde::de::{Deserialize, DeserializeSeed, IntoDeserializer, Visitor};
use std::marker::PhantomData;

/// Reads values one after another from a buffer.
pub(crate) struct Reader<'de> {
    de: De<'de>,
}

impl<'de> Reader<'de> {
    pub(crate) fn new(bytes: &'de [u8]) -> Self {
        Reader { de: De::new(bytes) }
    }

    /// The next value.
    #[inline]
    pub(crate) fn next<T: Deserialize<'de>>(&mut self) -> PResult<T> {
        T::deserialize(&mut self.de)
    }

    /// The next raw byte (an enum tag written by hand).
    #[inline]
    pub(crate) fn tag(&mut self) -> PResult<u8> {
        self.de.byte()
    }

    /// The next `u64` varint.
    #[inline]
    pub(crate) fn varint(&mut self) -> PResult<u64> {
        self.de.varint(super::MAX_VARINT)
    }

    /// How many bytes are left to read.
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.de.left()
    }

    /// The bytes left to read.
    pub(crate) fn rest(&self) -> &'de [u8] {
        // SAFETY: `cur..end` is the unread part of the input slice, which
        // lives for `'de` (see `De`).
        unsafe { std::slice::from_raw_parts(self.de.cur, self.de.left()) }
    }
}

/// A serde deserializer for postcard's format reading a byte slice
/// directly (the counterpart of the serializer). A cursor and an end
/// rather than a slice: one pointer moves per byte read, which makes
/// small values about 15% faster to decode.
///
/// Invariant: `cur <= end`, both within (or one past) one slice borrowed
/// for `'de`.
struct De<'de> {
    cur: *const u8,
    end: *const u8,
    _input: PhantomData<&'de [u8]>,
}

type PResult<T> = postcard::Result<T>;

impl<'de> De<'de> {
    fn new(input: &'de [u8]) -> Self {
        let r = input.as_ptr_range();
        De {
            cur: r.start,
            end: r.end,
            _input: PhantomData,
        }
    }

    /// Bytes left.
    #[inline(always)]
    fn left(&self) -> usize {
        // `cur <= end`, in one allocation.
        self.end as usize - self.cur as usize
    }

    #[inline(always)]
    fn byte(&mut self) -> PResult<u8> {
        if self.cur == self.end {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        // SAFETY: `cur < end`: a byte of the input, borrowed for `'de`;
        // one step further is at most `end`.
        unsafe {
            let b = *self.cur;
            self.cur = self.cur.add(1);
            Ok(b)
        }
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> PResult<&'de [u8]> {
        if self.left() < n {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        // SAFETY: `n <= end - cur`: `n` bytes of the input, borrowed for
        // `'de`; `cur + n` is at most `end`.
        unsafe {
            let s = std::slice::from_raw_parts(self.cur, n);
            self.cur = self.cur.add(n);
            Ok(s)
        }
    }

    /// A varint of at most `max_bytes` bytes (10 for u64).
    #[inline(always)]
    fn varint(&mut self, max_bytes: usize) -> PResult<u64> {
        let mut out: u64 = 0;
        for i in 0..max_bytes {
            let b = self.byte()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i == 9 && b > 1 {
                    return Err(postcard::Error::DeserializeBadVarint);
                }
                return Ok(out);
            }
        }
        Err(postcard::Error::DeserializeBadVarint)
    }

    fn varint128(&mut self) -> PResult<u128> {
        let mut out: u128 = 0;
        for i in 0..19 {
            let b = self.byte()?;
            out |= u128::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(postcard::Error::DeserializeBadVarint)
    }

    #[inline]
    fn u16v(&mut self) -> PResult<u16> {
        u16::try_from(self.varint(3)?).map_err(|_| postcard::Error::DeserializeBadVarint)
    }

    #[inline]
    fn u32v(&mut self) -> PResult<u32> {
        u32::try_from(self.varint(5)?).map_err(|_| postcard::Error::DeserializeBadVarint)
    }

    #[inline]
    fn len(&mut self) -> PResult<usize> {
        usize::try_from(self.varint(10)?).map_err(|_| postcard::Error::DeserializeBadVarint)
    }

    #[inline]
    fn str(&mut self) -> PResult<&'de str> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| postcard::Error::DeserializeBadUtf8)
    }
}

impl<'de> serde::Deserializer<'de> for &mut De<'de> {
    type Error = postcard::Error;

    fn is_human_readable(&self) -> bool {
        false
    }
    #[inline]
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> PResult<V::Value> {
        Err(postcard::Error::WontImplement)
    }
    #[inline]
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        match self.byte()? {
            0 => v.visit_bool(false),
            1 => v.visit_bool(true),
            _ => Err(postcard::Error::DeserializeBadBool),
        }
    }
    #[inline]
    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_i8(self.byte()? as i8)
    }
    #[inline]
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let n = self.u16v()?;
        v.visit_i16(((n >> 1) as i16) ^ (-((n & 1) as i16)))
    }
    #[inline]
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let n = self.u32v()?;
        v.visit_i32(((n >> 1) as i32) ^ (-((n & 1) as i32)))
    }
    #[inline]
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let n = self.varint(10)?;
        v.visit_i64(((n >> 1) as i64) ^ (-((n & 1) as i64)))
    }
    #[inline]
    fn deserialize_i128<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let n = self.varint128()?;
        v.visit_i128(((n >> 1) as i128) ^ (-((n & 1) as i128)))
    }
    #[inline]
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_u8(self.byte()?)
    }
    #[inline]
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_u16(self.u16v()?)
    }
    #[inline]
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_u32(self.u32v()?)
    }
    #[inline]
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_u64(self.varint(10)?)
    }
    #[inline]
    fn deserialize_u128<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_u128(self.varint128()?)
    }
    #[inline]
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let b: [u8; 4] = self.take(4)?.try_into().expect("4 bytes");
        v.visit_f32(f32::from_bits(u32::from_le_bytes(b)))
    }
    #[inline]
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let b: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
        v.visit_f64(f64::from_bits(u64::from_le_bytes(b)))
    }
    #[inline]
    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let s = self.str()?;
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => v.visit_char(c),
            _ => Err(postcard::Error::DeserializeBadChar),
        }
    }
    #[inline]
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_borrowed_str(self.str()?)
    }
    #[inline]
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_borrowed_str(self.str()?)
    }
    #[inline]
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let n = self.len()?;
        v.visit_borrowed_bytes(self.take(n)?)
    }
    #[inline]
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        self.deserialize_bytes(v)
    }
    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        match self.byte()? {
            0 => v.visit_none(),
            1 => v.visit_some(self),
            _ => Err(postcard::Error::DeserializeBadOption),
        }
    }
    #[inline]
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_unit()
    }
    #[inline]
    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> PResult<V::Value> {
        v.visit_unit()
    }
    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> PResult<V::Value> {
        v.visit_newtype_struct(self)
    }
    #[inline]
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let len = self.len()?;
        if bytes::is_byte_vec_visitor::<V>() {
            // A `Vec<u8>`: one copy, not one visit per byte.
            if let Some(value) = bytes::vec_as::<V::Value>(self.take(len)?.to_vec()) {
                return Ok(value);
            }
        }
        v.visit_seq(Access { de: self, len })
    }
    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> PResult<V::Value> {
        v.visit_seq(Access { de: self, len })
    }
    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        v: V,
    ) -> PResult<V::Value> {
        v.visit_seq(Access { de: self, len })
    }
    #[inline]
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let len = self.len()?;
        v.visit_map(Access { de: self, len })
    }
    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> PResult<V::Value> {
        v.visit_seq(Access {
            de: self,
            len: fields.len(),
        })
    }
    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> PResult<V::Value> {
        v.visit_enum(self)
    }
    #[inline]
    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> PResult<V::Value> {
        Err(postcard::Error::WontImplement)
    }
    #[inline]
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> PResult<V::Value> {
        Err(postcard::Error::WontImplement)
    }
}

struct Access<'a, 'de> {
    de: &'a mut De<'de>,
    len: usize,
}

impl<'de> Access<'_, 'de> {
    /// The next element (or map key), `None` after the last.
    #[inline]
    fn next<T: DeserializeSeed<'de>>(&mut self, seed: T) -> PResult<Option<T::Value>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    /// Never trusts a length from the wire for pre-allocation beyond the
    /// input (every element takes at least a byte).
    #[inline]
    fn hint(&self) -> Option<usize> {
        Some(self.len.min(self.de.left()))
    }
}

impl<'de> serde::de::SeqAccess<'de> for Access<'_, 'de> {
    type Error = postcard::Error;
    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> PResult<Option<T::Value>> {
        self.next(seed)
    }
    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.hint()
    }
}

impl<'de> serde::de::MapAccess<'de> for Access<'_, 'de> {
    type Error = postcard::Error;
    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> PResult<Option<K::Value>> {
        self.next(seed)
    }
    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> PResult<V::Value> {
        seed.deserialize(&mut *self.de)
    }
    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.hint()
    }
}

impl<'de> serde::de::EnumAccess<'de> for &mut De<'de> {
    type Error = postcard::Error;
    type Variant = Self;
    #[inline]
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> PResult<(V::Value, Self)> {
        let idx = self.u32v()?;
        let v = seed.deserialize(idx.into_deserializer())?;
        Ok((v, self))
    }
}

impl<'de> serde::de::VariantAccess<'de> for &mut De<'de> {
    type Error = postcard::Error;
    #[inline]
    fn unit_variant(self) -> PResult<()> {
        Ok(())
    }
    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> PResult<T::Value> {
        seed.deserialize(self)
    }
    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> PResult<V::Value> {
        v.visit_seq(Access { de: self, len })
    }
    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> PResult<V::Value> {
        v.visit_seq(Access {
            de: self,
            len: fields.len(),
        })
    }
}
