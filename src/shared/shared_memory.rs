//! Named POSIX shared memory, compatible with CPython's
//! `multiprocessing.shared_memory.SharedMemory` on Linux.
#![allow(unsafe_code)]

use super::tracker;
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::sys::atomic_copy;
use crate::sys::shm::{self, ShmPath, MAX_NAME};
use rustix::fs::{Mode, OFlags};
use rustix::mm::{MapFlags, ProtFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// CPython's prefix for generated names (`/psm_` + 8 hex digits).
const NAME_PREFIX: &str = "/psm_";
/// Blocks of at least this many bytes have their pages reserved at creation
/// (`fallocate`); smaller ones are only checked against the free space
/// (`fstatvfs`), since reserving a page costs about as much as the rest of
/// creating a small block.
const RESERVE_FROM: usize = 64 << 10;

/// A named block of shared memory (Python's
/// `multiprocessing.shared_memory.SharedMemory`).
///
/// A block is a POSIX shared memory object (`shm_open`, a file in
/// `/dev/shm`) mapped into this process. Any process that knows its
/// [`name`](Self::name) can [`open`](Self::open) it — including a Python
/// process: names, sizes and contents are CPython's on Linux
/// (`SharedMemory(name="psm_1a2b3c4d")` in Python attaches to the block that
/// `SharedMemory::create(..)` made here, and the other way round).
///
/// # Lifetime
///
/// - [`create`](Self::create) / [`create_named`](Self::create_named) make a
///   new object and register its name with this program's
///   [resource tracker](super::tracker); [`open`](Self::open) attaches to an
///   existing one (and registers nothing).
/// - [`close`](Self::close) (or dropping the handle) unmaps this process's
///   view; the block lives on.
/// - [`unlink`](Self::unlink) removes the name (once, from any one process)
///   and unregisters it; mappings that exist stay valid until closed.
/// - A name still registered when the program ends — normally or by
///   `SIGKILL` — is unlinked by the tracker, which prints a warning.
/// - Children started by *fork* share their parent's tracker; a child
///   started by *spawn* that creates a block gets a tracker of its own, so
///   the block is unlinked when that child ends, unless it was made with
///   [`create_untracked`](Self::create_untracked) (or unregistered).
///
/// # Accessing the bytes: aliasing rules
///
/// The bytes are shared with every other process (and every other handle in
/// this process) that maps the same block, and Rust cannot see their writes.
/// Hence:
///
/// - [`as_atomic_bytes`](Self::as_atomic_bytes),
///   [`atomic_u64`](Self::atomic_u64), [`read_at`](Self::read_at) and
///   [`write_at`](Self::write_at) are safe: atomics are sound under any
///   concurrent access, and the copies are made of relaxed atomic accesses —
///   one per aligned 8-byte word, one per byte for the unaligned head and
///   tail — so a copy that races with another writer may see a mix of old
///   and new words (torn across words, never within one), nothing worse.
///   (Within one process, Rust's memory model also asks that racing atomic
///   writes to the same bytes use one access size: do not race `write_at`
///   with [`as_atomic_bytes`](Self::as_atomic_bytes) stores on the same
///   word);
/// - [`as_slice`](Self::as_slice) and [`as_mut_slice`](Self::as_mut_slice)
///   give plain `&[u8]` / `&mut [u8]` and are `unsafe`: while the slice is in
///   use, nobody else may write the block (for `as_slice`) or access it at
///   all (for `as_mut_slice`) — typically guaranteed by a
///   [`Lock`](crate::sync) held by every party, or by a protocol such as
///   "the child writes, exits, then the parent reads".
///
/// A block reaches a child as a [`Process`](crate::Process) argument (its
/// descriptor travels; the child maps the same object even if the name has
/// been unlinked meanwhile).
///
/// # Examples
///
/// ```
/// use multiproc::shared::SharedMemory;
///
/// # multiproc::test_support!();
/// # fn main() -> multiproc::Result<()> {
/// let a = SharedMemory::create(4096)?;
/// a.write_at(0, b"hello")?;
/// let b = SharedMemory::open(a.name())?;   // e.g. in another process
/// let mut buf = [0u8; 5];
/// b.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// assert_eq!(b.size(), 4096);
/// b.close();
/// a.unlink()?;
/// assert!(SharedMemory::open(a.name()).is_err());  // the name is gone
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SharedMemory {
    /// The POSIX name, with its leading `/`.
    name: String,
    fd: OwnedFd,
    ptr: NonNull<u8>,
    size: usize,
}

// SAFETY: the handle owns its mapping and descriptor; the bytes are accessed
// through atomics, raw-pointer copies, or `unsafe` methods whose contract
// covers concurrent access.
unsafe impl Send for SharedMemory {}
// SAFETY: as above; no method takes `&self` and hands out `&mut` memory safely.
unsafe impl Sync for SharedMemory {}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`size` are what `mmap` returned; the references this
        // handle handed out borrow it, so none outlives it.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.size) };
    }
}

