//! File sources: records read from a CSV or JSON-lines file, with malformed lines sent to
//! dead letters while the pipeline goes on; and [`DeadLetterSink`], the shared handle on
//! a source's dead letters.
//!
//! [`AppBuilder::source_file`] opens the file when the app is built (so a missing file is
//! an error there, not a silent empty stream) and reads it from one source partition. It
//! reads with `std::fs` in chunks of [`CHUNK_BYTES`] and frames them into lines with a
//! [`LineFramer`]: the workspace's `memmap2` is not a dependency of this crate, and a
//! mapping would not save much anyway, since every line is copied once to be decoded.
//! The reads are blocking reads on the source's shard; a chunk from the page cache takes
//! microseconds, and the source reads one chunk at a time, only when the lines of the
//! chunks before are used up. A slow disk would stall that shard: put the file on local
//! storage, or use a TCP source.
//!
//! Lines end at `\n` (a `\r` before it is dropped); blank lines (only whitespace) are
//! skipped, and so is a CSV header `key,value,time` when it is the first non-blank line
//! (see [`is_csv_header`]). Every other line is decoded with [`decode_line`]; one that
//! fails — a bad number, a wrong field count, invalid UTF-8, truncated JSON, a line over
//! [`DEFAULT_MAX_FRAME`] bytes — is recorded in the [`DeadLetterSink`] with the file's
//! path as its source, `line N` (1-based) as its position and the parse error as its
//! reason, and the source goes on with the next line. So is a record whose event time
//! (from `time_of`) lies outside `0..=`[`MAX_EVENT_TIME_MS`] (the end of year 9999, in
//! ms; see [`check_event_time`]): no time a record carries can end the stream.
//!
//! [`MAX_EVENT_TIME_MS`]: crate::dataflow::MAX_EVENT_TIME_MS
//! [`check_event_time`]: crate::dataflow::check_event_time A read error ends the stream
//! early; it is logged and recorded as a letter too, at `line N` of the next line.
//!
//! The reader's state is shared by every incarnation of the source partition, so if the
//! runtime deactivates and re-creates the partition it goes on where it stopped instead
//! of reading the file again.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::dead_letter::{DeadLetters, LetterLimits, LetterMark};
use super::parse::{decode_line, is_csv_header, Decode, Format, LineFramer, DEFAULT_MAX_FRAME};
use crate::dataflow::{check_event_time, AppBuilder, Data, Stream, Time};
use crate::source::{Pacing, RecordSource};

/// How many bytes a file source reads at a time.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The format of a file source's lines: CSV (`key,value,time`-style fields) or JSON
/// lines. The same type as the parser's [`Format`].
pub type FileFormat = Format;

/// A shared handle on a source's [`DeadLetters`]: cloneable, so that the source (or the
/// connections of a TCP source) records letters while tests and reports read the count.
///
/// Give each source its own sink to read per-source counts; sources that share one add
/// up.
#[derive(Clone, Debug)]
pub struct DeadLetterSink {
    letters: Arc<Mutex<DeadLetters>>,
}

impl DeadLetterSink {
    /// Letters appended to the file at `path` (created on the first letter; see
    /// [`DeadLetters::to_file`]).
    pub fn to_file(path: impl Into<PathBuf>) -> Self {
        Self::new(DeadLetters::to_file(path))
    }

    /// Letters appended to the file at `path`, capped by `limits` (see
    /// [`DeadLetters::with_limits`]).
    pub fn to_file_with_limits(path: impl Into<PathBuf>, limits: LetterLimits) -> Self {
        Self::new(DeadLetters::to_file(path).with_limits(limits))
    }

    /// Letters kept in memory only (see [`DeadLetters::in_memory`]); read them with
    /// [`lines`](Self::lines).
    pub fn in_memory() -> Self {
        Self::new(DeadLetters::in_memory())
    }

