//! One worker as the parent sees it: its process and socket, the batches
//! it holds, reading its answers, taking back batches it has not started,
//! and, when it dies, recovering every answer it completed (see
//! [`journal`](super::journal)).

use super::batch::{push_failure, Spares};
pub(crate) use super::batch::{Batch, Done, Sent};
use super::journal::{self, before};
use super::sink::Fail;
use super::wire;
use crate::error::{Error, Result};
use crate::process::{ChildShared, Process};
use crate::sys::conn_io::Kind;
use crate::sys::framing::{self, Frame, FrameReader, FrameWriter};
use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most tasks one worker holds at a time (small tasks are pipelined).
pub(crate) const WINDOW_TASKS: usize = 256;
/// Most unsent bytes queued for one worker.
const WINDOW_BYTES: usize = 8 << 20;

pub(crate) struct Worker {
    pub(crate) proc: Process<()>,
    pub(crate) pid: i32,
    pub(crate) sock: Arc<OwnedFd>,
    /// The child as the registry knows it: its sentinel (the pidfd of the
    /// process handle, opened when the worker starts) is watched for its death.
    pub(crate) child: Arc<ChildShared>,
    journal: journal::Reader,
    /// The worker's answers (its position counts the bytes received).
    reader: FrameReader,
    /// Buffers for large answers, given back once delivered.
    spares: Arc<Spares>,
    /// The buffer the next large answer is read into.
    reuse: Vec<u8>,
    /// Frames not yet (fully) sent.
    writer: FrameWriter,
    pub(crate) inflight: VecDeque<Sent>,
    pub(crate) inflight_tasks: usize,
    /// Batches sent (and not taken back), for maxtasksperchild.
    pub(crate) sent_batches: u64,
    /// The ordinal of the next `TASKS` frame.
    next_ordinal: u32,
    /// Smoothed time per task (ns), to size the window: slow tasks are not
    /// queued far ahead, so the load stays balanced between workers.
    task_ns: f64,
    /// Smoothed time per task (ns) measured by the worker: the work alone,
    /// without waiting and transfers.
    work_ns: f64,
    /// When the batch now at the head of `inflight` started (roughly).
    head_since: Instant,
    /// The socket is gone (EOF or EPIPE): send nothing more.
    pub(crate) broken: bool,
    /// `EXIT` was queued: send nothing more.
    pub(crate) exiting: bool,
    /// The socket's sending side is shut (after `EXIT`).
    shut: bool,
    /// It sent a malformed frame (it has been killed).
    corrupt: Option<String>,
    /// A replacement was already asked for (it retires by maxtasksperchild).
    pub(crate) replaced: bool,
}

impl Worker {
    pub(crate) fn new(
        proc: Process<()>,
        sock: OwnedFd,
        journal: journal::Reader,
        spares: Arc<Spares>,
    ) -> Worker {
        Worker {
            pid: proc.pid(),
            child: Arc::clone(proc.child()),
            proc,
            sock: Arc::new(sock),
            journal,
            reader: wire::reader(),
            spares,
            reuse: Vec::new(),
            writer: FrameWriter::default(),
            inflight: VecDeque::new(),
            inflight_tasks: 0,
            sent_batches: 0,
            next_ordinal: 0,
            task_ns: 0.0,
            work_ns: 0.0,
            head_since: Instant::now(),
            broken: false,
            exiting: false,
            shut: false,
            corrupt: None,
            replaced: false,
        }
    }

    pub(crate) fn unsent(&self) -> usize {
        self.writer.unsent()
    }

    pub(crate) fn queue(&mut self, frame: &Arc<Vec<u8>>) {
        self.writer.queue(frame);
    }

    /// Whether it can be sent more work at all.
    pub(crate) fn open(&self, maxtasks: u64) -> bool {
        !self.broken && !self.exiting && (maxtasks == 0 || self.sent_batches < maxtasks)
    }

    pub(crate) fn can_take(&self, b: &Batch, maxtasks: u64) -> bool {
        self.open(maxtasks)
            && self.unsent() < WINDOW_BYTES
            && (self.inflight.len() < 2
                || (self.inflight_tasks + b.count as usize <= self.window()
                    && self.inflight.len() < WINDOW_TASKS))
    }

    /// Roughly how long until the batch at the head of `inflight` is
    /// answered (zero when unknown or overdue; `None` when nothing is held).
    pub(crate) fn eta(&self, now: Instant) -> Option<Duration> {
        let head = self.inflight.front()?;
        if self.task_ns <= 0.0 {
            return Some(Duration::ZERO);
        }
        let expect = Duration::from_nanos((self.task_ns * head.count as f64) as u64);
        Some(expect.saturating_sub(now.duration_since(self.head_since)))
    }