impl SharedMemory {
    /// Creates a new block of `size` bytes (zero-filled) under a generated
    /// name `psm_XXXXXXXX`, as Python's `SharedMemory(create=True, size=...)`.
    ///
    /// A block larger than the free space of `/dev/shm` fails here, with an
    /// error naming the size and the space free — not with a `SIGBUS` when
    /// its pages are first written (what CPython does). Blocks of 64 KiB or
    /// more have their pages reserved (`fallocate`), so nothing can take
    /// their space later; a smaller block is only checked against the free
    /// space, so it can still fault if `/dev/shm` fills up before its pages
    /// are first written.
    ///
    /// # Errors
    ///
    /// `Invalid` if `size` is 0; `Io` of kind `StorageFull` if `/dev/shm`
    /// cannot hold `size` more bytes; `Io` if the system refuses otherwise.
    pub fn create(size: usize) -> Result<SharedMemory> {
        Self::create_impl(None, size, true)
    }

    /// Creates a new block of `size` bytes (zero-filled) called `name`, as
    /// Python's `SharedMemory(name, create=True, size=...)`. A leading `/` in
    /// `name` is optional.
    ///
    /// # Errors
    ///
    /// `Io` of kind `AlreadyExists` if a block of that name already exists
    /// (Python's `FileExistsError`); `Invalid` if `size` is 0 or if the name
    /// is not valid (empty, containing `/`, NUL or a newline, or longer
    /// than 255 bytes).
    ///
    /// ```
    /// use multiproc::shared::SharedMemory;
    /// # multiproc::test_support!();
    /// # fn main() -> multiproc::Result<()> {
    /// let name = format!("doc_exists_{}", std::process::id());
    /// let a = SharedMemory::create_named(&name, 64)?;
    /// let err = SharedMemory::create_named(&name, 64).unwrap_err();
    /// assert!(err.to_string().contains("already exists"), "{err}");
    /// a.unlink()?;
    /// # Ok(()) }
    /// ```
    pub fn create_named(name: &str, size: usize) -> Result<SharedMemory> {
        Self::create_impl(Some(name), size, true)
    }

    /// Creates a new block (named `name`, or a generated name if `None`)
    /// that is **not** registered with the resource tracker (Python 3.13's
    /// `SharedMemory(..., track=False)`): it outlives this program unless
    /// someone [`unlink`](Self::unlink)s it.
    ///
    /// Use it for a block that must outlive the process that makes it — e.g.
    /// one made by a child started by *spawn* (such a child has a tracker of
    /// its own, which would unlink the block when the child ends) for its
    /// parent to use afterwards; the parent may then
    /// [`register`](super::tracker::register) it with its own tracker.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create) and [`create_named`](Self::create_named).
    pub fn create_untracked(name: Option<&str>, size: usize) -> Result<SharedMemory> {
        Self::create_impl(name, size, false)
    }

