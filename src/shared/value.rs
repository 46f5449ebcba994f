//! `RawValue`, `RawArray`: plain data in unnamed shared memory, without a
//! lock (the locked `Value`, `Array` are in `synchronized`).
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::{atomic_copy, Region};
use bytemuck::Pod;
use std::fmt;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::sync::atomic;

/// Plain-data types with an atomic twin of the same size and alignment, so
/// shared memory holding them can be viewed as atomics
/// ([`RawValue::as_atomic`], [`RawArray::as_atomic_slice`]).
///
/// # Safety
///
/// `Self::Atomic` must have the size, alignment and bit validity of `Self`
/// (the standard library's `AtomicI64` for `i64`, and so on).
pub unsafe trait AtomicView: Pod {
    /// The atomic type (`AtomicI64` for `i64`, …).
    type Atomic: Sync;
}

macro_rules! atomic_view {
    ($($t:ty => $a:ty),* $(,)?) => {
        $(
            // SAFETY: the std atomic has the same size, alignment and bit
            // validity as its integer (documented by the standard library;
            // `AtomicU64`/`AtomicI64` are 8-aligned on every target this
            // crate builds for, Linux x86_64 and aarch64).
            unsafe impl AtomicView for $t {
                type Atomic = $a;
            }
        )*
    };
}

atomic_view! {
    i8 => atomic::AtomicI8, u8 => atomic::AtomicU8,
    i16 => atomic::AtomicI16, u16 => atomic::AtomicU16,
    i32 => atomic::AtomicI32, u32 => atomic::AtomicU32,
    i64 => atomic::AtomicI64, u64 => atomic::AtomicU64,
    isize => atomic::AtomicIsize, usize => atomic::AtomicUsize,
}

/// Checks that `len` elements of `T` fit at `offset` in `region`, aligned.
fn check_place<T>(region: &Region, offset: usize, len: usize) -> Result<()> {
    let fits = len
        .checked_mul(size_of::<T>())
        .and_then(|b| b.checked_add(offset))
        .is_some_and(|end| end <= region.len());
    if !fits || offset % align_of::<T>() != 0 || align_of::<T>() > 4096 {
        return Err(Error::bootstrap(format!(
            "{len} shared element(s) of {} bytes do not fit at offset {offset} of a region of {} bytes",
            size_of::<T>(),
            region.len()
        )));
    }
    Ok(())
}

fn region_for<T>(len: usize, name: &str) -> Result<Region> {
    if align_of::<T>() > 4096 {
        return Err(Error::Invalid(
            "types aligned to more than a page cannot be shared".into(),
        ));
    }
    region_with_header::<T>(0, len, name).map(|(r, _)| r)
}

/// A region with `header` bytes (e.g. a lock), then `len` elements of `T`
/// at an aligned offset, which is returned.
pub(super) fn region_with_header<T>(
    header: usize,
    len: usize,
    name: &str,
) -> Result<(Region, usize)> {
    let align = align_of::<T>();
    let offset = header.div_ceil(align) * align;
    let bytes = len
        .checked_mul(size_of::<T>())
        .and_then(|b| b.checked_add(offset))
        .ok_or_else(|| {
            Error::Invalid(format!("an array of {len} elements does not fit in memory"))
        })?;
    Ok((Region::new(bytes, name)?, offset))
}

/// One `T` in unnamed shared memory, without a lock (Python's
/// `multiprocessing.sharedctypes.RawValue`).
///
/// `T` is any [`bytemuck::Pod`] type: integers, floats, and `#[repr(C)]`
/// structs of them that derive `Pod` (`bool` is not `Pod`: use `u8`, as
/// Python's `'b'` typecode does). Clones share the value; it reaches a child
/// as a [`Process`](crate::Process) argument.
///
/// [`get`](Self::get) and [`set`](Self::set) copy with relaxed atomic
/// accesses, one per aligned word (8 bytes, or `T`'s alignment if smaller),
/// so racing with other threads or processes is defined behaviour: a `get`
/// that races with a `set` returns, word by word, either the old or the new
/// word — a `T` wider than one word may mix the two (torn across words),
/// a word is never torn. For read-modify-write use
/// [`as_atomic`](Self::as_atomic) (integer `T`), or a [`Value`](super::Value), which has a
/// lock.
///
/// ```
/// use multiproc::shared::RawValue;
/// use std::sync::atomic::Ordering;
///
/// # fn main() -> multiproc::Result<()> {
/// let v = RawValue::new(1.5f64)?;
/// v.set(v.get() * 2.0);
/// assert_eq!(v.get(), 3.0);
///
/// let n = RawValue::new(0u64)?;
/// n.as_atomic().fetch_add(5, Ordering::Relaxed);
/// assert_eq!(n.get(), 5);
/// # Ok(()) }
/// ```
pub struct RawValue<T> {
    region: Region,
    offset: usize,
    _t: PhantomData<T>,
}

