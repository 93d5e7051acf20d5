//! Apps over typed rows: a source with a `schema` (and what becomes of its late rows,
//! `late`), or several, each named; operators by field (`filter` with `where`, `select`
//! with `fields`, `key` with `by`, `window` and the running `aggregate` with
//! `aggregates` and `having`, `top`, `join`, `union`) and a sink that writes chosen
//! fields as JSON lines or CSV.
//!
//! [`check`] runs when a configuration is loaded: it plans every typed app — each
//! operator's input and output schema — and type-checks every expression, so that a
//! mistake inside an expression string is reported as `FILE:LINE:COLUMN` of the very
//! character, through [`literal`]. [`build`] turns a checked app into a dataflow.
//! The TOML keys themselves are declared with the others, in `crate::config`; their
//! value types are here ([`SchemaConfig`], [`NamedExprs`]).

mod build;
pub mod literal;
mod plan;
mod toml_types;

pub use build::{build, build_over_events};
pub(crate) use build::{sink_fields, sink_rows};
pub use plan::{check, infer_note};
pub use toml_types::{NamedExprs, SchemaConfig};
#[cfg(test)]
mod tests;
