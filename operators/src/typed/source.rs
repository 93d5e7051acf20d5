//! A file source of typed rows: JSON lines or CSV decoded with a [`Schema`], each row's
//! event time read from one of its fields.
//!
//! Like the keyed-record file source, it reads in chunks, frames lines of at most
//! [`DEFAULT_MAX_FRAME`] bytes, skips blank lines (and, for CSV, a first line that names
//! the schema's fields, which then also gives their order), and sends every line it
//! cannot turn into a row to the dead letters with its line number and reason: a value
//! that does not fit its field's type, or an event time that is NULL or outside
//! `0..=`[`MAX_EVENT_TIME_MS`](crate::dataflow::MAX_EVENT_TIME_MS). One partition reads
//! the file; the stream ends at its end.
//!
//! Late rows ([`LateRows`], see [`crate::io::late`]): with [`LateRows::DeadLetter`] a row
//! whose time is below the highest event time read before it less the out-of-orderness
//! bound is a dead letter, with its line and that reason, and no operator sees it. In a
//! file that depends on the file's order alone, so it is the same in every run; and
//! every row passed on is on time for every operator downstream.
//!
//! Decoding a line into a row is `typed::decode`'s, shared with the typed TCP
//! and NATS sources ([`connector`](super::connector)).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::decode::RowDecoder;
use super::schema::Schema;
use super::value::Row;
use crate::dataflow::{AppBuilder, Stream, Time};
use crate::io::late::LateCheck;
pub use crate::io::late::LateRows;
use crate::io::parse::DEFAULT_MAX_FRAME;
use crate::io::payload::PayloadDecoder;
use crate::io::{DeadLetterSink, Format, LineFramer};
use crate::source::{Pacing, RecordSource};

/// Bytes read from the file at a time.
const CHUNK_BYTES: usize = 64 * 1024;

struct RowReader {
    file: Option<File>,
    source: String,
    decoder: RowDecoder,
    framer: LineFramer,
    lines: VecDeque<Result<Vec<u8>, String>>,
    framed: Vec<Result<Vec<u8>, String>>,
    chunk: Vec<u8>,
    line: u64,
    letters: DeadLetterSink,
    late: LateCheck,
}

