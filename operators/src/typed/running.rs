//! The running aggregate of typed rows ([`RowAggregate`]): per key, named aggregates over
//! the whole stream, without windows. Each time the input's watermark advances (and when
//! it ends), every key whose aggregates changed since its last row puts out one row —
//! its key fields, then its aggregates — if that row meets `having`.
//!
//! It is the keyed running aggregate ([`KeyedStream::aggregate_filtered`]) over the
//! windows' accumulators ([`Aggregates`]), so it is mergeable: lessees fold rows into
//! partial accumulators that the lessor merges before it puts out rows, and a key's rows
//! do not depend on how its input was split. When the intermediate rows come depends on
//! when watermarks arrive; a key's last row (the aggregates of all its input) does not.
//!
//! [`KeyedStream::aggregate_filtered`]: crate::dataflow::KeyedStream::aggregate_filtered

use std::sync::Arc;

use super::aggregate::{Acc, Aggregates};
use super::expr::Predicate;
use super::key::RowKey;
use super::ops::{fields, RowErrors};
use super::value::{Row, Value};
use crate::dataflow::Stream;

/// A running aggregate over typed rows: the fields it is keyed by, its aggregates, and
/// the condition its output rows must meet.
pub struct RowAggregate {
    /// The positions of the key fields in the input rows (none: one key for all rows).
    pub key: Vec<usize>,
    /// The aggregates.
    pub aggregates: Aggregates,
    /// Over the output row (the key fields, then the aggregates).
    pub having: Option<Predicate>,
}

impl Stream<Row> {
    /// Per key, a row of the key fields and the aggregates whenever they changed, if it
    /// meets `having` (see the [module docs](self)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dirigo_operators::dataflow::{AppBuilder, Msg};
    /// use dirigo_operators::io::DeadLetterSink;
    /// use dirigo_operators::source::Pacing;
    /// use dirigo_operators::typed::aggregate::{AggregateSpec, Aggregates};
    /// use dirigo_operators::typed::ops::RowErrors;
    /// use dirigo_operators::typed::running::RowAggregate;
    /// use dirigo_operators::typed::{Schema, Type, Value};
    /// use dirigo_runtime::Runtime;
    ///
    /// let schema = Schema::new(vec![("card", Type::String), ("amount", Type::F64)]);
    /// let specs = [AggregateSpec::parse("count()", &schema).unwrap(),
    ///              AggregateSpec::parse("sum(amount)", &schema).unwrap()];
    /// let row = |card: &str, amount: f64| vec![Value::Str(card.into()), Value::F64(amount)];
    /// let rows = vec![(1, row("c1", 10.0)), (2, row("c2", 5.0)), (3, row("c1", 2.5))];
    /// let app = AppBuilder::new(0, "totals");
    /// let letters = DeadLetterSink::in_memory();
    /// let totals = app
    ///     .source_iter("payments", rows, 0, Pacing::Unpaced)
    ///     .aggregate_rows(
    ///         "per-card",
    ///         RowAggregate { key: vec![0], aggregates: Aggregates::new(&specs), having: None },
    ///         RowErrors::new(letters, "per-card"),
    ///     )
    ///     .collect("out");
    /// let app = app.build();
    /// let runtime = app.install(Runtime::<Msg>::builder().shards(1)).build().unwrap();
    /// app.start(&runtime.ingress());
    /// assert!(app.wait(Duration::from_secs(10)));
    /// // The source ends without a watermark in between: one row per key.
    /// let mut out = totals.take();
    /// out.sort();
    /// assert_eq!(out, vec![
    ///     vec![Value::Str("c1".into()), Value::I64(2), Value::F64(12.5)],
    ///     vec![Value::Str("c2".into()), Value::I64(1), Value::F64(5.0)],
    /// ]);
    /// runtime.shutdown();
    /// ```
    pub fn aggregate_rows(
        &self,
        name: &str,
        aggregate: RowAggregate,
        errors: RowErrors,
    ) -> Stream<Row> {
        match *aggregate.key.as_slice() {
            [at] => {
                self.aggregate_rows_by(name, aggregate, errors, move |row: &Row| row[at].clone())
            }
            _ => {
                let key = aggregate.key.clone();
                self.aggregate_rows_by(name, aggregate, errors, move |row: &Row| fields(&key, row))
            }
        }
    }

    fn aggregate_rows_by<K: RowKey>(
        &self,
        name: &str,
        aggregate: RowAggregate,
        errors: RowErrors,
        key: impl Fn(&Row) -> K + Send + Sync + 'static,
    ) -> Stream<Row> {
        let RowAggregate {
            key: _,
            aggregates,
            having,
        } = aggregate;
        let aggregates = Arc::new(aggregates);
        let (fold_aggs, emit_aggs) = (aggregates.clone(), aggregates.clone());
        let emit_errors = errors.clone();
        let width = aggregates.len();
        self.key_by(key).aggregate_filtered(
            name,
            move || aggregates.init(),
            move |accs: &mut Vec<Acc>, time, row: &Row| {
                // A failing row is left out of every aggregate (`Aggregates::fold`).
                if let Err(error) = fold_aggs.fold(accs, time, row) {
                    errors.reject(time, row, &error);
                }
            },
            |accs, other| Aggregates::merge(accs, other),
            move |key: &K, accs: &Vec<Acc>| {
                let mut row: Vec<Value> = key.row_with_room(width);
                emit_aggs.finish_into(accs.clone(), &mut row);
                match having.as_ref().map(|having| having.test(&row)) {
                    None | Some(Ok(true)) => Some(row),
                    Some(Ok(false)) => None,
                    Some(Err(error)) => {
                        emit_errors.reject_output(&row, &error);
                        None
                    }
                }
            },
        )
    }
}
