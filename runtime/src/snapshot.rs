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
//! The same archived form serves checkpoints on disk: [`Snapshot::write_to`] writes it
//! (to a temporary file, then renamed into place), and [`SnapshotFile`] maps it back into
//! memory without copying and validates it before every read.
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
use std::io::{self, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::{Positional, Writer};
use rkyv::util::AlignedVec;
use rkyv::{Archive, Portable, Serialize};

/// Types that can be archived into a [`Snapshot`] (what `#[derive(rkyv::Archive,
/// rkyv::Serialize)]` gives, and rkyv's implementations for std types).
pub trait Archivable:
    Archive
    + for<'a> Serialize<HighSerializer<SnapshotWriter, ArenaHandle<'a>, rancor::Error>>
    + 'static
{
}

impl<T> Archivable for T where
    T: Archive
        + for<'a> Serialize<HighSerializer<SnapshotWriter, ArenaHandle<'a>, rancor::Error>>
        + 'static
{
}

/// Bytes archived between two [`give_way`](crate::background::give_way) points.
const GIVE_WAY_BYTES: usize = 64 * 1024;

/// The buffer a [`Snapshot`] is archived into: rkyv's 16-byte aligned buffer, with a
/// [`give_way`](crate::background::give_way) point every 64 KiB written, so that a
/// service thread archiving a large state (a checkpoint of a gigabyte takes a second)
/// gives way to a shard that waits for its CPU. On a shard the points do nothing.
pub struct SnapshotWriter {
    bytes: AlignedVec,
    next_point: usize,
}

impl SnapshotWriter {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            bytes: AlignedVec::with_capacity(capacity),
            next_point: GIVE_WAY_BYTES,
        }
    }
}

impl Positional for SnapshotWriter {
    fn pos(&self) -> usize {
        self.bytes.len()
    }
}

