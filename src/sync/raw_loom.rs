//! loom models of the lock word (see `raw.rs`): mutual exclusion between
//! live processes, exactly one take-over from a dead holder, and no
//! take-over from a live holder that stalls.

use super::*;
use loom::sync::Arc;

/// Two live processes increment a counter under the lock with a plain
/// load + store: the lock must exclude them (no lost update), and
/// neither may see the other as dead.
#[test]
fn mutual_exclusion() {
    loom::model(|| {
        let l = Arc::new(RawLock::new());
        let n = Arc::new(AtomicU32::new(0));
        let ts: Vec<_> = (1..=2)
            .map(|pid| {
                let (l, n) = (l.clone(), n.clone());
                loom::thread::spawn(move || {
                    os::become_process(pid);
                    assert_eq!(l.lock(None), Ok(Acquired::Clean));
                    let v = n.load(Ordering::Relaxed);
                    n.store(v + 1, Ordering::Relaxed);
                    assert!(l.unlock());
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(n.load(Ordering::Relaxed), 2);
        assert!(!l.died());
        assert!(!l.is_locked());
    });
}

/// A lock left held by a dead process: two live processes race to take
/// it over; exactly one take-over happens at a time (mutual exclusion
/// holds), both report the death, and the lock ends free.
#[test]
fn take_over_from_dead_holder() {
    loom::model(|| {
        let l = Arc::new(RawLock::new());
        l.state.store(
            pack(os::DEAD_FROM, os::token(os::DEAD_FROM)),
            Ordering::Relaxed,
        );
        let inside = Arc::new(AtomicU32::new(0));
        let ts: Vec<_> = (1..=2)
            .map(|pid| {
                let (l, inside) = (l.clone(), inside.clone());
                loom::thread::spawn(move || {
                    os::become_process(pid);
                    assert_eq!(l.lock(None), Ok(Acquired::OwnerDied));
                    assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0, "two holders");
                    inside.fetch_sub(1, Ordering::Relaxed);
                    assert!(l.unlock());
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert!(l.died());
        assert!(!l.is_locked());
    });
}

/// A live holder that releases and re-acquires while a waiter checks its
/// liveness (the window that used to pair a new pid with an old start
/// time): the waiter never takes the lock over, and never sees OwnerDied.
#[test]
fn live_holder_is_never_taken_over() {
    loom::model(|| {
        let l = Arc::new(RawLock::new());
        let holder = {
            let l = l.clone();
            loom::thread::spawn(move || {
                os::become_process(1);
                for _ in 0..2 {
                    assert_eq!(l.lock(None), Ok(Acquired::Clean));
                    assert!(l.unlock());
                }
            })
        };
        os::become_process(2);
        assert_eq!(l.lock(None), Ok(Acquired::Clean));
        assert!(l.unlock());
        holder.join().unwrap();
        assert!(!l.died());
    });
}
