//! The error type as a caller sees it: each misuse has a variant of its own
//! to match, causes travel through `source()`, and an error chain prints
//! each message once.

multiproc::test_support!();

use multiproc::connection::{Address, Client, Listener, Pipe};
use multiproc::pool::Pool;
use multiproc::{
    BoundedSemaphore, Condition, Error, JoinableQueue, Lock, Process, RLock, SharedMemory,
};
use std::error::Error as StdError;
use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::Duration;

/// The messages of `e` and its causes, outermost first.
fn chain(e: &(dyn StdError + 'static)) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push(c.to_string());
        cur = c.source();
    }
    out
}

/// No message of the chain contains the next one: a cause is printed by
/// whoever owns it, once.
fn assert_each_once(e: &Error) -> Vec<String> {
    let msgs = chain(e);
    for pair in msgs.windows(2) {
        assert!(
            !pair[0].contains(&pair[1]),
            "cause {:?} repeated in {:?} (chain {msgs:?})",
            pair[1],
            pair[0]
        );
    }
    msgs
}

fn sqr(x: u64) -> u64 {
    x * x
}

#[test]
fn io_error_prints_its_cause_once() {
    let e = SharedMemory::open("multiproc-errors-test-no-such-block").unwrap_err();
    let Error::Io(io) = &e else {
        panic!("expected Io, got {e:?}")
    };
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    let msgs = assert_each_once(&e);
    let joined = msgs.join(": ");
    assert_eq!(joined.matches(&io.to_string()).count(), 1, "{joined}");
}

#[test]
fn codec_error_carries_the_decoder_error() {
    let (a, b) = Pipe::duplex().unwrap();
    a.send(&2u8).unwrap();
    let e = b.recv::<bool>().unwrap_err();
    assert!(matches!(e, Error::Codec(_)), "{e:?}");
    let msgs = assert_each_once(&e);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(msgs[0], "codec error: cannot decode a value");
    // The cause is postcard's own error, reachable by downcasting.
    let cause = e.source().unwrap();
    assert!(
        cause.downcast_ref::<postcard::Error>().is_some(),
        "{cause:?}"
    );
}

#[test]
fn handshake_protocol_error_is_the_cause_of_authentication_failure() {
    let l = Listener::builder()
        .authkey(b"key")
        .handshake_timeout(Some(Duration::from_secs(60)))
        .bind(&Address::arbitrary())
        .unwrap();
    let Address::Abstract(name) = l.address().clone() else {
        panic!("expected an abstract address")
    };
    let mut s = UnixStream::connect_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    // A frame header announcing a length of -2: no such frame exists.
    s.write_all(&(-2i32).to_be_bytes()).unwrap();
    let e = l.accept().unwrap_err();
    let Error::AuthenticationFailed(a) = &e else {
        panic!("expected AuthenticationFailed, got {e:?}")
    };
    assert!(!a.message().is_empty());
    let msgs = assert_each_once(&e);
    assert!(msgs.len() >= 2, "no cause: {msgs:?}");
    assert!(msgs[0].starts_with("authentication failed: "), "{msgs:?}");
    assert!(msgs[1].starts_with("codec error: "), "{msgs:?}");
    drop(s);

    // A wrong key: a plain message, no cause needed.
    let addr = l.address().clone();
    let t = std::thread::spawn(move || Client::connect(&addr, Some(b"not the key")));
    assert!(matches!(l.accept(), Err(Error::AuthenticationFailed(_))));
    let e = t.join().unwrap().unwrap_err();
    assert!(matches!(e, Error::AuthenticationFailed(_)), "{e:?}");
    assert_each_once(&e);
}

#[test]
fn bootstrap_error_reads_as_one_line() {
    let e = Error::bootstrap("truncated start message");
    assert_eq!(
        e.to_string(),
        "child bootstrap failed: truncated start message"
    );
    let Error::Bootstrap(b) = &e else {
        unreachable!()
    };
    assert_eq!(b.message(), "truncated start message");
    assert!(e.source().is_none());
}

