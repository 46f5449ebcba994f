//! What every pool shares above its transport: how a call becomes chunks of
//! encoded tasks, and what the call's results ([`AsyncResult`], [`IMap`])
//! need from the machinery that runs them.
//!
//! [`Pool`](super::Pool) (worker processes on this machine) and, with the
//! `mpi` feature, `MpiPool` (MPI ranks) each implement [`Engine`] (queue
//! chunks, drive until a condition holds) and [`Frames`] (the encoding of a
//! chunk of tasks for their workers); [`submit_one`] and [`submit_map`] do
//! the rest for both, and both hand out the same [`AsyncResult`] and
//! [`IMap`] types.

use super::dispatch::{Batch, Shared};
use super::progress::Progress;
use super::result::{Collect, Outcome, Sink};
use super::{default_chunksize, AsyncResult, Callbacks};
use crate::error::Result;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;
#[cfg(feature = "tokio")]
use std::time::Duration;
use std::time::Instant;

/// Calls and maps send their tasks as one message per this many at most, so
/// workers start early and results are decoded while others still run.
pub(crate) const MAX_CHUNK: usize = 64 << 10;

/// One chunk of encoded tasks and where its answers go.
pub(crate) struct Chunk {
    /// The tasks, as the engine's [`Frames`] encoded them.
    pub(crate) frame: Vec<u8>,
    /// The rest of `frame`, sent from where it lies: the bytes of its last
    /// task's large byte payload (see [`Frames::encode_split`]).
    pub(crate) tail: Option<Vec<u8>>,
    /// How many tasks `frame` holds.
    pub(crate) count: u32,
    /// Its place in the call (the sink orders answers by it).
    pub(crate) index: usize,
    pub(crate) sink: Arc<dyn Sink>,
}

/// What runs the tasks of a pool: queues chunks, delivers their answers to
/// the chunks' sinks, and drives the workers for a thread that waits.
pub(crate) trait Engine: Send + Sync {
    /// The number of workers.
    fn workers(&self) -> usize;

    /// Queues `chunks` (in order) and sends what the workers can take.
    fn submit(&self, chunks: Vec<Chunk>) -> Result<()>;

    /// Waits until `done()` holds or the deadline passes (`Ok(false)`),
    /// driving the workers if nothing else does.
    fn wait_until(&self, done: &dyn Fn() -> bool, deadline: Option<Instant>) -> Result<bool>;

    /// Drives the workers from the calling thread for at most `budget`, if
    /// no other thread does; returns `cond()` (a future's short spin).
    #[cfg(feature = "tokio")]
    fn drive_for(&self, cond: &dyn Fn() -> bool, budget: Duration) -> Result<bool>;

    /// A future waits for a result: make sure something delivers it (and
    /// wakes the future) while no thread waits.
    #[cfg(feature = "tokio")]
    fn wake_for_async(&self);
}

/// How an engine's workers read a chunk of tasks: the runner (a function's
/// name in the binary) and the encoded items.
pub(crate) trait Frames {
    /// Encodes every item of `items` into one frame: (frame, item count).
    fn encode<X: Serialize>(runner: i64, items: impl Iterator<Item = X>) -> Result<(Vec<u8>, u32)>;

    /// [`encode`](Self::encode), taking no more items once the frame holds
    /// `max_bytes` (the rest stay in `items`). By default, no byte limit.
    fn encode_upto<X: Serialize>(
        runner: i64,
        items: impl Iterator<Item = X>,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, u32)> {
        let _ = max_bytes;
        Self::encode(runner, items)
    }

    /// [`encode_upto`](Self::encode_upto), where the last task's large
    /// byte payload (an item that is a `Vec<u8>`) may stay out of the frame:
    /// then it is the frame's tail, written after it without being copied
    /// into it. By default, no tail.
    fn encode_split<X: Serialize>(
        runner: i64,
        items: impl Iterator<Item = X>,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>, u32)> {
        let (frame, count) = Self::encode_upto(runner, items, max_bytes)?;
        Ok((frame, None, count))
    }
}

/// A map's message stops taking tasks once it holds this many bytes, and
/// messages are handed to the workers once this many bytes wait: large
/// items (1 MiB byte payloads) then reach a worker while the next ones are
/// still encoded, instead of after the whole input.
pub(crate) const BATCH_BYTES: usize = 1 << 20;

fn only<R>(v: Vec<R>) -> R {
    v.into_iter().next().expect("one task, one result")
}

fn all<R>(v: Vec<R>) -> Vec<R> {
    v
}

/// Sends one call of the runner `runner` with `args` (`apply_async`).
pub(crate) fn submit_one<Fr: Frames, A: Serialize, R>(
    engine: &Arc<dyn Engine>,
    runner: i64,
    args: &A,
    callbacks: Callbacks<R>,
) -> Result<AsyncResult<R>>
where
    R: DeserializeOwned + Send + 'static,
{
    let (frame, count) = Fr::encode(runner, std::iter::once(args))?;
    let out = Outcome::new(callbacks);
    let sink = Collect::<R, R>::new(out.clone(), only::<R>, Progress::default());
    engine.submit(vec![Chunk {
        frame,
        tail: None,
        count,
        index: 0,
        sink: sink.clone(),
    }])?;
    sink.seal(1);
    Ok(AsyncResult {
        out,
        shared: engine.clone(),
    })
}

