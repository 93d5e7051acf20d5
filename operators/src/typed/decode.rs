//! Decoding one line of JSON or CSV (from a file, a TCP connection or a NATS message)
//! into a typed [`Row`] of a [`Schema`] and its event time, read from one of its fields:
//! the one decode step the typed file, TCP and NATS sources share.
//!
//! Blank lines are skipped. With a CSV header allowed (files and TCP connections, not
//! NATS messages, each of which is one record), a first non-blank line that names the
//! schema's fields is skipped and gives their order in the lines after it. A line that
//! is not a row says why: invalid UTF-8, a value that does not fit its field's type (see
//! [`Schema`]), or an event time that is NULL, negative or above
//! [`MAX_EVENT_TIME_MS`](crate::dataflow::MAX_EVENT_TIME_MS).

use std::sync::Arc;

use super::schema::Schema;
use super::value::{Row, Value};
use crate::dataflow::{check_event_time, Time};
use crate::io::file::Line;
use crate::io::parse::csv_fields;
use crate::io::payload::PayloadDecoder;
use crate::io::Format;

/// Decodes the lines of one input into timed rows (see the [module docs](self)).
#[derive(Clone, Debug)]
pub(crate) struct RowDecoder {
    format: Format,
    schema: Arc<Schema>,
    /// The field that gives the event time.
    time_field: usize,
    /// CSV: the position in a line of each schema field.
    order: Vec<usize>,
    /// Whether no non-blank line came yet and a CSV header may come.
    header_allowed: bool,
}

impl RowDecoder {
    /// Rows of `schema` in `format`, timed by the field at `time_field`; with `header`,
    /// the first non-blank line may be a CSV header.
    pub(crate) fn new(
        format: Format,
        schema: Arc<Schema>,
        time_field: usize,
        header: bool,
    ) -> Self {
        Self {
            format,
            order: (0..schema.len()).collect(),
            schema,
            time_field,
            header_allowed: header,
        }
    }

    /// The row of one line and its event time; `Ok(None)` for a line to skip.
    ///
    /// # Errors
    /// Why the line is not a row, for its dead letter.
    pub(crate) fn decode_row(&mut self, bytes: &[u8]) -> Result<Option<(Time, Row)>, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let first = std::mem::replace(&mut self.header_allowed, false);
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
}

impl PayloadDecoder<Row> for RowDecoder {
    fn decode(&mut self, payload: &[u8]) -> Line<(Time, Row)> {
        match self.decode_row(payload) {
            Ok(Some(timed)) => Line::Record(timed),
            Ok(None) => Line::Skipped,
            Err(reason) => Line::Bad(reason),
        }
    }

    fn content_seen(&mut self) {
        self.header_allowed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typed::Type;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            ("card", Type::String),
            ("ts", Type::Timestamp),
        ]))
    }

    #[test]
    fn a_header_only_where_allowed_and_only_first() {
        let mut decoder = RowDecoder::new(Format::Csv, schema(), 1, true);
        assert_eq!(decoder.decode_row(b"  ").unwrap(), None);
        assert_eq!(decoder.decode_row(b"ts,card").unwrap(), None);
        assert_eq!(
            decoder.decode_row(b"7,c1").unwrap(),
            Some((7, vec![Value::Str("c1".into()), Value::Timestamp(7)]))
        );
        assert!(
            decoder.decode_row(b"ts,card").is_err(),
            "a header only first"
        );
        let mut messages = RowDecoder::new(Format::Csv, schema(), 1, false);
        assert!(messages.decode_row(b"ts,card").is_err());
        let mut after_a_long_line = RowDecoder::new(Format::Csv, schema(), 1, true);
        after_a_long_line.content_seen();
        assert!(after_a_long_line.decode_row(b"card,ts").is_err());
    }

    #[test]
    fn event_times_must_be_set_and_in_range() {
        let mut decoder = RowDecoder::new(Format::Json, schema(), 1, false);
        let null = decoder.decode_row(br#"{"card":"c"}"#).unwrap_err();
        assert_eq!(null, "event time field ts: expected a time, found NULL");
        let negative = decoder.decode_row(br#"{"card":"c","ts":-1}"#).unwrap_err();
        assert!(
            negative.contains("expected 0 or more milliseconds"),
            "{negative}"
        );
        assert!(decoder
            .decode_row(br#"{"card":"c","ts":9223372036854775807}"#)
            .unwrap_err()
            .contains("out of range"));
        assert!(decoder.decode_row(b"\xff").unwrap_err().contains("UTF-8"));
    }
}
