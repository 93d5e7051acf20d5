//! The operators of typed pipelines, over streams of [`Row`]s: `filter` by a condition,
//! `select` computed fields, and a keyed `window` with named aggregates and a `having`
//! condition. A row whose expression fails at run time (an overflow, a `CAST` that
//! cannot convert) goes to the dead letters with the operator's name and the reason,
//! and the stream goes on.

use std::sync::Arc;

use super::aggregate::{Acc, Aggregates};
use super::expr::{Compiled, EvalError, Predicate};
use super::key::RowKey;
use super::value::{Row, Value};
use crate::dataflow::{Stream, Time};
use crate::io::DeadLetterSink;
use crate::window::WindowSpec;

/// Where an operator's failing rows go.
#[derive(Clone)]
pub struct RowErrors {
    letters: DeadLetterSink,
    operator: Arc<str>,
}

impl RowErrors {
    /// Failing rows of operator `operator` go to `letters`.
    pub fn new(letters: DeadLetterSink, operator: &str) -> Self {
        Self {
            letters,
            operator: operator.into(),
        }
    }

    /// Sends `row` (at event time `time`) to the dead letters for `error`.
    pub fn reject(&self, time: Time, row: &[Value], error: &EvalError) {
        let record = serde_json::to_vec(row).unwrap_or_default();
        self.letters.record(
            &format!("operator {}", self.operator),
            &format!("event time {time}"),
            &error.0,
            &record,
        );
    }

    /// Sends an output `row` the operator made (its `having` failed on it) to the dead
    /// letters for `error`.
    pub fn reject_output(&self, row: &[Value], error: &EvalError) {
        let record = serde_json::to_vec(row).unwrap_or_default();
        self.letters.record(
            &format!("operator {}", self.operator),
            "an output row",
            &error.0,
            &record,
        );
    }
}

/// A window over typed rows: the fields it is keyed by, its aggregates, and the
/// condition its output rows must meet.
pub struct RowWindow {
    /// The windows.
    pub spec: WindowSpec,
    /// The positions of the key fields in the input rows.
    pub key: Vec<usize>,
    /// The aggregates.
    pub aggregates: Aggregates,
    /// Over the output row (keys, aggregates, `window_start`, `window_end`).
    pub having: Option<Predicate>,
}

impl Stream<Row> {
    /// Keeps the rows where `condition` is `TRUE`, with the fields at `cleared` (those
    /// the condition reads and nothing after it does) made NULL.
    pub fn filter_rows(
        &self,
        name: &str,
        condition: Predicate,
        cleared: Vec<usize>,
        errors: RowErrors,
    ) -> Stream<Row> {
        self.flat_map_timed(name, move |time, mut row: Row| match condition.test(&row) {
            Ok(true) => {
                for &at in &cleared {
                    if let Some(value) = row.get_mut(at) {
                        *value = Value::Null;
                    }
                }
                Some(row)
            }
            Ok(false) => None,
            Err(error) => {
                errors.reject(time, &row, &error);
                None
            }
        })
    }

    /// Replaces each row by the values of `fields`, in order.
    pub fn select_rows(&self, name: &str, fields: Vec<Compiled>, errors: RowErrors) -> Stream<Row> {
        self.flat_map_timed(name, move |time, row: Row| {
            let mut out = Vec::with_capacity(fields.len());
            for field in &fields {
                match field.eval(&row) {
                    Ok(value) => out.push(value.into_owned()),
                    Err(error) => {
                        errors.reject(time, &row, &error);
                        return None;
                    }
                }
            }
            Some(out)
        })
    }

    /// Per key and window, one row: the key fields, the aggregates, `window_start` and
    /// `window_end` (timestamps), if it meets `having`.
    pub fn window_rows(&self, name: &str, window: RowWindow, errors: RowErrors) -> Stream<Row> {
        match *window.key.as_slice() {
            [at] => self.window_rows_by(name, window, errors, move |row: &Row| row[at].clone()),
            _ => {
                let key = window.key.clone();
                self.window_rows_by(name, window, errors, move |row: &Row| fields(&key, row))
            }
        }
    }

    fn window_rows_by<K: RowKey>(
        &self,
        name: &str,
        window: RowWindow,
        errors: RowErrors,
        key: impl Fn(&Row) -> K + Send + Sync + 'static,
    ) -> Stream<Row> {
        let RowWindow {
            spec,
            key: _,
            aggregates,
            having,
        } = window;
        let aggregates = Arc::new(aggregates);
        let (fold_aggs, emit_aggs) = (aggregates.clone(), aggregates.clone());
        let emit_errors = errors.clone();
        let width = aggregates.len() + 2;
        self.key_by(key).window(
            name,
            spec,
            move || aggregates.init(),
            move |accs: &mut Vec<Acc>, _, time, row: &Row| {
                // A failing row is left out of every aggregate (`Aggregates::fold`).
                if let Err(error) = fold_aggs.fold(accs, time, row) {
                    errors.reject(time, row, &error);
                }
            },
            |accs, other| Aggregates::merge(accs, other),
            move |key: &K, window, accs, out: &mut Vec<Row>| {
                let mut row = key.row_with_room(width);
                emit_aggs.finish_into(accs, &mut row);
                row.push(Value::Timestamp(window.start as i64));
                row.push(Value::Timestamp(window.end as i64));
                match having.as_ref().map(|having| having.test(&row)) {
                    None | Some(Ok(true)) => out.push(row),
                    Some(Ok(false)) => {}
                    Some(Err(error)) => {
                        emit_errors.reject(window.end.saturating_sub(1), &row, &error)
                    }
                }
            },
        )
    }
}

