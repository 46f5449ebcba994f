//! The start-method matrix shared by every test binary that starts children.
//!
//! A test that starts processes is written once, as `fn name(m: StartMethod)`
//! passing `m` to whatever starts children (`Process::builder().start_method(m)`,
//! [`builder`], `get_context(m)`, `Pool::builder().start_method(m)`), and listed
//! in [`start_methods!`], which generates one test per method:
//! `name::fork`, `name::spawn` and `name::forkserver`. Run one method of the
//! whole crate with e.g. `cargo test --all-features -- ::forkserver`.
//!
//! A case that cannot pass under one method yet is marked there, with the
//! reason, instead of being left out:
//!
//! ```ignore
//! start_methods! {
//!     some_test,
//!     other_test (forkserver: ignore = "what is broken"),
//! }
//! ```
#![allow(dead_code, unused_macros, unused_imports)]

use multiproc::{Process, StartMethod};
use std::time::Duration;

/// Every start method, in the order the matrix runs them.
pub const METHODS: [StartMethod; 3] = [
    StartMethod::Fork,
    StartMethod::Spawn,
    StartMethod::Forkserver,
];

/// A process builder for `m`.
pub fn builder(m: StartMethod) -> multiproc::Builder {
    Process::builder().start_method(m)
}

/// A pool of `n` workers started with `m` (Python's `get_context(m).Pool(n)`).
pub fn pool(m: StartMethod, n: usize) -> multiproc::Result<multiproc::Pool> {
    multiproc::get_context(m).pool(n)
}

/// The method a test mixing two kinds of children pairs with `m` (fork with
/// spawn, spawn with forkserver, forkserver with fork), so that each method
/// meets another one.
pub fn partner(m: StartMethod) -> StartMethod {
    match m {
        StartMethod::Fork => StartMethod::Spawn,
        StartMethod::Spawn => StartMethod::Forkserver,
        StartMethod::Forkserver => StartMethod::Fork,
    }
}

/// An iteration count for a heavy stress test under `m`: `full` for the
/// methods the test ran with before the matrix (`original`), a quarter (at
/// least 1) for the methods the matrix added, so that it keeps `.ci/run`
/// within its time without dropping a method.
pub fn scaled(m: StartMethod, original: &[StartMethod], full: usize) -> usize {
    if original.contains(&m) {
        full
    } else {
        (full / 4).max(1)
    }
}

/// Generates `name::fork`, `name::spawn` and `name::forkserver` tests, each
/// calling `name(StartMethod::…)` (a function of the including file).
///
/// `name (method: meta, …)` adds an attribute (such as
/// `ignore = "reason"`) to that method's test only.
macro_rules! start_methods {
    ($($name:ident $(($($method:ident : $meta:meta),* $(,)?))?),* $(,)?) => {
        $(
            mod $name {
                start_methods!(@one $name fork Fork [$($($method : $meta),*)?]);
                start_methods!(@one $name spawn Spawn [$($($method : $meta),*)?]);
                start_methods!(@one $name forkserver Forkserver [$($($method : $meta),*)?]);
            }
        )*
    };
    // One test: collect the attributes meant for `$m`, then emit it.
    (@one $name:ident $m:ident $variant:ident [$($method:ident : $meta:meta),*]) => {
        start_methods!(@pick $name $m $variant [] [$($method : $meta),*]);
    };
    (@pick $name:ident $m:ident $variant:ident [$($acc:meta),*] []) => {
        #[test]
        $(#[$acc])*
        fn $m() {
            super::$name(::multiproc::StartMethod::$variant)
        }
    };
    (@pick $name:ident fork $variant:ident [$($acc:meta),*] [fork : $meta:meta $(, $rm:ident : $rmeta:meta)*]) => {
        start_methods!(@pick $name fork $variant [$($acc,)* $meta] [$($rm : $rmeta),*]);
    };
    (@pick $name:ident spawn $variant:ident [$($acc:meta),*] [spawn : $meta:meta $(, $rm:ident : $rmeta:meta)*]) => {
        start_methods!(@pick $name spawn $variant [$($acc,)* $meta] [$($rm : $rmeta),*]);
    };
    (@pick $name:ident forkserver $variant:ident [$($acc:meta),*] [forkserver : $meta:meta $(, $rm:ident : $rmeta:meta)*]) => {
        start_methods!(@pick $name forkserver $variant [$($acc,)* $meta] [$($rm : $rmeta),*]);
    };
    // An attribute for another method: skip it.
    (@pick $name:ident $m:ident $variant:ident [$($acc:meta),*] [$other:ident : $meta:meta $(, $rm:ident : $rmeta:meta)*]) => {
        start_methods!(@pick $name $m $variant [$($acc),*] [$($rm : $rmeta),*]);
    };
}

/// Only turns a hang into a failure; never a timing assertion.
pub const LONG: Duration = Duration::from_secs(60);

/// Runs the future made by `make` under a current-thread and then a
/// multi-threaded tokio runtime (feature `tokio`), each within a generous
/// deadline that only turns a hang into a failure.
#[cfg(feature = "tokio")]
pub fn on_both_runtimes<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    current.block_on(async {
        tokio::time::timeout(DEADLINE, make())
            .await
            .expect("current-thread runtime: timed out")
    });
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fut = make();
    multi.block_on(async {
        tokio::time::timeout(DEADLINE, tokio::spawn(fut))
            .await
            .expect("multi-thread runtime: timed out")
            .expect("task panicked")
    });
}

/// Confines the calling thread (and the threads and processes it starts)
/// to its first allowed CPU (a manager's proxies and server that share one
/// CPU talk over pipes).
pub fn pin_to_one_cpu() {
    let set = rustix::thread::sched_getaffinity(None).unwrap();
    let first = (0..rustix::thread::CpuSet::MAX_CPU)
        .find(|&i| set.is_set(i))
        .unwrap();
    let mut one = rustix::thread::CpuSet::new();
    one.set(first);
    rustix::thread::sched_setaffinity(None, &one).unwrap();
}
