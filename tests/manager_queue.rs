//! Managed queues through shared memory: a proxy connected over a Unix
//! socket maps the queue and puts and gets there, one through the server
//! (as over TCP) works on the same queue, children attach again under every
//! start method, and a proxy whose server is gone does not wait forever.

multiproc::test_support!();

use multiproc::connection::Address;
use multiproc::manager::{JoinableQueueProxy, Manager, QueueProxy};
use multiproc::{Error, StartMethod};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

#[macro_use]
mod common;

start_methods! {
    a_child_s_proxy_gets_what_the_parent_put,
}

#[test]
fn a_local_and_a_server_side_proxy_share_one_queue_in_order() {
    let m = Manager::start().unwrap();
    let local: QueueProxy<u64> = m.queue().unwrap();
    let remote = local.clone();
    assert!(remote.__through_server());
    // Puts from both, one after the other: one order.
    for i in 0..300 {
        if i % 3 == 0 {
            remote.put(i).unwrap();
            remote.flush().unwrap(); // a pipelined put is in once flushed
        } else {
            local.put(i).unwrap();
        }
    }
    assert!(local.__shares_memory());
    assert!(!remote.__shares_memory());
    assert_eq!(local.qsize().unwrap(), 300);
    assert_eq!(remote.qsize().unwrap(), 300);
    // Gets from both, in that order.
    let mut got = Vec::new();
    for i in 0..300 {
        let h = if i % 2 == 0 { &local } else { &remote };
        got.push(h.get().unwrap());
    }
    assert_eq!(got, (0..300).collect::<Vec<_>>());
    assert!(local.empty().unwrap() && remote.empty().unwrap());
    assert!(matches!(remote.try_get(), Err(Error::Empty)));
    assert!(matches!(local.try_get(), Err(Error::Empty)));
    // get_many through either sees the other's items.
    for i in 0..10 {
        local.put(i).unwrap();
    }
    assert_eq!(remote.get_many(4).unwrap(), vec![0, 1, 2, 3]);
    assert_eq!(local.get_many(100).unwrap(), (4..10).collect::<Vec<_>>());
}

#[test]
fn a_blocked_get_on_either_side_is_woken_by_a_put_on_the_other() {
    let m = Manager::start().unwrap();
    let local: QueueProxy<String> = m.queue().unwrap();
    let remote = local.clone();
    assert!(remote.__through_server());
    // Waiting in the server, woken by a put into shared memory.
    let waiter = remote.clone();
    assert!(waiter.__through_server());
    let t = std::thread::spawn(move || waiter.get_timeout(LONG));
    std::thread::sleep(Duration::from_millis(50));
    local.put("to the server side".into()).unwrap();
    assert_eq!(t.join().unwrap().unwrap(), "to the server side");
    // Waiting on shared memory, woken by a put through the server.
    let waiter = local.clone();
    let t = std::thread::spawn(move || {
        let got = waiter.get_timeout(LONG);
        (got, waiter.__shares_memory())
    });
    std::thread::sleep(Duration::from_millis(50));
    remote.put("to shared memory".into()).unwrap();
    remote.flush().unwrap();
    let (got, shared) = t.join().unwrap();
    assert_eq!(got.unwrap(), "to shared memory");
    assert!(shared);
}

