//! A worker's journal: shared memory through which no completed answer is
//! lost when the worker dies, and through which the parent takes back
//! batches the worker has not started.
//!
//! A worker batches its answers (one `send` for many tasks), so when it
//! dies, the answers it had not sent yet would die with it. The journal is
//! a copy, in a shared region, of exactly those bytes: the unsent tail of
//! the worker's output stream, updated before each task starts (a small
//! copy and one store; a task's own answer is copied once the next task's
//! arguments are decoded, so that its bytes have left the store buffer). After the worker's death the parent appends the part of the
//! tail it has not received to what it read from the socket, and so gets
//! every answer of every completed task. The words below say how far the
//! batch in progress got, so that only the task that was running fails and
//! the tasks after it run on another worker.
//!
//! Layout (every word an `AtomicU64`):
//!
//! - `GATE` (its own cache lines): low half, the ordinal of the next `TASKS`
//!   frame the worker may claim; high half, `void_below`: frames with a
//!   lower ordinal not claimed yet are void (taken back by the parent). The
//!   worker claims a frame, and the parent takes frames back, by
//!   compare-and-swap on this one word, so a frame is either run or taken
//!   back, never both.
//! - `JSTART`: the offset in the output stream of journal byte 0.
//! - `COMMIT`: high half, tasks of the batch in progress that are done;
//!   low half, journal bytes that are valid.
//! - `DECODED`: high half, tasks of the batch in progress whose arguments
//!   were decoded (the running one included); low half, where the next
//!   task's arguments start in the batch's items.
//!
//! The parent reads the journal only once the worker has exited, so it sees
//! the state at one point of the worker's program order; every update is
//! ordered so that any such point is consistent. The bytes are still
//! untrusted: every length and offset is checked before use.
#![allow(unsafe_code)]

use crate::codec::Out;
use crate::error::Result;
use crate::sys::conn_io::Kind;
use crate::sys::framing;
use crate::sys::Region;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering::AcqRel, Ordering::Acquire, Ordering::Release};

// The gate, which the parent reads and writes, has a page of its own, away
// from the words the worker writes for every task.
const GATE: usize = 0;
const JSTART: usize = 4096;
const COMMIT: usize = 4104;
const DECODED: usize = 4112;
const DATA: usize = 4096 + 128;

/// Unsent answers kept in the journal; beyond this the worker sends them
/// (as a `PARTIAL` frame if its batch is not done).
pub(crate) const CAP: usize = 1 << 20;

/// The size of a journal region.
pub(crate) const REGION_LEN: usize = DATA + CAP;

fn word(r: &Region, offset: usize) -> &AtomicU64 {
    debug_assert!(offset <= DATA - 8 && offset % 8 == 0);
    // SAFETY: every offset used is below DATA (within the region, which is
    // REGION_LEN long: checked when the worker maps it), a multiple of 8 of
    // a page-aligned mapping; any bit pattern is a valid AtomicU64, and both
    // processes only access these words atomically.
    unsafe { r.get::<AtomicU64>(offset) }
}

fn lo(w: u64) -> u32 {
    w as u32
}

fn hi(w: u64) -> u32 {
    (w >> 32) as u32
}

