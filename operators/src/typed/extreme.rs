//! The join of a stream's rows with their own window's greatest (or least) value of one
//! field ([`RowExtremeJoin`], [`Stream::join_extreme_rows`]): per tumbling window, every
//! row whose field equals the window's `max` (or `min`) of it, joined with that
//! aggregate's row.
//!
//! It gives exactly the rows of a windowed [join](super::join) of the rows (left) with a
//! keyless `window` of the same tumbling size over the same rows whose one aggregate is
//! `max(field)` (right), on `left.field = right.max`: the shape of NEXMark's "highest
//! bid" query in SQL. That join holds every row of the window until it fires, since any
//! row could carry the window's extreme; this operator keeps only the rows that still
//! can. A first window, keyed by a hash bucket of the field, keeps per bucket the rows
//! at its extreme so far (a row below a bucket's extreme is below the window's); a
//! second, keyed by the window's end, merges the buckets' candidates and puts out the
//! joined rows, sorted as the join sorts them. With an inclusive end, rows at exactly
//! the end are joined too when their field equals the extreme taken over the rows
//! inside (`start <= time < end`), as the join does with a right side of exclusive
//! windows. Both windows are mergeable window state, so lessees and their merges work
//! as on any window, and the rows do not depend on how the work was split.

use super::join::Pairs;
use super::ops::RowErrors;
use super::value::{Row, Value};
use crate::dataflow::{Stream, Time};
use crate::window::{WindowSpec, Windows};

use super::expr::{Compiled, Predicate};

/// How many buckets the first window spreads a window's rows over (its keys).
const BUCKETS: u64 = 64;

/// A join of rows with their window's extreme value of a field.
pub struct RowExtremeJoin {
    /// The windows: tumbling (others are refused by [`RowExtremeJoin::fits`]).
    pub spec: WindowSpec,
    /// The field (position in the rows) whose extreme is taken and matched.
    pub column: usize,
    /// `max` (the greatest) or `min` (the least).
    pub greatest: bool,
    /// Over the joined row (the row's fields, then the aggregate's row: the extreme,
    /// `window_start`, `window_end`; then `window_start`, `window_end`): the pairs to
    /// keep.
    pub condition: Option<Predicate>,
    /// Over the joined row: the output fields (default: the joined row itself).
    pub fields: Option<Vec<Compiled>>,
}

impl RowExtremeJoin {
    /// Whether windows of `spec` can be joined this way: tumbling ones.
    pub fn fits(spec: &WindowSpec) -> bool {
        matches!(spec.windows, Windows::Tumbling { .. })
    }
}

/// Per window (and bucket): the rows inside it at the extreme so far, and the rows at
/// its end edge that may still equal the extreme.
#[derive(Clone, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Candidates {
    /// The extreme of the field over the rows inside (NULL: none yet).
    pub best: Value,
    /// The rows inside whose field is `best`.
    pub inside: Vec<Row>,
    /// The rows at the end edge whose field is at least as extreme as `best` (every
    /// one with a non-NULL field while `best` is NULL).
    pub edge: Vec<Row>,
}

impl Candidates {
    /// Whether `value` is beyond `than` in the chosen direction.
    fn beyond(greatest: bool, value: &Value, than: &Value) -> bool {
        if greatest {
            value > than
        } else {
            value < than
        }
    }

    /// Folds in a row from inside the window. As the `max` and `min` aggregates do, a
    /// NULL field counts for nothing, and the first of equal extremes stays `best`.
    fn add_inside(&mut self, greatest: bool, column: usize, row: &Row) {
        let value = &row[column];
        if value.is_null() {
            return;
        }
        if self.best.is_null() || Self::beyond(greatest, value, &self.best) {
            self.best = value.clone();
            self.inside.clear();
            self.inside.push(row.clone());
            let best = &self.best;
            self.edge
                .retain(|edge| !Self::beyond(greatest, best, &edge[column]));
        } else if *value == self.best {
            self.inside.push(row.clone());
        }
    }

    /// Folds in a row at the window's end edge.
    fn add_edge(&mut self, greatest: bool, column: usize, row: &Row) {
        let value = &row[column];
        if value.is_null() {
            return;
        }
        if self.best.is_null() || !Self::beyond(greatest, &self.best, value) {
            self.edge.push(row.clone());
        }
    }

    fn absorb(&mut self, greatest: bool, column: usize, other: &Candidates) {
        for row in &other.inside {
            self.add_inside(greatest, column, row);
        }
        for row in &other.edge {
            self.add_edge(greatest, column, row);
        }
    }
}

/// The bucket of a field's value: any function of the value would do (each bucket
/// keeps its own extreme's rows), this one spreads integers and floats cheaply.
fn bucket(value: &Value) -> u64 {
    let bits = match value {
        Value::Null => 0,
        Value::Bool(b) => u64::from(*b),
        Value::I64(x) | Value::Timestamp(x) => *x as u64,
        Value::U64(x) => *x,
        Value::F64(x) => x.to_bits(),
        Value::Str(s) => s
            .bytes()
            .take(16)
            .fold(s.len() as u64, |h, b| h.rotate_left(5) ^ u64::from(b)),
    };
    bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BUCKETS.trailing_zeros())
}

