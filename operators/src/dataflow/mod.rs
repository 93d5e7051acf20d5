//! Apps as dataflow graphs: the builder, the message every operator exchanges, and the
//! actor that runs one partition of an operator.
//!
//! An app is a DAG. Each vertex is an operator with some number of partitions (by default
//! as many as the runtime has shards); each partition is a virtual actor
//! `(app, operator, partition)`. Each edge declares its partitioning
//! ([`Partitioning`](crate::partition::Partitioning)): forward, key-hash, broadcast or round-robin.
//!
//! Records travel in batches ([`Msg::Data`]), each record with its event time
//! ([`Time`], milliseconds). Event time progresses by watermarks ([`Msg::Watermark`]): a
//! *frontier* `f` from an upstream partition promises that it sends no more records with
//! time `< f`. An operator partition's input frontier is the least frontier over every
//! partition of every input, so where streams merge, watermarks are aligned. When it
//! advances, the operator fires what it can (windows, closed auctions) and passes the new
//! frontier to every downstream partition. Watermarks are critical messages: they run on
//! the lessor, after everything that arrived before them, on consolidated state. That is
//! why operators that may have lessees (mergeable ones) emit only when the frontier
//! advances: everything they emit leaves from the lessor, in order with the watermark.
//! Stateless operators (`map`, `filter`, `flat_map`) are therefore not leased: their
//! parallelism is their partitions.
//!
//! A record with a time below the operator's input frontier is *late*: windows count it
//! (see [`App::late_records`]) and drop it.
//!
//! Finite sources end with the frontier [`Time::MAX`]; it flushes every window, and when
//! every sink partition has seen it the app is complete ([`App::wait`]).
//!
//! Where things live: the message model in `message` ([`Msg`], [`Time`], [`Data`],
//! [`Batch`]); the graph builder in `graph` ([`AppBuilder`], [`Stream`],
//! [`KeyedStream`]); routing and batching of an operator's output in `output`; the
//! operator actor and the `Logic` behind it in `operator`; and the built, installable
//! [`App`] with its [`Flow`] counts in `app`.

mod app;
mod graph;
mod message;
mod operator;
mod output;

pub(crate) use app::AppCounters;
pub use app::{App, Flow};
pub(crate) use graph::{add_operator, set_trigger, FrontierTrigger};
pub use graph::{AppBuilder, KeyedStream, Stream};
pub(crate) use message::batch_of;
pub use message::{Batch, Data, Msg, Time, MAX_BATCH};
pub(crate) use operator::{partitions_of_self, Logic, Wiring};
pub(crate) use output::{KeyHashFn, Output};
