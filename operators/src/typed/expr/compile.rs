//! Compiling a checked [`Expr`] into a tree of closures: each node's work resolved
//! once (field positions, operand types, literal patterns), so evaluating a row is a
//! few indirect calls and no name lookup, parsing or type dispatch on the expression.
//!
//! Conditions compile to closures that return a three-valued truth (`Some(true)`,
//! `Some(false)`, `None` for NULL) without building a [`Value`]; a comparison of a field
//! with a literal is one closure.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::{Arith, Cmp, EvalError, Expr, Func, Node};
use crate::typed::schema::from_text;
use crate::typed::value::{canonical, Type, Value};

type ValueFn = Box<dyn for<'a> Fn(&'a [Value]) -> Result<Cow<'a, Value>, EvalError> + Send + Sync>;
type TruthFn = Box<dyn Fn(&[Value]) -> Result<Option<bool>, EvalError> + Send + Sync>;

/// A compiled expression: evaluates a row of its schema.
pub struct Compiled {
    eval: ValueFn,
    ty: Type,
    column: Option<usize>,
}

impl Compiled {
    /// The expression's value on `row` (borrowed from the row when it is a field).
    ///
    /// # Errors
    /// An overflow, a division by zero, a `CAST` that cannot convert.
    #[inline]
    pub fn eval<'a>(&self, row: &'a [Value]) -> Result<Cow<'a, Value>, EvalError> {
        (self.eval)(row)
    }

    /// The type of its values (NULL aside).
    pub fn ty(&self) -> Type {
        self.ty
    }

    /// The field it reads, if it is only a field.
    pub fn as_column(&self) -> Option<usize> {
        self.column
    }
}

/// A compiled condition: whether a row satisfies it (only `TRUE` does; `FALSE` and NULL
/// do not).
pub struct Predicate {
    truth: TruthFn,
}

impl Predicate {
    /// Whether `row` satisfies the condition.
    ///
    /// # Errors
    /// As [`Compiled::eval`].
    #[inline]
    pub fn test(&self, row: &[Value]) -> Result<bool, EvalError> {
        Ok((self.truth)(row)? == Some(true))
    }

    /// The condition's three-valued truth on `row`: `None` is NULL.
    ///
    /// # Errors
    /// As [`Compiled::eval`].
    #[inline]
    pub fn truth(&self, row: &[Value]) -> Result<Option<bool>, EvalError> {
        (self.truth)(row)
    }
}

impl Expr {
    /// Compiles the expression into closures.
    pub fn compile(&self) -> Compiled {
        Compiled {
            eval: value_fn(self),
            ty: self.ty,
            column: self.as_column(),
        }
    }

    /// Compiles a condition (an expression of type `bool`, see
    /// [`parse_condition`](Self::parse_condition)).
    pub fn compile_condition(&self) -> Predicate {
        Predicate {
            truth: truth_fn(self),
        }
    }
}

fn overflow(what: &str) -> EvalError {
    EvalError(format!("integer overflow in {what}"))
}

fn division_by_zero() -> EvalError {
    EvalError("division by zero".into())
}

/// Compares two non-NULL values of comparable types, SQL's way: numbers (and
/// timestamps) by value, as floats when either is a float.
pub(crate) fn sql_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Str(a), Value::Str(b)) => a.cmp(b),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::F64(_), _) | (_, Value::F64(_)) => {
            canonical(as_f64(a)).total_cmp(&canonical(as_f64(b)))
        }
        _ => as_i128(a).cmp(&as_i128(b)),
    }
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::I64(i) | Value::Timestamp(i) => *i as f64,
        Value::U64(u) => *u as f64,
        Value::F64(x) => *x,
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => f64::NAN,
    }
}

fn as_i128(v: &Value) -> i128 {
    match v {
        Value::I64(i) | Value::Timestamp(i) => i128::from(*i),
        Value::U64(u) => i128::from(*u),
        Value::Bool(b) => i128::from(*b),
        _ => 0,
    }
}

