//! Managers: the builtin shared types through their proxies, one server.
//!
//! Ports of CPython's `_TestContainers` and `TestSyncManagerTypes`
//! (`Lib/test/_test_multiprocessing.py`, PSF licence), rewritten for Rust:
//! Python's `d[k]`, `l[i]`, `ns.x` become typed methods; `IndexError`,
//! `KeyError`, `AttributeError` become `Err`/`None`; `test_list_iter`
//! becomes a snapshot (`to_vec`); the pickling tests become serde tests.

multiproc::test_support!();

use multiproc::manager::{DictProxy, ListProxy, Manager, NamespaceProxy, QueueProxy};
use multiproc::Error;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

/// Polls `f` until it holds (generous deadline: only turns a hang into a failure).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + LONG;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn manager_is_shareable_and_proxies_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Manager>();
    send::<DictProxy<String, u32>>();
    send::<ListProxy<u8>>();
    send::<QueueProxy<u8>>();
    send::<multiproc::manager::LockProxy>();
}

#[test]
fn list_like_cpython() {
    // _TestContainers.test_list
    let m = Manager::start().unwrap();
    let a = m.list_from(0..10u32).unwrap();
    assert_eq!(a.to_vec().unwrap(), (0..10).collect::<Vec<_>>());
    let b = m.list::<u32>().unwrap();
    assert_eq!(b.to_vec().unwrap(), Vec::<u32>::new());
    b.extend(0..5).unwrap();
    assert_eq!(b.to_vec().unwrap(), vec![0, 1, 2, 3, 4]);
    // _TestContainers.test_list_iter: a snapshot.
    let it = b.iter().unwrap();
    b.push(5).unwrap();
    assert_eq!(it.collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!(b.pop().unwrap(), Some(5));
    assert_eq!(b.get(2).unwrap(), Some(2));
    assert_eq!(b.get(10).unwrap(), None);
    b.set(2, 20).unwrap();
    assert_eq!(b.get(2).unwrap(), Some(20));
    assert!(matches!(b.set(10, 1), Err(Error::Invalid(_))));
    b.insert(0, 99).unwrap();
    assert_eq!(b.remove(0).unwrap(), 99);
    assert!(matches!(b.remove(100), Err(Error::Invalid(_))));
    assert_eq!(b.pop().unwrap(), Some(4));
    assert_eq!(b.len().unwrap(), 4);
    b.clear().unwrap();
    assert!(b.is_empty().unwrap());
    assert_eq!(b.pop().unwrap(), None);
}

#[test]
fn list_of_proxies_stays_working() {
    // _TestContainers.test_list_proxy_in_list
    let m = Manager::start().unwrap();
    let outer = m.list::<ListProxy<u32>>().unwrap();
    for _ in 0..3 {
        outer.push(m.list_from([0u32, 1, 2]).unwrap()).unwrap();
    }
    let first = outer.get(0).unwrap().unwrap();
    first.push(7).unwrap();
    assert_eq!(
        outer.get(0).unwrap().unwrap().to_vec().unwrap(),
        vec![0, 1, 2, 7]
    );
    assert_eq!(
        outer.get(1).unwrap().unwrap().to_vec().unwrap(),
        vec![0, 1, 2]
    );
    let all = outer.to_vec().unwrap();
    assert_eq!(all.len(), 3);
}

#[test]
fn dict_like_cpython() {
    // _TestContainers.test_dict
    let m = Manager::start().unwrap();
    let d = m.dict::<u32, char>().unwrap();
    let indices: Vec<u32> = (65..70).collect();
    for &i in &indices {
        assert_eq!(d.insert(i, char::from_u32(i).unwrap()).unwrap(), None);
    }
    let expected: Vec<(u32, char)> = indices
        .iter()
        .map(|&i| (i, char::from_u32(i).unwrap()))
        .collect();
    assert_eq!(d.items().unwrap(), expected);
    assert_eq!(d.keys().unwrap(), indices);
    assert_eq!(d.values().unwrap(), vec!['A', 'B', 'C', 'D', 'E']);
    assert_eq!(d.len().unwrap(), 5);
    assert!(d.contains_key(&65).unwrap());
    assert!(!d.contains_key(&1).unwrap());
    assert_eq!(d.get(&1).unwrap(), None); // KeyError
    assert_eq!(d.remove(&65).unwrap(), Some('A'));
    assert_eq!(d.remove(&65).unwrap(), None);
    d.update([(1, 'x'), (66, 'y')]).unwrap();
    assert_eq!(d.get(&66).unwrap(), Some('y'));
    assert_eq!(d.keys().unwrap(), vec![66, 67, 68, 69, 1]);
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());
}

