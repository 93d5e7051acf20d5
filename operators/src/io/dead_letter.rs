//! Dead letters: malformed input records, kept aside with the reason they were refused
//! instead of stopping the source.
//!
//! [`DeadLetters`] writes one JSON object per line,
//! `{"source": "...", "position": "...", "reason": "...", "record": "..."}`, where
//! `record` is the record's bytes converted to UTF-8 lossily and cut to at most
//! [`MAX_RECORD_BYTES`] bytes (at a character boundary).
//!
//! A file sink starts afresh: a regular file left at its path by an earlier run is
//! removed when the sink is created (so the file never mixes two runs' letters, and a
//! report that counts this run's letters agrees with it). The file itself is opened
//! lazily, on the first letter, so a run without malformed input leaves no file; it is
//! opened in append mode (created if missing), so sources that share one path add up.
//! Each letter is written with a single unbuffered `write` of the whole line: malformed
//! records are rare, and this way a letter is either on disk or known not to be. An I/O
//! error never panics: the letter is counted in [`DeadLetters::failed_writes`] and kept
//! in memory instead, the file is abandoned (every later letter is kept in memory too,
//! so the file holds a prefix of the letters, in order, the last possibly cut short by
//! the failed write), and one `tracing::warn!` is logged. Letters kept in memory after
//! a failure are capped at [`MAX_HELD_BYTES`]; past that they are only counted
//! ([`DeadLetters::dropped`]).
//!
//! A sender can make letters much larger than its input (a one-byte line makes a letter
//! of about a hundred bytes), so every sink is capped ([`LetterLimits`]): at most
//! `max_bytes` bytes of letters in all (default [`DEFAULT_MAX_BYTES`]) and at most
//! `max_per_s` letters a second (default [`DEFAULT_MAX_PER_S`], with bursts of up to a
//! second's worth). A letter past either cap is counted ([`DeadLetters::count`] and
//! [`DeadLetters::suppressed`]) but neither written nor held; one warning is logged when
//! the first is suppressed.
//!
//! Each source owns its own [`DeadLetters`] (they are not shared between threads).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// At most this many bytes of a malformed record's text are kept in its letter.
pub const MAX_RECORD_BYTES: usize = 4096;

/// At most this many bytes of letters are kept in memory after the file has failed.
pub const MAX_HELD_BYTES: usize = 64 << 20;

/// The default cap on the bytes of letters one sink writes: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// The default cap on the letters one sink writes per second (bursts of up to a
/// second's worth).
pub const DEFAULT_MAX_PER_S: u32 = 1000;

/// How much a dead-letter sink writes at most; letters past a cap are only counted.
///
/// ```
/// use dirigo_operators::io::dead_letter::{DeadLetters, LetterLimits};
///
/// let mut letters = DeadLetters::in_memory().with_limits(LetterLimits {
///     max_bytes: 1 << 20,
///     max_per_s: 2,
/// });
/// for line in 0..5 {
///     letters.record("in.csv", &format!("line {line}"), "bad", b"x");
/// }
/// assert_eq!(letters.count(), 5);
/// assert_eq!(letters.lines().len(), 2);
/// assert_eq!(letters.suppressed(), 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LetterLimits {
    /// Bytes of letters written (or held, for an in-memory sink) in all.
    pub max_bytes: u64,
    /// Letters a second, with bursts of up to this many (at least 1).
    pub max_per_s: u32,
}

impl Default for LetterLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            max_per_s: DEFAULT_MAX_PER_S,
        }
    }
}

/// One letter, as written.
#[derive(serde::Serialize)]
struct Letter<'a> {
    /// Which source refused the record (a file path, a listener address...).
    source: &'a str,
    /// Where in the source (a line number, a byte offset, a peer and frame number...).
    position: &'a str,
    /// Why it was refused.
    reason: &'a str,
    /// The record's text, lossily converted and truncated.
    record: &'a str,
}

/// Where letters go.
#[derive(Debug)]
enum Sink {
    /// Kept in memory only.
    Memory,
    /// Appended to a file.
    File {
        /// The file's path.
        path: PathBuf,
        /// The open file, once the first letter has come.
        file: Option<File>,
        /// The error that made the file unusable; letters are held in memory since.
        failed: Option<io::Error>,
    },
}

/// A sink of malformed records, one JSON line each; see the [module docs](self).
#[derive(Debug)]
pub struct DeadLetters {
    /// Where letters go.
    sink: Sink,
    /// Letters kept in memory: all of them for [`DeadLetters::in_memory`], those that
    /// could not be written for [`DeadLetters::to_file`].
    held: Vec<String>,
    /// Bytes in `held`.
    held_bytes: usize,
    /// Letters recorded.
    count: u64,
    /// Letters that could not be written to the file.
    failed_writes: u64,
    /// Letters neither written nor held (past [`MAX_HELD_BYTES`]).
    dropped: u64,
    /// The caps.
    limits: LetterLimits,
    /// Letters written to the file.
    written: u64,
    /// Bytes of letters written or held so far, against `limits.max_bytes`.
    bytes: u64,
    /// Letters the rate cap still allows now (a bucket refilled at `max_per_s`).
    allowance: f64,
    /// When `allowance` was last refilled.
    refilled: Instant,
    /// Letters past a cap: counted, not written.
    suppressed: u64,
}

