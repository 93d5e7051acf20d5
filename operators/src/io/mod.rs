//! Building blocks for sources and sinks: pure, synchronous pieces that the runtime's
//! source and sink operators are wired from. Nothing here does I/O on the reactor or
//! knows about actors; each piece is deterministic where it generates data.
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
//!   ([`LengthFramer`]).

pub mod dead_letter;
pub mod generator;
pub mod keys;
pub mod parse;
pub mod shape;

pub use dead_letter::DeadLetters;
pub use generator::{Generator, GeneratorSpec, KeyedRecord};
pub use keys::{KeyDist, KeySampler};
pub use parse::{decode_line, is_csv_header, Decode, Format, LengthFramer, LineFramer};
pub use shape::{LoadShape, Schedule};
