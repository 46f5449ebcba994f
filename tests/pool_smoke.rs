multiproc::test_support!();
use multiproc::pool::Pool;
fn square(x: u64) -> u64 { x * x }
fn add(a: u64, b: u64) -> u64 { a + b }
#[test]
fn smoke() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(add, (2, 3)).unwrap(), 5);
    let v = pool.map(square, 0..1000u64).unwrap();
    assert_eq!(v, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
    let v: Vec<u64> = pool.imap(square, 0..100u64).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(v, (0..100u64).map(|x| x * x).collect::<Vec<_>>());
    let t = std::time::Instant::now();
    let v = pool.map(square, 0..1_000_000u64).unwrap();
    eprintln!("map 1M: {:?}", t.elapsed());
    assert_eq!(v[999_999], 999_999 * 999_999);
    let t = std::time::Instant::now();
    for i in 0..1000u64 { assert_eq!(pool.apply_async(square, (i,)).unwrap().get().unwrap(), i*i); }
    eprintln!("apply: {:?}/task", t.elapsed() / 1000);
    let t = std::time::Instant::now();
    let n = pool.imap_unordered(square, 0..20000u64).unwrap().count();
    assert_eq!(n, 20000);
    eprintln!("imap_unordered: {:?}", t.elapsed());
}
