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

use super::shared_bytes::SharedBytes;
use super::sync::{my_pid, owner_alive};
use crate::error::{Error, Result};
use crate::sys::futex;
use crate::sys::region::Window;
use crate::sys::Region;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::*};
use std::sync::OnceLock;
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

    /// `true` if the log holds records (or did a moment ago).
    pub(crate) fn pending(&self) -> bool {
        // SeqCst (a plain load on x86, like Acquire): the wake-up protocols
        // (futex sleepers and the async doorbell) need the re-check after
        // arming to be ordered with the `tail` store of `put`.
        self.tail.load(SeqCst) != self.head.load(SeqCst)
    }

    /// Records in the log (approximate).
    pub(crate) fn count(&self) -> i64 {
        self.count.load(Relaxed)
    }
}

/// The largest encoded item a spill area of `size` bytes takes.
pub(crate) fn max_item(size: u64) -> usize {
    (size / 2 - REC_HDR).min(usize::MAX as u64) as usize
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

/// One ring's spill log as this process sees it: the shared state (in the
/// ring's header) and the area of the ring's memfd that holds the records.
/// The ring wakes its waiters after a `put` or a `take` (the log knows
/// nothing of them).
pub(crate) struct SpillLog<'a> {
    pub(crate) hdr: &'a SpillHeader,
    /// The ring's memfd.
    pub(crate) region: &'a Region,
    /// Bytes of the area, and its offset in the memfd (after the ring).
    pub(crate) size: u64,
    pub(crate) off: u64,
    /// This process's mapping of the area, made on first use.
    pub(crate) win: &'a OnceLock<Window>,
}