fn as_i64(v: &Value) -> Result<i64, EvalError> {
    match v {
        Value::I64(i) | Value::Timestamp(i) => Ok(*i),
        Value::U64(u) => i64::try_from(*u).map_err(|_| overflow("a conversion of a u64 to i64")),
        _ => Ok(0),
    }
}

fn as_u64(v: &Value) -> u64 {
    match v {
        Value::U64(u) => *u,
        _ => 0,
    }
}

/// `x` rounded to `digits` decimal places (negative: to tens, hundreds, …), half away
/// from zero.
pub(crate) fn round_to(x: f64, digits: i64) -> f64 {
    let digits = digits.clamp(-308, 308) as i32;
    let factor = 10f64.powi(digits);
    let scaled = x * factor;
    if !scaled.is_finite() || !factor.is_finite() || factor == 0.0 {
        return x;
    }
    scaled.round() / factor
}

/// `value` (not NULL) converted to `ty`, as `CAST` does.
///
/// # Errors
/// When the value has no value of type `ty`.
pub(crate) fn cast_value(value: &Value, ty: Type) -> Result<Value, EvalError> {
    let fail = || {
        EvalError(format!(
            "cannot cast {} {} to {ty}",
            value.type_of(),
            match value {
                Value::Str(s) => format!("{s:?}"),
                other => other.to_string(),
            }
        ))
    };
    // A float to an integer: rounded half away from zero, and in range.
    let float_to_int = |x: f64, min: f64, max: f64| {
        let r = x.round();
        (r.is_finite() && r >= min && r < max).then_some(r)
    };
    Ok(match (value, ty) {
        (Value::Null, _) => Value::Null,
        (v, t) if v.type_of() == t => v.clone(),
        (v, Type::String) => Value::Str(v.to_string()),
        (Value::Str(s), t) => from_text(s.trim(), t).ok_or_else(fail)?,
        (Value::Bool(b), Type::I64) => Value::I64(i64::from(*b)),
        (Value::Bool(b), Type::U64) => Value::U64(u64::from(*b)),
        (Value::Bool(b), Type::F64) => Value::F64(f64::from(u8::from(*b))),
        (Value::I64(i), Type::Bool) => Value::Bool(*i != 0),
        (Value::U64(u), Type::Bool) => Value::Bool(*u != 0),
        (Value::F64(x), Type::Bool) => Value::Bool(*x != 0.0),
        (Value::I64(i) | Value::Timestamp(i), Type::I64) => Value::I64(*i),
        (Value::I64(i) | Value::Timestamp(i), Type::Timestamp) => Value::Timestamp(*i),
        (Value::I64(i) | Value::Timestamp(i), Type::U64) => {
            Value::U64(u64::try_from(*i).map_err(|_| fail())?)
        }
        (Value::I64(i) | Value::Timestamp(i), Type::F64) => Value::F64(*i as f64),
        (Value::U64(u), Type::I64) => Value::I64(i64::try_from(*u).map_err(|_| fail())?),
        (Value::U64(u), Type::Timestamp) => {
            Value::Timestamp(i64::try_from(*u).map_err(|_| fail())?)
        }
        (Value::U64(u), Type::F64) => Value::F64(*u as f64),
        (Value::F64(x), Type::I64) => Value::I64(
            float_to_int(
                *x,
                -9_223_372_036_854_775_808.0,
                9_223_372_036_854_775_808.0,
            )
            .ok_or_else(fail)? as i64,
        ),
        (Value::F64(x), Type::Timestamp) => Value::Timestamp(
            float_to_int(
                *x,
                -9_223_372_036_854_775_808.0,
                9_223_372_036_854_775_808.0,
            )
            .ok_or_else(fail)? as i64,
        ),
        (Value::F64(x), Type::U64) => {
            Value::U64(float_to_int(*x, 0.0, 18_446_744_073_709_551_616.0).ok_or_else(fail)? as u64)
        }
        _ => return Err(fail()),
    })
}

