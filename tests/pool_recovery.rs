//! No completed result is lost and no worker idles while work waits:
//! a worker dying mid-chunk keeps the answers of the tasks it finished,
//! `maxtasksperchild` replaces workers at once and leaves no zombie, and an
//! idle worker takes over batches another worker has not started.

multiproc::test_support!();

use multiproc::pool::Pool;
use multiproc::{Error, StartMethod};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[macro_use]
mod common;

use common::pool;

start_methods! {
    a_chunk_whose_second_task_aborts_keeps_the_first_result,
    large_answers_before_an_abort_are_kept,
    answers_larger_than_the_buffer_are_kept,
    map_fails_only_for_the_task_that_killed_its_worker,
    maxtasksperchild_replaces_at_once_and_leaves_no_zombie,
    an_idle_worker_takes_over_work_queued_behind_another,
    large_byte_tasks_survive_their_workers_death,
}

const LONG: Duration = Duration::from_secs(120);

fn sqr(x: u64) -> u64 {
    x * x
}

fn append(path: &str, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file");
    // One write per line: O_APPEND keeps lines whole and in order.
    f.write_all(line.as_bytes()).expect("log write");
}

/// Task `i` records that it ran (the marker file proves it), then returns,
/// or aborts its worker when `i == abort_at`.
fn mark_then_maybe_abort((i, abort_at, log): (u64, u64, String)) -> u64 {
    append(&log, &format!("{i}\n"));
    if i == abort_at {
        std::process::abort();
    }
    i * 10
}

/// As `mark_then_maybe_abort`, with a 300 KB answer: a chunk's answers
/// outgrow the worker's journal and leave in several messages.
fn big_answer((i, abort_at, log): (u64, u64, String)) -> Vec<u8> {
    append(&log, &format!("{i}\n"));
    if i == abort_at {
        std::process::abort();
    }
    vec![i as u8; 300_000]
}