impl<E> Writer<E> for SnapshotWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        // Most writes are a field of a few bytes (a lessee's partial state is archived
        // on the shard, on the path of a scale event): one comparison, no loop.
        if self.bytes.len() + bytes.len() < self.next_point {
            self.bytes.extend_from_slice(bytes);
            return Ok(());
        }
        // A slice of plain values comes in one write (megabytes at once): it is copied
        // in pieces, with a point between them.
        for piece in bytes.chunks(GIVE_WAY_BYTES) {
            self.bytes.extend_from_slice(piece);
            if self.bytes.len() >= self.next_point {
                crate::background::give_way();
                self.next_point = self.bytes.len() + GIVE_WAY_BYTES;
            }
        }
        Ok(())
    }
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
    /// The state cannot be archived at all, for this reason.
    Unsupported(&'static str),
    /// Restoring from a valid archive failed, for this reason (a source that cannot be
    /// rewound to the position the archive records, say).
    Restore(String),
    /// A checkpoint file could not be opened or mapped.
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: io::Error,
    },
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
            Self::Unsupported(why) => f.write_str(why),
            Self::Restore(why) => write!(f, "cannot restore: {why}"),
            Self::Io { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl Snapshot {
    /// Archives `value`.
    pub fn of<T: Archivable>(value: &T) -> Result<Self, SnapshotError> {
        Self::of_sized(value, 0)
    }

    /// Archives `value` into a buffer made for about `expected_bytes` from the start. A
    /// buffer that grows as it fills copies what it holds each time it doubles (at a
    /// gigabyte, a copy of half a gigabyte at once); archiving a large state off the
    /// shards with its size known copies nothing more.
    ///
    /// ```
    /// use dirigo_runtime::snapshot::Snapshot;
    ///
    /// let counts: Vec<(u64, u64)> = (0..1_000).map(|key| (key, 1)).collect();
    /// let expected = counts.len() * std::mem::size_of::<(u64, u64)>() + 64;
    /// let snapshot = Snapshot::of_sized(&counts, expected).unwrap();
    /// assert_eq!(snapshot.as_bytes(), Snapshot::of(&counts).unwrap().as_bytes());
    /// ```
    pub fn of_sized<T: Archivable>(
        value: &T,
        expected_bytes: usize,
    ) -> Result<Self, SnapshotError> {
        let writer = SnapshotWriter::with_capacity(expected_bytes);
        let written = rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, writer)
            .map_err(SnapshotError::Archive)?;
        Ok(Self {
            bytes: written.bytes,
            type_id: TypeId::of::<T>(),
            type_name: type_name::<T>(),
        })
    }

    /// A snapshot of `T` from bytes that crossed a trust boundary (a checkpoint read from
    /// disk): validated with bytecheck as an archive of `T` first, then copied into an
    /// aligned buffer tagged with `T`, so that code written for in-process snapshots
    /// (a merge that reads [`archived`](Self::archived)) restores from it unchanged.
    ///
    /// ```
    /// use dirigo_runtime::snapshot::Snapshot;
    ///
    /// let on_disk = Snapshot::of(&vec![(1u64, 5u64)]).unwrap().as_bytes().to_vec();
    /// let restored = Snapshot::from_checked::<Vec<(u64, u64)>>(&on_disk).unwrap();
    /// assert_eq!(restored.archived::<Vec<(u64, u64)>>().unwrap()[0].1, 5);
    /// assert!(Snapshot::from_checked::<Vec<(u64, u64)>>(&[7; 5]).is_err());
    /// ```
    ///
    /// # Errors
    /// [`SnapshotError::Invalid`] when the bytes are not a valid archive of `T`.
    pub fn from_checked<T>(bytes: &[u8]) -> Result<Self, SnapshotError>
    where
        T: Archivable,
        T::Archived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    {
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        access_checked::<T>(&aligned)?;
        Ok(Self {
            bytes: aligned,
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
        // (the type ids are equal) in this process, or validated as an archive of `T`
        // by bytecheck in `from_checked` (which tags it with `T`), so the archived root of a `T` sits
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

    /// Writes the archive to `path` as a checkpoint: into a temporary file next to it,
    /// flushed to disk, then renamed over `path`, so a crash leaves the old checkpoint or
    /// the new one, never half of one. Read it back with [`SnapshotFile::open`].
    pub fn write_to(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".partial");
        let temporary = PathBuf::from(temporary);
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&self.bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temporary, path)
    }
}

/// A checkpoint on disk, mapped into memory and read in place as the archived form of `T`.
///
/// The bytes come from outside the process, so they are validated (bytecheck) before
/// every read; a file that is not a valid archive of `T` gives an error, never a crash.
///
/// ```
/// use dirigo_runtime::snapshot::{Snapshot, SnapshotFile};
///
/// let path = std::env::temp_dir().join(format!("dirigo-doc-{}.ckpt", std::process::id()));
/// Snapshot::of(&vec![(1u64, 5u64), (2, 7)]).unwrap().write_to(&path).unwrap();
/// let file = SnapshotFile::<Vec<(u64, u64)>>::open(&path).unwrap();
/// assert_eq!(file.archived().unwrap()[1].1, 7);
/// std::fs::remove_file(&path).unwrap();
/// ```
pub struct SnapshotFile<T> {
    map: memmap2::Mmap,
    _type: PhantomData<fn() -> T>,
}

impl<T> SnapshotFile<T>
where
    T: Archive,
    T::Archived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    /// Maps the checkpoint at `path` and validates it once, so that a bad file is
    /// reported when it is opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SnapshotError> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|error| SnapshotError::Io {
            path: path.to_owned(),
            error,
        })?;
        // SAFETY: the map is read-only and private to this process, and nothing in it is
        // trusted: every read goes through `access_checked`, which validates the bytes
        // first. What remains is memmap2's contract that the file is not truncated or
        // rewritten in place while mapped; checkpoints are written to a temporary file and
        // renamed over the old one (`Snapshot::write_to`), which leaves an open map on the
        // old, unchanged file. Tested by `checkpoints_round_trip_and_bad_files_are_refused`.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|error| SnapshotError::Io {
            path: path.to_owned(),
            error,
        })?;
        let checkpoint = Self {
            map,
            _type: PhantomData,
        };
        checkpoint.archived()?;
        Ok(checkpoint)
    }

    /// Validates the mapped bytes and reads them in place (page aligned, as rkyv needs).
    pub fn archived(&self) -> Result<&T::Archived, SnapshotError> {
        access_checked::<T>(&self.map)
    }

    /// How many bytes the checkpoint takes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the file is empty (an empty file never opens: it is not an archive).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
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

    fn values_again() -> Vec<(u64, u64)> {
        (0..1_000_000).map(|i| (i, i * 3)).collect()
    }

    #[test]
    fn archiving_a_large_value_gives_way_on_a_service_thread_only() {
        let values = values_again();
        let expected = Snapshot::of(&values).unwrap();
        assert_eq!(
            crate::background::last_gave_way(),
            None,
            "not a service thread"
        );
        let service = std::thread::spawn(move || {
            crate::background::give_way_at_points();
            let before = crate::background::last_gave_way().unwrap();
            // 16 MB in one write (a slice of plain values): copied in pieces, with
            // points between them.
            let snapshot = Snapshot::of_sized(&values, 1 << 24).unwrap();
            let after = crate::background::last_gave_way().unwrap();
            (snapshot, after > before)
        });
        let (snapshot, gave_way) = service.join().unwrap();
        assert!(gave_way, "archiving 16 MB takes longer than GIVE_WAY_EVERY");
        assert_eq!(snapshot.as_bytes(), expected.as_bytes());
        let plain = rkyv::to_bytes::<rancor::Error>(&values_again()).unwrap();
        assert_eq!(
            snapshot.as_bytes(),
            &plain[..],
            "the same bytes as rkyv's own buffer"
        );
        let archived = snapshot.archived::<Vec<(u64, u64)>>().unwrap();
        assert_eq!(archived[999_999].1, 2_999_997);
    }

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
    fn checkpoints_round_trip_and_bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("dirigo-snapshot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("counts.ckpt");
        let counts: Vec<(u64, u64)> = (0..10_000).map(|k| (k, k + 1)).collect();
        Snapshot::of(&counts).unwrap().write_to(&path).unwrap();
        let file = SnapshotFile::<Vec<(u64, u64)>>::open(&path).unwrap();
        // A new checkpoint renamed over the old one leaves the open map intact.
        Snapshot::of(&vec![(0u64, 0u64)])
            .unwrap()
            .write_to(&path)
            .unwrap();
        let archived = file.archived().unwrap();
        assert_eq!(archived.len(), 10_000);
        assert_eq!(archived[9_999].1, 10_000);
        assert_eq!(
            SnapshotFile::<Vec<(u64, u64)>>::open(&path)
                .unwrap()
                .archived()
                .unwrap()
                .len(),
            1
        );
        // Garbage, an empty file and a missing file are errors, not crashes.
        std::fs::write(&path, [0xa5u8; 100]).unwrap();
        assert!(SnapshotFile::<Vec<(u64, u64)>>::open(&path).is_err());
        std::fs::write(&path, []).unwrap();
        assert!(SnapshotFile::<Vec<(u64, u64)>>::open(&path).is_err());
        let missing = SnapshotFile::<Vec<(u64, u64)>>::open(dir.join("missing.ckpt"));
        let error = missing
            .err()
            .expect("a missing file is an error")
            .to_string();
        assert!(error.contains("missing.ckpt"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
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