impl<T> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue {
            region: self.region.clone(),
            offset: self.offset,
            _t: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawValue").field(&self.get()).finish()
    }
}

impl<T: Pod> RawValue<T> {
    /// A new shared value holding `value`.
    ///
    /// # Errors
    ///
    /// `Io` if the memory cannot be created.
    pub fn new(value: T) -> Result<RawValue<T>> {
        let v = RawValue::at(region_for::<T>(1, "multiproc-value")?, 0)?;
        v.set(value);
        Ok(v)
    }

    /// The `T` at `offset` in `region` (bounds and alignment checked).
    pub(super) fn at(region: Region, offset: usize) -> Result<RawValue<T>> {
        check_place::<T>(&region, offset, 1)?;
        Ok(RawValue {
            region,
            offset,
            _t: PhantomData,
        })
    }

    /// A pointer to the shared `T` (valid while any clone lives).
    pub fn as_ptr(&self) -> *mut T {
        // SAFETY: `offset` is inside the region (checked in `at`).
        unsafe { self.region.as_ptr().add(self.offset).cast::<T>() }
    }

    /// Reads the value (atomically per word; see the type's docs for what a
    /// read racing with a write may see).
    #[inline]
    pub fn get(&self) -> T {
        // SAFETY: the region holds one aligned `T` (checked in `at`); every
        // bit pattern is a valid `Pod`; safe code accesses it only through
        // these atomic copies or the atomic view.
        unsafe { atomic_copy::load(self.as_ptr()) }
    }

    /// Writes the value (atomically per word).
    #[inline]
    pub fn set(&self, value: T) {
        // SAFETY: as in `get`; the mapping is writable.
        unsafe { atomic_copy::store(self.as_ptr(), value) }
    }

    /// The value as its atomic twin (`&AtomicI64` for `RawValue<i64>`):
    /// lock-free, and sound under any concurrent access.
    pub fn as_atomic(&self) -> &T::Atomic
    where
        T: AtomicView,
    {
        // SAFETY: `T::Atomic` has `T`'s layout (trait contract); the region
        // is aligned and lives as long as `self`; atomics allow sharing.
        unsafe { &*self.as_ptr().cast::<T::Atomic>() }
    }

    /// A plain mutable reference to the shared `T`.
    ///
    /// # Safety
    ///
    /// While the reference is used, nobody else — no other process, thread
    /// or clone — may access the value.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut(&self) -> &mut T {
        // SAFETY: aligned, initialised, valid for any bits; exclusivity is
        // the caller's promise.
        unsafe { &mut *self.as_ptr() }
    }
}

impl<T: Pod> Handoff for RawValue<T> {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.region.export(ex)?;
        ex.write(&(self.offset as u64))
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let region = Region::import(im)?;
        let offset = im.read::<u64>()? as usize;
        RawValue::at(region, offset)
    }
}

/// A fixed-length array of `T` in unnamed shared memory, without a lock
/// (Python's `multiprocessing.sharedctypes.RawArray`).
///
/// Same rules as [`RawValue`]: element reads and writes are atomic per word
/// (a racing reader may see an element torn across words, never a torn
/// word, never undefined behaviour),
/// [`as_atomic_slice`](Self::as_atomic_slice) gives atomics for integer `T`,
/// and plain slices are `unsafe`. Clones share the array.
///
/// ```
/// use multiproc::shared::RawArray;
///
/// # fn main() -> multiproc::Result<()> {
/// let a = RawArray::from_slice(&[1i32, 2, 3])?;
/// a.set(1, 20)?;
/// assert_eq!(a.to_vec(), vec![1, 20, 3]);
/// assert_eq!(a.get(3), None);
/// assert!(a.set(3, 0).is_err());
/// # Ok(()) }
/// ```
pub struct RawArray<T> {
    region: Region,
    offset: usize,
    len: usize,
    _t: PhantomData<T>,
}

