//! The worker side: task functions, their runners, and the worker loop.
#![allow(unsafe_code)]

use super::journal;
use super::wire::{self, WorkerEnd};
use crate::codec::Out;
use crate::process::fnref;
use crate::sys::framing;
use crate::sys::Region;
use serde::{de::DeserializeOwned, Serialize};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

pub use crate::process::TaskFn;

/// Runs a batch in the worker: decodes `count` argument tuples from `input`
/// and hands one answer per item to `ans` (see [`Answers`]). Arguments that
/// cannot be decoded give that task and the rest of the batch an error.
pub(crate) type TaskRunner = fn(input: &[u8], count: u32, ans: &mut Answers<'_>);

/// Runs an initializer in the worker from its encoded argument tuple.
pub(crate) type InitRunner = fn(input: &[u8]) -> Result<(), String>;

/// The answers of the batch being run, written to the output buffer, which
/// is the worker's journal (see [`journal`]): from the moment a task's
/// answer is there, it survives the worker's death. Answers that outgrow
/// the buffer are sent early, as `PARTIAL` frames (through `scratch`).
pub(crate) struct Answers<'a> {
    buf: &'a mut journal::Writer,
    scratch: &'a mut Vec<u8>,
    sock: BorrowedFd<'a>,
    /// Where the answer frame in progress starts in `buf`.
    frame: usize,
    /// Tasks of the batch answered by earlier (`PARTIAL`) frames.
    frame_first: u32,
    /// The parent is gone: stop.
    gone: bool,
}

impl Answers<'_> {
    /// Task `task`'s arguments are decoded; the next ones start at `pos`.
    #[inline]
    fn decoded(&self, task: u32, pos: usize) {
        self.buf.decoded(task, pos);
    }

    /// The answer in `scratch` is task `done - 1`'s; `false` if the parent
    /// is gone.
    #[inline]
    fn push(&mut self, done: u32) -> bool {
        if !self.buf.append(self.scratch) && !self.push_slow(done) {
            return false;
        }
        self.buf.commit(done);
        true
    }

    /// The answer does not fit: send what is there (this batch's answers so
    /// far as a `PARTIAL` frame), and the answer too if it is larger than
    /// the whole buffer, as a `PARTIAL` frame of its own.
    #[cold]
    fn push_slow(&mut self, done: u32) -> bool {
        let big = self.scratch.len() + wire::ANSWER_HEADER > journal::CAP;
        let f = self.frame;
        self.buf.overwrite(f + 4, &[wire::PARTIAL]);
        self.buf
            .overwrite(f + 5, &(done - 1 - self.frame_first).to_le_bytes());
        finish_frame(self.buf, f);
        let mut own = [0u8; wire::ANSWER_HEADER];
        let extra: [&[u8]; 2] = if big {
            let len = wire::ANSWER_HEADER - 4 + self.scratch.len();
            own[..4].copy_from_slice(&framing::short_header(len));
            own[4] = wire::PARTIAL;
            own[5..9].copy_from_slice(&1u32.to_le_bytes());
            [&own, self.scratch]
        } else {
            [&[], &[]]
        };
        let sent_done = done - u32::from(!big);
        if !journal::flush(self.sock, self.buf, &extra, sent_done) {
            self.gone = true;
            return false;
        }
        self.frame = begin_answers(self.buf);
        self.frame_first = sent_done;
        big || self.buf.append(self.scratch)
    }

    /// Answers tasks `from..count` with `reason` (their arguments could not
    /// be decoded).
    fn fail_rest(&mut self, from: u32, count: u32, reason: &str) {
        for k in from..count {
            self.scratch.clear();
            self.scratch.push(2);
            let _ = crate::codec::put(reason, self.scratch);
            if !self.push(k + 1) {
                return;
            }
        }
    }
}

/// Starts a `RESULTS` frame in `buf` (its length, count and time are filled
/// in at the end). The buffer always has room for it after a flush.
fn begin_answers(buf: &mut journal::Writer) -> usize {
    let start = buf.len();
    let mut h = [0u8; wire::ANSWER_HEADER];
    h[4] = wire::RESULTS;
    let ok = buf.append(&h);
    debug_assert!(ok, "no room for a frame header");
    start
}

/// Writes the header of the frame begun at `start` in `buf`.
fn finish_frame(buf: &mut journal::Writer, start: usize) {
    let len = buf.len() - start - 4;
    buf.overwrite(start, &framing::short_header(len));
}

