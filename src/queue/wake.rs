//! How waiters sleep and are woken: [`WaitQ`], the futex sleepers' words,
//! and the doorbell.
//!
//! # The doorbell
//!
//! How a queue wakes *async* waiters (`get_async`,
//! `put_async`, `join_async`, in [`aio`](crate::aio)) without a thread per
//! waiter and without costing the synchronous path anything.
//!
//! A queue owns one `eventfd`, created with it and handed to children with
//! it (so producers and consumers in every process can ring it, whatever the
//! start method). An async waiter registers a duplicate of it with tokio's
//! reactor, then *arms* the condition it waits for — the `ASYNC` bit of the
//! very word where futex sleepers raise theirs (`WaitQ::waiting`, for "an
//! item arrived" and "room appeared"), or `join_armed` for "no unfinished
//! task" — re-checks the queue, and awaits readability. A process that
//! makes the condition true (a `put` commits, a `get` releases, a
//! `task_done` reaches zero) already loaded that word to see whether to
//! wake sleepers; only if it is not 0 does it swap it to 0 and, for the
//! `ASYNC` bit, write the eventfd. So while nobody waits, the fast path is
//! what it was before async waiters existed: one load, no syscall.
//!
//! # Why no wake-up is lost
//!
//! Waiter (W), for a condition published by a waker (P):
//!
//! ```text
//! W1 register the eventfd with the reactor       P1 publish (SeqCst store:
//! W2 set the flag (SeqCst RMW or store)              seq, items, unfinished,
//! W3 re-check the condition (SeqCst loads)           or the spill tail)
//! W4 await readability                           P2 load the flag (SeqCst); if
//!                                                   set, swap it to 0 and, if the
//!                                                   swap returned it set, write
//!                                                   the eventfd
//! ```
//!
//! All of W2, W3, P1 and P2 are `SeqCst`, so they have one total order in
//! which W2 precedes W3 and P1 precedes P2. Either P2 comes before W2: then
//! P1 does too, and W3 (after W2) sees P1's store — W finds the item (or
//! the room, or zero tasks) and does not wait. Or W2 comes before P2: then
//! P2 reads it set unless a swap by another waker cleared it after W2; either
//! way some process writes the eventfd *after* W2, hence after W1, and
//! W's registration sees that write as a readiness event, which W4
//! returns (tokio keeps readiness that arrives before the await). The
//! loom model `async_waiter_is_woken` in `loom_tests.rs` checks this (with
//! `SeqCst` fences standing in for the `SeqCst` accesses, which loom
//! models more weakly than C++ does: see `sync::dekker_for_loom`).
//!
//! Nobody ever reads the eventfd: tokio registers it edge-triggered, and
//! every write is an edge for every registration, so a waiter needs no
//! drained counter to be woken again (and several waiters in several
//! processes are all woken by one write, like `FUTEX_WAKE` of all). The
//! counter grows by one per ring (2^64 rings would take centuries). A
//! stale armed flag (its waiter dropped) costs one needless write.
#![allow(unsafe_code)]

use super::sync::{self, AtomicU32, AtomicU64, Wake};
use crate::error::Result;
use crate::handoff::{Exporter, Importer};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Instant;

/// Where one side sleeps (limits.c's scheme): a waiter reads `epoch`, raises
/// `waiting`, re-checks its condition, then sleeps in `FUTEX_WAIT(epoch)`. A
/// waker, after publishing, looks at `waiting` and makes a syscall only if it
/// is set. Both sides use `SeqCst`, so one of them sees the other's store.
/// A waiter that dies leaves at most a stale flag: one needless wake.
#[repr(C)]
#[derive(Default)]
pub(crate) struct WaitQ {
    epoch: AtomicU32,
    /// [`SLEEPER`] and/or [`ASYNC`]: one word, so that a waker with nobody
    /// to wake tests both with one load, as before async waiters existed.
    waiting: AtomicU32,
}

