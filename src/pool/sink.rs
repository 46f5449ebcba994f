//! Where a batch's answers go, and why a whole batch can fail: what the
//! parent's dispatch hands to the results (`result`) without knowing them.

/// Why a whole batch failed.
#[derive(Debug, Clone)]
pub(crate) enum Fail {
    /// The worker holding it died with this exit code.
    Died(i32),
    /// The pool was terminated (or cannot start workers).
    Broken,
    /// The worker could not run it (undecodable arguments, unknown function).
    Failed(String),
}

/// Where a batch's answers go.
pub(crate) trait Sink: Send + Sync {
    /// Batch `index` of `count` tasks is done: its encoded answers, or why
    /// all of it failed. `pid` is the worker that ran it (0 if none).
    fn complete(
        &self,
        index: usize,
        count: u32,
        pid: i32,
        outcome: std::result::Result<&[u8], &Fail>,
    );
}
