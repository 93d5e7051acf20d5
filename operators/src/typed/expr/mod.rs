//! SQL expressions over typed rows: parsed with `sqlparser`, type-checked against a
//! [`Schema`] once ([`Expr::parse`]), and compiled into a tree of closures
//! ([`Expr::compile`]) that evaluates a row without parsing or looking up a name.
//!
//! The language (documented with examples in `configs/README.md`):
//!
//! - fields by name, literals (`12`, `1.5`, `'text'`, `TRUE`, `NULL`);
//! - `+ - * / %` on numbers (`i64`, `u64`, `f64`; the result is `f64` if either side is,
//!   else `i64` if either side is, else `u64`), a timestamp plus or minus an integer of
//!   milliseconds, the difference of two timestamps (`i64` ms), `||` on text;
//! - `= <> < <= > >=` between numbers (and timestamps), between texts or between bools;
//!   `AND`, `OR`, `NOT`; `IN (…)`, `BETWEEN … AND …`, `LIKE` (`%`, `_`), `IS [NOT] NULL`;
//! - `CASE [x] WHEN … THEN … [ELSE …] END`, `CAST(x AS type)` and `TRY_CAST` (NULL when
//!   the value does not convert), with the schema's type names or SQL's (`BIGINT`,
//!   `DOUBLE`, `VARCHAR`, `BOOLEAN`, `TIMESTAMP`, …);
//! - the functions `abs`, `round(x[, digits])`, `floor`, `ceil`, `lower`, `upper`,
//!   `substr(s, start[, length])` (1-based), `length`, `concat(…)` (skips NULLs),
//!   `coalesce(…)` and `date_trunc('second' | 'minute' | 'hour' | 'day', ts)`.
//!
//! NULL is SQL's: an operator or function with a NULL operand gives NULL (except `IS
//! NULL`, `coalesce`, `concat`, and `AND`/`OR`, which follow three-valued logic: `FALSE
//! AND NULL` is `FALSE`, `TRUE OR NULL` is `TRUE`); `x IN (…)` with no match and a NULL
//! in the list is NULL; a filter keeps a row only where its condition is `TRUE`.
//!
//! What fails at run time — an integer overflow, a division by zero, a `CAST` that
//! cannot convert — is the row's error ([`EvalError`]): the operator sends the row to its
//! dead letters with the reason and goes on.

use std::fmt;

use sqlparser::ast::{self as sql, Spanned as _};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token};

use super::schema::Schema;
use super::value::{Type, Value};

mod compile;
#[cfg(test)]
pub(crate) mod interp;
mod join;
#[cfg(test)]
mod tests;

pub use compile::{Compiled, Predicate};
pub use join::JoinKeys;

/// The longest expression text, bytes: far above any real one, so that a checked
/// expression stays small.
pub const MAX_EXPRESSION_BYTES: usize = 4096;

/// How deep expressions may nest (an operand of an operand of …).
pub const MAX_DEPTH: usize = 64;

/// Why an expression was refused: where in its text (a byte offset) and what was
/// expected there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprError {
    /// Byte offset in the expression's text.
    pub at: usize,
    /// What was expected.
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.at, self.message)
    }
}

impl std::error::Error for ExprError {}

/// Why evaluating an expression on a row failed (an overflow, a division by zero, a
/// `CAST` that cannot convert): the reason of the row's dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalError(pub String);

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An arithmetic operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl Cmp {
    /// Whether `ordering` (left against right) satisfies the comparison.
    pub(crate) fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Self::Eq => ordering == Equal,
            Self::NotEq => ordering != Equal,
            Self::Lt => ordering == Less,
            Self::LtEq => ordering != Greater,
            Self::Gt => ordering == Greater,
            Self::GtEq => ordering != Less,
        }
    }
}

/// A scalar function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Func {
    Abs,
    Round,
    Floor,
    Ceil,
    Lower,
    Upper,
    Substr,
    Length,
    Concat,
    Coalesce,
    /// `date_trunc` to this many milliseconds.
    DateTrunc(i64),
}

/// A checked expression node.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    Column(usize),
    Literal(Value),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Arith(Arith, Box<Expr>, Box<Expr>),
    /// `||`.
    Concat(Box<Expr>, Box<Expr>),
    Compare(Cmp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    IsNull(Box<Expr>, bool),
    In(Box<Expr>, Vec<Expr>, bool),
    Between(Box<Expr>, Box<Expr>, Box<Expr>, bool),
    Like(Box<Expr>, Box<Expr>, bool),
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    /// `CAST` (`false`) or `TRY_CAST` (`true`).
    Cast(Box<Expr>, Type, bool),
    Call(Func, Vec<Expr>),
}