#[test]
fn dict_of_proxies_stays_working() {
    // _TestContainers.test_dict_proxy_nested
    let m = Manager::start().unwrap();
    let pets = m.dict::<String, u32>().unwrap();
    pets.insert("ferrets".into(), 2).unwrap();
    pets.insert("hamsters".into(), 4).unwrap();
    let supplies = m.dict::<String, Vec<String>>().unwrap();
    supplies
        .insert("water".into(), vec!["bowl".into()])
        .unwrap();

    let outer = m.dict::<String, DictProxy<String, u32>>().unwrap();
    outer.insert("pets".into(), pets.clone()).unwrap();
    let got = outer.get(&"pets".into()).unwrap().unwrap();
    assert_eq!(got.get(&"ferrets".into()).unwrap(), Some(2));
    got.insert("ferrets".into(), 3).unwrap();
    assert_eq!(pets.get(&"ferrets".into()).unwrap(), Some(3));

    // The nested object outlives every outside proxy while stored.
    let before = m.number_of_objects().unwrap();
    drop(pets);
    drop(got);
    let again = outer.get(&"pets".into()).unwrap().unwrap();
    assert_eq!(again.get(&"hamsters".into()).unwrap(), Some(4));
    drop(again);
    // Removing it from the container frees it (once nothing else holds it).
    outer.remove(&"pets".into()).unwrap();
    assert!(eventually(|| m.number_of_objects().unwrap() == before - 1));
}

#[test]
fn replacing_a_dict_value_hands_back_the_old_one_whatever_their_sizes() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, Vec<u8>>().unwrap();
    let mut prev: Option<Vec<u8>> = None;
    for (i, n) in [0usize, 1, 100_000, 3, 70_000, 70_001, 0, 5]
        .into_iter()
        .enumerate()
    {
        let v: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
        assert_eq!(d.insert(7, v.clone()).unwrap(), prev);
        assert_eq!(d.get(&7).unwrap().as_ref(), Some(&v));
        prev = Some(v);
    }
    assert_eq!(d.keys().unwrap(), vec![7]);
    assert_eq!(d.remove(&7).unwrap(), prev);
}

#[test]
fn replacing_a_stored_proxy_hands_it_back_working_then_frees_it() {
    let m = Manager::start().unwrap();
    let outer = m.dict::<u8, DictProxy<u8, u8>>().unwrap();
    let a = m.dict::<u8, u8>().unwrap();
    a.insert(1, 10).unwrap();
    let b = m.dict::<u8, u8>().unwrap();
    b.insert(2, 20).unwrap();
    assert!(outer.insert(0, a).unwrap().is_none());
    let old = outer.insert(0, b).unwrap().unwrap();
    assert_eq!(old.get(&1).unwrap(), Some(10));
    let now = outer.get(&0).unwrap().unwrap();
    assert_eq!(now.get(&2).unwrap(), Some(20));
    drop(now);
    assert_eq!(m.number_of_objects().unwrap(), 3);
    // The replaced dict lived on through the proxy handed back only.
    drop(old);
    assert!(eventually(|| m.number_of_objects().unwrap() == 2));
}

