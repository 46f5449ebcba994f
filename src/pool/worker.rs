//! The worker side: task functions, their runners, and the worker loop.

use super::journal;
use super::wire::{self, WorkerEnd};
use crate::process::fnref;
use crate::sys::Region;
use rustix::net::RecvFlags;
use serde::{de::DeserializeOwned, Serialize};
use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

pub use crate::process::TaskFn;

/// Runs a batch in the worker: decodes `count` argument tuples from `input`
/// and hands one answer per item to `ans` (see [`Answers`]). Arguments that
/// cannot be decoded give that task and the rest of the batch an error.
pub(crate) type TaskRunner = fn(input: &[u8], count: u32, ans: &mut Answers<'_>);

/// Runs an initializer in the worker from its encoded argument tuple.
pub(crate) type InitRunner = fn(input: &[u8]) -> Result<(), String>;

/// The answers of the batch being run: appended to the output buffer, each
/// mirrored into the journal as soon as its task is done (so it survives
/// the worker's death), and sent early, as a `PARTIAL` frame, when they
/// outgrow the journal.
pub(crate) struct Answers<'a> {
    out: &'a mut Vec<u8>,
    journal: &'a mut journal::Writer,
    sock: BorrowedFd<'a>,
    /// Where the answer frame in progress starts in `out`.
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
        self.journal.decoded(task, pos);
    }

    /// `done` tasks of the batch are answered; `false` if the parent is gone.
    #[inline]
    fn done(&mut self, done: u32) -> bool {
        if self.journal.commit(self.out, done) {
            return true;
        }
        // Too much for the journal: send it all now, the answers so far as
        // a PARTIAL frame, and go on in a new frame.
        let f = self.frame;
        self.out[f + 4] = wire::PARTIAL;
        self.out[f + 5..f + 9].copy_from_slice(&(done - self.frame_first).to_le_bytes());
        wire::finish(self.out, f);
        if !journal::flush(self.sock, self.out, self.journal, done) {
            self.gone = true;
            return false;
        }
        self.frame = begin_answers(self.out);
        self.frame_first = done;
        self.journal.commit(self.out, done)
    }

    /// Answers tasks `from..count` with `reason` (their arguments could not
    /// be decoded).
    fn fail_rest(&mut self, from: u32, count: u32, reason: &str) {
        if !self.done(from) {
            return;
        }
        for k in from..count {
            self.out.push(2);
            let _ = super::fast::put(reason, self.out);
            if !self.done(k + 1) {
                return;
            }
        }
    }
}

/// Starts a `RESULTS` frame (its count and time are filled in at the end).
fn begin_answers(out: &mut Vec<u8>) -> usize {
    let start = wire::begin(out, wire::RESULTS);
    out.extend_from_slice(&[0; wire::ANSWER_HEADER - 5]);
    start
}

pub(crate) fn run_batch<F, A, R>(input: &[u8], count: u32, ans: &mut Answers<'_>)
where
    F: TaskFn<A, R>,
    A: DeserializeOwned,
    R: Serialize,
{
    let f: F = fnref::conjure::<F>();
    let mut rd = super::fast::Reader::new(input);
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
        // The previous task's answer is kept now, not right after it was
        // written: reading back bytes still in the store buffer stalls.
        if k > 0 && !ans.done(k) {
            return;
        }
        ans.decoded(k, input.len() - rd.remaining());
        run_one(ans.out, || f.call(args));
    }
}

/// The largest answer a worker sends: a larger result becomes an error.
const MAX_ANSWER: usize = wire::MAX_FRAME - journal::CAP - 64;

/// Runs one task and appends its answer to `out`: `0` and the encoded value,
/// `2` and a message when the value cannot be encoded, or the panic's error.
#[inline]
fn run_one<R: Serialize>(out: &mut Vec<u8>, call: impl FnOnce() -> R) {
    let mark = out.len();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(value) => {
            out.push(0);
            let r = super::fast::put(&value, out);
            let reason = match r {
                Err(e) => Some(format!("cannot encode the task's result: {e}")),
                Ok(()) if out.len() - mark > MAX_ANSWER => Some(format!(
                    "the task's result encodes to {} bytes, more than the pool's limit of {MAX_ANSWER}",
                    out.len() - mark
                )),
                Ok(()) => None,
            };
            if let Some(reason) = reason {
                out.truncate(mark);
                out.push(2);
                let _ = super::fast::put(&reason, out);
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
pub(crate) fn run_map<F, T, R>(input: &[u8], count: u32, ans: &mut Answers<'_>)
where
    F: Fn(T) -> R + Copy + Send + Sync + 'static,
    T: DeserializeOwned,
    R: Serialize,
{
    let f: F = fnref::conjure::<F>();
    let mut rd = super::fast::Reader::new(input);
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
        if k > 0 && !ans.done(k) {
            return;
        }
        ans.decoded(k, input.len() - rd.remaining());
        run_one(ans.out, || f(arg));
    }
}

pub(crate) fn run_init<F, A>(input: &[u8]) -> Result<(), String>
where
    F: TaskFn<A, ()>,
    A: DeserializeOwned,
{
    let f: F = fnref::conjure::<F>();
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

thread_local! {
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// The panic hook of a worker: keeps the message (with its location) and a
/// backtrace for the task's error instead of printing them.
fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = crate::process::panic_message(info);
        let bt = std::backtrace::Backtrace::force_capture().to_string();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some((message, bt)));
    }));
}

