//! Tasks on a worker rank: how rank 0 names a task function, and the
//! runners that call it.
//!
//! A task names its function as [`Pool`](crate::Pool) does: by the name of
//! the descriptor of a runner monomorphized for the function's type
//! ([`fnref`]), which the worker validates before calling it; the runner
//! rebuilds the function from its type alone. The runners
//! here write their answers into a plain buffer (the local pool's write
//! into its shared-memory journal, which does not span hosts), in the
//! format the pool's result sinks decode: per task, tag 0 and the result,
//! 1 and the panic's (message, backtrace), or 2 and why the result could
//! not be encoded.
//!
//! Messages between the ranks are sequences of frames: `u32` length (of
//! what follows), a kind byte, the payload.
#![allow(unsafe_code)]

use crate::error::Result;
use crate::pool::api::backend::{fast_put, take_panic, Reader};
use crate::pool::TaskFn;
use crate::process::fnref;
use serde::{de::DeserializeOwned, Serialize};

/// rank 0 → worker: `i64` runner offset, `u32` count, the items.
pub(crate) const TASKS: u8 = 1;
/// worker → rank 0: the answers to one `TASKS` frame.
pub(crate) const RESULTS: u8 = 2;
/// worker → rank 0: the `TASKS` frame could not be run at all (reason).
pub(crate) const FAILED: u8 = 3;

/// A batch runner: decodes `count` items from `input` and appends one answer
/// per item to `out`; `Err` if the items cannot be decoded.
pub(crate) type Runner = fn(input: &[u8], count: u32, out: &mut Vec<u8>) -> Result<(), String>;

// SAFETY: a function pointer type with a kind of its own.
unsafe impl fnref::FnKind for Runner {
    const KIND: u64 = fnref::kind::MPI_TASK_RUNNER;
}

/// The named descriptor of `run_call::<F, A, R>`.
struct CallOf<F, A, R>(std::marker::PhantomData<(F, A, R)>);

impl<F, A, R> CallOf<F, A, R>
where
    F: TaskFn<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    /// Named only by `MpiPool` methods that were handed a value of `F`.
    const DESC: &'static fnref::FnDesc<Runner> = &fnref::FnDesc::new(run_call::<F, A, R>);
}

/// The named descriptor of `run_map::<F, T, R>`.
struct MapOf<F, T, R>(std::marker::PhantomData<(F, T, R)>);

impl<F, T, R> MapOf<F, T, R>
where
    F: Fn(T) -> R + Copy + Send + Sync + 'static,
    T: DeserializeOwned,
    R: Serialize,
{
    /// Named only by `MpiPool` methods that were handed a value of `F`.
    const DESC: &'static fnref::FnDesc<Runner> = &fnref::FnDesc::new(run_map::<F, T, R>);
}

/// Starts a frame of `kind`; returns its start for [`end`].
pub(crate) fn begin(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, kind]);
    start
}

/// Writes the length of the frame begun at `start`.
pub(crate) fn end(out: &mut [u8], start: usize) {
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// The frame at the front of `buf`: (kind, payload, total length); `None`
/// if there is none or it is malformed (the bytes come from another
/// process: every length is checked).
pub(crate) fn next(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let total = len.checked_add(4)?;
    if len == 0 || buf.len() < total {
        return None;
    }
    Some((buf[4], &buf[5..total], total))
}

/// Encodes a `TASKS` frame of `items` for the runner at `runner`.
pub(crate) fn task_frame<X: Serialize>(
    runner: i64,
    items: impl Iterator<Item = X>,
) -> Result<(Vec<u8>, u32)> {
    let hint = items.size_hint().0.min(1 << 20);
    let mut f = Vec::with_capacity(17 + hint * (std::mem::size_of::<X>() + 2));
    let start = begin(&mut f, TASKS);
    f.extend_from_slice(&runner.to_le_bytes());
    f.extend_from_slice(&[0; 4]);
    let mut count: u32 = 0;
    for item in items {
        fast_put(&item, &mut f)?;
        count += 1;
    }
    f[start + 13..start + 17].copy_from_slice(&count.to_le_bytes());
    end(&mut f, start);
    Ok((f, count))
}

/// The pool's calls encode their chunks of tasks as `TASKS` frames.
pub(crate) struct MpiFrames;

impl crate::pool::engine::Frames for MpiFrames {
    fn encode<X: Serialize>(runner: i64, items: impl Iterator<Item = X>) -> Result<(Vec<u8>, u32)> {
        task_frame(runner, items)
    }

    fn call_runner<F, A, R>() -> i64
    where
        F: TaskFn<A, R>,
        A: DeserializeOwned,
        R: Serialize,
    {
        offset_of_call::<F, A, R>()
    }

    fn map_runner<F, T, R>() -> i64
    where
        F: Fn(T) -> R + Copy + Send + Sync + 'static,
        T: DeserializeOwned,
        R: Serialize,
    {
        offset_of_map::<F, T, R>()
    }
}

/// The name of `f(a, b, ...)` calls (apply, starmap).
pub(crate) fn offset_of_call<F, A, R>() -> i64
where
    F: TaskFn<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    fnref::name(CallOf::<F, A, R>::DESC)
}

