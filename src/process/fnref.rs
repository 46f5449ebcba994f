//! Naming code across processes: a function of this binary is named by its
//! address's offset from an anchor function of the crate. A child running the
//! same binary adds its own anchor address back (ASLR moves the image, not the
//! layout inside it). Before any offset is used, the child checks that it runs
//! the parent's binary ([`BinaryId`]).
//!
//! Also here: rebuilding a zero-sized callable (a `fn` item or a
//! non-capturing closure) from its type alone.

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

/// The offset of `addr` (a function of this binary) from the anchor.
pub(crate) fn offset_of(addr: usize) -> i64 {
    addr.wrapping_sub(anchor_addr()) as i64
}

/// The address named by `offset` in this process.
pub(crate) fn addr_of(offset: i64) -> usize {
    anchor_addr().wrapping_add(offset as usize)
}

/// Checks at compile time that `F` is zero-sized, i.e. a `fn` item or a
/// closure that captures nothing, and returns an instance of it.
///
/// A spawned child receives only its explicit arguments; a closure that
/// captured state could not be rebuilt there, so it is refused at compile
/// time (CPython's "explicitly pass resources to child processes").
#[doc(hidden)]
pub fn conjure<F: Copy + 'static>() -> F {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "multiproc: a process or pool target must be a fn item or a closure that captures nothing; \
             pass data through the arguments instead"
        )
    };
    // SAFETY: `F` is zero-sized (asserted above at compile time), so reading
    // it from a dangling, well-aligned pointer reads no memory; fn items and
    // non-capturing closures have no invariants beyond their type.
    unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() }
}

/// The identity of the running binary: device, inode, size and modification
/// time of `/proc/self/exe`. A spawned child compares its own with the
/// parent's and refuses to jump into code of a different binary.
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
        .map_err(|e| Error::Bootstrap(format!("cannot identify /proc/self/exe: {e}")))
    }
}

#[cfg(feature = "test-hooks")]
impl BinaryId {
    /// Makes this identity differ from every real one (tests of hostile input).
    pub(crate) fn scramble(&mut self) {
        self.ino ^= 0x5a5a_5a5a;
    }
}

/// Whether `addr` lies in an executable mapping of this process's own binary
/// (a last guard before jumping to an address received from a parent).
pub(crate) fn is_own_code(addr: usize) -> bool {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return false;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    let exe = exe.to_string_lossy();
    maps.lines().any(|line| {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            return false;
        };
        let path = parts.nth(3).unwrap_or("");
        let Some((lo, hi)) = range.split_once('-') else {
            return false;
        };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        else {
            return false;
        };
        perms.contains('x') && path == exe && (lo..hi).contains(&addr)
    })
}
