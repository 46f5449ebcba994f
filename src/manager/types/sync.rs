//! `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore` and `Event` living in
//! the server (Python's `Manager().Lock()` and friends).
//!
//! A lock is owned by the connection (the proxy) that acquired it. If that
//! connection closes while holding it — the proxy dropped, or its process
//! killed — the lock is released and the next acquirer is told with
//! [`Error::OwnerDied`](crate::Error::OwnerDied) (it holds the lock then),
//! as with the crate's shared-memory locks. CPython would stay locked.

use super::{args, builtin_proxy, err, ok, unknown, Wait};
use crate::error::Result;
use crate::manager::fault::BuiltinError;
use crate::manager::registry::{CallCx, ConnId, Fail, Object, Out};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub(crate) const LOCK_TYPEID: &str = "Lock";
pub(crate) const RLOCK_TYPEID: &str = "RLock";
pub(crate) const SEMAPHORE_TYPEID: &str = "Semaphore";
pub(crate) const BOUNDED_SEMAPHORE_TYPEID: &str = "BoundedSemaphore";
pub(crate) const EVENT_TYPEID: &str = "Event";

#[derive(Default)]
struct LockState {
    owner: Option<ConnId>,
    count: u32,
    owner_died: bool,
}

/// A lock's state: owned by a [`LockObj`] and shared with the conditions
/// built on it (Python's `Condition(lock)`).
pub(crate) struct LockCore {
    state: Mutex<LockState>,
    cv: Condvar,
    reentrant: bool,
}

impl LockCore {
    pub(crate) fn new(reentrant: bool) -> Arc<LockCore> {
        Arc::new(LockCore {
            state: Mutex::new(LockState::default()),
            cv: Condvar::new(),
            reentrant,
        })
    }

    fn state(&self) -> MutexGuard<'_, LockState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the lock for the caller's connection; `Ok(false)` if `wait`
    /// ran out. After a holder died, the taker is told `OwnerDied` (it holds
    /// the lock then).
    pub(crate) fn acquire(&self, cx: &CallCx<'_>, wait: Wait) -> std::result::Result<bool, Fail> {
        let me = cx.conn_id;
        let mut s = self.state();
        if self.reentrant && s.owner == Some(me) {
            s.count += 1;
            return Ok(true);
        }
        let deadline = wait.deadline();
        while s.owner.is_some() {
            let (g, passed) = cx.wait(&self.cv, s, deadline).map_err(|(_, f)| f)?;
            s = g;
            if passed && s.owner.is_some() {
                return Ok(false);
            }
        }
        s.owner = Some(me);
        s.count = 1;
        if std::mem::take(&mut s.owner_died) {
            return Err(err(BuiltinError::OwnerDied));
        }
        Ok(true)
    }

    /// Releases once (a `Lock`: whoever holds it, as in Python; an
    /// `RLock`: only its owner).
    pub(crate) fn release(&self, me: ConnId) -> std::result::Result<(), Fail> {
        let mut s = self.state();
        match s.owner {
            None => return Err(err(BuiltinError::NotHeld)),
            Some(o) if self.reentrant && o != me => return Err(err(BuiltinError::NotHeld)),
            Some(_) => {}
        }
        s.count -= 1;
        if s.count == 0 || !self.reentrant {
            s.owner = None;
            s.count = 0;
            drop(s);
            self.cv.notify_all();
        }
        Ok(())
    }

    pub(crate) fn locked(&self) -> bool {
        self.state().owner.is_some()
    }

    /// Whether `me` may wait on or notify a condition over this lock
    /// (Python's `_is_owned`: an `RLock` held by `me`; a `Lock` held at all).
    pub(crate) fn is_owned(&self, me: ConnId) -> bool {
        let s = self.state();
        match s.owner {
            Some(o) => !self.reentrant || o == me,
            None => false,
        }
    }

    /// Releases the lock however often `me` took it, for a condition
    /// wait; returns that count. The caller checked [`is_owned`](Self::is_owned).
    pub(crate) fn release_all(&self) -> u32 {
        let mut s = self.state();
        let saved = s.count.max(1);
        s.owner = None;
        s.count = 0;
        drop(s);
        self.cv.notify_all();
        saved
    }

    /// Takes the lock back after a condition wait, however long that takes.
    pub(crate) fn reacquire(&self, cx: &CallCx<'_>, saved: u32) -> std::result::Result<(), Fail> {
        let mut s = self.state();
        while s.owner.is_some() {
            let (g, _) = cx.wait(&self.cv, s, None).map_err(|(_, f)| f)?;
            s = g;
        }
        s.owner = Some(cx.conn_id);
        s.count = saved;
        Ok(())
    }

    /// The connection `conn` closed: if it held the lock, free it and tell
    /// the next taker.
    pub(crate) fn client_closed(&self, conn: ConnId) {
        let mut s = self.state();
        if s.owner == Some(conn) {
            s.owner = None;
            s.count = 0;
            s.owner_died = true;
            drop(s);
            self.cv.notify_all();
        }
    }
}

