//! The read-ahead state of a [`Connection`](super::Connection), and which
//! passed descriptors it keeps.

use std::collections::VecDeque;
use std::ops::Range;
use std::os::fd::OwnedFd;

/// At most this many received descriptors wait in a reader for their
/// message to be read: one for the message being read, one for a message
/// read ahead (a sender's connection message brings one, and a read stops
/// right after a descriptor-carrying write, so a well-behaved peer never
/// needs more). Past it, the newest is closed at once.
const MAX_HELD_FDS: usize = 2;

/// Read-ahead state: `buf[start..end]` holds received, unconsumed bytes.
///
/// # Descriptors
///
/// A descriptor arrives with the bytes of one read; it belongs to the
/// message that holds the **last** byte of that read (the kernel ends a read
/// right after the write that carried the descriptor, and
/// [`Connection::send_connection`](super::Connection::send_connection) sends the descriptor with its message).
/// `fds` keeps each with that byte's position in the stream. When a message
/// is consumed, every descriptor at a position before its end is closed,
/// except the one [`Connection::recv_connection`](super::Connection::recv_connection) takes. So only descriptors
/// that `recv_connection` asks for are ever kept, and a peer that sends
/// descriptors with other messages gets them closed as those messages are
/// read.
#[derive(Default)]
pub(super) struct Reader {
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
    /// Stream position of `buf[end]`: every byte ever received.
    pub(super) pos: u64,
    /// Descriptors received with `SCM_RIGHTS`, oldest first, each with the
    /// stream position of the last byte that came with it.
    pub(super) fds: VecDeque<(u64, OwnedFd)>,
    /// A large payload interrupted by a timeout: its bytes so far and its
    /// full length. The next receive resumes it.
    pub(super) pending: Option<(Vec<u8>, usize)>,
    /// The descriptor that came with the message just received, if any;
    /// taken by `recv_connection`, closed by the next receive otherwise.
    pub(super) msg_fd: Option<OwnedFd>,
}

impl Reader {
    pub(super) fn buffered(&self) -> usize {
        self.end - self.start
    }

    pub(super) fn holds_data(&self) -> bool {
        self.buffered() > 0 || !self.fds.is_empty() || self.pending.is_some()
    }

    /// Keeps `fd`, which came with the bytes just read (already counted in
    /// `pos`), unless [`MAX_HELD_FDS`] wait already: then it closes now.
    pub(super) fn received_fd(&mut self, fd: OwnedFd) {
        if self.fds.len() < MAX_HELD_FDS {
            self.fds.push_back((self.pos.saturating_sub(1), fd));
        }
    }

    /// A message was just consumed: `range` is its payload in `buf`, or
    /// `None` for a large payload read to its end outside `buf`. Closes
    /// every descriptor that came with it (or before it), except the first
    /// one of the message, kept in `msg_fd` when `want_fd` (for
    /// `recv_connection`).
    pub(super) fn message_read(&mut self, range: Option<&Range<usize>>, want_fd: bool) {
        // The stream position just past the message: a large payload is read
        // exactly to its end; a buffered one ends `end - range.end` bytes
        // before the read-ahead does (`end` is reset to 0 when the message
        // emptied the buffer).
        let msg_end = match range {
            Some(range) => self.pos - self.end.saturating_sub(range.end) as u64,
            None => self.pos,
        };
        self.msg_fd = None;
        while self.fds.front().is_some_and(|(at, _)| *at < msg_end) {
            if let Some((_, fd)) = self.fds.pop_front() {
                if want_fd && self.msg_fd.is_none() {
                    self.msg_fd = Some(fd);
                }
                // Any other: dropped here, which closes it.
            }
        }
    }
}
