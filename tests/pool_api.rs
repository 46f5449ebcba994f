//! The `TaskPool` trait on the local `Pool`: generic code written once for
//! every pool kind (the `mpi` feature's `MpiPool` runs the same function in
//! `tests/mpi.rs`).

multiproc::test_support!();

use multiproc::StartMethod;

use multiproc::pool::{PendingResult, TaskPool};
use std::time::Duration;

#[macro_use]
mod common;

use common::pool;

start_methods! {
    generic_code_runs_on_a_local_pool,
}

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn fails_on_3(x: u64) -> u64 {
    assert_ne!(x, 3, "three is refused");
    x
}

fn generic_job(pool: &impl TaskPool) -> multiproc::Result<()> {
    assert_eq!(pool.processes(), 2);
    assert_eq!(pool.map(square, 0..100u64)?[9], 81);
    assert_eq!(pool.map_chunked(square, 0..100u64, 7)?[99], 9801);
    assert_eq!(pool.starmap(add, vec![(1, 2), (3, 4)])?, vec![3, 7]);
    assert_eq!(pool.apply(add, (2, 3))?, 5);
    let r = pool.apply_async(square, (12,))?;
    assert_eq!(r.get_timeout(Duration::from_secs(60))?, 144);
    assert!(r.ready());
    let ordered: Vec<u64> = pool.imap(square, 0..50u64)?.collect::<Result<_, _>>()?;
    assert_eq!(ordered, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
    let mut unordered: Vec<u64> = pool
        .imap_unordered(square, 0..50u64)?
        .collect::<Result<_, _>>()?;
    unordered.sort_unstable();
    assert_eq!(unordered, ordered);
    let results: Vec<_> = pool.imap(fails_on_3, 0..5u64)?.collect();
    assert!(results[3].is_err());
    assert_eq!(results[4].as_ref().ok(), Some(&4));
    Ok(())
}

fn generic_code_runs_on_a_local_pool(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    generic_job(&pool).unwrap();
}
