//! A batch's life in the parent: ready to send ([`Batch`]), held by a
//! worker ([`Sent`]), answered or failed ([`Done`]).

use super::sink::{Fail, Sink};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

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
    /// Hands the answers to the batch's sink; returns their buffer (empty
    /// if none), for [`Spares::put`].
    pub(crate) fn deliver(self) -> Vec<u8> {
        let outcome = match &self.outcome {
            Ok((bytes, start)) => Ok(&bytes[*start..]),
            Err(f) => Err(f),
        };
        let s = &self.sent;
        s.sink
            .complete(s.index, s.base + s.count, self.pid, outcome);
        self.outcome.map_or_else(|_| Vec::new(), |(bytes, _)| bytes)
    }
}

/// Answer buffers kept between batches: a large batch's answers are read
/// into a buffer that the last one's delivery gave back (a fresh buffer of
/// that size costs a page fault per page, on the parent's critical path).
#[derive(Debug, Default)]
pub(crate) struct Spares {
    kept: Mutex<Vec<Vec<u8>>>,
    /// How many are kept (a hint read without the lock: most reads of a
    /// worker's answers find none to take, and skip the lock).
    count: AtomicUsize,
}

impl Spares {
    /// Buffers smaller than this are not worth keeping.
    pub(crate) const MIN: usize = 16 << 10;
    /// Buffers larger than this are freed, not kept.
    const MAX: usize = 4 << 20;
    /// At most this many are kept.
    const COUNT: usize = 4;

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A kept buffer, empty (no allocation if none is kept).
    pub(crate) fn take(&self) -> Vec<u8> {
        if self.count.load(Relaxed) == 0 {
            return Vec::new();
        }
        let mut all = self.lock();
        let mut v = all.pop().unwrap_or_default();
        self.count.store(all.len(), Relaxed);
        drop(all);
        v.clear();
        v
    }

    /// A kept buffer holding a copy of `bytes`: a fresh one if `bytes` is
    /// small or no kept buffer is large enough.
    pub(crate) fn copy_of(&self, bytes: &[u8]) -> Vec<u8> {
        if bytes.len() >= Self::MIN {
            let mut all = self.lock();
            if let Some(i) = all.iter().position(|v| v.capacity() >= bytes.len()) {
                let mut v = all.swap_remove(i);
                self.count.store(all.len(), Relaxed);
                drop(all);
                v.clear();
                v.extend_from_slice(bytes);
                return v;
            }
        }
        bytes.to_vec()
    }

    /// Keeps `v` for a later batch if it is worth it and there is room.
    pub(crate) fn put(&self, v: Vec<u8>) {
        if (Self::MIN..=Self::MAX).contains(&v.capacity()) {
            let mut all = self.lock();
            if all.len() < Self::COUNT {
                all.push(v);
                self.count.store(all.len(), Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_copy_exactly_and_keep_a_bounded_number_of_useful_buffers() {
        let s = Spares::default();
        // Nothing kept: a copy is still exact.
        let big = vec![7u8; Spares::MIN + 5];
        assert_eq!(s.copy_of(&big), big);
        // Small and huge buffers are not kept; at most `COUNT` are.
        s.put(Vec::with_capacity(16));
        s.put(Vec::with_capacity(Spares::MAX + 1));
        assert!(s.take().capacity() == 0);
        for _ in 0..Spares::COUNT + 3 {
            let mut v = Vec::with_capacity(Spares::MIN * 2);
            v.extend_from_slice(b"stale");
            s.put(v);
        }
        assert_eq!(s.lock().len(), Spares::COUNT);
        // A kept buffer comes back empty, or holding exactly the copy.
        assert!(s.take().is_empty());
        let data: Vec<u8> = (0..Spares::MIN + 1).map(|i| i as u8).collect();
        let got = s.copy_of(&data);
        assert_eq!(got, data);
        assert!(got.capacity() >= Spares::MIN * 2, "a kept buffer was used");
        assert_eq!(s.lock().len(), Spares::COUNT - 2);
    }
}
