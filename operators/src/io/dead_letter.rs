//! Dead letters: malformed input records, kept aside with the reason they were refused
//! instead of stopping the source.
//!
//! [`DeadLetters`] writes one JSON object per line,
//! `{"source": "...", "position": "...", "reason": "...", "record": "..."}`, where
//! `record` is the record's bytes converted to UTF-8 lossily and cut to at most
//! [`MAX_RECORD_BYTES`] bytes (at a character boundary).
//!
//! A file sink is opened lazily, on the first letter, so a run without malformed input
//! leaves no file; it is opened in append mode (created if missing), so letters of
//! earlier runs are never overwritten. Each letter is written with a single unbuffered
//! `write` of the whole line: malformed records are rare, and this way a letter is
//! either on disk or known not to be. An I/O error never panics: the letter is counted
//! in [`DeadLetters::failed_writes`] and kept in memory instead, the file is abandoned
//! (every later letter is kept in memory too, so the file holds a prefix of the
//! letters, in order, the last possibly cut short by the failed write), and one
//! `tracing::warn!` is logged. Letters kept in memory after
//! a failure are capped at [`MAX_HELD_BYTES`]; past that they are only counted
//! ([`DeadLetters::dropped`]).
//!
//! Each source owns its own [`DeadLetters`] (they are not shared between threads).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// At most this many bytes of a malformed record's text are kept in its letter.
pub const MAX_RECORD_BYTES: usize = 4096;

/// At most this many bytes of letters are kept in memory after the file has failed.
pub const MAX_HELD_BYTES: usize = 64 << 20;

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

/// Opens (creating if needed) `path` to append letters.
fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl DeadLetters {
    /// Letters appended to the file at `path`, which is opened (created if missing) on
    /// the first letter.
    pub fn to_file(path: impl Into<PathBuf>) -> Self {
        Self::with_sink(Sink::File {
            path: path.into(),
            file: None,
            failed: None,
        })
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
        }
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
                Ok(()) => return,
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
    fn file_is_created_on_the_first_letter_and_appended() {
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
        let mut again = DeadLetters::to_file(&path);
        again.record("src", "line 9", "why", b"later");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(text.ends_with('\n'));
        let third: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(third["position"], "line 9");
        assert_eq!(third["record"], "later");
        assert!(again.lines().is_empty());
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
}