/// Whether `text` matches the LIKE `pattern` (`%` any run of characters, `_` one).
pub(crate) fn like(text: &str, pattern: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    // Greedy with backtracking to the last `%`: linear in most cases, O(n·m) at worst.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '_' || (pattern[p] != '%' && pattern[p] == text[t]))
        {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == '%' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '%')
}

fn lit<'a>(value: &Value) -> Result<Cow<'a, Value>, EvalError> {
    Ok(Cow::Owned(value.clone()))
}

fn not3(x: Option<bool>) -> Option<bool> {
    x.map(|b| !b)
}

fn value_fn(expr: &Expr) -> ValueFn {
    match &expr.node {
        Node::Column(index) => {
            let index = *index;
            Box::new(move |row| Ok(Cow::Borrowed(&row[index])))
        }
        Node::Literal(value) => {
            let value = value.clone();
            Box::new(move |_| lit(&value))
        }
        Node::Not(_)
        | Node::Compare(..)
        | Node::And(..)
        | Node::Or(..)
        | Node::IsNull(..)
        | Node::In(..)
        | Node::Between(..)
        | Node::Like(..) => {
            let truth = truth_fn(expr);
            Box::new(move |row| Ok(Cow::Owned(truth(row)?.map_or(Value::Null, Value::Bool))))
        }
        Node::Neg(inner) => {
            let inner = value_fn(inner);
            Box::new(move |row| {
                Ok(Cow::Owned(match inner(row)?.as_ref() {
                    Value::Null => Value::Null,
                    Value::I64(i) => {
                        Value::I64(i.checked_neg().ok_or_else(|| overflow("a negation"))?)
                    }
                    Value::U64(u) => {
                        let negated = 0i128 - i128::from(*u);
                        Value::I64(i64::try_from(negated).map_err(|_| overflow("a negation"))?)
                    }
                    Value::F64(x) => Value::F64(-x),
                    other => other.clone(),
                }))
            })
        }
        Node::Arith(op, left, right) => arith_fn(*op, expr.ty, left, right),
        Node::Concat(left, right) => {
            let (left, right) = (value_fn(left), value_fn(right));
            Box::new(move |row| {
                let l = left(row)?;
                if l.is_null() {
                    return Ok(Cow::Owned(Value::Null));
                }
                let r = right(row)?;
                if r.is_null() {
                    return Ok(Cow::Owned(Value::Null));
                }
                Ok(Cow::Owned(Value::Str(format!("{l}{r}"))))
            })
        }
        Node::Case {
            operand,
            whens,
            otherwise,
        } => {
            let otherwise = otherwise.as_deref().map(value_fn);
            let results: Vec<ValueFn> = whens.iter().map(|(_, result)| value_fn(result)).collect();
            match operand {
                Some(operand) => {
                    let operand = value_fn(operand);
                    let values: Vec<ValueFn> =
                        whens.iter().map(|(value, _)| value_fn(value)).collect();
                    Box::new(move |row| {
                        let subject = operand(row)?;
                        if !subject.is_null() {
                            for (value, result) in values.iter().zip(&results) {
                                let candidate = value(row)?;
                                if !candidate.is_null()
                                    && sql_cmp(&subject, &candidate) == Ordering::Equal
                                {
                                    return result(row);
                                }
                            }
                        }
                        match &otherwise {
                            Some(otherwise) => otherwise(row),
                            None => Ok(Cow::Owned(Value::Null)),
                        }
                    })
                }
                None => {
                    let conditions: Vec<TruthFn> = whens.iter().map(|(c, _)| truth_fn(c)).collect();
                    Box::new(move |row| {
                        for (condition, result) in conditions.iter().zip(&results) {
                            if condition(row)? == Some(true) {
                                return result(row);
                            }
                        }
                        match &otherwise {
                            Some(otherwise) => otherwise(row),
                            None => Ok(Cow::Owned(Value::Null)),
                        }
                    })
                }
            }
        }
        Node::Cast(inner, ty, tried) => {
            let (inner, ty, tried) = (value_fn(inner), *ty, *tried);
            Box::new(move |row| {
                let value = inner(row)?;
                if value.type_of() == ty || value.is_null() {
                    return Ok(value);
                }
                match cast_value(&value, ty) {
                    Ok(cast) => Ok(Cow::Owned(cast)),
                    Err(_) if tried => Ok(Cow::Owned(Value::Null)),
                    Err(error) => Err(error),
                }
            })
        }
        Node::Call(func, args) => call_fn(*func, expr.ty, args),
    }
}