/// A type-checked expression over the rows of one schema.
///
/// ```
/// use dirigo_operators::typed::{Expr, Schema, Type, Value};
///
/// let schema = Schema::new(vec![("amount", Type::F64), ("merchant", Type::String)]);
/// let big = Expr::parse("amount > 1000 AND merchant <> 'm0'", &schema).unwrap();
/// assert_eq!(big.ty(), Type::Bool);
/// let big = big.compile();
/// let row = vec![Value::F64(1250.5), Value::Str("m3".into())];
/// assert_eq!(big.eval(&row).unwrap().into_owned(), Value::Bool(true));
///
/// // Mistakes are found when the text is checked, with where they are.
/// let error = Expr::parse("amount > 'x'", &schema).unwrap_err();
/// assert_eq!(error.at, 9);
/// assert!(error.message.contains("compare"), "{}", error.message);
/// ```
#[derive(Clone, Debug)]
pub struct Expr {
    pub(crate) ty: Type,
    pub(crate) node: Node,
}

impl Expr {
    /// Parses and type-checks `text` against the fields of `schema`.
    ///
    /// # Errors
    /// A syntax error, an unknown field or function, a type mismatch, or a construct the
    /// language does not have; with the byte offset in `text` where it is.
    pub fn parse(text: &str, schema: &Schema) -> Result<Self, ExprError> {
        let parsed = parse_sql(text)?;
        Checker { text, schema }.check(&parsed, 0)
    }

    /// Like [`parse`](Self::parse), for a condition: its type must be `bool`.
    ///
    /// # Errors
    /// As [`parse`](Self::parse), and when the expression is not a condition.
    pub fn parse_condition(text: &str, schema: &Schema) -> Result<Self, ExprError> {
        let expr = Self::parse(text, schema)?;
        if !matches!(expr.ty, Type::Bool | Type::Null) {
            return Err(ExprError {
                at: text.len() - text.trim_start().len(),
                message: format!(
                    "a condition (a bool, such as `amount > 1000`); this expression is of type {}",
                    expr.ty
                ),
            });
        }
        Ok(expr)
    }

    /// The type of its values (NULL aside).
    pub fn ty(&self) -> Type {
        self.ty
    }

    /// The field it reads, if it is only a field.
    pub fn as_column(&self) -> Option<usize> {
        match self.node {
            Node::Column(index) => Some(index),
            _ => None,
        }
    }

    /// The field and the text, if it is only `field = 'text'` (either way round).
    ///
    /// ```
    /// use dirigo_operators::typed::{Expr, Schema, Type};
    ///
    /// let schema = Schema::new(vec![("n", Type::I64), ("event", Type::String)]);
    /// let bids = Expr::parse("'bid' = event", &schema).unwrap();
    /// assert_eq!(bids.as_column_equals_text(), Some((1, "bid")));
    /// assert_eq!(Expr::parse("event <> 'bid'", &schema).unwrap().as_column_equals_text(), None);
    /// ```
    pub fn as_column_equals_text(&self) -> Option<(usize, &str)> {
        let Node::Compare(Cmp::Eq, left, right) = &self.node else {
            return None;
        };
        match (&left.node, &right.node) {
            (Node::Column(at), Node::Literal(Value::Str(text)))
            | (Node::Literal(Value::Str(text)), Node::Column(at)) => Some((*at, text)),
            _ => None,
        }
    }

    fn new(ty: Type, node: Node) -> Self {
        Self { ty, node }
    }
}

/// Parses `text` as one SQL expression (the whole text).
pub(crate) fn parse_sql(text: &str) -> Result<sql::Expr, ExprError> {
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(ExprError {
            at: 0,
            message: format!(
                "an expression of at most {MAX_EXPRESSION_BYTES} bytes; this one has {}",
                text.len()
            ),
        });
    }
    if text.trim().is_empty() {
        return Err(ExprError {
            at: 0,
            message: "an expression, found an empty string".into(),
        });
    }
    let dialect = GenericDialect {};
    let syntax = |error: sqlparser::parser::ParserError| syntax_error(text, &error.to_string());
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(MAX_DEPTH)
        .try_with_sql(text)
        .map_err(syntax)?;
    let expr = parser.parse_expr().map_err(syntax)?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(ExprError {
            at: offset_of(text, next.span.start).unwrap_or(0),
            message: format!("the end of the expression, found `{}`", next.token),
        });
    }
    Ok(expr)
}