#[test]
fn overwriting_list_namespace_and_value_entries_keeps_the_new_bytes_and_frees_the_old_proxies() {
    let m = Manager::start().unwrap();
    let l = m.list::<Vec<u8>>().unwrap();
    let v = m.value(Vec::<u8>::new()).unwrap();
    l.push(Vec::new()).unwrap();
    for (i, n) in [0usize, 100_000, 2, 70_000, 1].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..n).map(|j| (i * 7 + j) as u8).collect();
        l.set(0, bytes.clone()).unwrap();
        assert_eq!(l.get(0).unwrap().as_ref(), Some(&bytes));
        v.set(bytes.clone()).unwrap();
        assert_eq!(v.get().unwrap(), bytes);
    }
    let ns = m.namespace().unwrap();
    let base = m.number_of_objects().unwrap();
    ns.set("d", &m.dict::<u8, u8>().unwrap()).unwrap();
    let second = m.dict::<u8, u8>().unwrap();
    second.insert(1, 2).unwrap();
    ns.set("d", &second).unwrap();
    drop(second);
    // The first dict was held by the namespace only.
    assert!(eventually(|| m.number_of_objects().unwrap() == base + 1));
    let got: DictProxy<u8, u8> = ns.get("d").unwrap().unwrap();
    assert_eq!(got.get(&1).unwrap(), Some(2));
}

#[test]
fn handing_nested_proxies_back_leaks_no_reference() {
    let m = Manager::start().unwrap();
    let outer = m.list::<DictProxy<u8, u8>>().unwrap();
    let ns = m.namespace().unwrap();
    for i in 0..3u8 {
        let d = m.dict::<u8, u8>().unwrap();
        d.insert(i, i).unwrap();
        outer.push(d).unwrap();
    }
    ns.set("d", &m.dict::<u8, u8>().unwrap()).unwrap();
    assert!(eventually(|| m.number_of_objects().unwrap() == 6));
    // Every way a stored proxy comes back (or is dropped) while `outer`
    // and `ns` stay connected.
    let got = outer.get(1).unwrap().unwrap();
    assert_eq!(got.get(&1).unwrap(), Some(1));
    drop(got);
    assert_eq!(outer.to_vec().unwrap().len(), 3);
    drop(outer.pop().unwrap());
    drop(outer.remove(0).unwrap());
    outer.set(0, m.dict().unwrap()).unwrap();
    outer.clear().unwrap();
    let _: Option<DictProxy<u8, u8>> = ns.get("d").unwrap();
    assert!(ns.remove("d").unwrap());
    assert!(
        eventually(|| m.number_of_objects().unwrap() == 2),
        "{}",
        m.number_of_objects().unwrap()
    );
}

#[test]
fn namespace_like_cpython() {
    // _TestContainers.test_namespace
    let m = Manager::start().unwrap();
    let n: NamespaceProxy = m.namespace().unwrap();
    n.set("name", "Bob").unwrap();
    n.set("job", "Builder").unwrap();
    n.set("_hidden", "hidden").unwrap();
    assert_eq!(n.get::<String>("name").unwrap().as_deref(), Some("Bob"));
    assert_eq!(n.get::<String>("job").unwrap().as_deref(), Some("Builder"));
    assert_eq!(n.get::<String>("nope").unwrap(), None);
    assert!(n.remove("job").unwrap());
    assert!(!n.remove("job").unwrap());
    assert_eq!(
        n.names().unwrap(),
        vec!["_hidden".to_string(), "name".to_string()]
    );
    // Each attribute has its own type.
    n.set("x", &1.5f64).unwrap();
    assert_eq!(n.get::<f64>("x").unwrap(), Some(1.5));
}

#[test]
fn value_and_array() {
    // TestSyncManagerTypes.test_value / test_array
    let m = Manager::start().unwrap();
    let v = m.value(1i64).unwrap();
    assert_eq!(v.get().unwrap(), 1);
    v.set(2).unwrap();
    assert_eq!(v.get().unwrap(), 2);
    let a = m.array(vec![0i32, 1]).unwrap();
    assert_eq!(a.len().unwrap(), 2);
    assert_eq!(a.get(0).unwrap(), Some(0));
    a.set(1, 5).unwrap();
    assert_eq!(a.to_vec().unwrap(), vec![0, 5]);
    assert!(a.set(2, 5).is_err());
}

