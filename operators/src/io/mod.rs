//! Sources and sinks that do I/O, and the building blocks they are wired from.
//!
//! The building blocks are pure, synchronous pieces: none does I/O on the reactor or
//! knows about actors, and each is deterministic where it generates data.
//!
//! - [`shape`]: load shapes for open-loop sources ([`LoadShape`]) and the [`Schedule`] of
//!   intended send times they give;
//! - [`keys`]: key distributions ([`KeyDist`], uniform or Zipf) and their seeded
//!   [`KeySampler`];
//! - [`generator`]: the synthetic [`KeyedRecord`] and the [`Generator`] that pairs a
//!   schedule with keys, values and event times ([`GeneratorSpec`]);
//! - [`dead_letter`]: [`DeadLetters`], one JSON line per malformed input record;
//! - [`parse`]: decoding records from CSV or JSON lines ([`Decode`], [`decode_line`]) and
//!   framing byte streams into lines ([`LineFramer`]) or length-prefixed frames
//!   ([`LengthFramer`]);
//! - [`late`]: what a source does with records behind its watermark ([`LateRows`]).
//!
//! And the sources and sinks built from them, which do I/O:
//!
//! - [`file`](mod@file): CSV and JSON-lines file sources ([`AppBuilder::source_file`]) and the shared
//!   dead-letter handle they record malformed lines in ([`DeadLetterSink`]);
//! - [`tcp`]: TCP sources, line-framed or length-prefixed, served from a glommio thread of
//!   their own ([`AppBuilder::source_tcp`], [`TcpSourceHandle`]), and a JSON-lines TCP
//!   sink ([`Stream::sink_tcp`](crate::dataflow::Stream::sink_tcp));
//! - [`nats`]: a NATS JetStream source and sink, served from a thread of their own
//!   ([`AppBuilder::source_nats`], [`Stream::sink_nats`](crate::dataflow::Stream::sink_nats)).
//!
//! [`AppBuilder::source_file`]: crate::dataflow::AppBuilder::source_file
//! [`AppBuilder::source_tcp`]: crate::dataflow::AppBuilder::source_tcp
//! [`AppBuilder::source_nats`]: crate::dataflow::AppBuilder::source_nats

pub mod dead_letter;
pub mod file;
pub mod generator;
pub mod keys;
pub mod late;
pub mod nats;
pub mod parse;
pub(crate) mod payload;
pub mod shape;
pub mod tcp;

pub use dead_letter::{DeadLetters, LetterLimits, LetterMark};
pub use file::{DeadLetterSink, FileFormat};
pub use generator::{Generator, GeneratorSpec, KeyedRecord};
pub use keys::{KeyDist, KeySampler};
pub use late::LateRows;
pub use parse::{decode_line, is_csv_header, Decode, Format, LengthFramer, LineFramer};
pub use shape::{LoadShape, Schedule};
pub use tcp::{Framing, TcpSourceHandle, TcpSourceOptions};
