//! The spill log: where items go when the ring has no room for them (see the
//! [module docs](super) for when and why).
//!
//! A FIFO of records in the sparse part of the queue's memfd, after the
//! ring: `[len: u64][len ^ MAGIC: u64][payload, padded to 16]`, at byte
//! positions that only grow (`head` .. `tail`), stored at `position %
//! size`. A record that would cross the end of the area is preceded by a
//! wrap marker (`len == WRAP`) and starts at offset 0, so every payload is
//! contiguous. Pages are reserved with `fallocate` before the write head
//! reaches them (`reserved`) and punched out once the read head has passed
//! them (`punched`), so the log costs only what it holds.
//!
//! This is the slow path (the ring takes everything while consumers keep
//! up), so it is simple: one lock, held for a whole append or take. The lock
//! word is the holder's pid; a waiter that finds the holder dead takes the
//! lock over. That is safe because every operation commits with its last
//! stores (`tail` after the record is written, `head` after it is copied
//! out): a holder that dies earlier leaves the log as it found it (its half
//! record is not in the log; the record it was copying out is still there).
#![allow(unsafe_code)]

use super::ring::{owner_alive, Ring};
use super::shared_bytes::SharedBytes;
use crate::error::{Error, Result};
use crate::sys::futex;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

/// The spill area's default size: address space, not memory (a page costs
/// memory only while it holds items), so it is large: the largest item is
/// half of it.
pub(crate) const DEFAULT_SPILL: u64 = 1 << 38;
/// The smallest spill area.
pub(crate) const MIN_SPILL: u64 = 64 << 10;
/// The largest spill area (address space: 128 TiB per process on x86-64).
pub(crate) const MAX_SPILL: u64 = 1 << 42;
const PAGE: u64 = 4096;
const REC_HDR: u64 = 16;
const WRAP: u64 = u64::MAX;
const MAGIC: u64 = 0x7370_696c_6c72_6563; // "spillrec"
/// How long a lock waiter sleeps before it checks the holder is alive.
const LOCK_CHECK: Duration = Duration::from_millis(50);

/// The log's shared state (in the ring's header). Written under the lock
/// only; `head`/`tail` are read without it by the fast paths.
#[repr(C)]
#[derive(Default)]
pub(crate) struct SpillHeader {
    /// Bytes of the area (file offset: right after the ring).
    size: AtomicU64,
    head: AtomicU64,
    tail: AtomicU64,
    /// Pages of positions below this are reserved (page aligned).
    reserved: AtomicU64,
    /// Pages of positions below this have been punched (page aligned).
    punched: AtomicU64,
    /// Records in the log (approximate: for `qsize`).
    count: AtomicI64,
    /// Pid of the lock holder, 0 when free.
    lock: AtomicU32,
    /// Processes sleeping on `lock`.
    waiters: AtomicU32,
}

impl SpillHeader {
    pub(crate) fn init(&self, size: u64) {
        self.size.store(size, Relaxed);
    }

    /// The area's size, if it is one this code could have made.
    pub(crate) fn size(&self) -> Option<u64> {
        let s = self.size.load(Relaxed);
        ((MIN_SPILL..=MAX_SPILL).contains(&s) && s % PAGE == 0).then_some(s)
    }
}

/// The spill size a builder asks for, made valid.
pub(crate) fn spill_size(bytes: u64) -> u64 {
    bytes.clamp(MIN_SPILL, MAX_SPILL).div_ceil(PAGE) * PAGE
}

/// Reserve / punch in steps of this much (fewer syscalls), at most 1 MiB.
fn step(size: u64) -> u64 {
    (size / 8).clamp(PAGE, 1 << 20) / PAGE * PAGE
}

fn rec_len(len: u64) -> Option<u64> {
    len.checked_add(REC_HDR + 15).map(|n| n / 16 * 16)
}

fn full_error(need: u64, size: u64) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::OutOfMemory,
        format!(
            "could not reserve {need} bytes for a queue item: the queue's spill area of \
             {size} bytes is full"
        ),
    ))
}

fn corrupt() -> Error {
    Error::Codec("corrupt record in the queue's spill area".into())
}