fn arith_fn(op: Arith, ty: Type, left: &Expr, right: &Expr) -> ValueFn {
    let (lf, rf) = (value_fn(left), value_fn(right));
    let name = match op {
        Arith::Add => "an addition",
        Arith::Sub => "a subtraction",
        Arith::Mul => "a multiplication",
        Arith::Div => "a division",
        Arith::Mod => "a modulo",
    };
    macro_rules! binary {
        (|$a:ident, $b:ident| $body:expr) => {
            Box::new(move |row| {
                let $a = lf(row)?;
                if $a.is_null() {
                    return Ok(Cow::Owned(Value::Null));
                }
                let $b = rf(row)?;
                if $b.is_null() {
                    return Ok(Cow::Owned(Value::Null));
                }
                Ok(Cow::Owned($body))
            })
        };
    }
    match ty {
        Type::F64 => binary!(|a, b| {
            let (x, y) = (as_f64(&a), as_f64(&b));
            Value::F64(match op {
                Arith::Add => x + y,
                Arith::Sub => x - y,
                Arith::Mul => x * y,
                Arith::Div | Arith::Mod if y == 0.0 => return Err(division_by_zero()),
                Arith::Div => x / y,
                Arith::Mod => x % y,
            })
        }),
        Type::U64 => binary!(|a, b| {
            let (x, y) = (as_u64(&a), as_u64(&b));
            let result = match op {
                Arith::Add => x.checked_add(y),
                Arith::Sub => x.checked_sub(y),
                Arith::Mul => x.checked_mul(y),
                Arith::Div | Arith::Mod if y == 0 => return Err(division_by_zero()),
                Arith::Div => x.checked_div(y),
                Arith::Mod => x.checked_rem(y),
            };
            Value::U64(result.ok_or_else(|| overflow(name))?)
        }),
        Type::I64 | Type::Timestamp => {
            let timestamp = ty == Type::Timestamp;
            binary!(|a, b| {
                let (x, y) = (as_i64(&a)?, as_i64(&b)?);
                let result = match op {
                    Arith::Add => x.checked_add(y),
                    Arith::Sub => x.checked_sub(y),
                    Arith::Mul => x.checked_mul(y),
                    Arith::Div | Arith::Mod if y == 0 => return Err(division_by_zero()),
                    Arith::Div => x.checked_div(y),
                    // `i64::MIN % -1` is 0, though `checked_rem` calls it an overflow.
                    Arith::Mod if y == -1 => Some(0),
                    Arith::Mod => x.checked_rem(y),
                };
                let result = result.ok_or_else(|| overflow(name))?;
                if timestamp {
                    Value::Timestamp(result)
                } else {
                    Value::I64(result)
                }
            })
        }
        // Only NULL operands reach here (the checks allow nothing else).
        _ => Box::new(|_| Ok(Cow::Owned(Value::Null))),
    }
}

