//! The named aggregates of windows over typed rows — `count()`, `count(x)`,
//! `count(DISTINCT x)`, `sum(x)`, `min(x)`, `max(x)`, `avg(x)`, `first(x)`, `last(x)` —
//! parsed and checked like expressions ([`AggregateSpec::parse`]), and their
//! accumulators ([`Acc`]), which merge in any order to the same result: a window's
//! output does not depend on how its records were split between lessees.
//!
//! NULLs are skipped, as in SQL: `count(x)` counts the rows where `x` is not NULL, and
//! `sum`, `min`, `max`, `avg`, `first` and `last` of no non-NULL value are NULL
//! (`count()` counts every row). `count` is an `i64`; `sum` has its argument's type (an
//! integer sum saturates at its type's bounds rather than wrap), `avg` is an `f64`.
//! `first` and `last` take the value of the earliest and latest event time; between
//! rows of the same time, the least and greatest value, so that the result does not
//! depend on arrival order.
//!
//! Float sums are exact up to a rounding of each value to a multiple of 2⁻⁶⁴: they are
//! kept as a 256-bit fixed-point integer, so adding in any order gives the same total
//! (an `f64` running sum would not). Values of magnitude 2⁶² (4.6·10¹⁸) and above, and
//! infinities and NaN, are added as `f64` apart.

use sqlparser::ast as sql;

use super::expr::{article, parse_sql, plain_arguments, Compiled, EvalError, Expr, ExprError};
use super::schema::Schema;
use super::value::{Type, Value};
use crate::dataflow::Time;

/// Which aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateKind {
    /// `count()` or `count(*)`: rows.
    CountRows,
    /// `count(x)`: rows where `x` is not NULL.
    Count,
    /// `count(DISTINCT x)`.
    CountDistinct,
    /// `sum(x)`.
    Sum,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
    /// `avg(x)`.
    Avg,
    /// `first(x)`: at the earliest event time.
    First,
    /// `last(x)`: at the latest event time.
    Last,
}

/// One checked aggregate: its kind, its argument and the type of its result.
///
/// ```
/// use dirigo_operators::typed::aggregate::{AggregateKind, AggregateSpec};
/// use dirigo_operators::typed::{Schema, Type};
///
/// let schema = Schema::new(vec![("card", Type::String), ("amount", Type::F64)]);
/// let total = AggregateSpec::parse("sum(amount)", &schema).unwrap();
/// assert_eq!((total.kind, total.ty), (AggregateKind::Sum, Type::F64));
/// let error = AggregateSpec::parse("sum(card)", &schema).unwrap_err();
/// assert_eq!(error.at, 4);
/// ```
#[derive(Clone, Debug)]
pub struct AggregateSpec {
    /// The aggregate.
    pub kind: AggregateKind,
    /// Its argument (none for `count()`).
    pub arg: Option<Expr>,
    /// The type of its result.
    pub ty: Type,
}

