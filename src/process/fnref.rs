//! Naming functions across processes.
//!
//! A function that a child must call (a process runner, a pool task or
//! initializer runner, a barrier action) is never sent as an address. It is
//! named by the offset, from an anchor function of the crate, of a `&'static`
//! [`FnDesc`]: `{ magic, kind, fn pointer }`. A child running the same binary
//! adds its own anchor address back (ASLR moves the image, not the layout
//! inside it) and [`resolve`]s the name: it calls through the descriptor only
//! if the named bytes
//!
//! - lie inside this object's loaded image, in memory that nothing writes
//!   (a read-only segment, or the relocation-read-only range), aligned;
//! - carry the magic number and the kind of the function the caller expects
//!   (a process runner, a pool task runner, an initializer runner and an
//!   action are different kinds; see [`FnKind`]);
//! - hold a function pointer into this image's executable code.
//!
//! Only descriptors built by [`FnDesc::new`] pass: an offset pointing into a
//! function body, at data, out of the image, or at a descriptor of another
//! kind gives [`Error::Bootstrap`] instead of a jump. The image's extent is
//! read from its own ELF program headers (`__ehdr_start`), not from
//! `/proc/self/maps`: no syscall, no allocation, no lock (safe in a forked
//! child), and independent of the executable's path (spaces, a file replaced
//! on disk).
//!
//! Also here: rebuilding a zero-sized callable (a `fn` item or a
//! non-capturing closure) from its type alone ([`conjure`]), and the binary
//! identity a spawned child compares with its parent's ([`BinaryId`]).
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

#[inline(never)]
fn anchor() -> usize {
    // Something the optimiser cannot fold into another function's body.
    std::hint::black_box(0x006d_7072_6f63)
}

fn anchor_addr() -> usize {
    anchor as fn() -> usize as usize
}

/// The offset of `addr` from the anchor (what [`name`] computes for a
/// descriptor; tests use it to name arbitrary addresses).
pub(crate) fn offset_of(addr: usize) -> i64 {
    addr.wrapping_sub(anchor_addr()) as i64
}

/// "MPFNDESC" in little-endian: the first word of every descriptor.
const MAGIC: u64 = u64::from_le_bytes(*b"MPFNDESC");

/// FNV-1a of `s`, at compile time: the kind hash of a [`FnKind`].
pub(crate) const fn kind_hash(s: &str) -> u64 {
    let b = s.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// A function pointer type that can be named across processes.
///
/// # Safety
///
/// `Self` must be a function pointer type, and `KIND` must differ from the
/// `KIND` of every other implementor (one of the constants of [`kind`], used
/// by no other impl): [`resolve`] reads a descriptor's `f` as `Self` because
/// its kind says it was built as a `FnDesc<Self>`.
pub(crate) unsafe trait FnKind: Copy + 'static {
    /// The kind hash stored in, and checked against, every descriptor.
    const KIND: u64;
}

/// The kinds of named functions, all here so that they stay distinct (the
/// `kinds_differ` test checks it). Each is the `KIND` of exactly one
/// [`FnKind`] impl, written next to the function pointer type it names.
pub(crate) mod kind {
    use super::kind_hash;
    /// `process::bootstrap::Runner`.
    pub(crate) const PROCESS_RUNNER: u64 = kind_hash("multiproc process runner");
    /// `pool::worker::TaskRunner`.
    pub(crate) const POOL_TASK_RUNNER: u64 = kind_hash("multiproc pool task runner");
    /// `pool::worker::InitRunner`.
    pub(crate) const POOL_INIT_RUNNER: u64 = kind_hash("multiproc pool initializer runner");
    /// `sync::barrier::Action`.
    pub(crate) const BARRIER_ACTION: u64 = kind_hash("multiproc barrier action");
    /// `mpi::runner::Runner`.
    #[cfg_attr(not(feature = "mpi"), allow(dead_code))]
    pub(crate) const MPI_TASK_RUNNER: u64 = kind_hash("multiproc MPI task runner");
}

/// A named function: the only thing [`name`] accepts and [`resolve`] returns
/// a function from. Build one per function as an associated constant,
/// `const DESC: &'static FnDesc<K> = &FnDesc::new(f::<...>);`, which the
/// compiler places in read-only memory of the image.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct FnDesc<T: FnKind> {
    magic: u64,
    kind: u64,
    f: T,
}

