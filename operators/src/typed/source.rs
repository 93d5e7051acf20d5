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

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::schema::Schema;
use super::value::{Row, Value};
use crate::dataflow::{check_event_time, AppBuilder, Stream, Time};
use crate::io::parse::{csv_fields, DEFAULT_MAX_FRAME};
use crate::io::{DeadLetterSink, Format, LineFramer};
use crate::source::{Pacing, RecordSource};

/// Bytes read from the file at a time.
const CHUNK_BYTES: usize = 64 * 1024;

struct RowReader {
    file: Option<File>,
    source: String,
    format: Format,
    schema: Arc<Schema>,
    /// The field that gives the event time.
    time_field: usize,
    /// CSV: the position in a line of each schema field.
    order: Vec<usize>,
    framer: LineFramer,
    lines: VecDeque<Result<Vec<u8>, String>>,
    framed: Vec<Result<Vec<u8>, String>>,
    chunk: Vec<u8>,
    line: u64,
    seen_content: bool,
    letters: DeadLetterSink,
}

impl RowReader {
    /// The row of one line; `Ok(None)` for a line to skip.
    fn decode(&mut self, bytes: &[u8]) -> Result<Option<(Time, Row)>, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let first = !std::mem::replace(&mut self.seen_content, true);
        let text = std::str::from_utf8(bytes).map_err(|e| {
            format!(
                "expected UTF-8 text, found an invalid byte sequence at byte {}",
                e.valid_up_to()
            )
        })?;
        let text = text.trim_end_matches('\r');
        let row = match self.format {
            Format::Json => self.schema.decode_json(text)?,
            Format::Csv => {
                let text = if first {
                    text.trim_start_matches('\u{feff}')
                } else {
                    text
                };
                let fields = csv_fields(text);
                if first {
                    if let Some(order) = self.schema.csv_header_order(&fields) {
                        self.order = order;
                        return Ok(None);
                    }
                }
                self.schema.decode_csv(&fields, &self.order)?
            }
        };
        let name = &self.schema.fields()[self.time_field].name;
        let time = match &row[self.time_field] {
            Value::Timestamp(t) | Value::I64(t) => u64::try_from(*t).map_err(|_| {
                format!("event time field {name}: expected 0 or more milliseconds, found {t}")
            })?,
            Value::U64(t) => *t,
            _ => {
                return Err(format!(
                    "event time field {name}: expected a time, found NULL"
                ))
            }
        };
        Ok(Some((check_event_time(time)?, row)))
    }

    fn next_row(&mut self) -> Option<(Time, Row)> {
        loop {
            while let Some(framed) = self.lines.pop_front() {
                self.line += 1;
                match framed {
                    Ok(bytes) => match self.decode(&bytes) {
                        Ok(Some(row)) => return Some(row),
                        Ok(None) => {}
                        Err(reason) => {
                            let position = format!("line {}", self.line);
                            self.letters
                                .record(&self.source, &position, &reason, &bytes);
                        }
                    },
                    Err(reason) => {
                        self.seen_content = true;
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
}

impl AppBuilder {
    /// A source of the typed rows of a file (see the [module docs](self)).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use dirigo_operators::dataflow::{AppBuilder, Msg};
    /// use dirigo_operators::io::{DeadLetterSink, Format};
    /// use dirigo_operators::typed::source::RowFile;
    /// use dirigo_operators::typed::{Schema, Type, Value};
    /// use dirigo_runtime::Runtime;
    ///
    /// let path = std::env::temp_dir().join(format!("rows-doc-{}.jsonl", std::process::id()));
    /// std::fs::write(&path, "{\"card\":\"c1\",\"ts\":5}\n{\"card\":7,\"ts\":6}\n").unwrap();
    /// let schema = Arc::new(Schema::new(vec![("card", Type::String), ("ts", Type::Timestamp)]));
    /// let letters = DeadLetterSink::in_memory();
    /// let app = AppBuilder::new(0, "rows");
    /// let file = RowFile { path: path.clone(), format: Format::Json, schema, time_field: 1, out_of_orderness: 0 };
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
        let order = (0..file.schema.len()).collect();
        let reader = Arc::new(Mutex::new(RowReader {
            file: Some(opened),
            source: file.path.display().to_string(),
            format: file.format,
            schema: file.schema,
            time_field: file.time_field,
            order,
            framer: LineFramer::with_max_line(DEFAULT_MAX_FRAME),
            lines: VecDeque::new(),
            framed: Vec::new(),
            chunk: vec![0; CHUNK_BYTES],
            line: 0,
            seen_content: false,
            letters: dead_letters,
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
