//! Helpers shared by the `sync_*` test binaries: a few shared `u32` cells
//! (a memfd, handed to children like any resource) and a hang guard.
#![allow(dead_code)]

use multiproc::handoff::{Exporter, Handoff, Importer};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `n` shared atomic `u32`s, zero-initialised.
#[derive(Clone)]
pub struct Cells {
    inner: Arc<Map>,
}

struct Map {
    fd: OwnedFd,
    ptr: *mut AtomicU32,
    n: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics; it
// lives until the last `Arc<Map>` drops.
unsafe impl Send for Map {}
// SAFETY: as above.
unsafe impl Sync for Map {}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: ptr/len are what mmap returned; no reference outlives the map.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.n * 4) };
    }
}

impl Cells {
    pub fn new(n: usize) -> Cells {
        let fd =
            rustix::fs::memfd_create("test-cells", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&fd, (n * 4) as u64).expect("ftruncate");
        Cells::map(fd, n)
    }

    fn map(fd: OwnedFd, n: usize) -> Cells {
        // SAFETY: a fresh shared mapping of a file at least n*4 bytes long.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                n * 4,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
            .expect("mmap")
        };
        Cells {
            inner: Arc::new(Map {
                fd,
                ptr: ptr.cast(),
                n,
            }),
        }
    }

    pub fn get(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.inner.n);
        // SAFETY: in bounds, page-aligned base, atomics only.
        unsafe { &*self.inner.ptr.add(i) }
    }
}

impl Handoff for Cells {
    fn export<'a>(&'a self, ex: &mut Exporter<'a>) -> multiproc::Result<()> {
        ex.write_fd(self.inner.fd.as_fd())?;
        ex.write(&(self.inner.n as u64))
    }
    fn import(im: &mut Importer) -> multiproc::Result<Self> {
        let fd = im.read_fd()?;
        let n: u64 = im.read()?;
        Ok(Cells::map(fd, n as usize))
    }
}

/// Turns a hang into a failure: polls `cond` for at most 30 s.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