fn pack(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

/// `a < b` for ordinals that wrap around (they stay within 2^31 of each other).
pub(crate) fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// The worker's side: the journal's data area *is* the worker's output
/// buffer. Answers are written there and sent from there, so the unsent
/// tail the parent recovers costs no copy; `commit` only records how far
/// the bytes (and the batch) got.
pub(crate) struct Writer {
    region: Region,
    /// The data area (within `region`, which lives as long as `self`).
    data: *mut u8,
    /// Bytes in the buffer (not sent yet).
    len: usize,
    /// Stream offset of buffer byte 0.
    sent: u64,
    /// A write as [`Out`] did not fit (and was dropped).
    full: bool,
}

impl Writer {
    pub(crate) fn new(region: Region) -> Option<Writer> {
        if region.len() < REGION_LEN {
            return None;
        }
        // SAFETY: DATA < REGION_LEN <= the region's length.
        let data = unsafe { region.as_ptr().add(DATA) };
        Some(Writer {
            region,
            data,
            len: 0,
            sent: 0,
            full: false,
        })
    }

    #[inline(always)]
    fn data(&self) -> *mut u8 {
        self.data
    }

    /// Whether a write as [`Out`] was dropped for lack of room since the
    /// last call (or `truncate`).
    #[inline]
    pub(crate) fn take_full(&mut self) -> bool {
        std::mem::replace(&mut self.full, false)
    }

    /// Claims frame `ordinal` to run it; `false` if the parent took it back.
    pub(crate) fn claim(&self, ordinal: u32) -> bool {
        let gate = word(&self.region, GATE);
        let mut g = gate.load(Acquire);
        loop {
            if before(ordinal, hi(g)) {
                return false;
            }
            match gate.compare_exchange_weak(
                g,
                pack(hi(g), ordinal.wrapping_add(1)),
                AcqRel,
                Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => g = now,
            }
        }
    }

    /// Bytes in the buffer.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bytes in the buffer.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `len <= CAP` bytes of the data area, all written by this
        // process (the only writer; the parent reads only after it exits),
        // and not written while this borrow of `self` lasts.
        unsafe { std::slice::from_raw_parts(self.data(), self.len) }
    }

    /// Appends `bytes`; `false` (and nothing appended) if they do not fit.
    #[inline]
    pub(crate) fn append(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > CAP - self.len {
            return false;
        }
        let dst = self.data();
        if bytes.len() <= 16 {
            // Small answers (the common case): byte by byte, each load
            // matching one earlier store (a wider load of bytes still in the
            // store buffer would stall).
            for (i, b) in bytes.iter().enumerate() {
                // SAFETY: `len + i < len + bytes.len() <= CAP`: within the
                // data area, which only this process writes.
                unsafe { dst.add(self.len + i).write_volatile(*b) };
            }
        } else {
            // SAFETY: as above, for `bytes.len()` bytes; `bytes` is not in
            // the region (it is borrowed while `self` is borrowed mutably).
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.add(self.len), bytes.len())
            };
        }
        self.len += bytes.len();
        true
    }

    /// Overwrites `bytes.len()` bytes at `at` (a frame header filled in).
    pub(crate) fn overwrite(&mut self, at: usize, bytes: &[u8]) {
        assert!(at + bytes.len() <= self.len, "overwrite past the end");
        // SAFETY: within the first `len <= CAP` bytes of the data area.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data().add(at), bytes.len()) };
    }

    /// Drops the bytes from `n` on.
    pub(crate) fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
        self.full = false;
    }

    /// Records that the buffer holds what it holds now, and `done` tasks of
    /// the batch in progress.
    #[inline]
    pub(crate) fn commit(&self, done: u32) {
        word(&self.region, COMMIT).store(pack(done, self.len as u32), Release);
    }

    /// The arguments of task `task` of the batch in progress are decoded;
    /// the next task's start at `pos` in the items.
    #[inline]
    pub(crate) fn decoded(&self, task: u32, pos: usize) {
        word(&self.region, DECODED).store(pack(task + 1, pos as u32), Release);
    }

    /// A new batch begins: none of its tasks is decoded or done.
    pub(crate) fn begin(&self) {
        word(&self.region, DECODED).store(0, Release);
        self.commit(0);
    }

    /// The whole buffer and then `extra` more bytes (sent from elsewhere)
    /// went out: the buffer is empty.
    fn sent(&mut self, extra: usize, done: u32) {
        let n = self.len + extra;
        self.len = 0;
        // Empty first, then move the start: at any point between the two,
        // the parent sees no unsent bytes, which is true.
        word(&self.region, COMMIT).store(pack(done, 0), Release);
        self.sent += n as u64;
        word(&self.region, JSTART).store(self.sent, Release);
    }
}

impl Out for Writer {
    #[inline(always)]
    fn push(&mut self, b: u8) {
        if self.len < CAP {
            // SAFETY: `len < CAP`: within the data area, which only this
            // process writes (the parent reads it after this process exits).
            unsafe { self.data.add(self.len).write(b) };
            self.len += 1;
        } else {
            self.full = true;
        }
    }

    #[inline(always)]
    fn extend_from_slice(&mut self, s: &[u8]) {
        if !self.append(s) {
            self.full = true;
        }
    }

    #[inline(always)]
    fn full(&self) -> bool {
        self.full
    }
}

/// Sends the buffer (blocking), then the `extra` pieces (a frame too large
/// for the buffer), and empties it. `false` if the parent is gone.
pub(crate) fn flush(sock: BorrowedFd<'_>, j: &mut Writer, extra: &[&[u8]], done: u32) -> bool {
    let mut parts = [j.bytes(), &[], &[]];
    let k = 1 + extra.len().min(2);
    parts[1..k].copy_from_slice(&extra[..k - 1]);
    if framing::write_all(sock, Kind::Socket, &parts[..k], &[]).is_err() {
        return false;
    }
    let extra: usize = parts[1..k].iter().map(|p| p.len()).sum();
    j.sent(extra, done);
    true
}

/// What the parent recovers from a dead worker's journal.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Tasks of the batch in progress that were done.
    pub(crate) done: u32,
    /// Tasks of it whose arguments were decoded.
    pub(crate) decoded: u32,
    /// Where the arguments of the first task not decoded start.
    pub(crate) pos: usize,
}

/// The parent's side.
pub(crate) struct Reader {
    region: Region,
}

