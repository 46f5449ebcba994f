//! `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore` and `Event` living in
//! the server (Python's `Manager().Lock()` and friends).
//!
//! A lock is owned by the connection (the proxy) that acquired it. If that
//! connection closes while holding it — the proxy dropped, or its process
//! killed — the lock is released and the next acquirer is told with
//! [`Error::OwnerDied`](crate::Error::OwnerDied)(crate::Error::OwnerDied) (it holds the lock then),
//! as with the crate's shared-memory locks. CPython would stay locked.

use super::{args, builtin_proxy, err, ok, unknown, Wait};
use crate::error::Result;
use crate::manager::fault::BuiltinError;
use crate::manager::registry::{ConnId, Fail, Object, Out};
use crate::manager::server::CallCx;
use std::sync::{Condvar, Mutex};
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

/// `Lock` (any connection may release it, as in Python) or `RLock`
/// (re-entrant, released only by its owner).
pub(crate) struct LockObj {
    state: Mutex<LockState>,
    cv: Condvar,
    reentrant: bool,
}

impl LockObj {
    pub(crate) fn new(reentrant: bool) -> LockObj {
        LockObj {
            state: Mutex::new(LockState::default()),
            cv: Condvar::new(),
            reentrant,
        }
    }
}

impl Object for LockObj {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, a: &[u8]) -> std::result::Result<Out, Fail> {
        let typeid = if self.reentrant {
            RLOCK_TYPEID
        } else {
            LOCK_TYPEID
        };
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match method {
            "acquire" => {
                let wait: Wait = args(a)?;
                if self.reentrant && s.owner == Some(cx.conn_id) {
                    s.count += 1;
                    return ok(&true);
                }
                let deadline = wait.deadline();
                while s.owner.is_some() {
                    let (g, passed) = cx.wait(&self.cv, s, deadline).map_err(|(_, f)| f)?;
                    s = g;
                    if passed && s.owner.is_some() {
                        return ok(&false);
                    }
                }
                s.owner = Some(cx.conn_id);
                s.count = 1;
                if std::mem::take(&mut s.owner_died) {
                    return Err(err(BuiltinError::OwnerDied));
                }
                ok(&true)
            }
            "release" => {
                match s.owner {
                    None => return Err(err(BuiltinError::NotHeld)),
                    Some(o) if self.reentrant && o != cx.conn_id => {
                        return Err(err(BuiltinError::NotHeld))
                    }
                    Some(_) => {}
                }
                s.count -= 1;
                if s.count == 0 || !self.reentrant {
                    s.owner = None;
                    s.count = 0;
                    drop(s);
                    self.cv.notify_all();
                }
                ok(&())
            }
            "locked" => ok(&s.owner.is_some()),
            _ => Err(unknown(typeid, method)),
        }
    }

    fn client_closed(&self, conn: ConnId) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.owner == Some(conn) {
            s.owner = None;
            s.count = 0;
            s.owner_died = true;
            drop(s);
            self.cv.notify_all();
        }
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

macro_rules! lock_methods {
    ($name:ident) => {
        impl $name {
            fn acquire_wait(&self, wait: Wait) -> Result<bool> {
                self.core.call("acquire", &wait)
            }

            /// Waits for the lock and takes it.
            ///
            /// # Errors
            ///
            /// [`Error::OwnerDied`](crate::Error::OwnerDied) if the previous holder's connection closed
            /// while holding it; the caller holds the lock then.
            pub fn acquire(&self) -> Result<()> {
                self.acquire_wait(Wait::Block).map(|_| ())
            }

            /// Takes the lock if it is free; `false` otherwise
            /// (Python's `acquire(False)`).
            pub fn try_acquire(&self) -> Result<bool> {
                self.acquire_wait(Wait::Try)
            }

            /// Waits at most `timeout`; `false` if the lock stayed taken.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
                self.acquire_wait(Wait::For(timeout))
            }

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
    };
}
lock_methods!(LockProxy);
lock_methods!(RLockProxy);

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
        impl $name {
            fn acquire_wait(&self, wait: Wait) -> Result<bool> {
                self.core.call("acquire", &wait)
            }

            /// Waits until the value is positive and decrements it.
            pub fn acquire(&self) -> Result<()> {
                self.acquire_wait(Wait::Block).map(|_| ())
            }

            /// Decrements if positive; `false` otherwise.
            pub fn try_acquire(&self) -> Result<bool> {
                self.acquire_wait(Wait::Try)
            }

            /// Waits at most `timeout`; `false` if the value stayed zero.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
                self.acquire_wait(Wait::For(timeout))
            }

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
