//! The pool's results as a `Future` and a `Stream`.
//!
//! Nothing here blocks for long: a polled future first drives the pool
//! itself for at most [`SPIN`] (if no other thread does), which catches a
//! quick answer; otherwise it registers its waker with the result (or the
//! imap batch stream) and asks the pool's supervisor thread to drive the
//! workers' sockets, and the supervisor wakes it when the result arrives.

use crate::error::Result;
use crate::pool::{AsyncResult, IMap};
use serde::{de::DeserializeOwned, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long a polled future drives the pool itself before it leaves the
/// rest to the supervisor thread: short enough for a runtime thread (tokio
/// asks tasks to yield within 10–100 µs), long enough to catch a quick
/// answer without two thread wake-ups.
const SPIN: Duration = Duration::from_micros(100);

/// Awaiting an `AsyncResult` gives what [`get`](AsyncResult::get) gives,
/// without blocking a runtime thread (feature `tokio`). Cancel safe: the
/// task keeps running in the pool whether or not it is awaited.
///
/// ```no_run
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// # fn main() -> multiproc::Result<()> {
/// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// # rt.block_on(async {
/// let pool = multiproc::Pool::new(2)?;
/// assert_eq!(pool.apply_async(square, (7,))?.await?, 49);
/// # Ok(()) })
/// # }
/// ```
impl<V> Future for AsyncResult<V> {
    type Output = Result<V>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<V>> {
        let out = &self.out;
        if let Err(e) = self.shared.drive_for(&|| out.is_ready(), SPIN) {
            return Poll::Ready(Err(e));
        }
        if !self.out.is_ready() {
            self.out.set_waker(cx.waker());
            // Set after the check above and before the waker was stored?
            if !self.out.is_ready() {
                self.shared.wake_for_async();
                return Poll::Pending;
            }
        }
        Poll::Ready(self.take())
    }
}

/// An [`IMap`] (from [`Pool::imap`](crate::Pool::imap) or
/// [`imap_unordered`](crate::Pool::imap_unordered)) is also a
/// [`futures_core::Stream`] of the same items (feature `tokio`): each
/// task's `Result`, in input order for `imap`, in completion order for
/// `imap_unordered`. Cancel safe: a result not yet yielded stays in the
/// stream. Iterate it either way, not both at once.
impl<I, R> futures_core::Stream for IMap<I, R>
where
    I: Iterator + Unpin,
    I::Item: Serialize,
    R: DeserializeOwned + Send + Unpin + 'static,
{
    type Item = Result<R>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        let this = self.get_mut();
        if let Some(e) = this.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        if let Err(e) = this.top_up() {
            // Stop taking input; what was sent is still yielded.
            this.stopped = true;
            return Poll::Ready(Some(Err(e)));
        }
        if this.current.is_empty() {
            let stream = &this.stream;
            let seen = stream.completions.load(Ordering::Acquire);
            let moved = || stream.completions.load(Ordering::Acquire) != seen;
            if let Err(e) = this.shared.drive_for(&moved, SPIN) {
                return Poll::Ready(Some(Err(e)));
            }
        }
        for attempt in 0..2 {
            if let Some(r) = this.pop() {
                this.yielded += 1;
                this.progress.inc(1);
                return Poll::Ready(Some(r.map_err(|e| e.to_error())));
            }
            if this.submitted == this.yielded {
                this.progress.finish();
                return Poll::Ready(None);
            }
            if attempt == 0 {
                // Register, then look once more: a batch completed in
                // between finds the waker or is popped here.
                let mut w = this.stream.waker.lock().unwrap_or_else(|e| e.into_inner());
                *w = Some(cx.waker().clone());
            }
        }
        this.shared.wake_for_async();
        Poll::Pending
    }
}