#[test]
fn queue_and_joinable_queue() {
    // TestSyncManagerTypes.test_queue / test_joinable_queue
    let m = Manager::start().unwrap();
    let q: QueueProxy<u32> = m.queue().unwrap();
    q.put(5).unwrap();
    assert_eq!(q.qsize().unwrap(), 1);
    assert!(!q.empty().unwrap());
    assert_eq!(q.get().unwrap(), 5);
    assert!(q.empty().unwrap());
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    assert!(matches!(
        q.get_timeout(Duration::from_millis(20)),
        Err(Error::Empty)
    ));

    let small = m.queue_with_maxsize::<u32>(1).unwrap();
    small.put(1).unwrap();
    assert!(small.full().unwrap());
    assert!(matches!(small.try_put(2), Err(Error::Full)));
    assert!(matches!(
        small.put_timeout(2, Duration::from_millis(20)),
        Err(Error::Full)
    ));

    let jq = m.joinable_queue::<u32>().unwrap();
    jq.put(5).unwrap();
    assert!(matches!(
        jq.join_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert_eq!(jq.get().unwrap(), 5);
    jq.task_done().unwrap();
    jq.join().unwrap();
    assert!(jq.task_done().is_err());
}

#[test]
fn blocked_get_is_woken_by_put_from_another_handle() {
    let m = Manager::start().unwrap();
    let q: QueueProxy<String> = m.queue().unwrap();
    let q2 = q.clone();
    let t = std::thread::spawn(move || q2.get());
    std::thread::sleep(Duration::from_millis(50));
    q.put("wake".into()).unwrap();
    assert_eq!(t.join().unwrap().unwrap(), "wake");
}

#[test]
fn locks_and_semaphores() {
    // TestSyncManagerTypes.test_lock / test_rlock / test_semaphore / test_bounded_semaphore
    let m = Manager::start().unwrap();
    let l = m.lock().unwrap();
    l.acquire().unwrap();
    assert!(l.locked().unwrap());
    let other = l.clone();
    assert!(!other.try_acquire().unwrap());
    assert!(!other.acquire_timeout(Duration::from_millis(20)).unwrap());
    other.release().unwrap(); // a Lock may be released by anyone, as in Python
    assert!(other.try_acquire().unwrap());
    other.release().unwrap();
    assert!(l.release().is_err());

    let r = m.rlock().unwrap();
    r.acquire().unwrap();
    r.acquire().unwrap();
    let r2 = r.clone();
    assert!(!r2.try_acquire().unwrap());
    assert!(r2.release().is_err());
    r.release().unwrap();
    assert!(!r2.try_acquire().unwrap());
    r.release().unwrap();
    assert!(r2.try_acquire().unwrap());

    let s = m.semaphore(2).unwrap();
    s.acquire().unwrap();
    s.acquire().unwrap();
    assert!(!s.try_acquire().unwrap());
    s.release().unwrap();
    assert_eq!(s.get_value().unwrap(), 1);

    let b = m.bounded_semaphore(1).unwrap();
    b.acquire().unwrap();
    b.release().unwrap();
    assert!(matches!(b.release(), Err(Error::ReleasedTooOften)));
}

#[test]
fn lock_held_by_a_dropped_proxy_is_released_with_owner_died() {
    let m = Manager::start().unwrap();
    let l = m.lock().unwrap();
    let holder = l.clone();
    holder.acquire().unwrap();
    drop(holder); // its connection closes while holding the lock
    assert!(matches!(l.acquire(), Err(Error::OwnerDied)));
    assert!(l.locked().unwrap()); // and the caller holds it
    l.release().unwrap();
}

#[test]
fn event_condition_barrier() {
    // TestSyncManagerTypes.test_event / test_condition / test_barrier
    let m = Manager::start().unwrap();
    let e = m.event().unwrap();
    assert!(!e.is_set().unwrap());
    assert!(!e.wait_timeout(Duration::from_millis(10)).unwrap());
    let e2 = e.clone();
    let t = std::thread::spawn(move || e2.wait());
    e.set().unwrap();
    t.join().unwrap().unwrap();
    e.clear().unwrap();
    assert!(!e.is_set().unwrap());

    let c = m.condition().unwrap();
    let c2 = c.clone();
    let flag = m.value(false).unwrap();
    let flag2 = flag.clone();
    let t = std::thread::spawn(move || -> multiproc::Result<bool> {
        c2.acquire()?;
        c2.wait_for(|| flag2.get())?;
        c2.release()?;
        Ok(true)
    });
    std::thread::sleep(Duration::from_millis(30));
    c.acquire().unwrap();
    flag.set(true).unwrap();
    c.notify_all().unwrap();
    c.release().unwrap();
    assert!(t.join().unwrap().unwrap());
    assert!(c.release().is_err());

    let b = m.barrier(3).unwrap();
    assert_eq!(b.parties().unwrap(), 3);
    let ts: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || b.wait())
        })
        .collect();
    let mine = b.wait().unwrap();
    let mut idx: Vec<u64> = ts.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
    idx.push(mine);
    idx.sort();
    assert_eq!(idx, vec![0, 1, 2]);
    b.abort().unwrap();
    assert!(matches!(b.wait(), Err(Error::BrokenBarrier)));
    b.reset().unwrap();
    assert!(!b.broken().unwrap());
    assert!(matches!(m.barrier(0), Err(Error::Invalid(_))));
}