#[test]
fn releasing_a_lock_not_held_is_not_held() {
    let lock = Lock::new().unwrap();
    assert!(matches!(lock.release(), Err(Error::NotHeld)));
    let r = RLock::new().unwrap();
    assert!(matches!(r.release(), Err(Error::NotHeld)));
    // Another thread holds the RLock: not ours to release.
    let g = r.acquire().unwrap();
    let r2 = r.clone();
    let other = std::thread::spawn(move || r2.release()).join().unwrap();
    assert!(matches!(other, Err(Error::NotHeld)), "{other:?}");
    drop(g);
    let cond = Condition::new().unwrap();
    assert!(matches!(cond.notify_all(), Err(Error::NotHeld)));
}

#[test]
fn bounded_semaphore_released_too_often() {
    let s = BoundedSemaphore::new(1).unwrap();
    assert!(matches!(s.release(), Err(Error::ReleasedTooOften)));
    s.acquire().unwrap().leak();
    s.release().unwrap();
    assert!(matches!(s.release(), Err(Error::ReleasedTooOften)));
}

#[test]
fn task_done_too_often() {
    let q = JoinableQueue::<u8>::new().unwrap();
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooOften)));
    q.put(1).unwrap();
    q.get().unwrap();
    q.task_done().unwrap();
    assert!(matches!(q.task_done(), Err(Error::TaskDoneTooOften)));
}

#[test]
fn a_value_is_taken_once() {
    let mut p = Process::builder().start(sqr, (7u64,)).unwrap();
    assert_eq!(p.join().unwrap(), 49);
    assert!(matches!(p.join(), Err(Error::AlreadyTaken)));
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async(sqr, (3,)).unwrap();
    assert_eq!(r.get().unwrap(), 9);
    assert!(matches!(r.get(), Err(Error::AlreadyTaken)));
}

#[test]
fn one_way_connections_say_unsupported() {
    let (r, w) = Pipe::simplex().unwrap();
    let e = r.send(&1u8).unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    assert!(e.to_string().starts_with("unsupported: "), "{e}");
    assert!(matches!(w.recv::<u8>(), Err(Error::Unsupported { .. })));
}

#[test]
fn pool_join_while_running_is_invalid_state() {
    let pool = Pool::new(1).unwrap();
    assert!(matches!(pool.join(), Err(Error::InvalidState(_))));
    pool.close().unwrap();
    pool.join().unwrap();
}

/// As the docs of `Error::BrokenPool` say: every way of submitting work to a
/// pool that is closed or terminated fails with `BrokenPool`.
#[test]
fn closed_or_terminated_pool_is_broken_pool() {
    for terminate in [false, true] {
        let pool = Pool::new(1).unwrap();
        assert_eq!(pool.apply(sqr, (2,)).unwrap(), 4);
        if terminate {
            pool.terminate();
        } else {
            pool.close().unwrap();
        }
        assert!(matches!(pool.apply(sqr, (2,)), Err(Error::BrokenPool)));
        assert!(matches!(
            pool.apply_async(sqr, (2,)),
            Err(Error::BrokenPool)
        ));
        assert!(matches!(pool.map(sqr, 0..4u64), Err(Error::BrokenPool)));
        assert!(matches!(
            pool.map_async(sqr, 0..4u64),
            Err(Error::BrokenPool)
        ));
        assert!(matches!(pool.imap(sqr, 0..4u64), Err(Error::BrokenPool)));
        assert!(matches!(
            pool.imap_unordered(sqr, 0..4u64),
            Err(Error::BrokenPool)
        ));
        pool.join().unwrap();
    }
}

/// Tasks queued when the pool is terminated fail with `BrokenPool`.
#[test]
fn terminate_fails_queued_tasks_with_broken_pool() {
    fn nap(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
    let pool = Pool::new(1).unwrap();
    let busy = pool.apply_async(nap, (60_000,)).unwrap();
    let queued = pool.apply_async(nap, (0,)).unwrap();
    pool.terminate();
    assert!(matches!(
        queued.get_timeout(Duration::from_secs(120)),
        Err(Error::BrokenPool)
    ));
    assert!(matches!(
        busy.get_timeout(Duration::from_secs(120)),
        Err(Error::BrokenPool)
    ));
}