impl<T> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray {
            region: self.region.clone(),
            offset: self.offset,
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawArray").field(&self.to_vec()).finish()
    }
}

impl<T: Pod> RawArray<T> {
    /// A shared array of `len` zeroed elements (Python's `RawArray('i', 10)`).
    ///
    /// # Errors
    ///
    /// `Io` if the memory cannot be created.
    pub fn zeroed(len: usize) -> Result<RawArray<T>> {
        RawArray::at(region_for::<T>(len, "multiproc-array")?, 0, len)
    }

    /// `len` elements at `offset` in `region` (bounds and alignment checked).
    pub(super) fn at(region: Region, offset: usize, len: usize) -> Result<RawArray<T>> {
        check_place::<T>(&region, offset, len)?;
        Ok(RawArray {
            region,
            offset,
            len,
            _t: PhantomData,
        })
    }

    /// A shared array holding a copy of `items`.
    ///
    /// # Errors
    ///
    /// `Io` if the memory cannot be created.
    pub fn from_slice(items: &[T]) -> Result<RawArray<T>> {
        let a = Self::zeroed(items.len())?;
        // SAFETY: the fresh region holds `len` elements and is not shared yet.
        unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), a.as_ptr(), items.len()) };
        Ok(a)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` if the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A pointer to the first element.
    pub fn as_ptr(&self) -> *mut T {
        // SAFETY: `offset` is inside the region (checked in `at`).
        unsafe { self.region.as_ptr().add(self.offset).cast::<T>() }
    }

    /// Element `i`, or `None` if out of bounds.
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        // SAFETY: `i` is in bounds of the aligned region; any bits are a
        // valid `Pod`; safe code accesses it only atomically.
        Some(unsafe { atomic_copy::load(self.as_ptr().add(i)) })
    }

    /// Sets element `i`.
    ///
    /// # Errors
    ///
    /// `Invalid` if `i` is out of bounds (Python's `IndexError`).
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        if i >= self.len {
            return Err(Error::Invalid(format!(
                "index {i} out of range for an array of {}",
                self.len
            )));
        }
        // SAFETY: as in `get`; the region is writable.
        unsafe { atomic_copy::store(self.as_ptr().add(i), value) };
        Ok(())
    }

    /// Copies the elements out.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len).filter_map(|i| self.get(i)).collect()
    }

    /// Overwrites every element from `items` (same length).
    ///
    /// # Errors
    ///
    /// `Invalid` if the lengths differ.
    pub fn copy_from_slice(&self, items: &[T]) -> Result<()> {
        if items.len() != self.len {
            return Err(Error::Invalid(format!(
                "cannot copy {} elements into an array of {}",
                items.len(),
                self.len
            )));
        }
        for (i, &v) in items.iter().enumerate() {
            // SAFETY: `i < len`, aligned, writable, accessed atomically.
            unsafe { atomic_copy::store(self.as_ptr().add(i), v) };
        }
        Ok(())
    }

    /// The elements as atomics (`&[AtomicI64]` for `RawArray<i64>`).
    pub fn as_atomic_slice(&self) -> &[T::Atomic]
    where
        T: AtomicView,
    {
        // SAFETY: `len` elements of `T::Atomic`'s layout (trait contract),
        // aligned, living as long as `self`; atomics allow sharing.
        unsafe { std::slice::from_raw_parts(self.as_ptr().cast::<T::Atomic>(), self.len) }
    }

    /// The elements as a plain slice.
    ///
    /// # Safety
    ///
    /// While the slice is used nobody (process, thread or clone) may write
    /// the array.
    pub unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: bounds and alignment as above; no writers by contract.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// The elements as a plain mutable slice.
    ///
    /// # Safety
    ///
    /// While the slice is used nobody else (process, thread or clone) may
    /// access the array.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [T] {
        // SAFETY: bounds and alignment as above; exclusivity by contract.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len) }
    }
}

impl<T: Pod> Handoff for RawArray<T> {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.region.export(ex)?;
        ex.write(&(self.offset as u64, self.len as u64))
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let region = Region::import(im)?;
        let (offset, len) = im.read::<(u64, u64)>()?;
        RawArray::at(region, offset as usize, len as usize)
    }
}
