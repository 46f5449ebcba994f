//! Descriptors held outside the descriptor table, in an `io_uring`'s table
//! of fixed (registered) files, and watched there for a hang-up.
//!
//! Every descriptor a process holds is copied into each child it forks and
//! closed there again, so a descriptor held per living child makes every
//! fork slower in proportion to the number of children. A *parked* file
//! costs the fork nothing: it sits in the ring's fixed-file table, which a
//! fork does not copy (the child inherits only the ring's own descriptor,
//! one for the whole process, and closes it with the others). A parked file
//! is watched with a one-shot `POLL_ADD` on its fixed slot, and given back
//! as an ordinary descriptor (`FIXED_FD_INSTALL`) when its owner needs it.
//!
//! The ring is optional: [`Ring::new`] fails where `io_uring` is missing or
//! forbidden (old kernels, seccomp filters, `io_uring_disabled`), where the
//! kernel lacks an operation used here, or when the environment variable
//! `MULTIPROC_NO_IO_URING` is set (which tests use to exercise the fallback);
//! callers then keep their descriptors in the table.
//!
//! A side effect callers must document: the kernel completes a watch by
//! queueing work for the thread that submitted it, and notifies that thread
//! as a signal would, so its blocking system call at that moment is
//! interrupted. Calls that restart by themselves (read, poll, futex, wait)
//! are unaffected; `epoll_wait`, `sigtimedwait` and the like return `EINTR`,
//! as they would with a `SIGCHLD` handler installed.
#![allow(unsafe_code)]

use io_uring::{opcode, types, IoUring};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The most files parked at once (further ones stay in the table).
const MAX_SLOTS: u32 = 16384;

/// The size of the completion queue.
const CQ_ENTRIES: u32 = 1024;

/// Marks the completion of a [`Ring::unpark`]'s install (not a watch).
const TAG_INSTALL: u64 = 1 << 63;
/// Marks the completion of a watch's cancellation (ignored).
const TAG_CANCEL: u64 = 1 << 62;

/// A parked file's watch that ended: it fired, or was cancelled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    /// The `key` given to [`Ring::park`].
    pub(crate) key: u32,
    /// The slot the file is parked in.
    pub(crate) slot: u32,
}

/// One process's ring and its table of fixed files.
pub(crate) struct Ring {
    ring: IoUring,
    /// Free slots of the sparse fixed-file table.
    free: Vec<u32>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.ring.as_raw_fd())
            .field("free", &self.free.len())
            .finish()
    }
}

fn watch_data(key: u32, slot: u32) -> u64 {
    (u64::from(slot) << 32) | u64::from(key)
}

impl Ring {
    /// A ring with a sparse fixed-file table, or `None` where this process
    /// cannot have one (see the module docs).
    pub(crate) fn new() -> Option<Ring> {
        if std::env::var_os("MULTIPROC_NO_IO_URING").is_some() {
            return None;
        }
        // The fixed-file table may not exceed RLIMIT_NOFILE.
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let slots = u32::try_from(limit.min(u64::from(MAX_SLOTS))).ok()?;
        if slots < 64 {
            return None;
        }
        // One completion per parked file, one per cancelled watch and per
        // install: more than the queue holds are kept by the kernel (none
        // is lost) and brought back by `drain`. A small queue keeps the
        // ring's mapping, which each fork copies, small.
        let ring = IoUring::builder().setup_cqsize(CQ_ENTRIES).build(8).ok()?;
        let mut probe = io_uring::Probe::new();
        ring.submitter().register_probe(&mut probe).ok()?;
        let needed = [
            opcode::PollAdd::CODE,
            opcode::PollRemove::CODE,
            opcode::FixedFdInstall::CODE,
        ];
        if !needed.iter().all(|&op| probe.is_supported(op)) {
            return None;
        }
        ring.submitter().register_files_sparse(slots).ok()?;
        Some(Ring {
            ring,
            free: (0..slots).rev().collect(),
        })
    }

    /// In a freshly forked child: forgets this copy of the parent's ring
    /// without unmapping or freeing anything (no allocator call after a
    /// fork); the child's descriptor cleanup closes the ring's descriptor.
    pub(crate) fn forget(self) {
        std::mem::forget(self);
    }

