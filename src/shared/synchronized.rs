//! `Value` and `Array`: a [`RawValue`] / [`RawArray`] with a process-shared
//! lock — by default an [`RLock`], as in CPython, so that Python's idiom
//! `with v.get_lock(): v.value += 1` works line for line.

use super::value::{region_with_header, AtomicView, RawArray, RawValue};
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sync::{LockResult, OwnerDied, RLock, SharedLock};
use bytemuck::Pod;
use std::fmt;

/// A new [`RLock`] and the region holding it plus `len` elements of `T`
/// after it (one `memfd` for both).
fn locked_region<T>(len: usize, name: &str) -> Result<(RLock, crate::sys::Region, usize)> {
    let (region, offset) = region_with_header::<T>(RLock::RLOCK_BYTES, len, name)?;
    let lock = RLock::in_region(region.clone(), 0)?;
    Ok((lock, region, offset))
}

/// Acquires `lock` and wraps its guard with `make`, keeping an
/// [`OwnerDied`] an `OwnerDied` (holding the wrapped guard).
fn acquire_wrapped<'a, L: SharedLock, G>(
    lock: &'a L,
    make: impl FnOnce(L::Guard<'a>) -> G,
) -> LockResult<G> {
    match lock.acquire_guard() {
        Ok(g) => Ok(make(g)),
        Err(died) => Err(OwnerDied::new(make(died.into_inner()))),
    }
}

/// One `T` in unnamed shared memory with a process-shared lock (Python's
/// `multiprocessing.Value`).
///
/// [`lock`](Self::lock) acquires the lock and returns a guard through which
/// the value is read and written; [`get`](Self::get) and [`set`](Self::set)
/// each take the lock for one access (Python's `.value`).
///
/// The lock is an [`RLock`] by default, as in CPython, so Python's idiom
/// ports line for line — [`get_lock`](Self::get_lock) held while `get` and
/// `set` take the lock again:
///
/// ```
/// use multiproc::shared::Value;
///
/// # fn main() -> multiproc::Result<()> {
/// let v = Value::new(0i64)?;
/// {
///     let _g = v.get_lock().acquire()?;  // with v.get_lock():
///     v.set(v.get()? + 1)?;              //     v.value += 1
/// }
/// {
///     let g = v.lock()?;                 // or through the guard
///     g.set(g.get() + 1);
/// }
/// assert_eq!(v.get()?, 2);
/// assert_eq!(v.as_atomic().fetch_add(1, std::sync::atomic::Ordering::SeqCst), 2);
/// assert_eq!(v.get()?, 3);
/// # Ok(()) }
/// ```
///
/// [`with_lock`](Self::with_lock) takes an existing [`RLock`] or
/// [`Lock`](crate::sync::Lock) (Python's `lock=`), e.g. one lock for several
/// values; with a `Lock`, which is not re-entrant, do not call `get`/`set`
/// while holding it (use the guard of [`lock`](Self::lock)). Either lock is
/// robust: if a holder dies, the next acquirer gets [`OwnerDied`] and the
/// lock recovers.
///
/// For integer `T`, [`as_atomic`](Self::as_atomic) gives a lock-free view of
/// the same memory (`&AtomicI64` for `Value<i64>`): atomic operations are
/// correct without the lock, and often much faster.
///
/// Clones share the value and the lock; it reaches a child as a
/// [`Process`](crate::Process) argument. The memory is a `memfd`: nothing in
/// `/dev/shm`, nothing to leak.
pub struct Value<T, L: SharedLock = RLock> {
    raw: RawValue<T>,
    lock: L,
}

