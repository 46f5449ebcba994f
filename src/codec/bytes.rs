//! Byte payloads as bytes: recognising `Vec<u8>` and its kin in generic
//! serde code, where serde would move them one element at a time.
//!
//! serde gives a serializer each value as a `&T` of a generic `T`, and a
//! deserializer each target as a generic visitor `V`; neither is `'static`,
//! so `std::any::Any` cannot name them. [`type_id`] is `TypeId::of` without
//! the `'static` bound (lifetimes are erased, which is all these checks
//! need: none of the byte types has a lifetime of its own beyond a borrow).
#![allow(unsafe_code)]

use serde::de::{Deserialize, Deserializer, Visitor};
use std::any::TypeId;
use std::marker::PhantomData;

/// A type id ignoring lifetimes, for any `T` (the `'static` bound of
/// `TypeId::of` is only about lifetimes, which code generation erases).
#[inline(always)]
pub(super) fn type_id<T: ?Sized>() -> TypeId {
    trait Named {
        fn id(&self) -> TypeId
        where
            Self: 'static;
    }
    impl<T: ?Sized> Named for PhantomData<T> {
        #[inline(always)]
        fn id(&self) -> TypeId
        where
            Self: 'static,
        {
            TypeId::of::<T>()
        }
    }
    let marker = PhantomData::<T>;
    let named: &dyn Named = &marker;
    // SAFETY: only the lifetime bound of the trait object changes; `id`
    // reads nothing of `self` (a zero-sized marker) and returns the id of
    // `T` with its lifetimes erased, as every type id is. Nothing outlives
    // the call.
    let named: &(dyn Named + 'static) = unsafe { std::mem::transmute(named) };
    named.id()
}

/// The bytes of `value` if it is a `Vec<u8>`, `[u8]`, `Box<[u8]>`,
/// `&[u8]`, `&Vec<u8>` or `&mut [u8]` (whose serde form is a sequence of
/// `u8`: the same bytes as `serialize_bytes` writes), else `None`. The
/// checks are constants of each `T`, so they cost nothing at run time.
#[inline(always)]
pub(crate) fn as_bytes<T: ?Sized>(value: &T) -> Option<&[u8]> {
    let id = type_id::<T>();
    let p = value as *const T;
    if id == type_id::<Vec<u8>>() {
        // SAFETY: `T` is `Vec<u8>` (equal type ids), a sized type: `p` is a
        // thin pointer to one, valid for the borrow of `value`.
        return Some(unsafe { &*p.cast::<Vec<u8>>() });
    }
    if id == type_id::<Box<[u8]>>() {
        // SAFETY: `T` is `Box<[u8]>`, as above.
        return Some(unsafe { &*p.cast::<Box<[u8]>>() });
    }
    if id == type_id::<&[u8]>() || id == type_id::<&mut [u8]>() {
        // SAFETY: `T` is `&[u8]` or `&mut [u8]` (same layout; read only
        // shared here), whose target outlives the borrow of `value`.
        return Some(unsafe { *p.cast::<&[u8]>() });
    }
    if id == type_id::<&Vec<u8>>() {
        // SAFETY: `T` is `&Vec<u8>`, as above.
        return Some(unsafe { *p.cast::<&Vec<u8>>() });
    }
    if id == type_id::<[u8]>() {
        // SAFETY: `T` is `[u8]`: `&T` is a `&[u8]`, the same fat pointer.
        return Some(unsafe { std::mem::transmute_copy::<&T, &[u8]>(&value) });
    }
    None
}

/// Whether `V` is the visitor through which serde deserializes a `Vec<u8>`
/// (and so a `Box<[u8]>`), which builds the vector from a sequence of `u8`
/// one element at a time. Found by asking `Vec::<u8>::deserialize` for it
/// (no allocation and no lock: safe in a child just forked).
#[inline(always)]
pub(super) fn is_byte_vec_visitor<'de, V: Visitor<'de>>() -> bool {
    type_id::<V::Value>() == type_id::<Vec<u8>>() && type_id::<V>() == byte_vec_visitor()
}

/// `v` as a `T`, if `T` is `Vec<u8>`.
#[inline(always)]
pub(super) fn vec_as<T>(v: Vec<u8>) -> Option<T> {
    if type_id::<T>() != type_id::<Vec<u8>>() {
        return None;
    }
    let v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `T` is `Vec<u8>` (equal type ids; `Vec<u8>` has no
    // lifetime), so this moves the vector out of the `ManuallyDrop`, which
    // never drops it.
    Some(unsafe { std::ptr::read((&*v as *const Vec<u8>).cast::<T>()) })
}

/// `x` itself as a `Vec<u8>` if `X` is `Vec<u8>` (moved, not copied), else
/// `x` back.
#[inline(always)]
pub(crate) fn into_byte_vec<X>(x: X) -> Result<Vec<u8>, X> {
    if type_id::<X>() != type_id::<Vec<u8>>() {
        return Err(x);
    }
    let x = std::mem::ManuallyDrop::new(x);
    // SAFETY: `X` is `Vec<u8>` (equal type ids; `Vec<u8>` has no
    // lifetime), so this moves the vector out of the `ManuallyDrop`, which
    // never drops it.
    Ok(unsafe { std::ptr::read((&*x as *const X).cast::<Vec<u8>>()) })
}

fn byte_vec_visitor() -> TypeId {
    let mut id = None;
    let _ = Vec::<u8>::deserialize(Probe(&mut id));
    // A serde that read vectors otherwise: a type id no visitor has.
    id.unwrap_or_else(type_id::<Probe<'static>>)
}

/// A deserializer that only notes the visitor `deserialize_seq` is given.
struct Probe<'a>(&'a mut Option<TypeId>);

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probe")
    }
}

impl std::error::Error for Stop {}

impl serde::de::Error for Stop {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Stop;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        *self.0 = Some(type_id::<V>());
        Err(Stop)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct tuple
        tuple_struct map struct enum identifier ignored_any
    }
}
