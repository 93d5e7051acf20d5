//! Checkpoints on disk: where each file lives, the manifest that makes a checkpoint
//! exist, and reading a checkpoint back with every byte checked.
//!
//! ```text
//! DIR/
//!   chk-00000000000000000042/   checkpoint 42
//!     shard-0.parts              the parts archived on shard 0, each at a 16-byte
//!     shard-1.parts              aligned offset (rkyv's archived form)
//!     MANIFEST                   written last; without it the checkpoint does not exist
//!   staged/
//!     a0-o3-p1-e42.out           output of sink (app 0, operator 3) partition 1 in
//!                                epoch 42, appended to the sink's file at commit
//! ```
//!
//! The manifest is JSON followed by a line `#crc32 XXXXXXXX` over the JSON, so that a
//! flipped byte is caught even where it would still parse. It is written to a temporary
//! file, flushed to disk, renamed into place, and the directory is flushed too, so a
//! crash leaves either no manifest or a whole one. Each part's entry holds its file,
//! offset, length and CRC-32; reading a checkpoint back checks every part's bounds and
//! checksum before anything is restored, and the logic validates the archive itself
//! (bytecheck) as it takes it back.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dirigo_runtime::{ActorId, AppId, OperatorId, PartitionId};

use super::link::{RestoredPart, SavedInputs};
use crate::dataflow::CheckpointId;

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;
/// The manifest's file name inside a checkpoint's directory.
pub const MANIFEST: &str = "MANIFEST";
/// Where staged sink output lives, under the checkpoint directory.
pub const STAGED: &str = "staged";
/// Parts start at multiples of this many bytes in their file: rkyv's archives need it.
pub const PART_ALIGN: u64 = 16;

/// What one checkpoint holds: written last, it is what makes the checkpoint exist.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The checkpoint's number.
    pub id: CheckpointId,
    /// The complete checkpoint before this one (0: none): this one commits the sinks'
    /// output of epochs `previous + 1 ..= id`.
    pub previous: CheckpointId,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Every app it holds, with its operators: a restore checks that the app is the same.
    pub apps: Vec<AppLayout>,
    /// Every operator partition's part.
    pub parts: Vec<PartEntry>,
    /// Every sink whose output it commits.
    pub sinks: Vec<SinkEntry>,
}

/// An app as a checkpoint saw it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppLayout {
    /// The app's id.
    pub id: AppId,
    /// The app's name.
    pub name: String,
    /// Its operators' names and partition counts, in operator order.
    pub operators: Vec<(String, PartitionId)>,
}

/// Where one operator partition's part lies.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartEntry {
    /// The partition's app.
    pub app: AppId,
    /// Its operator.
    pub operator: OperatorId,
    /// Its partition.
    pub partition: PartitionId,
    /// Its inputs' frontiers and ends.
    pub inputs: SavedInputs,
    /// The archived state, if the logic has any: file name in the checkpoint's
    /// directory, offset, length and CRC-32.
    pub state: Option<StateEntry>,
}

/// Where an archived state lies in a checkpoint's directory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateEntry {
    /// File name inside the checkpoint's directory.
    pub file: String,
    /// Offset of the first byte (a multiple of [`PART_ALIGN`]).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// CRC-32 (IEEE) of the bytes.
    pub crc32: u32,
}

/// A sink whose output a checkpoint commits: its file and how long the file was before
/// this checkpoint's commit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SinkEntry {
    /// The sink's app.
    pub app: AppId,
    /// The sink operator.
    pub operator: OperatorId,
    /// Its partitions.
    pub partitions: PartitionId,
    /// The file its output goes to.
    pub path: PathBuf,
    /// The file's committed length before this checkpoint's commit.
    pub base_len: u64,
}

/// The directory of checkpoint `id`.
pub fn checkpoint_dir(dir: &Path, id: CheckpointId) -> PathBuf {
    dir.join(format!("chk-{id:020}"))
}

/// The checkpoint a directory name stands for, if it is one.
fn id_of(name: &str) -> Option<CheckpointId> {
    name.strip_prefix("chk-")?.parse().ok()
}

/// Where sink partition `actor`'s output of epoch `epoch` is staged.
pub fn staged_path(dir: &Path, actor: ActorId, epoch: CheckpointId) -> PathBuf {
    dir.join(STAGED).join(format!(
        "a{}-o{}-p{}-e{epoch}.out",
        actor.app, actor.operator, actor.partition
    ))
}

