//! Shared memory: `Value`, `Array`, `SharedMemory`, `ShareableList` (issue #6; not built yet).
