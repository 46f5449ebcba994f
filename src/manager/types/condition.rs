//! `Condition` in the server (Python's `Manager().Condition()` and
//! `Manager().Condition(lock)`): its own re-entrant lock, or the lock of a
//! managed `Lock` / `RLock`, shared with that lock's proxies.

use super::sync::{acquire_methods, lock_acquire_doc, LockCore};
use super::{args, builtin_proxy, err, ok, unknown, Wait};
use crate::error::Result;
use crate::manager::fault::BuiltinError;
use crate::manager::registry::{CallCx, ConnId, Fail, ObjRef, Object, Out};
use crate::manager::token::Token;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub(crate) const TYPEID: &str = "Condition";

#[derive(Default)]
struct Waiters {
    /// Waiting tickets, oldest first.
    queue: VecDeque<u64>,
    /// Tickets notified but not yet returned from `wait`.
    notified: HashSet<u64>,
    next_ticket: u64,
}

pub(crate) struct ConditionObj {
    lock: Arc<LockCore>,
    /// The managed lock object it is built on, kept alive with it.
    _lock_obj: Option<ObjRef>,
    waiters: Mutex<Waiters>,
    cv: Condvar,
}

/// Builds a condition from its arguments: `None` (its own `RLock`) or the
/// token of a lock of this server, which the request's `refs` hold.
pub(crate) fn make(a: &[u8], refs: &[ObjRef]) -> std::result::Result<Box<dyn Object>, Fail> {
    let lock: Option<Token> = args(a)?;
    let (core, obj) = match lock {
        None => (LockCore::new(true), None),
        Some(t) => {
            let r = refs.iter().find(|r| r.id() == t.id).ok_or_else(|| {
                Fail::remote("the condition's lock is not an object of this server")
            })?;
            let core = r
                .object()
                .lock_core()
                .and_then(|c| c.downcast::<LockCore>().ok())
                .ok_or_else(|| Fail::remote(format!("a {} is not a lock", r.typeid())))?;
            (core, Some(r.clone()))
        }
    };
    Ok(Box::new(ConditionObj {
        lock: core,
        _lock_obj: obj,
        waiters: Mutex::new(Waiters::default()),
        cv: Condvar::new(),
    }))
}

fn not_owner() -> Fail {
    err(BuiltinError::NotHeld)
}

impl ConditionObj {
    fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Releases the lock, waits for a notification (or `wait`'s deadline),
    /// takes the lock back; whether it was notified.
    fn wait(&self, cx: &CallCx<'_>, wait: Wait) -> std::result::Result<bool, Fail> {
        if !self.lock.is_owned(cx.conn_id) {
            return Err(not_owner());
        }
        // Registered while the lock is held: a notify, which needs the lock,
        // cannot come between the release and the wait unseen.
        let ticket = {
            let mut w = self.waiters();
            let t = w.next_ticket;
            w.next_ticket += 1;
            w.queue.push_back(t);
            t
        };
        let saved = self.lock.release_all();
        let deadline = wait.deadline();
        let mut w = self.waiters();
        let woken = loop {
            if w.notified.remove(&ticket) {
                break true;
            }
            match cx.wait(&self.cv, w, deadline) {
                Ok((g, passed)) => {
                    w = g;
                    if passed && !w.notified.contains(&ticket) {
                        w.queue.retain(|t| *t != ticket);
                        break false;
                    }
                }
                Err((mut g, f)) => {
                    g.queue.retain(|t| *t != ticket);
                    g.notified.remove(&ticket);
                    return Err(f);
                }
            }
        };
        drop(w);
        self.lock.reacquire(cx, saved)?;
        Ok(woken)
    }
}

impl Object for ConditionObj {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, a: &[u8]) -> std::result::Result<Out, Fail> {
        match method {
            "acquire" => ok(&self.lock.acquire(cx, args(a)?)?),
            "release" => {
                if !self.lock.is_owned(cx.conn_id) {
                    return Err(not_owner());
                }
                ok(&self.lock.release(cx.conn_id)?)
            }
            "wait" => ok(&self.wait(cx, args(a)?)?),
            "notify" => {
                let n: u64 = args(a)?;
                if !self.lock.is_owned(cx.conn_id) {
                    return Err(not_owner());
                }
                let mut w = self.waiters();
                for _ in 0..n {
                    let Some(t) = w.queue.pop_front() else {
                        break;
                    };
                    w.notified.insert(t);
                }
                drop(w);
                self.cv.notify_all();
                ok(&())
            }
            _ => Err(unknown(TYPEID, method)),
        }
    }

    fn client_closed(&self, conn: ConnId) {
        self.lock.client_closed(conn)
    }
}

builtin_proxy! {
    /// A proxy to a condition variable in the server (Python's
    /// `Manager().Condition()`), with its own re-entrant lock.
    ///
    /// ```
    /// # multiproc::init();
    /// use std::time::Duration;
    /// let manager = multiproc::manager::Manager::start()?;
    /// let c = manager.condition()?;
    /// c.acquire()?;
    /// assert!(!c.wait_timeout(Duration::from_millis(10))?); // nobody notified
    /// c.notify_all()?;
    /// c.release()?;
    /// assert!(c.wait().is_err()); // not holding the lock
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ConditionProxy[] "Condition"
}

acquire_methods!(
    ConditionProxy,
    lock_acquire_doc!(),
    "Takes the lock if free; `false` otherwise.",
    "Waits at most `timeout` for the lock; `false` if it stayed taken."
);

impl ConditionProxy {
    /// Releases the lock once.
    pub fn release(&self) -> Result<()> {
        self.core.call("release", &())
    }

    /// Releases the lock, waits for a notification, takes the lock back.
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`](crate::Error::NotHeld) if this proxy does not hold
    /// the lock (over a plain [`LockProxy`](crate::manager::LockProxy): if
    /// nobody holds it, as in Python).
    pub fn wait(&self) -> Result<()> {
        self.core.call::<_, bool>("wait", &Wait::Block).map(|_| ())
    }

    /// [`wait`](Self::wait) for at most `timeout`; `false` if not notified
    /// in time (the lock is held again either way).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.core.call("wait", &Wait::For(timeout))
    }

    /// Wakes one waiter.
    pub fn notify(&self) -> Result<()> {
        self.core.call("notify", &1u64)
    }

    /// Wakes up to `n` waiters.
    pub fn notify_n(&self, n: u64) -> Result<()> {
        self.core.call("notify", &n)
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) -> Result<()> {
        self.core.call("notify", &u64::MAX)
    }

    /// Waits until `pred()` is true, re-checking after each notification
    /// (Python's `wait_for`). The lock must be held.
    pub fn wait_for(&self, mut pred: impl FnMut() -> Result<bool>) -> Result<()> {
        while !pred()? {
            self.wait()?;
        }
        Ok(())
    }
}
