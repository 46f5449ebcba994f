//! The shared-memory ring under every queue type: a bounded MPMC ring of
//! fixed-size slots in one `memfd` region (see the [module docs](super) for
//! the design and its fault model).
//!
//! Layout of the region (offsets, never pointers: each process maps it at an
//! address of its own):
//!
//! ```text
//! Header (counters, wait words) | cells[cap]: Cell (64 B) | data[cap * SLOT]
//! ```
//!
//! Ticket `t` lives in slot `t % cap`, whose cell holds a sequence word, the
//! claim word (round tag, span, producer pid), the taker word (round tag,
//! consumer pid), the payload length and 32 bytes for a small item inline.
//! The sequence word says what the slot holds:
//!
//! - `seq == t`: free for the producer of ticket `t`;
//! - `seq == t + 1`: ticket `t` is the first slot of a committed item;
//! - `seq == t + cap`: released by the consumer of ticket `t` (= free for `t + cap`).
//!
//! An item takes `span` consecutive tickets (one for an encoded item of up to
//! [`SLOT`] bytes, stored in the cell if it fits in [`INLINE`] bytes, else in
//! the data array); only its first slot's `seq` is committed, and the consumer
//! releases all of them. An item that would wrap past the end of the data
//! array is padded: it claims the slots up to the end as well and its payload
//! starts at slot 0, so every payload is contiguous.
//!
//! Claiming ticket `p` (`try_claim`): while `tail == p`, CAS the claim word of
//! cell `p` from a word of an older round to ours; then check the slot still
//! reads free (`seq == p`: else the word we replaced had been cleared by a
//! release earlier in this round and our claim is void); then CAS `tail` to
//! `p + span`. A producer that finds a claim word of this round at `tail`
//! moves `tail` for its owner. Taking (`try_take`) mirrors it with the taker
//! word and `seq == p + 1`. The round tag (`(t / cap) mod (2^21 - 1) + 1`)
//! tells a word of this round from a stale one; released claim words are
//! cleared, so a stale tag cannot come back.
//!
//! The code, one concept a file: this one has the layout, the words and
//! the accessors every side shares; `put.rs` the producer side (reserve,
//! claim, write, commit), `take.rs` the consumer side (take, read,
//! release), `wait.rs` sleeping and waking (and joinable queues' task
//! count), `recover.rs` reclaiming what a dead peer holds, and
//! `spilled.rs` the ring's side of the spill log.
#![allow(unsafe_code)]

mod put;
mod recover;
mod spilled;
mod take;
mod wait;

#[cfg(feature = "tokio")]
pub(crate) use wait::{SPIN_FOR, STUCK_CHECK};

use super::spill::{self, SpillHeader};
use super::sync::{AtomicI64, AtomicU32, AtomicU64};
use super::wake::{Doorbell, WaitQ};
use crate::error::{Error, Result};
use crate::sys::region::Window;
use crate::sys::Region;
use std::cell::UnsafeCell;
use std::sync::atomic::Ordering::*;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Bytes of payload per slot: an item encoding to at most this many bytes
/// takes one slot.
pub(crate) const SLOT: usize = 128;
/// Default number of slots (4 MiB of data; items up to 2 MiB encoded).
pub(crate) const DEFAULT_SLOTS: usize = 1 << 15;
const MAGIC: u64 = 0x6d70_7175_6575_6532; // "mpqueue2"
const FLAG_JOINABLE: u64 = 1;

/// One value alone on 128 bytes: Intel's spatial prefetcher moves cache
/// lines in pairs, so two sides writing neighbouring 64-byte lines still
/// contend.
#[repr(C, align(128))]
#[derive(Default)]
pub(crate) struct Line<T>(pub(crate) T);

#[repr(C)]
#[derive(Default)]
pub(crate) struct Header {
    magic: AtomicU64,
    cap: AtomicU64,
    flags: AtomicU64,
    maxsize: AtomicU64,
    /// `join_async` waiters armed (see `wake.rs`); cold, like the words
    /// above.
    pub(crate) join_armed: AtomicU32,
    /// Times the doorbell was rung (test support and diagnostics).
    pub(crate) rings: AtomicU64,
    tail: Line<AtomicU64>,
    pub(crate) head: Line<AtomicU64>,
    /// Items committed (producers' line; unbounded queues' `qsize`).
    puts: Line<AtomicI64>,
    /// Items taken (consumers' line).
    gets: Line<AtomicI64>,
    /// Items in the queue, reserved before the claim (bounded queues only).
    pub(crate) items: Line<AtomicI64>,
    pub(crate) not_empty: Line<WaitQ>,
    pub(crate) not_full: Line<WaitQ>,
    pub(crate) unfinished: Line<AtomicU32>,
    /// The spill log's state (`spill.rs`).
    pub(crate) spill: Line<SpillHeader>,
}

