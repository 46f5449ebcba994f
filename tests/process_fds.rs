//! What a child inherits: stdio, its handed-off resources and what the
//! caller opted in — no other descriptor of the parent (CPython's
//! `test_child_fd_inflation` and `TestCloseFds`, under every start method,
//! fork included).

multiproc::test_support!();

use multiproc::{Connection, Pipe, Process, StartMethod};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

const METHODS: [StartMethod; 2] = [StartMethod::Fork, StartMethod::Spawn];
const LONG: Duration = Duration::from_secs(60);

fn is_open(fd: i32) -> bool {
    // SAFETY: only asks whether the number is open; the borrow ends here.
    rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(fd) }).is_ok()
}

/// The child's open descriptors (the directory reader's own one is closed
/// again when this returns, so it is filtered out by re-checking).
fn open_fds() -> Vec<i32> {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    fds.into_iter().filter(|&fd| is_open(fd)).collect()
}

fn list_fds(c: Connection) -> Vec<String> {
    let _keep = c;
    open_fds()
        .into_iter()
        .map(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            format!("{fd}:{target}")
        })
        .collect()
}

#[test]
fn a_child_holds_only_stdio_its_resources_and_its_report_socket() {
    // Unrelated descriptors of the parent: 40 pipes (80 descriptors).
    let extra: Vec<(OwnedFd, OwnedFd)> = (0..40).map(|_| rustix::pipe::pipe().unwrap()).collect();
    for m in METHODS {
        let (a, _b) = Pipe::duplex().unwrap();
        let mut p = Process::builder()
            .start_method(m)
            .start(list_fds, (a,))
            .unwrap();
        let fds = p.join_timeout(LONG).unwrap();
        // What the descriptors open (the handoff may hold a resource under
        // two numbers): stdio (/dev/null and the parent's stdout and
        // stderr), the report socket and the connection.
        let mut files: Vec<&str> = fds.iter().map(|f| f.split_once(':').unwrap().1).collect();
        files.sort();
        files.dedup();
        assert!(files.len() <= 5, "{m:?}: the child holds {fds:?}");
    }
    drop(extra);
}

fn hold_a_while() {
    std::thread::sleep(Duration::from_secs(30));
}

/// The reason for closing: an unrelated pipe's end-of-file is not delayed
/// while a forked child lives.
#[test]
fn an_unrelated_pipe_sees_eof_while_a_forked_child_lives() {
    for m in METHODS {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let mut p = Process::builder()
            .start_method(m)
            .start(hold_a_while, ())
            .unwrap();
        drop(w);
        let mut pfd = [rustix::event::PollFd::new(&r, rustix::event::PollFlags::IN)];
        let ten = rustix::time::Timespec {
            tv_sec: 10,
            tv_nsec: 0,
        };
        let n = rustix::event::poll(&mut pfd, Some(&ten)).unwrap();
        let mut buf = [0u8; 1];
        let eof = n == 1 && rustix::io::read(&r, &mut buf).unwrap() == 0;
        p.kill().unwrap();
        let _ = p.join_timeout(LONG);
        assert!(eof, "{m:?}: the child kept the pipe's write end open");
    }
}

/// Whether descriptor `fd` is open on the pipe whose inode is `ino` (the
/// child's own descriptors may take the number of one it did not get).
fn is_fd_open(fd: i32, ino: u64) -> bool {
    // SAFETY: only borrowed for this check.
    is_open(fd)
        && rustix::fs::fstat(unsafe { BorrowedFd::borrow_raw(fd) })
            .unwrap()
            .st_ino
            == ino
}

