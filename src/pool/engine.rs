//! What every pool shares above its transport: what the call's results
//! ([`AsyncResult`](super::AsyncResult), [`IMap`](super::IMap)) need from
//! the machinery that runs them, and how a chunk of tasks is encoded.
//!
//! [`Pool`](super::Pool) (worker processes on this machine) and, with the
//! `mpi` feature, `MpiPool` (MPI ranks) each implement [`Engine`] (queue
//! chunks, drive until a condition holds) and [`Frames`] (the encoding of a
//! chunk of tasks for their workers); `submit.rs` does the rest for both,
//! and both hand out the same result types.

use super::dispatch::{Batch, Shared};
use super::progress::Progress;
use super::sink::Sink;
use super::worker::{BatchOf, MapOf};
use crate::error::Result;
use crate::process::{fnref, TaskFn};
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

    /// The runner of `f(a, b, ...)` calls (apply, starmap): the name of the
    /// function the workers run for them.
    fn call_runner<F, A, R>() -> i64
    where
        F: TaskFn<A, R>,
        A: DeserializeOwned,
        R: Serialize;

    /// The runner of `f(item)` calls (map, imap).
    fn map_runner<F, T, R>() -> i64
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        T: DeserializeOwned,
        R: Serialize;
}

/// What a pool gives the calls of [`TaskPool`](super::TaskPool), which are
/// written once, over this, for every pool (`api.rs`).
pub(crate) trait Backend {
    /// How its workers read a chunk of tasks.
    type Frames: Frames;

    /// The number of workers.
    fn processes(&self) -> usize;

    /// What runs its tasks; [`Error::BrokenPool`](crate::Error::BrokenPool)
    /// (or the error that broke it) once the pool takes no more.
    fn engine(&self) -> Result<Arc<dyn Engine>>;

    /// The most tasks, and bytes, one message of a map holds.
    fn limits(&self) -> (usize, usize);

    /// The progress bar of a map of `len` items (if known).
    fn progress(&self, len: Option<usize>) -> Progress;
}

/// A map's message stops taking tasks once it holds this many bytes, and
/// messages are handed to the workers once this many bytes wait: large
/// items (1 MiB byte payloads) then reach a worker while the next ones are
/// still encoded, instead of after the whole input.
pub(crate) const BATCH_BYTES: usize = 1 << 20;

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

    fn call_runner<F, A, R>() -> i64
    where
        F: TaskFn<A, R>,
        A: DeserializeOwned,
        R: Serialize,
    {
        fnref::name(BatchOf::<F, A, R>::DESC)
    }

    fn map_runner<F, T, R>() -> i64
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        T: DeserializeOwned,
        R: Serialize,
    {
        fnref::name(MapOf::<F, T, R>::DESC)
    }
}