impl<T, L: SharedLock> Clone for Value<T, L> {
    fn clone(&self) -> Self {
        Value {
            raw: self.raw.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: Pod + fmt::Debug, L: SharedLock + fmt::Debug> fmt::Debug for Value<T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("value", &self.raw.get())
            .field("lock", &self.lock)
            .finish()
    }
}

impl<T: Pod> Value<T> {
    /// A new shared value holding `value`, with its own [`RLock`] (one
    /// `memfd` holds both).
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
}

impl<T: Pod, L: SharedLock> Value<T, L> {
    /// A new shared value guarded by an existing `lock` — an [`RLock`] or a
    /// [`Lock`](crate::sync::Lock) (Python's `Value(typecode, v, lock=lock)`),
    /// e.g. one lock for several values.
    ///
    /// # Errors
    ///
    /// `Io` if the memory cannot be created.
    pub fn with_lock(value: T, lock: L) -> Result<Value<T, L>> {
        Ok(Value {
            raw: RawValue::new(value)?,
            lock,
        })
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &L {
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
    #[inline]
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T, L>> {
        let raw = &self.raw;
        acquire_wrapped(&self.lock, |guard| ValueGuard { raw, _guard: guard })
    }

    /// Reads the value under the lock (Python's `v.value`).
    ///
    /// # Errors
    ///
    /// `OwnerDied` if a previous holder died holding the lock.
    #[inline]
    pub fn get(&self) -> Result<T> {
        Ok(self.lock()?.get())
    }

    /// Writes the value under the lock (Python's `v.value = x`).
    ///
    /// # Errors
    ///
    /// `OwnerDied` if a previous holder died holding the lock (nothing is written).
    #[inline]
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

impl<T: Pod, L: SharedLock> Handoff for Value<T, L> {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.lock.export(ex)?;
        self.raw.export(ex)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let lock = L::import(im)?;
        let raw = RawValue::import(im)?;
        Ok(Value { raw, lock })
    }
}

/// The lock of a [`Value`], held; derefs to the [`RawValue`] for
/// [`get`](RawValue::get) / [`set`](RawValue::set).
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T, L: SharedLock + 'a = RLock> {
    raw: &'a RawValue<T>,
    _guard: L::Guard<'a>,
}

impl<T, L: SharedLock> std::ops::Deref for ValueGuard<'_, T, L> {
    type Target = RawValue<T>;
    fn deref(&self) -> &RawValue<T> {
        self.raw
    }
}

impl<T: Pod + fmt::Debug, L: SharedLock> fmt::Debug for ValueGuard<'_, T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&self.raw.get()).finish()
    }
}

/// A fixed-length array of `T` in unnamed shared memory with a
/// process-shared lock (Python's `multiprocessing.Array`), an [`RLock`] by
/// default (see [`Value`]).
///
/// As [`Value`]: [`lock`](Self::lock) returns a guard that derefs to the
/// [`RawArray`]; [`get`](Self::get), [`set`](Self::set) and
/// [`to_vec`](Self::to_vec) take the lock for one call (also while the
/// caller holds [`get_lock`](Self::get_lock), the lock being re-entrant);
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
pub struct Array<T, L: SharedLock = RLock> {
    raw: RawArray<T>,
    lock: L,
}

impl<T, L: SharedLock> Clone for Array<T, L> {
    fn clone(&self) -> Self {
        Array {
            raw: self.raw.clone(),
            lock: self.lock.clone(),
        }
    }
}

impl<T: Pod + fmt::Debug, L: SharedLock + fmt::Debug> fmt::Debug for Array<T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("items", &self.raw.to_vec())
            .field("lock", &self.lock)
            .finish()
    }
}

impl<T: Pod> Array<T> {
    /// A shared array of `len` zeroed elements with its own [`RLock`]
    /// (Python's `Array('i', 10)`).
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

    /// A shared array holding a copy of `items`, with its own [`RLock`].
    ///
    /// # Errors
    ///
    /// `Io` if the memory cannot be created.
    pub fn from_slice(items: &[T]) -> Result<Array<T>> {
        let a = Self::zeroed(items.len())?;
        a.raw.copy_from_slice(items)?;
        Ok(a)
    }
}

impl<T: Pod, L: SharedLock> Array<T, L> {
    /// A shared array holding a copy of `items`, guarded by an existing
    /// [`RLock`] or [`Lock`](crate::sync::Lock).
    ///
    /// # Errors
    ///
    /// `Io` if the memory cannot be created.
    pub fn with_lock(items: &[T], lock: L) -> Result<Array<T, L>> {
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
    pub fn get_lock(&self) -> &L {
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
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T, L>> {
        let raw = &self.raw;
        acquire_wrapped(&self.lock, |guard| ArrayGuard { raw, _guard: guard })
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

impl<T: Pod, L: SharedLock> Handoff for Array<T, L> {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.lock.export(ex)?;
        self.raw.export(ex)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let lock = L::import(im)?;
        let raw = RawArray::import(im)?;
        Ok(Array { raw, lock })
    }
}

/// The lock of an [`Array`], held; derefs to the [`RawArray`].
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T, L: SharedLock + 'a = RLock> {
    raw: &'a RawArray<T>,
    _guard: L::Guard<'a>,
}

impl<T, L: SharedLock> std::ops::Deref for ArrayGuard<'_, T, L> {
    type Target = RawArray<T>;
    fn deref(&self) -> &RawArray<T> {
        self.raw
    }
}

impl<T: Pod + fmt::Debug, L: SharedLock> fmt::Debug for ArrayGuard<'_, T, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard")
            .field(&self.raw.to_vec())
            .finish()
    }
}