#[test]
fn objects_are_freed_when_the_last_proxy_drops() {
    // _TestManagerRestart / CPython's refcount checks (_number_of_objects)
    let m = Manager::start().unwrap();
    assert_eq!(m.number_of_objects().unwrap(), 0);
    let d = m.dict::<u32, u32>().unwrap();
    let d2 = d.clone();
    let l = m.list::<u32>().unwrap();
    assert_eq!(m.number_of_objects().unwrap(), 2);
    drop(d);
    assert_eq!(m.number_of_objects().unwrap(), 2); // d2 still holds it
    drop(d2);
    drop(l);
    assert!(eventually(|| m.number_of_objects().unwrap() == 0));
}

#[test]
fn shutdown_ends_the_server_and_proxies_fail() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    d.insert(1, 1).unwrap();
    m.shutdown().unwrap();
    assert!(d.get(&1).is_err());
    m.shutdown().unwrap(); // idempotent
}

#[test]
fn pipelined_puts_keep_order_and_are_visible_after_flush_or_the_next_call() {
    let m = Manager::start().unwrap();
    let q: QueueProxy<u32> = m.queue().unwrap();
    let other = q.clone(); // a handle made before the puts
    for i in 0..500 {
        q.put(i).unwrap();
    }
    q.flush().unwrap();
    assert_eq!(other.qsize().unwrap(), 500);
    for i in 500..1000 {
        q.put(i).unwrap();
    }
    // The next call of the same proxy waits for its puts first.
    assert_eq!(q.qsize().unwrap(), 1000);
    assert_eq!(other.qsize().unwrap(), 1000);
    // In order, whichever handle takes them.
    for i in 0..1000 {
        let h = if i % 2 == 0 { &q } else { &other };
        assert_eq!(h.get().unwrap(), i);
    }
    // A get right after a put on the same proxy sees the item.
    q.put(7).unwrap();
    assert_eq!(q.try_get().unwrap(), 7);
    // Flushing with nothing pipelined is a no-op, and a clone sees the puts.
    q.flush().unwrap();
    q.put(8).unwrap();
    assert_eq!(q.clone().try_get().unwrap(), 8);
}

#[test]
fn bounded_queue_puts_still_wait_and_fail_as_python_s() {
    let m = Manager::start().unwrap();
    let q = m.queue_with_maxsize::<u32>(2).unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    // Full: a blocking put waits in the call until another handle makes room.
    let getter = q.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        getter.get()
    });
    q.put(3).unwrap();
    assert_eq!(t.join().unwrap().unwrap(), 1);
    assert_eq!(q.qsize().unwrap(), 2);
    assert!(matches!(q.try_put(4), Err(Error::Full)));
    let jq = m.joinable_queue::<u32>().unwrap();
    for i in 0..10 {
        jq.put(i).unwrap();
    }
    for _ in 0..10 {
        jq.get().unwrap();
        jq.task_done().unwrap();
    }
    jq.join().unwrap();
}

