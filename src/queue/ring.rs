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
#![allow(unsafe_code)]

use super::shared_bytes::SharedBytes;
use super::spill::{self, SpillHeader, SpillLog};
use super::sync::{self, my_pid, owner_alive, AtomicI64, AtomicU32, AtomicU64, Wake};
use super::wake::{self, Await, Doorbell, WaitQ};
use crate::error::{Error, Result};
use crate::sys::region::Window;
use crate::sys::Region;
use std::cell::UnsafeCell;
use std::sync::atomic::Ordering::*;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Bytes of payload per slot: an item encoding to at most this many bytes
/// takes one slot.
pub(crate) const SLOT: usize = 128;
/// Default number of slots (4 MiB of data; items up to 2 MiB encoded).
pub(crate) const DEFAULT_SLOTS: usize = 1 << 15;
const MAGIC: u64 = 0x6d70_7175_6575_6532; // "mpqueue2"
const FLAG_JOINABLE: u64 = 1;
/// How long a waiter polls (with growing pauses in between) before it
/// yields and then sleeps on the futex: a wake-up across CPUs costs far more.
pub(crate) const SPIN_FOR: Duration = Duration::from_micros(50);
/// Pauses between polls: `MIN_BACKOFF`, doubling up to `MIN_BACKOFF << MAX_BACKOFF`.
const MIN_BACKOFF: u32 = 16;
const MAX_BACKOFF: u32 = 3;
/// `sched_yield`s after spinning, before sleeping.
const YIELDS: u32 = 4;
/// How long a waiter sleeps before it looks for a dead producer or consumer
/// that holds the slot it waits for.
pub(crate) const STUCK_CHECK: Duration = Duration::from_millis(50);
/// How long a producer waits for room in a full ring while no consumer takes
/// anything, before it puts its item into the spill log instead. (Longer
/// than [`STUCK_CHECK`], so that a dead consumer's slots are reclaimed
/// first.) While consumers keep taking items it keeps waiting: room comes
/// within microseconds.
const GRACE: Duration = Duration::from_millis(100);

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
fn pack_claim(tag: u64, span: u64, pid: u32) -> u64 {
    (tag << TAG_SHIFT) | (span << PID_BITS) | u64::from(pid)
}

fn word_tag(w: u64) -> u64 {
    w >> TAG_SHIFT
}

