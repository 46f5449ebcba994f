//! Unnamed shared memory: a `memfd` mapped `MAP_SHARED`.
//!
//! A region vanishes with its last descriptor and mapping, so nothing can leak
//! into `/dev/shm` however the program ends. Queues, locks and `Value`s keep
//! their state in regions; a region reaches a child by
//! [`Handoff`](crate::handoff::Handoff) (its descriptor), and the child maps
//! it at an address of its own — so anything stored inside must be
//! position-independent (offsets, never pointers).
//!
//! A region's pages are reserved when it is made (`fallocate`: creation fails
//! with a clear error when memory is short, instead of a `SIGBUS` later), and
//! its size is **sealed** (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`): no
//! holder of the descriptor — this process, a child, a hostile peer — can
//! `ftruncate` it and make the others fault. An imported descriptor must
//! at least be sealed against shrinking.
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use rustix::mm::{MapFlags, ProtFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

/// The seals every region carries: its size cannot change.
const SEALS: rustix::fs::SealFlags =
    rustix::fs::SealFlags::SHRINK.union(rustix::fs::SealFlags::GROW);

/// A shared, zero-initialised memory region backed by a `memfd`.
///
/// Cloning is cheap (one mapping shared within the process). The mapping is
/// released when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Region {
    inner: Arc<Mapping>,
}

