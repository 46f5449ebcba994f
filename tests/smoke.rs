multiproc::test_support!();
use multiproc::{Process, StartMethod};

fn add((a, b): (u64, u64)) -> u64 {
    a + b
}
fn boom(_: ()) -> u32 {
    panic!("kaboom")
}

#[test]
fn spawn_and_fork_return_values() {
    for m in [StartMethod::Spawn, StartMethod::Fork] {
        let mut p = Process::builder()
            .start_method(m)
            .start(add, (2, 40))
            .unwrap();
        assert_eq!(p.join().unwrap(), 42, "{m:?}");
        assert_eq!(p.exitcode(), Some(0));
        let mut p = Process::builder().start_method(m).start(boom, ()).unwrap();
        let e = p.join().unwrap_err();
        let f = e.process_failure().unwrap();
        assert!(f.panic_message.as_ref().unwrap().contains("kaboom"), "{e}");
        assert_eq!(f.exitcode, 1);
    }
}