/// A futex sleeper may sleep on `epoch`.
const SLEEPER: u32 = 1;
/// An async waiter armed the doorbell.
const ASYNC: u32 = 2;

impl WaitQ {
    /// Raises the sleepers' flag; returns the epoch to sleep on.
    pub(crate) fn announce(&self) -> u32 {
        let e = self.epoch.load(SeqCst);
        self.waiting.fetch_or(SLEEPER, SeqCst);
        e
    }

    /// Raises the async waiters' flag (W2 in the module docs).
    #[cfg_attr(not(any(feature = "tokio", loom)), allow(dead_code))]
    pub(crate) fn arm(&self) {
        self.waiting.fetch_or(ASYNC, SeqCst);
        sync::dekker_for_loom();
    }

    /// Whether an async waiter armed this queue and was not rung since.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn is_armed(&self) -> bool {
        self.waiting.load(SeqCst) & ASYNC != 0
    }

    /// Sleeps on the epoch read by [`announce`](Self::announce).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn sleep(&self, epoch: u32, until: Option<Instant>) -> Result<Wake> {
        sync::wait(&self.epoch, epoch, until)
    }

    /// Wakes the futex sleepers, and the async waiters by ringing `bell`
    /// (counted in `rings`), if any announced themselves (P2 in the module
    /// docs). With nobody waiting: one load.
    #[inline]
    pub(crate) fn wake(&self, bell: &Doorbell, rings: &AtomicU64) {
        sync::dekker_for_loom();
        if self.waiting.load(SeqCst) != 0 {
            self.wake_slow(bell, rings);
        }
    }

    #[cold]
    fn wake_slow(&self, bell: &Doorbell, rings: &AtomicU64) {
        let w = self.waiting.swap(0, SeqCst);
        if w & SLEEPER != 0 {
            self.epoch.fetch_add(1, SeqCst);
            sync::wake_all(&self.epoch);
        }
        if w & ASYNC != 0 {
            ring_cold(bell, rings);
        }
    }
}

/// The queue's eventfd, shared by the handles of one process.
#[derive(Debug, Clone)]
pub(crate) struct Doorbell(Arc<OwnedFd>);

impl Doorbell {
    pub(crate) fn new() -> Result<Doorbell> {
        use rustix::event::{eventfd, EventfdFlags};
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Doorbell(Arc::new(fd)))
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    fn ring(&self) {
        // A full counter (EAGAIN) cannot happen in practice, and would mean
        // the fd is readable anyway; nothing else can fail on an eventfd.
        let _ = rustix::io::write(&*self.0, &1u64.to_ne_bytes());
    }

    pub(crate) fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        ex.write_fd(self.fd())
    }

    pub(crate) fn import(im: &mut Importer) -> Result<Doorbell> {
        Ok(Doorbell(Arc::new(im.read_fd()?)))
    }
}

/// What an async waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) enum Await {
    /// An item to take (`get_async`).
    Item,
    /// Room to put (`put_async` on a bounded queue).
    Room,
    /// No unfinished task (`join_async`).
    Join,
}

/// P2 in the module docs: if an async waiter armed `flag`, take the flag
/// and ring the doorbell.
#[inline]
pub(crate) fn ring_if_armed(flag: &AtomicU32, bell: &Doorbell, rings: &AtomicU64) {
    sync::dekker_for_loom();
    if flag.load(SeqCst) != 0 && flag.swap(0, SeqCst) != 0 {
        ring_cold(bell, rings);
    }
}

#[cold]
fn ring_cold(bell: &Doorbell, rings: &AtomicU64) {
    rings.fetch_add(1, SeqCst);
    bell.ring();
}

/// W2 in the module docs for `join_async`'s flag.
#[cfg_attr(not(any(feature = "tokio", loom)), allow(dead_code))]
pub(crate) fn arm(flag: &AtomicU32) {
    flag.store(1, SeqCst);
    sync::dekker_for_loom();
}
