//! What lower modules need from `process` and cannot import without a
//! cycle, handed to them by [`register`]: how to start the resource
//! tracker's helper process (the tracker sits below `process`, which keeps
//! the tracker's pipe open across `fork`)
//! and this process's name for log records ([`crate::logging`]).

use super::{Process, StartMethod};
use crate::error::Result;
use crate::resource_tracker::{self as tracker, ReadEnd};

/// Tells the tracker how to start its helper, and the logger this
/// process's name and when it forks (called by [`init`](crate::init)).
pub(crate) fn register() {
    tracker::set_launcher(start_tracker_helper);
    crate::logging::set_process_name_source(|| super::current_process().name);
    crate::logging::guard_forks();
}

/// A *spawned* helper (a small fresh image; no lock another thread held is
/// inherited) runs [`tracker::launch`], which forks the tracker and returns
/// its pid.
fn start_tracker_helper(rd: ReadEnd) -> Result<i32> {
    Process::builder()
        .name("resource_tracker")
        .daemon(false)
        .internal()
        .start_method(StartMethod::Spawn)
        .start(tracker::launch, (rd,))?
        .join()
}
