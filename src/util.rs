//! Fork-safety helpers: after-fork hooks and a buffered writer that never
//! writes its parent's buffered bytes twice.
//!
//! CPython's guideline: a buffered writer (say a file object with unflushed
//! data) copied into a forked child would flush the same bytes twice, once in
//! each process. [`ForkSafeWriter`] remembers the pid that filled its buffer
//! and drops inherited, unflushed bytes in a child instead of writing them.

use std::io::{self, Write};
use std::sync::Mutex;

static AFTER_FORK: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

/// Registers `hook` to run in every child started by the *fork* method, right
/// after the fork, before the target (Python's `util.register_after_fork`).
/// Children started by *spawn* begin with fresh memory and need none.
pub fn register_after_fork(hook: fn()) {
    AFTER_FORK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(hook);
}

pub(crate) fn run_after_fork_hooks() {
    let hooks: Vec<fn()> = match AFTER_FORK.try_lock() {
        Ok(g) => g.clone(),
        Err(_) => return,
    };
    for h in hooks {
        h();
    }
}

/// A buffered writer that is safe to inherit across `fork`: bytes buffered by
/// one process are written only by that process.
///
/// ```
/// use multiproc::util::ForkSafeWriter;
/// use std::io::Write;
///
/// let mut w = ForkSafeWriter::new(Vec::new());
/// write!(w, "hello").unwrap();
/// w.flush().unwrap();
/// assert_eq!(w.get_ref(), b"hello");
/// ```
#[derive(Debug)]
pub struct ForkSafeWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    pid: u32,
    capacity: usize,
}

impl<W: Write> ForkSafeWriter<W> {
    /// Wraps `inner` with an 8 KiB buffer.
    pub fn new(inner: W) -> Self {
        Self::with_capacity(8192, inner)
    }

    /// Wraps `inner` with a buffer of `capacity` bytes.
    pub fn with_capacity(capacity: usize, inner: W) -> Self {
        ForkSafeWriter {
            inner,
            buf: Vec::with_capacity(capacity),
            pid: std::process::id(),
            capacity,
        }
    }

    /// The wrapped writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Drops bytes buffered by another process (our parent before a fork).
    fn check_pid(&mut self) {
        let pid = std::process::id();
        if pid != self.pid {
            self.buf.clear();
            self.pid = pid;
        }
    }
}

impl<W: Write> Write for ForkSafeWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check_pid();
        if self.buf.len() + data.len() > self.capacity {
            self.flush()?;
        }
        if data.len() >= self.capacity {
            return self.inner.write(data);
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check_pid();
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for ForkSafeWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
