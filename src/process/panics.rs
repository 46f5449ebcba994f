//! A child's panics: the hook that keeps the first one (message and
//! backtrace) for the report to the parent without taking a lock (a forked
//! child may not take one another thread of its parent held at the fork),
//! and the per-thread capture pool workers use.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// The first panic of a child: message and backtrace, kept for the report to
/// the parent. A leaked `Box` or null; swapped, never locked (a forked child
/// may not take a lock another thread of its parent held at the fork).
static PANIC_SLOT: AtomicPtr<(String, String)> = AtomicPtr::new(std::ptr::null_mut());

/// How many threads are inside the panic hook right now. A forked child reads
/// its copy: if a thread of the parent was in the hook at the fork, std's
/// backtrace and output locks may be held forever in the child.
static IN_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Set in a forked child whose parent had a thread inside the panic hook at
/// the fork: the child captures no backtrace (std's backtrace lock may be
/// held by a thread that does not exist in the child).
static BACKTRACE_LOCKED: AtomicBool = AtomicBool::new(false);

/// Whether `RUST_BACKTRACE` asks for backtraces on stderr; read by the parent
/// before every fork (a forked child must not read the environment, whose
/// lock another thread may hold).
static SHOW_BACKTRACE: AtomicBool = AtomicBool::new(false);

/// Set by a pool worker: its panics are kept per thread for the task's error
/// ([`take_thread_panic`]) instead of being printed and reported.
static CAPTURE_PER_THREAD: AtomicBool = AtomicBool::new(false);

thread_local! {
    static THREAD_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Writes `text` to descriptor 2 without taking std's stderr lock.
pub(super) fn write_stderr_raw(text: &str) {
    // SAFETY: fd 2 is borrowed only for this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(2) };
    let mut buf = text.as_bytes();
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(0) => return,
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// A panic's message with its location: `"text (at file:line)"`.
pub(crate) fn panic_message(info: &std::panic::PanicHookInfo<'_>) -> String {
    let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = info.payload().downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    };
    match info.location() {
        Some(l) => format!("{message} (at {}:{})", l.file(), l.line()),
        None => message,
    }
}

/// In a child, a panic prints as Python prints an exception in a child
/// (`Process NAME (pid N) panicked: ...`, with the backtrace when
/// `RUST_BACKTRACE` asks for it) and is kept for the report to the parent.
///
/// Installed once per process (before the first fork, so a forked child never
/// calls `set_hook`, whose lock a panicking parent thread may hold); outside
/// a child it defers to the previous hook.
pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(install_panic_hook_now);
}

/// Reads `RUST_BACKTRACE` into [`SHOW_BACKTRACE`].
pub(super) fn read_backtrace_env() {
    let show = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    SHOW_BACKTRACE.store(show, Ordering::Relaxed);
}

fn install_panic_hook_now() {
    read_backtrace_env();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        IN_HOOK.fetch_add(1, Ordering::SeqCst);
        child_panic_hook(info, &*previous);
        IN_HOOK.fetch_sub(1, Ordering::SeqCst);
    }));
}

/// The hook's body. In a child it takes no lock: the identity is read
/// lock-free, the report goes straight to descriptor 2, and the backtrace is
/// skipped when std's backtrace lock may be held by a vanished thread.
fn child_panic_hook(
    info: &std::panic::PanicHookInfo<'_>,
    previous: &(dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send),
) {
    if CAPTURE_PER_THREAD.load(Ordering::Relaxed) {
        let kept = (panic_message(info), backtrace_text());
        THREAD_PANIC.with(|p| *p.borrow_mut() = Some(kept));
        return;
    }
    let Some(me) = super::CURRENT.get() else {
        return previous(info);
    };
    let message = panic_message(info);
    let bt = backtrace_text();
    // SAFETY: plain syscall.
    let pid = unsafe { libc::getpid() };
    let mut text = format!("Process {} (pid {pid}) panicked: {message}\n", me.name);
    if SHOW_BACKTRACE.load(Ordering::Relaxed) {
        text.push_str(&bt);
        text.push('\n');
    }
    write_stderr_raw(&text);
    let kept = Box::into_raw(Box::new((message, bt)));
    if PANIC_SLOT
        .compare_exchange(
            std::ptr::null_mut(),
            kept,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // SAFETY: `kept` came from `Box::into_raw` just above and was not
        // published (the exchange failed), so this is its only owner.
        drop(unsafe { Box::from_raw(kept) });
    }
}

/// This thread's backtrace, unless std's backtrace lock may be stuck (see
/// [`BACKTRACE_LOCKED`]).
fn backtrace_text() -> String {
    if BACKTRACE_LOCKED.load(Ordering::Relaxed) {
        return "(no backtrace: another thread of the parent process was panicking \
                when this process was forked)"
            .to_string();
    }
    std::backtrace::Backtrace::force_capture().to_string()
}

/// Takes the first panic kept by a child (see [`child_panic_hook`]).
pub(super) fn take_child_panic() -> Option<(String, String)> {
    let p = PANIC_SLOT.swap(std::ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: a non-null pointer in the slot came from `Box::into_raw` in
    // `child_panic_hook`, and the swap made this call its only owner.
    (!p.is_null()).then(|| *unsafe { Box::from_raw(p) })
}

/// Makes this process keep each thread's panic (message and backtrace) for
/// [`take_thread_panic`] instead of printing and reporting it (pool workers,
/// which turn a task's panic into that task's error). Takes no lock.
pub(crate) fn capture_panics_per_thread() {
    // Already installed (without a lock) in a forked or spawned child; an MPI
    // rank installs it here.
    install_panic_hook();
    CAPTURE_PER_THREAD.store(true, Ordering::Relaxed);
}

/// The last panic kept on this thread by [`capture_panics_per_thread`].
pub(crate) fn take_thread_panic() -> Option<(String, String)> {
    THREAD_PANIC.with(|p| p.borrow_mut().take())
}

/// In a forked child right after `fork` (no lock, no allocation): forgets
/// the parent's hook state. A hook that was running in the parent (on a
/// thread that does not exist here) may have held the backtrace lock: do not
/// take it. A copy of the parent's kept panic (if the parent is itself a
/// child that panicked on another thread) is not ours: leak it.
pub(super) fn forget_parent_state() {
    if IN_HOOK.load(Ordering::SeqCst) > 0 {
        BACKTRACE_LOCKED.store(true, Ordering::Relaxed);
    }
    IN_HOOK.store(0, Ordering::SeqCst);
    CAPTURE_PER_THREAD.store(false, Ordering::Relaxed);
    PANIC_SLOT.store(std::ptr::null_mut(), Ordering::Relaxed);
}
