//! The message model: event time, the records' bound, batches, and the one message type
//! ([`Msg`]) every operator of every app exchanges.

use std::any::Any;
use std::fmt;

/// Event time, in milliseconds.
pub type Time = u64;

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
    Watermark(Time),
    /// A source's turn to produce (sent to itself, or by [`App::start`](super::App::start)).
    Tick,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Data { records, .. } => write!(f, "Data({records} records)"),
            Msg::Watermark(frontier) => write!(f, "Watermark({frontier})"),
            Msg::Tick => f.write_str("Tick"),
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

/// Most records a partition buffers for one downstream partition before it sends them.
pub const MAX_BATCH: usize = 1024;