/// The actor and epoch of a staged file's name.
fn staged_of(name: &str) -> Option<(ActorId, CheckpointId)> {
    let rest = name.strip_suffix(".out")?.strip_prefix('a')?;
    let mut fields = rest.split('-');
    let app = fields.next()?.parse().ok()?;
    let operator = fields.next()?.strip_prefix('o')?.parse().ok()?;
    let partition = fields.next()?.strip_prefix('p')?.parse().ok()?;
    let epoch = fields.next()?.strip_prefix('e')?.parse().ok()?;
    Some((ActorId::new(app, operator, partition), epoch))
}

/// Flushes a directory's entries (a rename or a new file in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn manifest_text(manifest: &Manifest) -> String {
    let json = serde_json::to_string_pretty(manifest).expect("a manifest serializes");
    let crc = crc32fast::hash(json.as_bytes());
    format!("{json}\n#crc32 {crc:08x}\n")
}

/// Commits `manifest`: a temporary file, flushed, renamed into place, the directory
/// flushed.
///
/// # Errors
/// Any failed write, flush or rename.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> io::Result<()> {
    let chk = checkpoint_dir(dir, manifest.id);
    fs::create_dir_all(&chk)?;
    let temporary = chk.join(format!("{MANIFEST}.partial"));
    let mut file = File::create(&temporary)?;
    file.write_all(manifest_text(manifest).as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, chk.join(MANIFEST))?;
    sync_dir(&chk)?;
    sync_dir(dir)
}

/// Reads and checks checkpoint `id`'s manifest.
///
/// # Errors
/// A missing or unreadable manifest, a checksum that does not match, JSON that does not
/// parse, another format or another id: each with a sentence saying which.
pub fn read_manifest(dir: &Path, id: CheckpointId) -> Result<Manifest, String> {
    let path = checkpoint_dir(dir, id).join(MANIFEST);
    let mut text = String::new();
    File::open(&path)
        .and_then(|file| file.take(64 << 20).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (json, trailer) = text
        .trim_end()
        .rsplit_once('\n')
        .ok_or_else(|| format!("{}: no checksum line", path.display()))?;
    let expected = trailer
        .strip_prefix("#crc32 ")
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| format!("{}: no checksum line", path.display()))?;
    let actual = crc32fast::hash(json.as_bytes());
    if actual != expected {
        return Err(format!(
            "{}: checksum {actual:08x} does not match {expected:08x}: the file is damaged",
            path.display()
        ));
    }
    let manifest: Manifest =
        serde_json::from_str(json).map_err(|e| format!("{}: {e}", path.display()))?;
    if manifest.format != FORMAT {
        return Err(format!(
            "{}: format {} (this build reads format {FORMAT})",
            path.display(),
            manifest.format
        ));
    }
    if manifest.id != id {
        return Err(format!(
            "{}: holds checkpoint {} instead of {id}",
            path.display(),
            manifest.id
        ));
    }
    Ok(manifest)
}