fn word_span(w: u64) -> u64 {
    (w >> PID_BITS) & ((1 << SPAN_BITS) - 1)
}

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

    /// The spill log (`spill.rs`).
    pub(crate) fn spill(&self) -> SpillLog<'_> {
        SpillLog {
            hdr: &self.header().spill.0,
            region: &self.region,
            size: self.spill_size,
            off: self.spill_off,
            win: &self.spill_win,
        }
    }

    /// The largest encoded item the queue accepts (through the spill log).
    pub(crate) fn spill_max_item(&self) -> usize {
        spill::max_item(self.spill_size)
    }

    /// `true` if the spill log holds records (or did a moment ago).
    pub(crate) fn spill_pending(&self) -> bool {
        self.header().spill.0.pending()
    }

    /// Records in the spill log (approximate).
    pub(crate) fn spill_count(&self) -> i64 {
        self.header().spill.0.count()
    }

    /// Appends the item made of `parts` (`total` bytes) to the spill log
    /// and wakes a getter.
    pub(crate) fn spill_put(&self, parts: &[&[u8]], total: usize) -> Result<()> {
        self.spill().put(parts, total)?;
        self.wake(&self.header().not_empty.0);
        Ok(())
    }

    /// Takes the oldest spilled item if the ring is drained (see
    /// [`SpillLog::take`]), handing its bytes to `f`; wakes a putter.
    pub(crate) fn spill_take<R>(&self, f: impl FnOnce(SharedBytes<'_>) -> R) -> Result<Option<R>> {
        let r = self.spill().take(|| self.ring_drained(), f)?;
        if r.is_some() {
            let h = self.header();
            if self.maxsize > 0 {
                h.items.0.fetch_sub(1, SeqCst);
            }
            self.wake(&h.not_full.0);
        }
        Ok(r)
    }

    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: `base` is the start of the live mapping (page aligned), at
        // least the layout long (checked in `from_region`); Header is all
        // atomics, valid when zeroed.
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

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

    fn seq(&self, ticket: u64) -> &AtomicU64 {
        &self.cell(ticket).seq
    }

    /// Pointer to the payload bytes starting at slot index `start`.
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
    fn tag(&self, t: u64) -> u64 {
        ((t >> self.cap_bits) % TAG_MOD) + 1
    }

    /// The claim word of ticket `t` if it belongs to `t`'s round.
    fn claim_of(&self, t: u64) -> Option<u64> {
        let w = self.cell(t).claim.load(SeqCst);
        (word_tag(w) == self.tag(t)).then_some(w)
    }

    /// The span of a claim word, kept within `1..=cap`.
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

    // ------------------------------------------------------------- wake-ups

    pub(crate) fn doorbell(&self) -> &Doorbell {
        &self.doorbell
    }

    /// Wakes the sleepers of `wq` (futex) and, if an async waiter armed it,
    /// rings the doorbell (`wake.rs`). Called after publishing what `wq`
    /// waits for.
    #[inline]
    pub(crate) fn wake(&self, wq: &WaitQ) {
        wq.wake(&self.doorbell, &self.header().rings);
    }

    /// After the unfinished-task count reached 0: wakes `join` and
    /// `join_async` waiters.
    pub(crate) fn wake_joiners(&self) {
        let h = self.header();
        sync::wake_all(&h.unfinished.0);
        wake::ring_if_armed(&h.join_armed, &self.doorbell, &h.rings);
    }

    /// Arms `what` for an async waiter (W2 in `wake.rs`): the next process
    /// to make it true rings the doorbell. The caller registered the
    /// doorbell before, and re-checks its condition after.
    #[cfg_attr(not(any(feature = "tokio", loom)), allow(dead_code))]
    pub(crate) fn arm(&self, what: Await) {
        let h = self.header();
        match what {
            Await::Item => h.not_empty.0.arm(),
            Await::Room => h.not_full.0.arm(),
            Await::Join => wake::arm(&h.join_armed),
        }
    }

    /// Whether some async waiter armed the doorbell (test support).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn doorbell_armed(&self) -> bool {
        let h = self.header();
        h.not_empty.0.is_armed() || h.not_full.0.is_armed() || h.join_armed.load(SeqCst) != 0
    }

    /// How many times the doorbell has been rung, by any process.
    #[cfg_attr(not(any(feature = "test-hooks", loom)), allow(dead_code))]
    pub(crate) fn doorbell_rings(&self) -> u64 {
        self.header().rings.load(SeqCst)
    }

    // ------------------------------------------------------------------ put

    /// Puts the encoded item made of `parts` (concatenated). A bounded
    /// queue first waits until `deadline` for a place (`maxsize`); then the
    /// item goes into the ring, or into the spill log if the ring cannot
    /// take it (too large, or full with no consumer taking anything for
    /// [`GRACE`]), or if the log already holds items (so that a producer's
    /// items stay in order). `stall` (tests only) makes the producer hang
    /// after writing half the payload, never committing.
    pub(crate) fn put(
        &self,
        parts: &[&[u8]],
        deadline: Option<Instant>,
        stall: Stall,
    ) -> Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > self.spill_max_item() {
            return Err(Error::MessageTooLarge {
                len: total as u64,
                max: self.spill_max_item() as u64,
            });
        }
        let h = self.header();
        // A bounded queue reserves its place first (Python's semaphore).
        if self.maxsize > 0 {
            let max = self.maxsize as i64;
            self.wait_loop(&h.not_full.0, deadline, false, || {
                let n = h.items.0.load(SeqCst);
                if n < max && h.items.0.compare_exchange(n, n + 1, SeqCst, SeqCst).is_ok() {
                    Try::Done(())
                } else {
                    Try::Wait
                }
            })
            .map_err(full_on_timeout)?;
        }
        if self.joinable {
            h.unfinished.0.fetch_add(1, SeqCst);
        }
        let r = match self.claim_for(total, deadline, stall) {
            Some(claim) => {
                self.write_and_commit(parts, total, claim, stall);
                Ok(())
            }
            None => self.spill_put(parts, total),
        };
        if r.is_err() {
            self.unreserve();
        }
        r
    }

    /// Claims ring slots for an item of `total` bytes, or `None` if it goes
    /// to the spill log: it is larger than the ring takes, the log holds
    /// items, or the ring stayed full for [`GRACE`] while no consumer took
    /// anything (or until `deadline`).
    fn claim_for(
        &self,
        total: usize,
        deadline: Option<Instant>,
        stall: Stall,
    ) -> Option<(u64, u64)> {
        if total > self.max_item() || self.spill_pending() {
            return None;
        }
        let k = if total <= INLINE {
            1
        } else {
            total.div_ceil(SLOT) as u64
        };
        if let Try::Done(c) = self.try_claim(k, stall) {
            return Some(c); // the common case: no clock read, no wait
        }
        let h = self.header();
        loop {
            let head = h.head.0.load(Relaxed);
            let grace = Instant::now() + GRACE;
            let until = Some(deadline.map_or(grace, |d| d.min(grace)));
            #[cfg(loom)]
            let until = {
                let _ = until;
                deadline // no clock in the model: wait for room, never spill
            };
            match self.wait_loop(&h.not_full.0, until, false, || self.try_claim(k, stall)) {
                Ok(c) => return Some(c),
                Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => return None,
                // Consumers are taking items: room is coming.
                Err(_) if h.head.0.load(Relaxed) != head && !self.spill_pending() => continue,
                Err(_) => return None,
            }
        }
    }

    /// Writes the payload into the claimed slots and commits it.
    fn write_and_commit(&self, parts: &[&[u8]], total: usize, (p, span): (u64, u64), stall: Stall) {
        let h = self.header();
        self.cell(p).len.store(total as u32, Relaxed);
        let (mut dst, room) = self.payload(p, total, span);
        debug_assert!(room >= total);
        for part in parts {
            // SAFETY: tickets p..p+span are ours alone (our claim word is the
            // only one of this round at p, and tail moved past them by our
            // span); the payload area (the cell's inline bytes, or k slots of
            // the data array inside the claim) holds at least `total` bytes,
            // the sum of the parts, and no consumer reads it before the
            // commit below.
            unsafe {
                if matches!(stall, Stall::Late) {
                    std::ptr::copy_nonoverlapping(part.as_ptr(), dst, part.len() / 2);
                    hang_forever();
                }
                std::ptr::copy_nonoverlapping(part.as_ptr(), dst, part.len());
                dst = dst.add(part.len());
            }
        }
        if matches!(stall, Stall::Pause) {
            while !PAUSE_GATE.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.seq(p).store(p + 1, SeqCst);
        h.puts.0.fetch_add(1, Relaxed);
        self.wake(&h.not_empty.0);
    }

    fn unreserve(&self) {
        let h = self.header();
        if self.maxsize > 0 {
            h.items.0.fetch_sub(1, SeqCst);
        }
        if self.joinable
            && h.unfinished
                .0
                .fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1))
                == Ok(1)
        {
            self.wake_joiners();
        }
        self.wake(&h.not_full.0);
    }

    /// One attempt to claim `k` payload slots: returns (ticket, span).
    ///
    /// The claim is a CAS of the first cell's claim word (tag of this round,
    /// span, pid), made while `tail` is at that ticket; `tail` then moves by
    /// the span — by us, or by any producer that finds the claimed word
    /// first (helping), so a producer that dies in between holds nobody up
    /// and is always identifiable.
    fn try_claim(&self, k: u64, stall: Stall) -> Try<(u64, u64)> {
        let h = self.header();
        loop {
            let p = h.tail.0.load(SeqCst);
            let cell = self.cell(p);
            let w = cell.claim.load(SeqCst);
            if word_tag(w) == self.tag(p) {
                // Claimed in this round, tail not yet moved: help.
                let _ = h
                    .tail
                    .0
                    .compare_exchange(p, p + self.span(w), SeqCst, Relaxed);
                continue;
            }
            let idx = p & self.mask;
            let span = if idx + k > self.cap {
                self.cap - idx + k
            } else {
                k
            };
            let mut retry = false;
            for i in 0..span {
                let t = p + i;
                let d = self.seq(t).load(SeqCst).wrapping_sub(t) as i64;
                if d < 0 {
                    // Not yet released by the consumer of ticket t - cap.
                    return Try::Stuck(t);
                }
                if d > 0 {
                    retry = true;
                    break;
                }
            }
            if retry {
                continue;
            }
            let mine = pack_claim(self.tag(p), span, my_pid());
            if cell
                .claim
                .compare_exchange(w, mine, SeqCst, SeqCst)
                .is_err()
            {
                continue;
            }
            if cell.seq.load(SeqCst) != p {
                // `w` was the word cleared by the release of an earlier claim
                // of this very round (the slot is no longer free for p): our
                // claim is void. (Not `tail != p`: a helper may already have
                // moved tail for *our* claim.)
                let _ = cell.claim.compare_exchange(mine, 0, SeqCst, Relaxed);
                continue;
            }
            if matches!(stall, Stall::Early) {
                hang_forever();
            }
            let _ = h.tail.0.compare_exchange(p, p + span, SeqCst, Relaxed);
            return Try::Done((p, span));
        }
    }

    // ------------------------------------------------------------------ get

    /// Takes one item, waiting until `deadline`, from the ring or, once the
    /// ring is drained ([`ring_drained`](Self::ring_drained)), from the
    /// spill log; `f` copies the payload out
    /// (it is released right after). `hang` (tests only) makes the consumer
    /// hang after taking a ring item, never releasing it.
    ///
    /// A corrupt length (larger than the item's slots) is an
    /// [`Error::Codec`]; the item is consumed.
    #[inline]
    pub(crate) fn get<R>(
        &self,
        deadline: Option<Instant>,
        hang: Stall,
        f: impl FnOnce(SharedBytes<'_>) -> R,
    ) -> Result<R> {
        self.get_while(deadline, hang, || true, f)?
            .ok_or_else(|| Error::InvalidState("queue get abandoned".into()))
    }

    /// [`get`](Self::get), asking `keep` before every attempt to take an
    /// item: once it says `false`, gives up without taking one (`Ok(None)`).
    /// For a waiter on behalf of someone who may go away meanwhile (a
    /// manager's server serving a remote client): an item that comes after
    /// they left stays in the queue.
    pub(crate) fn get_while<R>(
        &self,
        deadline: Option<Instant>,
        hang: Stall,
        mut keep: impl FnMut() -> bool,
        f: impl FnOnce(SharedBytes<'_>) -> R,
    ) -> Result<Option<R>> {
        let h = self.header();
        let mut f = Some(f);
        let mut spilled = None;
        let mut abandoned = false;
        let (p, span) = self
            .wait_loop(&h.not_empty.0, deadline, true, || {
                if !keep() {
                    abandoned = true;
                    return Try::Done((0, 0));
                }
                let r = self.try_take(hang);
                if matches!(r, Try::Done(_)) || !self.spill_pending() {
                    return r;
                }
                // Nothing ready in the ring: the oldest spilled item, but
                // only if the ring is drained (`spill_take`, see
                // `ring_drained`); else `r` (wait for the head's producer,
                // or recover it if it died).
                match self.spill_take(|b| f.take().map(|f| f(b))) {
                    Ok(Some(v)) => {
                        spilled = Some(Ok(v));
                        Try::Done((0, 0))
                    }
                    Ok(None) => r,
                    Err(e) => {
                        spilled = Some(Err(e));
                        Try::Done((0, 0))
                    }
                }
            })
            .map_err(|e| {
                if matches!(e, Error::Timeout) {
                    Error::Empty
                } else {
                    e
                }
            })?;
        if abandoned {
            return Ok(None);
        }
        if let Some(r) = spilled {
            return r?
                .ok_or_else(|| Error::InvalidState("queue reader used twice".into()))
                .map(Some);
        }
        if matches!(hang, Stall::Late) {
            hang_forever();
        }
        let _release = ReleaseGuard {
            ring: self,
            p,
            span,
        };
        let len = self.cell(p).len.load(Relaxed) as usize;
        let (ptr, room) = self.payload(p, len, span);
        if len > room {
            return Err(Error::codec(format!(
                "corrupt queue record: {len} bytes in {room} bytes of slots"
            )));
        }
        // SAFETY: ticket p is committed (seq == p + 1 seen with SeqCst) and
        // ours (taker word) until `_release` drops; `payload` keeps its
        // `room` (>= len) bytes inside the mapping, which `self` keeps alive.
        // A peer that breaks the protocol may still write them: SharedBytes
        // only ever copies them out with atomic loads.
        let bytes = unsafe { SharedBytes::new(ptr, len, room) };
        let f = f
            .take()
            .ok_or_else(|| Error::InvalidState("queue reader used twice".into()))?;
        Ok(Some(f(bytes)))
    }

    /// `true` if every ticket claimed in the ring (and whose claim moved
    /// `tail`) has been taken: `head` has reached `tail`. A consumer takes
    /// from the spill log only then, checked under the log's lock after
    /// reading the log's positions (`spill_take`).
    ///
    /// **Invariant (per-producer FIFO across ring and log):** a consumer
    /// never takes a log record while an item its producer put earlier is
    /// still in the ring. Proof: a producer's earlier ring item was claimed
    /// (and `tail` moved past it, by it or a helper) before its `put`
    /// returned, hence before it appended the record; the consumer saw the
    /// record through the log's lock / `tail` (acquire), so its later load
    /// of the ring's `tail` is past that item, and `head` at or beyond it
    /// means the item was taken (or reclaimed from a dead producer). Without
    /// this check, a head slot claimed but not yet committed by another
    /// producer (descheduled mid-put) made the ring *look* empty while a
    /// later slot held the earlier item, and the log's record overtook it.
    /// (Within one consumer order follows, since it takes one at a time;
    /// between consumers there is no order to keep, as in Python.)
    ///
    /// Costs the ring's fast paths nothing: it is read only when the log
    /// holds items and the ring has none ready. While the head's producer
    /// is alive consumers wait for its commit (which wakes them); if it
    /// died, the usual stuck-claim recovery skips it.
    pub(crate) fn ring_drained(&self) -> bool {
        let h = self.header();
        let tail = h.tail.0.load(SeqCst);
        let head = h.head.0.load(SeqCst);
        head.wrapping_sub(tail) as i64 >= 0
    }

    /// Test support: overwrites the length of the item at ticket `p`, as a
    /// misbehaving peer could.
    #[cfg(test)]
    pub(crate) fn corrupt_len_for_test(&self, p: u64, len: u32) {
        self.cell(p).len.store(len, Relaxed);
    }

    /// One attempt to take the item at the head: returns (ticket, span).
    /// Mirrors [`try_claim`](Self::try_claim): a CAS of the taker word while
    /// `head` is at the ticket, then `head` moves (by us or by a helper).
    fn try_take(&self, hang: Stall) -> Try<(u64, u64)> {
        let h = self.header();
        loop {
            let p = h.head.0.load(SeqCst);
            let cell = self.cell(p);
            let s = cell.seq.load(SeqCst);
            let d = s.wrapping_sub(p + 1) as i64;
            if d < 0 {
                // Claimed but not yet committed, or nothing there. `tail`
                // (the producers' line) is read only if the cell's claim
                // word says claimed: reading it on every empty poll would
                // take it from the producer on every put. (A claim whose
                // `tail` has not moved yet is a wait: reclaiming it would
                // move `head` past `tail`.)
                return if self.claim_of(p).is_some() && h.tail.0.load(SeqCst) > p {
                    Try::Stuck(p)
                } else {
                    Try::Wait
                };
            }
            if d > 0 {
                continue; // taken and released meanwhile; look again
            }
            let Some(w) = self.claim_of(p) else { continue };
            let span = self.span(w);
            let tw = cell.taker.load(SeqCst);
            if word_tag(tw) == self.tag(p) {
                // Taken in this round, head not yet moved: help.
                let _ = h.head.0.compare_exchange(p, p + span, SeqCst, Relaxed);
                continue;
            }
            let mine = pack_claim(self.tag(p), 0, my_pid());
            if cell
                .taker
                .compare_exchange(tw, mine, SeqCst, SeqCst)
                .is_err()
            {
                continue;
            }
            if cell.seq.load(SeqCst) != p + 1 {
                // Released meanwhile by the taker whose cleared word we
                // replaced: void (see `try_claim`).
                let _ = cell.taker.compare_exchange(mine, 0, SeqCst, Relaxed);
                continue;
            }
            if matches!(hang, Stall::Early) {
                hang_forever();
            }
            let _ = h.head.0.compare_exchange(p, p + span, SeqCst, Relaxed);
            h.gets.0.fetch_add(1, Relaxed);
            if self.maxsize > 0 {
                h.items.0.fetch_sub(1, SeqCst);
            }
            return Try::Done((p, span));
        }
    }

    /// Frees tickets p..p+span for the next round and wakes producers.
    fn release(&self, p: u64, span: u64) {
        let cell = self.cell(p);
        // The claim word may go first: a producer's claim is valid only
        // while the slot reads free (`seq == p`), which it never does again
        // in this round.
        cell.claim.store(0, Release);
        for i in 1..span {
            self.seq(p + i).store(p + i + self.cap, Release);
        }
        self.seq(p).store(p + self.cap, SeqCst);
        // The taker word only after the slot is released: while `seq` still
        // reads committed, a cleared taker word would let a late consumer
        // take the item again. Cleared at all so that its tag cannot match a
        // far later round; a CAS, because the next round may already own it.
        let tw = cell.taker.load(SeqCst);
        if word_tag(tw) == self.tag(p) {
            let _ = cell.taker.compare_exchange(tw, 0, SeqCst, Relaxed);
        }
        self.wake(&self.header().not_full.0);
    }

    // -------------------------------------------------------------- waiting

    /// Retries `attempt` until it is done, sleeping on `wq` in between and,
    /// when stuck behind another process's claim, checking that process is
    /// alive. `Err(Timeout)` when the deadline passes (a deadline already
    /// past means exactly one attempt).
    #[cfg(not(loom))]
    fn wait_loop<R>(
        &self,
        wq: &WaitQ,
        deadline: Option<Instant>,
        consumer: bool,
        mut attempt: impl FnMut() -> Try<R>,
    ) -> Result<R> {
        let mut spins = 0u32;
        let mut yields = 0u32;
        let mut spin_start: Option<Instant> = None;
        let mut stuck_since: Option<(u64, Instant)> = None;
        loop {
            let stuck = match attempt() {
                Try::Done(r) => return Ok(r),
                Try::Wait => None,
                Try::Stuck(t) => Some(t),
            };
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(Error::Timeout);
            }
            if let Some(t) = stuck {
                match stuck_since {
                    Some((t0, since)) if t0 == t => {
                        if now.duration_since(since) >= STUCK_CHECK {
                            if self.recover(t, consumer) {
                                stuck_since = None;
                                continue;
                            }
                            stuck_since = Some((t, now));
                        }
                    }
                    _ => stuck_since = Some((t, now)),
                }
            }
            let first = *spin_start.get_or_insert(now);
            if now.duration_since(first) < SPIN_FOR {
                // Back off before looking again: polling the slot the other
                // side is about to write steals its cache line and keeps
                // both sides in lock-step, one line transfer per item.
                for _ in 0..MIN_BACKOFF << spins.min(MAX_BACKOFF) {
                    std::hint::spin_loop();
                }
                spins += 1;
                continue;
            }
            if yields < YIELDS {
                yields += 1;
                std::thread::yield_now();
                continue;
            }
            let e = wq.announce();
            if let Try::Done(r) = attempt() {
                return Ok(r);
            }
            let until = match stuck {
                Some(_) => {
                    let check = now + STUCK_CHECK;
                    Some(deadline.map_or(check, |d| d.min(check)))
                }
                None => deadline,
            };
            wq.sleep(e, until)?;
        }
    }

    /// Under loom: retries `attempt`, yielding in between, with no clock
    /// (the model must be deterministic: any deadline means one attempt)
    /// and no recovery (nobody dies).
    #[cfg(loom)]
    fn wait_loop<R>(
        &self,
        _wq: &WaitQ,
        deadline: Option<Instant>,
        _consumer: bool,
        mut attempt: impl FnMut() -> Try<R>,
    ) -> Result<R> {
        loop {
            if let Try::Done(r) = attempt() {
                return Ok(r);
            }
            if deadline.is_some() {
                return Err(Error::Timeout);
            }
            loom::thread::yield_now();
        }
    }

    /// Ticket `t` has been blocked for a while (`consumer`: at the head,
    /// uncommitted; else: a producer waiting for slot `t` to be released).
    /// If the process holding it is dead, reclaim it. Returns `true` if
    /// something was reclaimed.
    fn recover(&self, t: u64, consumer: bool) -> bool {
        if consumer {
            return match self.claim_of(t) {
                Some(w) => self.reclaim(t, w),
                None => false,
            };
        }
        // The claim of the previous round covering ticket t - cap.
        let old = t.wrapping_sub(self.cap);
        for back in 0..=self.cap / 2 {
            let c = old.wrapping_sub(back);
            if let Some(w) = self.claim_of(c) {
                return c + self.span(w) > old && self.reclaim(c, w);
            }
        }
        false
    }

    /// The ticket at the head if consumers are held up there by a claim
    /// not yet committed (`try_take`'s `Stuck`): for async waiters, which
    /// then look at it again every [`STUCK_CHECK`] (`recover_head`).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn stuck_head(&self) -> Option<u64> {
        let h = self.header();
        let p = h.head.0.load(SeqCst);
        let uncommitted = self.cell(p).seq.load(SeqCst) != p + 1;
        (uncommitted && self.claim_of(p).is_some() && h.tail.0.load(SeqCst) > p).then_some(p)
    }

    /// Reclaims ticket `t` at the head if its producer died (see
    /// [`recover`](Self::recover)); `true` if it did.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn recover_head(&self, t: u64) -> bool {
        self.recover(t, true)
    }

    /// Reclaims the claim of ticket `c` (claim word `w`) if it is stuck for
    /// good: committed and taken by a consumer that died before releasing
    /// it (the item is lost with its taker, as in Python), or never
    /// committed by a producer that died (the item never existed). The
    /// taker word makes the reclaimer the only one; `head` is moved past the
    /// claim if needed; the slots are released.
    fn reclaim(&self, c: u64, w: u64) -> bool {
        let h = self.header();
        let cell = self.cell(c);
        let seq = cell.seq.load(SeqCst);
        let committed = seq == c + 1;
        if !committed && seq != c {
            return false;
        }
        let tw = cell.taker.load(SeqCst);
        let taken = word_tag(tw) == self.tag(c);
        if taken && owner_alive(word_pid(tw)) {
            return false;
        }
        if committed && !taken {
            return false; // a consumer will take it
        }
        if !committed {
            if owner_alive(word_pid(w)) {
                return false; // its producer is still writing it
            }
            if (h.head.0.load(SeqCst).wrapping_sub(c) as i64) < 0 {
                return false; // consumers reach it in order
            }
        }
        let mine = pack_claim(self.tag(c), 0, my_pid());
        if cell
            .taker
            .compare_exchange(tw, mine, SeqCst, SeqCst)
            .is_err()
        {
            return false;
        }
        if cell.seq.load(SeqCst) != seq {
            let _ = cell.taker.compare_exchange(mine, 0, SeqCst, Relaxed);
            return false;
        }
        let span = self.span(w);
        let _ = h.head.0.compare_exchange(c, c + span, SeqCst, Relaxed);
        if !committed && !taken {
            // Undo what its producer counted before claiming. (If `taken`,
            // the reclaimer that died had done so already... or not: that
            // double fault may leave one count behind.)
            if self.maxsize > 0 {
                h.items.0.fetch_sub(1, SeqCst);
            }
            if self.joinable
                && h.unfinished
                    .0
                    .fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1))
                    == Ok(1)
            {
                self.wake_joiners();
            }
        }
        self.release(c, span);
        self.wake(&h.not_empty.0);
        true
    }

    // ---------------------------------------------------------- joinable

    /// `task_done`: one fewer unfinished task.
    pub(crate) fn task_done(&self) -> Result<()> {
        let u = &self.header().unfinished.0;
        let prev = u
            .fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1))
            .map_err(|_| Error::TaskDoneTooOften)?;
        if prev == 1 {
            self.wake_joiners();
        }
        Ok(())
    }

    /// `join`: waits until every item put has been marked done.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> Result<()> {
        let u = &self.header().unfinished.0;
        loop {
            let v = u.load(SeqCst);
            if v == 0 {
                return Ok(());
            }
            if sync::wait(u, v, deadline)? == Wake::TimedOut {
                return Err(Error::Timeout);
            }
        }
    }

    /// Unfinished tasks (joinable queues).
    pub(crate) fn unfinished(&self) -> u32 {
        self.header().unfinished.0.load(SeqCst)
    }
}