impl Stream<Row> {
    /// Joins each row with its window's extreme of `join.column`: see the module's
    /// documentation. A row whose condition or fields fail goes to the dead letters.
    ///
    /// # Panics
    /// If `join.spec` is not tumbling ([`RowExtremeJoin::fits`] says so beforehand).
    pub fn join_extreme_rows(
        &self,
        name: &str,
        join: RowExtremeJoin,
        errors: RowErrors,
    ) -> Stream<Row> {
        assert!(RowExtremeJoin::fits(&join.spec), "tumbling windows only");
        let RowExtremeJoin {
            spec,
            column,
            greatest,
            condition,
            fields,
        } = join;
        let candidates = self.key_by(move |row: &Row| bucket(&row[column])).window(
            &format!("{name}-candidates"),
            spec,
            Candidates::default,
            move |candidates: &mut Candidates, window, time, row: &Row| {
                if time == window.end {
                    candidates.add_edge(greatest, column, row);
                } else {
                    candidates.add_inside(greatest, column, row);
                }
            },
            move |candidates, other| candidates.absorb(greatest, column, &other),
            |_, window, candidates, out: &mut Vec<(Time, Candidates)>| {
                if !candidates.best.is_null() || !candidates.edge.is_empty() {
                    out.push((window.end, candidates));
                }
            },
        );
        let pairs = Pairs {
            condition,
            fields,
            errors,
        };
        // Each bucket's candidates leave at their window's end (or end − 1): the window
        // of the same end collects them, and fires at the same frontier.
        candidates.key_by(|(end, _)| *end).window(
            name,
            spec,
            Candidates::default,
            move |all: &mut Candidates, window, _, (end, candidates): &(Time, Candidates)| {
                if *end == window.end {
                    all.absorb(greatest, column, candidates);
                }
            },
            move |all, other| all.absorb(greatest, column, &other),
            move |_, window, all, out: &mut Vec<Row>| {
                if all.best.is_null() {
                    return;
                }
                let Candidates {
                    best,
                    mut inside,
                    edge,
                } = all;
                inside.extend(edge.into_iter().filter(|row| row[column] == best));
                inside.sort_unstable();
                let (start, end) = (
                    Value::Timestamp(window.start as i64),
                    Value::Timestamp(window.end as i64),
                );
                // The aggregate's row (the extreme, its window's bounds), then the
                // join's window bounds: the same, the windows being the same.
                let right = [best, start.clone(), end.clone(), start, end];
                let time = window.end.saturating_sub(1);
                for left in inside {
                    let mut row = left;
                    row.extend_from_slice(&right);
                    pairs.pair(time, row, out);
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(price: u64, id: u64) -> Row {
        vec![Value::U64(price), Value::U64(id)]
    }

    #[test]
    fn candidates_keep_the_rows_at_the_extreme_whatever_the_order_and_split() {
        let inside = [row(3, 1), row(7, 2), row(5, 3), row(7, 4), row(1, 5)];
        let edge = [row(7, 6), row(6, 7), row(9, 8)];
        let final_rows = |c: &Candidates| {
            let mut rows = c.inside.clone();
            rows.extend(c.edge.iter().filter(|r| r[0] == c.best).cloned());
            rows.sort();
            rows
        };
        let mut whole = Candidates::default();
        for r in &inside {
            whole.add_inside(true, 0, r);
        }
        for r in &edge {
            whole.add_edge(true, 0, r);
        }
        assert_eq!(whole.best, Value::U64(7));
        assert_eq!(final_rows(&whole), vec![row(7, 2), row(7, 4), row(7, 6)]);
        // Split in two parts, edges first in one: the same rows once merged.
        let (mut a, mut b) = (Candidates::default(), Candidates::default());
        b.add_edge(true, 0, &edge[0]);
        b.add_edge(true, 0, &edge[1]);
        for r in &inside[..2] {
            a.add_inside(true, 0, r);
        }
        for r in &inside[2..] {
            b.add_inside(true, 0, r);
        }
        a.add_edge(true, 0, &edge[2]);
        a.absorb(true, 0, &b);
        assert_eq!(final_rows(&a), final_rows(&whole));
        // The least: 1 inside, no edge row that low.
        let mut least = Candidates::default();
        for r in inside.iter().rev() {
            least.add_inside(false, 0, r);
        }
        for r in &edge {
            least.add_edge(false, 0, r);
        }
        assert_eq!(final_rows(&least), vec![row(1, 5)]);
    }

    #[test]
    fn null_fields_are_never_candidates() {
        let mut c = Candidates::default();
        c.add_inside(true, 0, &vec![Value::Null, Value::U64(1)]);
        c.add_edge(true, 0, &vec![Value::Null, Value::U64(2)]);
        assert!(c.best.is_null() && c.inside.is_empty() && c.edge.is_empty());
    }
}
