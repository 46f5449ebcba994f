//! `Barrier` in the server (Python's `Manager().Barrier(parties)`).
//!
//! A party whose connection closes while it waits breaks the barrier, so
//! the others get [`Error::BrokenBarrier`](crate::Error::BrokenBarrier)
//! instead of waiting forever.

use super::{args, builtin_proxy, err, ok, unknown, Wait};
use crate::error::Result;
use crate::manager::fault::BuiltinError;
use crate::manager::registry::{CallCx, Fail, Object, Out};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

pub(crate) const TYPEID: &str = "Barrier";

#[derive(Default)]
struct State {
    waiting: u64,
    generation: u64,
    broken: bool,
    /// The round that `reset` ended while parties waited in it.
    reset_gen: Option<u64>,
}

pub(crate) struct BarrierObj {
    state: Mutex<State>,
    cv: Condvar,
    parties: u64,
}

pub(crate) fn make(a: &[u8]) -> std::result::Result<Box<dyn Object>, Fail> {
    let parties: u64 = args(a)?;
    if parties == 0 {
        return Err(err(BuiltinError::Invalid("parties must be > 0".into())));
    }
    Ok(Box::new(BarrierObj {
        state: Mutex::new(State::default()),
        cv: Condvar::new(),
        parties,
    }))
}

impl Object for BarrierObj {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, a: &[u8]) -> std::result::Result<Out, Fail> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match method {
            "wait" => {
                let wait: Wait = args(a)?;
                if s.broken {
                    return Err(err(BuiltinError::BrokenBarrier));
                }
                let index = s.waiting;
                s.waiting += 1;
                if s.waiting == self.parties {
                    s.waiting = 0;
                    s.generation += 1;
                    drop(s);
                    self.cv.notify_all();
                    return ok(&index);
                }
                let gen = s.generation;
                let deadline = wait.deadline();
                loop {
                    if s.generation != gen {
                        if s.reset_gen == Some(gen) {
                            return Err(err(BuiltinError::BrokenBarrier));
                        }
                        return ok(&index);
                    }
                    if s.broken {
                        return Err(err(BuiltinError::BrokenBarrier));
                    }
                    match cx.wait(&self.cv, s, deadline) {
                        Ok((g, passed)) => {
                            s = g;
                            if passed && s.generation == gen && !s.broken {
                                // Python: a timeout breaks the barrier.
                                s.broken = true;
                                drop(s);
                                self.cv.notify_all();
                                return Err(err(BuiltinError::BrokenBarrier));
                            }
                        }
                        Err((mut g, f)) => {
                            g.broken = true;
                            drop(g);
                            self.cv.notify_all();
                            return Err(f);
                        }
                    }
                }
            }
            "abort" => {
                s.broken = true;
                drop(s);
                self.cv.notify_all();
                ok(&())
            }
            "reset" => {
                if s.waiting > 0 {
                    // Waiters of the current round see it broken.
                    s.reset_gen = Some(s.generation);
                }
                s.waiting = 0;
                s.generation += 1;
                s.broken = false;
                drop(s);
                self.cv.notify_all();
                ok(&())
            }
            "n_waiting" => ok(&s.waiting),
            "broken" => ok(&s.broken),
            "parties" => ok(&self.parties),
            _ => Err(unknown(TYPEID, method)),
        }
    }
}

builtin_proxy! {
    /// A proxy to a barrier in the server (Python's `Manager().Barrier(n)`).
    ///
    /// ```
    /// # multiproc::init();
    /// use std::time::Duration;
    /// let manager = multiproc::manager::Manager::start()?;
    /// let b = manager.barrier(2)?;
    /// let b2 = b.clone();
    /// let t = std::thread::spawn(move || b2.wait());
    /// let mine = b.wait()?;
    /// let theirs = t.join().unwrap()?;
    /// assert_eq!(mine + theirs, 1); // indices 0 and 1
    /// assert!(b.wait_timeout(Duration::from_millis(10)).is_err()); // breaks it
    /// assert!(b.broken()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    BarrierProxy[] "Barrier"
}

impl BarrierProxy {
    /// Waits until `parties` proxies wait; returns this one's arrival index
    /// (`0..parties`).
    ///
    /// # Errors
    ///
    /// [`Error::BrokenBarrier`](crate::Error::BrokenBarrier) if the barrier
    /// is or becomes broken (aborted, reset, a timeout, a party gone).
    pub fn wait(&self) -> Result<u64> {
        self.core.call("wait", &Wait::Block)
    }

    /// [`wait`](Self::wait) for at most `timeout`; a timeout breaks the
    /// barrier, as in Python.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u64> {
        self.core.call("wait", &Wait::For(timeout))
    }

    /// Breaks the barrier: current and future waiters fail.
    pub fn abort(&self) -> Result<()> {
        self.core.call("abort", &())
    }

    /// Returns the barrier to its initial state; current waiters fail.
    pub fn reset(&self) -> Result<()> {
        self.core.call("reset", &())
    }

    /// How many parties are waiting now.
    pub fn n_waiting(&self) -> Result<u64> {
        self.core.call("n_waiting", &())
    }

    /// The number of parties.
    pub fn parties(&self) -> Result<u64> {
        self.core.call("parties", &())
    }

    /// `true` if broken.
    pub fn broken(&self) -> Result<bool> {
        self.core.call("broken", &())
    }
}