/// Every checkpoint directory under `dir`, newest first, complete or not.
///
/// # Errors
/// When `dir` exists but cannot be listed.
pub fn checkpoint_ids(dir: &Path) -> io::Result<Vec<CheckpointId>> {
    let mut ids = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                if let Some(id) = entry.file_name().to_str().and_then(id_of) {
                    ids.push(id);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    ids.sort_unstable_by(|a, b| b.cmp(a));
    Ok(ids)
}

/// The parts of a checkpoint, checked (bounds and CRC-32) and mapped into memory, by
/// app, then by `(operator, partition)`.
pub(crate) type LoadedParts = HashMap<AppId, HashMap<(OperatorId, PartitionId), RestoredPart>>;

/// Maps every part file of `manifest` and checks each part: its bounds and checksum.
///
/// # Errors
/// A file that is missing or cannot be mapped, a part beyond its file's end, misaligned,
/// or whose checksum does not match: a sentence saying which.
pub(crate) fn load_parts(dir: &Path, manifest: &Manifest) -> Result<LoadedParts, String> {
    let chk = checkpoint_dir(dir, manifest.id);
    let mut maps: HashMap<String, Arc<memmap2::Mmap>> = HashMap::new();
    let mut loaded: LoadedParts = HashMap::new();
    for part in &manifest.parts {
        let state = match &part.state {
            None => None,
            Some(entry) => {
                if entry.file.contains('/') || entry.file.contains("..") {
                    return Err(format!(
                        "part file name {:?} is not a plain name",
                        entry.file
                    ));
                }
                let map = match maps.get(&entry.file) {
                    Some(map) => map.clone(),
                    None => {
                        let path = chk.join(&entry.file);
                        let file =
                            File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                        // SAFETY: the map is read-only and private; nothing in it is
                        // trusted (every part's bounds and CRC are checked below, and the
                        // logic validates the archive with bytecheck as it restores it).
                        // Part files are written once, before their manifest, and never
                        // rewritten in place; a checkpoint's directory is deleted only
                        // when it is older than every checkpoint kept, never the one a
                        // run resumes from. Tested by the corruption tests in
                        // `tests/checkpoints.rs` and `store::tests`.
                        // Populated up front: every byte is read (checksum, validation,
                        // merge), and faulting the pages in one call is faster than one
                        // fault at a time.
                        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                        let map = Arc::new(map);
                        maps.insert(entry.file.clone(), map.clone());
                        map
                    }
                };
                let start = usize::try_from(entry.offset).map_err(|_| "offset too large")?;
                let len = usize::try_from(entry.len).map_err(|_| "length too large")?;
                let end = start
                    .checked_add(len)
                    .filter(|&end| end <= map.len())
                    .ok_or_else(|| {
                        format!(
                            "{}: part of {} lies beyond the file's end ({} bytes at {start}, file of {})",
                            entry.file,
                            ActorId::new(part.app, part.operator, part.partition),
                            len,
                            map.len()
                        )
                    })?;
                if entry.offset % PART_ALIGN != 0 {
                    return Err(format!(
                        "{}: part at {} is not aligned",
                        entry.file, entry.offset
                    ));
                }
                let crc = crc32fast::hash(&map[start..end]);
                if crc != entry.crc32 {
                    return Err(format!(
                        "{}: part of {} has checksum {crc:08x}, expected {:08x}: the file is damaged",
                        entry.file,
                        ActorId::new(part.app, part.operator, part.partition),
                        entry.crc32
                    ));
                }
                Some((map, start..end))
            }
        };
        loaded.entry(part.app).or_default().insert(
            (part.operator, part.partition),
            RestoredPart {
                inputs: part.inputs.clone(),
                state,
            },
        );
    }
    Ok(loaded)
}

/// Appends `len` bytes at `offset` of `from`, at the end of `to` (which is at `to_len`).
fn append_file(from: &Path, to: &mut File) -> io::Result<u64> {
    let mut source = File::open(from)?;
    io::copy(&mut source, to)
}

/// Makes the sinks' files hold exactly the output `manifest` commits: each file cut back
/// to its length before the commit, then the staged output of epochs
/// `previous + 1 ..= id` appended, epoch by epoch, partition by partition, and flushed.
/// Running it again gives the same files, so a crash during a commit is repaired by
/// committing again. Returns each sink file's committed length.
///
/// # Errors
/// A file that cannot be opened, cut, written or flushed.
pub(crate) fn commit_sinks(dir: &Path, manifest: &Manifest) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut lengths = Vec::new();
    for sink in &manifest.sinks {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&sink.path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", sink.path.display())))?;
        file.set_len(sink.base_len)?;
        file.seek(SeekFrom::Start(sink.base_len))?;
        let mut len = sink.base_len;
        for epoch in manifest.previous + 1..=manifest.id {
            for partition in 0..sink.partitions {
                let staged =
                    staged_path(dir, ActorId::new(sink.app, sink.operator, partition), epoch);
                match append_file(&staged, &mut file) {
                    Ok(bytes) => len += bytes,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("{}: {e}", staged.display()),
                        ))
                    }
                }
            }
        }
        file.sync_all()?;
        lengths.push((sink.path.clone(), len));
    }
    Ok(lengths)
}

/// Deletes what no kept checkpoint needs: checkpoints older than the `retain` newest
/// complete ones, directories without a manifest older than `keep_from` (a checkpoint in
/// flight is never touched), staged output of epochs the oldest kept checkpoint's commit
/// no longer reads, and (with `discard_after`) staged output of epochs after it, which no
/// complete checkpoint covers.
///
/// # Errors
/// When a directory cannot be listed; files that cannot be deleted are logged.
pub(crate) fn prune(
    dir: &Path,
    complete: &[CheckpointId],
    retain: usize,
    keep_from: CheckpointId,
    discard_after: Option<CheckpointId>,
) -> io::Result<()> {
    let kept: Vec<CheckpointId> = complete.iter().copied().take(retain.max(1)).collect();
    let oldest_kept = kept.last().copied().unwrap_or(0);
    for id in checkpoint_ids(dir)? {
        let keep = kept.contains(&id) || (id >= keep_from && !complete.contains(&id));
        if !keep {
            let path = checkpoint_dir(dir, id);
            if let Err(e) = fs::remove_dir_all(&path) {
                tracing::warn!("cannot delete {}: {e}", path.display());
            }
        }
    }
    // The oldest kept checkpoint commits epochs after its own `previous`: older ones go.
    let oldest_reads_from = if oldest_kept == 0 {
        0
    } else {
        read_manifest(dir, oldest_kept).map_or(oldest_kept, |m| m.previous)
    };
    let staged = dir.join(STAGED);
    let entries = match fs::read_dir(&staged) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some((_, epoch)) = entry.file_name().to_str().and_then(staged_of) else {
            continue;
        };
        let stale = epoch <= oldest_reads_from;
        let uncovered = discard_after.is_some_and(|after| epoch > after);
        if stale || uncovered {
            if let Err(e) = fs::remove_file(entry.path()) {
                tracing::warn!("cannot delete {}: {e}", entry.path().display());
            }
        }
    }
    Ok(())
}

