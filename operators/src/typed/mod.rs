//! Typed rows over a schema, and the SQL expressions and operators over them: what a
//! TOML pipeline over the user's own records is built from.
//!
//! - [`value`](Value): the field types ([`Type`]) and values ([`Value`], with SQL's NULL);
//!   a [`Row`] is one value per field;
//! - [`Schema`]: a stream's fields, and decoding a JSON or CSV record into a row;
//! - [`Expr`]: SQL expressions, type-checked against a schema and compiled into closures
//!   ([`Compiled`], [`Predicate`]);
//! - [`aggregate`]: the named aggregates of windows (`count()`, `sum(x)`, …) and their
//!   mergeable accumulators; [`running`]: the same aggregates per key over the whole
//!   stream, put out as they change;
//! - [`join`]: the windowed join of two streams of rows on key expressions; [`extreme`]:
//!   the join of rows with their window's `max` or `min` of a field, without buffering
//!   every row;
//! - [`source`]: a file source of typed rows; [`connector`]: typed rows from the TCP and
//!   NATS sources, decoded as the file source decodes them; [`output`]: rows with their
//!   field names for JSON-lines sinks, and a CSV sink.
//!
//! Rows travel through the ordinary operators (`filter`, `map`, `window`): keyed state
//! is keyed by a row of key values, and the windows' accumulators are rkyv-archivable,
//! so lessees and their merges work on typed pipelines as on any other.

pub mod aggregate;
pub mod connector;
pub(crate) mod decode;
mod expr;
pub mod extreme;
pub mod join;
mod key;
pub mod nexmark;
pub mod ops;
pub mod output;
pub mod running;
mod schema;
pub mod source;
mod value;

pub use expr::{
    article, Compiled, EvalError, Expr, ExprError, JoinKeys, Predicate, MAX_DEPTH,
    MAX_EXPRESSION_BYTES,
};
pub use key::{sort_image, RowKey};
pub use schema::{Field, Schema, SchemaRef};
pub use value::{Row, Type, Value};
