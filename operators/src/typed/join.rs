//! The windowed join of two streams of typed rows ([`RowJoin`],
//! [`Stream::join_rows`]): per window, every pair of a left row and a right row whose
//! key expressions are equal, as one row of both rows' fields and the window's bounds,
//! optionally kept by a condition and replaced by computed fields.
//!
//! It is the windowed-join operator of [`crate::window`]: both sides are buffered in
//! mergeable window state (lessees fold rows into partial windows, merged back through
//! their rkyv archive), and each window's pairs are built when it fires, from both
//! sides sorted, so that the rows and their order are the same however the work was
//! split. A window with `l` left and `r` right rows of one key puts out up to `l × r`
//! rows: that product is the bound of what one firing emits for that key.

use std::sync::Arc;

use super::expr::{Compiled, Predicate};
use super::key::RowKey;
use super::ops::{fields, RowErrors};
use super::value::{Row, Value};
use crate::dataflow::{KeyedStream, Stream, Time};
use crate::window::WindowSpec;

/// A windowed join of typed rows.
pub struct RowJoin {
    /// The windows.
    pub spec: WindowSpec,
    /// The key expressions over the left rows.
    pub left_key: Vec<Compiled>,
    /// The key expressions over the right rows, position by position.
    pub right_key: Vec<Compiled>,
    /// Over the joined row (left fields, right fields, `window_start`, `window_end`):
    /// the pairs to keep.
    pub condition: Option<Predicate>,
    /// Over the joined row: the output fields (default: the joined row itself).
    pub fields: Option<Vec<Compiled>>,
}

/// The key of `row` under `key`, or the error of the first expression that fails.
fn key_of(key: &[Compiled], row: &[Value]) -> Result<Row, super::EvalError> {
    key.iter()
        .map(|expr| expr.eval(row).map(std::borrow::Cow::into_owned))
        .collect()
}

impl Stream<Row> {
    /// Joins this stream (the left input) with `right` per window of `join.spec`: each
    /// pair of rows in one window with equal keys (a NULL key matches nothing) gives a
    /// row. A row whose key cannot be computed goes to the dead letters.
    pub fn join_rows(
        &self,
        right: &Stream<Row>,
        name: &str,
        join: RowJoin,
        errors: RowErrors,
    ) -> Stream<Row> {
        let RowJoin {
            spec,
            left_key,
            right_key,
            condition,
            fields,
        } = join;
        let (left, right) = (
            keyed(self, &format!("{name}-left-keys"), left_key, errors.clone()),
            keyed(
                right,
                &format!("{name}-right-keys"),
                right_key,
                errors.clone(),
            ),
        );
        let pairs = Pairs {
            condition,
            fields,
            errors,
        };
        match (left, right) {
            (Keyed::One(left), Keyed::One(right)) => pairs.join(&left, &right, name, spec),
            (Keyed::Many(left), Keyed::Many(right)) => pairs.join(&left, &right, name, spec),
            // One key expression on each side: both are fields, or one is not and its
            // side is keyed by a row of one value; key the other alike.
            (Keyed::One(left), Keyed::Many(right)) => {
                pairs.join(&as_row_key(left), &right, name, spec)
            }
            (Keyed::Many(left), Keyed::One(right)) => {
                pairs.join(&left, &as_row_key(right), name, spec)
            }
        }
    }
}

/// A one-field key as a row of that one value.
fn as_row_key(keyed: KeyedStream<Row, Value>) -> KeyedStream<Row, Row> {
    let key = keyed.key.clone();
    keyed.stream.key_by(move |row: &Row| vec![key(row)])
}

/// What becomes of a window's pairs.
pub(super) struct Pairs {
    pub(super) condition: Option<Predicate>,
    pub(super) fields: Option<Vec<Compiled>>,
    pub(super) errors: RowErrors,
}

impl Pairs {
    fn join<K: RowKey>(
        self,
        left: &KeyedStream<Row, K>,
        right: &KeyedStream<Row, K>,
        name: &str,
        spec: WindowSpec,
    ) -> Stream<Row> {
        left.window_join(
            right,
            name,
            spec,
            move |key: &K, window, mut lefts: Vec<Row>, mut rights: Vec<Row>, out| {
                if key.has_null() || lefts.is_empty() || rights.is_empty() {
                    return;
                }
                lefts.sort_unstable();
                rights.sort_unstable();
                let bounds = [
                    Value::Timestamp(window.start as i64),
                    Value::Timestamp(window.end as i64),
                ];
                let time = window.end.saturating_sub(1);
                for left in &lefts {
                    for right in &rights {
                        let mut row = Vec::with_capacity(left.len() + right.len() + 2);
                        row.extend_from_slice(left);
                        row.extend_from_slice(right);
                        row.extend_from_slice(&bounds);
                        self.pair(time, row, out);
                    }
                }
            },
        )
    }

    /// `row`, a joined pair, kept by the condition and replaced by the fields.
    pub(super) fn pair(&self, time: Time, row: Row, out: &mut Vec<Row>) {
        if let Some(condition) = &self.condition {
            match condition.test(&row) {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => return self.errors.reject(time, &row, &error),
            }
        }
        match &self.fields {
            None => out.push(row),
            Some(fields) => match select(fields, &row) {
                Ok(selected) => out.push(selected),
                Err(error) => self.errors.reject(time, &row, &error),
            },
        }
    }
}

fn select(fields: &[Compiled], row: &[Value]) -> Result<Row, super::EvalError> {
    fields
        .iter()
        .map(|field| field.eval(row).map(std::borrow::Cow::into_owned))
        .collect()
}

/// `stream` keyed by `key`, and `then` called with it: keys of one field are that
/// field's value, others a row. Keys that are fields alone are read where the rows are
/// partitioned and buffered; otherwise an operator first drops (to the dead letters)
/// the rows whose key fails, so that computing it again cannot fail.
fn keyed(stream: &Stream<Row>, name: &str, key: Vec<Compiled>, errors: RowErrors) -> Keyed {
    let columns: Option<Vec<usize>> = key.iter().map(Compiled::as_column).collect();
    match columns.as_deref() {
        Some(&[at]) => return Keyed::One(stream.key_by(move |row: &Row| row[at].clone())),
        Some(_) => {
            let columns = columns.expect("fields");
            return Keyed::Many(stream.key_by(move |row: &Row| fields(&columns, row)));
        }
        None => {}
    }
    let key = Arc::new(key);
    let check = key.clone();
    Keyed::Many(
        stream
            .flat_map_timed(name, move |time, row: Row| match key_of(&check, &row) {
                Ok(_) => Some(row),
                Err(error) => {
                    errors.reject(time, &row, &error);
                    None
                }
            })
            .key_by(move |row: &Row| key_of(&key, row).unwrap_or_default()),
    )
}

/// A keyed side of a join.
enum Keyed {
    One(KeyedStream<Row, Value>),
    Many(KeyedStream<Row, Row>),
}