impl AggregateSpec {
    /// Parses and checks an aggregate call such as `sum(amount)` against `schema`.
    ///
    /// # Errors
    /// Not an aggregate, a wrong argument count, an argument that does not check, or
    /// one whose type the aggregate cannot take (a sum of text); with its place.
    pub fn parse(text: &str, schema: &Schema) -> Result<Self, ExprError> {
        let parsed = parse_sql(text)?;
        let at_start = text.len() - text.trim_start().len();
        let expected = |at: usize| ExprError {
            at,
            message: "an aggregate: count(), count(x), count(DISTINCT x), sum(x), min(x), \
                      max(x), avg(x), first(x) or last(x)"
                .into(),
        };
        let sql::Expr::Function(function) = &parsed else {
            return Err(expected(at_start));
        };
        let name = function.name.to_string().to_ascii_lowercase();
        let distinct = matches!(
            &function.args,
            sql::FunctionArguments::List(list)
                if list.duplicate_treatment == Some(sql::DuplicateTreatment::Distinct)
        );
        // `count()` and `count(*)`.
        if name == "count" && !distinct {
            if let sql::FunctionArguments::List(list) = &function.args {
                let star = matches!(
                    list.args.as_slice(),
                    [sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Wildcard)]
                );
                if (list.args.is_empty() || star) && list.clauses.is_empty() {
                    return Ok(Self {
                        kind: AggregateKind::CountRows,
                        arg: None,
                        ty: Type::I64,
                    });
                }
            }
        }
        let kind = match (name.as_str(), distinct) {
            ("count", true) => AggregateKind::CountDistinct,
            ("count", false) => AggregateKind::Count,
            ("sum", false) => AggregateKind::Sum,
            ("min", false) => AggregateKind::Min,
            ("max", false) => AggregateKind::Max,
            ("avg", false) => AggregateKind::Avg,
            ("first", false) => AggregateKind::First,
            ("last", false) => AggregateKind::Last,
            (_, true) => {
                return Err(ExprError {
                    at: at_start,
                    message: "DISTINCT only in count(DISTINCT x)".into(),
                })
            }
            _ => return Err(expected(at_start)),
        };
        let args = match (&function.args, distinct) {
            (sql::FunctionArguments::List(list), true) => {
                let mut plain = list.clone();
                plain.duplicate_treatment = None;
                let mut bare = function.clone();
                bare.args = sql::FunctionArguments::List(plain);
                let args = plain_arguments(&bare)
                    .map_err(|message| ExprError {
                        at: at_start,
                        message,
                    })?
                    .into_iter()
                    .cloned()
                    .collect::<Vec<_>>();
                args
            }
            _ => plain_arguments(function)
                .map_err(|message| ExprError {
                    at: at_start,
                    message,
                })?
                .into_iter()
                .cloned()
                .collect(),
        };
        let [arg] = args.as_slice() else {
            return Err(ExprError {
                at: at_start,
                message: format!("one argument for `{name}`; found {}", args.len()),
            });
        };
        // The argument is checked as an expression of its own text.
        let span = sqlparser::ast::Spanned::span(arg);
        let arg_at = super::expr::offset_of(text, span.start).unwrap_or(at_start);
        let arg_end = super::expr::offset_of(text, span.end).unwrap_or(text.len());
        let arg_text = text.get(arg_at..arg_end.max(arg_at)).unwrap_or(text);
        let arg_text = if arg_text.trim().is_empty() {
            text
        } else {
            arg_text
        };
        let checked = Expr::parse(arg_text, schema).map_err(|mut error| {
            error.at += arg_at;
            error
        })?;
        let argument_ty = checked.ty();
        let number = argument_ty.is_numeric() || argument_ty == Type::Null;
        let ty = match kind {
            AggregateKind::CountRows | AggregateKind::Count | AggregateKind::CountDistinct => {
                Type::I64
            }
            AggregateKind::Sum | AggregateKind::Avg if !number => {
                return Err(ExprError {
                    at: arg_at,
                    message: format!(
                        "a number to {}; `{arg}` is {}",
                        if kind == AggregateKind::Sum {
                            "sum"
                        } else {
                            "average"
                        },
                        article(argument_ty)
                    ),
                })
            }
            AggregateKind::Sum if argument_ty == Type::Null => Type::I64,
            AggregateKind::Avg => Type::F64,
            _ => argument_ty,
        };
        Ok(Self {
            kind,
            arg: Some(checked),
            ty,
        })
    }
}

pub use accumulator::Acc;

/// The accumulator type apart: rkyv derives a resolver for it whose fields have no docs.
mod accumulator {
    #![allow(missing_docs)]

    use crate::dataflow::Time;
    use crate::typed::value::Value;

    /// A window's accumulator for one aggregate. Every kind merges in any order to the same
    /// value.
    #[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    pub enum Acc {
        /// Rows or non-NULL values.
        Count(u64),
        /// An integer sum and how many values it adds.
        IntSum {
            /// The sum (never overflows: at most 2⁶⁴ values of 64 bits).
            sum: i128,
            /// Values added.
            n: u64,
        },
        /// A float sum: a 256-bit fixed-point integer in units of 2⁻⁶⁴ (`high · 2¹²⁸ +
        /// low`), plus the values too large for it, added as floats.
        FloatSum {
            /// The fixed point's low 128 bits.
            low: u128,
            /// Its high 128 bits (two's complement).
            high: i128,
            /// Values of magnitude 2⁶² and above, infinities and NaN.
            large: f64,
            /// Values added.
            n: u64,
        },
        /// The least value so far (NULL: none).
        Min(Value),
        /// The greatest value so far (NULL: none).
        Max(Value),
        /// The distinct values, sorted.
        Distinct(Vec<Value>),
        /// The value at the earliest time (`None`: none yet).
        First(Option<(Time, Value)>),
        /// The value at the latest time.
        Last(Option<(Time, Value)>),
    }
}