/// Sends a map of the runner `runner` over `items` in chunks of `chunksize`
/// (`None`: CPython's default, from the number of items: an iterator that
/// knows it exactly is streamed, any other is collected first, as Python
/// does), each chunk at most `max_chunk` tasks. `progress` makes the
/// call's progress bar from the number of items, if known.
#[allow(clippy::too_many_arguments)]
pub(crate) fn submit_map<Fr: Frames, X: Serialize, R>(
    engine: &Arc<dyn Engine>,
    runner: i64,
    items: impl Iterator<Item = X>,
    chunksize: Option<usize>,
    (max_chunk, max_bytes): (usize, usize),
    callbacks: Callbacks<Vec<R>>,
    progress: impl FnOnce(Option<usize>) -> Progress,
) -> Result<AsyncResult<Vec<R>>>
where
    R: DeserializeOwned + Send + 'static,
{
    let (lo, hi) = items.size_hint();
    let workers = engine.workers();
    let exact = hi.filter(|&h| h == lo);
    match (chunksize, exact) {
        (Some(cs), len) => {
            let sink = map_sink(callbacks, progress(len), len);
            stream::<Fr, X, R>(
                engine,
                runner,
                items,
                (cs.clamp(1, max_chunk), max_bytes),
                sink,
            )
        }
        (None, Some(n)) => {
            let sink = map_sink(callbacks, progress(Some(n)), Some(n));
            let cs = default_chunksize(n, workers).min(max_chunk);
            stream::<Fr, X, R>(engine, runner, items, (cs, max_bytes), sink)
        }
        (None, None) => {
            let all: Vec<X> = items.collect();
            let n = all.len();
            let sink = map_sink(callbacks, progress(Some(n)), Some(n));
            let cs = default_chunksize(n, workers).min(max_chunk);
            stream::<Fr, X, R>(engine, runner, all.into_iter(), (cs, max_bytes), sink)
        }
    }
}

type MapSink<R> = (Arc<Outcome<Vec<R>>>, Arc<Collect<R, Vec<R>>>);

fn map_sink<R>(callbacks: Callbacks<Vec<R>>, progress: Progress, len: Option<usize>) -> MapSink<R> {
    let out = Outcome::new(callbacks);
    let sink = Collect::<R, Vec<R>>::new(out.clone(), all::<R>, progress);
    if let Some(n) = len {
        sink.reserve(n);
    }
    (out, sink)
}

fn stream<Fr: Frames, X: Serialize, R>(
    engine: &Arc<dyn Engine>,
    runner: i64,
    mut items: impl Iterator<Item = X>,
    (cs, max_bytes): (usize, usize),
    (out, sink): MapSink<R>,
) -> Result<AsyncResult<Vec<R>>>
where
    R: DeserializeOwned + Send + 'static,
{
    let mut group = Vec::new();
    let (mut group_tasks, mut group_bytes) = (0, 0);
    let mut index = 0;
    loop {
        let (frame, tail, count) = Fr::encode_split(runner, items.by_ref().take(cs), max_bytes)?;
        if count == 0 {
            break;
        }
        group_bytes += frame.len() + tail.as_ref().map_or(0, Vec::len);
        group.push(Chunk {
            frame,
            tail,
            count,
            index,
            sink: sink.clone(),
        });
        index += 1;
        group_tasks += count as usize;
        // Hand over work as it is encoded, so the workers start early.
        if group_tasks >= 4096 || group.len() >= 256 || group_bytes >= BATCH_BYTES {
            engine.submit(std::mem::take(&mut group))?;
            (group_tasks, group_bytes) = (0, 0);
        }
    }
    engine.submit(group)?;
    sink.seal(index);
    Ok(AsyncResult {
        out,
        shared: engine.clone(),
    })
}

/// The local pool's engine: its dispatcher.
impl Engine for Shared {
    fn workers(&self) -> usize {
        self.config.processes
    }

    fn submit(&self, chunks: Vec<Chunk>) -> Result<()> {
        let batches = chunks
            .into_iter()
            .map(|c| Batch::new((c.frame, c.tail), c.count, c.index, c.sink))
            .collect();
        Shared::submit(self, batches)
    }

    fn wait_until(&self, done: &dyn Fn() -> bool, deadline: Option<Instant>) -> Result<bool> {
        Shared::wait_until(self, done, deadline)
    }

    #[cfg(feature = "tokio")]
    fn drive_for(&self, cond: &dyn Fn() -> bool, budget: Duration) -> Result<bool> {
        Shared::drive_for(self, cond, budget)
    }

    #[cfg(feature = "tokio")]
    fn wake_for_async(&self) {
        Shared::wake_for_async(self)
    }
}

/// The local pool's task frames.
pub(crate) struct PoolFrames;

impl Frames for PoolFrames {
    fn encode<X: Serialize>(runner: i64, items: impl Iterator<Item = X>) -> Result<(Vec<u8>, u32)> {
        super::task_frame(runner, items)
    }

    fn encode_upto<X: Serialize>(
        runner: i64,
        items: impl Iterator<Item = X>,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, u32)> {
        let (frame, _, count) = super::task_frame_split(runner, items, max_bytes, usize::MAX)?;
        Ok((frame, count))
    }

    fn encode_split<X: Serialize>(
        runner: i64,
        items: impl Iterator<Item = X>,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>, u32)> {
        super::task_frame_split(runner, items, max_bytes, super::TAIL_MIN)
    }
}
