//! The tokio adapters (feature `tokio`): each under a current-thread and a
//! multi-threaded runtime.

multiproc::test_support!();

use futures_core::Stream;
use multiproc::aio::AsyncConnection;
use multiproc::{Connection, Error, Pipe};

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::time::Duration;

#[macro_use]
mod common;

use common::{builder, on_both_runtimes, pool};
use multiproc::StartMethod;

start_methods! {
    join_async_returns_the_value_or_the_failure,
    join_async_reads_a_report_larger_than_the_socket_buffer,
    join_async_dropped_leaves_the_child_joinable,
    connection_ping_pong_with_a_child,
    async_results_are_futures,
    imap_is_a_stream,
    an_imap_stream_yields_a_failed_task_and_goes_on,
    many_tasks_await_results_at_once,
}

fn square(x: u64) -> u64 {
    x * x
}

fn fails(x: u64) -> u64 {
    panic!("no good: {x}")
}

fn big(n: usize) -> Vec<u8> {
    vec![7u8; n]
}

fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn join_async_returns_the_value_or_the_failure(m: StartMethod) {
    on_both_runtimes(move || async move {
        let mut p = builder(m).start(square, (7,)).unwrap();
        assert_eq!(p.join_async().await.unwrap(), 49);
        assert_eq!(p.exitcode(), Some(0));

        let mut p = builder(m).start(fails, (3,)).unwrap();
        match p.join_async().await {
            Err(Error::ProcessFailed(f)) => {
                assert_eq!(f.exitcode, 1);
                assert!(f.panic_message.unwrap().contains("no good: 3"));
            }
            other => panic!("expected ProcessFailed, got {other:?}"),
        }
    });
}

fn join_async_reads_a_report_larger_than_the_socket_buffer(m: StartMethod) {
    // The child blocks writing its 8 MiB report until it is read, so the
    // future must watch the report socket, not only the pidfd.
    on_both_runtimes(move || async move {
        let mut p = builder(m).start(big, (8 << 20,)).unwrap();
        let v = p.join_async().await.unwrap();
        assert_eq!(v.len(), 8 << 20);
        assert!(v.iter().all(|&b| b == 7));
    });
}

fn join_async_dropped_leaves_the_child_joinable(m: StartMethod) {
    on_both_runtimes(move || async move {
        let mut p = builder(m).start(sleepy, (300,)).unwrap();
        let early = tokio::time::timeout(Duration::from_millis(20), p.join_async()).await;
        assert!(early.is_err(), "the child cannot have ended yet");
        assert!(p.is_alive() || p.exitcode() == Some(0));
        assert_eq!(p.join_async().await.unwrap(), 300);
    });
}

fn echo(c: Connection) {
    while let Ok(x) = c.recv::<u64>() {
        if c.send(&(x + 1)).is_err() {
            return;
        }
    }
}

fn connection_ping_pong_with_a_child(m: StartMethod) {
    on_both_runtimes(move || async move {
        let (mine, theirs) = Pipe::duplex().unwrap();
        let mut child = builder(m).start(echo, (theirs,)).unwrap();
        let conn = AsyncConnection::new(mine).unwrap();
        for i in 0..200u64 {
            conn.send(&i).await.unwrap();
            assert_eq!(conn.recv::<u64>().await.unwrap(), i + 1);
        }
        drop(conn);
        child.join_async().await.unwrap();
    });
}

#[test]
fn simplex_pipes_carry_large_messages_both_ways() {
    on_both_runtimes(|| async {
        let (r, w) = Pipe::simplex().unwrap();
        let (r, w) = (
            AsyncConnection::new(r).unwrap(),
            AsyncConnection::new(w).unwrap(),
        );
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            w.send_bytes(&sent).await.unwrap();
            w.send(&"done").await.unwrap();
        });
        assert_eq!(r.recv_bytes().await.unwrap(), payload);
        assert_eq!(r.recv::<String>().await.unwrap(), "done");
        writer.await.unwrap();
    });
}