/// 2⁶⁴, the fixed point's unit.
const FIXED_ONE: f64 = 18_446_744_073_709_551_616.0;
/// Values below this magnitude go into the fixed point.
const FIXED_LIMIT: f64 = 4_611_686_018_427_387_904.0;

impl Acc {
    fn add_fixed(low: &mut u128, high: &mut i128, add_low: u128, add_high: i128) {
        let (sum, carry) = low.overflowing_add(add_low);
        *low = sum;
        *high = high.wrapping_add(add_high).wrapping_add(i128::from(carry));
    }

    /// The fixed point as an `f64`, rounded once where the magnitude is below 2⁶⁴
    /// (the `u128` conversion rounds to nearest), plus the large values.
    fn float_total(low: u128, high: i128, large: f64) -> f64 {
        let fixed = match high {
            0 => low as f64 / FIXED_ONE,
            -1 if low >= 1 << 127 => -(low.wrapping_neg() as f64) / FIXED_ONE,
            _ => high as f64 * FIXED_ONE + low as f64 / FIXED_ONE,
        };
        fixed + large
    }
}

/// The compiled aggregates of one window operator.
pub struct Aggregates {
    specs: Vec<(AggregateKind, Option<Compiled>, Type)>,
    /// Whether an argument may fail to evaluate (it is more than a field): then every
    /// argument is evaluated before any accumulator changes, so a failing row changes
    /// none.
    fallible: bool,
}

impl Aggregates {
    /// Compiles checked aggregates.
    pub fn new(specs: &[AggregateSpec]) -> Self {
        Self {
            specs: specs
                .iter()
                .map(|spec| (spec.kind, spec.arg.as_ref().map(Expr::compile), spec.ty))
                .collect(),
            fallible: specs.iter().any(|spec| {
                spec.arg
                    .as_ref()
                    .is_some_and(|arg| arg.as_column().is_none())
            }),
        }
    }

    /// How many aggregates.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Fresh accumulators, one per aggregate.
    pub fn init(&self) -> Vec<Acc> {
        self.specs
            .iter()
            .map(|(kind, arg, _)| match kind {
                AggregateKind::CountRows | AggregateKind::Count => Acc::Count(0),
                AggregateKind::CountDistinct => Acc::Distinct(Vec::new()),
                AggregateKind::Sum | AggregateKind::Avg => {
                    if arg.as_ref().is_some_and(|arg| arg.ty() == Type::F64) {
                        Acc::FloatSum {
                            low: 0,
                            high: 0,
                            large: 0.0,
                            n: 0,
                        }
                    } else {
                        Acc::IntSum { sum: 0, n: 0 }
                    }
                }
                AggregateKind::Min => Acc::Min(Value::Null),
                AggregateKind::Max => Acc::Max(Value::Null),
                AggregateKind::First => Acc::First(None),
                AggregateKind::Last => Acc::Last(None),
            })
            .collect()
    }

    /// Adds one row at event time `time`: to every aggregate, or, when an argument fails
    /// to evaluate, to none.
    ///
    /// # Errors
    /// When an argument fails to evaluate (the caller dead-letters the row).
    pub fn fold(&self, accs: &mut [Acc], time: Time, row: &[Value]) -> Result<(), EvalError> {
        // Fields and no arguments cannot fail: nothing to look ahead for.
        if self.fallible {
            for (_, arg, _) in &self.specs {
                if let Some(arg) = arg {
                    arg.eval(row)?;
                }
            }
        }
        for ((_, arg, _), acc) in self.specs.iter().zip(accs.iter_mut()) {
            let Some(arg) = arg else {
                if let Acc::Count(n) = acc {
                    *n = n.saturating_add(1);
                }
                continue;
            };
            let value = arg.eval(row)?;
            if value.is_null() {
                continue;
            }
            fold_value(acc, time, value.into_owned());
        }
        Ok(())
    }

