//! The tour: multiproc doing one real job (counting the primes below a
//! limit) in every way the library offers, each with its figure.
//!
//! `cargo run --release --example tour`
//! (add `--features progress` for a progress bar on the pool's map)
//!
//! 1. one child process does it all (`Process`, `join` returns the count);
//! 2. a pool shares it out (`Pool::map`, then `imap_unordered` streaming);
//! 3. a child answers questions over a `Pipe` (round trips);
//! 4. a pipeline of processes: a producer feeds a `Queue` of blocks, two
//!    workers count and send results back on another `Queue`, add their
//!    counts to a shared `Value` under its `Lock`, and record each block's
//!    count in a named `SharedMemory` block — which `python3`, if present,
//!    reads with its own `multiprocessing.shared_memory`;
//! 5. a crashing task is contained.

use multiproc::connection::{Connection, Pipe};
use multiproc::pool::Pool;
use multiproc::shared::SharedMemory;
use multiproc::{Process, Queue, Value};
use std::time::Instant;

const LIMIT: u64 = 3_000_000;
/// The pool and the pipeline work in blocks: block `b` is `[b·BLOCK, (b+1)·BLOCK)`.
const BLOCK: u64 = 50_000;
const BLOCKS: u64 = LIMIT / BLOCK;

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// Counts the primes in `[lo, hi)` by trial division (deliberately CPU-bound).
fn count_primes(lo: u64, hi: u64) -> u64 {
    (lo..hi).filter(|&n| is_prime(n)).count() as u64
}

fn primes_in_block(b: u64) -> u64 {
    count_primes(b * BLOCK, (b + 1) * BLOCK)
}

fn crash() -> u64 {
    panic!("this task crashed on purpose")
}

/// Section 3: answers "is n prime?" until the parent closes its end.
fn oracle(conn: Connection) -> u64 {
    let mut answered = 0;
    while let Ok(n) = conn.recv::<u64>() {
        if conn.send(&is_prime(n)).is_err() {
            break;
        }
        answered += 1;
    }
    answered
}

/// Section 4, the producer: every block number, then one `None` per worker.
fn producer(tasks: Queue<Option<u64>>, workers: u64) {
    for b in 0..BLOCKS {
        tasks.put(Some(b)).expect("put");
    }
    for _ in 0..workers {
        tasks.put(None).expect("put");
    }
}

/// Section 4, a worker: counts blocks until `None`; reports each count on
/// `results`, adds it to `total` under its lock and writes it into the
/// shared memory block `table` at offset 8·b. Returns how many it did.
fn worker(
    tasks: Queue<Option<u64>>,
    results: Queue<(u64, u64)>,
    total: Value<u64>,
    table: String,
) -> u64 {
    let table = SharedMemory::open(&table).expect("open the shared table");
    let mut done = 0;
    while let Some(b) = tasks.get().expect("get") {
        let n = primes_in_block(b);
        table
            .write_at(8 * b as usize, &n.to_le_bytes())
            .expect("write");
        {
            let t = total.lock().expect("lock");
            let sum = t.get() + n;
            t.set(sum);
        }
        results.put((b, n)).expect("put");
        done += 1;
    }
    done
}

