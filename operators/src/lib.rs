//! dirigo's operator library: apps as dataflow graphs of operators, the operators, their
//! sources and sinks, and the NEXMark queries.
//!
//! What lives where:
//!
//! - [`dataflow`]: apps as graphs — the message model ([`Msg`], [`Time`], batches), the
//!   builder ([`AppBuilder`], [`Stream`], [`KeyedStream`]), output routing and batching,
//!   the actor that runs an operator partition and aligns watermarks, and the built
//!   [`App`] (install, start, wait, [`Flow`]);
//! - [`partition`]: how an edge spreads records over the partitions of its downstream
//!   operator (forward, key-hash, broadcast, round-robin): [`key_hash`], and the one
//!   routing rule that [`Partitioner`] and operator outputs share;
//! - [`ops`]: stateless operators (`map`, `filter`, `flat_map`, repartitioning);
//! - [`window`]: event-time windows (tumbling, sliding, session) with an aggregate,
//!   top-k and windowed joins; one window's key table, the window operator, and
//!   [`WindowState`](window::WindowState), its state with the in-place merge;
//! - [`aggregate`]: running aggregates per key over the whole stream;
//! - [`process`]: keyed `process` operators with state of their own (never leased);
//! - [`state`]: state that travels between shards — [`Portable`](state::Portable) and
//!   [`Key`](state::Key), the [`Unarchiver`](state::Unarchiver) that merges read archives
//!   in place with, and [`KeyCounts`], per-key counts in sorted runs;
//! - [`source`] and [`sink`]: paced sources and sinks (collect, latency recorder, JSON
//!   lines);
//! - [`io`]: load shapes, key distributions, the synthetic generator, files and TCP,
//!   record parsing and dead letters;
//! - [`nexmark`]: NEXMark events and queries;
//! - [`checkpoint`]: checkpoints of every app's state on disk, and exactly-once
//!   recovery from them.

pub mod aggregate;
pub mod checkpoint;
pub mod dataflow;
pub mod io;
pub mod nexmark;
pub mod ops;
pub mod partition;
pub mod process;
pub mod sink;
pub mod source;
pub mod state;
pub mod typed;
pub mod window;

pub use dataflow::{App, AppBuilder, Flow, KeyedStream, Msg, Stream, Time};
pub use partition::{key_hash, Partitioner, Partitioning};
pub use state::KeyCounts;