impl<T: FnKind> FnDesc<T> {
    /// A descriptor of `f`.
    pub(crate) const fn new(f: T) -> FnDesc<T> {
        FnDesc {
            magic: MAGIC,
            kind: T::KIND,
            f,
        }
    }

    /// The function.
    pub(crate) fn get(&self) -> T {
        self.f
    }
}

/// The name of `desc` in every process running this binary.
pub(crate) fn name<T: FnKind>(desc: &'static FnDesc<T>) -> i64 {
    offset_of(desc as *const FnDesc<T> as usize)
}

/// The function named `name` (by [`name`] in a process running this binary),
/// after checking that it names a genuine descriptor of kind `T`.
pub(crate) fn resolve<T: FnKind>(name: i64) -> Result<T> {
    resolve_desc(name).map(FnDesc::get)
}

/// The descriptor named `name`, checked as [`resolve`] does.
pub(crate) fn resolve_desc<T: FnKind>(name: i64) -> Result<&'static FnDesc<T>> {
    let bad = |why: &str| {
        Err(Error::bootstrap(format!(
            "bad function name {name:#x}: {why}"
        )))
    };
    let addr = anchor_addr().wrapping_add(name as usize);
    let size = std::mem::size_of::<FnDesc<T>>();
    if addr % std::mem::align_of::<FnDesc<T>>() != 0 {
        return bad("misaligned");
    }
    let Some(image) = Image::this() else {
        return bad("cannot read this program's ELF headers");
    };
    if !image.is_code(anchor_addr()) {
        return bad("this program's ELF headers do not cover its code");
    }
    if !image.is_unwritten(addr, size) {
        return bad("not a descriptor in this program's read-only data");
    }
    let words = addr as *const u64;
    // SAFETY: `[addr, addr + size)` lies inside a loaded segment of this
    // image that nothing writes (checked just above), and `addr` is aligned
    // for `FnDesc<T>` (`repr(C)`: two u64 then a function pointer), so the
    // first two words are initialised, readable and not raced.
    let (magic, kind) = unsafe { (words.read(), words.add(1).read()) };
    if magic != MAGIC {
        return bad("no descriptor there");
    }
    if kind != T::KIND {
        return bad("a descriptor of another kind of function");
    }
    // SAFETY: as above; the third word is the function pointer's slot, read
    // as a plain address (any bit pattern is a valid usize).
    let f_addr = unsafe { (addr as *const usize).add(2).read() };
    if !image.is_code(f_addr) {
        return bad("the descriptor's function is not in this program's code");
    }
    // SAFETY: the bytes are a descriptor built by `FnDesc::new` for kind
    // `T::KIND` (magic and kind match, inside read-only memory of this image,
    // and its function points into this image's code), and `FnKind` makes
    // kinds unique per type, so they were written as a `FnDesc<T>` whose `f`
    // is a valid `T`. That memory is part of the image: it lives as long as
    // the process, and nothing writes it.
    Ok(unsafe { &*(addr as *const FnDesc<T>) })
}

#[cfg(target_pointer_width = "64")]
type Ehdr = libc::Elf64_Ehdr;
#[cfg(target_pointer_width = "64")]
type Phdr = libc::Elf64_Phdr;
#[cfg(target_pointer_width = "32")]
type Ehdr = libc::Elf32_Ehdr;
#[cfg(target_pointer_width = "32")]
type Phdr = libc::Elf32_Phdr;

extern "C" {
    /// The ELF header of the object this crate is linked into, defined by the
    /// linker (GNU ld, gold, lld and mold all do).
    static __ehdr_start: u8;
}

/// This object's loaded image, read from its own program headers.
#[derive(Debug, Clone, Copy)]
struct Image {
    bias: usize,
    phdrs: &'static [Phdr],
}

impl Image {
    fn this() -> Option<Image> {
        let base = &raw const __ehdr_start as usize;
        // SAFETY: `__ehdr_start` is the loaded ELF header of this object: the
        // first bytes of its first loaded segment, mapped read-only for the
        // life of the process and aligned for `Ehdr` (it starts a page).
        let eh = unsafe { &*(base as *const Ehdr) };
        if eh.e_ident[..4] != *b"\x7fELF" || eh.e_phentsize as usize != std::mem::size_of::<Phdr>()
        {
            return None;
        }
        // SAFETY: the program headers of a loaded object are mapped with its
        // first segment at `e_phoff` from the header (the dynamic loader and
        // the kernel read them there), read-only and aligned.
        let phdrs = unsafe {
            std::slice::from_raw_parts(
                (base + eh.e_phoff as usize) as *const Phdr,
                eh.e_phnum as usize,
            )
        };
        let first = phdrs
            .iter()
            .find(|p| p.p_type == libc::PT_LOAD && p.p_offset == 0)?;
        Some(Image {
            bias: base.wrapping_sub(first.p_vaddr as usize),
            phdrs,
        })
    }