/// Holds the spill lock; releases it when dropped.
struct LockGuard<'a>(&'a SpillHeader);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.0.lock.store(0, Release);
        if self.0.waiters.load(SeqCst) != 0 {
            futex::wake_all(&self.0.lock);
        }
    }
}

impl Ring {
    fn spill_header(&self) -> &SpillHeader {
        &self.header().spill.0
    }

    /// The largest encoded item the queue accepts (through the spill log).
    pub(crate) fn spill_max_item(&self) -> usize {
        (self.spill_size / 2 - REC_HDR).min(usize::MAX as u64) as usize
    }

    /// `true` if the log holds records (or did a moment ago).
    pub(crate) fn spill_pending(&self) -> bool {
        let s = self.spill_header();
        // SeqCst (a plain load on x86, like Acquire): the wake-up protocols
        // (futex sleepers and the async doorbell) need the re-check after
        // arming to be ordered with the `tail` store of `spill_put`.
        s.tail.load(SeqCst) != s.head.load(SeqCst)
    }

    /// Records in the log (approximate).
    pub(crate) fn spill_count(&self) -> i64 {
        self.spill_header().count.load(Relaxed)
    }

    fn lock(&self) -> Result<LockGuard<'_>> {
        let s = self.spill_header();
        let me = super::ring::my_pid();
        let mut spins = 0u32;
        loop {
            let holder = match s.lock.compare_exchange(0, me, Acquire, Relaxed) {
                Ok(_) => return Ok(LockGuard(s)),
                Err(h) => h,
            };
            if spins < 64 {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            s.waiters.fetch_add(1, SeqCst);
            let r = futex::wait(&s.lock, holder, Some(Instant::now() + LOCK_CHECK));
            s.waiters.fetch_sub(1, SeqCst);
            if r? == futex::Wake::TimedOut
                && !owner_alive(holder)
                && s.lock
                    .compare_exchange(holder, me, Acquire, Relaxed)
                    .is_ok()
            {
                // Its holder died: the log is as the holder found it.
                return Ok(LockGuard(s));
            }
        }
    }

    /// The log's state, checked: `punched <= head <= tail <= punched + size`.
    fn positions(&self) -> Result<(u64, u64, u64)> {
        let s = self.spill_header();
        let (head, tail, punched) = (
            s.head.load(Acquire),
            s.tail.load(Acquire),
            s.punched.load(Relaxed),
        );
        if punched <= head && head <= tail && tail - punched <= self.spill_size {
            Ok((head, tail, punched))
        } else {
            Err(corrupt())
        }
    }

    /// Reserves or punches the pages of positions `from..to` (page aligned).
    fn pages(&self, from: u64, to: u64, punch: bool) -> Result<()> {
        let size = self.spill_size;
        let mut a = from;
        while a < to {
            let off = a % size;
            let len = (to - a).min(size - off);
            let file_off = self.spill_off + off;
            if punch {
                self.region().punch(file_off, len)?;
            } else {
                self.region().reserve(file_off, len)?;
            }
            a += len;
        }
        Ok(())
    }