    /// Shares `letters`.
    pub fn new(letters: DeadLetters) -> Self {
        Self {
            letters: Arc::new(Mutex::new(letters)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DeadLetters> {
        self.letters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a malformed `record` read by `source` at `position`, refused for `reason`
    /// (see [`DeadLetters::record`]).
    pub fn record(&self, source: &str, position: &str, reason: &str, record: &[u8]) {
        self.lock().record(source, position, reason, record);
    }

    /// Letters recorded so far.
    pub fn count(&self) -> u64 {
        self.lock().count()
    }

    /// Letters written to the file (see [`DeadLetters::written`]).
    pub fn written(&self) -> u64 {
        self.lock().written()
    }

    /// Letters past a cap, counted but not written (see [`DeadLetters::suppressed`]).
    pub fn suppressed(&self) -> u64 {
        self.lock().suppressed()
    }

    /// Letters that could not be written to the file (see [`DeadLetters::failed_writes`]).
    pub fn failed_writes(&self) -> u64 {
        self.lock().failed_writes()
    }

    /// The letters kept in memory: all of them for an in-memory sink, those that could
    /// not be written for a file sink (see [`DeadLetters::lines`]).
    pub fn lines(&self) -> Vec<String> {
        self.lock().lines()
    }

    /// The path of a file sink; `None` for an in-memory one.
    pub fn path(&self) -> Option<PathBuf> {
        self.lock().path().map(Path::to_path_buf)
    }

    /// Where the letters stand, for a checkpoint (see [`DeadLetters::mark`]).
    pub fn mark(&self) -> LetterMark {
        self.lock().mark()
    }

    /// Back to `mark` (see [`DeadLetters::rewind`]).
    pub fn rewind(&self, mark: &LetterMark) {
        self.lock().rewind(mark);
    }

    /// Whether every letter is where it should be (see [`DeadLetters::flush`]).
    ///
    /// # Errors
    /// When the file failed, saying how many letters are not in it.
    pub fn flush(&self) -> io::Result<()> {
        self.lock().flush()
    }
}

impl From<DeadLetters> for DeadLetterSink {
    fn from(letters: DeadLetters) -> Self {
        Self::new(letters)
    }
}

/// What one line of a line-framed source is.
pub(crate) enum Line<T> {
    /// A record.
    Record(T),
    /// Blank, or the CSV header: nothing to decode.
    Skipped,
    /// Malformed, for this reason.
    Bad(String),
}

/// Decodes one framed `line` in `format`. `first` says whether no non-blank line came
/// before it on this stream, where a CSV header is allowed.
pub(crate) fn decode_text_line<T: Decode>(line: &[u8], format: Format, first: bool) -> Line<T> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Line::Skipped;
    }
    if first && format == Format::Csv && std::str::from_utf8(line).is_ok_and(is_csv_header) {
        return Line::Skipped;
    }
    match decode_line(line, format) {
        Ok(record) => Line::Record(record),
        Err(reason) => Line::Bad(reason),
    }
}

/// An event-time function, shared.
pub(crate) type TimeOf<T> = Arc<dyn Fn(&T) -> Time + Send + Sync>;

/// The state of a file source: the open file, the framer, lines framed but not decoded.
struct FileReader<T> {
    /// The file; `None` once it is read to its end (or failed).
    file: Option<File>,
    /// The path, as the source of dead letters.
    source: String,
    format: Format,
    framer: LineFramer,
    /// Lines framed and not decoded yet.
    lines: VecDeque<Result<Vec<u8>, String>>,
    /// Scratch for the framer.
    framed: Vec<Result<Vec<u8>, String>>,
    /// Scratch for reads.
    chunk: Vec<u8>,
    /// Lines taken from `lines` so far: the number of the last one.
    line: u64,
    /// Whether a non-blank line has been seen.
    seen_content: bool,
    /// Lines up to this one already have their letters written (a source rewound to a
    /// checkpoint reads them again): no letter for them.
    lettered_through: u64,
    letters: DeadLetterSink,
    time_of: TimeOf<T>,
    _records: PhantomData<fn() -> T>,
}

impl<T: Decode> FileReader<T> {
    /// A dead letter for the line being read, unless a rewind reads it again.
    fn letter(&self, position: &str, reason: &str, bytes: &[u8]) {
        if self.line > self.lettered_through {
            self.letters.record(&self.source, position, reason, bytes);
        }
    }

    fn next_record(&mut self) -> Option<(Time, T)> {
        loop {
            while let Some(framed) = self.lines.pop_front() {
                self.line += 1;
                let position = || format!("line {}", self.line);
                match framed {
                    Ok(bytes) => {
                        let first = !self.seen_content;
                        match decode_text_line::<T>(&bytes, self.format, first) {
                            Line::Record(record) => {
                                self.seen_content = true;
                                match check_event_time((self.time_of)(&record)) {
                                    Ok(time) => return Some((time, record)),
                                    Err(reason) => self.letter(&position(), &reason, &bytes),
                                }
                            }
                            Line::Skipped => {
                                self.seen_content |= !bytes.iter().all(u8::is_ascii_whitespace);
                            }
                            Line::Bad(reason) => {
                                self.seen_content = true;
                                self.letter(&position(), &reason, &bytes);
                            }
                        }
                    }
                    Err(reason) => {
                        self.seen_content = true;
                        self.letter(&position(), &reason, b"");
                    }
                }
            }
            let file = self.file.as_mut()?;
            match file.read(&mut self.chunk) {
                Ok(0) => {
                    self.framer.finish(&mut self.framed);
                    self.file = None;
                }
                Ok(read) => self.framer.push(&self.chunk[..read], &mut self.framed),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!(path = %self.source, error = %e, "file source read failed; ending its stream");
                    let reason = format!("cannot read the file: {e}; the rest is skipped");
                    let position = format!("line {}", self.line + self.framed.len() as u64 + 1);
                    self.letters.record(&self.source, &position, &reason, b"");
                    self.file = None;
                }
            }
            self.lines.extend(self.framed.drain(..));
        }
    }
}

/// One incarnation of a file source partition: a handle on the shared reader.
struct FileRecords<T> {
    reader: Arc<Mutex<FileReader<T>>>,
}

/// What a file source remembers at a checkpoint beyond the records it handed out.
#[derive(serde::Serialize, serde::Deserialize)]
struct FileMark {
    /// The last line read.
    line: u64,
    letters: LetterMark,
}

impl<T: Decode + Data> FileRecords<T> {
    fn lock(&self) -> MutexGuard<'_, FileReader<T>> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Decode + Data> RecordSource<T> for FileRecords<T> {
    fn next_record(&mut self) -> Option<(Time, T)> {
        self.lock().next_record()
    }