/// `Lock` (any connection may release it, as in Python) or `RLock`
/// (re-entrant, released only by its owner).
pub(crate) struct LockObj {
    core: Arc<LockCore>,
}

impl LockObj {
    pub(crate) fn new(reentrant: bool) -> LockObj {
        LockObj {
            core: LockCore::new(reentrant),
        }
    }
}

impl Object for LockObj {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, a: &[u8]) -> std::result::Result<Out, Fail> {
        match method {
            "acquire" => ok(&self.core.acquire(cx, args(a)?)?),
            "release" => ok(&self.core.release(cx.conn_id)?),
            "locked" => ok(&self.core.locked()),
            _ => Err(unknown(
                if self.core.reentrant {
                    RLOCK_TYPEID
                } else {
                    LOCK_TYPEID
                },
                method,
            )),
        }
    }

    fn client_closed(&self, conn: ConnId) {
        self.core.client_closed(conn)
    }

    fn lock_core(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        Some(self.core.clone())
    }
}

builtin_proxy! {
    /// A proxy to a lock in the server (Python's `Manager().Lock()`).
    ///
    /// ```
    /// # multiproc::init();
    /// let manager = multiproc::manager::Manager::start()?;
    /// let lock = manager.lock()?;
    /// lock.acquire()?;
    /// assert!(!lock.clone().try_acquire()?); // held
    /// lock.release()?;
    /// assert!(lock.release().is_err()); // Python's "release unlocked lock"
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "AcquirerProxy")]
    LockProxy[] "Lock"
}

builtin_proxy! {
    /// A proxy to a re-entrant lock in the server (Python's
    /// `Manager().RLock()`): the connection that holds it may acquire it
    /// again; it is free after as many releases.
    ///
    /// ```
    /// # multiproc::init();
    /// let manager = multiproc::manager::Manager::start()?;
    /// let r = manager.rlock()?;
    /// r.acquire()?;
    /// r.acquire()?;
    /// r.release()?;
    /// assert!(r.clone().release().is_err()); // not the owner
    /// r.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    RLockProxy[] "RLock"
}

/// `acquire`, `try_acquire` and `acquire_timeout` of a proxy whose
/// object answers `"acquire"` with whether it took it; the doc strings say
/// what acquiring means for that type.
macro_rules! acquire_methods {
    ($name:ident, $acquire:expr, $try:expr, $timeout:expr) => {
        impl $name {
            fn acquire_wait(&self, wait: Wait) -> Result<bool> {
                self.core.call("acquire", &wait)
            }

            #[doc = $acquire]
            pub fn acquire(&self) -> Result<()> {
                self.acquire_wait(Wait::Block).map(|_| ())
            }

            #[doc = $try]
            pub fn try_acquire(&self) -> Result<bool> {
                self.acquire_wait(Wait::Try)
            }

            #[doc = $timeout]
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
                self.acquire_wait(Wait::For(timeout))
            }
        }
    };
}
pub(crate) use acquire_methods;

/// The `acquire` doc of locks (and of a condition's lock).
macro_rules! lock_acquire_doc {
    () => {
        "Waits for the lock and takes it.\n\n# Errors\n\n\
         [`Error::OwnerDied`](crate::Error::OwnerDied) if the previous holder's \
         connection closed while holding it; the caller holds the lock then."
    };
}
pub(crate) use lock_acquire_doc;

macro_rules! lock_methods {
    ($name:ident) => {
        acquire_methods!(
            $name,
            lock_acquire_doc!(),
            "Takes the lock if it is free; `false` otherwise (Python's `acquire(False)`).",
            "Waits at most `timeout`; `false` if the lock stayed taken."
        );

        impl $name {
            /// Releases the lock.
            ///
            /// # Errors
            ///
            /// [`Error::NotHeld`](crate::Error::NotHeld) if it is not held (for an `RLock`: not
            /// held by this proxy).
            pub fn release(&self) -> Result<()> {
                self.core.call("release", &())
            }

            /// `true` if some proxy holds the lock.
            pub fn locked(&self) -> Result<bool> {
                self.core.call("locked", &())
            }
        }

        impl ConditionLock for $name {}
        impl sealed::Sealed for $name {}
    };
}
lock_methods!(LockProxy);
lock_methods!(RLockProxy);

mod sealed {
    pub trait Sealed {}
}

/// A lock a [`ConditionProxy`](crate::manager::ConditionProxy) can be built
/// on ([`Manager::condition_with`](crate::manager::Manager::condition_with),
/// Python's `manager.Condition(lock)`): [`LockProxy`] or [`RLockProxy`].
pub trait ConditionLock: crate::manager::Proxy + sealed::Sealed {}

/// `Semaphore` / `BoundedSemaphore`.
pub(crate) struct SemaphoreObj {
    value: Mutex<u64>,
    cv: Condvar,
    bound: Option<u64>,
}