/// Where a source's dead letters stood at a checkpoint ([`DeadLetters::mark`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LetterMark {
    /// Letters recorded.
    pub count: u64,
    /// Letters written to the file.
    pub written: u64,
    /// Bytes counted against the cap.
    pub bytes: u64,
    /// Letters past a cap.
    pub suppressed: u64,
    /// The file's length (letters held, for an in-memory sink).
    pub file_len: u64,
}

/// `record` as UTF-8 text (invalid sequences replaced by U+FFFD), at most
/// [`MAX_RECORD_BYTES`] bytes.
fn record_text(record: &[u8]) -> String {
    let head = &record[..record.len().min(MAX_RECORD_BYTES)];
    let mut text = String::from_utf8_lossy(head).into_owned();
    if text.len() > MAX_RECORD_BYTES {
        // Replacement characters are longer than the bytes they replace.
        let mut end = MAX_RECORD_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Removes a regular file left at `path` by an earlier run (never anything else: a
/// device or a FIFO given as the path stays as it is).
fn remove_stale(path: &Path) {
    let stale = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_file());
    if stale {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the dead letters of an earlier run");
        }
    }
}

/// Opens (creating if needed) `path` to append letters.
fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl DeadLetters {
    /// Letters appended to the file at `path`, which is opened (created if missing) on
    /// the first letter; a regular file already there (an earlier run's letters) is
    /// removed now. Capped by the default [`LetterLimits`].
    pub fn to_file(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        remove_stale(&path);
        Self::with_sink(Sink::File {
            path,
            file: None,
            failed: None,
        })
    }

    /// Letters appended to the file at `path`, keeping what it holds already: for a run
    /// that resumes from a checkpoint, whose earlier letters are committed output (the
    /// checkpoint cuts the file back to its length then, see [`DeadLetters::rewind`]).
    pub fn appending_to(path: impl Into<PathBuf>) -> Self {
        Self::with_sink(Sink::File {
            path: path.into(),
            file: None,
            failed: None,
        })
    }

    /// Where the letters stand, for a checkpoint: the counts and the file's length.
    pub fn mark(&self) -> LetterMark {
        let file_len = match &self.sink {
            Sink::File { path, .. } => std::fs::metadata(path).map_or(0, |m| m.len()),
            Sink::Memory => self.held.len() as u64,
        };
        LetterMark {
            count: self.count,
            written: self.written,
            bytes: self.bytes,
            suppressed: self.suppressed,
            file_len,
        }
    }

    /// Back to `mark`: the counts as they were, and the file cut back to its length then
    /// (letters written after the mark are written again as the source reads their
    /// lines again). A file shorter than the mark (removed meanwhile) is left alone,
    /// with a warning.
    pub fn rewind(&mut self, mark: &LetterMark) {
        self.count = mark.count;
        self.written = mark.written;
        self.bytes = mark.bytes;
        self.suppressed = mark.suppressed;
        match &mut self.sink {
            Sink::File { path, file, .. } => {
                *file = None;
                let len = std::fs::metadata(&*path).map_or(0, |m| m.len());
                if len < mark.file_len {
                    tracing::warn!(
                        path = %path.display(),
                        "the dead-letter file is shorter than at the checkpoint ({len} < {} bytes): \
                         letters from before the checkpoint are missing",
                        mark.file_len
                    );
                } else if len > mark.file_len {
                    let cut = OpenOptions::new()
                        .write(true)
                        .open(&*path)
                        .and_then(|f| f.set_len(mark.file_len));
                    if let Err(e) = cut {
                        tracing::warn!(path = %path.display(), error = %e, "cannot cut the dead-letter file back to the checkpoint");
                    }
                }
            }
            Sink::Memory => {
                let keep = usize::try_from(mark.file_len).unwrap_or(usize::MAX);
                self.held.truncate(keep);
            }
        }
    }

    /// Letters kept in memory, for tests: read them with [`DeadLetters::lines`].
    pub fn in_memory() -> Self {
        Self::with_sink(Sink::Memory)
    }

    /// A sink with nothing recorded yet.
    fn with_sink(sink: Sink) -> Self {
        DeadLetters {
            sink,
            held: Vec::new(),
            held_bytes: 0,
            count: 0,
            failed_writes: 0,
            dropped: 0,
            limits: LetterLimits::default(),
            written: 0,
            bytes: 0,
            allowance: f64::from(DEFAULT_MAX_PER_S),
            refilled: Instant::now(),
            suppressed: 0,
        }
    }

    /// The same sink with these caps (a `max_per_s` of 0 counts as 1).
    pub fn with_limits(mut self, limits: LetterLimits) -> Self {
        self.limits = LetterLimits {
            max_per_s: limits.max_per_s.max(1),
            ..limits
        };
        self.allowance = f64::from(self.limits.max_per_s);
        self
    }

    /// Whether a letter of `len` bytes fits under the caps now (taking its share of
    /// the rate if so).
    fn admit(&mut self, len: usize) -> bool {
        let rate = f64::from(self.limits.max_per_s);
        let now = Instant::now();
        let since = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.allowance = (self.allowance + since * rate).min(rate);
        let fits = self.bytes.saturating_add(len as u64) <= self.limits.max_bytes;
        if fits && self.allowance >= 1.0 {
            self.allowance -= 1.0;
            self.bytes += len as u64;
            return true;
        }
        if self.suppressed == 0 {
            tracing::warn!(
                path = ?self.path().map(Path::display).map(|p| p.to_string()),
                max_bytes = self.limits.max_bytes,
                max_per_s = self.limits.max_per_s,
                "dead letters over their cap: counting the rest without writing them"
            );
        }
        self.suppressed += 1;
        false
    }

    /// Records a malformed `record` read by `source` at `position`, refused for
    /// `reason`. Never fails and never panics; see the [module docs](self) for what
    /// happens on an I/O error.
    pub fn record(&mut self, source: &str, position: &str, reason: &str, record: &[u8]) {
        let text = record_text(record);
        let letter = Letter {
            source,
            position,
            reason,
            record: &text,
        };
        // Serializing a struct of strings to a String cannot fail.
        let mut line = serde_json::to_string(&letter).unwrap_or_default();
        self.count += 1;
        if !self.admit(line.len() + 1) {
            return;
        }
        let Sink::File { path, file, failed } = &mut self.sink else {
            self.held.push(line);
            return;
        };
        if failed.is_none() {
            line.push('\n');
            let written = match file {
                Some(file) => file.write_all(line.as_bytes()),
                None => {
                    open(path).and_then(|opened| file.insert(opened).write_all(line.as_bytes()))
                }
            };
            line.pop();
            match written {
                Ok(()) => {
                    self.written += 1;
                    return;
                }
                Err(e) => {
                    tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "cannot write dead letters; keeping them in memory from now on"
                    );
                    *file = None;
                    *failed = Some(e);
                }
            }
        }
        self.failed_writes += 1;
        if self.held_bytes + line.len() <= MAX_HELD_BYTES {
            self.held_bytes += line.len();
            self.held.push(line);
        } else {
            self.dropped += 1;
        }
    }

    /// Letters recorded so far, wherever they went.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Letters that could not be written to the file (0 for an in-memory sink); they
    /// are in [`DeadLetters::lines`] unless [`DeadLetters::dropped`].
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes
    }

    /// Letters written to the file (0 for an in-memory sink).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Letters past a cap ([`LetterLimits`]): counted, neither written nor held.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// Letters that could not be written to the file and did not fit in memory either.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The path of a file sink; `None` for an in-memory one.
    pub fn path(&self) -> Option<&Path> {
        match &self.sink {
            Sink::Memory => None,
            Sink::File { path, .. } => Some(path),
        }
    }

    /// Flushes the file. Letters are written unbuffered, so this only reports: `Ok` when
    /// every letter is in the file (always, for an in-memory sink), or an error saying
    /// how many letters are not and why, when the file failed.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Memory => Ok(()),
            Sink::File {
                failed: Some(e),
                path,
                ..
            } => Err(io::Error::new(
                e.kind(),
                format!(
                    "{} of {} dead letters could not be written to {}: {e}",
                    self.failed_writes,
                    self.count,
                    path.display()
                ),
            )),
            Sink::File { file, .. } => file.as_mut().map_or(Ok(()), |f| f.flush()),
        }
    }

    /// The letters kept in memory, one JSON object each (no trailing newline): every
    /// letter for an in-memory sink; for a file sink, those that could not be written.
    pub fn lines(&self) -> Vec<String> {
        self.held.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A fresh scratch directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("dirigo-dead-letter-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn in_memory_lines_are_json() {
        let mut letters = DeadLetters::in_memory();
        letters.record("in.csv", "line 3", "expected 3 fields", b"1,2");
        letters.record("in.csv", "line 4", "bad \"quote\"", b"a\"b\n");
        assert_eq!(letters.count(), 2);
        assert_eq!(letters.failed_writes(), 0);
        letters.flush().unwrap();
        let lines = letters.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            r#"{"source":"in.csv","position":"line 3","reason":"expected 3 fields","record":"1,2"}"#
        );
        let second: Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["reason"], "bad \"quote\"");
        assert_eq!(second["record"], "a\"b\n");
        assert!(!lines[1].contains('\n'));
    }

    #[test]
    fn records_are_lossy_and_truncated() {
        let mut letters = DeadLetters::in_memory();
        letters.record("s", "p", "r", &[b'o', b'k', 0xff, b'!']);
        letters.record("s", "p", "r", &vec![b'x'; 10_000]);
        letters.record("s", "p", "r", &[0xff; 10_000]);
        letters.record("s", "p", "r", "é".repeat(3000).as_bytes());
        let records: Vec<String> = letters
            .lines()
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["record"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(records[0], "ok\u{fffd}!");
        assert_eq!(records[1], "x".repeat(MAX_RECORD_BYTES));
        assert!(records[2].len() <= MAX_RECORD_BYTES);
        assert!(records[2].chars().all(|c| c == '\u{fffd}'));
        assert_eq!(records[3], "é".repeat(MAX_RECORD_BYTES / 2));
    }

    #[test]
    fn file_is_created_on_the_first_letter_and_a_restart_starts_afresh() {
        let dir = scratch("file");
        let path = dir.join("dead.jsonl");
        let mut letters = DeadLetters::to_file(&path);
        assert_eq!(letters.path(), Some(path.as_path()));
        letters.flush().unwrap();
        assert!(!path.exists(), "no letters, no file");
        letters.record("src", "line 1", "why", b"bad");
        letters.record("src", "line 2", "why", b"worse");
        letters.flush().unwrap();
        drop(letters);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        // A restarted run: the earlier run's letters are gone, not appended to.
        let mut again = DeadLetters::to_file(&path);
        assert!(!path.exists(), "the earlier run's file is removed");
        again.record("src", "line 9", "why", b"later");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1);
        assert!(text.ends_with('\n'));
        let only: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(only["position"], "line 9");
        assert_eq!(only["record"], "later");
        assert!(again.lines().is_empty());
        assert_eq!(again.written(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn io_errors_keep_letters_in_memory() {
        let dir = scratch("missing");
        // The parent directory does not exist: opening fails.
        let path = dir.join("no-such-dir").join("dead.jsonl");
        let mut letters = DeadLetters::to_file(&path);
        letters.record("src", "line 1", "why", b"one");
        letters.record("src", "line 2", "why", b"two");
        assert_eq!(letters.count(), 2);
        assert_eq!(letters.failed_writes(), 2);
        assert_eq!(letters.dropped(), 0);
        assert_eq!(letters.lines().len(), 2);
        assert!(letters.lines()[1].contains("\"two\""));
        let err = letters.flush().unwrap_err();
        assert!(err.to_string().contains("2 of 2 dead letters"), "{err}");
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn write_errors_keep_letters_in_memory() {
        // /dev/full accepts opening and fails every write with ENOSPC.
        if !Path::new("/dev/full").exists() {
            return;
        }
        let mut letters = DeadLetters::to_file("/dev/full");
        letters.record("src", "line 1", "why", b"one");
        assert_eq!(letters.failed_writes(), 1);
        assert_eq!(letters.lines().len(), 1);
        assert!(letters.flush().is_err());
    }

    #[test]
    fn a_flood_stays_under_the_byte_cap_and_is_counted() {
        let dir = scratch("cap");
        let path = dir.join("dead.jsonl");
        let mut letters = DeadLetters::to_file(&path).with_limits(LetterLimits {
            max_bytes: 4096,
            max_per_s: 1_000_000,
        });
        for line in 0..10_000 {
            letters.record("src", &format!("line {line}"), "not a record", b"x");
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= 4096, "{size}");
        assert_eq!(letters.count(), 10_000);
        assert_eq!(letters.written() + letters.suppressed(), 10_000);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().lines().count() as u64,
            letters.written()
        );
        assert!(letters.flush().is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_rate_cap_allows_a_burst_then_refills() {
        let mut letters = DeadLetters::in_memory().with_limits(LetterLimits {
            max_bytes: u64::MAX,
            max_per_s: 100,
        });
        for _ in 0..150 {
            letters.record("s", "p", "r", b"x");
        }
        assert_eq!(letters.lines().len(), 100);
        assert_eq!(letters.suppressed(), 50);
        std::thread::sleep(std::time::Duration::from_millis(50));
        letters.record("s", "p", "r", b"x");
        assert_eq!(letters.lines().len(), 101, "refilled at 100 a second");
    }

    #[test]
    fn a_device_at_the_path_is_not_removed() {
        if !Path::new("/dev/null").exists() {
            return;
        }
        let _letters = DeadLetters::to_file("/dev/null");
        assert!(Path::new("/dev/null").exists());
    }
}