    fn range(&self, p: &Phdr) -> (usize, usize) {
        let lo = self.bias.wrapping_add(p.p_vaddr as usize);
        (lo, lo.saturating_add(p.p_memsz as usize))
    }

    /// `addr` lies in an executable segment.
    fn is_code(&self, addr: usize) -> bool {
        self.phdrs.iter().any(|p| {
            let (lo, hi) = self.range(p);
            p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0 && lo <= addr && addr < hi
        })
    }

    /// `[addr, addr + len)` lies in initialised memory nothing writes: a
    /// readable, non-writable, non-executable loaded segment, or the part of a
    /// writable one the loader makes read-only after relocation (RELRO).
    fn is_unwritten(&self, addr: usize, len: usize) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        self.phdrs.iter().any(|p| {
            let (lo, _) = self.range(p);
            let hi = lo.saturating_add(p.p_filesz as usize);
            let readonly = match p.p_type {
                libc::PT_LOAD => {
                    p.p_flags & libc::PF_R != 0 && p.p_flags & (libc::PF_W | libc::PF_X) == 0
                }
                libc::PT_GNU_RELRO => true,
                _ => false,
            };
            readonly && lo <= addr && end <= hi
        })
    }
}

/// Checks at compile time that `F` is zero-sized, i.e. a `fn` item or a
/// closure that captures nothing.
///
/// A spawned child receives only its explicit arguments; a closure that
/// captured state could not be rebuilt there, so it is refused at compile
/// time (CPython's "explicitly pass resources to child processes"). Taking
/// `target` by value is what later allows [`conjure`] to make copies of it.
pub(crate) fn check_target<F: Copy + 'static>(target: F) {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "multiproc: a process or pool target must be a fn item or a closure that captures nothing; \
             pass data through the arguments instead"
        )
    };
    let _ = target;
}

/// A value of the zero-sized callable `F`, rebuilt from its type alone.
///
/// # Safety
///
/// A value of `F` must have been handed to the crate (through
/// [`check_target`]) in this process or in the parent this process was
/// started by (same binary). `F` is `Copy`, so one more copy of it is no new
/// capability; without that proof of possession, this could conjure a
/// zero-sized token its owner never gave out.
pub(crate) unsafe fn conjure<F, A, R>() -> F
where
    F: crate::process::TaskFn<A, R>,
{
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "multiproc: a process or pool target must be a fn item or a closure that captures nothing; \
             pass data through the arguments instead"
        )
    };
    // SAFETY: `F` is zero-sized (asserted above at compile time), so reading
    // it from a dangling, well-aligned pointer reads no memory; the caller
    // guarantees a value of `F` existed (see `# Safety`), and `F: Copy`, so
    // this copy adds nothing that copying that value would not.
    unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() }
}

/// The identity of the running binary: device, inode, size and modification
/// time of `/proc/self/exe`. A spawned child compares its own with the
/// parent's and refuses to run code of a different binary.
///
/// `/proc/self/exe` names the running image even after its file was renamed
/// over or deleted (it then reads as `path (deleted)`, but `stat` through it
/// still reaches the running inode), and a spawned child is executed through
/// the parent's `/proc/self/exe`, so parent and child compare the same inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BinaryId {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: i64,
    mtime_nsec: i64,
}

impl BinaryId {
    /// This process's binary identity (computed once).
    pub(crate) fn current() -> Result<BinaryId> {
        static ID: OnceLock<std::result::Result<BinaryId, String>> = OnceLock::new();
        ID.get_or_init(|| {
            let st = rustix::fs::stat("/proc/self/exe").map_err(|e| e.to_string())?;
            Ok(BinaryId {
                dev: st.st_dev,
                ino: st.st_ino,
                size: st.st_size,
                mtime: st.st_mtime,
                mtime_nsec: st.st_mtime_nsec as i64,
            })
        })
        .clone()
        .map_err(|e| Error::bootstrap(format!("cannot identify /proc/self/exe: {e}")))
    }
}

