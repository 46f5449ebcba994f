//! Results: [`AsyncResult`], callbacks, and the collecting sink of map calls.

use super::engine::Engine;
use super::progress::Progress;
pub(crate) use super::sink::{Fail, Sink};
use crate::error::{Error, ProcessFailure, Result};
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One task's failure, kept until the caller asks for it.
#[derive(Debug, Clone)]
pub(crate) enum TaskErr {
    Panicked {
        pid: i32,
        message: String,
        backtrace: String,
    },
    Died(i32),
    Broken,
    Codec(String),
}

impl TaskErr {
    pub(crate) fn to_error(&self) -> Error {
        match self {
            TaskErr::Panicked {
                pid,
                message,
                backtrace,
            } => Error::ProcessFailed(Box::new(ProcessFailure {
                pid: *pid,
                exitcode: 1,
                panic_message: Some(message.clone()),
                backtrace: Some(backtrace.clone()),
            })),
            TaskErr::Died(code) => Error::WorkerDied { exitcode: *code },
            TaskErr::Broken => Error::BrokenPool,
            TaskErr::Codec(m) => Error::codec(m.clone()),
        }
    }

    fn from_fail(f: &Fail) -> TaskErr {
        match f {
            Fail::Died(c) => TaskErr::Died(*c),
            Fail::Broken => TaskErr::Broken,
            Fail::Failed(m) => TaskErr::Codec(m.clone()),
        }
    }
}

/// Decodes the answers of one batch, calling `each` once per task.
pub(crate) fn decode_items<R: DeserializeOwned>(
    outcome: std::result::Result<&[u8], &Fail>,
    count: u32,
    pid: i32,
    mut each: impl FnMut(std::result::Result<R, TaskErr>),
) {
    let bytes = match outcome {
        Ok(bytes) => bytes,
        Err(f) => {
            let e = TaskErr::from_fail(f);
            for _ in 0..count {
                each(Err(e.clone()));
            }
            return;
        }
    };
    let mut rd = crate::codec::Reader::new(bytes);
    for k in 0..count {
        let item = match rd.tag() {
            Ok(0) => rd.next::<R>().map(Ok),
            Ok(1) => rd.next::<(String, String)>().map(|(message, backtrace)| {
                Err(TaskErr::Panicked {
                    pid,
                    message,
                    backtrace,
                })
            }),
            Ok(2) => rd.next::<String>().map(|m| Err(TaskErr::Codec(m))),
            Ok(3) => rd.next::<i32>().map(|code| Err(TaskErr::Died(code))),
            Ok(4) => Ok(Err(TaskErr::Broken)),
            Ok(_) => Err(postcard::Error::DeserializeBadEnum),
            Err(e) => Err(e),
        };
        match item {
            Ok(v) => each(v),
            Err(e) => {
                let e = TaskErr::Codec(format!("cannot decode a task's result: {e}"));
                for _ in k..count {
                    each(Err(e.clone()));
                }
                return;
            }
        }
    }
}

/// Functions called with the outcome of an asynchronous call, in the thread
/// that receives it (Python's `callback=` and `error_callback=`).
///
/// As in Python, a callback runs in a thread that is delivering results:
/// keep it short, and do not wait on the same pool inside it (that would
/// stall result delivery). A panicking callback is ignored.
///
/// ```
/// use multiproc::pool::Callbacks;
/// let cb: Callbacks<u64> = Callbacks::new()
///     .on_success(|v| println!("got {v}"))
///     .on_error(|e| eprintln!("failed: {e}"));
/// # let _ = cb;
/// ```
pub struct Callbacks<V> {
    on_ok: Option<OnSuccess<V>>,
    on_err: Option<OnError>,
}

type OnSuccess<V> = Box<dyn FnOnce(&V) + Send>;
type OnError = Box<dyn FnOnce(&Error) + Send>;

impl<V> Default for Callbacks<V> {
    fn default() -> Self {
        Callbacks {
            on_ok: None,
            on_err: None,
        }
    }
}

impl<V> fmt::Debug for Callbacks<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("on_success", &self.on_ok.is_some())
            .field("on_error", &self.on_err.is_some())
            .finish()
    }
}

impl<V> Callbacks<V> {
    /// No callbacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called with the value when the call succeeds (Python's `callback`).
    /// It runs in a thread of the pool: keep it short.
    pub fn on_success(mut self, f: impl FnOnce(&V) + Send + 'static) -> Self {
        self.on_ok = Some(Box::new(f));
        self
    }

    /// Called with the error when the call fails (Python's `error_callback`).
    pub fn on_error(mut self, f: impl FnOnce(&Error) + Send + 'static) -> Self {
        self.on_err = Some(Box::new(f));
        self
    }
}