/// A connection over one end of a socket pair, and the raw other end.
fn raw_pair() -> (Connection, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (Connection::from_socket(a.into()), b)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

#[test]
fn a_dropped_recv_mid_message_loses_nothing() {
    for size in [100usize, 3 << 20] {
        on_both_runtimes(move || async move {
            let (conn, mut raw) = raw_pair();
            let conn = AsyncConnection::new(conn).unwrap();
            let payload: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            let whole = frame(&payload);
            let half = whole.len() / 2;
            // Half a message arrives; the receive starts, reads it, and is
            // dropped when its timeout wins.
            let first = raw.try_clone().unwrap();
            let part = whole[..half].to_vec();
            let w = std::thread::spawn(move || (&first).write_all(&part).unwrap());
            let r = tokio::time::timeout(Duration::from_millis(200), conn.recv_bytes()).await;
            assert!(r.is_err(), "half a message cannot be received");
            w.join().unwrap();
            // The rest and one more message: both arrive whole, in order.
            let mut rest = whole[half..].to_vec();
            rest.extend_from_slice(&frame(b"next"));
            let w = std::thread::spawn(move || raw.write_all(&rest).unwrap());
            assert_eq!(conn.recv_bytes().await.unwrap(), payload);
            assert_eq!(conn.recv_bytes().await.unwrap(), b"next");
            w.join().unwrap();
        });
    }
}

#[test]
fn a_dropped_send_is_completed_by_the_next_send() {
    on_both_runtimes(|| async {
        let (a, b) = Pipe::duplex().unwrap();
        let (a, b) = (
            AsyncConnection::new(a).unwrap(),
            AsyncConnection::new(b).unwrap(),
        );
        // 8 MiB cannot fit the socket buffers while nobody reads: the send
        // is dropped part-way.
        let payload = vec![0x5au8; 8 << 20];
        let r = tokio::time::timeout(Duration::from_millis(100), a.send_bytes(&payload)).await;
        assert!(r.is_err(), "8 MiB cannot fit an unread socket");
        let sender = tokio::spawn(async move {
            a.send(&"after").await.unwrap();
            a
        });
        assert_eq!(b.recv_bytes().await.unwrap(), payload);
        assert_eq!(b.recv::<String>().await.unwrap(), "after");
        let a = sender.await.unwrap();
        assert!(a.into_inner().is_ok());
    });
}

#[test]
fn a_peer_that_closes_gives_closed() {
    on_both_runtimes(|| async {
        let (a, b) = Pipe::duplex().unwrap();
        let a = AsyncConnection::new(a).unwrap();
        drop(b);
        assert!(matches!(a.recv::<u64>().await, Err(Error::Closed)));
        assert!(matches!(a.send(&1u64).await, Err(Error::Closed)));
    });
}

fn async_results_are_futures(m: StartMethod) {
    on_both_runtimes(move || async move {
        let pool = pool(m, 2).unwrap();
        assert_eq!(pool.apply_async(square, (9,)).unwrap().await.unwrap(), 81);
        let all = pool.map_async(square, 0..1000u64).unwrap().await.unwrap();
        assert_eq!(all, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
        match pool.apply_async(fails, (5,)).unwrap().await {
            Err(Error::ProcessFailed(f)) => {
                assert!(f.panic_message.unwrap().contains("no good: 5"))
            }
            other => panic!("expected ProcessFailed, got {other:?}"),
        }
        // Many at once, awaited in reverse order.
        let rs: Vec<_> = (0..50u64)
            .map(|i| pool.apply_async(square, (i,)).unwrap())
            .collect();
        for (i, r) in rs.into_iter().enumerate().rev() {
            assert_eq!(r.await.unwrap(), (i * i) as u64);
        }
    });
}

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

fn imap_is_a_stream(m: StartMethod) {
    on_both_runtimes(move || async move {
        let pool = pool(m, 2).unwrap();
        let mut s = pool.imap(square, 0..3000u64).unwrap();
        let mut got = vec![];
        while let Some(r) = next(&mut s).await {
            got.push(r.unwrap());
        }
        assert_eq!(got, (0..3000u64).map(|x| x * x).collect::<Vec<_>>());

        let mut s = pool.imap_unordered_chunked(square, 0..500u64, 1).unwrap();
        let mut got = vec![];
        while let Some(r) = next(&mut s).await {
            got.push(r.unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, (0..500u64).map(|x| x * x).collect::<Vec<_>>());
    });
}

#[test]
fn the_wrong_direction_is_refused() {
    on_both_runtimes(|| async {
        let (r, w) = Pipe::simplex().unwrap();
        let (r, w) = (
            AsyncConnection::new(r).unwrap(),
            AsyncConnection::new(w).unwrap(),
        );
        assert!(matches!(r.send(&1u8).await, Err(Error::Unsupported { .. })));
        assert!(matches!(
            w.recv::<u8>().await,
            Err(Error::Unsupported { .. })
        ));
        // Neither refusal disturbed the stream.
        w.send(&5u8).await.unwrap();
        assert_eq!(r.recv::<u8>().await.unwrap(), 5);
    });
}

fn an_imap_stream_yields_a_failed_task_and_goes_on(m: StartMethod) {
    on_both_runtimes(move || async move {
        let pool = pool(m, 2).unwrap();
        let mut s = pool.imap_chunked(fails_on_3, 0..8u64, 1).unwrap();
        let mut got = vec![];
        while let Some(r) = next(&mut s).await {
            got.push(r.map_err(|e| matches!(e, Error::ProcessFailed(_))));
        }
        let want: Vec<_> = (0..8u64)
            .map(|x| if x == 3 { Err(true) } else { Ok(x) })
            .collect();
        assert_eq!(got, want);
    });
}

fn fails_on_3(x: u64) -> u64 {
    assert_ne!(x, 3, "three");
    x
}

fn many_tasks_await_results_at_once(m: StartMethod) {
    on_both_runtimes(move || async move {
        let pool = std::sync::Arc::new(pool(m, 2).unwrap());
        let tasks: Vec<_> = (0..40u64)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.apply_async(square, (i,)).unwrap().await })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), (i * i) as u64);
        }
    });
}

#[test]
fn a_message_read_ahead_before_wrapping_is_received() {
    on_both_runtimes(|| async {
        let (conn, mut raw) = raw_pair();
        // Two messages in one write: the blocking receive of the first reads
        // both, and the second waits in the connection's buffer, where no
        // readiness event will ever announce it.
        let mut two = frame(b"first");
        two.extend_from_slice(&frame(b"second"));
        raw.write_all(&two).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"first");
        let conn = AsyncConnection::new(conn).unwrap();
        assert_eq!(conn.recv_bytes().await.unwrap(), b"second");
    });
}