/// What Python's own `multiprocessing.shared_memory` reads from `name`, if
/// `python3` runs here.
fn python_reads(name: &str) -> Option<String> {
    let script = format!(
        "from multiprocessing import shared_memory, resource_tracker\n\
         import struct\n\
         shm = shared_memory.SharedMemory(name={name:?})\n\
         resource_tracker.unregister(shm._name, 'shared_memory')\n\
         counts = struct.unpack_from('<{BLOCKS}Q', shm.buf)\n\
         print(sum(counts), max(counts))\n\
         shm.close()\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // a spawned child enters here and never returns
    let workers = multiproc::cpu_count();
    println!("multiproc tour: counting primes below {LIMIT} on {workers} CPU(s)\n");

    // 1. One child process does all the work.
    let t0 = Instant::now();
    let expected = Process::start(count_primes, (0, LIMIT))?.join()?;
    let one = t0.elapsed();
    println!("1 process       : {expected} primes in {one:.2?}");

    // 2. A pool of one worker per CPU shares it out, block by block.
    #[cfg(feature = "progress")]
    let pool = Pool::builder().processes(workers).progress(true).build()?;
    #[cfg(not(feature = "progress"))]
    let pool = Pool::new(workers)?;
    let t0 = Instant::now();
    let total: u64 = pool
        .map_chunked(primes_in_block, 0..BLOCKS, 1)?
        .iter()
        .sum();
    let many = t0.elapsed();
    assert_eq!(total, expected);
    println!(
        "pool of {workers}       : {total} primes in {many:.2?}, speedup {:.2}x",
        one.as_secs_f64() / many.as_secs_f64()
    );

    // Results stream in as they are ready: imap_unordered.
    let t0 = Instant::now();
    let mut first = None;
    let mut sum = 0;
    for n in pool.imap_unordered(primes_in_block, 0..BLOCKS)? {
        sum += n?;
        first.get_or_insert_with(|| t0.elapsed());
    }
    assert_eq!(sum, expected);
    println!(
        "imap_unordered  : first block after {:.2?}, all {BLOCKS} after {:.2?}",
        first.unwrap_or_default(),
        t0.elapsed()
    );

    // 3. A child answers questions over a Pipe, one round trip each.
    let (mine, theirs) = Pipe::duplex()?;
    let mut child = Process::start(oracle, (theirs,))?;
    let (lo, hi) = (LIMIT - 20_000, LIMIT);
    let t0 = Instant::now();
    let mut primes = 0;
    for n in lo..hi {
        mine.send(&n)?;
        primes += u64::from(mine.recv::<bool>()?);
    }
    let dt = t0.elapsed();
    drop(mine); // the child sees end of file and returns
    let answered = child.join()?;
    assert_eq!(answered, hi - lo);
    assert_eq!(primes, count_primes(lo, hi));
    println!(
        "Pipe            : {answered} questions answered by a child, {primes} primes, {:.1} µs per round trip",
        dt.as_secs_f64() * 1e6 / answered as f64
    );

    // 4. A pipeline: producer -> Queue -> 2 workers -> Queue, plus a shared
    //    Value under its Lock and a SharedMemory table of counts.
    let tasks: Queue<Option<u64>> = Queue::new()?;
    let results: Queue<(u64, u64)> = Queue::new()?;
    let total = Value::new(0u64)?;
    let table = SharedMemory::create(8 * BLOCKS as usize)?;
    let t0 = Instant::now();
    let mut feeder = Process::start(producer, (tasks.clone(), 2))?;
    let mut crew: Vec<_> = (0..2)
        .map(|_| {
            Process::start(
                worker,
                (
                    tasks.clone(),
                    results.clone(),
                    total.clone(),
                    table.name().to_string(),
                ),
            )
        })
        .collect::<multiproc::Result<_>>()?;
    let mut per_block = vec![0u64; BLOCKS as usize];
    for _ in 0..BLOCKS {
        let (b, n) = results.get()?;
        per_block[b as usize] = n;
    }
    feeder.join()?;
    let shares: Vec<u64> = crew
        .iter_mut()
        .map(|w| w.join())
        .collect::<multiproc::Result<_>>()?;
    let dt = t0.elapsed();
    assert_eq!(per_block.iter().sum::<u64>(), expected);
    assert_eq!(total.get()?, expected);
    let mut word = [0u8; 8];
    let mut from_table = 0;
    for b in 0..BLOCKS as usize {
        table.read_at(8 * b, &mut word)?;
        from_table += u64::from_le_bytes(word);
    }
    assert_eq!(from_table, expected);
    println!(
        "Queue pipeline  : producer + 2 workers ({} and {} blocks) in {dt:.2?}; Value under its Lock = {}, SharedMemory table sums to {from_table}",
        shares[0],
        shares[1],
        total.get()?
    );
    match python_reads(table.name()) {
        Some(seen) => println!(
            "python3 reads the SharedMemory table {:?}: sum and max = {seen}",
            table.name()
        ),
        None => println!("(no python3 here: skipping the Python view of the table)"),
    }
    table.unlink()?;

    // 5. A task that panics fails alone; the pool keeps its workers.
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