/// One ticket's cell: its sequence word, the claim record (meaningful in an
/// item's first slot), and room for a small item inline, all on one cache
/// line so that a small item costs one line transfer between processes.
#[repr(C, align(64))]
#[derive(Default)]
struct Cell {
    /// Free / committed / released, as described in the module docs.
    seq: AtomicU64,
    /// The claim word, `tag | span | producer pid` (see [`pack_claim`]): set
    /// by the one CAS that claims the ticket, so no instant exists at which
    /// the ticket is claimed but its owner unknown; cleared on release.
    claim: AtomicU64,
    /// The taker word, `tag | consumer pid`, likewise for the consumer that
    /// takes the item; cleared on release.
    taker: AtomicU64,
    /// Payload length in bytes.
    len: AtomicU32,
    _pad: AtomicU32,
    /// An item of up to `INLINE` bytes lives here rather than in the data array.
    inline: UnsafeCell<[u8; INLINE]>,
}

/// Encoded items up to this size are stored in their cell.
pub(crate) const INLINE: usize = 32;

/// Largest number of slots (spans must fit the claim word's 21 bits).
pub(crate) const MAX_SLOTS: usize = 1 << 20;
const PID_BITS: u32 = 22; // pid_max is at most 2^22
const SPAN_BITS: u32 = 21;
const TAG_SHIFT: u32 = PID_BITS + SPAN_BITS;
const TAG_MOD: u64 = (1 << (64 - TAG_SHIFT)) - 1;

/// A claim word: `tag` (which round of the ring, never 0), `span`, `pid`.
#[inline]
fn pack_claim(tag: u64, span: u64, pid: u32) -> u64 {
    (tag << TAG_SHIFT) | (span << PID_BITS) | u64::from(pid)
}

#[inline]
fn word_tag(w: u64) -> u64 {
    w >> TAG_SHIFT
}

#[inline]
fn word_span(w: u64) -> u64 {
    (w >> PID_BITS) & ((1 << SPAN_BITS) - 1)
}

#[inline]
fn word_pid(w: u64) -> u32 {
    (w & ((1 << PID_BITS) - 1)) as u32
}

const HEADER_BYTES: usize = round_up(std::mem::size_of::<Header>(), 64);

const fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// (offset of the cells, offset of the data array, total length).
fn layout(cap: usize) -> (usize, usize, usize) {
    let cells = HEADER_BYTES;
    let data = round_up(cells + cap * std::mem::size_of::<Cell>(), 4096);
    (cells, data, round_up(data + cap * SLOT, 4096))
}

/// Test support: where a producer or consumer hangs forever (to be killed
/// there by a test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
pub(crate) enum Stall {
    /// Never (every real call).
    No,
    /// Right after the claim (taker) word CAS, before moving `tail` (`head`).
    Early,
    /// After half the payload is written (after the take, before reading).
    Late,
    /// (Producers only.) After the whole payload is written, wait until
    /// [`PAUSE_GATE`] reads `true`, then commit: a live producer descheduled
    /// between its claim and its commit, made to order.
    Pause,
}

/// Test support: the gate [`Stall::Pause`] producers of this process wait
/// on. (A static rather than a payload of `Stall`, which stays one byte on
/// the put path.)
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
pub(crate) static PAUSE_GATE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

fn hang_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Outcome of one non-blocking attempt.
enum Try<R> {
    Done(R),
    /// Nothing to take / no room: sleep on the queue's wait word.
    Wait,
    /// Blocked on the claim of ticket `t` held by another process.
    Stuck(u64),
}

/// One process's view of a ring (cheap to share within the process).
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    region: Region,
    /// `region.as_ptr()`, cached: the hot path reads it on every access.
    base: std::ptr::NonNull<u8>,
    cap: u64,
    mask: u64,
    cap_bits: u32,
    cells_off: usize,
    data_off: usize,
    joinable: bool,
    pub(crate) maxsize: u64,
    /// Bytes of the spill area, and its offset in the memfd (after the ring).
    pub(crate) spill_size: u64,
    pub(crate) spill_off: u64,
    /// This process's mapping of the spill area, made on first use.
    spill_win: Arc<OnceLock<Window>>,
    /// Wakes async waiters (`wake.rs`).
    pub(crate) doorbell: Doorbell,
}

