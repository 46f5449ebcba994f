//! Process-shared synchronization: [`Lock`], [`RLock`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Condition`], [`Event`], [`Barrier`] — Python's
//! `multiprocessing.synchronize`, robust to a holder that dies.
//!
//! Every primitive keeps its state in a small shared-memory region (a
//! `memfd`, so nothing can leak into `/dev/shm`), reaches a child as a
//! [`Process`](crate::Process) argument ([`Handoff`](crate::handoff::Handoff)),
//! and works between threads of one process too (all are `Send + Sync`;
//! clones share the primitive). Timeouts are [`Duration`](std::time::Duration)s:
//! `try_acquire`, `acquire_timeout`, `wait_timeout` follow the std's naming.
//!
//! # Timeouts: one shape
//!
//! Every timed or non-blocking operation of this module reports "the time
//! ran out" (or "not available now", for `try_`) as an **`Err`** that is
//! [`Error::Timeout`](crate::Error::Timeout) or converts into it with `?`,
//! and answers `is_timeout()`:
//!
//! | operation | timeout |
//! |-----------|---------|
//! | [`Lock`], [`RLock`]: `try_acquire`, `acquire_timeout`, `acquire_deadline` | `Err(TryAcquireError::Timeout)` — a typed error, because its other variant carries the guard of a lock whose owner died; `?` turns it into `Error::Timeout` |
//! | [`Semaphore`], [`BoundedSemaphore`]: `try_acquire`, `acquire_timeout`, `acquire_deadline` | `Err(Error::Timeout)` |
//! | [`Event::wait_timeout`], [`Event::wait_until`] | `Err(Error::Timeout)` (Python returns `False`) |
//! | [`Condition::wait_timeout`], `wait_until`, `wait_for` | `Err(Error::Timeout)`, the lock held again (Python returns `False`) |
//! | [`Barrier::wait_timeout`] (and `wait` with a default timeout) | `Err(Error::Timeout)` for the party whose timeout broke the barrier; the others get `Error::BrokenBarrier` |
//!
//! The same shape as [`Process::join_timeout`](crate::Process::join_timeout)
//! and [`Connection::recv_timeout`](crate::connection::Connection::recv_timeout).
//! (A queue's timed `get`/`put` report Python's `Empty`/`Full` instead.)
//!
//! ```
//! use multiproc::sync::{Event, Lock};
//! use std::time::Duration;
//!
//! fn both(lock: &Lock, ready: &Event) -> multiproc::Result<()> {
//!     ready.wait_timeout(Duration::from_millis(1))?;
//!     let _g = lock.acquire_timeout(Duration::from_millis(1))?;
//!     Ok(())
//! }
//!
//! let (lock, ready) = (Lock::new()?, Event::new()?);
//! assert!(both(&lock, &ready).unwrap_err().is_timeout());
//! let _held = lock.acquire()?;
//! ready.set();
//! assert!(both(&lock, &ready).unwrap_err().is_timeout());
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! ```no_run
//! use multiproc::sync::Lock;
//! use multiproc::Process;
//!
//! fn worker(lock: Lock, n: u32) {
//!     let _g = lock.acquire().unwrap_or_else(|died| died.into_inner());
//!     println!("worker {n} has the lock");
//! }
//!
//! fn main() -> multiproc::Result<()> {
//!     multiproc::init();
//!     let lock = Lock::new()?;
//!     let mut ps = Vec::new();
//!     for n in 0..4 {
//!         ps.push(Process::start(worker, (lock.clone(), n))?);
//!     }
//!     for mut p in ps {
//!         p.join()?;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # The lock word
//!
//! A [`Lock`] is 16 bytes of shared memory, all zero when unlocked: a 64-bit
//! state whose low half is the futex word — `0` or the holder's **process
//! id** (plus a "waiters" bit) — and whose high half is the low bits of the
//! holder's process start time, written together in one compare-and-swap;
//! and a persistent owner-died flag. Uncontended, acquire is one compare-and-swap and release
//! one swap; neither enters the kernel (measured at or above the C floor of
//! `sem_wait`+`sem_post`). Contended, an acquirer spins briefly, then sleeps
//! on a process-shared futex; release wakes one sleeper only if the waiters
//! bit is set.
//!
//! # A holder that dies
//!
//! A sleeping acquirer wakes at least every 100 ms and checks that the
//! holder's process still lives (`/proc/<pid>/stat`: gone, or a zombie, is
//! dead; a live process with the same pid but another start time is a reused
//! pid, hence dead; when `/proc` cannot tell, the holder counts as alive —
//! unknown is never taken for dead). If it is dead, the acquirer takes
//! the lock over with a compare-and-swap from the exact word it saw (so one
//! waiter wins) and gets its guard inside [`OwnerDied`] — the style of
//! `std::sync::PoisonError`:
//!
//! ```
//! use multiproc::sync::Lock;
//!
//! let lock = Lock::new()?;
//! match lock.acquire() {
//!     Ok(guard) => drop(guard),
//!     Err(died) => {
//!         let guard = died.into_inner(); // the lock is held
//!         // … repair the state the lock protects …
//!         lock.clear_owner_died();        // later acquirers get plain guards
//!         drop(guard);
//!     }
//! }
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! The signal persists, like poisoning, until `clear_owner_died()`;
//! converting it with `?` gives [`Error::OwnerDied`](crate::Error::OwnerDied)
//! (and releases the lock). [`RLock`] does the same. A [`Condition`] waiter
//! whose re-acquisition meets a dead holder returns `Error::OwnerDied` with the
//! lock held; a dead *waiter* does not use up a notification. A [`Barrier`]
//! party that dies inside `wait` breaks the barrier: the others get
//! [`Error::BrokenBarrier`](crate::Error::BrokenBarrier) instead of hanging.
//!
//! Liveness is per **process**: Python's `Lock` may be released by another
//! thread or process than the one that acquired it, so a thread that exits
//! is not a dead holder. (An `RLock` held by a thread that exited, in a
//! process that lives on, stays held, as in Python.)
//!
//! # What cannot be recovered
//!
//! - **A semaphore count taken by a process that died.** A semaphore has no
//!   owner — any process may release what another acquired, which is how
//!   semaphores signal — so nothing says whether the dead process meant to
//!   give its count back. The count stays taken; waiters see no error, only a
//!   missing count (use timeouts, or a `Lock` when a count is really
//!   ownership).
//! - **An `Event` or a `Condition` notification that a dead process would
//!   have sent.** Waiters wait for their timeout.
//! - **A barrier party that dies outside `wait`.** It cannot be told from a
//!   slow one; the others wait (use a timeout).
//! - **The data a dead holder was updating**: that is what [`OwnerDied`] is
//!   for.
//!
//! Two consequences of per-process liveness to know about: a `Lock` acquired
//! by one process and meant to be released by another (a Python idiom for
//! signalling) is reported as owner-died — and taken over by a waiter — if the
//! acquiring process exits before the release; use a [`Semaphore`] or an
//! [`Event`] to signal. And liveness is read from `/proc` of the caller's pid
//! namespace: sharing a lock with a process in another pid namespace is not
//! supported.
//!
//! # Why hand-written
//!
//! No crate offers process-shared, futex-based locks that survive the death
//! of their holder. POSIX robust mutexes (`PTHREAD_MUTEX_ROBUST` with
//! `PTHREAD_PROCESS_SHARED`, built on the kernel's robust-futex list, which
//! glibc owns for every thread) come closest, but they are owned by a
//! *thread* (so a lock released by another thread, legal in Python, would
//! look dead when the acquiring thread exits) and a mutex whose recovery is
//! not completed becomes unusable for good (`ENOTRECOVERABLE`).

mod barrier;
mod condition;
mod error;
mod event;
mod lock;
pub(crate) mod raw;
mod rlock;
mod semaphore;

pub use barrier::Barrier;
/// The former name of [`SharedLock`] (what a [`Condition`] is built over).
pub use condition::SharedLock as ConditionLock;
pub use condition::{Condition, SharedLock, MAX_WAITERS};
pub use error::{LockResult, OwnerDied, TryAcquireError, TryLockResult};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard, SEM_VALUE_MAX};
