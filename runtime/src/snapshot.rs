//! Snapshots of actor state: rkyv archives in aligned buffers.
//!
//! A lessee archives its partial state into a [`Snapshot`]; the snapshot (the buffer
//! itself, never a copy of it) moves through the mesh to the lessor's shard, and the lessor
//! merges by reading the archived form in place with [`Snapshot::archived`].
//!
//! Two ways to read archived bytes:
//! - [`Snapshot::archived`], for snapshots made in this process: the snapshot remembers
//!   the type it was made from, so reading it as that type needs no validation;
//! - [`access_checked`], for bytes that crossed a trust boundary (read from disk, received
//!   from elsewhere): every byte is validated with bytecheck before it is read.
//!
//! ```
//! use dirigo_runtime::snapshot::Snapshot;
//!
//! let counts: Vec<(u64, u64)> = vec![(1, 10), (7, 3)];
//! let snapshot = Snapshot::of(&counts).unwrap();
//! let archived = snapshot.archived::<Vec<(u64, u64)>>().unwrap();
//! assert_eq!(archived.len(), 2);
//! assert_eq!(archived[1].0, 7);
//! ```

use std::any::{type_name, TypeId};
use std::fmt;

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Portable, Serialize};

/// Types that can be archived into a [`Snapshot`] (what `#[derive(rkyv::Archive,
/// rkyv::Serialize)]` gives, and rkyv's implementations for std types).
pub trait Archivable:
    Archive + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>> + 'static
{
}

impl<T> Archivable for T where
    T: Archive
        + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + 'static
{
}

/// The archived form of a value, in a 16-byte aligned buffer, tagged with the type it was
/// made from.
pub struct Snapshot {
    bytes: AlignedVec,
    type_id: TypeId,
    type_name: &'static str,
}

/// Why archived bytes could not be read.
#[derive(Debug)]
pub enum SnapshotError {
    /// The value could not be archived.
    Archive(rancor::Error),
    /// The snapshot was made from another type than the one asked for.
    WrongType {
        /// The type the snapshot was made from.
        made_from: &'static str,
        /// The type it was read as.
        read_as: &'static str,
    },
    /// The bytes are not a valid archive of the type (validation failed).
    Invalid(rancor::Error),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Archive(error) => write!(f, "could not archive the state: {error}"),
            Self::WrongType { made_from, read_as } => write!(
                f,
                "snapshot of `{made_from}` read as `{read_as}`; merge reads the type snapshot archived"
            ),
            Self::Invalid(error) => write!(f, "archived bytes failed validation: {error}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl Snapshot {
    /// Archives `value`.
    pub fn of<T: Archivable>(value: &T) -> Result<Self, SnapshotError> {
        let bytes = rkyv::to_bytes::<rancor::Error>(value).map_err(SnapshotError::Archive)?;
        Ok(Self {
            bytes,
            type_id: TypeId::of::<T>(),
            type_name: type_name::<T>(),
        })
    }

    /// Reads the snapshot in place as the archived form of `T`, the type it was made from.
    pub fn archived<T: Archivable>(&self) -> Result<&T::Archived, SnapshotError> {
        if self.type_id != TypeId::of::<T>() {
            return Err(SnapshotError::WrongType {
                made_from: self.type_name,
                read_as: type_name::<T>(),
            });
        }
        // SAFETY: `self.bytes` was written by `rkyv::to_bytes` for a value of type `T`
        // (the type ids are equal) in this process, so the archived root of a `T` sits
        // where `access_unchecked` looks for it (the end of the buffer), with the
        // alignment rkyv wrote it at (`AlignedVec` keeps 16-byte alignment, and the
        // buffer's address is the one it was serialized at: its heap allocation never
        // moved, only the `Snapshot` owning it did). The buffer is never mutated after
        // serialization: `Snapshot` hands out shared references only. Tested by
        // `in_process_snapshots_read_back` and `wrong_type_is_refused` below.
        Ok(unsafe { rkyv::access_unchecked::<T::Archived>(&self.bytes) })
    }

    /// How many bytes the archive takes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the archive is empty (it never is for a value that archived).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The archived bytes, to write them out (read them back with [`access_checked`]).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The name of the type the snapshot was made from.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("type", &self.type_name)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// Validates `bytes` as the archived form of `T` and reads it in place. For bytes from
/// outside this process (files, sockets); `bytes` must be 16-byte aligned, as rkyv wrote
/// them (an `AlignedVec`, or a memory map, which is page aligned).
///
/// ```
/// use dirigo_runtime::snapshot::{access_checked, Snapshot};
///
/// let snapshot = Snapshot::of(&vec![1u32, 2, 3]).unwrap();
/// let archived = access_checked::<Vec<u32>>(snapshot.as_bytes()).unwrap();
/// assert_eq!(archived.as_slice(), [1, 2, 3]);
/// assert!(access_checked::<Vec<u32>>(&[0xff; 3]).is_err());
/// ```
pub fn access_checked<T>(bytes: &[u8]) -> Result<&T::Archived, SnapshotError>
where
    T: Archive,
    T::Archived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    rkyv::access::<T::Archived, rancor::Error>(bytes).map_err(SnapshotError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_snapshots_read_back() {
        let counts: Vec<(u64, u64)> = (0..1000).map(|k| (k, k * 3)).collect();
        let snapshot = Snapshot::of(&counts).unwrap();
        // Moving the snapshot moves the buffer's owner, not the bytes.
        let address = snapshot.as_bytes().as_ptr();
        let moved = std::thread::spawn(move || snapshot).join().unwrap();
        assert_eq!(moved.as_bytes().as_ptr(), address);
        let archived = moved.archived::<Vec<(u64, u64)>>().unwrap();
        assert_eq!(archived.len(), 1000);
        assert!(archived
            .iter()
            .enumerate()
            .all(|(i, pair)| pair.0 == i as u64 && pair.1 == 3 * i as u64));
    }

    #[test]
    fn wrong_type_is_refused() {
        let snapshot = Snapshot::of(&vec![1u64, 2]).unwrap();
        let error = snapshot.archived::<Vec<u32>>().unwrap_err();
        assert!(error.to_string().contains("read as"), "{error}");
    }

    #[test]
    fn corrupt_bytes_fail_validation() {
        let snapshot = Snapshot::of(&vec![(1u64, 2u64); 4]).unwrap();
        let mut bytes = AlignedVec::<16>::new();
        bytes.extend_from_slice(snapshot.as_bytes());
        // The root of a Vec is its relative pointer and length, at the end: point it
        // outside the buffer.
        let len = bytes.len();
        bytes[len - 8..len - 4].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        assert!(access_checked::<Vec<(u64, u64)>>(&bytes).is_err());
        assert!(access_checked::<Vec<(u64, u64)>>(snapshot.as_bytes()).is_ok());
    }
}