#[test]
fn get_many_takes_what_is_there_in_order() {
    let m = Manager::start().unwrap();
    let q: QueueProxy<u32> = m.queue().unwrap();
    for i in 0..10 {
        q.put(i).unwrap();
    }
    assert_eq!(q.get_many(4).unwrap(), vec![0, 1, 2, 3]);
    assert_eq!(q.get_many(100).unwrap(), (4..10).collect::<Vec<_>>());
    assert!(matches!(
        q.get_many_timeout(5, Duration::ZERO),
        Err(Error::Empty)
    ));
    // It waits for the first item.
    let putter = q.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        putter.put(42)
    });
    assert_eq!(q.get_many(0).unwrap(), vec![42]); // 0 counts as 1
    t.join().unwrap().unwrap();
}

#[test]
fn condition_over_an_existing_lock_shares_it() {
    // manager.Condition(lock)
    let m = Manager::start().unwrap();
    let lock = m.lock().unwrap();
    let c = m.condition_with(&lock).unwrap();
    c.acquire().unwrap();
    assert!(lock.locked().unwrap());
    assert!(!lock.try_acquire().unwrap()); // the same lock, held
    c.release().unwrap();
    assert!(!lock.locked().unwrap());

    // A waiter releases the lock while it waits and holds it again after.
    let (c2, lock2) = (c.clone(), lock.clone());
    let flag = m.value(false).unwrap();
    let flag2 = flag.clone();
    let t = std::thread::spawn(move || -> multiproc::Result<bool> {
        c2.acquire()?;
        c2.wait_for(|| flag2.get())?;
        let held = lock2.locked()?;
        c2.release()?;
        Ok(held)
    });
    // Taking the lock through its own proxy works while the waiter waits.
    assert!(eventually(|| lock.try_acquire().unwrap()));
    flag.set(true).unwrap();
    // Python's pattern: the lock taken through its proxy, notify through
    // the condition (a plain Lock is "owned" while anyone holds it).
    c.notify_all().unwrap();
    lock.release().unwrap();
    assert!(t.join().unwrap().unwrap());
    assert!(!lock.locked().unwrap());
    assert!(matches!(c.notify(), Err(Error::NotHeld))); // nobody holds it
}

#[test]
fn condition_over_an_rlock_needs_its_owner() {
    let m = Manager::start().unwrap();
    let r = m.rlock().unwrap();
    let c = m.condition_with(&r).unwrap();
    r.acquire().unwrap(); // held by the lock's proxy, not the condition's
    assert!(matches!(
        c.wait_timeout(Duration::from_millis(10)),
        Err(Error::NotHeld)
    ));
    assert!(!c.try_acquire().unwrap());
    r.release().unwrap();
    c.acquire().unwrap();
    c.acquire().unwrap(); // re-entrant
    assert!(!c.wait_timeout(Duration::from_millis(10)).unwrap());
    // Held twice again after the wait.
    c.release().unwrap();
    assert!(!r.clone().try_acquire().unwrap());
    c.release().unwrap();
    assert!(r.try_acquire().unwrap());
    r.release().unwrap();
}

#[test]
fn condition_keeps_its_lock_alive_and_refuses_another_manager_s() {
    let m = Manager::start().unwrap();
    let lock = m.rlock().unwrap();
    let c = m.condition_with(&lock).unwrap();
    drop(lock);
    c.acquire().unwrap();
    c.release().unwrap();
    assert_eq!(m.number_of_objects().unwrap(), 2);
    drop(c);
    assert!(eventually(|| m.number_of_objects().unwrap() == 0));

    let other = Manager::start().unwrap();
    let foreign = other.lock().unwrap();
    assert!(matches!(m.condition_with(&foreign), Err(Error::Invalid(_))));
}