    /// Merges `other` (another part of the same window's rows) into `accs`.
    pub fn merge(accs: &mut [Acc], other: Vec<Acc>) {
        for (acc, other) in accs.iter_mut().zip(other) {
            merge_acc(acc, other);
        }
    }

    /// The aggregates' values.
    pub fn finish(&self, accs: Vec<Acc>) -> Vec<Value> {
        let mut values = Vec::with_capacity(accs.len());
        self.finish_into(accs, &mut values);
        values
    }

    /// The aggregates' values, pushed onto `row`.
    pub fn finish_into(&self, accs: Vec<Acc>, row: &mut Vec<Value>) {
        row.extend(
            self.specs
                .iter()
                .zip(accs)
                .map(|((kind, _, ty), acc)| finish_acc(*kind, *ty, acc)),
        );
    }
}

fn fold_value(acc: &mut Acc, time: Time, value: Value) {
    match acc {
        Acc::Count(n) => *n = n.saturating_add(1),
        Acc::IntSum { sum, n } => {
            *sum += match value {
                Value::I64(i) => i128::from(i),
                Value::U64(u) => i128::from(u),
                _ => 0,
            };
            *n += 1;
        }
        Acc::FloatSum {
            low,
            high,
            large,
            n,
        } => {
            let x = match value {
                Value::F64(x) => x,
                _ => 0.0,
            };
            if x.is_finite() && x.abs() < FIXED_LIMIT {
                // Exact: scaling by a power of two; the cast rounds toward zero below 2⁻⁶⁴.
                let fixed = (x * FIXED_ONE) as i128;
                let sign = if fixed < 0 { -1 } else { 0 };
                Acc::add_fixed(low, high, fixed as u128, sign);
            } else {
                *large += x;
            }
            *n += 1;
        }
        Acc::Min(min) => {
            if min.is_null() || value < *min {
                *min = value;
            }
        }
        Acc::Max(max) => {
            if max.is_null() || value > *max {
                *max = value;
            }
        }
        Acc::Distinct(values) => {
            if let Err(at) = values.binary_search(&value) {
                values.insert(at, value);
            }
        }
        Acc::First(first) => {
            let better = first.as_ref().is_none_or(|(t, v)| (time, &value) < (*t, v));
            if better {
                *first = Some((time, value));
            }
        }
        Acc::Last(last) => {
            let better = last.as_ref().is_none_or(|(t, v)| (time, &value) > (*t, v));
            if better {
                *last = Some((time, value));
            }
        }
    }
}

fn merge_acc(acc: &mut Acc, other: Acc) {
    match (acc, other) {
        (Acc::Count(a), Acc::Count(b)) => *a = a.saturating_add(b),
        (Acc::IntSum { sum, n }, Acc::IntSum { sum: s, n: m }) => {
            *sum += s;
            *n += m;
        }
        (
            Acc::FloatSum {
                low,
                high,
                large,
                n,
            },
            Acc::FloatSum {
                low: l,
                high: h,
                large: g,
                n: m,
            },
        ) => {
            Acc::add_fixed(low, high, l, h);
            *large += g;
            *n += m;
        }
        (acc @ (Acc::Min(_) | Acc::Max(_)), other) => {
            let value = match other {
                Acc::Min(v) | Acc::Max(v) => v,
                _ => Value::Null,
            };
            if !value.is_null() {
                fold_value(acc, 0, value);
            }
        }
        (Acc::Distinct(values), Acc::Distinct(others)) => {
            let mut merged = Vec::with_capacity(values.len() + others.len());
            let mut left = std::mem::take(values).into_iter().peekable();
            let mut right = others.into_iter().peekable();
            loop {
                let next = match (left.peek(), right.peek()) {
                    (Some(a), Some(b)) => match a.cmp(b) {
                        std::cmp::Ordering::Less => left.next(),
                        std::cmp::Ordering::Greater => right.next(),
                        std::cmp::Ordering::Equal => {
                            right.next();
                            left.next()
                        }
                    },
                    (Some(_), None) => left.next(),
                    (None, Some(_)) => right.next(),
                    (None, None) => break,
                };
                merged.extend(next);
            }
            *values = merged;
        }
        (
            acc @ (Acc::First(_) | Acc::Last(_)),
            Acc::First(Some((t, v))) | Acc::Last(Some((t, v))),
        ) => {
            fold_value(acc, t, v);
        }
        _ => {}
    }
}

