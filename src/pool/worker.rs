//! The worker side: task functions, their runners, and the worker loop.

use super::wire::{self, WorkerEnd};
use crate::process::fnref::{self, FnDesc};
use crate::sys::Region;
use rustix::net::{RecvFlags, SendFlags};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use crate::process::TaskFn;

/// Runs a batch in the worker: decodes `count` argument tuples from `input`
/// and appends one answer per item to `out`: tag 0 and the result, tag 1
/// and (panic message, backtrace), or tag 2 and why the result could not be
/// encoded. `Err` means the batch could not be decoded (nothing usable added).
pub(crate) type TaskRunner = fn(input: &[u8], count: u32, out: &mut Vec<u8>) -> Result<(), String>;

/// Runs an initializer in the worker from its encoded argument tuple.
pub(crate) type InitRunner = fn(input: &[u8]) -> Result<(), String>;

/// The named descriptor of `run_batch::<F, A, R>`.
pub(crate) struct BatchOf<F, A, R>(PhantomData<(F, A, R)>);

impl<F, A, R> BatchOf<F, A, R>
where
    F: TaskFn<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    /// Named only by the pool's methods that were handed a value of `F`.
    pub(crate) const DESC: &'static FnDesc<TaskRunner> = &FnDesc::new(run_batch::<F, A, R>);
}

/// The named descriptor of `run_map::<F, T, R>`.
pub(crate) struct MapOf<F, T, R>(PhantomData<(F, T, R)>);

impl<F, T, R> MapOf<F, T, R>
where
    F: TaskFn<(T,), R>,
    T: DeserializeOwned,
    R: Serialize,
{
    /// Named only by the pool's methods that were handed a value of `F`.
    pub(crate) const DESC: &'static FnDesc<TaskRunner> = &FnDesc::new(run_map::<F, T, R>);
}

/// The named descriptor of `run_init::<F, A>`.
pub(crate) struct InitOf<F, A>(PhantomData<(F, A)>);

impl<F, A> InitOf<F, A>
where
    F: TaskFn<A, ()>,
    A: DeserializeOwned,
{
    /// Named only by [`PoolBuilder::initializer`](super::PoolBuilder::initializer),
    /// which was handed a value of `F`.
    pub(crate) const DESC: &'static FnDesc<InitRunner> = &FnDesc::new(run_init::<F, A>);
}

fn run_batch<F, A, R>(input: &[u8], count: u32, out: &mut Vec<u8>) -> Result<(), String>
where
    F: TaskFn<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: reached only through `BatchOf::<F, A, R>::DESC`, named by pool
    // methods that were handed a value of `F` (here, or in the parent).
    let f: F = unsafe { fnref::conjure::<F, A, R>() };
    let mut rd = super::fast::Reader::new(input);
    for _ in 0..count {
        let args: A = rd
            .next()
            .map_err(|e| format!("cannot decode the task's arguments: {e}"))?;
        run_one(out, || f.call(args));
    }
    Ok(())
}

/// Runs one task and appends its answer to `out`: `0` and the encoded value,
/// `2` and a message when the value cannot be encoded, or the panic's error.
#[inline]
fn run_one<R: Serialize>(out: &mut Vec<u8>, call: impl FnOnce() -> R) {
    let mark = out.len();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(value) => {
            out.push(0);
            if let Err(e) = super::fast::put(&value, out) {
                out.truncate(mark);
                out.push(2);
                let _ = super::fast::put(&format!("cannot encode the task's result: {e}"), out);
            }
        }
        Err(payload) => {
            let (message, backtrace) = take_panic(payload);
            push_error(out, message, &backtrace);
        }
    }
}

/// [`run_batch`] for one-argument functions (`map`, `imap`): decodes each
/// item as `T` directly (the same bytes as the tuple `(T,)`).
fn run_map<F, T, R>(input: &[u8], count: u32, out: &mut Vec<u8>) -> Result<(), String>
where
    F: TaskFn<(T,), R>,
    T: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: reached only through `MapOf::<F, T, R>::DESC`, named by pool
    // methods that were handed a value of `F` (here, or in the parent).
    let f: F = unsafe { fnref::conjure::<F, (T,), R>() };
    let mut rd = super::fast::Reader::new(input);
    for _ in 0..count {
        let arg: T = rd
            .next()
            .map_err(|e| format!("cannot decode the task's arguments: {e}"))?;
        run_one(out, || f.call((arg,)));
    }
    Ok(())
}

fn run_init<F, A>(input: &[u8]) -> Result<(), String>
where
    F: TaskFn<A, ()>,
    A: DeserializeOwned,
{
    // SAFETY: reached only through `InitOf::<F, A>::DESC`, named by
    // `PoolBuilder::initializer`, which was handed a value of `F`.
    let f: F = unsafe { fnref::conjure::<F, A, ()>() };
    let args: A = crate::codec::decode(input)
        .map_err(|e| format!("cannot decode the initializer's arguments: {e}"))?;
    f.call(args);
    Ok(())
}

fn push_error(out: &mut Vec<u8>, message: String, backtrace: &str) {
    out.push(1);
    // Encoding two strings into a Vec cannot fail.
    let _ = super::fast::put(&(message, backtrace), out);
}

/// A worker keeps each task's panic (message with its location, and a
/// backtrace) for the task's error instead of printing it. It sets a flag of
/// the process-wide hook, installed before the fork: calling `set_hook` after
/// the fork could wait forever on a lock a panicking parent thread held.
fn install_hook() {
    crate::process::capture_panics_per_thread();
}