/// A parser error as an [`ExprError`]: its position taken out of the message.
fn syntax_error(text: &str, message: &str) -> ExprError {
    let message = message
        .strip_prefix("sql parser error: ")
        .unwrap_or(message);
    let (message, at) = match message.rfind(" at Line: ") {
        Some(cut) => {
            let place = &message[cut + " at Line: ".len()..];
            let mut parts = place.split(", Column: ");
            let line = parts.next().and_then(|l| l.trim().parse().ok());
            let column = parts.next().and_then(|c| c.trim().parse().ok());
            let at = match (line, column) {
                (Some(line), Some(column)) => offset_of(text, Location { line, column }),
                _ => None,
            };
            (&message[..cut], at)
        }
        None => (message, None),
    };
    let message = message.strip_prefix("Expected: ").map_or_else(
        || message.to_owned(),
        |rest| rest.replacen(", found:", ", found", 1),
    );
    ExprError {
        at: at.unwrap_or(text.len()),
        message,
    }
}

/// The byte offset in `text` of a 1-based line and column (columns count characters).
pub(crate) fn offset_of(text: &str, location: Location) -> Option<usize> {
    if location.line == 0 {
        return None;
    }
    let mut line = 1;
    let mut column = 1;
    for (offset, c) in text.char_indices() {
        if line == location.line && column == location.column {
            return Some(offset);
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line == location.line && column == location.column).then_some(text.len())
}

/// The result type of arithmetic on two numbers: `f64` if either is, else `i64` if
/// either is, else `u64` (NULL takes the other side's type).
pub(crate) fn numeric_result(left: Type, right: Type) -> Type {
    match (left, right) {
        (Type::Null, other) | (other, Type::Null) => other,
        (Type::F64, _) | (_, Type::F64) => Type::F64,
        (Type::I64, _) | (_, Type::I64) => Type::I64,
        _ => Type::U64,
    }
}

/// Whether values of the two types can be compared.
pub(crate) fn comparable(left: Type, right: Type) -> bool {
    let numberish = |t: Type| t.is_numeric() || t == Type::Timestamp;
    left == Type::Null
        || right == Type::Null
        || left == right
        || (numberish(left) && numberish(right))
}

/// The type both of two branches' values fit (CASE, coalesce), if any.
pub(crate) fn unify(left: Type, right: Type) -> Option<Type> {
    match (left, right) {
        (Type::Null, other) | (other, Type::Null) => Some(other),
        (a, b) if a == b => Some(a),
        (a, b) if a.is_numeric() && b.is_numeric() => Some(numeric_result(a, b)),
        _ => None,
    }
}

/// The type a `CAST` names.
fn cast_type(data_type: &sql::DataType) -> Option<Type> {
    let name = data_type.to_string().to_ascii_lowercase();
    let name = name.split('(').next().unwrap_or("").trim();
    if let Some(ty) = Type::from_name(name) {
        return Some(ty);
    }
    Some(match name {
        "bigint" | "int" | "integer" | "int64" | "int8" | "smallint" | "tinyint" => Type::I64,
        "ubigint" | "bigint unsigned" | "uint64" | "unsigned bigint" => Type::U64,
        "double" | "double precision" | "float" | "float64" | "float8" | "real" => Type::F64,
        "varchar" | "text" | "char" | "character varying" | "char varying" => Type::String,
        "boolean" => Type::Bool,
        "timestamp" | "datetime" => Type::Timestamp,
        _ => return None,
    })
}

/// The milliseconds of a `date_trunc` unit.
fn trunc_unit(unit: &str) -> Option<i64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "millisecond" | "milliseconds" => 1,
        "second" | "seconds" => 1_000,
        "minute" | "minutes" => 60_000,
        "hour" | "hours" => 3_600_000,
        "day" | "days" => 86_400_000,
        _ => return None,
    })
}

/// A literal number: `i64` if it is an integer that fits, else `u64` if it fits, else
/// `f64`.
fn number(text: &str) -> Option<Value> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::I64(i));
    }
    if let Ok(u) = text.parse::<u64>() {
        return Some(Value::U64(u));
    }
    text.parse::<f64>().ok().map(Value::F64)
}

struct Checker<'a> {
    text: &'a str,
    schema: &'a Schema,
}