impl<'a> SpillLog<'a> {
    /// This process's mapping of the area (made on first use).
    pub(crate) fn window(&self) -> Result<&'a Window> {
        if let Some(w) = self.win.get() {
            return Ok(w);
        }
        let w = self.region.map_window(self.off, self.size as usize)?;
        let _ = self.win.set(w); // a racing thread's window is dropped
        Ok(self.win.get().expect("set above"))
    }

    fn lock(&self) -> Result<LockGuard<'a>> {
        let s = self.hdr;
        let me = my_pid();
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
        let s = self.hdr;
        let (head, tail, punched) = (
            s.head.load(Acquire),
            s.tail.load(Acquire),
            s.punched.load(Relaxed),
        );
        if punched <= head && head <= tail && tail - punched <= self.size {
            Ok((head, tail, punched))
        } else {
            Err(corrupt())
        }
    }

    /// Reserves or punches the pages of positions `from..to` (page aligned).
    fn pages(&self, from: u64, to: u64, punch: bool) -> Result<()> {
        let size = self.size;
        let mut a = from;
        while a < to {
            let off = a % size;
            let len = (to - a).min(size - off);
            let file_off = self.off + off;
            if punch {
                self.region.punch(file_off, len)?;
            } else {
                self.region.reserve(file_off, len)?;
            }
            a += len;
        }
        Ok(())
    }

    /// Appends the item made of `parts` (`total` bytes) to the log.
    pub(crate) fn put(&self, parts: &[&[u8]], total: usize) -> Result<()> {
        let size = self.size;
        let need =
            rec_len(total as u64)
                .filter(|&n| n <= size / 2)
                .ok_or(Error::MessageTooLarge {
                    len: total as u64,
                    max: max_item(size) as u64,
                })?;
        let win = self.window()?;
        let s = self.hdr;
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
        // SeqCst: see `pending`.
        s.tail.store(end, SeqCst);
        s.count.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Takes the oldest record, if any and if `ring_drained()` (else
    /// `None`: a ring item may be older, see `Ring::ring_drained`),
    /// handing its bytes to `f` (under the lock: nobody writes them
    /// meanwhile, and `f` copies them out).
    pub(crate) fn take<R>(
        &self,
        ring_drained: impl Fn() -> bool,
        f: impl FnOnce(SharedBytes<'_>) -> R,
    ) -> Result<Option<R>> {
        if !self.hdr.pending() {
            return Ok(None);
        }
        let size = self.size;
        let win = self.window()?;
        let s = self.hdr;
        let _guard = self.lock()?;
        let r = loop {
            let (head, tail, _) = self.positions()?;
            if head == tail {
                return Ok(None);
            }
            // After reading the log's positions (acquire, under the lock):
            // a ring item put before the record we are about to take is
            // visible now, and must be taken first (`Ring::ring_drained`).
            if !ring_drained() {
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
        Ok(Some(r))
    }

    /// Punches the pages the read head has left behind, a step at a time
    /// (or all of them once the log is empty). Under the lock.
    fn give_back(&self) {
        let s = self.hdr;
        let (head, tail) = (s.head.load(Relaxed), s.tail.load(Relaxed));
        let punched = s.punched.load(Relaxed);
        let floor = head / PAGE * PAGE;
        if floor >= punched + step(self.size) || (head == tail && floor > punched) {
            // A failed punch only keeps memory: move on regardless.
            let _ = self.pages(punched, floor, true);
            s.punched.store(floor, Relaxed);
        }
    }

    /// The log is corrupt (a peer wrote garbage): drop everything in it,
    /// since no record boundary can be trusted any more.
    fn discard(&self, tail: u64) -> Error {
        let s = self.hdr;
        s.head.store(tail, Release);
        s.count.store(0, Relaxed);
        self.give_back();
        corrupt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spill area of `size` bytes after one page (the ring's place), as
    /// a ring lays it out.
    struct Area {
        region: Region,
        hdr: SpillHeader,
        win: OnceLock<Window>,
        size: u64,
    }

    impl Area {
        fn new(size: u64) -> Area {
            let size = spill_size(size);
            let region = Region::new_sparse(PAGE as usize, PAGE + size, "test").unwrap();
            let hdr = SpillHeader::default();
            hdr.init(size);
            Area {
                region,
                hdr,
                win: OnceLock::new(),
                size,
            }
        }

        fn log(&self) -> SpillLog<'_> {
            SpillLog {
                hdr: &self.hdr,
                region: &self.region,
                size: self.size,
                off: PAGE,
                win: &self.win,
            }
        }

        fn put(&self, item: &[u8]) -> Result<()> {
            self.log().put(&[item], item.len())
        }

        fn take(&self) -> Result<Option<Vec<u8>>> {
            self.log().take(
                || true,
                |b| {
                    let mut v = Vec::new();
                    b.append_to(&mut v);
                    v
                },
            )
        }
    }

    #[test]
    fn a_corrupt_spill_record_is_an_error_and_the_log_goes_on() {
        let a = Area::new(MIN_SPILL);
        let big = vec![5u8; 1000];
        for garbage in [[0xffu8; 16], [0u8; 16], {
            let mut g = [0u8; 16];
            g[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
            g[8..].copy_from_slice(&((1u64 << 40) ^ MAGIC).to_le_bytes());
            g
        }] {
            a.put(&big).unwrap();
            a.put(&big).unwrap();
            assert!(a.hdr.pending());
            let off = (a.hdr.head.load(SeqCst) % a.size) as usize;
            let win = a.log().window().unwrap();
            // SAFETY: the record header lies inside the window; nobody else
            // uses the area.
            unsafe { std::ptr::copy_nonoverlapping(garbage.as_ptr(), win.as_ptr().add(off), 16) };
            assert!(matches!(a.take(), Err(Error::Codec(_))));
            assert!(!a.hdr.pending(), "a corrupt log is dropped whole");
            a.put(&big).unwrap();
            assert_eq!(a.take().unwrap(), Some(big.clone()));
        }
    }

    #[test]
    fn a_record_is_not_taken_while_the_ring_holds_older_items() {
        let a = Area::new(MIN_SPILL);
        a.put(b"spilled").unwrap();
        let r = a.log().take(|| false, |b| b.len()).unwrap();
        assert_eq!(r, None);
        assert!(a.hdr.pending(), "the record stays in the log");
        assert_eq!(a.take().unwrap().as_deref(), Some(&b"spilled"[..]));
    }

    #[test]
    fn spill_pages_are_given_back_once_read() {
        let a = Area::new(8 << 20);
        let item = vec![9u8; 100_000];
        for _ in 0..30 {
            a.put(&item).unwrap();
        }
        let s = &a.hdr;
        assert!(s.reserved.load(SeqCst) >= 30 * 100_000);
        for _ in 0..30 {
            assert_eq!(a.take().unwrap().as_ref(), Some(&item));
        }
        assert_eq!(s.head.load(SeqCst), s.tail.load(SeqCst));
        assert_eq!(s.punched.load(SeqCst), s.head.load(SeqCst) / PAGE * PAGE);
        // What is left allocated is at most the page under the head plus
        // what was reserved ahead of the tail.
        let st = rustix::fs::fstat(a.region.fd()).unwrap();
        let allocated = st.st_blocks as u64 * 512;
        assert!(
            allocated <= PAGE + step(a.size) + 2 * PAGE,
            "{allocated} bytes still allocated"
        );
    }
}
