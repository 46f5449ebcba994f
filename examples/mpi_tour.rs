//! The tour's parallel job on MPI ranks: rank 0 runs `main`, every other
//! rank is a worker of the pool.
//!
//! ```sh
//! cargo build --release --features mpi --example mpi_tour
//! mpiexec -n 3 target/release/examples/mpi_tour            # 2 workers
//! mpiexec -f hosts -n 8 target/release/examples/mpi_tour   # MPICH, a hostfile
//! srun --mpi=pmix -n 64 target/release/examples/mpi_tour   # Slurm
//! ```
//!
//! An optional argument sets the limit (default 3,000,000).

use multiproc::mpi::MpiPool;
use multiproc::pool::TaskPool;
use std::time::Instant;

/// Counts the primes in `[lo, hi)` by trial division (deliberately CPU-bound).
fn count_primes(lo: u64, hi: u64) -> u64 {
    (lo..hi).filter(|&n| is_prime(n)).count() as u64
}

const BLOCK: u64 = 50_000;

/// Block `b` is `[b·BLOCK, (b+1)·BLOCK)`.
fn primes_in_block(b: u64) -> u64 {
    count_primes(b * BLOCK, (b + 1) * BLOCK)
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

fn crash() -> u64 {
    panic!("this task crashed on purpose")
}

fn square(x: u64) -> u64 {
    x * x
}

/// The tour's parallel job, written against [`TaskPool`]: the same code
/// runs on a local `multiproc::Pool`.
fn job(pool: &impl TaskPool, limit: u64, expected: u64, one: f64) -> multiproc::Result<()> {
    let workers = pool.processes();
    let blocks = limit.div_ceil(BLOCK);
    let t0 = Instant::now();
    let total: u64 = pool
        .map_chunked(primes_in_block, 0..blocks, 1)?
        .iter()
        .sum();
    let many = t0.elapsed();
    assert_eq!(total, expected);
    println!(
        "pool of {workers} ranks: {total} primes in {many:.2?}, speedup {:.2}x",
        one / many.as_secs_f64()
    );

    // Results stream in as the ranks finish them.
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

    // A task that panics fails alone; the ranks go on serving.
    match pool.apply(crash, ()) {
        Err(e) => println!("\na crashing task is contained: {e}"),
        Ok(_) => unreachable!(),
    }
    println!("and the pool goes on: 7² = {}", pool.apply(square, (7,))?);
    Ok(())
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // ranks 1.. serve the pool here and exit at its end
    let limit: u64 = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|e| multiproc::Error::Invalid(format!("limit {a:?}: {e}")))?,
        None => 3_000_000,
    };
    let pool = MpiPool::new()?;
    println!("multiproc MPI tour: counting primes below {limit}");
    for r in pool.ranks() {
        println!("  worker rank {} on {} (pid {})", r.rank, r.host, r.pid);
    }
    // Rank 0 alone, for reference.
    let t0 = Instant::now();
    let expected = (0..limit.div_ceil(BLOCK))
        .map(|b| count_primes(b * BLOCK, ((b + 1) * BLOCK).min(limit)))
        .sum::<u64>();
    let one = t0.elapsed();
    println!("rank 0 alone   : {expected} primes in {one:.2?}");
    // The pool counts whole blocks: compare like with like.
    let expected = (0..limit.div_ceil(BLOCK)).map(primes_in_block).sum();
    job(&pool, limit, expected, one.as_secs_f64())?;
    drop(pool);
    println!("mpi tour: done");
    Ok(())
}