pub(crate) fn run_batch<F, A, R>(input: &[u8], count: u32, ans: &mut Answers<'_>)
where
    F: TaskFn<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: reached only through `BatchOf::<F, A, R>::DESC`, named by pool
    // methods that were handed a value of `F` (here, or in the parent).
    let f: F = unsafe { fnref::conjure::<F, A, R>() };
    let mut rd = crate::codec::Reader::new(input);
    for k in 0..count {
        let args: A = match rd.next() {
            Ok(a) => a,
            Err(e) => {
                return ans.fail_rest(
                    k,
                    count,
                    &format!("cannot decode the task's arguments: {e}"),
                )
            }
        };
        ans.decoded(k, input.len() - rd.remaining());
        if !run_one(ans, k + 1, || f.call(args)) {
            return;
        }
    }
}

/// The largest answer a worker sends: a larger result becomes an error.
const MAX_ANSWER: usize = wire::MAX_FRAME - wire::ANSWER_HEADER;

/// Runs task `done - 1` and appends its answer: `0` and the encoded value,
/// `2` and a message when the value cannot be encoded, or the panic's
/// error. The value is encoded straight into the output buffer; when it does
/// not fit there (or fails), it goes the slow way, through `scratch`.
/// `false` if the parent is gone.
#[inline]
fn run_one<R: Serialize>(ans: &mut Answers<'_>, done: u32, call: impl FnOnce() -> R) -> bool {
    let out = &mut ans.scratch;
    out.clear();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(value) => {
            let mark = ans.buf.len();
            ans.buf.push(0);
            if crate::codec::put_into(&value, ans.buf).is_ok() && !ans.buf.take_full() {
                ans.buf.commit(done);
                return true;
            }
            ans.buf.truncate(mark);
            out.push(0);
            let reason = match crate::codec::put(&value, out) {
                Err(e) => Some(format!("cannot encode the task's result: {e}")),
                Ok(()) if out.len() > MAX_ANSWER => Some(format!(
                    "the task's result encodes to {} bytes, more than the pool's limit of {MAX_ANSWER}",
                    out.len()
                )),
                Ok(()) => None,
            };
            if let Some(reason) = reason {
                out.clear();
                out.push(2);
                let _ = crate::codec::put(&reason, out);
            }
        }
        Err(payload) => {
            let (message, backtrace) = take_panic(payload);
            push_error(out, message, &backtrace);
        }
    }
    ans.push(done)
}

/// [`run_batch`] for one-argument functions (`map`, `imap`): decodes each
/// item as `T` directly (the same bytes as the tuple `(T,)`).
pub(crate) fn run_map<F, T, R>(input: &[u8], count: u32, ans: &mut Answers<'_>)
where
    F: Fn(T) -> R + Copy + Send + Sync + 'static,
    T: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: reached only through `MapOf::<F, T, R>::DESC`, named by pool
    // methods that were handed a value of `F` (here, or in the parent).
    let f: F = unsafe { fnref::conjure::<F, (T,), R>() };
    let mut rd = crate::codec::Reader::new(input);
    for k in 0..count {
        let arg: T = match rd.next() {
            Ok(a) => a,
            Err(e) => {
                return ans.fail_rest(
                    k,
                    count,
                    &format!("cannot decode the task's arguments: {e}"),
                )
            }
        };
        ans.decoded(k, input.len() - rd.remaining());
        if !run_one(ans, k + 1, || f(arg)) {
            return;
        }
    }
}

pub(crate) fn run_init<F, A>(input: &[u8]) -> Result<(), String>
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
    let _ = crate::codec::put(&(message, backtrace), out);
}

/// A worker keeps each task's panic (message with its location, and a
/// backtrace) for the task's error instead of printing it. It sets a flag of
/// the process-wide hook, installed before the fork: calling `set_hook` after
/// the fork could wait forever on a lock a panicking parent thread held.
pub(crate) fn install_hook() {
    crate::process::capture_panics_per_thread();
}

pub(crate) fn take_panic(payload: Box<dyn std::any::Any + Send>) -> (String, String) {
    crate::process::take_thread_panic().unwrap_or_else(|| {
        let m = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".into());
        (m, String::new())
    })
}