impl RowReader {
    fn next_row(&mut self) -> Option<(Time, Row)> {
        loop {
            while let Some(framed) = self.lines.pop_front() {
                self.line += 1;
                match framed {
                    Ok(bytes) => match self.decoder.decode_row(&bytes) {
                        Ok(Some((time, row))) => match self.late.admit(time) {
                            Ok(()) => return Some((time, row)),
                            Err(reason) => {
                                let position = format!("line {}", self.line);
                                self.letters
                                    .record(&self.source, &position, &reason, &bytes);
                            }
                        },
                        Ok(None) => {}
                        Err(reason) => {
                            let position = format!("line {}", self.line);
                            self.letters
                                .record(&self.source, &position, &reason, &bytes);
                        }
                    },
                    Err(reason) => {
                        self.decoder.content_seen();
                        let position = format!("line {}", self.line);
                        self.letters.record(&self.source, &position, &reason, b"");
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

struct Rows {
    reader: Arc<Mutex<RowReader>>,
}

impl RecordSource<Row> for Rows {
    fn next_record(&mut self) -> Option<(Time, Row)> {
        self.reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_row()
    }
}

/// Where a typed file source reads and how.
pub struct RowFile {
    /// The file.
    pub path: PathBuf,
    /// JSON lines or CSV.
    pub format: Format,
    /// The rows' fields.
    pub schema: Arc<Schema>,
    /// The field (a timestamp or an integer of milliseconds) that gives each row's
    /// event time.
    pub time_field: usize,
    /// How far watermarks trail the highest event time seen, ms.
    pub out_of_orderness: Time,
    /// What becomes of a row further behind than that.
    pub late: LateRows,
}

impl AppBuilder {
    /// A source of the typed rows of a file (see the [module docs](self)).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use dirigo_operators::dataflow::{AppBuilder, Msg};
    /// use dirigo_operators::io::{DeadLetterSink, Format};
    /// use dirigo_operators::typed::source::{LateRows, RowFile};
    /// use dirigo_operators::typed::{Schema, Type, Value};
    /// use dirigo_runtime::Runtime;
    ///
    /// let path = std::env::temp_dir().join(format!("rows-doc-{}.jsonl", std::process::id()));
    /// std::fs::write(&path, "{\"card\":\"c1\",\"ts\":5}\n{\"card\":7,\"ts\":6}\n").unwrap();
    /// let schema = Arc::new(Schema::new(vec![("card", Type::String), ("ts", Type::Timestamp)]));
    /// let letters = DeadLetterSink::in_memory();
    /// let app = AppBuilder::new(0, "rows");
    /// let file = RowFile {
    ///     path: path.clone(),
    ///     format: Format::Json,
    ///     schema,
    ///     time_field: 1,
    ///     out_of_orderness: 0,
    ///     late: LateRows::Pass,
    /// };
    /// let out = app.source_rows("payments", file, letters.clone()).unwrap().collect("out");
    /// let app = app.build();
    /// let runtime = app.install(Runtime::<Msg>::builder().shards(1)).build().unwrap();
    /// app.start(&runtime.ingress());
    /// assert!(app.wait(Duration::from_secs(10)));
    /// assert_eq!(out.take(), vec![vec![Value::Str("c1".into()), Value::Timestamp(5)]]);
    /// assert_eq!(letters.count(), 1);
    /// runtime.shutdown();
    /// # std::fs::remove_file(path).unwrap();
    /// ```
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn source_rows(
        &self,
        name: &str,
        file: RowFile,
        dead_letters: DeadLetterSink,
    ) -> io::Result<Stream<Row>> {
        let opened = File::open(&file.path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open the source file {}: {e}", file.path.display()),
            )
        })?;
        let reader = Arc::new(Mutex::new(RowReader {
            file: Some(opened),
            source: file.path.display().to_string(),
            decoder: RowDecoder::new(file.format, file.schema, file.time_field, true),
            framer: LineFramer::with_max_line(DEFAULT_MAX_FRAME),
            lines: VecDeque::new(),
            framed: Vec::new(),
            chunk: vec![0; CHUNK_BYTES],
            line: 0,
            letters: dead_letters,
            late: LateCheck::new(file.late, file.out_of_orderness),
        }));
        Ok(self
            .source(name, file.out_of_orderness, Pacing::Unpaced, move |_, _| {
                Rows {
                    reader: reader.clone(),
                }
            })
            .set_parallelism(1))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dataflow::Msg;
    use crate::typed::{Type, Value};
    use dirigo_runtime::Runtime;

    /// The rows a source of `text` passes on with `late`, and its dead letters.
    fn read(text: &str, late: LateRows) -> (Vec<i64>, DeadLetterSink) {
        let path =
            std::env::temp_dir().join(format!("rows-late-{}-{late:?}.jsonl", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let schema = Arc::new(Schema::new(vec![("ts", Type::Timestamp)]));
        let letters = DeadLetterSink::in_memory();
        let app = AppBuilder::new(0, "late");
        let file = RowFile {
            path: path.clone(),
            format: Format::Json,
            schema,
            time_field: 0,
            out_of_orderness: 10,
            late,
        };
        let out = app
            .source_rows("rows", file, letters.clone())
            .unwrap()
            .collect("out");
        let app = app.build();
        let runtime = app
            .install(Runtime::<Msg>::builder().shards(1))
            .build()
            .unwrap();
        app.start(&runtime.ingress());
        assert!(app.wait(Duration::from_secs(10)));
        runtime.shutdown();
        std::fs::remove_file(path).unwrap();
        let times = out
            .take()
            .into_iter()
            .map(|row| match row[0] {
                Value::Timestamp(t) => t,
                _ => panic!("a timestamp"),
            })
            .collect();
        (times, letters)
    }

    #[test]
    fn rows_behind_the_watermark_are_dead_letters_when_told() {
        // 15 is 15 ms behind 30 (more than the bound of 10): late. 20 is not; 19 after
        // it is (the highest before it is still 30).
        let text = "{\"ts\":5}\n{\"ts\":30}\n{\"ts\":15}\n{\"ts\":20}\n{\"ts\":19}\n{\"ts\":40}\n";
        let (passed, letters) = read(text, LateRows::Pass);
        assert_eq!(passed, [5, 30, 15, 20, 19, 40]);
        assert_eq!(letters.count(), 0);
        let (passed, letters) = read(text, LateRows::DeadLetter);
        assert_eq!(passed, [5, 30, 20, 40]);
        assert_eq!(letters.count(), 2);
        let lines = letters.lines();
        assert!(lines[0].contains("\"position\":\"line 3\""), "{}", lines[0]);
        assert!(
            lines[0].contains(
                "late: event time 15 ms is behind the watermark, 20 ms (the highest event \
                 time before it, 30 ms, less out_of_orderness_ms, 10)"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("\"position\":\"line 5\""), "{}", lines[1]);
    }
}