    fn create_impl(name: Option<&str>, size: usize, track: bool) -> Result<SharedMemory> {
        check_size(size)?;
        loop {
            let posix = match name {
                Some(n) => posix_name(n)?,
                None => generate_name(),
            };
            match create_fd(&posix) {
                Ok(fd) => return Self::finish_create(posix, fd, size, track),
                Err(rustix::io::Errno::EXIST) if name.is_none() => continue,
                Err(rustix::io::Errno::EXIST) => return Err(exists_error(&posix)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn finish_create(name: String, fd: OwnedFd, size: usize, track: bool) -> Result<SharedMemory> {
        let made = (|| {
            rustix::fs::ftruncate(&fd, size as u64)?;
            let what = || format!("shared memory block {:?}", &name[1..]);
            if size >= RESERVE_FROM {
                crate::sys::reserve(fd.as_fd(), size as u64, what)?;
            } else {
                crate::sys::check_space(fd.as_fd(), size as u64, what)?;
            }
            let ptr = map(&fd, size)?;
            Ok::<_, Error>(ptr)
        })();
        match made {
            Ok(ptr) => {
                let shm = SharedMemory {
                    name,
                    fd,
                    ptr,
                    size,
                };
                if track {
                    if let Err(e) = tracker::register(&shm.name, tracker::SHARED_MEMORY) {
                        let _ = shm::unlink(&shm.name);
                        return Err(e);
                    }
                }
                Ok(shm)
            }
            Err(e) => {
                let _ = shm::unlink(&name);
                Err(e)
            }
        }
    }

    /// Attaches to the existing block called `name` (Python's
    /// `SharedMemory(name)`); its size is the object's size. Registers
    /// nothing with the tracker (unlike CPython 3.11, which registers on
    /// attach too, and whose tracker then unlinks blocks it merely attached to).
    ///
    /// # Errors
    ///
    /// `Io` of kind `NotFound` if no block of that name exists (Python's
    /// `FileNotFoundError`); `Invalid` if the block is empty or the name is
    /// not valid.
    ///
    /// ```
    /// use multiproc::shared::SharedMemory;
    /// let err = SharedMemory::open("no_such_block_here").unwrap_err();
    /// assert!(err.to_string().contains("no shared memory block"), "{err}");
    /// ```
    #[doc(alias = "attach")]
    pub fn open(name: &str) -> Result<SharedMemory> {
        let name = posix_name(name)?;
        let fd = match rustix::fs::open(
            ShmPath::new(&name).cstr(),
            OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                return Err(io_error(
                    std::io::ErrorKind::NotFound,
                    format!("no shared memory block named {:?}", &name[1..]),
                ))
            }
            Err(e) => return Err(e.into()),
        };
        Self::from_fd(name, fd)
    }

    fn from_fd(name: String, fd: OwnedFd) -> Result<SharedMemory> {
        let size = rustix::fs::fstat(&fd)?.st_size as usize;
        if size == 0 {
            return Err(Error::Invalid(format!(
                "shared memory block {:?} is empty",
                &name[1..]
            )));
        }
        let ptr = map(&fd, size)?;
        Ok(SharedMemory {
            name,
            fd,
            ptr,
            size,
        })
    }

    /// The block's name without the leading `/`, as Python's `.name` reports
    /// it (pass it to [`open`](Self::open) or to Python's `SharedMemory(name)`).
    pub fn name(&self) -> &str {
        &self.name[1..]
    }

    /// The size in bytes (Python's `.size`): the object's size when attached,
    /// the requested size when created.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The start of this process's mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The block's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The bytes as atomics: sound whatever other processes do meanwhile.
    pub fn as_atomic_bytes(&self) -> &[AtomicU8] {
        // SAFETY: the mapping is `size` bytes, readable and writable, lives as
        // long as `self`, and `AtomicU8` has the size and alignment of `u8`;
        // all access through atomics is sound under concurrent writes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<AtomicU8>(), self.size) }
    }

    /// The 8 bytes at `offset` as an `AtomicU64` (e.g. a shared counter).
    ///
    /// # Errors
    ///
    /// `Invalid` if `offset` is not a multiple of 8 or out of bounds.
    pub fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64> {
        let end = offset
            .checked_add(8)
            .filter(|&end| offset % 8 == 0 && end <= self.size);
        if end.is_none() {
            return Err(Error::Invalid(format!(
                "offset {offset} is unaligned or out of bounds"
            )));
        }
        // SAFETY: in bounds and 8-aligned (the mapping is page aligned); any
        // bit pattern is a valid `u64`; atomics tolerate concurrent access.
        Ok(unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() })
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`.
    ///
    /// # Errors
    ///
    /// `Invalid` if the range is out of bounds.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        // SAFETY: the range is inside the mapping (checked); safe code
        // accesses the block only atomically (the plain slices are `unsafe`).
        unsafe { atomic_copy::load_bytes(self.ptr.as_ptr().add(offset), buf) };
        Ok(())
    }

    /// Copies `data` into the block at `offset`.
    ///
    /// # Errors
    ///
    /// `Invalid` if the range is out of bounds.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        // SAFETY: the range is inside the writable mapping (checked); no
        // `&[u8]` into it exists except under the `unsafe` contract of
        // `as_slice`; others access it atomically.
        unsafe { atomic_copy::store_bytes(self.ptr.as_ptr().add(offset), data) };
        Ok(())
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::Invalid(format!(
                "range {offset}..{} is outside the block of {} bytes",
                offset.saturating_add(len),
                self.size
            ))),
        }
    }

    /// The bytes as a plain slice (Python's `.buf`, read-only).
    ///
    /// # Safety
    ///
    /// While the returned slice is used, no process (this one included,
    /// through another handle or [`write_at`](Self::write_at)) may write
    /// the block.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is valid for `size` bytes for the life of
        // `self`; the caller guarantees there are no concurrent writes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.size) }
    }

    /// The bytes as a plain mutable slice (Python's `.buf`).
    ///
    /// # Safety
    ///
    /// While the returned slice is used, no process (this one included,
    /// through another handle) may read or write the block.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`, plus `&mut self` excludes other borrows of
        // this handle; the caller excludes every other access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.size) }
    }

    /// Unmaps this process's view and closes the descriptor (Python's
    /// `close()`); the block lives on. Dropping the handle does the same.
    pub fn close(self) {}

    /// Removes the block's name (Python's `unlink()`) and unregisters it from
    /// the tracker. Call it once, from one process, when no one needs to
    /// attach any more; existing mappings stay valid.
    ///
    /// # Errors
    ///
    /// `Io` of kind `NotFound` if the name no longer exists (someone unlinked
    /// it already).
    pub fn unlink(&self) -> Result<()> {
        let r = shm::unlink(&self.name);
        // Unregister even if it was gone: the tracker must not report it.
        let _ = tracker::unregister(&self.name, tracker::SHARED_MEMORY);
        match r {
            Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(io_error(
                std::io::ErrorKind::NotFound,
                format!("no shared memory block named {:?} to unlink", self.name()),
            )),
            r => r,
        }
    }
}

impl Handoff for SharedMemory {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        ex.write_fd(self.fd.as_fd())?;
        ex.write(&self.name)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let fd = im.read_fd()?;
        let name: String = im.read()?;
        SharedMemory::from_fd(name, fd)
    }
}

fn exists_error(posix: &str) -> Error {
    io_error(
        std::io::ErrorKind::AlreadyExists,
        format!("shared memory block {:?} already exists", &posix[1..]),
    )
}

fn io_error(kind: std::io::ErrorKind, msg: String) -> Error {
    Error::Io(std::io::Error::new(kind, msg))
}

fn check_size(size: usize) -> Result<()> {
    if size == 0 {
        return Err(Error::Invalid(
            "'size' must be a positive number different from zero".into(),
        ));
    }
    Ok(())
}

/// The POSIX name (`/name`) of a user-given name, checked.
fn posix_name(name: &str) -> Result<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty()
        || bare.len() > MAX_NAME
        || bare == "."
        || bare == ".."
        || bare.contains(['/', '\0', '\n'])
    {
        return Err(Error::Invalid(format!(
            "invalid shared memory name {name:?}"
        )));
    }
    Ok(format!("/{bare}"))
}

