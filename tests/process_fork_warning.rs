//! A fork from a multithreaded parent logs one warning through the `log`
//! facade (CPython 3.12's DeprecationWarning "This process is
//! multi-threaded, use of fork() may lead to deadlocks in the child").

multiproc::test_support!();

use multiproc::{Process, StartMethod};
use std::sync::Mutex;

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Recorder;

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.level() == log::Level::Warn {
            SEEN.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn noop() {}

/// Fork only, by its nature: the warning is about `fork()`; spawn and
/// forkserver do not copy the parent and never warn.
#[test]
fn fork_from_a_multithreaded_parent_warns_once() {
    log::set_logger(&Recorder).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || rx.recv());
    for _ in 0..3 {
        let mut p = Process::builder()
            .start_method(StartMethod::Fork)
            .start(noop, ())
            .unwrap();
        p.join().unwrap();
    }
    drop(tx);
    let _ = other.join();
    let seen = SEEN.lock().unwrap().clone();
    let warnings: Vec<&String> = seen
        .iter()
        .filter(|m| m.contains("multi-threaded"))
        .collect();
    assert_eq!(warnings.len(), 1, "{seen:?}");
    assert!(warnings[0].contains("fork()"), "{seen:?}");
}
