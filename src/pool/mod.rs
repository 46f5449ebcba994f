//! The process pool (issue #7; not built yet).
