//! The few MPI calls the pool makes, as safe functions over `mpi::ffi`.
//!
//! rsmpi's safe layer ignores MPI's return codes (it relies on the default
//! "errors are fatal" handler). The pool sets `MPI_ERRORS_RETURN` on its
//! communicator so that an MPI that reports a failure (a dead peer, for an
//! MPI built with fault tolerance) gives an error from the call instead of
//! ending the job, and therefore checks every code itself.
#![allow(unsafe_code)]

use crate::error::{Error, Result};
use mpi::ffi;
use std::os::raw::{c_char, c_int};
use std::time::{Duration, Instant};

/// A communicator (the world) with `MPI_ERRORS_RETURN` set, and this
/// process's rank and the number of ranks in it.
#[derive(Debug)]
pub(crate) struct Comm {
    raw: ffi::MPI_Comm,
    pub(crate) rank: i32,
    pub(crate) size: i32,
}

// SAFETY: an `MPI_Comm` is a handle (an integer in MPICH, a pointer to a
// library object in Open MPI) valid in every thread of the process; the pool
// initializes MPI with `MPI_THREAD_SERIALIZED` and makes its calls under one
// lock, so no two threads call MPI at once.
unsafe impl Send for Comm {}
// SAFETY: as above; `&Comm` gives no access beyond the handle's value.
unsafe impl Sync for Comm {}

/// MPI's message for an error code.
fn describe(code: c_int) -> String {
    let mut buf = vec![0u8; 4096];
    let mut len: c_int = 0;
    // SAFETY: MPI writes at most MPI_MAX_ERROR_STRING bytes (512 in MPICH,
    // 256 in Open MPI) and `buf` has 4096; `len` is a plain output.
    let rc = unsafe { ffi::MPI_Error_string(code, buf.as_mut_ptr() as *mut c_char, &mut len) };
    if rc != 0 || len < 0 {
        return format!("MPI error code {code}");
    }
    buf.truncate((len as usize).min(buf.len()));
    String::from_utf8_lossy(&buf)
        .trim_end_matches('\0')
        .to_string()
}

fn check(code: c_int, what: &str) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::Io(std::io::Error::other(format!(
            "MPI {what} failed: {}",
            describe(code)
        ))))
    }
}

impl Comm {
    /// `MPI_COMM_WORLD` after MPI is initialized, switched to
    /// `MPI_ERRORS_RETURN`.
    pub(crate) fn world() -> Result<Comm> {
        // SAFETY: reading a constant handle exported by rsmpi's C shim.
        let raw = unsafe { ffi::RSMPI_COMM_WORLD };
        check(
            // SAFETY: `raw` is the world communicator of an initialized MPI;
            // `MPI_ERRORS_RETURN` is a predefined handler.
            unsafe { ffi::MPI_Comm_set_errhandler(raw, ffi::RSMPI_ERRORS_RETURN) },
            "Comm_set_errhandler",
        )?;
        let (mut rank, mut size) = (0, 0);
        // SAFETY: valid communicator; the outputs are plain integers.
        check(unsafe { ffi::MPI_Comm_rank(raw, &mut rank) }, "Comm_rank")?;
        // SAFETY: as above.
        check(unsafe { ffi::MPI_Comm_size(raw, &mut size) }, "Comm_size")?;
        Ok(Comm { raw, rank, size })
    }

    /// Sends `buf` to `dest` and waits until the buffer may be reused.
    pub(crate) fn send(&self, dest: i32, tag: i32, buf: &[u8]) -> Result<()> {
        let n = count(buf.len())?;
        check(
            // SAFETY: `buf` is valid for `n` bytes for the whole (blocking) call.
            unsafe {
                ffi::MPI_Send(
                    buf.as_ptr().cast(),
                    n,
                    ffi::RSMPI_UINT8_T,
                    dest,
                    tag,
                    self.raw,
                )
            },
            "Send",
        )
    }

