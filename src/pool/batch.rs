//! A batch's life in the parent: ready to send ([`Batch`]), held by a
//! worker ([`Sent`]), answered or failed ([`Done`]).

use super::sink::{Fail, Sink};
use std::sync::Arc;

/// A batch of tasks ready to send: a complete `TASKS` frame.
pub(crate) struct Batch {
    pub(crate) frame: Vec<u8>,
    /// The frame's last bytes, when they are a task's large byte payload
    /// sent from where it lies (`frame`'s header counts them).
    pub(crate) tail: Option<Arc<Vec<u8>>>,
    /// How many workers died before starting it (it fails at `MAX_RESENDS`).
    pub(crate) resent: u8,
    pub(crate) count: u32,
    pub(crate) index: usize,
    pub(crate) sink: Arc<dyn Sink>,
    /// The answers of the batch's first `base` tasks, when a worker died
    /// after answering them: the frame holds only the tasks after those.
    pub(crate) prefix: Vec<u8>,
    pub(crate) base: u32,
}

impl Batch {
    pub(crate) fn new(
        (frame, tail): (Vec<u8>, Option<Vec<u8>>),
        count: u32,
        index: usize,
        sink: Arc<dyn Sink>,
    ) -> Batch {
        Batch {
            frame,
            tail: tail.map(Arc::new),
            resent: 0,
            count,
            index,
            sink,
            prefix: Vec::new(),
            base: 0,
        }
    }

    /// A batch that will never run: every task fails with `f`.
    pub(crate) fn fail(self, f: Fail) -> Done {
        let sent = Sent {
            resent: self.resent,
            frame: Arc::new(Vec::new()),
            tail: None,
            count: self.count,
            index: self.index,
            sink: self.sink,
            ordinal: 0,
            answers: self.prefix,
            base: self.base,
            partial: 0,
        };
        sent.fail(0, f)
    }
}

pub(crate) struct Sent {
    pub(crate) resent: u8,
    /// Its frame, kept until answered: a batch the worker never started is
    /// sent again to another worker if this one dies.
    pub(crate) frame: Arc<Vec<u8>>,
    /// Its tail (see [`Batch::tail`]).
    pub(crate) tail: Option<Arc<Vec<u8>>>,
    pub(crate) count: u32,
    pub(crate) index: usize,
    pub(crate) sink: Arc<dyn Sink>,
    /// Which `TASKS` frame of its worker it is (see `journal`).
    pub(crate) ordinal: u32,
    /// The answers so far: the batch's prefix, then `PARTIAL` frames.
    pub(crate) answers: Vec<u8>,
    pub(crate) base: u32,
    /// Tasks of the frame answered by `PARTIAL` frames.
    pub(crate) partial: u32,
}

impl Sent {
    pub(crate) fn into_batch(self, resent: u8) -> Batch {
        Batch {
            frame: Arc::try_unwrap(self.frame).unwrap_or_else(|a| (*a).clone()),
            tail: self.tail,
            resent,
            count: self.count,
            index: self.index,
            sink: self.sink,
            prefix: self.answers,
            base: self.base,
        }
    }

    /// Every task not answered yet fails with `f`.
    pub(crate) fn fail(mut self, pid: i32, f: Fail) -> Done {
        let outcome = if self.base + self.partial == 0 {
            Err(f)
        } else {
            for _ in self.partial..self.count {
                push_failure(&mut self.answers, &f);
            }
            Ok((std::mem::take(&mut self.answers), 0))
        };
        Done {
            sent: self,
            pid,
            outcome,
        }
    }
}

/// Appends one task's answer saying it failed with `f` (tags 2 to 4, as
/// `result::decode_items` reads them).
pub(crate) fn push_failure(out: &mut Vec<u8>, f: &Fail) {
    match f {
        Fail::Failed(m) => {
            out.push(2);
            let _ = crate::codec::put(m, out);
        }
        Fail::Died(code) => {
            out.push(3);
            let _ = crate::codec::put(code, out);
        }
        Fail::Broken => out.push(4),
    }
}

/// A finished batch, to hand to its sink outside the lock.
pub(crate) struct Done {
    pub(crate) sent: Sent,
    pub(crate) pid: i32,
    /// The answer bytes' buffer and where they start.
    pub(crate) outcome: std::result::Result<(Vec<u8>, usize), Fail>,
}

impl Done {
    /// Hands the answers to the batch's sink.
    pub(crate) fn deliver(self) {
        let outcome = match &self.outcome {
            Ok((bytes, start)) => Ok(&bytes[*start..]),
            Err(f) => Err(f),
        };
        let s = &self.sent;
        s.sink
            .complete(s.index, s.base + s.count, self.pid, outcome);
    }
}
