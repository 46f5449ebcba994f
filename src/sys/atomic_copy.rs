//! Copies to and from shared memory that other threads or processes may
//! write at the same time, made of relaxed **atomic** accesses so that a race
//! is defined behaviour (a plain or volatile copy that races with a write is
//! undefined behaviour in Rust's memory model, whatever the hardware does).
//!
//! # What a racing reader sees
//!
//! Each aligned *word* — 8 bytes, or the element's alignment when smaller —
//! is read and written in one atomic access, so a word is never torn: it
//! holds a value some writer wrote. A copy of several words that races with a
//! writer may see some words from before the write and some from after (torn
//! across words). Bytes outside whole aligned words (the head and tail of an
//! unaligned byte range) are copied one atomic byte at a time.
//!
//! Relaxed ordering: these copies order nothing else. Use a lock (or an
//! acquire/release pair) to publish data.
#![allow(unsafe_code)]

use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// Reads a `T` with atomic loads of `min(align_of::<T>(), 8)` bytes each.
///
/// # Safety
///
/// `src` must be valid for reads of `size_of::<T>()` bytes, aligned for `T`,
/// and point into memory that is only ever accessed atomically (or not at all
/// while this runs) by others.
#[inline]
pub(crate) unsafe fn load<T: bytemuck::Pod>(src: *const T) -> T {
    let mut out = T::zeroed();
    let dst = bytemuck::bytes_of_mut(&mut out);
    let n = size_of::<T>();
    let p = src.cast::<u8>();
    macro_rules! words {
        ($a:ty, $w:literal) => {
            for i in 0..n / $w {
                // SAFETY: `i * $w + $w <= n` bytes from `src`, which is
                // aligned to `align_of::<T>() >= $w`; atomics of `$w` bytes
                // have that alignment; the caller allows atomic access.
                let v = unsafe { (*p.add(i * $w).cast::<$a>()).load(Relaxed) };
                dst[i * $w..i * $w + $w].copy_from_slice(&v.to_ne_bytes());
            }
        };
    }
    match align_of::<T>() {
        1 => words!(AtomicU8, 1),
        2 => words!(AtomicU16, 2),
        4 => words!(AtomicU32, 4),
        _ => words!(AtomicU64, 8),
    }
    out
}

/// Writes `value` with atomic stores of `min(align_of::<T>(), 8)` bytes each.
///
/// # Safety
///
/// As [`load`], for writes.
#[inline]
pub(crate) unsafe fn store<T: bytemuck::Pod>(dst: *mut T, value: T) {
    let src = bytemuck::bytes_of(&value);
    let n = size_of::<T>();
    let p = dst.cast::<u8>();
    macro_rules! words {
        ($a:ty, $t:ty, $w:literal) => {
            for i in 0..n / $w {
                let mut b = [0u8; $w];
                b.copy_from_slice(&src[i * $w..i * $w + $w]);
                // SAFETY: as in `load`.
                unsafe { (*p.add(i * $w).cast::<$a>()).store(<$t>::from_ne_bytes(b), Relaxed) };
            }
        };
    }
    match align_of::<T>() {
        1 => words!(AtomicU8, u8, 1),
        2 => words!(AtomicU16, u16, 2),
        4 => words!(AtomicU32, u32, 4),
        _ => words!(AtomicU64, u64, 8),
    }
}

/// How many bytes from `addr` to the next multiple of 8 (at most `len`).
#[inline]
fn head_len(addr: usize, len: usize) -> usize {
    ((8 - addr % 8) % 8).min(len)
}

