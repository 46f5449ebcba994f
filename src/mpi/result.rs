//! Results of an [`MpiPool`](super::MpiPool): the pending result of
//! `apply_async` and the `imap` iterators.

use super::driver::{Batch, Shared};
use super::runner::task_frame;
use crate::error::{Error, Result};
use crate::pool::api::backend::{decode_items, Fail, Outcome, Sink, TaskErr};
use crate::pool::PendingResult;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The pending result of [`MpiPool::apply_async`](super::MpiPool::apply_async)
/// (Python's `AsyncResult`).
///
/// The pool does its MPI work in the threads that call it: answers are
/// collected while some thread waits on this pool (`get`, `wait`, a `map`,
/// an `imap` iterator).
pub struct MpiAsyncResult<V> {
    pub(crate) out: Arc<Outcome<V>>,
    pub(crate) shared: Arc<Shared>,
}

impl<V> fmt::Debug for MpiAsyncResult<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpiAsyncResult")
            .field("ready", &self.out.is_ready())
            .finish()
    }
}

impl<V> MpiAsyncResult<V> {
    /// Whether the call has completed (as far as answers were collected).
    pub fn ready(&self) -> bool {
        self.out.is_ready()
    }

    /// Whether the call completed without error; [`Error::NotReady`] if it is
    /// not ready yet.
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
        self.wait_deadline(Instant::now().checked_add(timeout))
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<bool> {
        let out = &self.out;
        self.shared.wait_until(&|| out.is_ready(), deadline)
    }

    /// Waits for the call and returns its value or the task's error (a panic
    /// is [`Error::ProcessFailed`] with the message and the worker rank's
    /// backtrace; its `pid` is the worker's pid on its host).
    pub fn get(&self) -> Result<V> {
        self.wait()?;
        self.out.take()
    }

    /// [`get`](Self::get) with a timeout: [`Error::Timeout`] if the call is
    /// still running when it passes.
    pub fn get_timeout(&self, timeout: Duration) -> Result<V> {
        if !self.wait_timeout(timeout)? {
            return Err(Error::Timeout);
        }
        self.out.take()
    }
}

impl<V> PendingResult<V> for MpiAsyncResult<V> {
    fn ready(&self) -> bool {
        MpiAsyncResult::ready(self)
    }
    fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        MpiAsyncResult::wait_timeout(self, timeout)
    }
    fn get(&self) -> Result<V> {
        MpiAsyncResult::get(self)
    }
    fn get_timeout(&self, timeout: Duration) -> Result<V> {
        MpiAsyncResult::get_timeout(self, timeout)
    }
}

type Answer<R> = std::result::Result<R, TaskErr>;

struct Received<R> {
    batches: BTreeMap<usize, Vec<Answer<R>>>,
    queue: VecDeque<Answer<R>>,
}

/// Receives the batches of one imap call.
struct Stream<R> {
    ordered: bool,
    inner: Mutex<Received<R>>,
    completions: AtomicU64,
}

impl<R: DeserializeOwned + Send> Sink for Stream<R> {
    fn complete(
        &self,
        index: usize,
        count: u32,
        pid: i32,
        outcome: std::result::Result<&[u8], &Fail>,
    ) {
        let mut vals = Vec::with_capacity(count as usize);
        decode_items::<R>(outcome, count, pid, |r| vals.push(r));
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if self.ordered {
            inner.batches.insert(index, vals);
        } else {
            inner.queue.extend(vals);
        }
        drop(inner);
        self.completions.fetch_add(1, Ordering::Release);
    }
}

/// The lazy iterator of [`MpiPool::imap`](super::MpiPool::imap) and
/// [`MpiPool::imap_unordered`](super::MpiPool::imap_unordered): takes input
/// only as results are consumed (a bounded look-ahead keeps the ranks busy)
/// and yields each task's `Result`, in input order for `imap` and as the
/// ranks finish for `imap_unordered`. A failed task yields its error and
/// the iteration goes on.
pub struct MpiIMap<I: Iterator, R> {
    shared: Arc<Shared>,
    input: std::iter::Fuse<I>,
    runner: i64,
    chunksize: usize,
    stream: Arc<Stream<R>>,
    current: VecDeque<Answer<R>>,
    next_batch: usize,
    submitted_batches: usize,
    submitted: usize,
    yielded: usize,
    lookahead: usize,
    stopped: bool,
}

impl<I: Iterator, R> fmt::Debug for MpiIMap<I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpiIMap")
            .field("ordered", &self.stream.ordered)
            .field("chunksize", &self.chunksize)
            .field("submitted", &self.submitted)
            .field("yielded", &self.yielded)
            .finish()
    }
}

impl<I, R> MpiIMap<I, R>
where
    I: Iterator,
    I::Item: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    pub(crate) fn new(
        shared: Arc<Shared>,
        input: I,
        runner: i64,
        chunksize: usize,
        ordered: bool,
    ) -> Self {
        let chunksize = chunksize.max(1);
        let workers = shared.ranks.len().max(1);
        MpiIMap {
            lookahead: (chunksize * workers * 4).max(512 * workers),
            shared,
            input: input.fuse(),
            runner,
            chunksize,
            stream: Arc::new(Stream {
                ordered,
                inner: Mutex::new(Received {
                    batches: BTreeMap::new(),
                    queue: VecDeque::new(),
                }),
                completions: AtomicU64::new(0),
            }),
            current: VecDeque::new(),
            next_batch: 0,
            submitted_batches: 0,
            submitted: 0,
            yielded: 0,
            stopped: false,
        }
    }

    fn top_up(&mut self) -> Result<()> {
        if self.stopped || self.submitted - self.yielded > self.lookahead / 2 {
            return Ok(());
        }
        let mut batches = Vec::new();
        while self.submitted - self.yielded < self.lookahead {
            let (frame, count) = task_frame(self.runner, self.input.by_ref().take(self.chunksize))?;
            if count == 0 {
                break;
            }
            batches.push(Batch {
                frame,
                count,
                index: self.submitted_batches,
                sink: self.stream.clone(),
            });
            self.submitted_batches += 1;
            self.submitted += count as usize;
        }
        if batches.is_empty() {
            return Ok(());
        }
        self.shared.submit(batches)
    }

    fn pop(&mut self) -> Option<Answer<R>> {
        if let Some(v) = self.current.pop_front() {
            return Some(v);
        }
        let mut inner = self.stream.inner.lock().unwrap_or_else(|e| e.into_inner());
        if self.stream.ordered {
            let b = inner.batches.remove(&self.next_batch)?;
            self.next_batch += 1;
            self.current = b.into();
        } else {
            std::mem::swap(&mut self.current, &mut inner.queue);
        }
        drop(inner);
        self.current.pop_front()
    }
}

impl<I, R> Iterator for MpiIMap<I, R>
where
    I: Iterator,
    I::Item: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            if let Err(e) = self.top_up() {
                // Stop taking input; what was sent is still yielded.
                self.stopped = true;
                return Some(Err(e));
            }
            if let Some(r) = self.pop() {
                self.yielded += 1;
                return Some(r.map_err(|e| e.to_error()));
            }
            if self.submitted == self.yielded {
                return None;
            }
            let seen = self.stream.completions.load(Ordering::Acquire);
            let stream = &self.stream;
            if let Err(e) = self
                .shared
                .wait_until(&|| stream.completions.load(Ordering::Acquire) != seen, None)
            {
                return Some(Err(e));
            }
        }
    }
}
