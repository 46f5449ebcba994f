//! Queues: `Queue`, `SimpleQueue`, `JoinableQueue` (issue #4; not built yet).
