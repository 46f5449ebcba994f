//! Encoding many small values quickly: a serializer writing postcard's
//! format straight into a `Vec`, and one deserializer reading a whole batch
//! (the generic `codec` functions rebuild those per value, which dominates
//! the cost of a map over a million integers). Same bytes as
//! [`crate::codec`] (tested below).
#![allow(unsafe_code)]

use serde::{de::DeserializeOwned, Serialize};

/// Appends the postcard encoding of `value` to `out`.
#[inline]
pub(crate) fn put<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> postcard::Result<()> {
    value.serialize(&mut Ser(out))
}

/// Appends the postcard encoding of `value` to any [`Out`].
#[inline]
pub(crate) fn put_into<T: Serialize + ?Sized, O: Out>(
    value: &T,
    out: &mut O,
) -> postcard::Result<()> {
    value.serialize(&mut Ser(out))
}

/// Where [`put_into`] writes: a `Vec`, or a fixed buffer (the pool worker's
/// journal) that notes on its own when it is full.
pub(crate) trait Out {
    fn push(&mut self, b: u8);
    fn extend_from_slice(&mut self, s: &[u8]);
    /// Appends `v` as a postcard (LEB128) varint.
    #[inline(always)]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
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
        varint(self, v)
    }
}

/// Appends `v` as a postcard (LEB128) varint.
#[inline(always)]
fn varint(out: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    out.reserve(10);
    let len = out.len();
    let spare = out.spare_capacity_mut();
    let mut i = 0;
    while v >= 0x80 {
        spare[i].write((v as u8) | 0x80);
        v >>= 7;
        i += 1;
    }
    spare[i].write(v as u8);
    // SAFETY: bytes `len..len + i + 1` were just written (at most 10, and
    // `reserve(10)` made room for them).
    unsafe { out.set_len(len + i + 1) };
}

fn varint128<O: Out>(out: &mut O, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A serde serializer writing postcard's format straight into a `Vec`
/// (postcard's own goes through a generic output "flavor" per value, which
/// costs several times more for small values).
struct Ser<'a, O: Out>(&'a mut O);

type Res = postcard::Result<()>;