    /// Starts sending `buf` to `dest`; the returned [`Sending`] owns the
    /// buffer until MPI is done with it.
    pub(crate) fn isend(&self, dest: i32, tag: i32, buf: Vec<u8>) -> Result<Sending> {
        let n = count(buf.len())?;
        // SAFETY: a zeroed request is a plain value overwritten by MPI_Isend.
        let mut req: ffi::MPI_Request = unsafe { std::mem::zeroed() };
        check(
            // SAFETY: the heap buffer of `buf` stays allocated and unchanged
            // until the request completes: `Sending` owns it and waits for the
            // request before dropping it.
            unsafe {
                ffi::MPI_Isend(
                    buf.as_ptr().cast(),
                    n,
                    ffi::RSMPI_UINT8_T,
                    dest,
                    tag,
                    self.raw,
                    &mut req,
                )
            },
            "Isend",
        )?;
        Ok(Sending {
            req,
            _buf: buf,
            done: false,
        })
    }

    /// Takes one message that has arrived (from `source`, or any rank), if
    /// any: (source, tag, bytes).
    pub(crate) fn try_recv(&self, source: Option<i32>) -> Result<Option<(i32, i32, Vec<u8>)>> {
        let src = match source {
            Some(s) => s,
            // SAFETY: reading a constant exported by rsmpi's C shim.
            None => unsafe { ffi::RSMPI_ANY_SOURCE },
        };
        let mut flag: c_int = 0;
        // SAFETY: plain values overwritten by MPI_Improbe.
        let mut msg: ffi::MPI_Message = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut status: ffi::MPI_Status = unsafe { std::mem::zeroed() };
        check(
            // SAFETY: valid communicator, source and tag; outputs point to locals.
            unsafe {
                ffi::MPI_Improbe(
                    src,
                    ffi::RSMPI_ANY_TAG,
                    self.raw,
                    &mut flag,
                    &mut msg,
                    &mut status,
                )
            },
            "Improbe",
        )?;
        if flag == 0 {
            return Ok(None);
        }
        let mut n: c_int = 0;
        check(
            // SAFETY: `status` was filled by the successful probe.
            unsafe { ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut n) },
            "Get_count",
        )?;
        let len = usize::try_from(n).map_err(|_| {
            Error::Io(std::io::Error::other(
                "MPI reported a message of undefined size",
            ))
        })?;
        let mut buf = vec![0u8; len];
        let (from, tag) = (status.MPI_SOURCE, status.MPI_TAG);
        check(
            // SAFETY: `buf` has room for the `n` bytes of the matched message,
            // which `msg` names and which only this call receives.
            unsafe {
                ffi::MPI_Mrecv(
                    buf.as_mut_ptr().cast(),
                    n,
                    ffi::RSMPI_UINT8_T,
                    &mut msg,
                    &mut status,
                )
            },
            "Mrecv",
        )?;
        Ok(Some((from, tag, buf)))
    }

    /// Waits for a message from `source` (or any rank), polling: a short
    /// spin, then sleeps of up to `max_sleep` (an idle rank must not take a
    /// CPU from ranks that compute; MPI's own blocking receive busy-polls).
    pub(crate) fn recv(
        &self,
        source: Option<i32>,
        max_sleep: Duration,
    ) -> Result<(i32, i32, Vec<u8>)> {
        let mut idle = Idle::new(max_sleep);
        loop {
            if let Some(m) = self.try_recv(source)? {
                return Ok(m);
            }
            idle.pause();
        }
    }
}

fn count(len: usize) -> Result<c_int> {
    c_int::try_from(len).map_err(|_| Error::MessageTooLarge {
        len: len as u64,
        max: c_int::MAX as u64,
    })
}

/// A send in progress and its buffer.
#[derive(Debug)]
pub(crate) struct Sending {
    req: ffi::MPI_Request,
    _buf: Vec<u8>,
    done: bool,
}

impl Sending {
    /// Whether the send is complete (the buffer is free).
    pub(crate) fn test(&mut self) -> Result<bool> {
        if self.done {
            return Ok(true);
        }
        let mut flag: c_int = 0;
        // SAFETY: plain value overwritten by MPI_Test.
        let mut status: ffi::MPI_Status = unsafe { std::mem::zeroed() };
        check(
            // SAFETY: `req` is the active request of this send.
            unsafe { ffi::MPI_Test(&mut self.req, &mut flag, &mut status) },
            "Test",
        )?;
        self.done = flag != 0;
        Ok(self.done)
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        // The buffer may only be freed once MPI is done with it. The pool
        // drops a send only when complete, except after an MPI error: then
        // the request is released and its buffer leaked rather than freed
        // under MPI's feet (or waited for, for ever).
        if matches!(self.test(), Ok(true)) {
            return;
        }
        // SAFETY: `req` is this send's request; after MPI_Request_free the
        // handle is not used again (the buffer it may still read is leaked).
        unsafe { ffi::MPI_Request_free(&mut self.req) };
        std::mem::forget(std::mem::take(&mut self._buf));
    }
}

