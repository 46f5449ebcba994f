//! Connections: `Pipe`, `wait`, `Listener`/`Client` (issue #3; not built yet).
