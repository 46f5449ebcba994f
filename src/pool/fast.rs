//! Encoding many small values quickly: a serializer writing postcard's
//! format straight into a `Vec`, and one deserializer reading a whole batch
//! (the generic `codec` functions rebuild those per value, which dominates
//! the cost of a map over a million integers). Same bytes as
//! [`crate::codec`] (tested below).

use serde::{de::DeserializeOwned, Serialize};

/// Appends the postcard encoding of `value` to `out`.
#[inline]
pub(crate) fn put<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> postcard::Result<()> {
    value.serialize(&mut Ser(out))
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

fn varint128(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A serde serializer writing postcard's format straight into a `Vec`
/// (postcard's own goes through a generic output "flavor" per value, which
/// costs several times more for small values).
struct Ser<'a>(&'a mut Vec<u8>);

type Res = postcard::Result<()>;

impl serde::Serializer for &mut Ser<'_> {
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
        varint(self.0, ((v << 1) ^ (v >> 15)) as u16 as u64);
        Ok(())
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> Res {
        varint(self.0, ((v << 1) ^ (v >> 31)) as u32 as u64);
        Ok(())
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> Res {
        varint(self.0, ((v << 1) ^ (v >> 63)) as u64);
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
        varint(self.0, v as u64);
        Ok(())
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> Res {
        varint(self.0, v as u64);
        Ok(())
    }
    #[inline]
    fn serialize_u64(self, v: u64) -> Res {
        varint(self.0, v);
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
        varint(self.0, v.len() as u64);
        self.0.extend_from_slice(v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Res {
        varint(self.0, v.len() as u64);
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
        varint(self.0, idx as u64);
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
        varint(self.0, idx as u64);
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> postcard::Result<Self> {
        varint(
            self.0,
            len.ok_or(postcard::Error::SerializeSeqLengthUnknown)? as u64,
        );
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
        varint(self.0, idx as u64);
        Ok(self)
    }
    fn serialize_map(self, len: Option<usize>) -> postcard::Result<Self> {
        varint(
            self.0,
            len.ok_or(postcard::Error::SerializeSeqLengthUnknown)? as u64,
        );
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
        varint(self.0, idx as u64);
        Ok(self)
    }
    fn collect_str<T: ?Sized + std::fmt::Display>(self, value: &T) -> Res {
        self.serialize_str(&value.to_string())
    }
}

macro_rules! compound {
    ($($tr:ident :: $m:ident),*) => {$(
        impl serde::ser::$tr for &mut Ser<'_> {
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

impl serde::ser::SerializeMap for &mut Ser<'_> {
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

impl serde::ser::SerializeStruct for &mut Ser<'_> {
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

impl serde::ser::SerializeStructVariant for &mut Ser<'_> {
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
}
