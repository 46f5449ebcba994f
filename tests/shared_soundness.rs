//! Shared memory that no holder can break and no size can turn into a later
//! `SIGBUS`: sealed regions, pages reserved at creation, and racing copies
//! that only ever see words that were written.
multiproc::test_support!();

use multiproc::shared::{Array, RawArray, RawValue, SharedMemory, Value};
use multiproc::{Process, StartMethod};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[macro_use]
mod common;

start_methods! {
    a_handed_off_region_cannot_be_resized,
    shared_memory_larger_than_free_space_fails_at_creation,
}

/// This process's descriptors whose link names `memfd:<name>`.
fn memfds(name: &str) -> Vec<std::fs::File> {
    let want = format!("/memfd:{name} ");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        // The link reads "/memfd:NAME (deleted)".
        if format!("{} ", target.display()).starts_with(&want) {
            if let Ok(f) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(e.path())
            {
                out.push(f);
            }
        }
    }
    out
}

/// A hostile holder: tries to shrink every value region it holds to 0 bytes,
/// returns the errno of each attempt (0 = it worked), then writes the value.
fn truncate_all(v: Value<u64>) -> Vec<i32> {
    let mut errnos = Vec::new();
    for f in memfds("multiproc-value") {
        // SAFETY: a descriptor this process owns (just opened).
        let r = unsafe { libc::ftruncate(f.as_raw_fd(), 0) };
        errnos.push(if r == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        });
    }
    v.set(7).unwrap();
    errnos
}

fn a_handed_off_region_cannot_be_resized(m: StartMethod) {
    let v = Value::new(1u64).unwrap();
    let errnos = Process::builder()
        .start_method(m)
        .start(truncate_all, (v.clone(),))
        .unwrap()
        .join()
        .unwrap();
    assert!(
        !errnos.is_empty(),
        "{m:?}: the child holds the value's memfd"
    );
    assert!(
        errnos.iter().all(|&e| e == libc::EPERM),
        "{m:?}: ftruncate must fail with EPERM on a sealed region: {errnos:?}"
    );
    // Nobody faults: the parent still reads what the child wrote.
    assert_eq!(v.get().unwrap(), 7, "{m:?}");
}

/// The pages behind a `Value`/`Array` are allocated at creation.
#[test]
fn region_pages_are_reserved_at_creation() {
    const LEN: usize = 8 << 20;
    let a = Array::<u8>::zeroed(LEN).unwrap();
    let blocks = memfds("multiproc-array")
        .iter()
        .map(|f| {
            use std::os::unix::fs::MetadataExt;
            f.metadata().unwrap().blocks() * 512
        })
        .max()
        .unwrap_or(0);
    assert!(
        blocks >= LEN as u64,
        "an {LEN}-byte array has only {blocks} bytes allocated"
    );
    assert_eq!(a.len(), LEN);
}

/// In a private mount namespace with a 1 MiB tmpfs on /dev/shm: a block
/// larger than the free space fails at creation with a clear error, a small
/// one works. Returns `None` if this process may not make the namespace.
fn create_on_small_tmpfs() -> Option<(String, bool)> {
    // SAFETY: plain syscalls with valid NUL-terminated strings; this
    // child is single-threaded and changes only its own mount namespace.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return None;
        }
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return None;
        }
        if libc::mount(
            c"tmpfs".as_ptr(),
            c"/dev/shm".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"size=1M".as_ptr().cast(),
        ) != 0
        {
            return None;
        }
    }
    let big = SharedMemory::create_untracked(None, 4 << 20);
    let err = match big {
        Ok(_) => "created a 4 MiB block on a 1 MiB tmpfs".to_string(),
        Err(e) => e.to_string(),
    };
    let small = SharedMemory::create_untracked(None, 64 << 10);
    let small_ok = match small {
        Ok(s) => {
            s.write_at(65535, &[1]).unwrap();
            s.unlink().unwrap();
            true
        }
        Err(_) => false,
    };
    // Leave 32 KiB free; a 48 KiB block (below the reservation size, checked
    // against the free space) fails too.
    let fill = SharedMemory::create_untracked(None, (1 << 20) - (32 << 10)).unwrap();
    let err_small = match SharedMemory::create_untracked(None, 48 << 10) {
        Ok(_) => "created a 48 KiB block with 32 KiB free".to_string(),
        Err(e) => e.to_string(),
    };
    fill.unlink().unwrap();
    Some((format!("{err}\n{err_small}"), small_ok))
}

fn shared_memory_larger_than_free_space_fails_at_creation(m: StartMethod) {
    let r = Process::builder()
        .start_method(m)
        .start(create_on_small_tmpfs, ())
        .unwrap()
        .join()
        .unwrap();
    let Some((err, small_ok)) = r else {
        eprintln!("skipped: cannot make a private mount namespace here (needs root)");
        return;
    };
    let (err_big, err_small) = err.split_once('\n').unwrap();
    assert!(
        err_big.contains("4194304") && err_big.contains("free"),
        "the error names the size and the free space: {err_big}"
    );
    assert!(
        err_small.contains("49152") && err_small.contains("free"),
        "the error names the size and the free space: {err_small}"
    );
    assert!(small_ok, "a block that fits is created and writable");
}

/// Racing copies: a writer alternates between two patterns, readers copy
/// concurrently; every word a reader sees is a word of one of the patterns
/// (a copy may mix words of both, never produce other bits).
#[test]
fn racing_copies_see_only_written_words() {
    const A: u64 = 0x0123_4567_89ab_cdef;
    const B: u64 = !A;
    let stop = Arc::new(AtomicBool::new(false));

    let v = RawValue::new([A; 4]).unwrap();
    let arr = RawArray::from_slice(&[A; 16]).unwrap();
    let shm = SharedMemory::create(256).unwrap();
    shm.write_at(0, &[0xaa; 256]).unwrap();

    let writer = {
        let (v, arr, stop) = (v.clone(), arr.clone(), stop.clone());
        let shm = SharedMemory::open(shm.name()).unwrap();
        std::thread::spawn(move || {
            let mut flip = false;
            while !stop.load(Ordering::Relaxed) {
                let w = if flip { A } else { B };
                let byte = if flip { 0xaa } else { 0x55 };
                v.set([w; 4]);
                arr.copy_from_slice(&[w; 16]).unwrap();
                arr.set(3, w).unwrap();
                shm.write_at(3, &[byte; 250]).unwrap();
                flip = !flip;
            }
        })
    };
    for _ in 0..20_000 {
        for w in v.get() {
            assert!(w == A || w == B, "RawValue: {w:#x}");
        }
        for w in arr.to_vec() {
            assert!(w == A || w == B, "RawArray: {w:#x}");
        }
        let mut buf = [0u8; 256];
        shm.read_at(0, &mut buf).unwrap();
        assert!(
            buf.iter().all(|&b| b == 0xaa || b == 0x55),
            "SharedMemory: {buf:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    shm.unlink().unwrap();
}
