//! A tokio server with a process pool behind it.
//!
//! ```sh
//! cargo run --release --features tokio --example async
//! ```
//!
//! The server listens on a loopback TCP port; each request is a line
//! `LO HI`, answered with the number of primes in `LO..HI`, counted by a
//! pool worker process. The runtime's threads only move bytes: the CPU work
//! runs in the pool and each connection task awaits its `AsyncResult`.
//! Eight client tasks then send requests over TCP and check the answers.

use multiproc::{Pool, Result};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The CPU-bound work: primes in `lo..hi`, by trial division.
fn count_primes(lo: u64, hi: u64) -> u64 {
    (lo..hi)
        .filter(|&n| n > 1 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

/// Serves one connection: a line in, a line out, until the client closes.
async fn serve(sock: TcpStream, pool: Arc<Pool>) -> Result<()> {
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Some(line) = lines.next_line().await? {
        let mut nums = line.split_whitespace().map(str::parse::<u64>);
        let reply = match (nums.next(), nums.next(), nums.next()) {
            (Some(Ok(lo)), Some(Ok(hi)), None) if lo <= hi => {
                match pool.apply_async(count_primes, (lo, hi))?.await {
                    Ok(n) => n.to_string(),
                    Err(e) => format!("error: {e}"),
                }
            }
            _ => "error: expected `LO HI` with LO <= HI".to_string(),
        };
        w.write_all(format!("{reply}\n").as_bytes()).await?;
    }
    Ok(())
}

/// One client: `requests` requests over one connection; returns the answers.
async fn client(addr: std::net::SocketAddr, first: u64, requests: u64) -> Result<Vec<(u64, u64)>> {
    let sock = TcpStream::connect(addr).await?;
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut answers = vec![];
    for i in 0..requests {
        let lo = (first + i) * 50_000;
        w.write_all(format!("{lo} {}\n", lo + 50_000).as_bytes())
            .await?;
        let line = lines.next_line().await?.unwrap_or_default();
        let n = line
            .parse()
            .map_err(|_| multiproc::Error::Invalid(format!("server answered {line:?}")))?;
        answers.push((lo, n));
    }
    Ok(answers)
}

async fn run() -> Result<()> {
    let pool = Arc::new(Pool::new(multiproc::cpu_count())?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!(
        "serving on {addr} with a pool of {} processes",
        multiproc::cpu_count()
    );
    let acceptor = {
        let pool = pool.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let pool = pool.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(sock, pool).await {
                        eprintln!("connection failed: {e}");
                    }
                });
            }
        })
    };

    let t0 = Instant::now();
    let (clients, per_client) = (8u64, 10u64);
    let tasks: Vec<_> = (0..clients)
        .map(|c| tokio::spawn(client(addr, c * per_client, per_client)))
        .collect();
    let mut total = 0;
    for t in tasks {
        let answers = t
            .await
            .map_err(|e| multiproc::Error::Invalid(e.to_string()))??;
        total += answers.len();
        // Spot-check one answer against a computation here.
        let (lo, n) = answers[0];
        assert_eq!(n, count_primes(lo, lo + 50_000), "wrong answer for {lo}");
    }
    let dt = t0.elapsed();
    println!(
        "{total} requests from {clients} concurrent clients in {:.0} ms ({:.0} requests/s)",
        dt.as_secs_f64() * 1e3,
        total as f64 / dt.as_secs_f64()
    );
    acceptor.abort();
    Ok(())
}

fn main() -> Result<()> {
    multiproc::init(); // first line of main: spawned workers enter here
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}