    /// How many tasks this worker may hold: about 2 ms of work, 2..=256.
    fn window(&self) -> usize {
        if self.task_ns <= 0.0 {
            return WINDOW_TASKS;
        }
        ((2e6 / self.task_ns) as usize).clamp(2, WINDOW_TASKS)
    }

    pub(crate) fn push(&mut self, b: Batch) {
        if self.inflight.is_empty() {
            self.head_since = Instant::now();
        }
        let frame = Arc::new(b.frame);
        self.queue(&frame);
        if let Some(tail) = &b.tail {
            self.writer.queue_rest(tail);
        }
        self.inflight.push_back(Sent {
            resent: b.resent,
            frame,
            tail: b.tail,
            count: b.count,
            index: b.index,
            sink: b.sink,
            ordinal: self.next_ordinal,
            answers: b.prefix,
            base: b.base,
            partial: 0,
        });
        self.next_ordinal = self.next_ordinal.wrapping_add(1);
        self.inflight_tasks += b.count as usize;
        self.sent_batches += 1;
    }

    /// The held batches the worker has not started: their tasks, and an
    /// estimate of their work in ns (`None` before the worker answered a
    /// batch).
    pub(crate) fn unstarted(&self) -> (usize, Option<f64>) {
        let next = self.journal.next_claim();
        let tasks: usize = self
            .inflight
            .iter()
            .filter(|s| !before(s.ordinal, next))
            .map(|s| s.count as usize)
            .sum();
        let ns = (self.work_ns > 0.0).then_some(self.work_ns * tasks as f64);
        (tasks, ns)
    }

    /// Takes back every batch the worker has not started (it will skip
    /// them), in order.
    pub(crate) fn take_back(&mut self) -> Vec<Batch> {
        if self.broken {
            return Vec::new();
        }
        let first = self.journal.take_back(self.next_ordinal);
        let mut back = Vec::new();
        while let Some(s) = self.inflight.back() {
            if before(s.ordinal, first) {
                break;
            }
            let s = self.inflight.pop_back().expect("checked");
            self.inflight_tasks -= s.count as usize;
            self.sent_batches -= 1;
            let resent = s.resent;
            back.push(s.into_batch(resent));
        }
        back.reverse();
        back
    }