pub(crate) fn make_semaphore(
    a: &[u8],
    bounded: bool,
) -> std::result::Result<Box<dyn Object>, Fail> {
    let value: u64 = args(a)?;
    Ok(Box::new(SemaphoreObj {
        value: Mutex::new(value),
        cv: Condvar::new(),
        bound: bounded.then_some(value),
    }))
}

impl Object for SemaphoreObj {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, a: &[u8]) -> std::result::Result<Out, Fail> {
        let mut v = self.value.lock().unwrap_or_else(|e| e.into_inner());
        match method {
            "acquire" => {
                let wait: Wait = args(a)?;
                let deadline = wait.deadline();
                while *v == 0 {
                    let (g, passed) = cx.wait(&self.cv, v, deadline).map_err(|(_, f)| f)?;
                    v = g;
                    if passed && *v == 0 {
                        return ok(&false);
                    }
                }
                *v -= 1;
                ok(&true)
            }
            "release" => {
                let n: u64 = args(a)?;
                let new = v.saturating_add(n);
                if let Some(b) = self.bound {
                    if new > b {
                        return Err(err(BuiltinError::ReleasedTooOften));
                    }
                }
                *v = new;
                drop(v);
                self.cv.notify_all();
                ok(&())
            }
            "get_value" => ok(&*v),
            _ => Err(unknown(
                if self.bound.is_some() {
                    BOUNDED_SEMAPHORE_TYPEID
                } else {
                    SEMAPHORE_TYPEID
                },
                method,
            )),
        }
    }
}

builtin_proxy! {
    /// A proxy to a semaphore in the server (Python's `Manager().Semaphore(n)`).
    ///
    /// ```
    /// # multiproc::init();
    /// let manager = multiproc::manager::Manager::start()?;
    /// let s = manager.semaphore(1)?;
    /// s.acquire()?;
    /// assert!(!s.try_acquire()?);
    /// s.release()?;
    /// assert_eq!(s.get_value()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    SemaphoreProxy[] "Semaphore"
}

builtin_proxy! {
    /// A proxy to a bounded semaphore (Python's
    /// `Manager().BoundedSemaphore(n)`): releasing past the initial value
    /// fails.
    ///
    /// ```
    /// # multiproc::init();
    /// let manager = multiproc::manager::Manager::start()?;
    /// let s = manager.bounded_semaphore(1)?;
    /// assert!(s.release().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    BoundedSemaphoreProxy[] "BoundedSemaphore"
}

macro_rules! semaphore_methods {
    ($name:ident) => {
        acquire_methods!(
            $name,
            "Waits until the value is positive and decrements it.",
            "Decrements if positive; `false` otherwise.",
            "Waits at most `timeout`; `false` if the value stayed zero."
        );

        impl $name {
            /// Increments the value by one.
            pub fn release(&self) -> Result<()> {
                self.core.call("release", &1u64)
            }

            /// Increments the value by `n` (Python 3.9's `release(n)`).
            pub fn release_n(&self, n: u64) -> Result<()> {
                self.core.call("release", &n)
            }

            /// The current value.
            pub fn get_value(&self) -> Result<u64> {
                self.core.call("get_value", &())
            }
        }
    };
}
semaphore_methods!(SemaphoreProxy);
semaphore_methods!(BoundedSemaphoreProxy);

/// `Event`.
#[derive(Default)]
pub(crate) struct EventObj {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Object for EventObj {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, a: &[u8]) -> std::result::Result<Out, Fail> {
        let mut f = self.flag.lock().unwrap_or_else(|e| e.into_inner());
        match method {
            "set" => {
                *f = true;
                drop(f);
                self.cv.notify_all();
                ok(&())
            }
            "clear" => {
                *f = false;
                ok(&())
            }
            "is_set" => ok(&*f),
            "wait" => {
                let wait: Wait = args(a)?;
                let deadline = wait.deadline();
                while !*f {
                    let (g, passed) = cx.wait(&self.cv, f, deadline).map_err(|(_, e)| e)?;
                    f = g;
                    if passed {
                        break;
                    }
                }
                ok(&*f)
            }
            _ => Err(unknown(EVENT_TYPEID, method)),
        }
    }
}

builtin_proxy! {
    /// A proxy to an event in the server (Python's `Manager().Event()`).
    ///
    /// ```
    /// # multiproc::init();
    /// use std::time::Duration;
    /// let manager = multiproc::manager::Manager::start()?;
    /// let e = manager.event()?;
    /// assert!(!e.wait_timeout(Duration::from_millis(10))?);
    /// e.set()?;
    /// assert!(e.is_set()?);
    /// e.wait()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    EventProxy[] "Event"
}

impl EventProxy {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<()> {
        self.core.call("set", &())
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<()> {
        self.core.call("clear", &())
    }

    /// The flag.
    pub fn is_set(&self) -> Result<bool> {
        self.core.call("is_set", &())
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<()> {
        self.core.call::<_, bool>("wait", &Wait::Block).map(|_| ())
    }

    /// Waits at most `timeout`; returns the flag.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.core.call("wait", &Wait::For(timeout))
    }
}