impl Checker<'_> {
    fn at(&self, node: &impl sqlparser::ast::Spanned) -> usize {
        offset_of(self.text, node.span().start).unwrap_or(0)
    }

    fn error<T>(
        &self,
        node: &impl sqlparser::ast::Spanned,
        message: String,
    ) -> Result<T, ExprError> {
        Err(ExprError {
            at: self.at(node),
            message,
        })
    }

    /// How an operand reads in a message: its text, and its type.
    fn describe(&self, node: &sql::Expr, ty: Type) -> String {
        let shown = node.to_string();
        let shown = if shown.chars().count() > 40 {
            format!("{}…", shown.chars().take(40).collect::<String>())
        } else {
            shown
        };
        if ty == Type::Null {
            format!("`{shown}` is NULL")
        } else {
            format!("`{shown}` is {}", article(ty))
        }
    }

    fn check(&self, e: &sql::Expr, depth: usize) -> Result<Expr, ExprError> {
        if depth >= MAX_DEPTH {
            return self.error(e, format!("an expression nested at most {MAX_DEPTH} deep"));
        }
        let sub = |x: &sql::Expr| self.check(x, depth + 1);
        let boxed = |x: &sql::Expr| sub(x).map(Box::new);
        Ok(match e {
            sql::Expr::Identifier(ident) => self.column(ident)?,
            sql::Expr::CompoundIdentifier(parts) => self.qualified(e, parts)?,
            sql::Expr::Value(value) => self.literal(value)?,
            sql::Expr::Nested(inner) => sub(inner)?,
            sql::Expr::UnaryOp { op, expr } => {
                let inner = sub(expr)?;
                match op {
                    sql::UnaryOperator::Not => {
                        self.condition_operand(expr, inner.ty, "NOT")?;
                        Expr::new(Type::Bool, Node::Not(Box::new(inner)))
                    }
                    sql::UnaryOperator::Plus if inner.ty.is_numeric() || inner.ty == Type::Null => {
                        inner
                    }
                    sql::UnaryOperator::Minus
                        if inner.ty.is_numeric() || inner.ty == Type::Null =>
                    {
                        negate(inner)
                    }
                    sql::UnaryOperator::Plus | sql::UnaryOperator::Minus => {
                        return self.error(
                            e,
                            format!("a number after `{op}`; {}", self.describe(expr, inner.ty)),
                        )
                    }
                    _ => {
                        return self
                            .error(e, format!("an operator of the language; `{op}` is not one"))
                    }
                }
            }
            sql::Expr::BinaryOp { left, op, right } => self.binary(e, left, op, right, depth)?,
            sql::Expr::IsNull(inner) => Expr::new(Type::Bool, Node::IsNull(boxed(inner)?, false)),
            sql::Expr::IsNotNull(inner) => Expr::new(Type::Bool, Node::IsNull(boxed(inner)?, true)),
            sql::Expr::In {
                expr,
                target,
                negated,
                ..
            } => {
                let sql::InTarget::List(list) = target else {
                    return self.error(
                        e,
                        "a list of values after IN, such as `IN ('a', 'b')`".into(),
                    );
                };
                let left = sub(expr)?;
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    let checked = sub(item)?;
                    if !comparable(left.ty, checked.ty) {
                        return self.error(
                            item,
                            format!(
                                "values IN compares with {}; {}",
                                article(left.ty),
                                self.describe(item, checked.ty)
                            ),
                        );
                    }
                    items.push(checked);
                }
                Expr::new(Type::Bool, Node::In(Box::new(left), items, *negated))
            }
            sql::Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let value = sub(expr)?;
                let (low_c, high_c) = (sub(low)?, sub(high)?);
                for (bound, checked) in [(low, &low_c), (high, &high_c)] {
                    if !comparable(value.ty, checked.ty) {
                        return self.error(
                            bound.as_ref(),
                            format!(
                                "a bound BETWEEN can compare with {}; {}",
                                article(value.ty),
                                self.describe(bound, checked.ty)
                            ),
                        );
                    }
                }
                Expr::new(
                    Type::Bool,
                    Node::Between(Box::new(value), Box::new(low_c), Box::new(high_c), *negated),
                )
            }
            sql::Expr::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                if *any || escape_char.is_some() {
                    return self.error(e, "`x LIKE 'pattern'` (without ANY or ESCAPE)".into());
                }
                let value = sub(expr)?;
                let pattern_c = sub(pattern)?;
                for (operand, checked) in [(expr, &value), (pattern, &pattern_c)] {
                    if !matches!(checked.ty, Type::String | Type::Null) {
                        return self.error(
                            operand.as_ref(),
                            format!(
                                "text on both sides of LIKE; {}",
                                self.describe(operand, checked.ty)
                            ),
                        );
                    }
                }
                Expr::new(
                    Type::Bool,
                    Node::Like(Box::new(value), Box::new(pattern_c), *negated),
                )
            }
            sql::Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(
                operand.as_deref(),
                conditions,
                else_result.as_deref(),
                depth,
            )?,
            sql::Expr::Cast {
                kind,
                expr,
                data_type,
                format,
            } => {
                if format.is_some() {
                    return self.error(e, "CAST without FORMAT".into());
                }
                let Some(ty) = cast_type(data_type) else {
                    // The type's name, after the value.
                    let from = offset_of(self.text, expr.span().end).unwrap_or(0);
                    let name = data_type.to_string().to_ascii_lowercase();
                    let at = self
                        .text
                        .to_ascii_lowercase()
                        .get(from..)
                        .and_then(|rest| rest.find(&name));
                    return Err(ExprError {
                        at: at.map_or_else(|| self.at(e), |at| from + at),
                        message: format!(
                            "a type to CAST to ({}, or BIGINT, DOUBLE, VARCHAR, BOOLEAN, TIMESTAMP); not `{data_type}`",
                            Type::NAMES
                        ),
                    });
                };
                let tried = matches!(kind, sql::CastKind::TryCast | sql::CastKind::SafeCast);
                Expr::new(ty, Node::Cast(boxed(expr)?, ty, tried))
            }
            sql::Expr::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![sub(expr)?];
                let Some(from) = substring_from else {
                    return self.error(e, "substr(text, start[, length])".into());
                };
                args.push(sub(from)?);
                if let Some(length) = substring_for {
                    args.push(sub(length)?);
                }
                let originals: Vec<&sql::Expr> = std::iter::once(expr.as_ref())
                    .chain(substring_from.as_deref())
                    .chain(substring_for.as_deref())
                    .collect();
                self.call_typed(e, Func::Substr, args, &originals)?
            }
            sql::Expr::Floor { expr, field } | sql::Expr::Ceil { expr, field } => {
                let plain = matches!(
                    field,
                    sql::CeilFloorKind::DateTimeField(sql::DateTimeField::NoDateTime)
                );
                if !plain {
                    return self.error(e, "floor(x) or ceil(x) of one number".into());
                }
                let func = if matches!(e, sql::Expr::Floor { .. }) {
                    Func::Floor
                } else {
                    Func::Ceil
                };
                let arg = sub(expr)?;
                self.call_typed(e, func, vec![arg], &[expr])?
            }
            sql::Expr::Function(function) => self.function(e, function, depth)?,
            _ => {
                return self.error(
                    e,
                    format!(
                        "an expression of the language (fields, literals, operators, CASE, CAST, \
                         and the functions in the docs); `{e}` is not one"
                    ),
                )
            }
        })
    }

    /// `input.field`: a field of a join's rows, which are named by their input (see
    /// [`Schema`]'s qualified names); in any other stream, a field whose name has a dot.
    fn qualified(&self, e: &sql::Expr, parts: &[sql::Ident]) -> Result<Expr, ExprError> {
        let name: Vec<&str> = parts.iter().map(|part| part.value.as_str()).collect();
        let name = name.join(".");
        let quoted = parts.iter().any(|part| part.quote_style.is_some());
        match self.lookup(&name, quoted) {
            Some(index) => Ok(Expr::new(
                self.schema.fields()[index].ty,
                Node::Column(index),
            )),
            None => self.error(
                e,
                format!(
                    "a field of the input, one of: {}; there is no `{name}`",
                    self.schema.names()
                ),
            ),
        }
    }

    /// The position of field `name`: exactly, else the one field whose name differs only
    /// in case (unless `quoted`).
    fn lookup(&self, name: &str, quoted: bool) -> Option<usize> {
        self.schema.index_of(name).or_else(|| {
            if quoted {
                return None;
            }
            let mut matches = self
                .schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, field)| field.name.eq_ignore_ascii_case(name));
            match (matches.next(), matches.next()) {
                (Some((index, _)), None) => Some(index),
                _ => None,
            }
        })
    }

    fn column(&self, ident: &sql::Ident) -> Result<Expr, ExprError> {
        let at = offset_of(self.text, ident.span.start).unwrap_or(0);
        let index = match self.lookup(&ident.value, ident.quote_style.is_some()) {
            Some(index) => Some(index),
            // In a join's rows (`input.field`), a field name alone is the one field of
            // that name, if only one input has it.
            None => {
                let suffix = format!(".{}", ident.value);
                let found: Vec<usize> = self
                    .schema
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(_, field)| field.name.ends_with(&suffix))
                    .map(|(index, _)| index)
                    .collect();
                match found.as_slice() {
                    [one] => Some(*one),
                    [] => None,
                    several => {
                        let names: Vec<&str> = several
                            .iter()
                            .map(|&at| self.schema.fields()[at].name.as_str())
                            .collect();
                        return Err(ExprError {
                            at,
                            message: format!(
                                "one field; `{}` is in both inputs: write {}",
                                ident.value,
                                names.join(" or ")
                            ),
                        });
                    }
                }
            }
        };
        match index {
            Some(index) => Ok(Expr::new(
                self.schema.fields()[index].ty,
                Node::Column(index),
            )),
            None => Err(ExprError {
                at,
                message: format!(
                    "a field of the input, one of: {}; there is no `{}`",
                    self.schema.names(),
                    ident.value
                ),
            }),
        }
    }

    fn literal(&self, value: &sql::ValueWithSpan) -> Result<Expr, ExprError> {
        let literal = match &value.value {
            sql::Value::Number(text, _) => number(text),
            sql::Value::SingleQuotedString(text) => Some(Value::Str(text.clone())),
            sql::Value::Boolean(b) => Some(Value::Bool(*b)),
            sql::Value::Null => Some(Value::Null),
            _ => None,
        };
        match literal {
            Some(literal) => Ok(Expr::new(literal.type_of(), Node::Literal(literal))),
            None => Err(ExprError {
                at: offset_of(self.text, value.span.start).unwrap_or(0),
                message: format!(
                    "a literal number, 'text', TRUE, FALSE or NULL; not `{}`",
                    value.value
                ),
            }),
        }
    }

    fn condition_operand(&self, e: &sql::Expr, ty: Type, op: &str) -> Result<(), ExprError> {
        if matches!(ty, Type::Bool | Type::Null) {
            Ok(())
        } else {
            self.error(
                e,
                format!("a condition (a bool) for {op}; {}", self.describe(e, ty)),
            )
        }
    }

    fn binary(
        &self,
        e: &sql::Expr,
        left: &sql::Expr,
        op: &sql::BinaryOperator,
        right: &sql::Expr,
        depth: usize,
    ) -> Result<Expr, ExprError> {
        use sql::BinaryOperator as B;
        let l = self.check(left, depth + 1)?;
        let r = self.check(right, depth + 1)?;
        let cmp = match op {
            B::Eq => Some(Cmp::Eq),
            B::NotEq => Some(Cmp::NotEq),
            B::Lt => Some(Cmp::Lt),
            B::LtEq => Some(Cmp::LtEq),
            B::Gt => Some(Cmp::Gt),
            B::GtEq => Some(Cmp::GtEq),
            _ => None,
        };
        if let Some(cmp) = cmp {
            if !comparable(l.ty, r.ty) {
                // The left side sets what is expected; the right one is the mistake.
                return self.error(
                    right,
                    format!(
                        "a value that `{op}` can compare with {} (`{left}`); {}",
                        article(l.ty),
                        self.describe(right, r.ty)
                    ),
                );
            }
            return Ok(Expr::new(
                Type::Bool,
                Node::Compare(cmp, Box::new(l), Box::new(r)),
            ));
        }
        match op {
            B::And | B::Or => {
                let name = if *op == B::And { "AND" } else { "OR" };
                self.condition_operand(left, l.ty, name)?;
                self.condition_operand(right, r.ty, name)?;
                let node = if *op == B::And {
                    Node::And(Box::new(l), Box::new(r))
                } else {
                    Node::Or(Box::new(l), Box::new(r))
                };
                Ok(Expr::new(Type::Bool, node))
            }
            B::StringConcat => Ok(Expr::new(
                Type::String,
                Node::Concat(Box::new(l), Box::new(r)),
            )),
            B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo => {
                let arith = match op {
                    B::Plus => Arith::Add,
                    B::Minus => Arith::Sub,
                    B::Multiply => Arith::Mul,
                    B::Divide => Arith::Div,
                    _ => Arith::Mod,
                };
                let ty = self.arith_type(e, arith, (left, l.ty), (right, r.ty), op)?;
                Ok(Expr::new(ty, Node::Arith(arith, Box::new(l), Box::new(r))))
            }
            _ => self.error(e, format!("an operator of the language; `{op}` is not one")),
        }
    }

    fn arith_type(
        &self,
        e: &sql::Expr,
        arith: Arith,
        (left, l): (&sql::Expr, Type),
        (right, r): (&sql::Expr, Type),
        op: &sql::BinaryOperator,
    ) -> Result<Type, ExprError> {
        let number = |t: Type| t.is_numeric() || t == Type::Null;
        let integer = |t: Type| t.is_integer() || t == Type::Null;
        match (l, r) {
            (Type::Timestamp, Type::Timestamp) if arith == Arith::Sub => return Ok(Type::I64),
            (Type::Timestamp, t) if integer(t) && matches!(arith, Arith::Add | Arith::Sub) => {
                return Ok(Type::Timestamp)
            }
            (t, Type::Timestamp) if integer(t) && arith == Arith::Add => {
                return Ok(Type::Timestamp)
            }
            _ => {}
        }
        if number(l) && number(r) {
            return Ok(numeric_result(l, r));
        }
        let bad = if number(l) || l == Type::Timestamp {
            (right, r)
        } else {
            (left, l)
        };
        self.error(
            e,
            format!(
                "numbers on both sides of `{op}` (or a timestamp and integer milliseconds); {}",
                self.describe(bad.0, bad.1)
            ),
        )
        .map_err(|mut error: ExprError| {
            error.at = self.at(bad.0);
            error
        })
    }

    fn case(
        &self,
        operand: Option<&sql::Expr>,
        conditions: &[sql::CaseWhen],
        else_result: Option<&sql::Expr>,
        depth: usize,
    ) -> Result<Expr, ExprError> {
        let operand = operand
            .map(|o| Ok::<_, ExprError>((o, self.check(o, depth + 1)?)))
            .transpose()?;
        let mut ty = Type::Null;
        let mut whens = Vec::with_capacity(conditions.len());
        let mut results = Vec::new();
        for when in conditions {
            let condition = self.check(&when.condition, depth + 1)?;
            match &operand {
                Some((_, operand)) if !comparable(operand.ty, condition.ty) => {
                    return self.error(
                        &when.condition,
                        format!(
                            "a value CASE can compare with {}; {}",
                            article(operand.ty),
                            self.describe(&when.condition, condition.ty)
                        ),
                    )
                }
                Some(_) => {}
                None => self.condition_operand(&when.condition, condition.ty, "WHEN")?,
            }
            let result = self.check(&when.result, depth + 1)?;
            results.push((&when.result, result.ty));
            whens.push((condition, result));
        }
        let otherwise = else_result
            .map(|x| Ok::<_, ExprError>((x, self.check(x, depth + 1)?)))
            .transpose()?;
        if let Some((x, checked)) = &otherwise {
            results.push((x, checked.ty));
        }
        for (result, result_ty) in results {
            ty = match unify(ty, result_ty) {
                Some(ty) => ty,
                None => {
                    return self.error(
                        result,
                        format!(
                            "CASE results of one type ({} so far); {}",
                            ty,
                            self.describe(result, result_ty)
                        ),
                    )
                }
            };
        }
        let whens = whens
            .into_iter()
            .map(|(condition, result)| (condition, widen(result, ty)))
            .collect();
        Ok(Expr::new(
            ty,
            Node::Case {
                operand: operand.map(|(_, o)| Box::new(o)),
                whens,
                otherwise: otherwise.map(|(_, o)| Box::new(widen(o, ty))),
            },
        ))
    }

    fn function(
        &self,
        e: &sql::Expr,
        function: &sql::Function,
        depth: usize,
    ) -> Result<Expr, ExprError> {
        let name = function.name.to_string().to_ascii_lowercase();
        let func = match name.as_str() {
            "abs" => Func::Abs,
            "round" => Func::Round,
            "floor" => Func::Floor,
            "ceil" | "ceiling" => Func::Ceil,
            "lower" => Func::Lower,
            "upper" => Func::Upper,
            "substr" | "substring" => Func::Substr,
            "length" | "char_length" => Func::Length,
            "concat" => Func::Concat,
            "coalesce" => Func::Coalesce,
            "date_trunc" => Func::DateTrunc(0),
            "count" | "sum" | "min" | "max" | "avg" | "first" | "last" => {
                return self.error(
                    e,
                    format!(
                    "a scalar expression; `{name}` is an aggregate, for a window's `aggregates`"
                ),
                )
            }
            _ => {
                return self.error(
                    e,
                    format!(
                    "a function of the language (abs, round, floor, ceil, lower, upper, substr, \
                         length, concat, coalesce, date_trunc); there is no `{name}`"
                ),
                )
            }
        };
        let args = plain_arguments(function).map_err(|message| ExprError {
            at: self.at(e),
            message,
        })?;
        if let Func::DateTrunc(_) = func {
            let [unit, ts] = args.as_slice() else {
                return self.error(e, "date_trunc('minute', timestamp): two arguments".into());
            };
            let unit_ms = match unit {
                sql::Expr::Value(sql::ValueWithSpan {
                    value: sql::Value::SingleQuotedString(unit),
                    ..
                }) => trunc_unit(unit),
                _ => None,
            };
            let Some(unit_ms) = unit_ms else {
                return self.error(
                    *unit,
                    "a unit in quotes: 'millisecond', 'second', 'minute', 'hour' or 'day'".into(),
                );
            };
            let ts_checked = self.check(ts, depth + 1)?;
            return self.call_typed(e, Func::DateTrunc(unit_ms), vec![ts_checked], &[*ts]);
        }
        let mut checked = Vec::with_capacity(args.len());
        for arg in &args {
            checked.push(self.check(arg, depth + 1)?);
        }
        self.call_typed(e, func, checked, &args)
    }

    /// The type of `func` applied to `args` (checked, with their texts in `originals`).
    fn call_typed(
        &self,
        e: &sql::Expr,
        func: Func,
        args: Vec<Expr>,
        originals: &[&sql::Expr],
    ) -> Result<Expr, ExprError> {
        let count = |range: std::ops::RangeInclusive<usize>, usage: &str| {
            if range.contains(&args.len()) {
                Ok(())
            } else {
                self.error(e, format!("{usage}; found {} arguments", args.len()))
            }
        };
        let expect = |index: usize, ok: fn(Type) -> bool, what: &str| {
            let ty = args[index].ty;
            if ok(ty) || ty == Type::Null {
                Ok(())
            } else {
                self.error(
                    originals[index],
                    format!("{what}; {}", self.describe(originals[index], ty)),
                )
            }
        };
        let ty = match func {
            Func::Abs | Func::Floor | Func::Ceil => {
                count(1..=1, "one number")?;
                expect(0, Type::is_numeric, "a number")?;
                args[0].ty
            }
            Func::Round => {
                count(1..=2, "round(number[, digits])")?;
                expect(0, Type::is_numeric, "a number to round")?;
                if args.len() == 2 {
                    expect(1, Type::is_integer, "an integer number of digits")?;
                    Type::F64
                } else {
                    args[0].ty
                }
            }
            Func::Lower | Func::Upper | Func::Length => {
                count(1..=1, "one text")?;
                expect(0, |t| t == Type::String, "text")?;
                if func == Func::Length {
                    Type::I64
                } else {
                    Type::String
                }
            }
            Func::Substr => {
                count(2..=3, "substr(text, start[, length])")?;
                expect(0, |t| t == Type::String, "text")?;
                expect(
                    1,
                    Type::is_integer,
                    "an integer start (1 is the first character)",
                )?;
                if args.len() == 3 {
                    expect(2, Type::is_integer, "an integer length")?;
                }
                Type::String
            }
            Func::Concat => {
                count(1..=usize::MAX, "concat(value, …)")?;
                Type::String
            }
            Func::Coalesce => {
                count(1..=usize::MAX, "coalesce(value, …)")?;
                let mut ty = Type::Null;
                for (index, arg) in args.iter().enumerate() {
                    ty = match unify(ty, arg.ty) {
                        Some(ty) => ty,
                        None => {
                            return self.error(
                                originals[index],
                                format!(
                                    "coalesce arguments of one type ({ty} so far); {}",
                                    self.describe(originals[index], arg.ty)
                                ),
                            )
                        }
                    };
                }
                let args = args.into_iter().map(|arg| widen(arg, ty)).collect();
                return Ok(Expr::new(ty, Node::Call(func, args)));
            }
            Func::DateTrunc(_) => {
                expect(0, |t| t == Type::Timestamp, "a timestamp to truncate")?;
                Type::Timestamp
            }
        };
        Ok(Expr::new(ty, Node::Call(func, args)))
    }
}

