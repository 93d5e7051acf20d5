//! The decode step of the connector sources: how one line, frame or message of a TCP
//! connection or a NATS stream becomes a record with its event time. The sources'
//! readers are generic over it ([`PayloadDecoder`]): keyed records decode with
//! [`Decode`] and take their time from the source's `time_of` ([`KeyedPayloads`]);
//! typed rows decode with a schema and take their time from one of their fields
//! (`crate::typed::decode::RowDecoder`).

use std::marker::PhantomData;

use crate::dataflow::{check_event_time, Time};
use crate::io::file::{decode_text_line, Line, TimeOf};
use crate::io::parse::{Decode, Format};

/// Turns the lines, frames or messages of one input (a connection, a partition of a
/// stream) into records with their event times. A source keeps one as a prototype and
/// clones it for each input, so that what one input's first line says (a CSV header)
/// does not carry over to another.
pub(crate) trait PayloadDecoder<T>: Clone + Send + 'static {
    /// Decodes one line, frame or message: a record with its event time (within
    /// `0..=MAX_EVENT_TIME_MS`), nothing to decode (a blank line, or a CSV header first
    /// on its input), or why it is not a record.
    fn decode(&mut self, payload: &[u8]) -> Line<(Time, T)>;

    /// A line that could not be framed (too long) came: it counts as the input's first,
    /// so no CSV header may follow.
    fn content_seen(&mut self);
}

/// Keyed records: decoded with [`Decode`] in a [`Format`], timed by `time_of`.
pub(crate) struct KeyedPayloads<T> {
    format: Format,
    time_of: TimeOf<T>,
    /// Whether no non-blank line came yet and a CSV header may come.
    header_allowed: bool,
    _records: PhantomData<fn() -> T>,
}

impl<T> Clone for KeyedPayloads<T> {
    fn clone(&self) -> Self {
        Self {
            format: self.format,
            time_of: self.time_of.clone(),
            header_allowed: self.header_allowed,
            _records: PhantomData,
        }
    }
}

impl<T> KeyedPayloads<T> {
    /// Records in `format`, timed by `time_of`; with `header`, a CSV header may be an
    /// input's first non-blank line (and is skipped).
    pub(crate) fn new(format: Format, time_of: TimeOf<T>, header: bool) -> Self {
        Self {
            format,
            time_of,
            header_allowed: header,
            _records: PhantomData,
        }
    }
}

impl<T: Decode + 'static> PayloadDecoder<T> for KeyedPayloads<T> {
    fn decode(&mut self, payload: &[u8]) -> Line<(Time, T)> {
        let first = self.header_allowed;
        match decode_text_line::<T>(payload, self.format, first) {
            Line::Record(record) => {
                self.header_allowed = false;
                match check_event_time((self.time_of)(&record)) {
                    Ok(time) => Line::Record((time, record)),
                    Err(reason) => Line::Bad(reason),
                }
            }
            Line::Skipped => {
                self.header_allowed &= payload.iter().all(u8::is_ascii_whitespace);
                Line::Skipped
            }
            Line::Bad(reason) => {
                self.header_allowed = false;
                Line::Bad(reason)
            }
        }
    }

    fn content_seen(&mut self) {
        self.header_allowed = false;
    }
}
