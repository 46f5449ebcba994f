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
#[test]
fn enc_speed() {
    let t = std::time::Instant::now();
    let mut f = Vec::new();
    for i in 0..1_000_000u64 { multiproc::codec::encode_into(&(i,), &mut f).unwrap(); }
    eprintln!("encode 1M: {:?} {}", t.elapsed(), f.len());
    let t = std::time::Instant::now();
    let mut rest = &f[..]; let mut s = 0u64;
    for _ in 0..1_000_000u64 { let (v, r) = postcard::take_from_bytes::<(u64,)>(rest).unwrap(); rest = r; s += v.0; }
    eprintln!("decode 1M: {:?} {}", t.elapsed(), s);
}
#[test]
fn map_only() {
    let pool = Pool::new(2).unwrap();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let v = pool.map(square, 0..1_000_000u64).unwrap();
        eprintln!("map 1M: {:?}", t.elapsed());
        assert_eq!(v[999_999], 999_999 * 999_999);
    }
}
