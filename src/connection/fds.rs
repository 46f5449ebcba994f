//! The receiving state of a [`Connection`](super::Connection): its
//! [`FrameReader`], the buffer large payloads are read into, and which
//! passed descriptors it keeps.

use super::framing::{Frame, FrameReader};
use std::collections::VecDeque;
use std::os::fd::OwnedFd;

/// Size of a connection's read-ahead buffer: a small message and its header
/// arrive in one `read`.
const READ_BUF: usize = 16 * 1024;

/// Payloads of this size and more are read straight into their destination.
const DIRECT_MIN: usize = 8 * 1024;

/// At most this many received descriptors wait in a reader for their
/// message to be read: one for the message being read, one for a message
/// read ahead (a sender's connection message brings one, and a read stops
/// right after a descriptor-carrying write, so a well-behaved peer never
/// needs more). Past it, the newest is closed at once.
const MAX_HELD_FDS: usize = 2;

/// The receive buffer is kept between receives up to this capacity (like
/// the send side's scratch buffer), and a buffer is offered to a scatter
/// read only for frames up to this size: past it, a wrong guess (a small
/// frame next, or a larger one, whose buffer then grows by a copy) costs
/// more than the 16 KiB copy a scatter read saves.
const KEEP_BUF: usize = 1 << 20;

/// Receiving state: the frames, and the descriptors that came with them.
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
#[derive(Debug)]
pub(super) struct Reader {
    pub(super) frames: FrameReader,
    /// Descriptors received with `SCM_RIGHTS`, oldest first, each with the
    /// stream position of the last byte that came with it.
    fds: VecDeque<(u64, OwnedFd)>,
    /// The descriptor that came with the message just received, if any;
    /// taken by `recv_connection`, closed by the next receive otherwise.
    pub(super) msg_fd: Option<OwnedFd>,
    /// The receive buffer (empty, at most [`KEEP_BUF`] bytes of capacity):
    /// a typed receive reads a large payload into it and decodes it there.
    spare: Vec<u8>,
}

impl Default for Reader {
    fn default() -> Reader {
        Reader {
            frames: FrameReader::new(READ_BUF, DIRECT_MIN),
            fds: VecDeque::new(),
            msg_fd: None,
            spare: Vec::new(),
        }
    }
}

impl Reader {
    pub(super) fn holds_data(&self) -> bool {
        self.frames.holds_data() || !self.fds.is_empty()
    }

    /// Keeps `fd`, which came with the byte at stream position `at`, unless
    /// [`MAX_HELD_FDS`] wait already: then it closes now.
    pub(super) fn received_fd(fds: &mut VecDeque<(u64, OwnedFd)>, fd: OwnedFd, at: u64) {
        if fds.len() < MAX_HELD_FDS {
            fds.push_back((at, fd));
        }
    }

    /// The buffer for [`FrameReader::next`]'s `reuse`: the kept one, or,
    /// when the next read is a scatter read right after a large frame (of at
    /// most [`KEEP_BUF`] bytes, and `max`), one of that frame's size, so
    /// that a stream of large messages costs one read each: the payload
    /// lands in it, the next header in the read-ahead. Its size is that of a
    /// frame already accepted, never a length just announced: a new frame's
    /// length is checked against `max` before the buffer grows to it. Give
    /// it back with [`keep_buffer`](Self::keep_buffer).
    pub(super) fn take_buffer(&mut self, max: u64) -> Vec<u8> {
        let buf = std::mem::take(&mut self.spare);
        match self.frames.scatter_hint() {
            Some(len) if len <= KEEP_BUF && len as u64 <= max && buf.capacity() < len => {
                Vec::with_capacity(len)
            }
            _ => buf,
        }
    }

    /// Keeps `buf` (emptied) as the receive buffer if it is no larger than
    /// [`KEEP_BUF`] and larger than the one kept.
    pub(super) fn keep_buffer(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() <= KEEP_BUF && buf.capacity() > self.spare.capacity() {
            buf.clear();
            self.spare = buf;
        }
    }

    /// The held descriptors, for [`FrameReader::next`]'s `on_fd`.
    pub(super) fn split(&mut self) -> (&mut FrameReader, &mut VecDeque<(u64, OwnedFd)>) {
        (&mut self.frames, &mut self.fds)
    }

    /// `frame` was just received. Closes every descriptor that came with it
    /// (or before it), except the first one of the message, kept in
    /// `msg_fd` when `want_fd` (for `recv_connection`).
    pub(super) fn message_read(&mut self, frame: &Frame, want_fd: bool) {
        let msg_end = self.frames.end_of(frame);
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
