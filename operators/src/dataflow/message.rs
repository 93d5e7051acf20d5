//! The message model: event time and its valid range for records that enter an app,
//! batches, and the one message type ([`Msg`]) every operator of every
//! app exchanges.
//!
//! The end of a stream is a message kind of its own ([`Msg::End`]), never a time: a
//! record or a watermark may carry any [`Time`], `u64::MAX` included, and none of them
//! ends anything. Records that enter from outside (files, connections) must have an event
//! time in `0..=`[`MAX_EVENT_TIME_MS`] (checked by [`check_event_time`]); the sources
//! dead-letter the others.

use std::any::Any;
use std::fmt;

/// Event time, in milliseconds.
pub type Time = u64;

/// The last valid event time of a record that enters an app from outside (a file line, a
/// TCP frame): 9999-12-31T23:59:59.999Z, in milliseconds since the Unix epoch. Times
/// beyond it are almost surely a mistake (a time in microseconds or nanoseconds, a
/// sentinel such as `u64::MAX`), and leave room above every valid time so that window
/// ends and watermarks (a time plus a window size or a gap) do not reach the end of the
/// `u64` range.
pub const MAX_EVENT_TIME_MS: Time = 253_402_300_799_999;

/// `time` if it is a valid event time of a record that enters an app (in
/// `0..=`[`MAX_EVENT_TIME_MS`]); otherwise the reason it is not, for a dead letter.
///
/// ```
/// use dirigo_operators::dataflow::{check_event_time, MAX_EVENT_TIME_MS};
///
/// assert_eq!(check_event_time(1_700_000_000_000), Ok(1_700_000_000_000));
/// assert_eq!(check_event_time(MAX_EVENT_TIME_MS), Ok(MAX_EVENT_TIME_MS));
/// assert!(check_event_time(u64::MAX).unwrap_err().contains("18446744073709551615"));
/// ```
///
/// # Errors
/// When `time` is above [`MAX_EVENT_TIME_MS`].
pub fn check_event_time(time: Time) -> Result<Time, String> {
    if time <= MAX_EVENT_TIME_MS {
        Ok(time)
    } else {
        Err(format!(
            "event time {time} ms is out of range: expected 0..={MAX_EVENT_TIME_MS} \
             (milliseconds since 1970-01-01, up to the end of year 9999)"
        ))
    }
}

/// Records that flow between operators: cloneable (broadcast edges and fan-out copy them)
/// and sendable between shards.
pub trait Data: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> Data for T {}

/// The message every operator of every app exchanges.
pub enum Msg {
    /// A batch of records.
    Data {
        /// How many records the batch holds (for accounting without its type).
        records: u32,
        /// A `Vec<(Time, T)>`, `T` the edge's record type.
        batch: Box<dyn Any + Send>,
    },
    /// The sending partition's frontier: it sends no more records with time below it.
    /// Any time, `u64::MAX` included, is only a frontier: it ends nothing.
    Watermark(Time),
    /// The sending partition's stream has ended: it sends nothing more, neither records
    /// nor watermarks. An operator partition ends when every partition of every input
    /// has ended: it fires everything it holds and sends `End` on.
    End,
    /// A source's turn to produce (sent to itself, or by [`App::start`](super::App::start)).
    Tick,
    /// Checkpoint `id` starts at this source partition (sent by the checkpoint
    /// coordinator, [`crate::checkpoint`]): it records its position, then sends
    /// [`Msg::Barrier`] after the records before it.
    Checkpoint(CheckpointId),
    /// Checkpoint barrier `id`, in band: everything the sending partition sent before it
    /// belongs to checkpoint `id`, everything after to later ones. An operator partition
    /// that has it from every upstream partition (the runtime holds back what an input
    /// sends after its barrier) saves its state and sends the barrier on. Partitions
    /// whose stream has ended pass barriers on all the same, so a checkpoint completes
    /// while an app drains.
    Barrier(CheckpointId),
}

/// A checkpoint's number: 1, 2, 3, ... in the order the coordinator starts them, over
/// every run that resumes from the same checkpoint directory.
pub type CheckpointId = u64;

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Data { records, .. } => write!(f, "Data({records} records)"),
            Msg::Watermark(frontier) => write!(f, "Watermark({frontier})"),
            Msg::End => f.write_str("End"),
            Msg::Tick => f.write_str("Tick"),
            Msg::Checkpoint(id) => write!(f, "Checkpoint({id})"),
            Msg::Barrier(id) => write!(f, "Barrier({id})"),
        }
    }
}

/// A batch of records with their event times.
pub type Batch<T> = Vec<(Time, T)>;

/// The batch a [`Msg::Data`] carries on an edge of record type `T`.
///
/// # Panics
/// When the edge carries another type: the typed stream API makes that impossible.
pub(crate) fn batch_of<T: 'static>(data: Box<dyn Any + Send>) -> Batch<T> {
    *data
        .downcast::<Batch<T>>()
        .expect("an edge carries its upstream operator's record type")
}
