//! How a call becomes chunks of encoded tasks for an [`Engine`], and the
//! result the caller waits on: the same for every pool (see `engine.rs`).

use super::engine::{Chunk, Engine, Frames, BATCH_BYTES};
use super::progress::Progress;
use super::result::{Collect, Outcome};
use super::{default_chunksize, AsyncResult, Callbacks};
use crate::error::Result;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;

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