    /// Moves `fd` into a free slot and watches it for a hang-up
    /// (`POLLHUP`/`POLLRDHUP`, not `POLLIN`); [`drain`](Self::drain)
    /// reports it with `key`. Gives `fd` back when it cannot be parked (no
    /// free slot, or the kernel refused).
    pub(crate) fn park(&mut self, fd: OwnedFd, key: u32) -> Result<u32, OwnedFd> {
        let Some(slot) = self.free.pop() else {
            return Err(fd);
        };
        let submitter = self.ring.submitter();
        if submitter
            .register_files_update(slot, &[fd.as_raw_fd()])
            .is_err()
        {
            self.free.push(slot);
            return Err(fd);
        }
        let watch = opcode::PollAdd::new(
            types::Fixed(slot),
            (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) as u32,
        )
        .build()
        .user_data(watch_data(key, slot));
        if !self.submit(&watch) {
            self.clear_slot(slot);
            return Err(fd);
        }
        // The table holds its own reference to the file now.
        drop(fd);
        Ok(slot)
    }

    /// Submits one entry; `false` if it could not be.
    fn submit(&mut self, entry: &io_uring::squeue::Entry) -> bool {
        self.submit_all(std::slice::from_ref(entry))
    }

    /// Submits `entries` together (one system call); `false` if they could
    /// not all be.
    fn submit_all(&mut self, entries: &[io_uring::squeue::Entry]) -> bool {
        // SAFETY: the entries used here (poll add and remove, fixed-fd
        // install) point at no memory of ours: nothing must outlive them.
        if unsafe { self.ring.submission().push_multiple(entries) }.is_err() {
            // The queue holds entries not submitted yet: submit them.
            if self.ring.submit().is_err() {
                return false;
            }
            // SAFETY: as above.
            if unsafe { self.ring.submission().push_multiple(entries) }.is_err() {
                return false;
            }
        }
        loop {
            match self.ring.submit() {
                Ok(_) => return true,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Empties `slot` (the table drops its reference to the file) and frees it.
    fn clear_slot(&mut self, slot: u32) {
        let _ = self.ring.submitter().register_files_update(slot, &[-1]);
        self.free.push(slot);
    }

    /// Stops watching the file parked in `slot` (as `key`), and closes it.
    pub(crate) fn discard(&mut self, slot: u32, key: u32) {
        self.cancel(slot, key);
        self.clear_slot(slot);
    }

    fn cancel(&mut self, slot: u32, key: u32) {
        let remove = opcode::PollRemove::new(watch_data(key, slot))
            .build()
            .user_data(TAG_CANCEL);
        let _ = self.submit(&remove);
    }

    /// Gives back the file parked in `slot` (as `key`) as an ordinary
    /// descriptor (close-on-exec), and frees the slot; completions of other
    /// watches seen meanwhile go to `other`.
    pub(crate) fn unpark(
        &mut self,
        slot: u32,
        key: u32,
        other: &mut Vec<Event>,
    ) -> std::io::Result<OwnedFd> {
        let install = opcode::FixedFdInstall::new(types::Fixed(slot), 0)
            .build()
            .user_data(TAG_INSTALL | u64::from(slot));
        let remove = opcode::PollRemove::new(watch_data(key, slot))
            .build()
            .user_data(TAG_CANCEL);
        // Taken out and no longer watched, in one system call.
        if !self.submit_all(&[install, remove]) {
            return Err(std::io::Error::other("io_uring: cannot submit an install"));
        }
        // The install runs inline at submission: its completion is there now
        // (or after the kernel flushes an overflow).
        let mut result = None;
        for _ in 0..1000 {
            self.collect(other, |data, res| {
                if data == TAG_INSTALL | u64::from(slot) {
                    result = Some(res);
                }
            });
            if result.is_some() {
                break;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        let fd = match result {
            Some(fd) if fd >= 0 => fd as RawFd,
            Some(err) => return Err(std::io::Error::from_raw_os_error(-err)),
            None => return Err(std::io::Error::other("io_uring: install never completed")),
        };
        // SAFETY: the kernel installed `fd` for us just now; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        self.clear_slot(slot);
        Ok(fd)
    }

    /// The watches that have ended since the last call.
    pub(crate) fn drain(&mut self, out: &mut Vec<Event>) {
        if self.ring.submission().cq_overflow() {
            // Brings completions the kernel kept aside back into the queue.
            let _ = self.ring.submit();
        }
        self.collect(out, |_, _| {});
    }

    /// Moves the ended watches to `out`, handing other completions to `f`.
    fn collect(&mut self, out: &mut Vec<Event>, mut f: impl FnMut(u64, i32)) {
        for cqe in self.ring.completion() {
            let data = cqe.user_data();
            if data & (TAG_INSTALL | TAG_CANCEL) != 0 {
                f(data, cqe.result());
            } else {
                // Fired, or cancelled: by us (the slot has been freed, and
                // the caller finds it no longer matches), or by the kernel
                // (the watch is gone: the caller watches another way).
                out.push(Event {
                    key: data as u32,
                    slot: (data >> 32) as u32,
                });
            }
        }
    }
}