/// The name of `f(item)` calls (map, imap).
pub(crate) fn offset_of_map<F, T, R>() -> i64
where
    F: Fn(T) -> R + Copy + Send + Sync + 'static,
    T: DeserializeOwned,
    R: Serialize,
{
    fnref::name(MapOf::<F, T, R>::DESC)
}

/// The runner named by `offset` (looked up and checked once per offset);
/// `None` if it does not name an MPI task runner of this binary.
pub(crate) fn runner_at(cache: &mut Vec<(i64, Option<Runner>)>, offset: i64) -> Option<Runner> {
    if let Some((_, r)) = cache.iter().find(|(o, _)| *o == offset) {
        return *r;
    }
    let runner = fnref::resolve::<Runner>(offset).ok();
    cache.push((offset, runner));
    runner
}

fn run_call<F, A, R>(input: &[u8], count: u32, out: &mut Vec<u8>) -> Result<(), String>
where
    F: TaskFn<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: reached only through `CallOf::<F, A, R>::DESC`, named by
    // `MpiPool` methods that were handed a value of `F` (on rank 0, running
    // the same code).
    let f: F = unsafe { fnref::conjure::<F, A, R>() };
    let mut rd = Reader::new(input);
    for _ in 0..count {
        let args: A = rd
            .next()
            .map_err(|e| format!("cannot decode the task's arguments: {e}"))?;
        run_one(out, || f.call(args));
    }
    Ok(())
}

fn run_map<F, T, R>(input: &[u8], count: u32, out: &mut Vec<u8>) -> Result<(), String>
where
    F: Fn(T) -> R + Copy + Send + Sync + 'static,
    T: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: reached only through `MapOf::<F, T, R>::DESC`, named by
    // `MpiPool` methods that were handed a value of `F` (on rank 0, running
    // the same code).
    let f: F = unsafe { fnref::conjure::<F, (T,), R>() };
    let mut rd = Reader::new(input);
    for _ in 0..count {
        let arg: T = rd
            .next()
            .map_err(|e| format!("cannot decode the task's arguments: {e}"))?;
        run_one(out, || f(arg));
    }
    Ok(())
}

/// Runs one task and appends its answer to `out`.
#[inline]
fn run_one<R: Serialize>(out: &mut Vec<u8>, call: impl FnOnce() -> R) {
    let mark = out.len();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(value) => {
            out.push(0);
            if let Err(e) = fast_put(&value, out) {
                out.truncate(mark);
                out.push(2);
                let _ = fast_put(&format!("cannot encode the task's result: {e}"), out);
            }
        }
        Err(payload) => {
            let (message, backtrace) = take_panic(payload);
            out.push(1);
            // Encoding two strings into a Vec cannot fail.
            let _ = fast_put(&(message, backtrace), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: u64) -> u64 {
        x * x
    }

    #[test]
    fn frames_round_trip_and_malformed_ones_are_refused() {
        let (frame, count) = task_frame(7, [1u64, 2, 3].into_iter()).unwrap();
        assert_eq!(count, 3);
        let (kind, payload, len) = next(&frame).unwrap();
        assert_eq!((kind, len), (TASKS, frame.len()));
        assert_eq!(i64::from_le_bytes(payload[..8].try_into().unwrap()), 7);
        assert_eq!(next(&frame[..frame.len() - 1]), None);
        assert_eq!(next(&[0, 0, 0, 0, 1]), None);
        assert_eq!(next(&[0xff, 0xff, 0xff, 0xff, 1]), None);
    }

    #[test]
    fn a_runner_found_by_its_offset_answers() {
        let mut cache = Vec::new();
        fn offset_for<F: Fn(u64) -> u64 + Copy + Send + Sync + 'static>(_: F) -> i64 {
            offset_of_map::<F, u64, u64>()
        }
        let run = runner_at(&mut cache, offset_for(square)).unwrap();
        let (frame, count) = task_frame(0, [3u64, 4].into_iter()).unwrap();
        let (_, payload, _) = next(&frame).unwrap();
        let mut out = Vec::new();
        run(&payload[12..], count, &mut out).unwrap();
        assert_eq!(out, vec![0, 9, 0, 16]);
        // Truncated items: an error, not a panic.
        assert!(run(&payload[12..13], 2, &mut Vec::new()).is_err());
    }
}