/// The values of the fields at `positions` of `row`.
pub(crate) fn fields(positions: &[usize], row: &[Value]) -> Row {
    positions.iter().map(|&at| row[at].clone()).collect()
}

/// Per key and window, the rows with the `k` highest values of an expression, ties
/// included: every row whose value is at least the `k`-th highest. NULL values never
/// rank.
pub struct RowTop {
    /// The windows.
    pub spec: WindowSpec,
    /// The positions of the key fields in the input rows.
    pub key: Vec<usize>,
    /// What rows are ranked by, highest first.
    pub order: Compiled,
    /// How many ranks.
    pub k: usize,
}

/// Keeps the rows of `ranked` that rank in the top `k` (ties included), highest first,
/// then in row order: the same rows whatever order they came in and however they were
/// split between partial states.
fn keep_top(ranked: &mut Vec<(Value, Row)>, k: usize) {
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    if ranked.len() > k && k > 0 {
        let cut = ranked[k - 1].0.clone();
        ranked.retain(|(score, _)| *score >= cut);
    } else if k == 0 {
        ranked.clear();
    }
}

/// Drops the rows of `ranked` that cannot rank in the top `k` (ties kept), without
/// ordering the rest: what folding and merging need, [`keep_top`] orders at the end.
fn prune_top(ranked: &mut Vec<(Value, Row)>, k: usize) {
    if k == 0 {
        ranked.clear();
    } else if ranked.len() > k {
        let (_, cut, _) = ranked.select_nth_unstable_by(k - 1, |a, b| b.0.cmp(&a.0));
        let cut = cut.0.clone();
        ranked.retain(|(score, _)| *score >= cut);
    }
}

impl Stream<Row> {
    /// Per key and window, the top rows (see [`RowTop`]), highest first.
    pub fn top_rows(&self, name: &str, top: RowTop, errors: RowErrors) -> Stream<Row> {
        match *top.key.as_slice() {
            [at] => self.top_rows_by(name, top, errors, move |row: &Row| row[at].clone()),
            _ => {
                let key = top.key.clone();
                self.top_rows_by(name, top, errors, move |row: &Row| fields(&key, row))
            }
        }
    }

    fn top_rows_by<K: RowKey>(
        &self,
        name: &str,
        top: RowTop,
        errors: RowErrors,
        key: impl Fn(&Row) -> K + Send + Sync + 'static,
    ) -> Stream<Row> {
        let RowTop {
            spec,
            key: _,
            order,
            k,
        } = top;
        self.key_by(key).window(
            name,
            spec,
            Vec::new,
            move |ranked: &mut Vec<(Value, Row)>, _, time, row: &Row| match order.eval(row) {
                Ok(score) if score.is_null() => {}
                Ok(score) => {
                    ranked.push((score.into_owned(), row.clone()));
                    if ranked.len() > 2 * k.max(1) {
                        prune_top(ranked, k);
                    }
                }
                Err(error) => errors.reject(time, row, &error),
            },
            move |ranked, other| {
                ranked.extend(other);
                prune_top(ranked, k);
            },
            move |_: &K, _, mut ranked, out: &mut Vec<Row>| {
                keep_top(&mut ranked, k);
                out.extend(ranked.into_iter().map(|(_, row)| row));
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_keeps_ties_whatever_the_split() {
        let rows: Vec<(Value, Row)> = [3, 5, 5, 1, 4, 5, 4]
            .iter()
            .enumerate()
            .map(|(i, s)| (Value::I64(*s), vec![Value::I64(i as i64)]))
            .collect();
        let mut whole = rows.clone();
        keep_top(&mut whole, 1);
        assert_eq!(
            whole.iter().map(|r| r.1[0].clone()).collect::<Vec<_>>(),
            [Value::I64(1), Value::I64(2), Value::I64(5)]
        );
        for split in 0..rows.len() {
            let (mut left, right) = (rows[..split].to_vec(), rows[split..].to_vec());
            keep_top(&mut left, 2);
            let mut right = right;
            keep_top(&mut right, 2);
            left.extend(right);
            keep_top(&mut left, 2);
            let mut expected = rows.clone();
            keep_top(&mut expected, 2);
            assert_eq!(left, expected, "split at {split}");
            // Pruned partial states, merged and pruned, then ordered: the same rows.
            let (mut left, mut right) = (rows[..split].to_vec(), rows[split..].to_vec());
            prune_top(&mut left, 2);
            prune_top(&mut right, 2);
            left.extend(right);
            prune_top(&mut left, 2);
            keep_top(&mut left, 2);
            assert_eq!(left, expected, "pruned, split at {split}");
        }
    }
}