#[derive(Debug)]
struct Mapping {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory that lives until `Mapping` drops;
// all access to its contents goes through atomics or through types that
// document their own synchronisation.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned in `map`, and
        // no reference into the mapping outlives the last `Region` clone.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl Region {
    /// Creates a new zeroed region of `len` bytes (`name` shows in
    /// `/proc/PID/maps` as `memfd:NAME`), its pages reserved and its size
    /// sealed.
    ///
    /// # Errors
    ///
    /// An I/O error of kind `StorageFull` naming the size and the memory free
    /// when `len` bytes cannot be reserved.
    pub fn new(len: usize, name: &str) -> Result<Region> {
        let len = len.max(1);
        let fd = rustix::fs::memfd_create(
            name,
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        super::reserve(fd.as_fd(), len as u64, || "a shared memory region".into())?;
        rustix::fs::fcntl_add_seals(&fd, SEALS | rustix::fs::SealFlags::SEAL)?;
        Self::map(fd, len)
    }

    /// Maps an existing region's descriptor. Fails if the file is shorter
    /// than `len`, or if it is not sealed against shrinking (another holder
    /// could cut the pages from under the mapping).
    pub fn from_fd(fd: OwnedFd, len: usize) -> Result<Region> {
        // Growing cannot hurt a mapping; shrinking would make it fault.
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap_or(rustix::fs::SealFlags::empty());
        if !seals.contains(rustix::fs::SealFlags::SHRINK) {
            return Err(Error::Bootstrap(
                "shared region descriptor is not sealed against shrinking".into(),
            ));
        }
        let st = rustix::fs::fstat(&fd)?;
        if (st.st_size as u64) < len as u64 {
            return Err(Error::bootstrap(format!(
                "shared region is {} bytes, expected at least {len}",
                st.st_size
            )));
        }
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Region> {
        // SAFETY: a fresh shared mapping of a file we own; the kernel picks
        // the address, so no existing memory is replaced.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| Error::Io(std::io::Error::other("mmap returned null")))?;
        Ok(Region {
            inner: Arc::new(Mapping { fd, ptr, len }),
        })
    }

    /// The start of the mapping (page aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.ptr.as_ptr()
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Always `false`: regions have at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The backing descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    /// A reference to a `T` at byte `offset`.
    ///
    /// # Safety
    ///
    /// `offset` must be aligned for `T` and `offset + size_of::<T>() <= len`;
    /// every bit pattern (including all zeroes) must be a valid `T`, and all
    /// shared mutation of it must go through interior mutability (atomics).
    pub unsafe fn get<T>(&self, offset: usize) -> &T {
        debug_assert!(offset + std::mem::size_of::<T>() <= self.len());
        debug_assert!((self.as_ptr() as usize + offset) % std::mem::align_of::<T>() == 0);
        // SAFETY: the caller upholds bounds, alignment and validity.
        unsafe { &*self.as_ptr().add(offset).cast::<T>() }
    }
}

/// A window of a region's file mapped separately from the region's own
/// mapping (see [`Region::map_window`]): unmapped when dropped.
#[derive(Debug)]
pub(crate) struct Window {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: as for `Mapping`: plain shared memory that lives until the window
// drops; its users synchronise their own access.
unsafe impl Send for Window {}
// SAFETY: as above.
unsafe impl Sync for Window {}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned in
        // `map_window`, and no reference into the window outlives it.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl Window {
    /// The start of the window (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// `true` for the errors by which `fallocate` says "no memory for this".
fn is_out_of_memory(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::NOSPC || e == rustix::io::Errno::NOMEM
}

impl Region {
    /// A region whose memfd is `file_len` bytes long but *sparse*: only the
    /// first `len` bytes are mapped (by this handle and by every process that
    /// imports it) and reserved (`fallocate`, so writing them can never take
    /// SIGBUS); the rest costs nothing until pages of it are reserved with
    /// [`reserve`](Self::reserve), mapped with
    /// [`map_window`](Self::map_window), and given back with
    /// [`punch`](Self::punch). The size is sealed (`F_SEAL_SHRINK |
    /// F_SEAL_GROW`): nobody ever needs `ftruncate` after this.
    pub(crate) fn new_sparse(len: usize, file_len: u64, name: &str) -> Result<Region> {
        let len = len.max(1);
        if file_len < len as u64 {
            return Err(Error::Invalid(format!(
                "sparse region of {file_len} bytes cannot map {len}"
            )));
        }
        let fd = rustix::fs::memfd_create(
            name,
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, file_len)?;
        rustix::fs::fcntl_add_seals(
            &fd,
            rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW,
        )?;
        let region = Self::map(fd, len)?;
        region.reserve(0, len as u64)?;
        Ok(region)
    }

    /// Reserves (allocates) the pages of `offset..offset + len` of the file,
    /// so that writing them through any mapping cannot take SIGBUS.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] of kind `OutOfMemory`, naming the size, when the memory
    /// is not there.
    pub(crate) fn reserve(&self, offset: u64, len: u64) -> Result<()> {
        match rustix::fs::fallocate(
            self.fd(),
            rustix::fs::FallocateFlags::KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(()),
            Err(e) if is_out_of_memory(e) => Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("could not reserve {len} bytes of shared memory: {e}"),
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the pages of `offset..offset + len` back (`FALLOC_FL_PUNCH_HOLE`):
    /// they read as zeroes afterwards and must be reserved again before
    /// being written.
    pub(crate) fn punch(&self, offset: u64, len: u64) -> Result<()> {
        rustix::fs::fallocate(
            self.fd(),
            rustix::fs::FallocateFlags::KEEP_SIZE | rustix::fs::FallocateFlags::PUNCH_HOLE,
            offset,
            len,
        )?;
        Ok(())
    }

    /// Maps `len` bytes of the region's file from `offset` (page aligned),
    /// independently of the region's own mapping.
    pub(crate) fn map_window(&self, offset: u64, len: usize) -> Result<Window> {
        let st = rustix::fs::fstat(self.fd())?;
        if offset % 4096 != 0 || (st.st_size as u64) < offset.saturating_add(len as u64) {
            return Err(Error::bootstrap(format!(
                "shared region of {} bytes has no window of {len} bytes at {offset}",
                st.st_size
            )));
        }
        // SAFETY: a fresh shared mapping of a file we hold, inside its size
        // (checked above); the kernel picks the address, so no existing
        // memory is replaced.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::NORESERVE,
                self.fd(),
                offset,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| Error::Io(std::io::Error::other("mmap returned null")))?;
        Ok(Window { ptr, len })
    }
}
