//! Rows on their way out: [`NamedRow`], a row with its field names, which a JSON-lines
//! sink writes as one object per line, and the CSV sink ([`Stream::sink_csv`]).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use dirigo_runtime::Nanos;

use super::value::{Row, Value};
use crate::dataflow::{Stream, Time};
use crate::sink::{Delivery, SinkWriter};

/// A row with the names of its fields: serialized as a JSON object, fields in order.
///
/// ```
/// use std::sync::Arc;
/// use dirigo_operators::typed::output::NamedRow;
/// use dirigo_operators::typed::Value;
///
/// let names: Arc<[String]> = vec!["card".to_string(), "n".to_string()].into();
/// let row = NamedRow { names, values: vec![Value::Str("c17".into()), Value::I64(3)] };
/// assert_eq!(serde_json::to_string(&row).unwrap(), r#"{"card":"c17","n":3}"#);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NamedRow {
    /// The field names.
    pub names: Arc<[String]>,
    /// The values, one per name.
    pub values: Vec<Value>,
}

impl serde::Serialize for NamedRow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.names.len()))?;
        for (name, value) in self.names.iter().zip(&self.values) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Where a CSV sink's partitions write, shared by them.
struct CsvOut {
    file: File,
    path: String,
    /// The first write error; nothing is written after it.
    broken: Option<String>,
}

impl CsvOut {
    /// Writes whole lines; `Err` with the reason once a write failed.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), String> {
        if let Some(error) = &self.broken {
            return Err(error.clone());
        }
        if let Err(error) = self.file.write_all(bytes) {
            let message = format!("cannot write to {}: {error}", self.path);
            tracing::warn!("{message}; its output is counted as failed from now on");
            self.broken = Some(message.clone());
            return Err(message);
        }
        Ok(())
    }
}

/// One CSV sink partition: rows buffered as lines, written at least at every frontier.
struct CsvWriter {
    out: Arc<Mutex<CsvOut>>,
    /// The positions of the written fields in each row.
    fields: Arc<[usize]>,
    buffer: Vec<u8>,
    pending: u64,
    delivery: Delivery,
}

/// One CSV field: quoted (with doubled quotes) when it holds a comma, a quote or a line
/// break.
fn csv_field(out: &mut Vec<u8>, value: &Value) {
    let text = value.to_string();
    if text.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

impl CsvWriter {
    fn drain(&mut self) {
        if self.pending == 0 {
            return;
        }
        let result = self
            .out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(&self.buffer);
        match result {
            Ok(()) => self.delivery.written += self.pending,
            Err(error) => {
                self.delivery.failed += self.pending;
                self.delivery.error.get_or_insert(error);
            }
        }
        self.pending = 0;
        self.buffer.clear();
    }
}

impl SinkWriter<Row> for CsvWriter {
    fn write(&mut self, _: Time, row: Row, _: Nanos) {
        for (index, &at) in self.fields.iter().enumerate() {
            if index > 0 {
                self.buffer.push(b',');
            }
            csv_field(&mut self.buffer, row.get(at).unwrap_or(&Value::Null));
        }
        self.buffer.push(b'\n');
        self.pending += 1;
        if self.buffer.len() >= 64 * 1024 {
            self.drain();
        }
    }
    fn frontier(&mut self, _: Time) {
        self.drain();
    }
    fn finish(&mut self) {
        self.drain();
    }
    fn take_delivery(&mut self) -> Delivery {
        std::mem::take(&mut self.delivery)
    }
}

impl Stream<Row> {
    /// Writes the fields at `fields` of every row as one CSV line to the file at `path`,
    /// after a header line of their `names`. NULL is an empty field; a field with a
    /// comma, a quote or a line break is quoted. Every write is checked: after the first
    /// failure nothing more is written and every later row counts as failed.
    ///
    /// # Errors
    /// When the file cannot be created or its header written.
    pub fn sink_csv(
        &self,
        name: &str,
        path: &Path,
        names: &[String],
        fields: Vec<usize>,
    ) -> io::Result<()> {
        let mut file = File::create(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
        })?;
        let header: Vec<Value> = names.iter().map(|n| Value::Str(n.clone())).collect();
        let mut line = Vec::new();
        for (index, value) in header.iter().enumerate() {
            if index > 0 {
                line.push(b',');
            }
            csv_field(&mut line, value);
        }
        line.push(b'\n');
        file.write_all(&line).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot write to {}: {e}", path.display()))
        })?;
        let out = Arc::new(Mutex::new(CsvOut {
            file,
            path: path.display().to_string(),
            broken: None,
        }));
        let fields: Arc<[usize]> = fields.into();
        self.sink(name, move |_| CsvWriter {
            out: out.clone(),
            fields: fields.clone(),
            buffer: Vec::new(),
            pending: 0,
            delivery: Delivery::default(),
        });
        Ok(())
    }
}