fn call_fn(func: Func, ty: Type, args: &[Expr]) -> ValueFn {
    let mut fns: Vec<ValueFn> = args.iter().map(value_fn).collect();
    match func {
        Func::Concat => Box::new(move |row| {
            let mut text = String::new();
            for f in &fns {
                let value = f(row)?;
                if !value.is_null() {
                    use std::fmt::Write;
                    let _ = write!(text, "{value}");
                }
            }
            Ok(Cow::Owned(Value::Str(text)))
        }),
        Func::Coalesce => Box::new(move |row| {
            for f in &fns {
                let value = f(row)?;
                if !value.is_null() {
                    return Ok(value);
                }
            }
            Ok(Cow::Owned(Value::Null))
        }),
        Func::Round if fns.len() == 2 => {
            let digits = fns.pop().expect("two arguments");
            let x = fns.pop().expect("two arguments");
            Box::new(move |row| {
                let value = x(row)?;
                if value.is_null() {
                    return Ok(Cow::Owned(Value::Null));
                }
                let digits = digits(row)?;
                if digits.is_null() {
                    return Ok(Cow::Owned(Value::Null));
                }
                let digits = match digits.as_ref() {
                    Value::U64(u) => i64::try_from(*u).unwrap_or(i64::MAX),
                    other => as_i64(other)?,
                };
                Ok(Cow::Owned(Value::F64(round_to(as_f64(&value), digits))))
            })
        }
        Func::Substr => Box::new(move |row| {
            let mut values = Vec::with_capacity(fns.len());
            for f in &fns {
                let value = f(row)?;
                if value.is_null() {
                    return Ok(Cow::Owned(Value::Null));
                }
                values.push(value);
            }
            let Value::Str(text) = values[0].as_ref() else {
                return Ok(Cow::Owned(Value::Null));
            };
            let start = as_i128(&values[1]);
            let end = match values.get(2) {
                Some(length) => {
                    let length = as_i128(length);
                    if length < 0 {
                        return Err(EvalError(format!("a negative substr length ({length})")));
                    }
                    start + length
                }
                None => i128::MAX,
            };
            let taken: String = text
                .chars()
                .enumerate()
                .filter(|(index, _)| {
                    let position = *index as i128 + 1;
                    position >= start && position < end
                })
                .map(|(_, c)| c)
                .collect();
            Ok(Cow::Owned(Value::Str(taken)))
        }),
        _ => {
            let arg = fns.pop().expect("one argument");
            let _ = ty;
            Box::new(move |row| {
                let value = arg(row)?;
                Ok(Cow::Owned(match (func, value.as_ref()) {
                    (_, Value::Null) => Value::Null,
                    (Func::Abs, Value::I64(i)) => {
                        Value::I64(i.checked_abs().ok_or_else(|| overflow("abs"))?)
                    }
                    (Func::Abs, Value::F64(x)) => Value::F64(x.abs()),
                    (Func::Round, Value::F64(x)) => Value::F64(x.round()),
                    (Func::Floor, Value::F64(x)) => Value::F64(x.floor()),
                    (Func::Ceil, Value::F64(x)) => Value::F64(x.ceil()),
                    (Func::Lower, Value::Str(s)) => Value::Str(s.to_lowercase()),
                    (Func::Upper, Value::Str(s)) => Value::Str(s.to_uppercase()),
                    (Func::Length, Value::Str(s)) => Value::I64(s.chars().count() as i64),
                    (Func::DateTrunc(unit), Value::Timestamp(t)) => Value::Timestamp(
                        t.div_euclid(unit)
                            .checked_mul(unit)
                            .ok_or_else(|| overflow("date_trunc"))?,
                    ),
                    // Integers: abs of a u64, round, floor and ceil are the value.
                    (_, other) => other.clone(),
                }))
            })
        }
    }
}