// SAFETY: as for `Comm`: the request handle is only used under the pool's
// lock, by one thread at a time, as `MPI_THREAD_SERIALIZED` allows.
unsafe impl Send for Sending {}

/// Polling back-off: spin for ~50 µs, then sleep 10 µs, 20 µs, … up to a cap.
#[derive(Debug)]
pub(crate) struct Idle {
    start: Instant,
    sleep: Duration,
    max: Duration,
}

impl Idle {
    pub(crate) fn new(max: Duration) -> Idle {
        Idle {
            start: Instant::now(),
            sleep: Duration::from_micros(10),
            max,
        }
    }

    pub(crate) fn pause(&mut self) {
        if self.start.elapsed() < Duration::from_micros(50) {
            std::hint::spin_loop();
            return;
        }
        std::thread::sleep(self.sleep);
        self.sleep = (self.sleep * 2).min(self.max);
    }
}

/// Initializes MPI (`MPI_THREAD_SERIALIZED`) through rsmpi; `None` if it was
/// initialized already.
pub(crate) fn initialize() -> Option<mpi::environment::Universe> {
    let (universe, provided) = mpi::initialize_with_threading(mpi::Threading::Serialized)?;
    if matches!(provided, mpi::Threading::Single | mpi::Threading::Funneled) {
        crate::logging::mp_log!(
            warn,
            target: "multiproc::mpi",
            "this MPI provides only {provided:?} thread support: \
             use the MpiPool from the main thread only"
        );
    }
    Some(universe)
}

/// Waits until every rank of the world arrives here (before `MPI_Finalize`,
/// which MPICH 4.0 over UCX's TCP transport needs the ranks to enter
/// together: see `mpi::finalize`).
pub(crate) fn barrier_world() -> Result<()> {
    check(
        // SAFETY: the world communicator of an initialized MPI; a collective
        // that every rank calls once, just before finalizing.
        unsafe { ffi::MPI_Barrier(ffi::RSMPI_COMM_WORLD) },
        "Barrier",
    )
}

/// The sockets of this process (their inode numbers): taken before MPI
/// starts, they are the launcher's (inherited), which must stay untouched.
static INHERITED: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

/// This process's open sockets: (descriptor, inode).
fn sockets() -> Vec<(i32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse::<i32>().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((fd, inode))
        })
        .collect()
}

/// Notes the sockets this process inherited (call before MPI starts).
pub(crate) fn note_inherited_sockets() {
    let mut v = INHERITED.lock().unwrap_or_else(|e| e.into_inner());
    *v = sockets().into_iter().map(|(_, inode)| inode).collect();
}

fn sockopt(fd: i32, opt: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a local integer; on
    // a descriptor that is not a socket (or was closed meanwhile) it fails
    // and nothing is written.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(v)
}

/// Shuts down (without closing) the TCP connections this process opened
/// since MPI started: MPI's transport, when its finalize is stuck (see
/// `mpi::finalize`). Inherited sockets (the launcher's), listening sockets
/// and sockets of other kinds (the PMI socket is a Unix socket) are left
/// alone.
pub(crate) fn shut_down_tcp() {
    let inherited = INHERITED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (fd, inode) in sockets() {
        if inherited.contains(&inode) {
            continue;
        }
        let inet = matches!(sockopt(fd, libc::SO_DOMAIN), Some(d) if d == libc::AF_INET || d == libc::AF_INET6);
        let stream = sockopt(fd, libc::SO_TYPE) == Some(libc::SOCK_STREAM);
        let listening = sockopt(fd, libc::SO_ACCEPTCONN) != Some(0);
        if inet && stream && !listening {
            // SAFETY: shutdown only changes the state of the connection;
            // the descriptor stays open and owned by whoever owns it.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }
}
