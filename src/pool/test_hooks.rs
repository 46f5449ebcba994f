//! Hooks for tests of hostile bytes on the pool's sockets (feature
//! `test-hooks`). Not part of the API.

use super::Pool;
use crate::error::{Error, Result};
use crate::sys::conn_io::Kind;
use crate::sys::framing;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

/// A copy of the socket of the worker this process is.
static WORKER_SOCKET: OnceLock<OwnedFd> = OnceLock::new();

/// Records the worker's socket (called by the worker loop).
pub(crate) fn set_worker_socket(fd: BorrowedFd<'_>) {
    if let Ok(dup) = fd.try_clone_to_owned() {
        let _ = WORKER_SOCKET.set(dup);
    }
}

/// Writes `bytes`, as they are, to the socket of one of `pool`'s workers,
/// as a stranger holding it could; returns that worker's pid. Call it while
/// the pool is idle (the bytes must not cut into a frame being sent).
pub fn send_raw_to_worker(pool: &Pool, bytes: &[u8]) -> Result<i32> {
    pool.shared.with_worker_socket(|pid, fd| {
        framing::write_all(fd, Kind::Socket, &[bytes], &[])?;
        Ok(pid)
    })
}

/// Inside a pool worker's task: writes `bytes`, as they are, to the
/// worker's socket, ahead of the answers it has not sent yet — a worker
/// gone wrong, as its parent sees it.
pub fn worker_send_raw(bytes: &[u8]) -> Result<()> {
    let fd = WORKER_SOCKET
        .get()
        .ok_or_else(|| Error::InvalidState("not in a pool worker".into()))?;
    Ok(framing::write_all(fd.as_fd(), Kind::Socket, &[bytes], &[])?)
}