#[cfg(feature = "test-hooks")]
impl BinaryId {
    /// Makes this identity differ from every real one (tests of hostile input).
    pub(crate) fn scramble(&mut self) {
        self.ino ^= 0x5a5a_5a5a;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Unary = fn(u64) -> u64;
    // SAFETY: a function pointer type with a kind string of its own.
    unsafe impl FnKind for Unary {
        const KIND: u64 = kind_hash("fnref test: fn(u64) -> u64");
    }
    type Nullary = fn() -> u64;
    // SAFETY: as above.
    unsafe impl FnKind for Nullary {
        const KIND: u64 = kind_hash("fnref test: fn() -> u64");
    }

    fn double(x: u64) -> u64 {
        std::hint::black_box(x) * 2
    }
    fn seven() -> u64 {
        7
    }

    const DOUBLE: &FnDesc<Unary> = &FnDesc::new(double);
    const SEVEN: &FnDesc<Nullary> = &FnDesc::new(seven);
    static NOT_A_DESC: [u64; 3] = [0; 3];

    #[test]
    #[cfg_attr(miri, ignore = "reads the ELF program headers (__ehdr_start)")]
    fn a_genuine_descriptor_resolves() {
        let f = resolve::<Unary>(name(DOUBLE)).unwrap();
        assert_eq!(f(21), 42);
        assert_eq!(resolve::<Nullary>(name(SEVEN)).unwrap()(), 7);
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads the ELF program headers (__ehdr_start)")]
    fn a_descriptor_of_another_kind_is_refused() {
        let e = resolve::<Nullary>(name(DOUBLE)).unwrap_err();
        assert!(e.to_string().contains("another kind"), "{e}");
    }

    // Stand-ins for the pool's task and initializer runners (two kinds
    // whose functions both start with the encoded input).
    type Task = fn(&[u8], u32, &mut Vec<u8>) -> usize;
    // SAFETY: as above.
    unsafe impl FnKind for Task {
        const KIND: u64 = kind_hash("fnref test: task runner");
    }
    type Init = fn(&[u8]) -> usize;
    // SAFETY: as above.
    unsafe impl FnKind for Init {
        const KIND: u64 = kind_hash("fnref test: initializer runner");
    }
    fn some_task(input: &[u8], n: u32, out: &mut Vec<u8>) -> usize {
        out.push(n as u8);
        input.len()
    }
    const TASK: &FnDesc<Task> = &FnDesc::new(some_task);

    #[test]
    #[cfg_attr(miri, ignore = "reads the ELF program headers (__ehdr_start)")]
    fn a_task_runner_where_an_initializer_is_expected_is_refused() {
        let mut out = Vec::new();
        assert_eq!(resolve::<Task>(name(TASK)).unwrap()(&[], 3, &mut out), 0);
        assert_eq!(out, [3]);
        assert!(matches!(
            resolve::<Init>(name(TASK)),
            Err(Error::Bootstrap(_))
        ));
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads the ELF program headers (__ehdr_start)")]
    fn code_and_data_are_refused() {
        let in_body = offset_of(double as Unary as usize + 16);
        for n in [
            offset_of(double as Unary as usize),
            in_body,
            offset_of(anchor_addr()),
            offset_of(NOT_A_DESC.as_ptr() as usize),
            name(DOUBLE) + 8,
            name(DOUBLE) + 1,
            1 << 40,
            -(1 << 40),
            i64::MIN,
            i64::MAX,
        ] {
            assert!(
                matches!(resolve::<Unary>(n), Err(Error::Bootstrap(_))),
                "name {n:#x} resolved"
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads the ELF program headers (__ehdr_start)")]
    fn the_image_covers_code_and_descriptors() {
        let image = Image::this().expect("ELF headers");
        assert!(image.is_code(anchor_addr()));
        assert!(image.is_code(double as Unary as usize));
        assert!(!image.is_code(DOUBLE as *const _ as usize));
        assert!(image.is_unwritten(DOUBLE as *const _ as usize, 24));
        assert!(!image.is_unwritten(anchor_addr(), 8));
        let on_stack = 0u64;
        assert!(!image.is_unwritten(&on_stack as *const u64 as usize, 8));
    }

    #[test]
    fn kinds_differ() {
        let kinds = [
            kind::PROCESS_RUNNER,
            kind::POOL_TASK_RUNNER,
            kind::POOL_INIT_RUNNER,
            kind::BARRIER_ACTION,
            kind::MPI_TASK_RUNNER,
            Unary::KIND,
            Nullary::KIND,
            Task::KIND,
            Init::KIND,
        ];
        for (i, a) in kinds.iter().enumerate() {
            for b in &kinds[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