/// What a worker is started with: its socket, its journal region, the
/// initializer, maxtasksperchild, and how long to spin when idle (µs).
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
/// Returns (ending the process with code 0) on `EXIT`, at end of input, on a
/// malformed frame, or after `maxtasks` batches (0 = no limit).
pub(crate) fn worker_main(
    sock: WorkerEnd,
    region: Region,
    init: Option<(i64, Vec<u8>)>,
    maxtasks: u64,
    spin_us: u64,
) {
    install_hook();
    let sock = sock.0;
    #[cfg(feature = "test-hooks")]
    super::__test::set_worker_socket(sock.as_fd());
    let Some(mut journal) = journal::Writer::new(region) else {
        panic!("the pool worker's journal region is too small");
    };
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
    let mut reader = wire::reader();
    // A large task frame's buffer, kept for the next one.
    let mut reuse: Vec<u8> = Vec::new();
    let mut scratch: Vec<u8> = Vec::with_capacity(1 << 10);
    let mut first_unsent: Option<Instant> = None;
    // TASKS frames received, and batches run.
    let mut ordinal: u32 = 0;
    let mut done: u64 = 0;
    // How long the last batch ran: after a long one the next is not due
    // soon (it would be queued already), and spinning would only take a CPU
    // from the parent decoding the answers.
    let mut last_run = Duration::ZERO;
    // The large task frame handled last, whose buffer goes back to `reuse`.
    let mut held: Vec<u8> = Vec::new();
    loop {
        wire::keep_for_reuse(&mut reuse, std::mem::take(&mut held));
        let frame = match wire::next(&mut reader, sock.as_fd(), true, &mut reuse) {
            Ok(Some(f)) => f,
            Ok(None) => {
                if wire::bad_start(&reader, &[wire::TASKS, wire::EXIT]).is_some() {
                    // Not a frame the parent sends: see below.
                    break;
                }
                // Idle: answer what is done, spin briefly, then block.
                if journal.len() > 0 && !journal::flush(sock.as_fd(), &mut journal, &[], 0) {
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
                    match wire::next(&mut reader, sock.as_fd(), true, &mut reuse) {
                        Ok(None)
                            if wire::bad_start(&reader, &[wire::TASKS, wire::EXIT]).is_some() =>
                        {
                            break Err(crate::Error::codec("a frame of an unknown kind"))
                        }
                        Ok(None) if t0.elapsed() < spin => crate::sys::spin_pause(),
                        Ok(None) => {
                            // Block in one read only: a frame still partial
                            // after it is checked by its first bytes above
                            // (a frame refused by them is refused at once,
                            // not waited for in full).
                            let mut once = true;
                            let src = wire::source(sock.as_fd(), false);
                            let mut one_read = || {
                                if std::mem::take(&mut once) {
                                    Ok(())
                                } else {
                                    Err(crate::Error::Timeout)
                                }
                            };
                            match reader.next(
                                src,
                                wire::MAX_FRAME as u64,
                                &mut reuse,
                                &mut one_read,
                                &mut |_, _| {},
                            ) {
                                Err(crate::Error::Timeout) => {}
                                other => break other,
                            }
                        }
                        other => break other,
                    }
                };
                match got {
                    Ok(Some(f)) => f,
                    // The parent is gone.
                    Ok(None) | Err(crate::Error::Closed) => return,
                    // A malformed or cut frame: the parent does not send one,
                    // and whoever did is not to be trusted with more work.
                    Err(_) => break,
                }
            }
            // The parent is gone, or a malformed frame (see below).
            Err(_) => break,
        };
        let bytes = match frame {
            framing::Frame::Own(v) => {
                held = v;
                &held[..]
            }
            framing::Frame::Buffered(r) => reader.buffered_payload(r),
        };
        let Ok((kind, payload)) = wire::kind_of(bytes) else {
            break;
        };
        match kind {
            wire::TASKS => {}
            _ => break,
        }
        let n = ordinal;
        ordinal = ordinal.wrapping_add(1);
        // The batch in progress has no task done yet; then claim it (it
        // may have been taken back).
        journal.begin();
        if !journal.claim(n) {
            continue;
        }
        if journal.len() + wire::ANSWER_HEADER + 4096 > journal::CAP
            && !journal::flush(sock.as_fd(), &mut journal, &[], 0)
        {
            return;
        }
        let start = begin_answers(&mut journal);
        journal.commit(0);
        let runner = if payload.len() < 12 {
            Err("short task frame".to_string())
        } else {
            let offset = i64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
            let count = u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes"));
            match runner_at(&mut cache, offset) {
                Some(run) => Ok((run, count)),
                None => Err("the task function cannot be found in this binary".to_string()),
            }
        };
        match runner {
            Ok((run, count)) => {
                let t0 = Instant::now();
                let mut ans = Answers {
                    buf: &mut journal,
                    scratch: &mut scratch,
                    sock: sock.as_fd(),
                    frame: start,
                    frame_first: 0,
                    gone: false,
                };
                run(&payload[12..], count, &mut ans);
                if ans.gone {
                    return;
                }
                let (f, first) = (ans.frame, ans.frame_first);
                last_run = t0.elapsed();
                let ns = u64::try_from(last_run.as_nanos()).unwrap_or(u64::MAX);
                journal.overwrite(f + 5, &count.saturating_sub(first).to_le_bytes());
                journal.overwrite(f + 9, &ns.to_le_bytes());
                finish_frame(&mut journal, f);
                journal.commit(count);
                if scratch.capacity() > 1 << 20 {
                    scratch = Vec::with_capacity(1 << 10);
                }
            }
            Err(reason) => {
                // No task ran: the answer is a FAILED frame instead.
                journal.truncate(start);
                let reason = &reason.as_bytes()[..reason.len().min(1024)];
                let ok = journal.append(&framing::short_header(1 + reason.len()))
                    && journal.append(&[wire::FAILED])
                    && journal.append(reason);
                debug_assert!(ok, "room was made for the frame");
                journal.commit(0);
            }
        }
        done += 1;
        if maxtasks > 0 && done >= maxtasks {
            break;
        }
        let now = Instant::now();
        let since = *first_unsent.get_or_insert(now);
        if journal.len() >= 128 << 10 || now.duration_since(since) >= Duration::from_millis(1) {
            if !journal::flush(sock.as_fd(), &mut journal, &[], 0) {
                return;
            }
            first_unsent = None;
        }
    }
    journal::flush(sock.as_fd(), &mut journal, &[], 0);
}