    /// Appends the item made of `parts` (`total` bytes) to the log.
    pub(crate) fn spill_put(&self, parts: &[&[u8]], total: usize) -> Result<()> {
        let size = self.spill_size;
        let need =
            rec_len(total as u64)
                .filter(|&n| n <= size / 2)
                .ok_or(Error::MessageTooLarge {
                    len: total as u64,
                    max: self.spill_max_item() as u64,
                })?;
        let win = self.spill_window()?;
        let s = self.spill_header();
        let _guard = self.lock()?;
        let (_, tail, punched) = self.positions()?;
        let off = tail % size;
        let pad = if off + need > size { size - off } else { 0 };
        let start = tail + pad;
        let end = start + need;
        if end > punched + size {
            return Err(full_error(need, size));
        }
        let reserved = s.reserved.load(Relaxed).max(tail / PAGE * PAGE);
        if reserved < end {
            let limit = punched + size;
            let want = (end.max(reserved + step(size)).div_ceil(PAGE) * PAGE).min(limit);
            let exact = (end.div_ceil(PAGE) * PAGE).min(limit);
            if self.pages(reserved, want, false).is_err() {
                self.pages(reserved, exact, false)?;
                s.reserved.store(exact, Relaxed);
            } else {
                s.reserved.store(want, Relaxed);
            }
        }
        let base = win.as_ptr();
        let at = |pos: u64| {
            // SAFETY: `pos % size < size` = the window's length.
            unsafe { base.add((pos % size) as usize) }
        };
        let word = |pos: u64| {
            // SAFETY: records are 16-aligned, so `pos` is 8-aligned and the
            // word lies inside the window, in pages reserved above; all
            // accesses to header words are atomic.
            unsafe { AtomicU64::from_ptr(at(pos).cast::<u64>()) }
        };
        if pad > 0 {
            word(tail).store(WRAP, Relaxed);
        }
        word(start).store(total as u64, Relaxed);
        word(start + 8).store(total as u64 ^ MAGIC, Relaxed);
        let mut dst = at(start + REC_HDR);
        for part in parts {
            // SAFETY: the record's payload (`total` bytes, the sum of the
            // parts) lies inside the window (`off + need <= size` after the
            // wrap), in reserved pages, past `tail`: no reader looks at it
            // before the `tail` store below, and the lock keeps writers out.
            unsafe {
                std::ptr::copy_nonoverlapping(part.as_ptr(), dst, part.len());
                dst = dst.add(part.len());
            }
        }
        // SeqCst: see `spill_pending`.
        s.tail.store(end, SeqCst);
        s.count.fetch_add(1, Relaxed);
        drop(_guard);
        self.wake(&self.header().not_empty.0);
        Ok(())
    }

    /// Takes the oldest record, if any and if the ring is drained (else
    /// `None`: a ring item may be older, see [`Ring::ring_drained`]),
    /// handing its bytes to `f` (under the lock: nobody writes them
    /// meanwhile, and `f` copies them out).
    pub(crate) fn spill_take<R>(&self, f: impl FnOnce(SharedBytes<'_>) -> R) -> Result<Option<R>> {
        if !self.spill_pending() {
            return Ok(None);
        }
        let size = self.spill_size;
        let win = self.spill_window()?;
        let s = self.spill_header();
        let _guard = self.lock()?;
        let r = loop {
            let (head, tail, _) = self.positions()?;
            if head == tail {
                return Ok(None);
            }
            // After reading the log's positions (acquire, under the lock):
            // a ring item put before the record we are about to take is
            // visible now, and must be taken first (`Ring::ring_drained`).
            if !self.ring_drained() {
                return Ok(None);
            }
            let off = head % size;
            let word = |o: u64| {
                // SAFETY: `o` is 8-aligned (records are 16-aligned) and
                // inside the window (checked by the callers below).
                unsafe { AtomicU64::from_ptr(win.as_ptr().add(o as usize).cast::<u64>()) }
                    .load(Relaxed)
            };
            // Every length read here is untrusted: checked before use.
            if off % 16 != 0 || tail - head < REC_HDR {
                return Err(self.discard(tail));
            }
            let len = word(off);
            if len == WRAP {
                if head + (size - off) > tail {
                    return Err(self.discard(tail));
                }
                s.head.store(head + (size - off), Release);
                continue;
            }
            let need = match rec_len(len) {
                Some(n) if word(off + 8) == len ^ MAGIC && off + n <= size && n <= tail - head => n,
                _ => return Err(self.discard(tail)),
            };
            // SAFETY: the payload lies inside the window (`off + need <=
            // size`) in reserved pages below `tail`; it stays mapped while
            // `win` lives, and `SharedBytes` reads it only atomically.
            let bytes = unsafe {
                SharedBytes::new(
                    win.as_ptr().add((off + REC_HDR) as usize),
                    len as usize,
                    (need - REC_HDR) as usize,
                )
            };
            let r = f(bytes);
            s.head.store(head + need, Release);
            s.count.fetch_sub(1, Relaxed);
            break r;
        };
        self.give_back();
        drop(_guard);
        let h = self.header();
        if self.maxsize > 0 {
            h.items.0.fetch_sub(1, SeqCst);
        }
        self.wake(&h.not_full.0);
        Ok(Some(r))
    }

    /// Punches the pages the read head has left behind, a step at a time
    /// (or all of them once the log is empty). Under the lock.
    fn give_back(&self) {
        let s = self.spill_header();
        let (head, tail) = (s.head.load(Relaxed), s.tail.load(Relaxed));
        let punched = s.punched.load(Relaxed);
        let floor = head / PAGE * PAGE;
        if floor >= punched + step(self.spill_size) || (head == tail && floor > punched) {
            // A failed punch only keeps memory: move on regardless.
            let _ = self.pages(punched, floor, true);
            s.punched.store(floor, Relaxed);
        }
    }

    /// The log is corrupt (a peer wrote garbage): drop everything in it,
    /// since no record boundary can be trusted any more.
    fn discard(&self, tail: u64) -> Error {
        let s = self.spill_header();
        s.head.store(tail, Release);
        s.count.store(0, Relaxed);
        self.give_back();
        corrupt()
    }
}

#[cfg(test)]
mod tests {
    use super::super::ring::{Stall, SLOT};
    use super::*;

