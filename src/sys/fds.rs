//! Closing every descriptor but a few, and putting descriptors at given
//! numbers: what a new child does so that it holds only stdio, its own
//! resources and what its parent opted in; and what kind of file a
//! descriptor names.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// `true` if `fd` names a file of type `kind` (`fstat`; `false` if that fails).
pub(crate) fn is_a(fd: BorrowedFd<'_>, kind: rustix::fs::FileType) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == kind)
}

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

/// Puts each of `passed` at its number in `targets` (sorted, distinct, 3 and
/// up), first moving every descriptor of `held` (and of `passed`) that sits
/// on one of those numbers above the highest. The descriptors placed are
/// owned by nothing: they stay open for code that finds them by number.
///
/// # Safety
///
/// From 3 up, this process may hold no descriptor that is in use other than
/// those of `held` and `passed` (as right after [`close_all_but`]): any
/// other one on a target number would be replaced under its owner.
pub(crate) unsafe fn place_at_numbers(
    passed: Vec<OwnedFd>,
    targets: &[RawFd],
    held: &mut [&mut OwnedFd],
) -> Result<(), String> {
    let Some(&top) = targets.last() else {
        return Ok(());
    };
    let sorted = targets.windows(2).all(|w| w[0] < w[1]) && targets[0] > 2;
    if !sorted || passed.len() != targets.len() {
        return Err(format!("bad descriptor numbers to keep: {targets:?}"));
    }
    let above = |fd: &OwnedFd| {
        rustix::io::fcntl_dupfd_cloexec(fd, top.saturating_add(1))
            .map_err(|e| format!("cannot move descriptor {}: {e}", fd.as_raw_fd()))
    };
    for f in held.iter_mut() {
        if targets.binary_search(&f.as_raw_fd()).is_ok() {
            **f = above(f)?;
        }
    }
    let mut sources = Vec::with_capacity(passed.len());
    for p in passed {
        if targets.binary_search(&p.as_raw_fd()).is_ok() {
            sources.push(above(&p)?);
        } else {
            sources.push(p);
        }
    }
    for (src, &to) in sources.iter().zip(targets) {
        // SAFETY: no descriptor in use sits on `to` any more (the caller
        // holds none but `held` and `passed`, and those were moved above the
        // highest target), so `dup2` only puts a new descriptor there, which
        // nothing owns: it is left open, as an inherited descriptor is.
        if unsafe { libc::dup2(src.as_raw_fd(), to) } != to {
            let e = std::io::Error::last_os_error();
            return Err(format!("cannot open descriptor {to}: {e}"));
        }
    }
    Ok(())
}
