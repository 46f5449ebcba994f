//! `posix_spawn(3)`: starting a program without copying this process's page
//! tables. glibc starts the child with `clone(CLONE_VM | CLONE_VFORK)`: it
//! runs on the parent's memory until `execve`, so the cost does not grow
//! with the parent's size, and the library (not our code) does the few
//! async-signal-safe steps between the clone and the `execve`.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::ptr;

/// What to start, and which descriptors it inherits.
pub(crate) struct Spawn<'a> {
    /// The program.
    pub(crate) path: &'a CStr,
    /// Its arguments, `argv[0]` first.
    pub(crate) argv: &'a [CString],
    /// Its whole environment, as `NAME=value` strings.
    pub(crate) envp: &'a [CString],
    /// `(from, to)`: the child's descriptor `to` (3 or more) is this
    /// process's `from`, whatever its close-on-exec flag (`dup2` in the child
    /// only; `from == to` clears the flag there, glibc 2.29+), so a concurrent
    /// start on another thread does not inherit it. No `from` may be the
    /// `to` of another pair.
    pub(crate) fds: &'a [(RawFd, RawFd)],
    /// Standard input from `/dev/null` instead of this process's.
    pub(crate) stdin_null: bool,
    /// Close every other descriptor from 3 up in the child (only if
    /// [`closes_others`] says this libc can).
    pub(crate) close_others: bool,
}

/// Whether [`spawn`] can close the descriptors a child does not inherit
/// (glibc 2.34+'s `posix_spawn_file_actions_addclosefrom_np`); without it,
/// the child must close them itself after `execve`.
pub(crate) fn closes_others() -> bool {
    addclosefrom().is_some()
}

type AddCloseFrom =
    unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, libc::c_int) -> libc::c_int;

/// `posix_spawn_file_actions_addclosefrom_np`, looked up at run time so that
/// the crate still runs on an older libc.
fn addclosefrom() -> Option<AddCloseFrom> {
    static F: std::sync::OnceLock<Option<AddCloseFrom>> = std::sync::OnceLock::new();
    *F.get_or_init(|| {
        // SAFETY: `dlsym` with a valid, null-terminated name.
        let p = unsafe {
            libc::dlsym(
                libc::RTLD_DEFAULT,
                c"posix_spawn_file_actions_addclosefrom_np".as_ptr(),
            )
        };
        // SAFETY: glibc's function of this name has exactly this signature.
        (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut libc::c_void, AddCloseFrom>(p) })
    })
}

/// Starts the program; returns its pid (an unreaped child of this process).
pub(crate) fn spawn(s: &Spawn<'_>) -> io::Result<i32> {
    let mut actions = FileActions::new()?;
    if s.stdin_null {
        actions.open(0, c"/dev/null", libc::O_RDONLY)?;
    }
    for &(from, to) in s.fds {
        actions.dup2(from, to)?;
    }
    if s.close_others {
        let Some(closefrom) = addclosefrom() else {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        };
        let mut kept: Vec<RawFd> = s.fds.iter().map(|&(_, to)| to).collect();
        kept.sort_unstable();
        let mut next: RawFd = 3;
        for &k in &kept {
            // The gaps below the highest kept number are closed one by one
            // (a close of a number that is not open is not an error).
            for fd in next..k {
                actions.close(fd)?;
            }
            next = next.max(k + 1);
        }
        // SAFETY: the object was initialised by `new`.
        check(unsafe { closefrom(actions.0.as_mut_ptr(), next) })?;
    }
    let attr = Attr::new()?;
    let argv = null_terminated(s.argv);
    let envp = null_terminated(s.envp);
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the path, argument and
    // environment strings are borrowed `CString`s, the arrays end with a null
    // pointer, and the file actions and attributes are initialised (and
    // destroyed only when their guards drop, after the call).
    let r = unsafe {
        libc::posix_spawn(
            &mut pid,
            s.path.as_ptr(),
            actions.as_ptr(),
            attr.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(pid)
}

/// `strings` as the null-terminated pointer array `posix_spawn` takes (the
/// pointers borrow `strings`).
fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(ptr::null_mut()))
        .collect()
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// An initialised `posix_spawn_file_actions_t` (boxed: it is never moved
/// once initialised), destroyed on drop.
struct FileActions(Box<MaybeUninit<libc::posix_spawn_file_actions_t>>);

impl FileActions {
    fn new() -> io::Result<FileActions> {
        let mut a = Box::new(MaybeUninit::uninit());
        // SAFETY: initialises the object in place.
        check(unsafe { libc::posix_spawn_file_actions_init(a.as_mut_ptr()) })?;
        Ok(FileActions(a))
    }

    fn as_ptr(&self) -> *const libc::posix_spawn_file_actions_t {
        self.0.as_ptr()
    }

    fn open(&mut self, fd: RawFd, path: &CStr, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: the object was initialised by `new`; glibc copies the path.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(self.0.as_mut_ptr(), fd, path.as_ptr(), flags, 0)
        })
    }

    fn close(&mut self, fd: RawFd) -> io::Result<()> {
        // SAFETY: the object was initialised by `new`.
        check(unsafe { libc::posix_spawn_file_actions_addclose(self.0.as_mut_ptr(), fd) })
    }

    fn dup2(&mut self, fd: RawFd, to: RawFd) -> io::Result<()> {
        // SAFETY: the object was initialised by `new`.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(self.0.as_mut_ptr(), fd, to) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised by `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(self.0.as_mut_ptr()) };
    }
}

/// An initialised `posix_spawnattr_t` that gives the child an empty signal
/// mask and `SIGPIPE` at its default action (as std's `Command` does: Rust
/// programs ignore `SIGPIPE`, and an ignored signal stays ignored across
/// `execve`). Destroyed on drop.
struct Attr(Box<MaybeUninit<libc::posix_spawnattr_t>>);

impl Attr {
    fn new() -> io::Result<Attr> {
        let mut a = Box::new(MaybeUninit::uninit());
        // SAFETY: initialises the object in place.
        check(unsafe { libc::posix_spawnattr_init(a.as_mut_ptr()) })?;
        let mut attr = Attr(a);
        // SAFETY: plain calls on initialised objects (the attribute above
        // and the signal sets, initialised by `sigemptyset`).
        unsafe {
            let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(empty.as_mut_ptr());
            let mut pipe = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(pipe.as_mut_ptr());
            libc::sigaddset(pipe.as_mut_ptr(), libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigmask(
                attr.0.as_mut_ptr(),
                empty.as_ptr(),
            ))?;
            check(libc::posix_spawnattr_setsigdefault(
                attr.0.as_mut_ptr(),
                pipe.as_ptr(),
            ))?;
            check(libc::posix_spawnattr_setflags(
                attr.0.as_mut_ptr(),
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))?;
        }
        Ok(attr)
    }

    fn as_ptr(&self) -> *const libc::posix_spawnattr_t {
        self.0.as_ptr()
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialised by `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(self.0.as_mut_ptr()) };
    }
}
