//! Operator state that travels between shards: what a lessee archives at a barrier and
//! its lessor merges.
//!
//! - [`Portable`]: state rkyv can archive and read back (keyed state's accumulators,
//!   buffered records), and [`Key`], the keys of keyed state;
//! - [`KeyCounts`] (its layout is in [`key_counts`]): per-key counts whose archive the
//!   lessor merges in place, without deserializing it.
//!
//! Window state, running aggregates and join buffers are snapshotted as one vector of
//! entries and merged entry by entry (`snapshot_of` and `entries_of` here; the windows'
//! own snapshot and merge are in the `window` module's `logic`).

use std::hash::Hash;

use dirigo_runtime::{Snapshot, SnapshotError};
use rkyv::api::high::{HighDeserializer, HighSerializer};
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::dataflow::Data;

pub mod key_counts;

pub use key_counts::{ArchivedKeyCounts, Iter, KeyCounts};

/// State that can travel between shards in a snapshot: archived with rkyv on a lessee,
/// read back on the lessor. What `#[derive(rkyv::Archive, rkyv::Serialize,
/// rkyv::Deserialize)]` gives, and std's integers, strings, vectors and tuples.
pub trait Portable:
    Sized
    + 'static
    + rkyv::Archive<Archived: rkyv::Deserialize<Self, HighDeserializer<rancor::Error>>>
    + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

impl<T> Portable for T where
    T: Sized
        + 'static
        + rkyv::Archive<Archived: rkyv::Deserialize<T, HighDeserializer<rancor::Error>>>
        + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

/// Keys of keyed state.
pub trait Key: Data + Hash + Eq + Ord + Portable {}
impl<T: Data + Hash + Eq + Ord + Portable> Key for T {}

/// Archives `entries` as one snapshot; `None` when there are none.
pub(crate) fn snapshot_of<E: Portable>(
    entries: &Vec<E>,
) -> Result<Option<Snapshot>, SnapshotError> {
    if entries.is_empty() {
        return Ok(None);
    }
    Snapshot::of(entries).map(Some)
}

/// The entries a [`snapshot_of`] archived, deserialized.
pub(crate) fn entries_of<E: Portable>(partial: &Snapshot) -> Result<Vec<E>, SnapshotError> {
    let archived = partial.archived::<Vec<E>>()?;
    rkyv::deserialize::<Vec<E>, rancor::Error>(archived).map_err(SnapshotError::Invalid)
}
