//! dirigo's operator library.
//!
//! - [`partition`]: how an edge of an application spreads records over the partitions of
//!   its downstream operator (forward, key-hash, broadcast, round-robin).

pub mod partition;

pub use partition::{key_hash, Partitioning, Router};