/// Copies `dst.len()` bytes from `src`: atomic bytes up to the first
/// 8-aligned address, atomic 8-byte words, atomic bytes for the tail.
///
/// # Safety
///
/// `src` must be valid for reads of `dst.len()` bytes of memory that others
/// access only atomically (or not at all while this runs).
pub(crate) unsafe fn load_bytes(src: *const u8, dst: &mut [u8]) {
    let len = dst.len();
    let head = head_len(src as usize, len);
    let words = (len - head) / 8;
    for (i, d) in dst[..head].iter_mut().enumerate() {
        // SAFETY: in bounds (`i < head <= len`); a byte is always aligned.
        *d = unsafe { (*src.add(i).cast::<AtomicU8>()).load(Relaxed) };
    }
    for w in 0..words {
        let at = head + w * 8;
        // SAFETY: `at + 8 <= len`, and `src + head` is 8-aligned.
        let v = unsafe { (*src.add(at).cast::<AtomicU64>()).load(Relaxed) };
        dst[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
    let tail = head + words * 8;
    for (i, d) in dst.iter_mut().enumerate().skip(tail) {
        // SAFETY: in bounds (`i < len`).
        *d = unsafe { (*src.add(i).cast::<AtomicU8>()).load(Relaxed) };
    }
}

/// Copies `src` to `dst` with atomic stores (as [`load_bytes`]).
///
/// # Safety
///
/// `dst` must be valid for writes of `src.len()` bytes of memory that others
/// access only atomically (or not at all while this runs).
pub(crate) unsafe fn store_bytes(dst: *mut u8, src: &[u8]) {
    let len = src.len();
    let head = head_len(dst as usize, len);
    let words = (len - head) / 8;
    for (i, &b) in src[..head].iter().enumerate() {
        // SAFETY: in bounds; bytes are always aligned.
        unsafe { (*dst.add(i).cast::<AtomicU8>()).store(b, Relaxed) };
    }
    for w in 0..words {
        let at = head + w * 8;
        let mut b = [0u8; 8];
        b.copy_from_slice(&src[at..at + 8]);
        // SAFETY: `at + 8 <= len`, and `dst + head` is 8-aligned.
        unsafe { (*dst.add(at).cast::<AtomicU64>()).store(u64::from_ne_bytes(b), Relaxed) };
    }
    for (i, &b) in src.iter().enumerate().skip(head + words * 8) {
        // SAFETY: in bounds.
        unsafe { (*dst.add(i).cast::<AtomicU8>()).store(b, Relaxed) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_copies_at_every_alignment() {
        let src: Vec<u8> = (0..64u8).collect();
        for off in 0..9 {
            for len in 0..40 {
                let mut dst = vec![0u8; len];
                // SAFETY: in bounds of `src`; nobody else accesses it.
                unsafe { load_bytes(src.as_ptr().add(off), &mut dst) };
                assert_eq!(dst, &src[off..off + len]);
                let mut back = vec![0u8; 64];
                // SAFETY: in bounds of `back`; nobody else accesses it.
                unsafe { store_bytes(back.as_mut_ptr().add(off), &dst) };
                assert_eq!(&back[off..off + len], &dst[..]);
                assert!(back[..off].iter().all(|&b| b == 0));
                assert!(back[off + len..].iter().all(|&b| b == 0));
            }
        }
    }

    #[test]
    fn typed_copies() {
        #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        #[repr(C)]
        struct P {
            a: u32,
            b: u16,
            c: u16,
        }
        let mut x = P { a: 1, b: 2, c: 3 };
        // SAFETY: a live, aligned local.
        unsafe {
            assert_eq!(load(&x), x);
            store(&mut x, P { a: 9, b: 8, c: 7 });
        }
        assert_eq!(x, P { a: 9, b: 8, c: 7 });
        let mut f = 1.5f64;
        // SAFETY: as above.
        unsafe {
            store(&mut f, -2.25);
            assert_eq!(load(&f), -2.25);
        }
        let mut arr = [1u8, 2, 3];
        // SAFETY: as above.
        unsafe {
            assert_eq!(load(&arr), [1, 2, 3]);
            store(&mut arr, [4, 5, 6]);
        }
        assert_eq!(arr, [4, 5, 6]);
    }
}