    fn ring(slots: usize, spill: u64) -> Ring {
        Ring::new(slots, spill, 0, false, "test").unwrap()
    }

    fn get_vec(r: &Ring) -> Result<Vec<u8>> {
        r.get(Some(Instant::now()), Stall::No, |b| {
            let mut v = Vec::new();
            b.append_to(&mut v);
            v
        })
    }

    #[test]
    fn a_corrupt_ring_length_is_an_error_not_a_read_out_of_bounds() {
        let r = ring(8, MIN_SPILL);
        for len in [SLOT as u32 + 1, 1 << 30, u32::MAX] {
            r.put(&[b"abc"], None, Stall::No).unwrap();
            // A peer scribbles over the length of the committed item.
            let h = r.header();
            let p = h.head.0.load(SeqCst);
            r.corrupt_len_for_test(p, len);
            assert!(matches!(get_vec(&r), Err(Error::Codec(_))));
            // The item was consumed; the ring goes on.
            r.put(&[b"next"], None, Stall::No).unwrap();
            assert_eq!(get_vec(&r).unwrap(), b"next");
        }
    }

    #[test]
    fn a_corrupt_spill_record_is_an_error_and_the_log_goes_on() {
        let r = ring(4, MIN_SPILL);
        let big = vec![5u8; 1000]; // larger than half a 4-slot ring
        for garbage in [[0xffu8; 16], [0u8; 16], {
            let mut g = [0u8; 16];
            g[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
            g[8..].copy_from_slice(&((1u64 << 40) ^ MAGIC).to_le_bytes());
            g
        }] {
            r.put(&[&big], None, Stall::No).unwrap();
            r.put(&[&big], None, Stall::No).unwrap();
            assert!(r.spill_pending());
            let s = r.spill_header();
            let off = (s.head.load(SeqCst) % r.spill_size) as usize;
            let win = r.spill_window().unwrap();
            // SAFETY: the record header lies inside the window; nobody else
            // uses the ring.
            unsafe { std::ptr::copy_nonoverlapping(garbage.as_ptr(), win.as_ptr().add(off), 16) };
            assert!(matches!(get_vec(&r), Err(Error::Codec(_))));
            assert!(!r.spill_pending(), "a corrupt log is dropped whole");
            r.put(&[&big], None, Stall::No).unwrap();
            assert_eq!(get_vec(&r).unwrap(), big);
        }
    }

    #[test]
    fn spill_pages_are_given_back_once_read() {
        let r = ring(4, 8 << 20);
        let item = vec![9u8; 100_000];
        for _ in 0..30 {
            r.put(&[&item], None, Stall::No).unwrap();
        }
        let s = r.spill_header();
        assert!(s.reserved.load(SeqCst) >= 30 * 100_000);
        for _ in 0..30 {
            assert_eq!(get_vec(&r).unwrap(), item);
        }
        assert_eq!(s.head.load(SeqCst), s.tail.load(SeqCst));
        assert_eq!(s.punched.load(SeqCst), s.head.load(SeqCst) / PAGE * PAGE);
        // What is left allocated is at most the page under the head plus
        // what was reserved ahead of the tail.
        let st = rustix::fs::fstat(r.region().fd()).unwrap();
        let allocated = st.st_blocks as u64 * 512;
        let ring_bytes = r.spill_off;
        assert!(
            allocated <= ring_bytes + step(r.spill_size) + 2 * PAGE,
            "{allocated} bytes still allocated"
        );
    }
}
