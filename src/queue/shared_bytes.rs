//! Reading an item out of shared memory that a peer process could write at
//! the same time.
//!
//! The queue protocol gives a consumer a slot (or spill record) nobody else
//! writes until it is released — *if every peer follows the protocol*. A
//! peer that does not (a corrupt or hostile process holding the memfd, or a
//! slot reclaimed by mistake) may write it while we read it. A plain read
//! racing with a write is undefined behaviour in Rust's memory model, and a
//! decoder handed a `&[u8]` whose contents change under it is too. So an
//! item is never decoded in place: it is first copied into private memory
//! with relaxed **atomic** loads (which are defined whatever a peer does:
//! at worst we copy torn garbage), and decoded from there, where garbage is
//! a [`Codec`](crate::Error::Codec) error.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

/// Room for a small item copied out by [`SharedBytes::copy_small`].
pub(crate) struct SmallBuf([MaybeUninit<u64>; 16]);

impl SmallBuf {
    #[inline]
    pub(crate) fn new() -> SmallBuf {
        SmallBuf([MaybeUninit::uninit(); 16])
    }
}

/// `len` bytes of shared memory at `ptr`, valid for `'a`, readable only by
/// copying them out.
#[derive(Clone, Copy)]
pub(crate) struct SharedBytes<'a> {
    ptr: *const u8,
    len: usize,
    /// Bytes readable from `ptr` (>= len): lets small items be copied by
    /// whole words.
    room: usize,
    _life: PhantomData<&'a [u8]>,
}

impl<'a> SharedBytes<'a> {
    /// # Safety
    ///
    /// `ptr..ptr + room` (`room >= len`) must stay mapped and readable for
    /// `'a`, and every access to it *from this process* must be atomic
    /// (peers may write it).
    #[inline]
    pub(crate) unsafe fn new(ptr: *const u8, len: usize, room: usize) -> SharedBytes<'a> {
        debug_assert!(room >= len);
        SharedBytes {
            ptr,
            len,
            room: room.max(len),
            _life: PhantomData,
        }
    }

    /// Copies a small item (up to 128 bytes, 8-aligned, with room for whole
    /// words) into `buf` by whole words and returns its bytes; `None` if it
    /// is not such an item.
    #[inline]
    pub(crate) fn copy_small<'b>(&self, buf: &'b mut SmallBuf) -> Option<&'b [u8]> {
        let words = if self.len <= 32 && self.room >= 32 {
            4 // the common case, a fixed number of words
        } else {
            self.len.div_ceil(8)
        };
        if self.len > 128 || self.room < words * 8 || self.ptr as usize % 8 != 0 {
            return None;
        }
        for k in 0..words {
            // SAFETY: word k lies inside `room` (checked above), is 8-aligned,
            // and is read atomically.
            let w = unsafe { AtomicU64::from_ptr(self.ptr.add(8 * k).cast::<u64>().cast_mut()) }
                .load(Relaxed);
            buf.0[k].write(w);
        }
        // SAFETY: the first `words` words were written above, and
        // `len <= 8 * words`.
        Some(unsafe { std::slice::from_raw_parts(buf.0.as_ptr().cast::<u8>(), self.len) })
    }

    /// The number of bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies bytes `from..from + dst.len()` into `dst` (clamped to the
    /// end). Returns how many were copied.
    #[inline]
    pub(crate) fn copy_into(&self, from: usize, dst: &mut [MaybeUninit<u8>]) -> usize {
        let n = dst.len().min(self.len.saturating_sub(from));
        // SAFETY: from + n <= len, so the range is inside what `new` was
        // promised to be mapped for 'a; `copy_out` reads it atomically.
        unsafe { copy_out(self.ptr.add(from), &mut dst[..n]) };
        n
    }

    /// Appends all the bytes to `out`.
    #[inline]
    pub(crate) fn append_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.len);
        let start = out.len();
        let n = self.copy_into(0, &mut out.spare_capacity_mut()[..self.len]);
        debug_assert_eq!(n, self.len);
        // SAFETY: `copy_into` initialised the `len` bytes after `start`.
        unsafe { out.set_len(start + n) };
    }
}

