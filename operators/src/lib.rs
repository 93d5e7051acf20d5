//! dirigo's operator library: apps as dataflow graphs of operators, the operators, their
//! sources and sinks, and the NEXMark queries.
//!
//! - [`dataflow`]: the app builder ([`AppBuilder`]), streams, the message operators
//!   exchange, watermarks, and the actor that runs an operator partition;
//! - [`ops`]: stateless operators (`map`, `filter`, `flat_map`, repartitioning);
//! - [`window`]: keyed state — windows (tumbling, sliding, session), windowed joins,
//!   top-k, running aggregates, and `process` operators with state of their own;
//! - [`source`] and [`sink`]: paced sources and sinks (collect, latency recorder, JSON
//!   lines);
//! - [`io`]: load shapes, key distributions, the synthetic generator, record parsing and
//!   dead letters;
//! - [`nexmark`]: NEXMark events and queries;
//! - [`partition`]: how an edge spreads records over the partitions of its downstream
//!   operator (forward, key-hash, broadcast, round-robin);
//! - [`state`]: mergeable operator state ([`KeyCounts`], per-key counts that lessees
//!   archive and the lessor merges in place).

pub mod dataflow;
pub mod io;
pub mod nexmark;
pub mod ops;
pub mod partition;
pub mod sink;
pub mod source;
pub mod state;
pub mod window;

pub use dataflow::{App, AppBuilder, Flow, KeyedStream, Msg, Stream, Time};
pub use partition::{key_hash, Partitioner, Partitioning};
pub use state::KeyCounts;
