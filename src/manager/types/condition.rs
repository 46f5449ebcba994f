//! `Condition` in the server (Python's `Manager().Condition()`), with its
//! own re-entrant lock owned by the acquiring connection.

use super::{args, builtin_proxy, err, ok, unknown, Wait};
use crate::error::Result;
use crate::manager::fault::BuiltinError;
use crate::manager::registry::{ConnId, Fail, Object, Out};
use crate::manager::server::CallCx;
use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

pub(crate) const TYPEID: &str = "Condition";

#[derive(Default)]
struct State {
    owner: Option<ConnId>,
    count: u32,
    owner_died: bool,
    /// Waiting tickets, oldest first.
    waiters: VecDeque<u64>,
    /// Tickets notified but not yet returned from `wait`.
    notified: HashSet<u64>,
    next_ticket: u64,
}

#[derive(Default)]
pub(crate) struct ConditionObj {
    state: Mutex<State>,
    cv: Condvar,
}

fn not_owner() -> Fail {
    err(BuiltinError::NotHeld)
}

impl Object for ConditionObj {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, a: &[u8]) -> std::result::Result<Out, Fail> {
        let me = cx.conn_id;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match method {
            "acquire" => {
                let wait: Wait = args(a)?;
                if s.owner == Some(me) {
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
                s.owner = Some(me);
                s.count = 1;
                if std::mem::take(&mut s.owner_died) {
                    return Err(err(BuiltinError::OwnerDied));
                }
                ok(&true)
            }
            "release" => {
                if s.owner != Some(me) {
                    return Err(err(BuiltinError::NotHeld));
                }
                s.count -= 1;
                if s.count == 0 {
                    s.owner = None;
                    drop(s);
                    self.cv.notify_all();
                }
                ok(&())
            }
            "wait" => {
                let wait: Wait = args(a)?;
                if s.owner != Some(me) {
                    return Err(not_owner());
                }
                let saved = s.count;
                let ticket = s.next_ticket;
                s.next_ticket += 1;
                s.waiters.push_back(ticket);
                s.owner = None;
                s.count = 0;
                self.cv.notify_all();
                let deadline = wait.deadline();
                let mut woken = false;
                loop {
                    if s.notified.remove(&ticket) {
                        woken = true;
                        break;
                    }
                    match cx.wait(&self.cv, s, deadline) {
                        Ok((g, passed)) => {
                            s = g;
                            if passed && !s.notified.contains(&ticket) {
                                break;
                            }
                        }
                        Err((mut g, f)) => {
                            g.waiters.retain(|t| *t != ticket);
                            g.notified.remove(&ticket);
                            return Err(f);
                        }
                    }
                }
                if !woken {
                    s.waiters.retain(|t| *t != ticket);
                }
                // Take the lock back, however long that takes.
                while s.owner.is_some() {
                    let (g, _) = cx.wait(&self.cv, s, None).map_err(|(_, f)| f)?;
                    s = g;
                }
                s.owner = Some(me);
                s.count = saved;
                ok(&woken)
            }
            "notify" => {
                let n: u64 = args(a)?;
                if s.owner != Some(me) {
                    return Err(err(BuiltinError::NotHeld));
                }
                for _ in 0..n {
                    let Some(t) = s.waiters.pop_front() else {
                        break;
                    };
                    s.notified.insert(t);
                }
                drop(s);
                self.cv.notify_all();
                ok(&())
            }
            _ => Err(unknown(TYPEID, method)),
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

impl ConditionProxy {
    /// Takes the condition's lock (re-entrant).
    pub fn acquire(&self) -> Result<()> {
        self.core
            .call::<_, bool>("acquire", &Wait::Block)
            .map(|_| ())
    }

    /// Takes the lock if free; `false` otherwise.
    pub fn try_acquire(&self) -> Result<bool> {
        self.core.call("acquire", &Wait::Try)
    }

    /// Releases the lock once.
    pub fn release(&self) -> Result<()> {
        self.core.call("release", &())
    }

    /// Releases the lock, waits for a notification, takes the lock back.
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`](crate::Error::NotHeld) if this proxy does not hold the lock.
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