/// One checkpoint as `dirigo checkpoints` lists it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CheckpointInfo {
    /// Its number.
    pub id: CheckpointId,
    /// When its manifest was committed (ms since the Unix epoch), if it is complete.
    pub created_unix_ms: Option<u64>,
    /// Bytes of its directory.
    pub bytes: u64,
    /// The apps it holds, by name (empty when incomplete).
    pub apps: Vec<String>,
    /// Whether it has a valid manifest; otherwise why not.
    pub complete: Result<(), String>,
}

/// Every checkpoint under `dir`, newest first.
///
/// # Errors
/// When `dir` cannot be listed.
pub fn list(dir: &Path) -> io::Result<Vec<CheckpointInfo>> {
    let mut infos = Vec::new();
    for id in checkpoint_ids(dir)? {
        let chk = checkpoint_dir(dir, id);
        let bytes = fs::read_dir(&chk)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        let manifest = read_manifest(dir, id);
        infos.push(CheckpointInfo {
            id,
            created_unix_ms: manifest.as_ref().ok().map(|m| m.created_unix_ms),
            bytes,
            apps: manifest
                .as_ref()
                .map(|m| m.apps.iter().map(|a| a.name.clone()).collect())
                .unwrap_or_default(),
            complete: manifest.map(|_| ()),
        });
    }
    Ok(infos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dirigo-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn manifest(id: CheckpointId) -> Manifest {
        Manifest {
            format: FORMAT,
            id,
            previous: 0,
            created_unix_ms: 1,
            apps: vec![AppLayout {
                id: 0,
                name: "a".into(),
                operators: vec![("src".into(), 1)],
            }],
            parts: vec![],
            sinks: vec![],
        }
    }

    #[test]
    fn a_manifest_round_trips_and_a_flipped_byte_is_caught() {
        let dir = scratch("manifest");
        write_manifest(&dir, &manifest(3)).unwrap();
        assert_eq!(read_manifest(&dir, 3).unwrap(), manifest(3));
        let path = checkpoint_dir(&dir, 3).join(MANIFEST);
        let mut bytes = fs::read(&path).unwrap();
        // A digit of the timestamp: still valid JSON, caught by the checksum.
        let at = bytes.windows(2).position(|w| w == b": ").unwrap() + 2;
        let at = at + bytes[at..].iter().position(u8::is_ascii_digit).unwrap();
        bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
        fs::write(&path, &bytes).unwrap();
        let error = read_manifest(&dir, 3).unwrap_err();
        assert!(error.contains("checksum"), "{error}");
        fs::remove_file(&path).unwrap();
        assert!(read_manifest(&dir, 3).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn staged_names_round_trip() {
        let actor = ActorId::new(2, 5, 7);
        let path = staged_path(Path::new("/x"), actor, 42);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(staged_of(name), Some((actor, 42)));
        assert_eq!(staged_of("a1-o2.out"), None);
        assert_eq!(id_of("chk-00000000000000000042"), Some(42));
        assert_eq!(id_of("chk-x"), None);
    }

    #[test]
    fn committing_twice_gives_the_same_file() {
        let dir = scratch("commit");
        let out = dir.join("out.jsonl");
        fs::write(&out, b"old\nuncommitted\n").unwrap();
        fs::create_dir_all(dir.join(STAGED)).unwrap();
        fs::write(staged_path(&dir, ActorId::new(0, 1, 0), 1), b"a\n").unwrap();
        fs::write(staged_path(&dir, ActorId::new(0, 1, 1), 2), b"b\n").unwrap();
        fs::write(staged_path(&dir, ActorId::new(0, 1, 0), 3), b"later\n").unwrap();
        let mut m = manifest(2);
        m.sinks.push(SinkEntry {
            app: 0,
            operator: 1,
            partitions: 2,
            path: out.clone(),
            base_len: 4,
        });
        let first = commit_sinks(&dir, &m).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"old\na\nb\n");
        let again = commit_sinks(&dir, &m).unwrap();
        assert_eq!(first, again);
        assert_eq!(fs::read(&out).unwrap(), b"old\na\nb\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