impl Reader {
    pub(crate) fn new() -> Result<Reader> {
        Ok(Reader {
            region: Region::new(REGION_LEN, "multiproc-pool-worker")?,
        })
    }

    /// The region, to hand to the worker.
    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    /// Takes back every frame not claimed yet, below `next_ordinal` (the
    /// ordinal of the next frame to send). Returns the ordinal of the first
    /// frame taken back: frames from it to `next_ordinal` will not run.
    pub(crate) fn take_back(&self, next_ordinal: u32) -> u32 {
        let gate = word(&self.region, GATE);
        let mut g = gate.load(Acquire);
        loop {
            match gate.compare_exchange_weak(g, pack(next_ordinal, lo(g)), AcqRel, Acquire) {
                Ok(_) => return lo(g),
                Err(now) => g = now,
            }
        }
    }

    /// The ordinal of the next frame the worker may claim.
    pub(crate) fn next_claim(&self) -> u32 {
        lo(word(&self.region, GATE).load(Acquire))
    }

    /// After the worker exited: the output bytes it had not sent, given that
    /// `received` bytes of its stream arrived, and where its batch stood.
    pub(crate) fn recover(&self, received: u64) -> (Vec<u8>, Recovered) {
        let start = word(&self.region, JSTART).load(Acquire);
        let commit = word(&self.region, COMMIT).load(Acquire);
        let decoded = word(&self.region, DECODED).load(Acquire);
        let len = (lo(commit) as usize).min(CAP);
        let mut tail = Vec::new();
        if let Some(skip) = received.checked_sub(start) {
            if skip < len as u64 {
                let skip = skip as usize;
                tail.resize(len - skip, 0);
                // SAFETY: `skip < len <= CAP`: the source lies within the
                // data area. The worker has exited; a process it forked could
                // still write there, which can only make these bytes wrong
                // (they are checked like any other input), not unsafe to copy.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.region.as_ptr().add(DATA + skip),
                        tail.as_mut_ptr(),
                        len - skip,
                    )
                };
            }
        }
        let rec = Recovered {
            done: hi(commit),
            decoded: hi(decoded),
            pos: lo(decoded) as usize,
        };
        (tail, rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_claimed_or_taken_back_never_both() {
        let r = Reader::new().unwrap();
        let w = Writer::new(r.region().clone()).unwrap();
        assert!(w.claim(0));
        assert!(w.claim(1));
        // Frames 2..5 sent; take back what is not claimed.
        assert_eq!(r.take_back(5), 2);
        assert!(!w.claim(2));
        assert!(!w.claim(4));
        assert!(w.claim(5));
        assert_eq!(r.next_claim(), 6);
        // Nothing unclaimed: taking back takes nothing.
        assert_eq!(r.take_back(6), 6);
        assert!(w.claim(6));
    }

    #[test]
    fn ordinals_wrap() {
        assert!(before(u32::MAX, 0));
        assert!(!before(0, u32::MAX));
        let r = Reader::new().unwrap();
        let w = Writer::new(r.region().clone()).unwrap();
        assert_eq!(r.take_back(u32::MAX), 0);
        assert!(!w.claim(u32::MAX - 1));
        assert!(w.claim(u32::MAX));
        assert!(w.claim(0));
    }

    #[test]
    fn the_unsent_tail_is_recovered() {
        let r = Reader::new().unwrap();
        let mut w = Writer::new(r.region().clone()).unwrap();
        w.begin();
        assert!(w.append(b"ab"));
        w.decoded(0, 7);
        assert!(w.append(b"cdef"));
        w.commit(1);
        let (tail, rec) = r.recover(0);
        assert_eq!(tail, b"abcdef");
        assert_eq!((rec.done, rec.decoded, rec.pos), (1, 1, 7));
        // 4 bytes arrived by the socket: only the rest comes from the journal.
        assert_eq!(r.recover(4).0, b"ef");
        w.overwrite(0, b"AB");
        w.commit(1);
        assert_eq!(r.recover(0).0, b"ABcdef");
        w.sent(0, 1);
        assert!(r.recover(6).0.is_empty());
        assert!(w.append(b"gh"));
        w.commit(2);
        assert_eq!(r.recover(6).0, b"gh");
        assert_eq!(r.recover(7).0, b"h");
        // A journal behind what arrived has nothing unsent.
        assert!(r.recover(100).0.is_empty());
        // Sent with 10 bytes from elsewhere: the stream moved on by 12.
        w.sent(10, 2);
        assert!(w.append(b"ij"));
        w.commit(3);
        assert_eq!(r.recover(18).0, b"ij");
        assert!(!w.append(&vec![0; CAP]));
        assert_eq!(w.bytes(), b"ij");
        w.truncate(1);
        assert_eq!(w.bytes(), b"i");
    }
}