/// `pass_fd` keeps a descriptor open at its number (subprocess's `pass_fds`).
#[test]
fn pass_fd_keeps_a_descriptor_by_number() {
    for m in METHODS {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let fd = r.as_raw_fd();
        let ino = rustix::fs::fstat(&r).unwrap().st_ino;
        let mut p = Process::builder()
            .start_method(m)
            .start(is_fd_open, (fd, ino))
            .unwrap();
        assert!(
            !p.join_timeout(LONG).unwrap(),
            "{m:?}: not passed, yet open"
        );
        let mut p = Process::builder()
            .start_method(m)
            .pass_fd(r.as_fd())
            .start(is_fd_open, (fd, ino))
            .unwrap();
        assert!(p.join_timeout(LONG).unwrap(), "{m:?}: passed, yet closed");
    }
}

/// Many pipe read ends, handed off as one argument.
struct ReadEnds(Vec<OwnedFd>);

impl multiproc::handoff::Handoff for ReadEnds {
    fn export<'a>(&'a self, ex: &mut multiproc::handoff::Exporter<'a>) -> multiproc::Result<()> {
        ex.write(&(self.0.len() as u32))?;
        for fd in &self.0 {
            ex.write_fd(fd.as_fd())?;
        }
        Ok(())
    }
    fn import(im: &mut multiproc::handoff::Importer) -> multiproc::Result<Self> {
        let n: u32 = im.read()?;
        (0..n)
            .map(|_| im.read_fd())
            .collect::<Result<_, _>>()
            .map(ReadEnds)
    }
}

/// Reads one byte from each end, in order.
fn read_each(ends: ReadEnds) -> Vec<u8> {
    ends.0
        .iter()
        .map(|fd| {
            let mut b = [0u8];
            assert_eq!(rustix::io::read(fd, &mut b).unwrap(), 1);
            b[0]
        })
        .collect()
}

/// More descriptors than one `SCM_RIGHTS` message carries (250) reach a
/// child, each the right one, in order.
#[test]
fn hundreds_of_handed_off_descriptors_arrive_in_order() {
    for m in METHODS {
        let pipes: Vec<(OwnedFd, OwnedFd)> =
            (0..300).map(|_| rustix::pipe::pipe().unwrap()).collect();
        for (i, (_, w)) in pipes.iter().enumerate() {
            rustix::io::write(w, &[i as u8]).unwrap();
        }
        let (ends, _writers): (Vec<OwnedFd>, Vec<OwnedFd>) = pipes.into_iter().unzip();
        let mut p = Process::builder()
            .start_method(m)
            .start(read_each, (ReadEnds(ends),))
            .unwrap();
        let got = p.join_timeout(LONG).unwrap();
        let want: Vec<u8> = (0..300).map(|i| i as u8).collect();
        assert_eq!(got, want, "{m:?}");
    }
}

/// With a libc whose `posix_spawn` cannot close descriptors, a spawned child
/// closes what it does not keep itself, before its target runs: the same
/// guarantees hold (opted-in descriptors stay; others are gone).
#[cfg(feature = "test-hooks")]
#[test]
fn a_spawned_child_closes_what_the_spawn_could_not() {
    use multiproc::process::__test::spawn_child_closes;
    let extra: Vec<(OwnedFd, OwnedFd)> = (0..40).map(|_| rustix::pipe::pipe().unwrap()).collect();
    let (r, _w) = rustix::pipe::pipe().unwrap();
    let ino = rustix::fs::fstat(&r).unwrap().st_ino;
    spawn_child_closes(true);
    let (a, _b) = Pipe::duplex().unwrap();
    let listed = Process::builder()
        .start_method(StartMethod::Spawn)
        .start(list_fds, (a,))
        .and_then(|mut p| p.join_timeout(LONG));
    let passed = Process::builder()
        .start_method(StartMethod::Spawn)
        .pass_fd(r.as_fd())
        .start(is_fd_open, (r.as_raw_fd(), ino))
        .and_then(|mut p| p.join_timeout(LONG));
    spawn_child_closes(false);
    let fds = listed.unwrap();
    let mut files: Vec<&str> = fds.iter().map(|f| f.split_once(':').unwrap().1).collect();
    files.sort();
    files.dedup();
    assert!(files.len() <= 5, "the child holds {fds:?}");
    assert!(passed.unwrap(), "passed, yet closed");
    drop(extra);
}
