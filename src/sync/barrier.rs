//! [`Barrier`]: a process-shared barrier with CPython's semantics, broken
//! (instead of hung) when a party dies.
//!
//! # How it works
//!
//! The state (CPython's `_state`, `_count`) lives in shared memory under an
//! internal robust lock, with one futex word (`seq`) bumped and broadcast on
//! every change. Each party inside `wait` records its pid in the slot of its
//! arrival index. Waiters sleep at most [`CHECK_INTERVAL`](super::raw::CHECK_INTERVAL)
//! at a time; each time they wake they check the recorded pids, and so does
//! the last party to arrive before it releases the others. A dead party is
//! removed from the count, and, if the barrier was filling, the barrier
//! breaks: the others get [`Error::BrokenBarrier`] instead of waiting forever.
//! A party that dies while *not* inside `wait` cannot be told from one that is
//! merely slow: the others wait (use a timeout).
#![allow(unsafe_code)]

use super::raw::{self, RawLock, CHECK_INTERVAL, RAW_LOCK_BYTES};
use crate::error::{Error, Result};
use crate::handoff::{Exporter, Handoff, Importer};
use crate::process::fnref::{self, FnDesc};
use crate::process::TaskFn;
use crate::sys::futex;
use crate::sys::Region;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const FILLING: u32 = 0;
const DRAINING: u32 = 1;
const RESETTING: u32 = 2;
const BROKEN: u32 = 3;

#[repr(C, align(8))]
#[derive(Debug)]
struct Header {
    lock: RawLock,
    /// Bumped on every state change; everybody waiting sleeps on it.
    seq: AtomicU32,
    state: AtomicU32,
    count: AtomicU32,
    parties: AtomicU32,
}

const HEADER_BYTES: usize = std::mem::size_of::<Header>();
const _: () = assert!(HEADER_BYTES >= RAW_LOCK_BYTES + 16);

/// A barrier action as it is named across processes.
type Action = fn();

// SAFETY: a function pointer type with a kind of its own.
unsafe impl fnref::FnKind for Action {
    const KIND: u64 = fnref::kind::BARRIER_ACTION;
}

/// The named descriptor of `run_action::<F>`.
struct ActionOf<F>(PhantomData<F>);

impl<F: TaskFn<(), ()>> ActionOf<F> {
    /// Named only by [`Barrier::with_action`], which was handed a value of `F`.
    const DESC: &'static FnDesc<Action> = &FnDesc::new(run_action::<F>);
}

fn run_action<F: TaskFn<(), ()>>() {
    // SAFETY: reached only through `ActionOf::<F>::DESC`, named by
    // `Barrier::with_action`, which was handed a value of `F` (in this
    // process, or in the parent the barrier was handed down from).
    let f: F = unsafe { fnref::conjure::<F, (), ()>() };
    f.call(())
}

/// A process-shared barrier (Python's `multiprocessing.Barrier`): `parties`
/// threads or processes call [`wait`](Self::wait); when the last one arrives,
/// the optional action runs (in that party), then all are released, each with
/// its arrival index (`0..parties`). The barrier is reusable.
///
/// It breaks — every waiter and every later caller gets
/// [`Error::BrokenBarrier`] until [`reset`](Self::reset) — on
/// [`abort`](Self::abort), on a timeout, on a panic of the action, and when a
/// party dies inside `wait` (see the [module docs](crate::sync)).
///
/// ```
/// use multiproc::sync::Barrier;
///
/// let b = Barrier::new(1)?;
/// assert_eq!(b.wait()?, 0);           // a single party passes at once
/// assert_eq!(b.parties(), 1);
/// b.abort();
/// assert!(b.broken());
/// assert!(matches!(b.wait(), Err(multiproc::Error::BrokenBarrier)));
/// b.reset();
/// assert_eq!(b.wait()?, 0);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    raw: *const Header,
    region: Region,
    parties: u32,
    action: Option<&'static FnDesc<Action>>,
    timeout: Option<Duration>,
}

// SAFETY: `raw` points into `region`'s mapping, which lives as long as
// `region` (same struct); all access to it is atomic.
unsafe impl Send for Barrier {}
// SAFETY: as above.
unsafe impl Sync for Barrier {}

