//! `Queue` and `JoinableQueue` living in the server (Python's
//! `Manager().Queue()`): blocking `put`/`get` run in the server, so a
//! manager queue can be shared with any process that can connect, even on
//! another machine.

use super::{
    args, builtin_proxy, decode_raw, err, give_owned, ok, ok_with, unknown, value_of, Wait,
};
use crate::error::Result;
use crate::manager::fault::BuiltinError;
use crate::manager::registry::{CallCx, Fail, Object, Out, Stored};
use crate::manager::wire::{Raw, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub(crate) const TYPEID: &str = "Queue";
pub(crate) const JOINABLE_TYPEID: &str = "JoinableQueue";

#[derive(Default)]
struct State {
    items: VecDeque<Stored>,
    unfinished: u64,
    /// Calls waiting on `changed`: a change wakes them only if there are
    /// any (a `Condvar` notification is a system call even with no waiter).
    waiting: u32,
}

pub(crate) struct QueueObj {
    state: Mutex<State>,
    /// Signalled on every change (put, get, task_done).
    changed: Condvar,
    maxsize: usize,
    joinable: bool,
}

pub(crate) fn make(a: &[u8], joinable: bool) -> std::result::Result<Box<dyn Object>, Fail> {
    let maxsize: u64 = args(a)?;
    Ok(Box::new(QueueObj {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
        maxsize: maxsize as usize,
        joinable,
    }))
}

impl QueueObj {
    /// Waits for a change (see [`CallCx::wait`]).
    fn wait<'g>(
        &self,
        cx: &CallCx<'_>,
        mut s: MutexGuard<'g, State>,
        deadline: Option<std::time::Instant>,
    ) -> std::result::Result<(MutexGuard<'g, State>, bool), Fail> {
        s.waiting += 1;
        match cx.wait(&self.changed, s, deadline) {
            Ok((mut g, passed)) => {
                g.waiting -= 1;
                Ok((g, passed))
            }
            Err((mut g, f)) => {
                g.waiting -= 1;
                Err(f)
            }
        }
    }

    /// Releases the state after a change, waking the calls waiting for one.
    fn notify(&self, s: MutexGuard<'_, State>) {
        let any = s.waiting > 0;
        drop(s);
        if any {
            self.changed.notify_all();
        }
    }

    fn full(&self, s: &State) -> bool {
        self.maxsize > 0 && s.items.len() >= self.maxsize
    }

    /// Waits (as `wait` says) until there is an item; `Empty` otherwise.
    fn wait_item<'g>(
        &self,
        cx: &CallCx<'_>,
        mut s: MutexGuard<'g, State>,
        wait: Wait,
    ) -> std::result::Result<MutexGuard<'g, State>, Fail> {
        let deadline = wait.deadline();
        let mut waited = false;
        while s.items.is_empty() {
            let (g, passed) = self.wait(cx, s, deadline)?;
            s = g;
            waited = true;
            if passed && s.items.is_empty() {
                return Err(err(BuiltinError::Empty));
            }
        }
        // A client that died while it waited must not take an item
        // with it: leave the item for the living.
        if waited && cx.client_gone() {
            return Err(Fail::Gone);
        }
        Ok(s)
    }
}

