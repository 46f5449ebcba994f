//! The tour: multiproc doing real work across processes.
//!
//! `cargo run --release --example tour`

use multiproc::{Process, StartMethod};
use std::time::Instant;

/// Counts the primes in `[lo, hi)` by trial division (deliberately CPU-bound).
fn count_primes((lo, hi): (u64, u64)) -> u64 {
    (lo..hi).filter(|&n| is_prime(n)).count() as u64
}

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

fn crash(_: ()) -> u64 {
    panic!("this worker crashed on purpose")
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // a spawned child enters here and never returns
    let limit: u64 = 3_000_000;
    let workers = multiproc::cpu_count();
    println!("multiproc tour: counting primes below {limit} on {workers} CPU(s)\n");

    // One process.
    let t0 = Instant::now();
    let mut single = Process::start(count_primes, (0, limit))?;
    let expected = single.join()?;
    let one = t0.elapsed();
    println!("1 process : {expected} primes in {:.2?}", one);

    // `workers` processes, each given an interleaved share of the range.
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let t0 = Instant::now();
        let step = limit / workers as u64;
        let mut procs = Vec::new();
        for w in 0..workers as u64 {
            let hi = if w + 1 == workers as u64 {
                limit
            } else {
                (w + 1) * step
            };
            procs.push(
                Process::builder()
                    .start_method(method)
                    .start(count_primes, (w * step, hi))?,
            );
        }
        let mut total = 0;
        for p in &mut procs {
            total += p.join()?;
        }
        let many = t0.elapsed();
        assert_eq!(total, expected);
        println!(
            "{workers} processes ({}): {total} primes in {:.2?}, speedup {:.2}x",
            method.name(),
            many,
            one.as_secs_f64() / many.as_secs_f64()
        );
    }

    // A crash is contained in its process and reported to the parent.
    let mut bad = Process::start(crash, ())?;
    match bad.join() {
        Err(e) => println!(
            "\na crashing child is contained: {e} (exitcode {:?})",
            bad.exitcode()
        ),
        Ok(_) => unreachable!(),
    }
    Ok(())
}