/// Copies `dst.len()` bytes from `src` with relaxed atomic loads: eight
/// bytes at a time once `src` is aligned.
///
/// # Safety
///
/// `src..src + dst.len()` is mapped, readable, and accessed only atomically
/// by this process.
unsafe fn copy_out(src: *const u8, dst: &mut [MaybeUninit<u8>]) {
    let n = dst.len();
    let out = dst.as_mut_ptr().cast::<u8>();
    #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
    if n >= BULK {
        // SAFETY: the caller guarantees `src..src + n` is mapped and
        // readable; `out..out + n` is `dst`, which is ours and cannot
        // overlap shared memory.
        unsafe { copy_bulk(src, out, n) };
        return;
    }
    let mut i = 0;
    let byte = |i: usize| {
        // SAFETY: i < n: inside the range; a u8 is always aligned.
        unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Relaxed)
    };
    while i < n && (src as usize + i) % 8 != 0 {
        // SAFETY: i < n = dst.len().
        unsafe { out.add(i).write(byte(i)) };
        i += 1;
    }
    while i + 64 <= n {
        // SAFETY: as below, for eight consecutive words.
        unsafe {
            let w = |k: usize| {
                AtomicU64::from_ptr(src.add(i + 8 * k).cast::<u64>().cast_mut()).load(Relaxed)
            };
            let words = [w(0), w(1), w(2), w(3), w(4), w(5), w(6), w(7)];
            out.add(i).cast::<[u64; 8]>().write_unaligned(words);
        }
        i += 64;
    }
    while i + 8 <= n {
        // SAFETY: src + i is 8-aligned (loop above) and i + 8 <= n keeps the
        // word inside the range; the store is to dst[i..i + 8].
        unsafe {
            let w = AtomicU64::from_ptr(src.add(i).cast::<u64>().cast_mut()).load(Relaxed);
            out.add(i).cast::<u64>().write_unaligned(w);
        }
        i += 8;
    }
    while i < n {
        // SAFETY: i < n = dst.len().
        unsafe { out.add(i).write(byte(i)) };
        i += 1;
    }
}

/// From this size on, [`copy_out`] copies with one `rep movsb` (as fast as
/// `memcpy` on CPUs with ERMS; per-word atomic loads cost about twice as
/// much for a 1 MiB item).
#[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
const BULK: usize = 4096;

/// Copies `n` bytes with one `rep movsb`.
///
/// The copy is done by the CPU inside an inline-assembly block, which the
/// compiler treats like a call to unknown code (as it treats a `read`
/// syscall filling a buffer): it makes no assumption about the bytes, so
/// another process writing them at the same moment yields torn bytes, never
/// undefined behaviour. Rust's inline-assembly rules guarantee the
/// direction flag is clear on entry, so the copy runs forwards.
///
/// # Safety
///
/// `src..src + n` is mapped and readable; `out..out + n` is writable and
/// does not overlap it.
#[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
unsafe fn copy_bulk(src: *const u8, out: *mut u8, n: usize) {
    // SAFETY: the caller's guarantees above are exactly what `rep movsb`
    // needs: rcx bytes read from rsi and written to rdi, forwards.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rsi") src => _,
            inout("rdi") out => _,
            options(nostack, preserves_flags)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_alignment_and_length() {
        let src: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for start in 0..9 {
            // Up to 200 bytes: word copies; from 4096 on: the bulk copy.
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 64, 200, 4095, 4096, 4097, 19_000] {
                // SAFETY: inside `src`, which nobody writes meanwhile.
                let sb = unsafe { SharedBytes::new(src.as_ptr().add(start), len, len) };
                let mut v = vec![0xffu8];
                sb.append_to(&mut v);
                assert_eq!(&v[1..], &src[start..start + len]);
                let mut words = SmallBuf::new();
                if let Some(b) = sb.copy_small(&mut words) {
                    assert_eq!(b, &src[start..start + len]);
                } else {
                    let aligned = (src.as_ptr() as usize + start) % 8 == 0;
                    assert!(!aligned || len > 128 || len % 8 != 0);
                }
                let mut part = [MaybeUninit::new(0u8); 5];
                let n = sb.copy_into(len.saturating_sub(3), &mut part);
                assert_eq!(n, len.min(3));
            }
        }
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    #[test]
    #[ignore]
    fn copy_cost() {
        for size in [64usize, 4096, 1 << 20, 16 << 20] {
            let src = vec![7u8; size];
            let mut dst: Vec<u8> = Vec::with_capacity(size);
            let n = (256 << 20) / size;
            let t = std::time::Instant::now();
            for _ in 0..n {
                dst.clear();
                // SAFETY: private memory.
                unsafe { SharedBytes::new(src.as_ptr(), size, size) }.append_to(&mut dst);
                std::hint::black_box(&dst);
            }
            let a = t.elapsed();
            let t = std::time::Instant::now();
            for _ in 0..n {
                dst.clear();
                dst.extend_from_slice(std::hint::black_box(&src));
                std::hint::black_box(&dst);
            }
            let b = t.elapsed();
            println!(
                "{size}: atomic {:.2} GB/s, memcpy {:.2} GB/s",
                0.268 / a.as_secs_f64(),
                0.268 / b.as_secs_f64()
            );
        }
    }
}