impl<O: Out> serde::Serializer for &mut Ser<'_, O> {
    type Ok = ();
    type Error = postcard::Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }
    #[inline]
    fn serialize_bool(self, v: bool) -> Res {
        self.0.push(u8::from(v));
        Ok(())
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> Res {
        self.0.push(v as u8);
        Ok(())
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> Res {
        self.0.varint(((v << 1) ^ (v >> 15)) as u16 as u64);
        Ok(())
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> Res {
        self.0.varint(((v << 1) ^ (v >> 31)) as u32 as u64);
        Ok(())
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> Res {
        self.0.varint(((v << 1) ^ (v >> 63)) as u64);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Res {
        varint128(self.0, ((v << 1) ^ (v >> 127)) as u128);
        Ok(())
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> Res {
        self.0.push(v);
        Ok(())
    }
    #[inline]
    fn serialize_u16(self, v: u16) -> Res {
        self.0.varint(v as u64);
        Ok(())
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> Res {
        self.0.varint(v as u64);
        Ok(())
    }
    #[inline]
    fn serialize_u64(self, v: u64) -> Res {
        self.0.varint(v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Res {
        varint128(self.0, v);
        Ok(())
    }
    #[inline]
    fn serialize_f32(self, v: f32) -> Res {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_f64(self, v: f64) -> Res {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Res {
        let mut buf = [0u8; 4];
        self.serialize_str(v.encode_utf8(&mut buf))
    }
    #[inline]
    fn serialize_str(self, v: &str) -> Res {
        self.0.varint(v.len() as u64);
        self.0.extend_from_slice(v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Res {
        self.0.varint(v.len() as u64);
        self.0.extend_from_slice(v);
        Ok(())
    }
    #[inline]
    fn serialize_none(self) -> Res {
        self.0.push(0);
        Ok(())
    }
    #[inline]
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Res {
        self.0.push(1);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Res {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Res {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, idx: u32, _: &'static str) -> Res {
        self.0.varint(idx as u64);
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Res {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        idx: u32,
        _: &'static str,
        value: &T,
    ) -> Res {
        self.0.varint(idx as u64);
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> postcard::Result<Self> {
        self.0
            .varint(len.ok_or(postcard::Error::SerializeSeqLengthUnknown)? as u64);
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> postcard::Result<Self> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> postcard::Result<Self> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        idx: u32,
        _: &'static str,
        _: usize,
    ) -> postcard::Result<Self> {
        self.0.varint(idx as u64);
        Ok(self)
    }
    fn serialize_map(self, len: Option<usize>) -> postcard::Result<Self> {
        self.0
            .varint(len.ok_or(postcard::Error::SerializeSeqLengthUnknown)? as u64);
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> postcard::Result<Self> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        idx: u32,
        _: &'static str,
        _: usize,
    ) -> postcard::Result<Self> {
        self.0.varint(idx as u64);
        Ok(self)
    }
    fn collect_str<T: ?Sized + std::fmt::Display>(self, value: &T) -> Res {
        self.serialize_str(&value.to_string())
    }
}

macro_rules! compound {
    ($($tr:ident :: $m:ident),*) => {$(
        impl<O: Out> serde::ser::$tr for &mut Ser<'_, O> {
            type Ok = ();
            type Error = postcard::Error;
            #[inline]
            fn $m<T: ?Sized + Serialize>(&mut self, value: &T) -> Res {
                value.serialize(&mut **self)
            }
            #[inline]
            fn end(self) -> Res {
                Ok(())
            }
        }
    )*};
}
compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl<O: Out> serde::ser::SerializeMap for &mut Ser<'_, O> {
    type Ok = ();
    type Error = postcard::Error;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Res {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Res {
        value.serialize(&mut **self)
    }
    fn end(self) -> Res {
        Ok(())
    }
}

impl<O: Out> serde::ser::SerializeStruct for &mut Ser<'_, O> {
    type Ok = ();
    type Error = postcard::Error;
    #[inline]
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _: &'static str, value: &T) -> Res {
        value.serialize(&mut **self)
    }
    fn end(self) -> Res {
        Ok(())
    }
}

impl<O: Out> serde::ser::SerializeStructVariant for &mut Ser<'_, O> {
    type Ok = ();
    type Error = postcard::Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _: &'static str, value: &T) -> Res {
        value.serialize(&mut **self)
    }
    fn end(self) -> Res {
        Ok(())
    }
}

/// Reads values one after another from a buffer.
pub(crate) struct Reader<'de> {
    de: De<'de>,
}

impl<'de> Reader<'de> {
    pub(crate) fn new(bytes: &'de [u8]) -> Self {
        Reader {
            de: De { input: bytes },
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
        self.de.byte()
    }

    /// How many bytes are left to read.
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.de.input.len()
    }
}

/// A serde deserializer for postcard's format reading a byte slice
/// directly (the counterpart of [`Ser`]).
struct De<'de> {
    input: &'de [u8],
}

type PResult<T> = postcard::Result<T>;

impl<'de> De<'de> {
    #[inline(always)]
    fn byte(&mut self) -> PResult<u8> {
        match self.input.split_first() {
            Some((&b, rest)) => {
                self.input = rest;
                Ok(b)
            }
            None => Err(postcard::Error::DeserializeUnexpectedEnd),
        }
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> PResult<&'de [u8]> {
        if self.input.len() < n {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
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
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> PResult<V::Value> {
        Err(postcard::Error::WontImplement)
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        match self.byte()? {
            0 => v.visit_bool(false),
            1 => v.visit_bool(true),
            _ => Err(postcard::Error::DeserializeBadBool),
        }
    }
    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_i8(self.byte()? as i8)
    }
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
    fn deserialize_i128<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let n = self.varint128()?;
        v.visit_i128(((n >> 1) as i128) ^ (-((n & 1) as i128)))
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_u8(self.byte()?)
    }
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
    fn deserialize_u128<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_u128(self.varint128()?)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let b: [u8; 4] = self.take(4)?.try_into().expect("4 bytes");
        v.visit_f32(f32::from_bits(u32::from_le_bytes(b)))
    }
    #[inline]
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let b: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
        v.visit_f64(f64::from_bits(u64::from_le_bytes(b)))
    }
    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let s = self.str()?;
        let mut chars = s.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => v.visit_char(c),
            _ => Err(postcard::Error::DeserializeBadChar),
        }
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_borrowed_str(self.str()?)
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_borrowed_str(self.str()?)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let n = self.len()?;
        v.visit_borrowed_bytes(self.take(n)?)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        self.deserialize_bytes(v)
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        match self.byte()? {
            0 => v.visit_none(),
            1 => v.visit_some(self),
            _ => Err(postcard::Error::DeserializeBadOption),
        }
    }
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        v.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> PResult<V::Value> {
        v.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> PResult<V::Value> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let len = self.len()?;
        v.visit_seq(Access { de: self, len })
    }
    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> PResult<V::Value> {
        v.visit_seq(Access { de: self, len })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        v: V,
    ) -> PResult<V::Value> {
        v.visit_seq(Access { de: self, len })
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> PResult<V::Value> {
        let len = self.len()?;
        v.visit_map(Access { de: self, len })
    }
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
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> PResult<V::Value> {
        v.visit_enum(self)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> PResult<V::Value> {
        Err(postcard::Error::WontImplement)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> PResult<V::Value> {
        Err(postcard::Error::WontImplement)
    }
}

struct Access<'a, 'de> {
    de: &'a mut De<'de>,
    len: usize,
}

impl<'de> serde::de::SeqAccess<'de> for Access<'_, 'de> {
    type Error = postcard::Error;
    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> PResult<Option<T::Value>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        // Never trust a length from the wire for pre-allocation beyond the input.
        Some(self.len.min(self.de.input.len()))
    }
}

impl<'de> serde::de::MapAccess<'de> for Access<'_, 'de> {
    type Error = postcard::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> PResult<Option<K::Value>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> PResult<V::Value> {
        seed.deserialize(&mut *self.de)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.len.min(self.de.input.len()))
    }
}

impl<'de> serde::de::EnumAccess<'de> for &mut De<'de> {
    type Error = postcard::Error;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> PResult<(V::Value, Self)> {
        let idx = self.u32v()?;
        let v = seed.deserialize(idx.into_deserializer())?;
        Ok((v, self))
    }
}

impl<'de> serde::de::VariantAccess<'de> for &mut De<'de> {
    type Error = postcard::Error;
    fn unit_variant(self) -> PResult<()> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> PResult<T::Value> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> PResult<V::Value> {
        v.visit_seq(Access { de: self, len })
    }
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

use serde::de::{DeserializeSeed, IntoDeserializer, Visitor};

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Newtype(i64),
        Tuple(u8, i16, char),
        Struct { a: Option<u32>, b: Vec<u8>, c: f32 },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Everything {
        b: bool,
        i8: i8,
        i16: i16,
        i32: i32,
        i64: i64,
        i128: i128,
        u8: u8,
        u16: u16,
        u32: u32,
        u64: u64,
        u128: u128,
        f64: f64,
        s: String,
        bytes: serde_bytes_like::Bytes,
        shapes: Vec<Shape>,
        map: BTreeMap<String, (u64, Option<bool>)>,
        unit: (),
    }

    mod serde_bytes_like {
        use serde::{Deserialize, Deserializer, Serialize, Serializer};
        #[derive(Debug, PartialEq)]
        pub struct Bytes(pub Vec<u8>);
        impl Serialize for Bytes {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for Bytes {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Bytes(Vec::<u8>::deserialize(d)?))
            }
        }
    }

    fn sample(i: i64) -> Everything {
        Everything {
            b: i % 2 == 0,
            i8: -((i % 128) as i8),
            i16: (i * 300) as i16,
            i32: -(i as i32) * 70_001,
            i64: i64::MIN + i,
            i128: -(i as i128) << 90,
            u8: i as u8,
            u16: (i * 517) as u16,
            u32: u32::MAX - i as u32,
            u64: (i as u64) << 40,
            u128: u128::MAX - i as u128,
            f64: i as f64 / 7.0,
            s: "é∂".repeat(i as usize % 9),
            bytes: serde_bytes_like::Bytes(vec![i as u8; i as usize % 5]),
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(-i),
                Shape::Tuple(3, -4, 'ß'),
                Shape::Struct {
                    a: (i % 3 == 0).then_some(i as u32),
                    b: vec![1, 2],
                    c: 0.5,
                },
            ],
            map: (0..i % 4)
                .map(|k| (format!("k{k}"), (k as u64, Some(k % 2 == 0))))
                .collect(),
            unit: (),
        }
    }

    #[test]
    fn same_bytes_as_the_codec() {
        let values: Vec<Everything> = (0..200).map(sample).collect();
        let mut out = Vec::new();
        let mut want = Vec::new();
        for v in &values {
            put(v, &mut out).unwrap();
            crate::codec::encode_into(v, &mut want).unwrap();
        }
        assert_eq!(out, want);
        let mut rd = Reader::new(&out);
        for v in &values {
            assert_eq!(&rd.next::<Everything>().unwrap(), v);
        }
        assert!(rd.next::<u8>().is_err());
        for x in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut a = Vec::new();
            put(&x, &mut a).unwrap();
            assert_eq!(a, crate::codec::encode(&x).unwrap());
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        let bad: &[(&[u8], &str)] = &[
            (&[], "empty"),
            (&[0x80, 0x80], "truncated varint"),
            (&[0xff; 11], "overlong varint"),
            (&[5, b'a'], "truncated string"),
            (&[2, 0xff, 0xfe], "bad utf-8"),
        ];
        for (bytes, what) in bad {
            let r = Reader::new(bytes).next::<(u64, String)>();
            assert!(r.is_err(), "{what}");
        }
        assert!(Reader::new(&[2]).next::<bool>().is_err());
        assert!(Reader::new(&[7]).next::<Option<u8>>().is_err());
        // A huge announced length does not allocate it up front.
        let r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x0f]).next::<Vec<u64>>();
        assert!(r.is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x1f])
            .next::<u32>()
            .is_err());
    }
}