impl Object for QueueObj {
    fn call(&self, cx: &mut CallCx<'_>, method: &str, a: &[u8]) -> std::result::Result<Out, Fail> {
        let typeid = if self.joinable {
            JOINABLE_TYPEID
        } else {
            TYPEID
        };
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match method {
            "put" => {
                let (v, wait): (Value, Wait) = args(a)?;
                let v = cx.store(v)?;
                let deadline = wait.deadline();
                while self.full(&s) {
                    let (g, passed) = self.wait(cx, s, deadline)?;
                    s = g;
                    if passed && self.full(&s) {
                        return Err(err(BuiltinError::Full));
                    }
                }
                s.items.push_back(v);
                s.unfinished += 1;
                self.notify(s);
                // Tells the proxy whether its puts may be pipelined.
                ok(&(self.maxsize == 0))
            }
            "get" => {
                let wait: Wait = args(a)?;
                let mut s = self.wait_item(cx, s, wait)?;
                let item = s.items.pop_front();
                self.notify(s);
                let mut refs = Vec::new();
                let r = item.map(|i| give_owned(i, &mut refs));
                ok_with(&r, refs)
            }
            "get_many" => {
                let (max, wait): (u64, Wait) = args(a)?;
                let mut s = self.wait_item(cx, s, wait)?;
                let n = s.items.len().min(max.max(1) as usize);
                let mut refs = Vec::new();
                let items: Vec<Raw> = s
                    .items
                    .drain(..n)
                    .map(|i| give_owned(i, &mut refs))
                    .collect();
                self.notify(s);
                ok_with(&items, refs)
            }
            "qsize" => ok(&(s.items.len() as u64)),
            "empty" => ok(&s.items.is_empty()),
            "full" => ok(&self.full(&s)),
            "task_done" if self.joinable => {
                if s.unfinished == 0 {
                    return Err(err(BuiltinError::TaskDoneTooOften));
                }
                s.unfinished -= 1;
                self.notify(s);
                ok(&())
            }
            "join" if self.joinable => {
                let wait: Wait = args(a)?;
                let deadline = wait.deadline();
                while s.unfinished > 0 {
                    let (g, passed) = self.wait(cx, s, deadline)?;
                    s = g;
                    if passed && s.unfinished > 0 {
                        return Err(err(BuiltinError::Timeout));
                    }
                }
                ok(&())
            }
            _ => Err(unknown(typeid, method)),
        }
    }
}

builtin_proxy! {
    /// A proxy to a queue in the manager's server (Python's
    /// `Manager().Queue()`). Unlike [`crate::Queue`] (shared memory, one
    /// machine), it is reached over a connection, so it can be shared with
    /// remote clients and stored in other managed objects.
    ///
    /// ```
    /// # multiproc::init();
    /// use std::time::Duration;
    /// let manager = multiproc::manager::Manager::start()?;
    /// let q = manager.queue::<String>()?;
    /// q.put("job".to_string())?;
    /// assert_eq!(q.get()?, "job");
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "Queue")]
    QueueProxy[T] "Queue" { unbounded: Cell<Option<bool>> }
}

builtin_proxy! {
    /// A proxy to a joinable queue in the manager's server (Python's
    /// `Manager().JoinableQueue()`): a [`QueueProxy`]'s methods plus
    /// [`task_done`](Self::task_done) and [`join`](Self::join).
    ///
    /// ```
    /// # multiproc::init();
    /// let manager = multiproc::manager::Manager::start()?;
    /// let q = manager.joinable_queue::<u32>()?;
    /// q.put(1)?;
    /// assert_eq!(q.get()?, 1);
    /// q.task_done()?;
    /// q.join()?;
    /// assert!(q.task_done().is_err()); // Python's ValueError
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "JoinableQueue")]
    JoinableQueueProxy[T] "JoinableQueue" { unbounded: Cell<Option<bool>> }
}