fn take_panic(payload: Box<dyn std::any::Any + Send>) -> (String, String) {
    crate::process::take_thread_panic().unwrap_or_else(|| {
        let m = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".into());
        (m, String::new())
    })
}

/// What a worker is started with.
pub(crate) type WorkerArgs = (WorkerEnd, Region, Option<(i64, Vec<u8>)>, u64, u64);

/// Looks up (and checks once) the task runner named `offset`.
fn runner_at(cache: &mut Vec<(i64, Option<TaskRunner>)>, offset: i64) -> Option<TaskRunner> {
    if let Some((_, r)) = cache.iter().find(|(o, _)| *o == offset) {
        return *r;
    }
    let runner = fnref::resolve::<TaskRunner>(offset).ok();
    cache.push((offset, runner));
    runner
}

/// The worker loop: reads task frames, runs them, answers in order.
/// Returns (ending the process with code 0) on `EXIT`, at end of input, or
/// after `maxtasks` batches (0 = no limit).
pub(crate) fn worker_main(
    sock: WorkerEnd,
    counters: Region,
    init: Option<(i64, Vec<u8>)>,
    maxtasks: u64,
    spin_us: u64,
) {
    install_hook();
    let sock = sock.0;
    // SAFETY: the parent made the region 16 bytes long; offset 0 is aligned
    // for AtomicU64, every bit pattern is valid, and both sides use atomics.
    let started: &AtomicU64 = unsafe { counters.get::<AtomicU64>(0) };
    if let Some((offset, bytes)) = init {
        let init = match fnref::resolve::<InitRunner>(offset) {
            Ok(init) => init,
            Err(e) => panic!("the pool initializer cannot be found in this binary: {e}"),
        };
        if let Err(e) = init(&bytes) {
            panic!("{e}");
        }
    }
    let spin = Duration::from_micros(spin_us);
    let mut cache = Vec::new();
    let mut inbuf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut pos = 0;
    let mut out: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut first_unsent: Option<Instant> = None;
    let mut done: u64 = 0;
    // How long the last batch ran: after a long one the next is not due
    // soon (it would be queued already), and spinning would only take a CPU
    // from the parent decoding the answers.
    let mut last_run = Duration::ZERO;
    loop {
        if let Some((kind, payload, len)) = wire::next_frame(&inbuf[pos..]) {
            if kind == wire::EXIT {
                break;
            }
            out.reserve(payload.len() + payload.len() / 4 + 64);
            let start = wire::begin(&mut out, wire::RESULTS);
            let ok = if payload.len() < 12 {
                Err("short task frame".to_string())
            } else {
                let offset = i64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                let count = u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes"));
                // Tell the parent this batch is now ours: if we die from here
                // on, it fails instead of being sent to another worker.
                started.store(done + 1, Ordering::Release);
                let t0 = Instant::now();
                let r = match runner_at(&mut cache, offset) {
                    Some(run) => run(&payload[12..], count, &mut out),
                    None => Err("the task function cannot be found in this binary".to_string()),
                };
                last_run = t0.elapsed();
                r
            };
            if let Err(reason) = ok {
                out.truncate(start);
                wire::begin(&mut out, wire::FAILED);
                out.extend_from_slice(reason.as_bytes());
            }
            wire::finish(&mut out, start);
            pos += len;
            done += 1;
            if maxtasks > 0 && done >= maxtasks {
                break;
            }
            let now = Instant::now();
            let since = *first_unsent.get_or_insert(now);
            if out.len() >= 128 << 10 || now.duration_since(since) >= Duration::from_millis(1) {
                if !flush(&sock, &mut out) {
                    return;
                }
                first_unsent = None;
            }
            continue;
        }
        // No complete frame buffered: compact, then read what is there.
        if pos > 0 {
            inbuf.drain(..pos);
            pos = 0;
        }
        match wire::read_some(&sock, &mut inbuf, RecvFlags::DONTWAIT) {
            Ok(wire::Read::Data) => continue,
            Ok(wire::Read::Eof) | Err(_) => break,
            Ok(wire::Read::Empty) => {}
        }
        // Idle: answer what is done, spin briefly, then block.
        if !flush(&sock, &mut out) {
            return;
        }
        first_unsent = None;
        let t0 = Instant::now();
        let spin = if last_run > spin {
            Duration::ZERO
        } else {
            spin
        };
        let got = loop {
            match wire::read_some(&sock, &mut inbuf, RecvFlags::DONTWAIT) {
                Ok(wire::Read::Empty) if t0.elapsed() < spin => std::hint::spin_loop(),
                Ok(wire::Read::Empty) => {
                    break wire::read_some(&sock, &mut inbuf, RecvFlags::empty())
                }
                other => break other,
            }
        };
        match got {
            Ok(wire::Read::Data) | Ok(wire::Read::Empty) => {}
            Ok(wire::Read::Eof) | Err(_) => return,
        }
    }
    flush(&sock, &mut out);
}

/// Sends all of `out` (blocking), then clears it. `false` if the parent is gone.
fn flush(sock: &std::os::fd::OwnedFd, out: &mut Vec<u8>) -> bool {
    let mut pos = 0;
    let ok = wire::write_some(sock, out, &mut pos, SendFlags::empty()).unwrap_or(false);
    out.clear();
    ok
}