fn temp_log(tag: &str) -> String {
    let p: PathBuf = std::env::temp_dir().join(format!(
        "multiproc-recovery-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&p);
    p.to_string_lossy().into_owned()
}

/// How many times each task ran, from the log.
fn runs(log: &str, n: u64) -> Vec<usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut count = vec![0; n as usize];
    for line in text.lines() {
        count[line.parse::<usize>().expect("task number")] += 1;
    }
    count
}

/// The proof: in a chunk of 4 tasks whose second task aborts the
/// worker, the first task ran to completion (its marker is there), so its
/// result is kept; only the second fails; the last two run on another
/// worker, once each. Also after earlier maps, under fork and spawn.
fn a_chunk_whose_second_task_aborts_keeps_the_first_result(m: StartMethod) {
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(pool.map(sqr, 0..1000u64).unwrap().len(), 1000);
    }
    let log = temp_log("abort");
    let items = (0..4u64).map(|i| (i, 1, log.clone()));
    let got: Vec<_> = pool
        .imap_chunked(mark_then_maybe_abort, items, 4)
        .unwrap()
        .collect();
    assert_eq!(got.len(), 4);
    assert!(
        matches!(got[0], Ok(0)),
        "{m:?}: task 0 completed, its result is lost: {:?}",
        got[0]
    );
    assert!(
        matches!(got[1], Err(Error::WorkerDied { exitcode: -6 })),
        "{m:?}: {:?}",
        got[1]
    );
    assert!(matches!(got[2], Ok(20)), "{m:?}: {:?}", got[2]);
    assert!(matches!(got[3], Ok(30)), "{m:?}: {:?}", got[3]);
    assert_eq!(runs(&log, 4), vec![1, 1, 1, 1], "each task ran once");
    let _ = std::fs::remove_file(&log);
    // The pool goes on, and the dead worker is replaced.
    assert_eq!(pool.map(sqr, 0..100u64).unwrap()[9], 81);
    let deadline = Instant::now() + LONG;
    while pool.worker_pids().len() != 2 {
        assert!(
            Instant::now() < deadline,
            "the dead worker was not replaced"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The same when the chunk's answers are large enough to be sent while the
/// chunk still runs: the nine answers before the abort arrive whole.
fn large_answers_before_an_abort_are_kept(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    let log = temp_log("big");
    let items = (0..12u64).map(|i| (i, 9, log.clone()));
    let got: Vec<_> = pool.imap_chunked(big_answer, items, 12).unwrap().collect();
    for (i, r) in got.iter().enumerate() {
        match r {
            Ok(v) => {
                assert_ne!(i, 9);
                assert_eq!(v.len(), 300_000);
                assert!(
                    v.iter().all(|b| *b == i as u8),
                    "task {i}'s answer is wrong"
                );
            }
            Err(Error::WorkerDied { exitcode: -6 }) => assert_eq!(i, 9),
            Err(e) => panic!("task {i}: {e}"),
        }
    }
    assert_eq!(runs(&log, 12), vec![1; 12]);
    let _ = std::fs::remove_file(&log);
}

/// Answers larger than the worker's whole output buffer (1 MiB) travel on
/// their own; they too are kept when a later task of the chunk aborts.
fn huge_answer((i, abort_at, log): (u64, u64, String)) -> Vec<u8> {
    append(&log, &format!("{i}\n"));
    if i == abort_at {
        std::process::abort();
    }
    vec![i as u8 + 1; 1_500_000]
}

fn answers_larger_than_the_buffer_are_kept(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    let log = temp_log("huge");
    let items = (0..4u64).map(|i| (i, 2, log.clone()));
    let got: Vec<_> = pool.imap_chunked(huge_answer, items, 4).unwrap().collect();
    for (i, r) in got.iter().enumerate() {
        match r {
            Ok(v) => {
                assert_ne!(i, 2);
                assert_eq!(v.len(), 1_500_000);
                assert!(
                    v.iter().all(|b| *b == i as u8 + 1),
                    "task {i}'s answer is wrong"
                );
            }
            Err(Error::WorkerDied { exitcode: -6 }) => assert_eq!(i, 2),
            Err(e) => panic!("task {i}: {e}"),
        }
    }
    assert_eq!(runs(&log, 4), vec![1; 4]);
    let _ = std::fs::remove_file(&log);
}

/// `map` reports the one task that died, and only because it died.
fn map_fails_only_for_the_task_that_killed_its_worker(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    let log = temp_log("map");
    let items: Vec<_> = (0..40u64).map(|i| (i, 17, log.clone())).collect();
    let got: Vec<_> = pool
        .imap_chunked(mark_then_maybe_abort, items, 10)
        .unwrap()
        .collect();
    let failed: Vec<usize> = (0..40).filter(|&i| got[i].is_err()).collect();
    assert_eq!(failed, vec![17]);
    assert_eq!(runs(&log, 40), vec![1; 40]);
    let _ = std::fs::remove_file(&log);
}

fn pid_of(_: u64) -> i32 {
    std::process::id() as i32
}

/// Neither alive nor a zombie: gone.
fn gone(pid: i32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// `maxtasksperchild`: while workers retire, `worker_pids()` always lists
/// two workers; once the pool is idle, every retired worker is reaped (no
/// zombie) and the two listed are alive, with no further call on the pool.
fn maxtasksperchild_replaces_at_once_and_leaves_no_zombie(m: StartMethod) {
    let pool = std::sync::Arc::new(
        Pool::builder()
            .start_method(m)
            .processes(2)
            .maxtasksperchild(1)
            .build()
            .unwrap(),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (pool, stop) = (pool.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            let mut polls = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let pids = pool.worker_pids();
                assert_eq!(pids.len(), 2, "worker_pids shrank: {pids:?}");
                seen.extend(pids);
                polls += 1;
                std::thread::yield_now();
            }
            (seen, polls)
        })
    };
    let mut ran = std::collections::BTreeSet::new();
    for i in 0..12u64 {
        ran.insert(pool.apply(pid_of, (i,)).unwrap());
    }
    assert!(ran.len() >= 12, "each task ran in its own worker: {ran:?}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (seen, polls) = watcher.join().expect("worker_pids never shrank");
    assert!(polls > 0);
    // No further call on the pool: the retired workers must be reaped by
    // the pool on its own.
    let deadline = Instant::now() + LONG;
    loop {
        let current = pool.worker_pids();
        let leftover: Vec<i32> = ran
            .iter()
            .chain(&seen)
            .copied()
            .filter(|p| !current.contains(p) && !gone(*p))
            .collect();
        if leftover.is_empty() && current.iter().all(|p| !zombie(*p) && !gone(*p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retired workers not reaped (zombies: {:?})",
            leftover.iter().filter(|p| zombie(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pool.worker_pids().len(), 2);
}

/// A 5 ms task that logs when it starts and ends: `S pid i` and `E pid i`,
/// in one file, in the order they happen.
fn logged_work((i, log): (u64, String)) -> i32 {
    let pid = std::process::id() as i32;
    append(&log, &format!("S {pid} {i}\n"));
    std::thread::sleep(Duration::from_millis(5));
    append(&log, &format!("E {pid} {i}\n"));
    pid
}

/// After the first worker ran out of work, how many tasks the other
/// started: the work a worker found queued behind another one while idle.
fn started_after_first_idle(log: &str) -> (usize, usize, usize) {
    let text = std::fs::read_to_string(log).unwrap();
    let events: Vec<(char, i32)> = text
        .lines()
        .map(|l| {
            let mut it = l.split(' ');
            let kind = it.next().unwrap().chars().next().unwrap();
            (kind, it.next().unwrap().parse().unwrap())
        })
        .collect();
    let pids: std::collections::BTreeSet<i32> = events.iter().map(|e| e.1).collect();
    assert_eq!(pids.len(), 2, "both workers ran tasks: {pids:?}");
    // Each worker's last end.
    let last_end = |pid: i32| events.iter().rposition(|e| *e == ('E', pid)).unwrap();
    let (a, b) = (*pids.first().unwrap(), *pids.last().unwrap());
    let (first, other) = if last_end(a) < last_end(b) {
        (a, b)
    } else {
        (b, a)
    };
    let idle_from = last_end(first);
    let later = events[idle_from..]
        .iter()
        .filter(|e| **e == ('S', other))
        .count();
    let per = |pid: i32| events.iter().filter(|e| **e == ('S', pid)).count();
    (later, per(first), per(other))
}

/// The case: on `Pool(2)`, an `apply` and then a 200-task map of
/// slow tasks. A worker that runs out of work takes over batches the other
/// has not started, so once one worker is idle the other starts at most
/// the rest of its chunk and one more (not half the map, as when the map
/// was split 50/150 for good).
fn an_idle_worker_takes_over_work_queued_behind_another(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    // Give one worker a history (a short task) and the other none.
    pool.apply(pid_of, (0,)).unwrap();
    let log = temp_log("balance");
    let items: Vec<_> = (0..200u64).map(|i| (i, log.clone())).collect();
    let got = pool.map(logged_work, items).unwrap();
    assert_eq!(got.len(), 200);
    let (later, first, other) = started_after_first_idle(&log);
    let chunk = multiproc::pool::default_chunksize(200, 2);
    assert!(
        later < 2 * chunk,
        "a worker idled while {later} tasks were queued behind the other (split {first}/{other})"
    );
    let _ = std::fs::remove_file(&log);
    // Whatever the history, with chunks of one task.
    let log = temp_log("balance1");
    let items: Vec<_> = (0..200u64).map(|i| (i, log.clone())).collect();
    pool.map_chunked(logged_work, items, 1).unwrap();
    let (later, first, other) = started_after_first_idle(&log);
    assert!(
        later <= 3,
        "a worker idled while {later} tasks were queued behind the other (split {first}/{other})"
    );
    let _ = std::fs::remove_file(&log);
}

/// A byte task: `[log path length (u16 LE)][log path][task number (u64
/// LE)][abort flag][payload]`.
fn byte_task(log: &str, i: u64, abort: bool, len: usize) -> Vec<u8> {
    let mut v = (log.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(log.as_bytes());
    v.extend_from_slice(&i.to_le_bytes());
    v.push(u8::from(abort));
    v.extend((0..len).map(|k| (k as u64 * 7 + i) as u8));
    v
}

fn checksum(v: &[u8]) -> u64 {
    v.iter().enumerate().fold(0u64, |a, (k, b)| {
        a.wrapping_mul(31).wrapping_add(u64::from(*b) ^ k as u64)
    })
}

/// Logs `i length checksum` of its payload, then returns the length or, if
/// flagged, aborts its worker.
fn log_bytes_or_abort(v: Vec<u8>) -> usize {
    let n = u16::from_le_bytes([v[0], v[1]]) as usize;
    let log = std::str::from_utf8(&v[2..2 + n]).expect("path");
    let i = u64::from_le_bytes(v[2 + n..10 + n].try_into().expect("8 bytes"));
    append(log, &format!("{i} {} {}\n", v.len(), checksum(&v)));
    if v[10 + n] == 1 {
        std::process::abort();
    }
    v.len()
}

/// Large `Vec<u8>` tasks travel uncopied after their frame (as its tail):
/// when a worker dies, the rest of a chunk whose earlier task killed it
/// (resumed from the middle of a frame with a tail), and the batches it
/// held but had not started, run elsewhere with their bytes intact, once.
fn large_byte_tasks_survive_their_workers_death(m: StartMethod) {
    let pool = pool(m, 2).unwrap();
    let log = temp_log("bytes");
    // Chunks of 3: two small tasks, then a large one (the frame's tail);
    // the second task of chunks 0 and 2 aborts its worker.
    let items: Vec<Vec<u8>> = (0..18u64)
        .map(|i| {
            let large = i % 3 == 2;
            let len = if large { 300_000 + i as usize } else { 1000 };
            byte_task(&log, i, i % 3 == 1 && (i / 3) % 2 == 0, len)
        })
        .collect();
    let r = pool.map_chunked(log_bytes_or_abort, items.clone(), 3);
    assert!(matches!(r, Err(Error::WorkerDied { .. })), "{r:?}");
    // Once every task has run, each ran once, with the bytes it was given.
    pool.close().unwrap();
    pool.join().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut seen = vec![0; items.len()];
    for line in text.lines() {
        let f: Vec<u64> = line
            .split(' ')
            .map(|x| x.parse().expect("number"))
            .collect();
        let v = &items[f[0] as usize];
        assert_eq!((f[1], f[2]), (v.len() as u64, checksum(v)), "task {}", f[0]);
        seen[f[0] as usize] += 1;
    }
    assert_eq!(seen, vec![1; items.len()]);
    let _ = std::fs::remove_file(&log);
}