impl Barrier {
    /// A barrier for `parties` parties (at least 1).
    pub fn new(parties: usize) -> Result<Barrier> {
        if parties == 0 || parties > u32::MAX as usize / 8 {
            return Err(Error::Invalid("a barrier needs at least one party".into()));
        }
        let region = Region::new(HEADER_BYTES + 4 * parties, "multiproc-barrier")?;
        let b = Barrier::from_region(region, None, None)?;
        b.header().parties.store(parties as u32, Ordering::Relaxed);
        Ok(Barrier {
            parties: parties as u32,
            ..b
        })
    }

    /// A barrier whose `action` runs in the last party to arrive, before the
    /// parties are released (Python's `Barrier(parties, action)`). It must be
    /// a `fn` item or a closure that captures nothing (checked at compile
    /// time, as for a process target), so that a spawned child can find it
    /// in its own copy of the program.
    ///
    /// ```
    /// fn ready() {
    ///     println!("all parties arrived");
    /// }
    /// let b = multiproc::Barrier::with_action(1, ready)?;
    /// b.wait()?; // prints
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// A closure that captures state is refused:
    ///
    /// ```compile_fail,E0080
    /// let n = 3;
    /// let b = multiproc::Barrier::with_action(1, move || println!("{n}"));
    /// ```
    pub fn with_action<F: TaskFn<(), ()>>(parties: usize, action: F) -> Result<Barrier> {
        fnref::check_target(action);
        Ok(Barrier {
            action: Some(ActionOf::<F>::DESC),
            ..Barrier::new(parties)?
        })
    }

    /// Sets the default timeout of [`wait`](Self::wait) (Python's
    /// `Barrier(parties, timeout=t)`); it travels to children with the barrier.
    pub fn with_timeout(self, timeout: Duration) -> Barrier {
        Barrier {
            timeout: Some(timeout),
            ..self
        }
    }

    fn from_region(
        region: Region,
        action: Option<&'static FnDesc<Action>>,
        timeout: Option<Duration>,
    ) -> Result<Barrier> {
        if region.len() < HEADER_BYTES {
            return Err(Error::Invalid("barrier region too small".into()));
        }
        // SAFETY: offset 0 of a page-aligned mapping at least HEADER_BYTES
        // long; Header is atomics only, valid for every bit pattern.
        let raw: *const Header = unsafe { region.get::<Header>(0) };
        // SAFETY: as above; `parties` is read from shared memory and bounded
        // by the region's length below.
        let parties = unsafe { &*raw }.parties.load(Ordering::Relaxed);
        if HEADER_BYTES + 4 * parties as usize > region.len() {
            return Err(Error::Invalid(
                "barrier region too small for its parties".into(),
            ));
        }
        Ok(Barrier {
            raw,
            region,
            parties,
            action,
            timeout,
        })
    }

    #[inline]
    fn header(&self) -> &Header {
        // SAFETY: valid while `self.region` lives.
        unsafe { &*self.raw }
    }

    fn slot(&self, i: u32) -> &AtomicU32 {
        assert!(i < self.parties, "barrier slot out of range");
        // SAFETY: `i < parties` and the region holds `parties` u32 slots after
        // the 8-aligned header (checked in `from_region`); atomics only.
        unsafe { self.region.get::<AtomicU32>(HEADER_BYTES + 4 * i as usize) }
    }

    /// How many parties must call `wait`.
    pub fn parties(&self) -> usize {
        self.parties as usize
    }

    /// How many parties are waiting now (0 unless the barrier is filling).
    pub fn n_waiting(&self) -> usize {
        let h = self.header();
        if h.state.load(Ordering::Relaxed) == FILLING {
            h.count.load(Ordering::Relaxed) as usize
        } else {
            0
        }
    }

    /// `true` while the barrier is broken.
    pub fn broken(&self) -> bool {
        self.header().state.load(Ordering::Relaxed) == BROKEN
    }

    /// Waits for the other parties (with the default timeout, if set);
    /// returns this party's arrival index.
    pub fn wait(&self) -> Result<usize> {
        self.wait_until(raw::deadline(self.timeout))
    }