/// `shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600)`, as glibc does it.
fn create_fd(posix: &str) -> std::result::Result<OwnedFd, rustix::io::Errno> {
    rustix::fs::open(
        ShmPath::new(posix).cstr(),
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
}

fn map(fd: &OwnedFd, size: usize) -> Result<NonNull<u8>> {
    // SAFETY: a fresh shared mapping of an object we hold open; the kernel
    // picks the address, so no existing memory is replaced.
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            size,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )?
    };
    NonNull::new(p.cast::<u8>())
        .ok_or_else(|| Error::Io(std::io::Error::other("mmap returned null")))
}

/// A fresh `/psm_XXXXXXXX` name: 32 random bits, as CPython's
/// `secrets.token_hex(4)`. A per-process generator (seeded once from
/// `getrandom`, re-seeded after fork by the pid) avoids a syscall per name;
/// collisions are retried by the caller (`O_EXCL`).
fn generate_name() -> String {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut s = STATE.load(Ordering::Relaxed);
    if s == 0 {
        let mut seed = [0u8; 8];
        // SAFETY: writes at most 8 bytes into `seed`.
        let _ = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), 8, 0) };
        s = u64::from_ne_bytes(seed) | 1;
    }
    let pid = std::process::id() as u64;
    let next = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    STATE.store(next, Ordering::Relaxed);
    let mut z = next ^ pid.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!("{NAME_PREFIX}{:08x}", z as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(posix_name("abc").unwrap(), "/abc");
        assert_eq!(posix_name("/abc").unwrap(), "/abc");
        assert!(posix_name("").is_err());
        assert!(posix_name("a/b").is_err());
        assert_eq!(posix_name("a:b").unwrap(), "/a:b");
        assert!(posix_name("a\nb").is_err());
        let n = generate_name();
        assert!(n.starts_with("/psm_") && n.len() == 13, "{n}");
        assert_ne!(n, generate_name());
    }
}
