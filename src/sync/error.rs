//! The results of acquiring a robust lock, in the style of
//! `std::sync::PoisonError`: when a previous holder died holding the lock, the
//! acquisition still succeeds, but the guard comes back inside an
//! [`OwnerDied`] error so that the caller notices and can repair the state the
//! lock protects.

use std::fmt;

/// A lock was acquired, but a previous holder died while holding it: the state
/// it protects may be half-updated.
///
/// The lock **is held** by the caller: [`into_inner`](Self::into_inner) gives
/// the guard back. The signal persists — every later acquirer gets it too —
/// until somebody calls the lock's `clear_owner_died()` after repairing the
/// state (like `std::sync::Mutex::clear_poison`).
///
/// Converting it into [`crate::Error`] (with `?`) gives
/// [`Error::OwnerDied`](crate::Error::OwnerDied) and drops the guard, which
/// releases the lock.
///
/// ```
/// use multiproc::sync::Lock;
///
/// let lock = Lock::new()?;
/// let guard = lock.acquire().unwrap_or_else(|died| {
///     // repair the shared state here, then:
///     lock.clear_owner_died();
///     died.into_inner()
/// });
/// drop(guard);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct OwnerDied<G> {
    guard: G,
}

impl<G> OwnerDied<G> {
    pub(crate) fn new(guard: G) -> Self {
        OwnerDied { guard }
    }

    /// The guard: the lock is held.
    pub fn into_inner(self) -> G {
        self.guard
    }

    /// A reference to the guard.
    pub fn get_ref(&self) -> &G {
        &self.guard
    }

    /// A mutable reference to the guard.
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnerDied { .. }")
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the previous owner of the lock died while holding it")
    }
}

impl<G> std::error::Error for OwnerDied<G> {}

impl<G> From<OwnerDied<G>> for crate::Error {
    fn from(_: OwnerDied<G>) -> Self {
        crate::Error::OwnerDied
    }
}

/// Why a non-blocking or timed acquisition did not return a clean guard.
pub enum TryAcquireError<G> {
    /// The lock is held by a live holder (and stayed so until the timeout).
    Timeout,
    /// Acquired, but a previous holder died holding it (see [`OwnerDied`]).
    OwnerDied(OwnerDied<G>),
}

impl<G> TryAcquireError<G> {
    /// `true` for [`Timeout`](Self::Timeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, TryAcquireError::Timeout)
    }

    /// The guard, if the lock was acquired after all (owner died).
    pub fn into_guard(self) -> Option<G> {
        match self {
            TryAcquireError::Timeout => None,
            TryAcquireError::OwnerDied(d) => Some(d.into_inner()),
        }
    }
}

impl<G> From<OwnerDied<G>> for TryAcquireError<G> {
    fn from(d: OwnerDied<G>) -> Self {
        TryAcquireError::OwnerDied(d)
    }
}

impl<G> fmt::Debug for TryAcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryAcquireError::Timeout => f.write_str("Timeout"),
            TryAcquireError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
        }
    }
}

impl<G> fmt::Display for TryAcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryAcquireError::Timeout => f.write_str("timed out"),
            TryAcquireError::OwnerDied(d) => fmt::Display::fmt(d, f),
        }
    }
}

impl<G> std::error::Error for TryAcquireError<G> {}

impl<G> From<TryAcquireError<G>> for crate::Error {
    fn from(e: TryAcquireError<G>) -> Self {
        match e {
            TryAcquireError::Timeout => crate::Error::Timeout,
            TryAcquireError::OwnerDied(_) => crate::Error::OwnerDied,
        }
    }
}

/// The result of a blocking acquisition: the guard, or the guard inside
/// [`OwnerDied`].
pub type LockResult<G> = Result<G, OwnerDied<G>>;

/// The result of a non-blocking or timed acquisition.
pub type TryLockResult<G> = Result<G, TryAcquireError<G>>;
