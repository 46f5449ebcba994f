//! Fork-safety helpers: after-fork hooks and a buffered writer that never
//! writes its parent's buffered bytes twice.
//!
//! CPython's guideline: a buffered writer (say a file object with unflushed
//! data) copied into a forked child would flush the same bytes twice, once in
//! each process. [`ForkSafeWriter`] remembers the pid that filled its buffer
//! and drops inherited, unflushed bytes in a child instead of writing them.
#![allow(unsafe_code)]

use std::io::{self, Write};
use std::sync::atomic::{AtomicPtr, Ordering};

/// One registered after-fork hook. Nodes form a singly linked list that is
/// only ever appended to; they are leaked, never freed, so the list can be
/// walked without a lock (a forked child must take none: another thread may
/// have held it at the fork).
struct HookNode {
    hook: fn(),
    next: AtomicPtr<HookNode>,
}

static AFTER_FORK: AtomicPtr<HookNode> = AtomicPtr::new(std::ptr::null_mut());

/// The node `p` points to, if any.
fn node(p: *mut HookNode) -> Option<&'static HookNode> {
    // SAFETY: every non-null pointer in the list came from `Box::into_raw`
    // in `register_after_fork` and is never freed, and its fields were
    // written before it was published with a release exchange (read here
    // after an acquire load).
    unsafe { p.as_ref() }
}

/// Registers `hook` to run in every child started by the *fork* method, right
/// after the fork, before the target (Python's `util.register_after_fork`).
/// Hooks run in the order they were registered; a hook registered while
/// another thread starts a process runs in that child if its registration
/// finished before the fork. Children started by *spawn* begin with fresh
/// memory and need none.
pub fn register_after_fork(hook: fn()) {
    let new = Box::into_raw(Box::new(HookNode {
        hook,
        next: AtomicPtr::new(std::ptr::null_mut()),
    }));
    let mut link = &AFTER_FORK;
    loop {
        match link.compare_exchange(
            std::ptr::null_mut(),
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return,
            Err(next) => match node(next) {
                Some(n) => link = &n.next,
                None => unreachable!("the exchange failed on a non-null pointer"),
            },
        }
    }
}

/// Runs the registered hooks in order; takes no lock and allocates nothing.
pub(crate) fn run_after_fork_hooks() {
    let mut p = AFTER_FORK.load(Ordering::Acquire);
    while let Some(n) = node(p) {
        (n.hook)();
        p = n.next.load(Ordering::Acquire);
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