fn finish_acc(kind: AggregateKind, ty: Type, acc: Acc) -> Value {
    match acc {
        Acc::Count(n) => Value::I64(i64::try_from(n).unwrap_or(i64::MAX)),
        Acc::Distinct(values) => Value::I64(i64::try_from(values.len()).unwrap_or(i64::MAX)),
        Acc::IntSum { n: 0, .. } | Acc::FloatSum { n: 0, .. } => Value::Null,
        Acc::IntSum { sum, n } => {
            if kind == AggregateKind::Avg {
                Value::F64(sum as f64 / n as f64)
            } else if ty == Type::U64 {
                Value::U64(sum.clamp(0, i128::from(u64::MAX)) as u64)
            } else {
                Value::I64(sum.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
            }
        }
        Acc::FloatSum {
            low,
            high,
            large,
            n,
        } => {
            let total = Acc::float_total(low, high, large);
            if kind == AggregateKind::Avg {
                Value::F64(total / n as f64)
            } else {
                Value::F64(total)
            }
        }
        Acc::Min(v) | Acc::Max(v) => v,
        Acc::First(entry) | Acc::Last(entry) => entry.map_or(Value::Null, |(_, v)| v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schema() -> Schema {
        Schema::new(vec![
            ("x", Type::F64),
            ("i", Type::I64),
            ("s", Type::String),
        ])
    }

    #[test]
    fn aggregates_check_their_arguments() {
        let schema = schema();
        for (text, kind, ty) in [
            ("count()", AggregateKind::CountRows, Type::I64),
            ("count(*)", AggregateKind::CountRows, Type::I64),
            ("COUNT(s)", AggregateKind::Count, Type::I64),
            ("count(DISTINCT s)", AggregateKind::CountDistinct, Type::I64),
            ("sum(i)", AggregateKind::Sum, Type::I64),
            ("avg(i)", AggregateKind::Avg, Type::F64),
            ("min(s)", AggregateKind::Min, Type::String),
            ("last(x * 2)", AggregateKind::Last, Type::F64),
        ] {
            let spec = AggregateSpec::parse(text, &schema).unwrap();
            assert_eq!((spec.kind, spec.ty), (kind, ty), "{text}");
        }
        let error = AggregateSpec::parse("avg(s)", &schema).unwrap_err();
        assert_eq!(error.at, 4);
        assert!(
            error.message.contains("a number to average"),
            "{}",
            error.message
        );
        let error = AggregateSpec::parse("sum(i + nope)", &schema).unwrap_err();
        assert_eq!(error.at, 8);
        assert!(AggregateSpec::parse("median(x)", &schema).is_err());
        assert!(AggregateSpec::parse("sum(x, i)", &schema).is_err());
        assert!(AggregateSpec::parse("x + 1", &schema).is_err());
    }

    fn run(specs: &[&str], rows: &[(Time, Vec<Value>)], split: usize) -> Vec<Value> {
        let schema = schema();
        let specs: Vec<AggregateSpec> = specs
            .iter()
            .map(|s| AggregateSpec::parse(s, &schema).unwrap())
            .collect();
        let aggregates = Aggregates::new(&specs);
        let mut left = aggregates.init();
        let mut right = aggregates.init();
        for (index, (time, row)) in rows.iter().enumerate() {
            let acc = if index < split { &mut left } else { &mut right };
            aggregates.fold(acc, *time, row).unwrap();
        }
        Aggregates::merge(&mut right, left);
        aggregates.finish(right)
    }

    const ALL: [&str; 9] = [
        "count()",
        "count(s)",
        "count(DISTINCT s)",
        "sum(x)",
        "sum(i)",
        "min(x)",
        "max(s)",
        "first(s)",
        "last(i)",
    ];

    #[test]
    fn nulls_are_skipped_and_empty_aggregates_are_null() {
        let rows = vec![
            (
                5,
                vec![Value::F64(1.5), Value::Null, Value::Str("b".into())],
            ),
            (3, vec![Value::Null, Value::I64(4), Value::Str("a".into())]),
            (9, vec![Value::F64(0.25), Value::I64(-1), Value::Null]),
        ];
        let out = run(&ALL, &rows, 1);
        assert_eq!(
            out,
            vec![
                Value::I64(3),
                Value::I64(2),
                Value::I64(2),
                Value::F64(1.75),
                Value::I64(3),
                Value::F64(0.25),
                Value::Str("b".into()),
                Value::Str("a".into()),
                Value::I64(-1),
            ]
        );
        let empty = run(
            &["sum(x)", "avg(i)", "min(s)", "first(x)", "count(i)"],
            &[],
            0,
        );
        assert_eq!(
            empty,
            vec![
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::I64(0)
            ]
        );
    }

    #[test]
    fn a_row_whose_argument_fails_changes_no_aggregate() {
        let schema = schema();
        let specs: Vec<AggregateSpec> = ["count()", "sum(i)", "max(10 / i)"]
            .iter()
            .map(|s| AggregateSpec::parse(s, &schema).unwrap())
            .collect();
        let aggregates = Aggregates::new(&specs);
        let mut accs = aggregates.init();
        let good = vec![Value::Null, Value::I64(5), Value::Null];
        let bad = vec![Value::Null, Value::I64(0), Value::Null];
        aggregates.fold(&mut accs, 0, &good).unwrap();
        let error = aggregates.fold(&mut accs, 0, &bad).unwrap_err();
        assert_eq!(error.0, "division by zero");
        assert_eq!(
            aggregates.finish(accs),
            vec![Value::I64(1), Value::I64(5), Value::I64(2)]
        );
    }

    #[test]
    fn float_sums_do_not_depend_on_order() {
        let sum = |values: &[f64]| {
            let rows: Vec<(Time, Vec<Value>)> = values
                .iter()
                .map(|x| (0, vec![Value::F64(*x), Value::Null, Value::Null]))
                .collect();
            run(&["sum(x)", "avg(x)"], &rows, 1)
        };
        // An f64 running sum gives 0 or 1 depending on the order.
        assert_eq!(
            sum(&[1e16, 1.0, -1e16]),
            vec![Value::F64(1.0), Value::F64(1.0 / 3.0)]
        );
        assert_eq!(
            sum(&[1e16, -1e16, 1.0]),
            vec![Value::F64(1.0), Value::F64(1.0 / 3.0)]
        );
        assert_eq!(
            sum(&[0.1, 0.2]),
            vec![Value::F64(0.1 + 0.2), Value::F64((0.1 + 0.2) / 2.0)]
        );
        assert_eq!(
            sum(&[-0.1, -0.2]),
            vec![Value::F64(-0.1 - 0.2), Value::F64((-0.1 - 0.2) / 2.0)]
        );
        assert_eq!(
            sum(&[-1250.5, 3.0]),
            vec![Value::F64(-1247.5), Value::F64(-623.75)]
        );
        assert_eq!(sum(&[1e300, 1.0])[0], Value::F64(1e300));
    }

    proptest! {
        /// However the rows are split between a lessee and its lessor, and in whatever
        /// order, every aggregate comes out the same.
        #[test]
        fn merging_in_any_split_and_order_gives_the_same_result(
            rows in proptest::collection::vec(
                (0u64..5,
                 proptest::option::of(-1e6f64..1e6),
                 proptest::option::of(-1000i64..1000),
                 proptest::option::of("[a-c]")),
                0..40),
            split in 0usize..40,
            rotate in 0usize..40,
        ) {
            let rows: Vec<(Time, Vec<Value>)> = rows
                .into_iter()
                .map(|(t, x, i, s)| (t, vec![
                    x.map_or(Value::Null, Value::F64),
                    i.map_or(Value::Null, Value::I64),
                    s.map_or(Value::Null, Value::Str),
                ]))
                .collect();
            let whole = run(&ALL, &rows, 0);
            let mut rotated = rows.clone();
            if !rotated.is_empty() {
                let by = rotate % rotated.len();
                rotated.rotate_left(by);
            }
            prop_assert_eq!(&whole, &run(&ALL, &rotated, split.min(rows.len())));
        }
    }
}