/// A comparison's closure, given how the two sides compare.
fn compare_fn(cmp: Cmp, left: &Expr, right: &Expr) -> TruthFn {
    match (&left.node, &right.node) {
        (Node::Column(index), Node::Literal(literal))
        | (Node::Literal(literal), Node::Column(index))
            if !literal.is_null() =>
        {
            let flipped = matches!(left.node, Node::Literal(_));
            let (index, literal) = (*index, literal.clone());
            Box::new(move |row| {
                let value = &row[index];
                if value.is_null() {
                    return Ok(None);
                }
                let ordering = sql_cmp(value, &literal);
                let ordering = if flipped {
                    ordering.reverse()
                } else {
                    ordering
                };
                Ok(Some(cmp.holds(ordering)))
            })
        }
        _ => {
            let (lf, rf) = (value_fn(left), value_fn(right));
            Box::new(move |row| {
                let l = lf(row)?;
                if l.is_null() {
                    return Ok(None);
                }
                let r = rf(row)?;
                if r.is_null() {
                    return Ok(None);
                }
                Ok(Some(cmp.holds(sql_cmp(&l, &r))))
            })
        }
    }
}

fn truth_fn(expr: &Expr) -> TruthFn {
    match &expr.node {
        Node::Compare(cmp, left, right) => compare_fn(*cmp, left, right),
        Node::And(left, right) => {
            let (lf, rf) = (truth_fn(left), truth_fn(right));
            Box::new(move |row| match lf(row)? {
                Some(false) => Ok(Some(false)),
                l => Ok(match (l, rf(row)?) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                }),
            })
        }
        Node::Or(left, right) => {
            let (lf, rf) = (truth_fn(left), truth_fn(right));
            Box::new(move |row| match lf(row)? {
                Some(true) => Ok(Some(true)),
                l => Ok(match (l, rf(row)?) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                }),
            })
        }
        Node::Not(inner) => {
            let inner = truth_fn(inner);
            Box::new(move |row| Ok(not3(inner(row)?)))
        }
        Node::IsNull(inner, negated) => {
            let negated = *negated;
            if let Node::Column(index) = inner.node {
                return Box::new(move |row| Ok(Some(row[index].is_null() != negated)));
            }
            let inner = value_fn(inner);
            Box::new(move |row| Ok(Some(inner(row)?.is_null() != negated)))
        }
        Node::In(value, list, negated) => {
            let value = value_fn(value);
            let list: Vec<ValueFn> = list.iter().map(value_fn).collect();
            let negated = *negated;
            Box::new(move |row| {
                let subject = value(row)?;
                if subject.is_null() {
                    return Ok(None);
                }
                let mut saw_null = false;
                for item in &list {
                    let candidate = item(row)?;
                    if candidate.is_null() {
                        saw_null = true;
                    } else if sql_cmp(&subject, &candidate) == Ordering::Equal {
                        return Ok(Some(!negated));
                    }
                }
                Ok(if saw_null { None } else { Some(negated) })
            })
        }
        Node::Between(value, low, high, negated) => {
            let (value, low, high) = (value_fn(value), value_fn(low), value_fn(high));
            let negated = *negated;
            Box::new(move |row| {
                let (v, l, h) = (value(row)?, low(row)?, high(row)?);
                let ge = (!v.is_null() && !l.is_null()).then(|| sql_cmp(&v, &l) != Ordering::Less);
                let le =
                    (!v.is_null() && !h.is_null()).then(|| sql_cmp(&v, &h) != Ordering::Greater);
                let within = match (ge, le) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                };
                Ok(if negated { not3(within) } else { within })
            })
        }
        Node::Like(value, pattern, negated) => {
            let negated = *negated;
            let value = value_fn(value);
            let pattern = value_fn(pattern);
            Box::new(move |row| {
                let v = value(row)?;
                let p = pattern(row)?;
                match (v.as_ref(), p.as_ref()) {
                    (Value::Str(text), Value::Str(pattern)) => {
                        Ok(Some(like(text, pattern) != negated))
                    }
                    _ => Ok(None),
                }
            })
        }
        _ => {
            let value = value_fn(expr);
            Box::new(move |row| {
                Ok(match value(row)?.as_ref() {
                    Value::Bool(b) => Some(*b),
                    _ => None,
                })
            })
        }
    }
}