fn take_panic(payload: Box<dyn std::any::Any + Send>) -> (String, String) {
    LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_else(|| {
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

/// Looks up (and checks once) the runner at `offset`.
fn runner_at(cache: &mut Vec<(i64, Option<TaskRunner>)>, offset: i64) -> Option<TaskRunner> {
    if let Some((_, r)) = cache.iter().find(|(o, _)| *o == offset) {
        return *r;
    }
    let addr = fnref::addr_of(offset);
    let runner = fnref::is_own_code(addr).then(|| {
        // SAFETY: the worker runs the parent's binary (checked at bootstrap
        // for spawn; identical image for fork), `offset` was computed by the
        // parent from a `TaskRunner` function pointer relative to the same
        // anchor, and `addr` was just checked to lie in this binary's code.
        unsafe { std::mem::transmute::<usize, TaskRunner>(addr) }
    });
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
    let Some(mut journal) = journal::Writer::new(region) else {
        panic!("the pool worker's journal region is too small");
    };
    if let Some((offset, bytes)) = init {
        let addr = fnref::addr_of(offset);
        if !fnref::is_own_code(addr) {
            panic!("the pool initializer cannot be found in this binary");
        }
        // SAFETY: as in `runner_at`, for an `InitRunner` pointer.
        let init: InitRunner = unsafe { std::mem::transmute::<usize, InitRunner>(addr) };
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
    // TASKS frames received, and batches run.
    let mut ordinal: u32 = 0;
    let mut done: u64 = 0;
    // How long the last batch ran: after a long one the next is not due
    // soon (it would be queued already), and spinning would only take a CPU
    // from the parent decoding the answers.
    let mut last_run = Duration::ZERO;
    // A malformed frame ends the loop: the parent does not send one, and
    // whoever did is not to be trusted with more work.
    while let Ok(frame) = wire::next_frame(&inbuf[pos..]) {
        if let Some((kind, payload, len)) = frame {
            match kind {
                wire::TASKS => {}
                wire::EXIT => break,
                _ => break,
            }
            let n = ordinal;
            ordinal = ordinal.wrapping_add(1);
            // The batch in progress has no task done yet; then claim it (it
            // may have been taken back).
            journal.begin(&out);
            if !journal.claim(n) {
                pos += len;
                continue;
            }
            out.reserve(payload.len() + payload.len() / 4 + 64);
            let start = begin_answers(&mut out);
            journal.commit(&out, 0);
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
                        out: &mut out,
                        journal: &mut journal,
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
                    out[f + 5..f + 9].copy_from_slice(&count.saturating_sub(first).to_le_bytes());
                    let ns = u64::try_from(last_run.as_nanos()).unwrap_or(u64::MAX);
                    out[f + 9..f + 17].copy_from_slice(&ns.to_le_bytes());
                    wire::finish(&mut out, f);
                    journal.patch(&out, f, wire::ANSWER_HEADER);
                    if !journal.commit(&out, count)
                        && !journal::flush(sock.as_fd(), &mut out, &mut journal, count)
                    {
                        return;
                    }
                }
                Err(reason) => {
                    out.truncate(start);
                    wire::begin(&mut out, wire::FAILED);
                    out.extend_from_slice(reason.as_bytes());
                    wire::finish(&mut out, start);
                    journal.rewind(start);
                    if !journal.commit(&out, 0)
                        && !journal::flush(sock.as_fd(), &mut out, &mut journal, 0)
                    {
                        return;
                    }
                }
            }
            pos += len;
            done += 1;
            if maxtasks > 0 && done >= maxtasks {
                break;
            }
            let now = Instant::now();
            let since = *first_unsent.get_or_insert(now);
            if out.len() >= 128 << 10 || now.duration_since(since) >= Duration::from_millis(1) {
                if !journal::flush(sock.as_fd(), &mut out, &mut journal, 0) {
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
            Ok(wire::Read::Data(_)) => continue,
            Ok(wire::Read::Eof) | Err(_) => break,
            Ok(wire::Read::Empty) => {}
        }
        // Idle: answer what is done, spin briefly, then block.
        if !journal::flush(sock.as_fd(), &mut out, &mut journal, 0) {
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
            Ok(wire::Read::Data(_)) | Ok(wire::Read::Empty) => {}
            Ok(wire::Read::Eof) | Err(_) => return,
        }
    }
    journal::flush(sock.as_fd(), &mut out, &mut journal, 0);
}