// SAFETY: `base` points into the mapping owned by `region` (kept alive by
// this struct); everything reached through it is atomics or bytes guarded by
// the ring's protocol, so a `Ring` may move to and be shared by threads.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// A new ring of at least `slots` slots (rounded up to a power of two),
    /// with a spill area of `spill` bytes (address space, see `spill.rs`).
    pub(crate) fn new(
        slots: usize,
        spill: u64,
        maxsize: usize,
        joinable: bool,
        name: &str,
    ) -> Result<Ring> {
        let cap = slots
            .max(4)
            .checked_next_power_of_two()
            .filter(|&c| c <= MAX_SLOTS)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "queue capacity exceeds the maximum of {} MiB",
                    (MAX_SLOTS * SLOT) >> 20
                ))
            })?;
        let (_, _, total) = layout(cap);
        let spill = spill::spill_size(spill);
        let region = Region::new_sparse(total, total as u64 + spill, name)?;
        let ring = Ring::from_region(
            region,
            Doorbell::new()?,
            cap as u64,
            spill,
            maxsize as u64,
            joinable,
        )?;
        #[cfg(loom)]
        ring.place_loom_atomics();
        let h = ring.header();
        h.spill.0.init(spill);
        for i in 0..ring.cap {
            ring.cell(i).seq.store(i, Relaxed);
        }
        h.cap.store(ring.cap, Relaxed);
        h.maxsize.store(maxsize as u64, Relaxed);
        h.flags
            .store(if joinable { FLAG_JOINABLE } else { 0 }, Relaxed);
        h.magic.store(MAGIC, Release);
        Ok(ring)
    }

    fn from_region(
        region: Region,
        doorbell: Doorbell,
        cap: u64,
        spill_size: u64,
        maxsize: u64,
        joinable: bool,
    ) -> Result<Ring> {
        let (cells_off, data_off, total) = layout(cap as usize);
        if region.len() < total {
            return Err(Error::Bootstrap(
                "queue region is smaller than its layout".into(),
            ));
        }
        let base = std::ptr::NonNull::new(region.as_ptr()).ok_or_else(|| {
            Error::Io(std::io::Error::other("the queue region has a null mapping"))
        })?;
        Ok(Ring {
            region,
            base,
            cap,
            mask: cap - 1,
            cap_bits: cap.trailing_zeros(),
            cells_off,
            data_off,
            joinable,
            maxsize,
            spill_size,
            spill_off: total as u64,
            spill_win: Arc::new(OnceLock::new()),
            doorbell,
        })
    }

    /// Under loom, atomics are objects of the model, not plain words: they
    /// are constructed in place over the zeroed region (and leaked with it).
    #[cfg(loom)]
    fn place_loom_atomics(&self) {
        // SAFETY: the region holds the layout (checked in `from_region`),
        // at the offsets `header` and `cell` use; nothing has referenced it yet.
        unsafe {
            std::ptr::write(self.base.as_ptr().cast::<Header>(), Header::default());
            for i in 0..self.cap as usize {
                let at = self.cells_off + i * std::mem::size_of::<Cell>();
                std::ptr::write(self.base.as_ptr().add(at).cast::<Cell>(), Cell::default());
            }
        }
    }

    /// Rebuilds a ring from a region received by handoff, checking its header.
    pub(crate) fn attach(region: Region, doorbell: Doorbell) -> Result<Ring> {
        if region.len() < HEADER_BYTES {
            return Err(Error::Bootstrap("queue region too small".into()));
        }
        // SAFETY: offset 0 is page aligned, the region holds a header (checked
        // above), and a Header is all atomics (any bit pattern is valid).
        let h: &Header = unsafe { region.get(0) };
        if h.magic.load(Acquire) != MAGIC {
            return Err(Error::Bootstrap("not a multiproc queue region".into()));
        }
        let cap = h.cap.load(Relaxed);
        if !cap.is_power_of_two() || cap < 4 || cap > MAX_SLOTS as u64 {
            return Err(Error::Bootstrap("corrupt queue header".into()));
        }
        let maxsize = h.maxsize.load(Relaxed);
        let joinable = h.flags.load(Relaxed) & FLAG_JOINABLE != 0;
        let spill = h
            .spill
            .0
            .size()
            .ok_or_else(|| Error::Bootstrap("corrupt queue header".into()))?;
        Ring::from_region(region, doorbell, cap, spill, maxsize, joinable)
    }

    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: `base` is the start of the live mapping (page aligned), at
        // least the layout long (checked in `from_region`); Header is all
        // atomics, valid when zeroed.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    #[inline]
    fn cell(&self, ticket: u64) -> &Cell {
        let i = (ticket & self.mask) as usize;
        debug_assert!(self.cells_off + (i + 1) * std::mem::size_of::<Cell>() <= self.region.len());
        // SAFETY: i < cap; the cell array holds cap 64-byte cells at a
        // 64-aligned offset inside the live mapping at `base` (checked in
        // `from_region`); a Cell is atomics plus an UnsafeCell of bytes,
        // valid when zeroed.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(self.cells_off + i * std::mem::size_of::<Cell>())
                .cast::<Cell>()
        }
    }

    #[inline]
    fn seq(&self, ticket: u64) -> &AtomicU64 {
        &self.cell(ticket).seq
    }

    /// Pointer to the payload bytes starting at slot index `start`.
    #[inline]
    fn data_ptr(&self, start: u64) -> *mut u8 {
        debug_assert!(start < self.cap);
        // SAFETY: start < cap, so the offset lies inside the data array of
        // the live mapping at `base`.
        unsafe {
            self.base
                .as_ptr()
                .add(self.data_off + start as usize * SLOT)
        }
    }

    /// Largest encoded item the ring accepts.
    pub(crate) fn max_item(&self) -> usize {
        (self.cap as usize / 2) * SLOT
    }

    pub(crate) fn is_joinable(&self) -> bool {
        self.joinable
    }

    pub(crate) fn maxsize(&self) -> u64 {
        self.maxsize
    }

    /// Items put and not yet taken (approximate while others work).
    pub(crate) fn qsize(&self) -> usize {
        let h = self.header();
        let n = if self.maxsize > 0 {
            h.items.0.load(SeqCst)
        } else {
            let gets = h.gets.0.load(SeqCst);
            h.puts.0.load(SeqCst) - gets + self.spill_count().max(0)
        };
        n.max(0) as usize
    }

    /// Tickets claimed and not yet taken (test support).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn pending_tickets(&self) -> u64 {
        let h = self.header();
        let head = h.head.0.load(SeqCst);
        h.tail.0.load(SeqCst).wrapping_sub(head)
    }

    pub(crate) fn full(&self) -> bool {
        self.maxsize > 0 && self.qsize() as u64 >= self.maxsize
    }

    /// The tag of ticket `t`'s round (1..=TAG_MOD, never 0).
    #[inline]
    fn tag(&self, t: u64) -> u64 {
        ((t >> self.cap_bits) % TAG_MOD) + 1
    }

    /// The claim word of ticket `t` if it belongs to `t`'s round.
    #[inline]
    fn claim_of(&self, t: u64) -> Option<u64> {
        let w = self.cell(t).claim.load(SeqCst);
        (word_tag(w) == self.tag(t)).then_some(w)
    }

    /// The span of a claim word, kept within `1..=cap`.
    #[inline]
    fn span(&self, w: u64) -> u64 {
        word_span(w).clamp(1, self.cap)
    }

    /// Where the payload of the item at ticket `p` (spanning `span`
    /// tickets) lives, and how many bytes of room it has there: its cell's
    /// inline bytes for a one-ticket item that fits them, else its slots in
    /// the data array (from slot 0 if the span was padded to wrap).
    #[inline]
    fn payload(&self, p: u64, len: usize, span: u64) -> (*mut u8, usize) {
        let idx = p & self.mask;
        let (start, slots) = if idx + span > self.cap {
            (0, span - (self.cap - idx))
        } else {
            (idx, span)
        };
        if span == 1 && len <= INLINE {
            return (self.cell(p).inline.get().cast::<u8>(), INLINE);
        }
        (self.data_ptr(start), slots as usize * SLOT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn ring_cost() {
        let r = Ring::new(DEFAULT_SLOTS, spill::DEFAULT_SPILL, 0, false, "t").unwrap();
        let n = 2_000_000u64;
        let t0 = Instant::now();
        for i in 0..n {
            r.put(&[&i.to_le_bytes()], None, Stall::No).unwrap();
            r.get(None, Stall::No, |b| std::hint::black_box(b.len()))
                .unwrap();
        }
        println!(
            "ring put+get: {:.1} ns",
            t0.elapsed().as_nanos() as f64 / n as f64
        );
    }

    /// A ring of `slots` slots and a spill area of `spill` bytes, for the
    /// tests of every side.
    pub(super) fn ring(slots: usize, spill: u64) -> Ring {
        Ring::new(slots, spill, 0, false, "test").unwrap()
    }

    /// One item, copied out, or the error (no waiting).
    pub(super) fn get_vec(r: &Ring) -> Result<Vec<u8>> {
        r.get(Some(Instant::now()), Stall::No, |b| {
            let mut v = Vec::new();
            b.append_to(&mut v);
            v
        })
    }
}
