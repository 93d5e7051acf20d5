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
//! The end of a stream is a message of its own, [`Msg::End`], never a time: a record or a
//! watermark at `u64::MAX` is only a (very large) time. Finite sources, and every source
//! once the app is stopped, send `End` when they end. Operators align it like watermarks:
//! an operator partition ends when every partition of every input has ended (until
//! then, its frontier is the least over the inputs that have not ended); it then fires
//! everything it holds (every window, every pending aggregate) and sends `End` on. When
//! every sink partition has ended, the app is complete ([`App::wait`]). Records that
//! enter from outside must have an event time in `0..=`[`MAX_EVENT_TIME_MS`]
//! ([`check_event_time`]): the file and TCP sources dead-letter the others.
//!
//! Where things live: the message model in `message` ([`Msg`], [`Time`], [`Data`],
//! [`Batch`]); the graph builder in `graph` ([`AppBuilder`], [`Stream`],
//! [`KeyedStream`]); routing and batching of an operator's output in `output`; the
//! operator actor and the `Logic` behind it in `operator`; and the built, installable
//! [`App`] with its [`Flow`] counts in `app`.

mod app;
mod batch_size;
mod graph;
mod message;
mod operator;
mod output;

pub use app::{App, Flow};
pub(crate) use app::{AppCounters, CommitTargetOf, PartitionCount};
pub use batch_size::MAX_BATCH;
pub(crate) use graph::{add_operator, set_trigger, set_work_per_record, FrontierTrigger};
pub use graph::{AppBuilder, KeyedStream, Stream};
pub(crate) use message::batch_of;
pub use message::{check_event_time, Batch, CheckpointId, Data, Msg, Time, MAX_EVENT_TIME_MS};
pub(crate) use operator::{partitions_of_self, Logic, Wiring};
pub(crate) use output::{KeyHashFn, Output};