/// The positional arguments of a plain function call (no DISTINCT, ORDER BY, FILTER,
/// OVER, named arguments or `*`).
pub(crate) fn plain_arguments(function: &sql::Function) -> Result<Vec<&sql::Expr>, String> {
    let name = function.name.to_string();
    if function.filter.is_some() || function.over.is_some() || !function.within_group.is_empty() {
        return Err(format!(
            "a plain call of `{name}` (no FILTER, OVER or WITHIN GROUP)"
        ));
    }
    if !matches!(function.parameters, sql::FunctionArguments::None) {
        return Err(format!("one argument list for `{name}`"));
    }
    match &function.args {
        sql::FunctionArguments::None => {
            Err(format!("`{name}(…)` with its arguments in parentheses"))
        }
        sql::FunctionArguments::Subquery(_) => Err(format!("arguments for `{name}`, not a query")),
        sql::FunctionArguments::List(list) => {
            if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                return Err(format!(
                    "plain arguments for `{name}` (DISTINCT only in `count`)"
                ));
            }
            list.args
                .iter()
                .map(|arg| match arg {
                    sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(expr)) => Ok(expr),
                    _ => Err(format!("positional values as the arguments of `{name}`")),
                })
                .collect()
        }
    }
}

/// `expr` as a value of type `ty` (a branch of a CASE or coalesce whose type is wider):
/// every branch then gives values of the expression's one type.
fn widen(expr: Expr, ty: Type) -> Expr {
    if expr.ty == ty || expr.ty == Type::Null {
        expr
    } else {
        Expr::new(ty, Node::Cast(Box::new(expr), ty, false))
    }
}

/// `-x`, folding a literal.
fn negate(inner: Expr) -> Expr {
    if let Node::Literal(value) = &inner.node {
        let folded = match value {
            Value::I64(i) => i.checked_neg().map(Value::I64),
            Value::U64(u) if *u == 1 << 63 => Some(Value::I64(i64::MIN)),
            Value::F64(x) => Some(Value::F64(-x)),
            Value::Null => Some(Value::Null),
            _ => None,
        };
        if let Some(folded) = folded {
            return Expr::new(folded.type_of(), Node::Literal(folded));
        }
    }
    let ty = if inner.ty == Type::U64 {
        Type::I64
    } else {
        inner.ty
    };
    Expr::new(ty, Node::Neg(Box::new(inner)))
}

/// A type with its article, for messages: "a string", "an i64", "NULL".
pub fn article(ty: Type) -> String {
    match ty {
        Type::I64 | Type::U64 | Type::F64 => format!("an {ty}"),
        Type::Null => "NULL".into(),
        _ => format!("a {ty}"),
    }
}