    /// Sends what the socket takes now.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if !self.broken && !self.writer.flush(self.sock.as_fd(), Kind::Socket)? {
            self.broken = true;
        }
        if self.exiting && !self.shut && self.writer.unsent() == 0 {
            // `EXIT` is out and nothing follows it: the end of the stream
            // tells the worker so even if a stranger's bytes cut into it
            // (the worker then sees a frame cut short and ends too).
            self.shut = true;
            let _ = rustix::net::shutdown(&*self.sock, rustix::net::Shutdown::Write);
        }
        Ok(())
    }

    /// Reads every answer available now.
    pub(crate) fn read(&mut self, done: &mut Vec<Done>) -> Result<()> {
        // The reader is set aside while its frames are handled (they
        // borrow it; handling them changes the rest of `self`).
        let mut reader = std::mem::replace(&mut self.reader, FrameReader::new(0, 0));
        let r = self.read_from(&mut reader, done);
        self.reader = reader;
        r
    }

    fn read_from(&mut self, reader: &mut FrameReader, done: &mut Vec<Done>) -> Result<()> {
        for _ in 0..256 {
            if self.corrupt.is_some() {
                break;
            }
            // A large answer is read into a kept buffer (see `Spares`).
            if self.reuse.capacity() == 0 {
                self.reuse = self.spares.take();
            }
            let frame = match wire::next(reader, self.sock.as_fd(), true, &mut self.reuse) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    let kinds = [wire::RESULTS, wire::PARTIAL, wire::FAILED];
                    if let Some(e) = wire::bad_start(reader, &kinds) {
                        self.corrupted(e.to_string());
                    }
                    break;
                }
                // The worker is gone (a frame cut short included): its
                // death is handled as such, the journal has the rest.
                Err(Error::Closed) => {
                    self.broken = true;
                    break;
                }
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.broken = true;
                    break;
                }
                Err(e @ (Error::MessageTooLarge { .. } | Error::Codec(_))) => {
                    self.corrupted(e.to_string());
                    break;
                }
                Err(e) => return Err(e),
            };
            let answer = match frame {
                Frame::Own(v) => Answer::Own(v),
                Frame::Buffered(r) => Answer::Slice(reader.buffered_payload(r)),
            };
            if let Err(why) = self.answer(answer, done) {
                self.corrupted(why);
            }
        }
        Ok(())
    }

    /// The worker broke the protocol: stop trusting it (it is killed, and
    /// its death handled as any other).
    fn corrupted(&mut self, why: String) {
        self.corrupt = Some(why);
        self.broken = true;
        let _ = self.proc.kill();
    }

    /// Handles one frame from the worker (its payload: kind, then the rest).
    fn answer(
        &mut self,
        frame: Answer<'_>,
        done: &mut Vec<Done>,
    ) -> std::result::Result<(), String> {
        let own = matches!(frame, Answer::Own(_));
        let (kind, payload) = wire::kind_of(frame.bytes()).map_err(|e| e.to_string())?;
        const H: usize = wire::ANSWER_HEADER - 5;
        if kind != wire::FAILED && payload.len() < H {
            return Err("an answer frame without its header".into());
        }
        let Some(front) = self.inflight.front_mut() else {
            return Err("an answer nobody asked for".into());
        };
        // Little-endian words of the header (absent in a FAILED frame).
        let word = |r: std::ops::Range<usize>| {
            payload.get(r).map_or(0, |b| {
                b.iter().rev().fold(0u64, |a, x| (a << 8) | u64::from(*x))
            })
        };
        let n = word(0..4) as u32;
        let work = word(4..12);
        let outcome = match kind {
            wire::PARTIAL => {
                if front.answers.is_empty() {
                    front.answers = self.spares.copy_of(&payload[H..]);
                } else {
                    front.answers.extend_from_slice(&payload[H..]);
                }
                front.partial = front.partial.saturating_add(n);
                if let Answer::Own(v) = frame {
                    self.spares.put(v);
                }
                return Ok(());
            }
            wire::RESULTS if front.answers.is_empty() => {
                if own {
                    // A large frame read into its own buffer: taken, no copy.
                    let Answer::Own(v) = frame else {
                        unreachable!("checked")
                    };
                    Ok((v, 1 + H))
                } else {
                    Ok((self.spares.copy_of(&payload[H..]), 0))
                }
            }
            wire::RESULTS => {
                let mut all = std::mem::take(&mut front.answers);
                all.extend_from_slice(&payload[H..]);
                if let Answer::Own(v) = frame {
                    self.spares.put(v);
                }
                Ok((all, 0))
            }
            wire::FAILED => Err(Fail::Failed(String::from_utf8_lossy(payload).into_owned())),
            k => return Err(wire::FrameError::Kind(k).to_string()),
        };
        let sent = self.inflight.pop_front().expect("front exists");
        self.inflight_tasks -= sent.count as usize;
        let now = Instant::now();
        let per = now.duration_since(self.head_since).as_nanos() as f64 / sent.count.max(1) as f64;
        self.task_ns = if self.task_ns <= 0.0 {
            per
        } else {
            0.7 * self.task_ns + 0.3 * per
        };
        self.head_since = now;
        if work > 0 {
            let per = work as f64 / sent.count.max(1) as f64;
            self.work_ns = if self.work_ns <= 0.0 {
                per
            } else {
                0.7 * self.work_ns + 0.3 * per
            };
        }
        done.push(match outcome {
            Ok(o) => Done {
                sent,
                pid: self.pid,
                outcome: Ok(o),
            },
            Err(f) => sent.fail(self.pid, f),
        });
        Ok(())
    }

    /// After the worker's death: handles the complete frames at the front
    /// of `rest` (what the socket and the journal still held), up to the
    /// answer frame in progress (length 0) at the end of the journal, and
    /// returns where that one starts.
    fn recover_frames(&mut self, rest: &[u8], done: &mut Vec<Done>) -> usize {
        let mut pos = 0;
        while self.corrupt.is_none() {
            let here = &rest[pos..];
            if here.len() >= 4 && here[..4] == [0; 4] {
                break;
            }
            let payload = match framing::split(here, wire::MAX_FRAME as u64) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    self.corrupted(e.to_string());
                    break;
                }
            };
            let end = payload.end;
            if let Err(why) = self.answer(Answer::Slice(&here[payload]), done) {
                self.corrupted(why);
            }
            pos += end;
        }
        pos
    }

    /// Whether it ever started a batch.
    pub(crate) fn started_any(&self) -> bool {
        self.journal.next_claim() != 0
    }

    /// The worker exited with `code`: completes every batch it answered
    /// (by the socket or in its journal), fails only the task it was
    /// running, and returns the tasks it had not started, in order, to run
    /// elsewhere (batches tried `max_resends` times fail instead).
    pub(crate) fn bury(&mut self, code: i32, max_resends: u8, done: &mut Vec<Done>) -> Vec<Batch> {
        let _ = self.read(done);
        let mut rest = Vec::new();
        let rec = if self.corrupt.is_none() {
            let (tail, rec) = self.journal.recover(self.reader.position());
            rest = self.reader.take_unconsumed();
            rest.extend_from_slice(&tail);
            let pos = self.recover_frames(&rest, done);
            rest.drain(..pos);
            Some(rec)
        } else {
            None
        };
        let next_claim = self.journal.next_claim();
        let died = match &self.corrupt {
            Some(why) => Fail::Failed(format!("the worker sent a malformed answer: {why}")),
            None => Fail::Died(code),
        };
        let mut again = Vec::new();
        let mut first = true;
        for sent in std::mem::take(&mut self.inflight) {
            let claimed = before(sent.ordinal, next_claim);
            let in_progress = std::mem::replace(&mut first, false) && claimed;
            if !claimed {
                if sent.resent + 1 >= max_resends {
                    done.push(sent.fail(self.pid, died.clone()));
                } else {
                    let resent = sent.resent + 1;
                    again.push(sent.into_batch(resent));
                }
                continue;
            }
            match (&rec, in_progress) {
                (Some(rec), true) => {
                    let rest = std::mem::take(&mut rest);
                    match self.resume(sent, rec, &rest, code, max_resends) {
                        Resumed::Done(d) => done.push(d),
                        Resumed::Again(b) => again.push(b),
                    }
                }
                _ => done.push(sent.fail(self.pid, died.clone())),
            }
        }
        self.inflight_tasks = 0;
        again
    }

    /// The batch that was in progress when the worker died: its answers so
    /// far (`PARTIAL` frames, then the frame in progress at the front of
    /// `rest`), the running task's failure, and the tasks after it.
    fn resume(
        &self,
        mut sent: Sent,
        rec: &journal::Recovered,
        rest: &[u8],
        code: i32,
        max_resends: u8,
    ) -> Resumed {
        // The whole frame (with its tail: rare, a copy is fine).
        let whole: std::borrow::Cow<'_, [u8]> = match &sent.tail {
            None => sent.frame.as_slice().into(),
            Some(t) => [sent.frame.as_slice(), t.as_slice()].concat().into(),
        };
        let items_len = whole.len().saturating_sub(wire::TASK_HEADER);
        let consistent = sent.partial <= rec.done
            && rec.done <= sent.count
            && (rec.decoded == rec.done || rec.decoded == rec.done + 1)
            && rec.decoded <= sent.count
            && rec.pos <= items_len;
        if !consistent {
            return Resumed::Done(sent.fail(self.pid, Fail::Died(code)));
        }
        // The frame in progress: length 0, kind, count, then answers.
        if rec.done > sent.partial {
            match rest.get(wire::ANSWER_HEADER..) {
                Some(a) if rest[..4] == [0; 4] => sent.answers.extend_from_slice(a),
                _ => return Resumed::Done(sent.fail(self.pid, Fail::Died(code))),
            }
        }
        let running = rec.decoded == rec.done + 1;
        if running {
            push_failure(&mut sent.answers, &Fail::Died(code));
        }
        let next = rec.decoded;
        if next == sent.count {
            let answers = std::mem::take(&mut sent.answers);
            return Resumed::Done(Done {
                sent,
                pid: self.pid,
                outcome: Ok((answers, 0)),
            });
        }
        if next == 0 {
            // Not one task started: the batch goes again as it is.
            if sent.resent + 1 >= max_resends {
                return Resumed::Done(sent.fail(self.pid, Fail::Died(code)));
            }
            let resent = sent.resent + 1;
            return Resumed::Again(sent.into_batch(resent));
        }
        // The tasks after `next` become a batch of their own, carrying the
        // answers so far. It made progress, so it is not counted as resent.
        let f = &whole;
        let mut frame = Vec::with_capacity(wire::TASK_HEADER + items_len - rec.pos);
        frame.extend_from_slice(&f[..wire::TASK_HEADER]);
        frame.extend_from_slice(&f[wire::TASK_HEADER + rec.pos..]);
        let count = sent.count - next;
        frame[13..wire::TASK_HEADER].copy_from_slice(&count.to_le_bytes());
        wire::finish(&mut frame, 0);
        drop(whole);
        Resumed::Again(Batch {
            frame,
            tail: None,
            resent: sent.resent,
            count,
            index: sent.index,
            sink: sent.sink,
            prefix: sent.answers,
            base: sent.base + next,
        })
    }
}

/// A frame's payload: in the reader's buffer, or a buffer of its own.
enum Answer<'a> {
    Slice(&'a [u8]),
    Own(Vec<u8>),
}

impl Answer<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Answer::Slice(s) => s,
            Answer::Own(v) => v,
        }
    }
}

enum Resumed {
    Done(Done),
    Again(Batch),
}