#[test]
fn bounds_and_task_counts_are_shared_by_both_kinds_of_proxy() {
    let m = Manager::start().unwrap();
    let local = m.queue_with_maxsize::<u32>(2).unwrap();
    let remote = local.clone();
    assert!(remote.__through_server());
    local.put(1).unwrap();
    remote.put(2).unwrap();
    assert!(local.full().unwrap() && remote.full().unwrap());
    assert!(matches!(remote.try_put(3), Err(Error::Full)));
    assert!(matches!(
        local.put_timeout(3, Duration::from_millis(20)),
        Err(Error::Full)
    ));
    assert_eq!(remote.get().unwrap(), 1);
    local.try_put(3).unwrap();
    assert_eq!(local.get().unwrap(), 2);
    assert_eq!(remote.get().unwrap(), 3);

    let jl: JoinableQueueProxy<u32> = m.joinable_queue().unwrap();
    let jr = jl.clone();
    assert!(jr.__through_server());
    jl.put(1).unwrap();
    jr.put(2).unwrap();
    jr.flush().unwrap();
    assert!(matches!(
        jl.join_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert_eq!(jr.get().unwrap(), 1);
    jr.task_done().unwrap();
    assert!(matches!(
        jr.join_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert_eq!(jl.get().unwrap(), 2);
    jl.task_done().unwrap();
    jl.join().unwrap();
    jr.join().unwrap();
    assert!(matches!(jl.task_done(), Err(Error::TaskDoneTooOften)));
    assert!(matches!(jr.task_done(), Err(Error::TaskDoneTooOften)));
}

#[test]
fn proxies_inside_items_stay_alive_while_queued() {
    let m = Manager::start().unwrap();
    let q: QueueProxy<multiproc::manager::DictProxy<u8, u8>> = m.queue().unwrap();
    let baseline = m.number_of_objects().unwrap();
    {
        let d = m.dict::<u8, u8>().unwrap();
        d.insert(1, 2).unwrap();
        q.put(d).unwrap();
    } // the only proxy is gone: the queued item keeps the dict
    assert_eq!(m.number_of_objects().unwrap(), baseline + 1);
    let d = q.get().unwrap();
    assert!(q.__shares_memory());
    assert_eq!(d.get(&1).unwrap(), Some(2));
    drop(d);
    let end = std::time::Instant::now() + LONG;
    while m.number_of_objects().unwrap() != baseline {
        assert!(std::time::Instant::now() < end, "the dict was not freed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_queue_proxy_stored_in_a_managed_dict_maps_the_queue_when_used() {
    let m = Manager::start().unwrap();
    let q: QueueProxy<u32> = m.queue().unwrap();
    let d = m.dict::<String, QueueProxy<u32>>().unwrap();
    d.insert("jobs".into(), q.clone()).unwrap();
    q.put(5).unwrap();
    let back = d.get(&"jobs".to_string()).unwrap().unwrap();
    assert_eq!(back.get().unwrap(), 5);
    assert!(back.__shares_memory());
    back.put(6).unwrap();
    assert_eq!(q.get().unwrap(), 6);
}

#[test]
fn over_tcp_every_call_goes_through_the_server() {
    let m = Manager::builder()
        .address(Address::tcp("127.0.0.1:0").unwrap())
        .start()
        .unwrap();
    let q: QueueProxy<u32> = m.queue().unwrap();
    q.put(7).unwrap();
    assert_eq!(q.get().unwrap(), 7);
    assert!(!q.__shares_memory());
}

#[test]
fn a_wait_on_shared_memory_ends_once_the_server_is_gone() {
    let m = Manager::start().unwrap();
    let q: QueueProxy<u32> = m.queue().unwrap();
    q.put(1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    assert!(q.__shares_memory());
    let blocked = q.clone();
    let t = std::thread::spawn(move || blocked.get());
    std::thread::sleep(Duration::from_millis(50));
    m.shutdown().unwrap();
    assert!(matches!(t.join().unwrap(), Err(Error::Closed)));
    assert!(matches!(q.get_timeout(LONG), Err(Error::Closed)));
}

#[test]
fn a_wait_on_shared_memory_ends_once_the_server_is_killed() {
    let m = Manager::start().unwrap();
    let jq: JoinableQueueProxy<u32> = m.joinable_queue().unwrap();
    jq.put(1).unwrap();
    assert!(jq.__shares_memory());
    let blocked = jq.clone();
    let t = std::thread::spawn(move || (blocked.get().unwrap(), blocked.get()));
    let joiner = jq.clone();
    let j = std::thread::spawn(move || joiner.join());
    std::thread::sleep(Duration::from_millis(50));
    let pid = rustix::process::Pid::from_raw(m.pid().unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let (first, second) = t.join().unwrap();
    assert_eq!(first, 1); // an item already there is still taken
    assert!(matches!(second, Err(Error::Closed)));
    assert!(matches!(j.join().unwrap(), Err(Error::Closed)));
}

fn take_all(q: QueueProxy<String>, jq: JoinableQueueProxy<u32>, n: usize) -> (Vec<String>, bool) {
    let got = (0..n).map(|_| q.get_timeout(LONG).unwrap()).collect();
    for _ in 0..n {
        jq.get_timeout(LONG).unwrap();
        jq.task_done().unwrap();
    }
    (got, q.__shares_memory() && jq.__shares_memory())
}

fn a_child_s_proxy_gets_what_the_parent_put(m: StartMethod) {
    let manager = Manager::start().unwrap();
    let q: QueueProxy<String> = manager.queue().unwrap();
    let jq: JoinableQueueProxy<u32> = manager.joinable_queue().unwrap();
    // Half before the child starts (this proxy has mapped the queue), half
    // while it waits for them.
    for i in 0..50 {
        q.put(format!("item {i}")).unwrap();
        jq.put(i).unwrap();
    }
    assert!(q.__shares_memory());
    let mut p = common::builder(m)
        .start(take_all, (q.clone(), jq.clone(), 100))
        .unwrap();
    for i in 50..100 {
        q.put(format!("item {i}")).unwrap();
        jq.put(i).unwrap();
    }
    jq.join().unwrap(); // the child marked every task done
    let (got, shared) = p.join().unwrap();
    assert_eq!(
        got,
        (0..100).map(|i| format!("item {i}")).collect::<Vec<_>>()
    );
    assert!(shared, "the child's proxies did not map the queue");
    assert!(q.empty().unwrap());
}

// ------------------------------------------------------------ a lying server

/// What a proxy's first queue call is answered with by [`lying_server`].
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// A pipe where a queue's memfd or eventfd belongs.
    PipeDescriptor,
    /// Two descriptors announced, none sent.
    MissingDescriptors,
    /// Garbage as the queue's description, with a real (unsealed) memfd.
    BadDescription,
}

/// The answer header as the server encodes it (mirrored to fake a server).
#[derive(serde::Serialize)]
#[allow(dead_code)]
enum Rep {
    Ok(serde_bytes::ByteBuf, Vec<u64>),
    MethodError(serde_bytes::ByteBuf),
    Remote(String),
}

fn ok_reply<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let v = serde_bytes::ByteBuf::from(postcard::to_stdvec(v).unwrap());
    postcard::to_stdvec(&Rep::Ok(v, vec![])).unwrap()
}

/// Sends `payload` as one frame with `fd` attached, as the server does.
fn send_with_fd(
    conn: &multiproc::connection::Connection,
    payload: &[u8],
    fd: std::os::fd::BorrowedFd<'_>,
) {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::AsFd;
    let mut bytes = (payload.len() as i32).to_be_bytes().to_vec();
    bytes.extend_from_slice(payload);
    let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    let sent = sendmsg(
        conn.as_fd(),
        &[std::io::IoSlice::new(&bytes)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(sent, bytes.len());
}

/// A fake manager server: answers the control connection's and the queue
/// proxy's requests, lying about the queue's shared memory as `lie` says;
/// every other call is answered `Ok(true)` (what a put answers). Returns
/// the methods it was asked for.
fn lying_server(listener: multiproc::connection::Listener, lie: Lie) -> Vec<String> {
    const FD_FRAME: &[u8] = b"\xffmultiproc-manager-fd";
    // The manager's control connection and the queue proxy's, in the order
    // their handshakes finish: the proxy's is the one that speaks.
    let (a, b) = (listener.accept().unwrap(), listener.accept().unwrap());
    let conn = loop {
        if a.poll(Some(Duration::from_millis(10))).unwrap() {
            break a;
        }
        if b.poll(Some(Duration::from_millis(10))).unwrap() {
            break b;
        }
    };
    let mut methods = Vec::new();
    while let Ok(req) = conn.recv_bytes() {
        // Pipes (tag 10): refuse (the proxy stays on the socket; a
        // `Reply::Remote`, tag 2, with a message).
        if req[0] == 10 {
            conn.send_bytes(b"\x02\x02no").unwrap();
            continue;
        }
        // Create (tag 0): answer with object id 1.
        if req[0] == 0 {
            conn.send_bytes(&ok_reply(&1u64)).unwrap();
            continue;
        }
        // Call (tag 2): id, method, refs, args.
        let (_, rest): (u64, &[u8]) = postcard::take_from_bytes(&req[1..]).unwrap();
        let (method, _): (String, &[u8]) = postcard::take_from_bytes(rest).unwrap();
        methods.push(method.clone());
        if method != "share" {
            conn.send_bytes(&ok_reply(&true)).unwrap();
            continue;
        }
        match lie {
            Lie::PipeDescriptor => {
                let (r, w) = rustix::pipe::pipe().unwrap();
                send_with_fd(&conn, FD_FRAME, std::os::fd::AsFd::as_fd(&r));
                send_with_fd(&conn, FD_FRAME, std::os::fd::AsFd::as_fd(&w));
                let desc = serde_bytes::ByteBuf::from(vec![0u8, 0, 1, 1]);
                conn.send_bytes(&ok_reply(&(desc, 2u32))).unwrap();
            }
            Lie::MissingDescriptors => {
                let desc = serde_bytes::ByteBuf::from(vec![0u8, 0, 1, 1]);
                conn.send_bytes(&ok_reply(&(desc, 2u32))).unwrap();
            }
            Lie::BadDescription => {
                let m =
                    rustix::fs::memfd_create("lie", rustix::fs::MemfdFlags::ALLOW_SEALING).unwrap();
                rustix::fs::ftruncate(&m, 4096).unwrap();
                rustix::fs::fcntl_add_seals(&m, rustix::fs::SealFlags::SHRINK).unwrap();
                send_with_fd(&conn, FD_FRAME, std::os::fd::AsFd::as_fd(&m));
                // Slot 0 as the region, 4096 bytes of it, then slot 7 (not
                // received) as the doorbell.
                let desc = serde_bytes::ByteBuf::from(
                    postcard::to_stdvec(&(0u32, 4096u64, 7u32)).unwrap(),
                );
                conn.send_bytes(&ok_reply(&(desc, 1u32))).unwrap();
            }
        }
    }
    methods
}

#[test]
fn a_server_that_lies_about_the_queue_s_memory_is_refused_and_called_instead() {
    for lie in [
        Lie::PipeDescriptor,
        Lie::MissingDescriptors,
        Lie::BadDescription,
    ] {
        let address =
            Address::abstract_name(format!("multiproc-lying-{}-{lie:?}", std::process::id()));
        let listener = multiproc::connection::Listener::bind(&address, Some(b"key")).unwrap();
        let server = std::thread::spawn(move || lying_server(listener, lie));
        let m = Manager::connect(&address, b"key").unwrap();
        let q: QueueProxy<u32> = m.queue().unwrap();
        q.put(1).unwrap(); // asks for the memory, is refused, calls the server
        assert!(!q.__shares_memory(), "{lie:?}");
        drop(q);
        drop(m);
        let methods = server.join().unwrap();
        assert_eq!(methods, ["share", "put"], "{lie:?}");
    }
}

#[test]
fn over_tcp_a_put_of_proxies_dropped_at_once_still_hands_them_over() {
    const N: u32 = 200;
    // A put of a value holding proxies waits for its answer: the objects
    // must be in the queue before the only proxies to them go away.
    let m = Manager::builder()
        .address(Address::tcp("127.0.0.1:0").unwrap())
        .start()
        .unwrap();
    let q: QueueProxy<multiproc::manager::DictProxy<u8, u32>> = m.queue().unwrap();
    for i in 0..N {
        let d = m.dict::<u8, u32>().unwrap();
        d.insert(1, i).unwrap();
        q.put(d).unwrap(); // the only proxy to `d` is dropped here
    }
    for i in 0..N {
        let d = q.get().unwrap();
        assert_eq!(d.get(&1).unwrap(), Some(i));
    }
}
