//! `RawValue`, `RawArray` (unsynchronized) and `Value`, `Array` (with a lock):
//! plain data in unnamed shared memory.
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sync::{Lock, LockGuard, LockResult, OwnerDied};
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

/// Checks that `len` elements of `T` fit at `offset` in `region`, aligned.
fn check_place<T>(region: &Region, offset: usize, len: usize) -> Result<()> {
    let fits = len
        .checked_mul(size_of::<T>())
        .and_then(|b| b.checked_add(offset))
        .is_some_and(|end| end <= region.len());
    if !fits || offset % align_of::<T>() != 0 || align_of::<T>() > 4096 {
        return Err(Error::Bootstrap(format!(
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
fn region_with_header<T>(header: usize, len: usize, name: &str) -> Result<(Region, usize)> {
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
    fn at(region: Region, offset: usize) -> Result<RawValue<T>> {
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
    fn at(region: Region, offset: usize, len: usize) -> Result<RawArray<T>> {
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
            return Err(Error::Invalid(format!(
                "index {i} out of range for an array of {}",
                self.len
            )));
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
        ex.write(&(self.offset as u64, self.len as u64))
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let region = Region::import(im)?;
        let (offset, len) = im.read::<(u64, u64)>()?;
        RawArray::at(region, offset as usize, len as usize)
    }
}

/// A [`Lock`] and the region holding it plus `len` elements of `T` after it.
fn locked_region<T>(len: usize, name: &str) -> Result<(Lock, Region, usize)> {
    let (region, offset) = region_with_header::<T>(Lock::LOCK_BYTES, len, name)?;
    let lock = Lock::in_region(region.clone(), 0)?;
    Ok((lock, region, offset))
}

fn wrap_guard<'a, G>(
    acquired: LockResult<LockGuard<'a>>,
    make: impl FnOnce(LockGuard<'a>) -> G,
) -> LockResult<G> {
    match acquired {
        Ok(g) => Ok(make(g)),
        Err(died) => Err(OwnerDied::new(make(died.into_inner()))),
    }
}

/// One `T` in unnamed shared memory with a process-shared lock (Python's
/// `multiprocessing.Value`).
///
/// [`lock`](Self::lock) acquires the lock and returns a guard through which
/// the value is read and written (Python's `with v.get_lock(): v.value += 1`);
/// [`get`](Self::get) and [`set`](Self::set) each take the lock for one access
/// (Python's `.value`). The lock is a robust [`Lock`]: if a holder dies, the
/// next acquirer gets [`OwnerDied`] and the lock recovers. (CPython's default
/// is an `RLock`; a guard makes re-entrance unnecessary here.)
///
/// For integer `T`, [`as_atomic`](Self::as_atomic) gives a lock-free view of
/// the same memory (`&AtomicI64` for `Value<i64>`): atomic operations are
/// correct without the lock, and often much faster.
///
/// Clones share the value and the lock; it reaches a child as a
/// [`Process`](crate::Process) argument. The memory is a `memfd`: nothing in
/// `/dev/shm`, nothing to leak.
///
/// ```
/// use multiproc::shared::Value;
///
/// # fn main() -> multiproc::Result<()> {
/// let v = Value::new(0i64)?;
/// {
///     let g = v.lock()?;
///     g.set(g.get() + 1);
/// }
/// v.set(v.get()? * 10)?;
/// assert_eq!(v.get()?, 10);
/// assert_eq!(v.as_atomic().fetch_add(1, std::sync::atomic::Ordering::SeqCst), 10);
/// assert_eq!(v.get()?, 11);
/// # Ok(()) }
/// ```
pub struct Value<T> {
    raw: RawValue<T>,
    lock: Lock,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            raw: self.raw.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("value", &self.raw.get())
            .field("lock", &self.lock)
            .finish()
    }
}

impl<T: Pod> Value<T> {
    /// A new shared value holding `value`, with its own lock (one `memfd`
    /// holds both).
    ///
    /// # Errors
    ///
    /// `Io` if the memory cannot be created.
    pub fn new(value: T) -> Result<Value<T>> {
        let (lock, region, offset) = locked_region::<T>(1, "multiproc-value")?;
        let raw = RawValue::at(region, offset)?;
        raw.set(value);
        Ok(Value { raw, lock })
    }

    /// A new shared value guarded by an existing `lock` (Python's
    /// `Value(typecode, v, lock=lock)`), e.g. one lock for several values.
    ///
    /// # Errors
    ///
    /// `Io` if the memory cannot be created.
    pub fn with_lock(value: T, lock: Lock) -> Result<Value<T>> {
        Ok(Value {
            raw: RawValue::new(value)?,
            lock,
        })
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// The value without its lock (Python's `get_obj()`): reads and writes
    /// through it do not synchronize with the lock holders.
    pub fn get_obj(&self) -> &RawValue<T> {
        &self.raw
    }

    /// Acquires the lock; the guard reads and writes the value and releases
    /// the lock when dropped.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] (holding the guard) if a previous holder died holding
    /// the lock: the value may be half-updated.
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        let raw = &self.raw;
        wrap_guard(self.lock.acquire(), |guard| ValueGuard {
            raw,
            _guard: guard,
        })
    }

    /// Reads the value under the lock (Python's `v.value`).
    ///
    /// # Errors
    ///
    /// `OwnerDied` if a previous holder died holding the lock.
    pub fn get(&self) -> Result<T> {
        Ok(self.lock()?.get())
    }

    /// Writes the value under the lock (Python's `v.value = x`).
    ///
    /// # Errors
    ///
    /// `OwnerDied` if a previous holder died holding the lock (nothing is written).
    pub fn set(&self, value: T) -> Result<()> {
        self.lock()?.set(value);
        Ok(())
    }

    /// The value as its atomic twin, lock-free (`&AtomicI64` for `Value<i64>`).
    pub fn as_atomic(&self) -> &T::Atomic
    where
        T: AtomicView,
    {
        self.raw.as_atomic()
    }
}

impl<T: Pod> Handoff for Value<T> {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.lock.export(ex)?;
        self.raw.export(ex)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let lock = Lock::import(im)?;
        let raw = RawValue::import(im)?;
        Ok(Value { raw, lock })
    }
}

/// The lock of a [`Value`], held; derefs to the [`RawValue`] for
/// [`get`](RawValue::get) / [`set`](RawValue::set).
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T> {
    raw: &'a RawValue<T>,
    _guard: LockGuard<'a>,
}

impl<T> std::ops::Deref for ValueGuard<'_, T> {
    type Target = RawValue<T>;
    fn deref(&self) -> &RawValue<T> {
        self.raw
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&self.raw.get()).finish()
    }
}

/// A fixed-length array of `T` in unnamed shared memory with a
/// process-shared lock (Python's `multiprocessing.Array`).
///
/// As [`Value`]: [`lock`](Self::lock) returns a guard that derefs to the
/// [`RawArray`]; [`get`](Self::get), [`set`](Self::set) and
/// [`to_vec`](Self::to_vec) take the lock for one call;
/// [`as_atomic_slice`](Self::as_atomic_slice) is the lock-free view.
///
/// ```
/// use multiproc::shared::Array;
///
/// # fn main() -> multiproc::Result<()> {
/// let a = Array::from_slice(&[1.0f64, 2.0, 3.0])?;
/// {
///     let g = a.lock()?;
///     for i in 0..g.len() {
///         g.set(i, g.get(i).unwrap_or_default() * 2.0)?;
///     }
/// }
/// assert_eq!(a.to_vec()?, vec![2.0, 4.0, 6.0]);
/// assert!(a.get(3).is_err());
/// # Ok(()) }
/// ```
pub struct Array<T> {
    raw: RawArray<T>,
    lock: Lock,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            raw: self.raw.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("items", &self.raw.to_vec())
            .field("lock", &self.lock)
            .finish()
    }
}

impl<T: Pod> Array<T> {
    /// A shared array of `len` zeroed elements with its own lock (Python's
    /// `Array('i', 10)`).
    ///
    /// # Errors
    ///
    /// `Io` if the memory cannot be created.
    pub fn zeroed(len: usize) -> Result<Array<T>> {
        let (lock, region, offset) = locked_region::<T>(len, "multiproc-array")?;
        Ok(Array {
            raw: RawArray::at(region, offset, len)?,
            lock,
        })
    }

    /// A shared array holding a copy of `items`, with its own lock.
    ///
    /// # Errors
    ///
    /// `Io` if the memory cannot be created.
    pub fn from_slice(items: &[T]) -> Result<Array<T>> {
        let a = Self::zeroed(items.len())?;
        a.raw.copy_from_slice(items)?;
        Ok(a)
    }

    /// A shared array holding a copy of `items`, guarded by an existing lock.
    ///
    /// # Errors
    ///
    /// `Io` if the memory cannot be created.
    pub fn with_lock(items: &[T], lock: Lock) -> Result<Array<T>> {
        Ok(Array {
            raw: RawArray::from_slice(items)?,
            lock,
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// `true` if the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// The array without its lock (Python's `get_obj()`).
    pub fn get_obj(&self) -> &RawArray<T> {
        &self.raw
    }

    /// Acquires the lock; the guard derefs to the [`RawArray`].
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] (holding the guard) if a previous holder died holding it.
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        let raw = &self.raw;
        wrap_guard(self.lock.acquire(), |guard| ArrayGuard {
            raw,
            _guard: guard,
        })
    }

    /// Element `i`, read under the lock (Python's `a[i]`).
    ///
    /// # Errors
    ///
    /// `Invalid` if `i` is out of range; `OwnerDied` as for [`lock`](Self::lock).
    pub fn get(&self, i: usize) -> Result<T> {
        self.lock()?.get(i).ok_or_else(|| {
            Error::Invalid(format!(
                "index {i} out of range for an array of {}",
                self.len()
            ))
        })
    }

    /// Sets element `i` under the lock (Python's `a[i] = x`).
    ///
    /// # Errors
    ///
    /// `Invalid` if `i` is out of range; `OwnerDied` as for [`lock`](Self::lock).
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        self.lock()?.set(i, value)
    }

    /// Copies the elements out under the lock (Python's `a[:]`).
    ///
    /// # Errors
    ///
    /// `OwnerDied` as for [`lock`](Self::lock).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        Ok(self.lock()?.to_vec())
    }

    /// The elements as atomics, lock-free.
    pub fn as_atomic_slice(&self) -> &[T::Atomic]
    where
        T: AtomicView,
    {
        self.raw.as_atomic_slice()
    }
}

impl<T: Pod> Handoff for Array<T> {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.lock.export(ex)?;
        self.raw.export(ex)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let lock = Lock::import(im)?;
        let raw = RawArray::import(im)?;
        Ok(Array { raw, lock })
    }
}

/// The lock of an [`Array`], held; derefs to the [`RawArray`].
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T> {
    raw: &'a RawArray<T>,
    _guard: LockGuard<'a>,
}

impl<T> std::ops::Deref for ArrayGuard<'_, T> {
    type Target = RawArray<T>;
    fn deref(&self) -> &RawArray<T> {
        self.raw
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard")
            .field(&self.raw.to_vec())
            .finish()
    }
}
