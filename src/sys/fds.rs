//! Closing every descriptor but a few: what a new child does so that it
//! holds only stdio, its own resources and what its parent opted in.
#![allow(unsafe_code)]

use std::os::fd::RawFd;

/// Closes every descriptor of this process that is not in `keep` (sorted in
/// place). Allocates nothing and takes no lock, so it may run between `fork`
/// and the target.
///
/// The caller must own every descriptor it does not keep and use none of
/// them afterwards (a handle over a closed number would act on whatever the
/// number names next).
pub(crate) fn close_all_but(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut next: u32 = 0;
    for &k in keep.iter() {
        let Ok(k) = u32::try_from(k) else { continue };
        if k > next {
            close_range(next, k - 1);
        }
        next = next.max(k.saturating_add(1));
    }
    close_range(next, u32::MAX);
}

/// `close_range(lo, hi, 0)` (Linux 5.9+), or a loop of `close` up to the
/// descriptor limit on older kernels.
fn close_range(lo: u32, hi: u32) {
    // SAFETY: closes descriptors this process owns and no longer uses (the
    // contract of `close_all_but`).
    let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0 as libc::c_uint) };
    if r == 0 {
        return;
    }
    // SAFETY: plain syscalls, as above.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as u32
        } else {
            1024
        };
        for fd in lo..hi.min(max.saturating_sub(1)).saturating_add(1) {
            libc::close(fd as libc::c_int);
        }
    }
}