// --- Naming the runners across processes (see `process::fnref`) -----------

// SAFETY: a function pointer type with a kind of its own.
unsafe impl fnref::FnKind for TaskRunner {
    const KIND: u64 = fnref::kind::POOL_TASK_RUNNER;
}

// SAFETY: a function pointer type with a kind of its own.
unsafe impl fnref::FnKind for InitRunner {
    const KIND: u64 = fnref::kind::POOL_INIT_RUNNER;
}

/// The named descriptor of `run_batch::<F, A, R>`.
pub(crate) struct BatchOf<F, A, R>(std::marker::PhantomData<(F, A, R)>);

impl<F, A, R> BatchOf<F, A, R>
where
    F: TaskFn<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    /// Named only by the pool's methods that were handed a value of `F`.
    pub(crate) const DESC: &'static fnref::FnDesc<TaskRunner> =
        &fnref::FnDesc::new(run_batch::<F, A, R>);
}

/// The named descriptor of `run_map::<F, T, R>`.
pub(crate) struct MapOf<F, T, R>(std::marker::PhantomData<(F, T, R)>);

impl<F, T, R> MapOf<F, T, R>
where
    F: Fn(T) -> R + Copy + Send + Sync + 'static,
    T: DeserializeOwned,
    R: Serialize,
{
    /// Named only by the pool's methods that were handed a value of `F`.
    pub(crate) const DESC: &'static fnref::FnDesc<TaskRunner> =
        &fnref::FnDesc::new(run_map::<F, T, R>);
}

/// The named descriptor of `run_init::<F, A>`.
pub(crate) struct InitOf<F, A>(std::marker::PhantomData<(F, A)>);

impl<F, A> InitOf<F, A>
where
    F: TaskFn<A, ()>,
    A: DeserializeOwned,
{
    /// Named only by [`PoolBuilder::initializer`](super::PoolBuilder::initializer),
    /// which was handed a value of `F`.
    pub(crate) const DESC: &'static fnref::FnDesc<InitRunner> =
        &fnref::FnDesc::new(run_init::<F, A>);
}

#[cfg(test)]
mod naming_tests {
    use super::*;

    fn square(x: u64) -> u64 {
        x * x
    }
    fn setup(_: u64) {}

    fn batch_name<F: TaskFn<(u64,), u64>>(_: F) -> i64 {
        fnref::name(BatchOf::<F, (u64,), u64>::DESC)
    }
    fn init_name<F: TaskFn<(u64,), ()>>(_: F) -> i64 {
        fnref::name(InitOf::<F, (u64,)>::DESC)
    }

    /// A task runner's name where an initializer is expected (and the other
    /// way round) is refused: same image, genuine descriptor, wrong kind.
    #[test]
    #[cfg_attr(miri, ignore = "reads the ELF program headers")]
    fn runner_kinds_are_checked() {
        let task = batch_name(square);
        let init = init_name(setup);
        assert!(fnref::resolve::<TaskRunner>(task).is_ok());
        assert!(fnref::resolve::<InitRunner>(init).is_ok());
        assert!(matches!(
            fnref::resolve::<InitRunner>(task),
            Err(crate::Error::Bootstrap(_))
        ));
        assert!(matches!(
            fnref::resolve::<TaskRunner>(init),
            Err(crate::Error::Bootstrap(_))
        ));
    }
}