    /// Waits at most `timeout` for the other parties; on timeout the barrier
    /// breaks: this party gets [`Error::Timeout`] (the crate's one timeout
    /// shape), every other party [`Error::BrokenBarrier`] (Python raises
    /// `BrokenBarrierError` in both).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_until(raw::deadline(Some(timeout)))
    }

    /// Waits until `deadline` (`None` = forever).
    pub fn wait_until(&self, deadline: Option<Instant>) -> Result<usize> {
        let h = self.header();
        self.lock();
        // CPython's `_enter`: wait out a pass that is draining or resetting.
        while matches!(h.state.load(Ordering::Relaxed), DRAINING | RESETTING) {
            self.sleep(None);
        }
        if h.state.load(Ordering::Relaxed) == BROKEN {
            self.unlock();
            return Err(Error::BrokenBarrier);
        }
        let index = h.count.load(Ordering::Relaxed);
        h.count.store(index + 1, Ordering::Relaxed);
        self.slot(index)
            .store(raw::current_pid(), Ordering::Relaxed);
        let result = if index + 1 == self.parties {
            self.release_all()
        } else {
            let mut timed_out = false;
            loop {
                if h.state.load(Ordering::Relaxed) != FILLING {
                    break;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    self.break_now();
                    timed_out = true;
                    break;
                }
                self.sleep(deadline);
            }
            match h.state.load(Ordering::Relaxed) {
                // The party whose own timeout broke the barrier is told so.
                BROKEN if timed_out => Ok(Err(Error::Timeout)),
                BROKEN | RESETTING => Ok(Err(Error::BrokenBarrier)),
                _ => Ok(Ok(())),
            }
        };
        // CPython's `_exit`.
        if self.slot(index).load(Ordering::Relaxed) != 0 {
            self.slot(index).store(0, Ordering::Relaxed);
            h.count.fetch_sub(1, Ordering::Relaxed);
        }
        self.after_exit();
        self.unlock();
        match result {
            Ok(Ok(())) => Ok(index as usize),
            Ok(Err(e)) => Err(e),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// The last party arrived: check the others live, run the action, release.
    #[allow(clippy::type_complexity)]
    fn release_all(&self) -> std::result::Result<Result<()>, Box<dyn std::any::Any + Send>> {
        if self.reap_dead() || self.header().state.load(Ordering::Relaxed) != FILLING {
            return Ok(Err(Error::BrokenBarrier));
        }
        if let Some(action) = self.action {
            if let Err(panic) = std::panic::catch_unwind(action.get()) {
                self.break_now();
                return Err(panic);
            }
        }
        self.set_state(DRAINING);
        Ok(Ok(()))
    }

    /// When the last party leaves a pass (or a reset), the barrier fills again.
    fn after_exit(&self) {
        let h = self.header();
        if h.count.load(Ordering::Relaxed) == 0
            && matches!(h.state.load(Ordering::Relaxed), DRAINING | RESETTING)
        {
            self.set_state(FILLING);
        }
    }

    /// Removes dead parties from the count; breaks a filling barrier if any
    /// died. Lock held. `true` if a dead party was found.
    fn reap_dead(&self) -> bool {
        let h = self.header();
        let mut found = false;
        for i in 0..self.parties {
            let pid = self.slot(i).load(Ordering::Relaxed);
            if raw::is_dead(pid) {
                self.slot(i).store(0, Ordering::Relaxed);
                h.count.fetch_sub(1, Ordering::Relaxed);
                found = true;
            }
        }
        if found {
            if h.state.load(Ordering::Relaxed) == FILLING {
                self.set_state(BROKEN);
            }
            self.after_exit();
        }
        found
    }

    fn set_state(&self, state: u32) {
        let h = self.header();
        h.state.store(state, Ordering::Relaxed);
        h.seq.fetch_add(1, Ordering::Release);
        futex::wake_all(&h.seq);
    }

    fn break_now(&self) {
        self.set_state(BROKEN);
    }

    /// Takes the internal lock; a holder that died there breaks the barrier.
    fn lock(&self) {
        if self.header().lock.lock(None) == Ok(raw::Acquired::OwnerDied) {
            self.header().lock.clear_died();
            self.reap_dead();
            self.break_now();
        }
    }

    fn unlock(&self) {
        self.header().lock.unlock();
    }

    /// Releases the internal lock, sleeps until the state changes (or a
    /// liveness check is due, or `deadline`), takes the lock again.
    fn sleep(&self, deadline: Option<Instant>) {
        let h = self.header();
        let seq = h.seq.load(Ordering::Acquire);
        self.unlock();
        let check = Instant::now() + CHECK_INTERVAL;
        let until = match deadline {
            Some(d) if d < check => d,
            _ => check,
        };
        let woken = matches!(
            futex::wait(&h.seq, seq, Some(until)),
            Ok(futex::Wake::Retry)
        );
        self.lock();
        if !woken && h.seq.load(Ordering::Relaxed) == seq {
            self.reap_dead();
        }
    }

    /// Puts the barrier back to its initial state; parties waiting now get
    /// [`Error::BrokenBarrier`] (Python's `reset()`).
    pub fn reset(&self) {
        let h = self.header();
        self.lock();
        if h.count.load(Ordering::Relaxed) > 0 {
            if matches!(h.state.load(Ordering::Relaxed), FILLING | BROKEN) {
                self.set_state(RESETTING);
            }
        } else {
            self.set_state(FILLING);
        }
        self.unlock();
    }

    /// Breaks the barrier: waiting and later parties get
    /// [`Error::BrokenBarrier`] until [`reset`](Self::reset).
    pub fn abort(&self) {
        self.lock();
        self.break_now();
        self.unlock();
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.header().state.load(Ordering::Relaxed) {
            FILLING => "filling",
            DRAINING => "draining",
            RESETTING => "resetting",
            _ => "broken",
        };
        write!(
            f,
            "<Barrier({state}, waiters={}/{})>",
            self.n_waiting(),
            self.parties
        )
    }
}

impl Handoff for Barrier {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> Result<()> {
        self.region.export(ex)?;
        ex.write(&self.action.map(fnref::name))?;
        ex.write(&self.timeout)
    }

    fn import(im: &mut Importer) -> Result<Self> {
        let region = Region::import(im)?;
        let action: Option<i64> = im.read()?;
        let timeout: Option<Duration> = im.read()?;
        // The name is untrusted: only a genuine action descriptor resolves.
        let action = action.map(fnref::resolve_desc::<Action>).transpose()?;
        Barrier::from_region(region, action, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    static RUNS: AtomicUsize = AtomicUsize::new(0);
    fn count_run() {
        RUNS.fetch_add(1, Ordering::SeqCst);
    }

    /// A barrier token as `Barrier::export` writes it, with `action` as the
    /// action's name.
    fn token_with(b: &Barrier, action: Option<i64>) -> Result<Barrier> {
        let mut ex = Exporter::new();
        b.region.export(&mut ex)?;
        ex.write(&action)?;
        ex.write(&b.timeout)?;
        let fds = ex
            .fds()
            .iter()
            .map(|f| rustix::io::fcntl_dupfd_cloexec(f, 3).map_err(Error::from))
            .collect::<Result<Vec<_>>>()?;
        Barrier::import(&mut Importer::new(ex.bytes().to_vec(), fds))
    }

    /// A token naming the action's code, a spot inside a function, data or
    /// nothing gives an error at import: never a barrier that jumps there.
    #[test]
    #[cfg_attr(miri, ignore = "shared memory and ELF program headers")]
    fn crafted_action_names_are_refused() {
        let b = Barrier::with_action(1, count_run).unwrap();
        let genuine = fnref::name(b.action.unwrap());
        let copy = token_with(&b, Some(genuine)).unwrap();
        copy.wait().unwrap();
        assert_eq!(RUNS.load(Ordering::SeqCst), 1);
        let code = b.action.unwrap().get() as usize;
        for name in [
            fnref::offset_of(count_run as fn() as usize),
            fnref::offset_of(code + 8),
            genuine + 8,
            genuine - 24,
            genuine.wrapping_add(1 << 40),
            i64::MIN,
        ] {
            match token_with(&b, Some(name)) {
                Err(Error::Bootstrap(_)) => {}
                other => panic!("name {name:#x}: expected an error, got {other:?}"),
            }
        }
        assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    }
}
