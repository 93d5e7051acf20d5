//! The operators of typed pipelines, over streams of [`Row`]s: `filter` by a condition,
//! `select` computed fields, and a keyed `window` with named aggregates and a `having`
//! condition. A row whose expression fails at run time (an overflow, a `CAST` that
//! cannot convert) goes to the dead letters with the operator's name and the reason,
//! and the stream goes on.

use std::sync::Arc;

use super::aggregate::{Acc, Aggregates};
use super::expr::{Compiled, EvalError, Predicate};
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
    /// Keeps the rows where `condition` is `TRUE`.
    pub fn filter_rows(&self, name: &str, condition: Predicate, errors: RowErrors) -> Stream<Row> {
        self.flat_map_timed(name, move |time, row: Row| match condition.test(&row) {
            Ok(true) => Some(row),
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
        let RowWindow {
            spec,
            key,
            aggregates,
            having,
        } = window;
        let aggregates = Arc::new(aggregates);
        let (fold_aggs, emit_aggs) = (aggregates.clone(), aggregates.clone());
        let emit_errors = errors.clone();
        self.key_by(move |row: &Row| key.iter().map(|&at| row[at].clone()).collect::<Row>())
            .window(
                name,
                spec,
                move || aggregates.init(),
                move |accs: &mut Vec<Acc>, _, time, row: &Row| {
                    // A failing row is left out of every aggregate of its windows.
                    let before = accs.clone();
                    if let Err(error) = fold_aggs.fold(accs, time, row) {
                        *accs = before;
                        errors.reject(time, row, &error);
                    }
                },
                |accs, other| Aggregates::merge(accs, other),
                move |key: &Row, window, accs, out: &mut Vec<Row>| {
                    let mut row = key.clone();
                    row.extend(emit_aggs.finish(accs));
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