    fn checkpoint_extra(&self) -> Vec<u8> {
        let reader = self.lock();
        let mark = FileMark {
            line: reader.line,
            letters: reader.letters.mark(),
        };
        serde_json::to_vec(&mark).unwrap_or_default()
    }

    /// Reads the file again up to the checkpoint's record, without writing the letters
    /// of lines it had read by then again, and cuts the dead-letter file back to its
    /// length at the checkpoint.
    fn rewind(&mut self, handed_out: u64, extra: &[u8]) -> Result<(), String> {
        let mark: FileMark = serde_json::from_slice(extra)
            .map_err(|e| format!("the file source's checkpoint is not readable: {e}"))?;
        let mut reader = self.lock();
        reader.lettered_through = mark.line;
        for skipped in 0..handed_out {
            if reader.next_record().is_none() {
                return Err(format!(
                    "{} has {skipped} records; the checkpoint had read {handed_out}",
                    reader.source
                ));
            }
        }
        reader.letters.rewind(&mark.letters);
        Ok(())
    }
}

impl AppBuilder {
    /// A source of the records in the file at `path`, one per line in `format`, read by
    /// one partition (see the [module docs](self)). Malformed lines go to `dead_letters`
    /// with their position `line N` and the parse error; `time_of` gives each record's
    /// event time, and watermarks trail the highest one seen by `out_of_orderness` ms.
    /// A record whose event time is outside `0..=`[`MAX_EVENT_TIME_MS`] is a dead letter
    /// too. The stream ends ([`Msg::End`](crate::dataflow::Msg::End)) at the end of the
    /// file.
    ///
    /// [`MAX_EVENT_TIME_MS`]: crate::dataflow::MAX_EVENT_TIME_MS
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn source_file<T: Decode + Data>(
        &self,
        name: &str,
        path: impl Into<PathBuf>,
        format: FileFormat,
        out_of_orderness: Time,
        time_of: impl Fn(&T) -> Time + Send + Sync + 'static,
        dead_letters: DeadLetterSink,
    ) -> io::Result<Stream<T>> {
        let path = path.into();
        let file = File::open(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open the source file {}: {e}", path.display()),
            )
        })?;
        let reader = Arc::new(Mutex::new(FileReader {
            file: Some(file),
            source: path.display().to_string(),
            format,
            framer: LineFramer::with_max_line(DEFAULT_MAX_FRAME),
            lines: VecDeque::new(),
            framed: Vec::new(),
            chunk: vec![0; CHUNK_BYTES],
            line: 0,
            seen_content: false,
            lettered_through: 0,
            letters: dead_letters,
            time_of: Arc::new(time_of),
            _records: PhantomData,
        }));
        Ok(self
            .source(name, out_of_orderness, Pacing::Unpaced, move |_, _| {
                FileRecords {
                    reader: reader.clone(),
                }
            })
            .set_parallelism(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::KeyedRecord;

    fn reader(text: &[u8], format: Format, letters: &DeadLetterSink) -> Vec<KeyedRecord> {
        let dir = std::env::temp_dir().join(format!("dirigo-file-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{format:?}-{}.txt", text.len()));
        std::fs::write(&path, text).unwrap();
        let mut reader = FileReader::<KeyedRecord> {
            file: Some(File::open(&path).unwrap()),
            source: "f".to_owned(),
            format,
            framer: LineFramer::with_max_line(32),
            lines: VecDeque::new(),
            framed: Vec::new(),
            // A tiny chunk: lines cross chunk boundaries.
            chunk: vec![0; 5],
            line: 0,
            seen_content: false,
            lettered_through: 0,
            letters: letters.clone(),
            time_of: Arc::new(|r: &KeyedRecord| r.time),
            _records: PhantomData,
        };
        let mut out = Vec::new();
        while let Some((time, record)) = reader.next_record() {
            assert_eq!(time, record.time);
            out.push(record);
        }
        assert!(reader.next_record().is_none());
        let _ = std::fs::remove_file(&path);
        out
    }

    #[test]
    fn csv_lines_header_blank_and_bad() {
        let letters = DeadLetterSink::in_memory();
        let text = b"\n key , value ,time\r\n1,2,3\n\n  \nx,2,3\nkey,value,time\n4,5,6\r\n1,2\n\
            9999999999999999999999999999999999999,1,1\n7,8,9";
        let records = reader(text, Format::Csv, &letters);
        assert_eq!(
            records,
            vec![
                KeyedRecord {
                    key: 1,
                    value: 2,
                    time: 3
                },
                KeyedRecord {
                    key: 4,
                    value: 5,
                    time: 6
                },
                KeyedRecord {
                    key: 7,
                    value: 8,
                    time: 9
                }
            ]
        );
        let lines = letters.lines();
        assert_eq!(letters.count(), 4, "{lines:?}");
        assert!(lines[0].contains(r#""position":"line 6""#), "{}", lines[0]);
        assert!(lines[0].contains("field 1 (key)"), "{}", lines[0]);
        // A header after the first line is a bad record.
        assert!(lines[1].contains(r#""position":"line 7""#), "{}", lines[1]);
        assert!(lines[2].contains(r#""position":"line 9""#), "{}", lines[2]);
        assert!(lines[2].contains("expected 3 fields"), "{}", lines[2]);
        assert!(lines[3].contains(r#""position":"line 10""#), "{}", lines[3]);
        assert!(lines[3].contains("at most 32 bytes"), "{}", lines[3]);
    }

    #[test]
    fn json_lines_and_sink_handle() {
        let letters = DeadLetterSink::in_memory();
        let text = b"{\"key\":1,\"value\":2,\"time\":3}\n{\"key\":1,\n\xff\n";
        let records = reader(text, Format::Json, &letters);
        assert_eq!(records.len(), 1);
        assert_eq!(letters.count(), 2);
        assert!(letters.lines()[1].contains("UTF-8"));
        assert!(letters.path().is_none());
        letters.flush().unwrap();
        let shared = letters.clone();
        shared.record("s", "p", "r", b"x");
        assert_eq!(letters.count(), 3);
        assert_eq!(letters.failed_writes(), 0);
    }

    #[test]
    fn a_time_out_of_range_is_a_dead_letter_and_the_file_goes_on() {
        let letters = DeadLetterSink::in_memory();
        let max = crate::dataflow::MAX_EVENT_TIME_MS;
        let text = format!(
            "1,1,1\n2,2,{}\n3,3,{max}\n4,4,{}\n5,5,5\n",
            u64::MAX,
            max + 1
        );
        let records = reader(text.as_bytes(), Format::Csv, &letters);
        assert_eq!(
            records.iter().map(|r| r.key).collect::<Vec<_>>(),
            vec![1, 3, 5]
        );
        let lines = letters.lines();
        assert_eq!(letters.count(), 2, "{lines:?}");
        assert!(lines[0].contains(r#""position":"line 2""#), "{}", lines[0]);
        assert!(lines[0].contains("event time 18446744073709551615 ms is out of range"));
        assert!(lines[1].contains(r#""position":"line 4""#), "{}", lines[1]);
    }
}
