//! `MpiPool::map` dispatch rates, for `benches/mpi/run.sh` (which runs it
//! under `mpiexec -n 3` beside `mpi4py.futures`): prints one JSON object per
//! figure, `{"name": ..., "rate": tasks per second}` (median of 5).

use multiproc::mpi::MpiPool;
use multiproc::pool::TaskPool;
use std::time::Instant;

fn ident(x: u64) -> u64 {
    x
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn rate(n: u64, mut run: impl FnMut() -> multiproc::Result<Vec<u64>>) -> multiproc::Result<f64> {
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let out = run()?;
        let dt = t0.elapsed().as_secs_f64();
        assert_eq!(out.len() as u64, n);
        assert_eq!(out[out.len() - 1], n - 1);
        rates.push(n as f64 / dt);
    }
    Ok(median(rates))
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // ranks 1.. serve here
    let pool = MpiPool::new()?;
    // Warm up (page faults, the workers' runner lookup).
    pool.map_chunked(ident, 0..10_000u64, 1)?;
    let n1 = 100_000;
    let cs1 = rate(n1, || pool.map_chunked(ident, 0..n1, 1))?;
    println!(r#"{{"name": "map chunksize 1", "rate": {cs1:.0}, "tasks": {n1}}}"#);
    let nd = 1_000_000;
    let def = rate(nd, || pool.map(ident, 0..nd))?;
    println!(r#"{{"name": "map 1M ints, default chunksize", "rate": {def:.0}, "tasks": {nd}}}"#);
    let t0 = Instant::now();
    let k = 2_000;
    for i in 0..k {
        assert_eq!(pool.apply(ident, (i,))?, i);
    }
    let lat = t0.elapsed().as_secs_f64() / k as f64;
    println!(
        r#"{{"name": "apply round trip", "rate": {:.0}, "tasks": {k}}}"#,
        1.0 / lat
    );
    Ok(())
}