/// The outcome of one asynchronous call, filled once.
pub(crate) struct Outcome<V> {
    slot: Mutex<Option<std::result::Result<V, TaskErr>>>,
    ready: AtomicBool,
    ok: AtomicBool,
    callbacks: Mutex<Option<Callbacks<V>>>,
    /// The task of a future awaiting this outcome (feature `tokio`).
    waker: Mutex<Option<std::task::Waker>>,
}

impl<V> Outcome<V> {
    pub(crate) fn new(callbacks: Callbacks<V>) -> Arc<Outcome<V>> {
        Arc::new(Outcome {
            slot: Mutex::new(None),
            ready: AtomicBool::new(false),
            ok: AtomicBool::new(false),
            callbacks: Mutex::new(Some(callbacks)),
            waker: Mutex::new(None),
        })
    }

    fn set(&self, r: std::result::Result<V, TaskErr>) {
        if let Some(cb) = lock(&self.callbacks).take() {
            // A panicking callback must not take the pool's driver down.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &r {
                Ok(v) => {
                    if let Some(f) = cb.on_ok {
                        f(v)
                    }
                }
                Err(e) => {
                    if let Some(f) = cb.on_err {
                        f(&e.to_error())
                    }
                }
            }));
        }
        self.ok.store(r.is_ok(), Ordering::Release);
        *lock(&self.slot) = Some(r);
        self.ready.store(true, Ordering::Release);
        if let Some(w) = lock(&self.waker).take() {
            w.wake();
        }
    }

    /// Registers the task to wake when the outcome is set (the caller checks
    /// [`is_ready`](Self::is_ready) again afterwards).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn set_waker(&self, w: &std::task::Waker) {
        let mut slot = lock(&self.waker);
        if !slot.as_ref().is_some_and(|old| old.will_wake(w)) {
            *slot = Some(w.clone());
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether the call succeeded (meaningful once ready).
    pub(crate) fn succeeded(&self) -> bool {
        self.ok.load(Ordering::Acquire)
    }

    /// Moves the value out, or returns the error (every time).
    pub(crate) fn take(&self) -> Result<V> {
        let mut slot = lock(&self.slot);
        match slot.as_ref() {
            Some(Err(e)) => Err(e.to_error()),
            Some(Ok(_)) => match slot.take() {
                Some(Ok(v)) => Ok(v),
                _ => unreachable!("checked above"),
            },
            None => Err(Error::AlreadyTaken),
        }
    }
}

struct Parts<R> {
    /// The results of chunks `0..next`, in order (decoded straight here
    /// when a chunk arrives in order, so most results are never copied).
    all: Vec<R>,
    next: usize,
    /// Chunks that arrived before an earlier one, until it does.
    chunks: Vec<Option<Vec<R>>>,
    /// Emptied buffers of such chunks, for the next ones.
    spare: Vec<Vec<R>>,
    completed: usize,
    /// The number of batches, once all are submitted.
    sealed: Option<usize>,
    total: usize,
    err: Option<(usize, TaskErr)>,
}

/// Collects the batches of one call (`apply`: one batch of one task; `map`:
/// its chunks) into one value. Batches may complete while later ones are
/// still being encoded; [`seal`](Collect::seal) says how many there are.
pub(crate) struct Collect<R, V> {
    parts: Mutex<Parts<R>>,
    out: Arc<Outcome<V>>,
    finish: fn(Vec<R>) -> V,
    progress: Progress,
}

impl<R, V> Collect<R, V> {
    pub(crate) fn new(
        out: Arc<Outcome<V>>,
        finish: fn(Vec<R>) -> V,
        progress: Progress,
    ) -> Arc<Self> {
        Arc::new(Collect {
            parts: Mutex::new(Parts {
                all: Vec::new(),
                next: 0,
                chunks: Vec::new(),
                spare: Vec::new(),
                completed: 0,
                sealed: None,
                total: 0,
                err: None,
            }),
            out,
            finish,
            progress,
        })
    }

    /// Room for `n` results (the expected total), made up front.
    pub(crate) fn reserve(&self, n: usize) {
        lock(&self.parts).all.reserve(n);
    }

    /// All `batches` are submitted: completes the call if they are all done.
    pub(crate) fn seal(&self, batches: usize) {
        let mut p = lock(&self.parts);
        p.sealed = Some(batches);
        self.maybe_finish(p);
    }

