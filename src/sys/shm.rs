//! POSIX shared memory names on Linux, as glibc's `shm_open`/`shm_unlink`
//! see them: `/name` is the file `/dev/shm/name`. Used by
//! [`SharedMemory`](crate::SharedMemory) and by the resource tracker, which
//! unlinks what a program left behind (as CPython's tracker calls
//! `_posixshmem.shm_unlink`, not the `shared_memory` module).

use crate::error::Result;

/// Where glibc's `shm_open` keeps POSIX shared memory objects on Linux.
pub(crate) const SHM_DIR: &str = "/dev/shm";
/// Longest accepted name (without the leading `/`), as `NAME_MAX`.
pub(crate) const MAX_NAME: usize = 255;

/// `/dev/shm/<name>` as a NUL-terminated path on the stack (no allocation:
/// this is on the create/attach/unlink fast path).
pub(crate) struct ShmPath {
    buf: [u8; SHM_DIR.len() + MAX_NAME + 2],
    len: usize,
}

impl ShmPath {
    /// The path of the POSIX name `posix` (leading `/`), cut at
    /// [`MAX_NAME`] bytes.
    pub(crate) fn new(posix: &str) -> ShmPath {
        let mut p = ShmPath {
            buf: [0; SHM_DIR.len() + MAX_NAME + 2],
            len: 0,
        };
        let n = posix.len().min(MAX_NAME + 1);
        p.buf[..SHM_DIR.len()].copy_from_slice(SHM_DIR.as_bytes());
        p.buf[SHM_DIR.len()..SHM_DIR.len() + n].copy_from_slice(&posix.as_bytes()[..n]);
        p.len = SHM_DIR.len() + n + 1;
        p
    }

    /// The path; a name containing a NUL byte (which valid names never do)
    /// gives a path that does not exist.
    pub(crate) fn cstr(&self) -> &std::ffi::CStr {
        std::ffi::CStr::from_bytes_with_nul(&self.buf[..self.len]).unwrap_or(c"/dev/shm/.invalid")
    }
}

/// `shm_unlink(name)` for a POSIX name (leading `/`).
pub(crate) fn unlink(posix: &str) -> Result<()> {
    rustix::fs::unlink(ShmPath::new(posix).cstr())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ShmPath;

    #[test]
    fn names_map_to_dev_shm() {
        assert_eq!(ShmPath::new("/psm_1").cstr().to_str(), Ok("/dev/shm/psm_1"));
        assert_eq!(
            ShmPath::new("/a\0b").cstr().to_str(),
            Ok("/dev/shm/.invalid")
        );
    }
}
