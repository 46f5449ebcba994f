//! The serializer: postcard's format written straight into an [`Out`],
//! byte payloads whole (see [`as_bytes`]).

use super::{as_bytes, Out};
use serde::Serialize;

/// A `u128` varint (postcard's, up to 19 bytes).
fn varint128<O: Out>(out: &mut O, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A serde serializer writing postcard's format straight into an [`Out`]
/// (postcard's own goes through a generic output "flavor", which costs
/// several times more for small values).
pub(super) struct Ser<'a, O: Out>(&'a mut O);

impl<'a, O: Out> Ser<'a, O> {
    pub(super) fn new(out: &'a mut O) -> Self {
        Ser(out)
    }

    /// Writes `v`: a byte payload with one copy, anything else through
    /// its `Serialize` impl. Every value the serializer is handed, at the
    /// top or nested, comes through here.
    #[inline(always)]
    pub(super) fn value<T: ?Sized + Serialize>(&mut self, v: &T) -> Res {
        match as_bytes(v) {
            Some(b) => {
                self.0.varint(b.len() as u64);
                self.0.extend_from_slice(b);
                Ok(())
            }
            None => v.serialize(self),
        }
    }

    /// Stops a long sequence once the output is full.
    #[inline(always)]
    fn check(&self) -> Res {
        if self.0.full() {
            return Err(postcard::Error::SerializeBufferFull);
        }
        Ok(())
    }
}

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
    #[inline]
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
    #[inline]
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
    #[inline]
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
    #[inline]
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
        self.value(value)
    }
    #[inline]
    fn serialize_unit(self) -> Res {
        Ok(())
    }
    #[inline]
    fn serialize_unit_struct(self, _: &'static str) -> Res {
        Ok(())
    }
    #[inline]
    fn serialize_unit_variant(self, _: &'static str, idx: u32, _: &'static str) -> Res {
        self.0.varint(idx as u64);
        Ok(())
    }
    #[inline]
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Res {
        self.value(value)
    }
    #[inline]
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        idx: u32,
        _: &'static str,
        value: &T,
    ) -> Res {
        self.0.varint(idx as u64);
        self.value(value)
    }
    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> postcard::Result<Self> {
        self.0
            .varint(len.ok_or(postcard::Error::SerializeSeqLengthUnknown)? as u64);
        Ok(self)
    }
    #[inline]
    fn serialize_tuple(self, _: usize) -> postcard::Result<Self> {
        Ok(self)
    }
    #[inline]
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> postcard::Result<Self> {
        Ok(self)
    }
    #[inline]
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
    #[inline]
    fn serialize_map(self, len: Option<usize>) -> postcard::Result<Self> {
        self.0
            .varint(len.ok_or(postcard::Error::SerializeSeqLengthUnknown)? as u64);
        Ok(self)
    }
    #[inline]
    fn serialize_struct(self, _: &'static str, _: usize) -> postcard::Result<Self> {
        Ok(self)
    }
    #[inline]
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
    #[inline]
    fn collect_str<T: ?Sized + std::fmt::Display>(self, value: &T) -> Res {
        self.serialize_str(&value.to_string())
    }
}

/// The compound serializers: each element or field is a value, written in
/// order with nothing between (`check`: a sequence or map stops early once
/// a fixed output is full).
macro_rules! compound {
    ($($tr:ident :: $m:ident ($($key:ty)?) $check:literal),* $(,)?) => {$(
        impl<O: Out> serde::ser::$tr for &mut Ser<'_, O> {
            type Ok = ();
            type Error = postcard::Error;
            #[inline]
            fn $m<T: ?Sized + Serialize>(&mut self, $(_: $key,)? value: &T) -> Res {
                if $check {
                    self.check()?;
                }
                (**self).value(value)
            }
            #[inline]
            fn end(self) -> Res {
                Ok(())
            }
        }
    )*};
}
compound!(
    SerializeSeq::serialize_element() true,
    SerializeTuple::serialize_element() false,
    SerializeTupleStruct::serialize_field() false,
    SerializeTupleVariant::serialize_field() false,
    SerializeStruct::serialize_field(&'static str) false,
    SerializeStructVariant::serialize_field(&'static str) false,
);

impl<O: Out> serde::ser::SerializeMap for &mut Ser<'_, O> {
    type Ok = ();
    type Error = postcard::Error;
    #[inline]
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Res {
        self.check()?;
        (**self).value(key)
    }
    #[inline]
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Res {
        (**self).value(value)
    }
    #[inline]
    fn end(self) -> Res {
        Ok(())
    }
}