macro_rules! queue_methods {
    ($name:ident) => {
        impl<T: Serialize + DeserializeOwned> $name<T> {
            fn put_wait(&self, v: &T, wait: Wait) -> Result<()> {
                let value = value_of(&self.core.token().endpoint, v)?;
                if matches!(wait, Wait::Block) && self.unbounded.get() == Some(true) {
                    // Cannot block or fail: pipelined (see `put`).
                    return self.core.post("put", &(value, wait));
                }
                let unbounded: bool = self.core.call("put", &(value, wait))?;
                self.unbounded.set(Some(unbounded));
                Ok(())
            }

            fn get_wait(&self, wait: Wait) -> Result<T> {
                let r: Option<Raw> = self.core.call("get", &wait)?;
                match r {
                    Some(r) => decode_raw(&r),
                    None => Err(crate::Error::Empty),
                }
            }

            /// Puts `v`, waiting for room if the queue has a `maxsize`.
            ///
            /// On an unbounded queue (`maxsize` 0) a put cannot block or
            /// fail, so it is *pipelined* (after this proxy's first put,
            /// which learns the queue's kind): sent without waiting for the
            /// server's answer. It then runs in order with this proxy's
            /// other calls (a `get` on this proxy after it sees the item),
            /// it is carried out even if this process dies right after,
            /// and other processes see it at the latest when this proxy's
            /// next other call (or [`flush`](Self::flush)) returns, or once
            /// it is dropped (a child's puts are in the queue when it has
            /// returned). Before telling another process through another
            /// channel (an event, a pipe) that items are there, call `flush`.
            /// A put of a value holding proxies, and every put on a bounded
            /// queue, waits for its answer as Python's does. Should the
            /// server fail a pipelined put all the same, the next call of
            /// this proxy (or `flush`) returns that error, and neither it nor
            /// the puts after the failed one were made.
            pub fn put(&self, v: T) -> Result<()> {
                self.put_wait(&v, Wait::Block)
            }

            /// Waits until every put of this proxy is in the queue (and
            /// reports a failed pipelined put; see [`put`](Self::put)).
            /// Costs one round trip if a put was pipelined since this
            /// proxy's last answer, nothing otherwise.
            pub fn flush(&self) -> Result<()> {
                self.core.flush()
            }

            /// Puts `v` or fails with [`Error::Full`](crate::Error::Full)
            /// at once (Python's `put_nowait`).
            #[doc(alias = "put_nowait")]
            pub fn try_put(&self, v: T) -> Result<()> {
                self.put_wait(&v, Wait::Try)
            }

            /// Puts `v`, failing with [`Error::Full`](crate::Error::Full)
            /// after `timeout`.
            pub fn put_timeout(&self, v: T, timeout: Duration) -> Result<()> {
                self.put_wait(&v, Wait::For(timeout))
            }

            /// Takes the oldest item, waiting for one.
            pub fn get(&self) -> Result<T> {
                self.get_wait(Wait::Block)
            }

            /// Takes an item or fails with [`Error::Empty`](crate::Error::Empty)
            /// at once (Python's `get_nowait`).
            #[doc(alias = "get_nowait")]
            pub fn try_get(&self) -> Result<T> {
                self.get_wait(Wait::Try)
            }

            /// Takes an item, failing with [`Error::Empty`](crate::Error::Empty)
            /// after `timeout`.
            pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
                self.get_wait(Wait::For(timeout))
            }

            /// Takes at least one item, waiting for one, and at most `max`
            /// (at least 1): the oldest ones there are, in order, in one
            /// round trip. The way to drain a queue fast; the items taken
            /// are gone for other consumers even before they are used.
            pub fn get_many(&self, max: usize) -> Result<Vec<T>> {
                self.get_many_wait(max, Wait::Block)
            }

            /// [`get_many`](Self::get_many), failing with
            /// [`Error::Empty`](crate::Error::Empty) if no item comes within
            /// `timeout` (`Duration::ZERO`: if there is none now).
            pub fn get_many_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>> {
                self.get_many_wait(max, Wait::For(timeout))
            }

            fn get_many_wait(&self, max: usize, wait: Wait) -> Result<Vec<T>> {
                let r: Vec<Raw> = self.core.call("get_many", &(max as u64, wait))?;
                r.iter().map(decode_raw).collect()
            }

            /// The number of items.
            pub fn qsize(&self) -> Result<usize> {
                Ok(self.core.call::<_, u64>("qsize", &())? as usize)
            }

            /// `true` if there are no items.
            pub fn empty(&self) -> Result<bool> {
                self.core.call("empty", &())
            }

            /// `true` if a `maxsize` is set and reached.
            pub fn full(&self) -> Result<bool> {
                self.core.call("full", &())
            }
        }
    };
}
queue_methods!(QueueProxy);
queue_methods!(JoinableQueueProxy);

impl<T: Serialize + DeserializeOwned> JoinableQueueProxy<T> {
    /// Marks one taken item as processed.
    ///
    /// # Errors
    ///
    /// [`Error::TaskDoneTooOften`](crate::Error::TaskDoneTooOften) if called more times than
    /// items were put (Python's `ValueError`).
    pub fn task_done(&self) -> Result<()> {
        self.core.call("task_done", &())
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<()> {
        self.core.call("join", &Wait::Block)
    }

    /// [`join`](Self::join), failing with [`Error::Timeout`](crate::Error::Timeout)
    /// after `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.core.call("join", &Wait::For(timeout))
    }
}
