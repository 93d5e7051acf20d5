//! dirigo's operator library.
//!
//! - [`partition`]: how an edge of an application spreads records over the partitions of
//!   its downstream operator (forward, key-hash, broadcast, round-robin);
//! - [`state`]: mergeable operator state ([`KeyCounts`], per-key counts that lessees
//!   archive and the lessor merges in place).

pub mod nexmark;
pub mod partition;
pub mod state;

pub use partition::{key_hash, Partitioning, Router};
pub use state::KeyCounts;
