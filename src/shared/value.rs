//! `RawValue`, `RawArray` (unsynchronized) and `Value`, `Array` (with a lock):
//! plain data in unnamed shared memory.

use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::Region;
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

fn region_for<T>(len: usize, name: &str) -> Result<Region> {
    if align_of::<T>() > 4096 {
        return Err(Error::Invalid("types aligned to more than a page cannot be shared".into()));
    }
    let bytes = len
        .checked_mul(size_of::<T>())
        .ok_or_else(|| Error::Invalid(format!("an array of {len} elements does not fit in memory")))?;
    Region::new(bytes, name)
}

/// One `T` in unnamed shared memory, without a lock (Python's
/// `multiprocessing.sharedctypes.RawValue`).
///
/// `T` is any [`bytemuck::Pod`] type: integers, floats, and `#[repr(C)]`
/// structs of them that derive `Pod` (`bool` is not `Pod`: use `u8`, as
/// Python's `'b'` typecode does). Clones share the value; it reaches a child
/// as a [`Process`](crate::Process) argument.
///
/// [`get`](Self::get) and [`set`](Self::set) are single volatile copies: with
/// concurrent writers a value wider than one machine word may be read torn.
/// For read-modify-write use [`as_atomic`](Self::as_atomic) (integer `T`),
/// or a [`Value`], which has a lock.
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
    _t: PhantomData<T>,
}

impl<T> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue { region: self.region.clone(), _t: PhantomData }
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
        let v = RawValue { region: region_for::<T>(1, "multiproc-value")?, _t: PhantomData };
        v.set(value);
        Ok(v)
    }

    /// A pointer to the shared `T` (valid while any clone lives).
    pub fn as_ptr(&self) -> *mut T {
        self.region.as_ptr().cast::<T>()
    }

    /// Reads the value.
    pub fn get(&self) -> T {
        // SAFETY: the region holds one aligned, initialised `T` (zeroed or
        // written by `set`); every bit pattern is a valid `Pod`. A volatile
        // read through a raw pointer creates no reference that others'
        // writes could invalidate.
        unsafe { self.as_ptr().read_volatile() }
    }

    /// Writes the value.
    pub fn set(&self, value: T) {
        // SAFETY: as in `get`; the region is writable and no safe method
        // hands out a plain reference to it.
        unsafe { self.as_ptr().write_volatile(value) }
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
        self.region.export(ex)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let region = Region::import(im)?;
        if region.len() < size_of::<T>() {
            return Err(Error::Bootstrap("shared value is smaller than its type".into()));
        }
        Ok(RawValue { region, _t: PhantomData })
    }
}

/// A fixed-length array of `T` in unnamed shared memory, without a lock
/// (Python's `multiprocessing.sharedctypes.RawArray`).
///
/// Same rules as [`RawValue`]: element reads and writes are volatile copies,
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
    len: usize,
    _t: PhantomData<T>,
}

impl<T> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray { region: self.region.clone(), len: self.len, _t: PhantomData }
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
        Ok(RawArray { region: region_for::<T>(len, "multiproc-array")?, len, _t: PhantomData })
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
        self.region.as_ptr().cast::<T>()
    }

    /// Element `i`, or `None` if out of bounds.
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        // SAFETY: `i` is in bounds of the aligned region; any bits are a
        // valid `Pod`; a volatile raw-pointer read creates no reference.
        Some(unsafe { self.as_ptr().add(i).read_volatile() })
    }

    /// Sets element `i`.
    ///
    /// # Errors
    ///
    /// `Invalid` if `i` is out of bounds (Python's `IndexError`).
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        if i >= self.len {
            return Err(Error::Invalid(format!("index {i} out of range for an array of {}", self.len)));
        }
        // SAFETY: as in `get`; the region is writable.
        unsafe { self.as_ptr().add(i).write_volatile(value) };
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
            // SAFETY: `i < len`, aligned, writable.
            unsafe { self.as_ptr().add(i).write_volatile(v) };
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
        ex.write(&(self.len as u64))
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let region = Region::import(im)?;
        let len = im.read::<u64>()? as usize;
        if len.checked_mul(size_of::<T>()).map_or(true, |b| b > region.len()) {
            return Err(Error::Bootstrap("shared array is smaller than its length says".into()));
        }
        Ok(RawArray { region, len, _t: PhantomData })
    }
}