    fn maybe_finish(&self, mut p: MutexGuard<'_, Parts<R>>) {
        if p.sealed != Some(p.completed) {
            return;
        }
        let result = match p.err.take() {
            Some((_, e)) => Err(e),
            None => {
                let mut all = std::mem::take(&mut p.all);
                all.reserve(p.total - all.len());
                let next = p.next;
                for c in p.chunks.iter_mut().skip(next) {
                    all.extend(c.take().unwrap_or_default());
                }
                Ok((self.finish)(all))
            }
        };
        p.chunks = Vec::new();
        p.spare = Vec::new();
        // Never finish twice.
        p.sealed = None;
        drop(p);
        self.progress.finish();
        self.out.set(result);
    }
}

impl<R, V> Sink for Collect<R, V>
where
    R: DeserializeOwned + Send,
    V: Send,
{
    fn complete(
        &self,
        index: usize,
        count: u32,
        pid: i32,
        outcome: std::result::Result<&[u8], &Fail>,
    ) {
        let mut err = None;
        let mut p = lock(&self.parts);
        let parts = &mut *p;
        // The next chunk in order (with no error so far) goes straight to
        // its place; a later one waits in `chunks`.
        let direct = index == parts.next && parts.err.is_none();
        let mut vals = Vec::new();
        let dest = if direct {
            &mut parts.all
        } else {
            // A buffer an earlier waiting chunk left (no fresh allocation).
            vals = parts.spare.pop().unwrap_or_default();
            vals.reserve(count as usize);
            &mut vals
        };
        let before = dest.len();
        decode_items::<R>(outcome, count, pid, |r| match r {
            Ok(v) => dest.push(v),
            Err(e) => {
                if err.is_none() {
                    err = Some(e)
                }
            }
        });
        parts.total += dest.len() - before;
        if direct {
            parts.next += 1;
            // Chunks that were waiting for this one follow it.
            while let Some(mut c) = parts.chunks.get_mut(parts.next).and_then(Option::take) {
                parts.all.append(&mut c);
                parts.next += 1;
                if parts.spare.len() < 2 {
                    parts.spare.push(c);
                }
            }
        } else {
            if parts.chunks.len() <= index {
                parts.chunks.resize_with(index + 1, || None);
            }
            parts.chunks[index] = Some(vals);
        }
        self.progress.inc(count as u64);
        if let Some(e) = err {
            if !matches!(&p.err, Some((i, _)) if *i <= index) {
                p.err = Some((index, e));
            }
        }
        p.completed += 1;
        self.maybe_finish(p);
    }
}

/// The pending result of an asynchronous call (Python's `AsyncResult`), from
/// [`Pool::apply_async`](super::Pool::apply_async) or
/// [`Pool::map_async`](super::Pool::map_async).
///
/// It never waits forever for a dead worker: a task whose worker died fails
/// with [`Error::WorkerDied`], and every task not done when the pool is
/// terminated fails with [`Error::BrokenPool`].
pub struct AsyncResult<V> {
    pub(crate) out: Arc<Outcome<V>>,
    pub(crate) shared: Arc<dyn Engine>,
}

impl<V> fmt::Debug for AsyncResult<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<V> AsyncResult<V> {
    /// Whether the call has completed (Python's `ready()`).
    pub fn ready(&self) -> bool {
        self.out.is_ready()
    }

    /// Whether the call completed without error (Python's `successful()`);
    /// [`Error::NotReady`] if it is not ready yet, as Python's `ValueError`.
    pub fn successful(&self) -> Result<bool> {
        if !self.ready() {
            return Err(Error::NotReady);
        }
        Ok(self.out.succeeded())
    }

    /// Waits until the call completes.
    pub fn wait(&self) -> Result<()> {
        self.wait_deadline(None).map(|_| ())
    }

    /// Waits at most `timeout`; `true` if the call completed.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_deadline(crate::sys::deadline_after(Some(timeout)))
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<bool> {
        let out = &self.out;
        self.shared.wait_until(&|| out.is_ready(), deadline)
    }

    /// Waits for the call and returns its value, or the task's error: a panic
    /// in the task is [`Error::ProcessFailed`] (message and the worker's
    /// backtrace), a dead worker [`Error::WorkerDied`], a terminated pool
    /// [`Error::BrokenPool`]. The value is moved out: a second `get` after a
    /// success returns [`Error::AlreadyTaken`]; an error is returned every time.
    pub fn get(&self) -> Result<V> {
        self.wait()?;
        self.take()
    }

    /// [`get`](Self::get) with a timeout: [`Error::Timeout`] if the call is
    /// still running when it passes (it can be waited for again).
    pub fn get_timeout(&self, timeout: Duration) -> Result<V> {
        if !self.wait_timeout(timeout)? {
            return Err(Error::Timeout);
        }
        self.take()
    }

    pub(crate) fn take(&self) -> Result<V> {
        self.out.take()
    }
}
