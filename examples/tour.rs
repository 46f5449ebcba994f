//! The tour: multiproc doing real work across processes.
//!
//! `cargo run --release --example tour`

use multiproc::pool::Pool;
use multiproc::Process;
use std::time::Instant;

/// Counts the primes in `[lo, hi)` by trial division (deliberately CPU-bound).
fn count_primes(lo: u64, hi: u64) -> u64 {
    (lo..hi).filter(|&n| is_prime(n)).count() as u64
}

/// The same work, in blocks for the pool: block `b` is `[b·BLOCK, (b+1)·BLOCK)`.
fn primes_in_block(b: u64) -> u64 {
    count_primes(b * BLOCK, (b + 1) * BLOCK)
}

const BLOCK: u64 = 50_000;

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

fn crash() -> u64 {
    panic!("this task crashed on purpose")
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // a spawned child enters here and never returns
    let limit: u64 = 3_000_000;
    let workers = multiproc::cpu_count();
    println!("multiproc tour: counting primes below {limit} on {workers} CPU(s)\n");

    // One child process does all the work.
    let t0 = Instant::now();
    let mut single = Process::start(count_primes, (0, limit))?;
    let expected = single.join()?;
    let one = t0.elapsed();
    println!("1 process      : {expected} primes in {one:.2?}");

    // A pool of one worker per CPU shares it out, block by block.
    let pool = Pool::new(workers)?;
    let t0 = Instant::now();
    let blocks = limit / BLOCK;
    let total: u64 = pool
        .map_chunked(primes_in_block, 0..blocks, 1)?
        .iter()
        .sum();
    let many = t0.elapsed();
    assert_eq!(total, expected);
    println!(
        "pool of {workers}      : {total} primes in {many:.2?}, speedup {:.2}x",
        one.as_secs_f64() / many.as_secs_f64()
    );

    // Results stream in as they are ready: imap_unordered.
    let t0 = Instant::now();
    let mut first = None;
    let mut sum = 0;
    for n in pool.imap_unordered(primes_in_block, 0..blocks)? {
        sum += n?;
        first.get_or_insert_with(|| t0.elapsed());
    }
    assert_eq!(sum, expected);
    println!(
        "imap_unordered : first block after {:.2?}, all {blocks} after {:.2?}",
        first.unwrap_or_default(),
        t0.elapsed()
    );

    // A task that panics fails alone; the pool keeps its workers.
    match pool.apply(crash, ()) {
        Err(e) => println!("\na crashing task is contained: {e}"),
        Ok(_) => unreachable!(),
    }
    println!(
        "and the pool goes on: 7² = {}",
        pool.apply(|x: u64| x * x, (7,))?
    );
    Ok(())
}
