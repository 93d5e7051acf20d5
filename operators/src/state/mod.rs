//! Operator state that travels between shards: what a lessee archives at a barrier and
//! its lessor merges.
//!
//! - [`Portable`]: state rkyv can archive and read back (keyed state's accumulators,
//!   buffered records), and [`Key`], the keys of keyed state;
//! - [`KeyCounts`] (its layout is in [`key_counts`]): per-key counts whose archive the
//!   lessor merges in place, without deserializing it.
//!
//! Window state, running aggregates and join buffers are archived as vectors of entries
//! (`snapshot_of`) and merged by reading that archive *in place*: the lessor walks the
//! archived entries and converts each key and accumulator as it folds it in
//! ([`Unarchiver`]), so no owned copy of the whole partial state is ever made. For
//! primitive keys and accumulators that conversion is a load from the archive. (The
//! windows' own layout and merge are in [`WindowState`](crate::window::WindowState).)

use std::hash::Hash;

use dirigo_runtime::snapshot::SnapshotWriter;
use dirigo_runtime::{Snapshot, SnapshotError};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;

use crate::dataflow::Data;

pub mod key_counts;

pub use key_counts::{ArchivedKeyCounts, Iter, KeyCounts};

/// State that can travel between shards in a snapshot: archived with rkyv on a lessee,
/// read back on the lessor. What `#[derive(rkyv::Archive, rkyv::Serialize,
/// rkyv::Deserialize)]` gives, and std's integers, strings, vectors and tuples.
///
/// Its archived form can also be validated (bytecheck), since checkpoints read it back
/// from disk, which is a trust boundary.
pub trait Portable:
    Sized
    + 'static
    + rkyv::Archive<
        Archived: rkyv::Deserialize<Self, HighDeserializer<rancor::Error>>
                      + for<'b> CheckBytes<HighValidator<'b, rancor::Error>>,
    >
    + for<'a> rkyv::Serialize<HighSerializer<SnapshotWriter, ArenaHandle<'a>, rancor::Error>>
{
}

impl<T> Portable for T where
    T: Sized
        + 'static
        + rkyv::Archive<
            Archived: rkyv::Deserialize<T, HighDeserializer<rancor::Error>>
                          + for<'b> CheckBytes<HighValidator<'b, rancor::Error>>,
        >
        + for<'a> rkyv::Serialize<HighSerializer<SnapshotWriter, ArenaHandle<'a>, rancor::Error>>
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

/// Turns archived values into owned ones one at a time, as a merge folds them in.
///
/// A partial state is read in place: the merge walks the archive and asks for each key
/// and accumulator when it needs it. For primitives (`u64`, `i64`, `f64`, ...) that is
/// a load from the archived bytes; strings, vectors and other types are built one entry
/// at a time, so the merge never holds an owned copy of the whole partial state. One
/// `Unarchiver` serves a whole merge (it keeps rkyv's table of shared pointers).
///
/// ```
/// use dirigo_operators::state::Unarchiver;
/// use dirigo_runtime::Snapshot;
///
/// let partial = Snapshot::of(&vec![(7u64, "seven".to_string()), (9, "nine".into())]).unwrap();
/// let archived = partial.archived::<Vec<(u64, String)>>().unwrap();
/// let mut unarchiver = Unarchiver::new();
/// let mut keys = 0;
/// for entry in archived.iter() {
///     keys += unarchiver.owned::<u64>(&entry.0).unwrap();
///     let name: String = unarchiver.owned(&entry.1).unwrap();
///     assert!(name.len() >= 4);
/// }
/// assert_eq!(keys, 16);
/// ```
#[derive(Default)]
pub struct Unarchiver {
    pool: rkyv::de::Pool,
}

impl Unarchiver {
    /// An unarchiver for one merge.
    pub fn new() -> Self {
        Self::default()
    }

    /// The owned form of one archived value.
    #[inline]
    pub fn owned<T: Portable>(&mut self, archived: &T::Archived) -> Result<T, SnapshotError> {
        rkyv::Deserialize::<T, HighDeserializer<rancor::Error>>::deserialize(
            archived,
            rancor::Strategy::wrap(&mut self.pool),
        )
        .map_err(SnapshotError::Invalid)
    }
}