fn full_on_timeout(e: Error) -> Error {
    if matches!(e, Error::Timeout) {
        Error::Full
    } else {
        e
    }
}

/// Releases a taken item's slots when dropped (also if the reader panics).
struct ReleaseGuard<'a> {
    ring: &'a Ring,
    p: u64,
    span: u64,
}

impl Drop for ReleaseGuard<'_> {
    fn drop(&mut self) {
        self.ring.release(self.p, self.span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let r = ring(8, spill::MIN_SPILL);
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
    fn a_corrupt_spill_record_is_an_error_from_get_and_the_queue_goes_on() {
        let big = vec![5u8; 1000]; // larger than half a 4-slot ring
        for garbage in [[0xffu8; 16], [0u8; 16]] {
            let r = ring(4, spill::MIN_SPILL);
            r.put(&[&big], None, Stall::No).unwrap();
            r.put(&[&big], None, Stall::No).unwrap();
            assert!(r.spill_pending());
            // The log is fresh: its first record starts the area.
            let win = r.spill().window().unwrap();
            // SAFETY: the record header lies inside the window; nobody else
            // uses the ring.
            unsafe { std::ptr::copy_nonoverlapping(garbage.as_ptr(), win.as_ptr(), 16) };
            assert!(matches!(get_vec(&r), Err(Error::Codec(_))));
            assert!(!r.spill_pending(), "a corrupt log is dropped whole");
            r.put(&[&big], None, Stall::No).unwrap();
            assert_eq!(get_vec(&r).unwrap(), big);
        }
    }
}
