//! The imap iterators: [`IMap`] and the [`Stream`] that receives its
//! batches, in order or as they finish.

use super::engine::{Chunk, Engine, Frames};
use super::progress::Progress;
use super::result::{decode_items, Fail, Sink, TaskErr};
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct StreamInner<R> {
    batches: BTreeMap<usize, Vec<std::result::Result<R, TaskErr>>>,
    queue: VecDeque<std::result::Result<R, TaskErr>>,
}

/// Receives the batches of an imap call.
pub(crate) struct Stream<R> {
    ordered: bool,
    inner: Mutex<StreamInner<R>>,
    pub(crate) completions: AtomicU64,
    /// The task of a `Stream` consumer to wake on each completion (feature `tokio`).
    pub(crate) waker: Mutex<Option<std::task::Waker>>,
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
        let mut inner = lock(&self.inner);
        if self.ordered {
            inner.batches.insert(index, vals);
        } else {
            inner.queue.extend(vals);
        }
        drop(inner);
        self.completions.fetch_add(1, Ordering::Release);
        if let Some(w) = lock(&self.waker).take() {
            w.wake();
        }
    }
}

/// The lazy iterator of [`Pool::imap`](super::Pool::imap) and
/// [`Pool::imap_unordered`](super::Pool::imap_unordered): it takes items
/// from the input only as results are consumed (a bounded look-ahead keeps
/// the workers busy), and yields each task's `Result` — in input order for
/// `imap`, in completion order for `imap_unordered`.
///
/// A task that panicked yields [`Error::ProcessFailed`]; tasks held by a
/// worker that died yield [`Error::WorkerDied`]; the iteration goes on with
/// the other tasks either way. Dropping the iterator early leaves the tasks
/// already sent to finish in the background; their results are discarded.
pub struct IMap<I: Iterator, R> {
    pub(crate) shared: Arc<dyn Engine>,
    pub(crate) input: std::iter::Fuse<I>,
    pub(crate) runner: i64,
    /// Encodes the next chunk of the input, as the engine's workers read it.
    pub(crate) encode: EncodeChunk<I>,
    pub(crate) chunksize: usize,
    pub(crate) stream: Arc<Stream<R>>,
    pub(crate) current: VecDeque<std::result::Result<R, TaskErr>>,
    pub(crate) next_batch: usize,
    pub(crate) submitted_batches: usize,
    pub(crate) submitted: usize,
    pub(crate) yielded: usize,
    pub(crate) lookahead: usize,
    pub(crate) error: Option<Error>,
    pub(crate) stopped: bool,
    pub(crate) progress: Progress,
}

/// Encodes up to `n` items of the input into one frame for the runner.
pub(crate) type EncodeChunk<I> =
    fn(runner: i64, input: &mut std::iter::Fuse<I>, n: usize) -> Result<(Vec<u8>, u32)>;

fn encode_chunk<Fr: Frames, I>(
    runner: i64,
    input: &mut std::iter::Fuse<I>,
    n: usize,
) -> Result<(Vec<u8>, u32)>
where
    I: Iterator,
    I::Item: Serialize,
{
    Fr::encode(runner, input.by_ref().take(n))
}

impl<I: Iterator, R> fmt::Debug for IMap<I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMap")
            .field("ordered", &self.stream.ordered)
            .field("chunksize", &self.chunksize)
            .field("submitted", &self.submitted)
            .field("yielded", &self.yielded)
            .finish()
    }
}

impl<I, R> IMap<I, R>
where
    I: Iterator,
    I::Item: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    /// The iterator of a map of `runner` over `input`, in chunks of
    /// `chunksize` encoded by `Fr`, in input order if `ordered`.
    pub(crate) fn new<Fr: Frames>(
        shared: Arc<dyn Engine>,
        input: I,
        runner: i64,
        chunksize: usize,
        ordered: bool,
        progress: Progress,
    ) -> Self {
        let chunksize = chunksize.max(1);
        let procs = shared.workers().max(1);
        let lookahead = (chunksize * procs * 4).max(512 * procs);
        IMap {
            shared,
            input: input.fuse(),
            runner,
            encode: encode_chunk::<Fr, I>,
            chunksize,
            stream: Arc::new(Stream {
                ordered,
                inner: Mutex::new(StreamInner {
                    batches: BTreeMap::new(),
                    queue: VecDeque::new(),
                }),
                completions: AtomicU64::new(0),
                waker: Mutex::new(None),
            }),
            current: VecDeque::new(),
            next_batch: 0,
            submitted_batches: 0,
            submitted: 0,
            yielded: 0,
            lookahead,
            error: None,
            stopped: false,
            progress,
        }
    }

    pub(crate) fn top_up(&mut self) -> Result<()> {
        if self.stopped || self.submitted - self.yielded > self.lookahead / 2 {
            return Ok(());
        }
        let mut batches = Vec::new();
        while self.submitted - self.yielded < self.lookahead {
            let (frame, count) = (self.encode)(self.runner, &mut self.input, self.chunksize)?;
            if count == 0 {
                break;
            }
            batches.push(Chunk {
                frame,
                tail: None,
                count,
                index: self.submitted_batches,
                sink: self.stream.clone(),
            });
            self.submitted_batches += 1;
            self.submitted += count as usize;
        }
        self.shared.submit(batches)
    }

    pub(crate) fn pop(&mut self) -> Option<std::result::Result<R, TaskErr>> {
        if let Some(v) = self.current.pop_front() {
            return Some(v);
        }
        let mut inner = lock(&self.stream.inner);
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

impl<I, R> Iterator for IMap<I, R>
where
    I: Iterator,
    I::Item: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        loop {
            if let Err(e) = self.top_up() {
                // Stop taking input; what was sent is still yielded.
                self.stopped = true;
                return Some(Err(e));
            }
            if let Some(r) = self.pop() {
                self.yielded += 1;
                self.progress.inc(1);
                return Some(r.map_err(|e| e.to_error()));
            }
            if self.submitted == self.yielded {
                self.progress.finish();
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
