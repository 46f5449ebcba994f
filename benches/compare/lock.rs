//! Section `lock`: uncontended `Lock` acquire+release, and two processes
//! incrementing a shared counter under a `Lock` (bench_mp.py's `Value` under
//! its lock; the C floor's `sem_t` lock).

use crate::{secs, Bench, Unit};
use multiproc::sync::{Barrier, Lock};
use multiproc::{Process, StartMethod};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn uncontended(lock: &Lock, n: usize) -> f64 {
    let t0 = Instant::now();
    for _ in 0..n {
        let g = lock.acquire().expect("acquire");
        drop(std::hint::black_box(g));
    }
    n as f64 / secs(t0)
}

/// A counter in anonymous shared memory, inherited by forked children (the
/// address is the same in a forked child).
struct Counter {
    ptr: *mut AtomicU64,
}

impl Counter {
    fn new() -> Counter {
        // SAFETY: a fresh anonymous shared mapping; the kernel picks the address.
        let p = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                4096,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
            )
        }
        .expect("mmap");
        Counter { ptr: p.cast() }
    }

    fn get(&self) -> &AtomicU64 {
        // SAFETY: the mapping lives until `Drop`, is page-aligned and zeroed.
        unsafe { &*self.ptr }
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`; no reference outlives self.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), 4096) };
    }
}

fn incr(lock: Lock, addr: usize, per: u64, gate: Barrier) {
    // SAFETY: `addr` is the counter's mapping, inherited across fork at the
    // same address and alive until the parent has joined us.
    let c = unsafe { &*(addr as *const AtomicU64) };
    gate.wait().expect("gate");
    for _ in 0..per {
        let _g = lock.acquire().expect("acquire");
        // A plain read-modify-write: correct only under the lock.
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    gate.wait().expect("gate");
}

fn contended(total: usize) -> f64 {
    let per = (total / 2) as u64;
    let lock = Lock::new().expect("lock");
    let counter = Counter::new();
    let gate = Barrier::new(3).expect("barrier");
    let addr = counter.ptr as usize;
    let mut ps: Vec<_> = (0..2)
        .map(|_| {
            Process::builder()
                .start_method(StartMethod::Fork)
                .start(incr, (lock.clone(), addr, per, gate.clone()))
                .expect("start")
        })
        .collect();
    gate.wait().expect("gate");
    let t0 = Instant::now();
    gate.wait().expect("gate");
    let dt = secs(t0);
    for p in &mut ps {
        p.join().expect("join");
    }
    assert_eq!(
        counter.get().load(Ordering::Relaxed),
        2 * per,
        "lost increments"
    );
    (2 * per) as f64 / dt
}

/// Records the section's figures.
pub fn run(b: &mut Bench) {
    let lock = Lock::new().expect("lock");
    let n = b.n(10_000_000);
    b.record_vs_floor(
        "lock_uncontended_acq_rel_ops_per_s",
        Unit::Rate("ops/s"),
        "sem_uncontended_wait_post_ops_per_s",
        || uncontended(&lock, n),
    );
    let total = b.n(200_000);
    // A counter in shared memory under a `Lock`; the `shm` section measures
    // `Value` under its own lock, which is CPython's figure exactly.
    b.record_paired(
        "lock_2proc_contended_incr_ops_per_s",
        Unit::Rate("ops/s"),
        "value_lock_2proc_contended_incr_ops_per_s",
        "sem_lock_2proc_contended_incr_ops_per_s",
        || contended(total),
    );
}
