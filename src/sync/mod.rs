//! Process-shared synchronization primitives (issue #5; not built yet).
