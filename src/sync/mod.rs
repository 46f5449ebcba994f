//! Process-shared synchronization: [`Lock`], [`RLock`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Condition`], [`Event`], [`Barrier`] — Python's
//! `multiprocessing.synchronize`, robust to a holder that dies.
//!
//! Every primitive keeps its state in a small shared-memory region (a
//! `memfd`), reaches a child as a [`Process`](crate::Process) argument
//! ([`Handoff`](crate::handoff::Handoff)), and works between threads too.
//! Waiting is done on process-shared futexes; the uncontended paths never
//! enter the kernel.
//!
//! # Why hand-written
//!
//! No crate offers process-shared, futex-based locks that survive the death
//! of their holder. POSIX robust mutexes (`PTHREAD_MUTEX_ROBUST`) come
//! closest, but they are owned by a *thread* (Python's `Lock` may be released
//! by another thread or process), they rely on the per-thread robust list that
//! glibc already owns, and a mutex left unrecovered becomes unusable for good.
//! See [`raw`] for the lock word.
#![allow(dead_code)]

mod barrier;
mod condition;
mod error;
mod event;
mod lock;
pub(crate) mod raw;
mod rlock;
mod semaphore;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionLock, MAX_WAITERS};
pub use error::{LockResult, OwnerDied, TryAcquireError, TryLockResult};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard, SEM_VALUE_MAX};
