//! A windowed join's `on` condition: equalities joined by `AND`, each between an
//! expression over the left input's fields and one over the right input's, such as
//! `people.person_id = auctions.seller`. They become the two sides' key expressions
//! ([`JoinKeys`]), each type-checked against its own input.

use sqlparser::ast as sql;

use super::{parse_sql, Checker, Expr, ExprError, Node};
use crate::typed::schema::Schema;
use crate::typed::value::Type;

/// The key expressions of a join's two inputs, position by position: a left row and a
/// right row match when every left key equals the right key at the same position (SQL
/// equality: a NULL key matches nothing).
#[derive(Clone, Debug)]
pub struct JoinKeys {
    /// Over the left input's rows.
    pub left: Vec<Expr>,
    /// Over the right input's rows.
    pub right: Vec<Expr>,
}

impl Expr {
    /// The positions of the fields it reads, each once, in order.
    ///
    /// ```
    /// use dirigo_operators::typed::{Expr, Schema, Type};
    ///
    /// let schema = Schema::new(vec![("a", Type::I64), ("b", Type::I64), ("c", Type::I64)]);
    /// assert_eq!(Expr::parse("c + a * c", &schema).unwrap().columns(), [0, 2]);
    /// ```
    pub fn columns(&self) -> Vec<usize> {
        let mut columns = Vec::new();
        visit_columns(self, &mut |at| columns.push(at));
        columns.sort_unstable();
        columns.dedup();
        columns
    }

    /// Parses a join's `on` condition over `pair`, the fields of a left row followed by
    /// those of a right row (the left's are the first `left_len`).
    ///
    /// ```
    /// use dirigo_operators::typed::{Expr, Schema, Type};
    ///
    /// let pair = Schema::new(vec![
    ///     ("people.id", Type::U64),
    ///     ("people.name", Type::String),
    ///     ("auctions.seller", Type::U64),
    /// ]);
    /// let keys = Expr::parse_join_on("auctions.seller = people.id", &pair, 2).unwrap();
    /// assert_eq!(keys.left[0].as_column(), Some(0));
    /// assert_eq!(keys.right[0].as_column(), Some(0)); // the right row's first field
    /// let error = Expr::parse_join_on("people.id = 7", &pair, 2).unwrap_err();
    /// assert_eq!(error.at, 12);
    /// ```
    ///
    /// # Errors
    /// What [`parse`](Self::parse) refuses, a conjunct that is not an equality, an
    /// operand that reads both inputs or neither, and two sides of different types.
    pub fn parse_join_on(
        text: &str,
        pair: &Schema,
        left_len: usize,
    ) -> Result<JoinKeys, ExprError> {
        let parsed = parse_sql(text)?;
        let checker = Checker { text, schema: pair };
        let mut conjuncts = Vec::new();
        split_and(&parsed, &mut conjuncts);
        let mut keys = JoinKeys {
            left: Vec::new(),
            right: Vec::new(),
        };
        for conjunct in conjuncts {
            let sql::Expr::BinaryOp {
                left,
                op: sql::BinaryOperator::Eq,
                right,
            } = conjunct
            else {
                return checker.error(
                    conjunct,
                    "an equality between an expression of each input, such as \
                     `people.person_id = auctions.seller` (several joined by AND)"
                        .into(),
                );
            };
            let mut checked = Vec::with_capacity(2);
            for operand in [&**left, &**right] {
                let expr = checker.check(operand, 1)?;
                let side = side_of(&expr, left_len).ok_or_else(|| ExprError {
                    at: checker.at(operand),
                    message: "an expression over the fields of one input: a key of the left \
                              input's rows or of the right's"
                        .into(),
                })?;
                checked.push((side, expr, operand));
            }
            let second = checked.pop().expect("two operands");
            let first = checked.pop().expect("two operands");
            let (left_key, right_key) = match (first.0, second.0) {
                (Side::Left, Side::Right) => (first, second),
                (Side::Right, Side::Left) => (second, first),
                _ => {
                    return checker.error(
                        conjunct,
                        "an equality between an expression of the left input and one of the \
                         right input; both sides read the same one"
                            .into(),
                    )
                }
            };
            if left_key.1.ty != right_key.1.ty
                && left_key.1.ty != Type::Null
                && right_key.1.ty != Type::Null
            {
                return checker.error(
                    conjunct,
                    format!(
                        "keys of one type on both sides (rows match on equal values); {} and {}: \
                         CAST one of them",
                        checker.describe(left_key.2, left_key.1.ty),
                        checker.describe(right_key.2, right_key.1.ty)
                    ),
                );
            }
            let mut right_expr = right_key.1;
            shift_columns(&mut right_expr, left_len);
            keys.left.push(left_key.1);
            keys.right.push(right_expr);
        }
        Ok(keys)
    }
}

/// Which input an operand reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Left,
    Right,
}

/// The conjuncts of `e`: its operands of `AND`, nested or not.
fn split_and<'a>(e: &'a sql::Expr, out: &mut Vec<&'a sql::Expr>) {
    match e {
        sql::Expr::BinaryOp {
            left,
            op: sql::BinaryOperator::And,
            right,
        } => {
            split_and(left, out);
            split_and(right, out);
        }
        sql::Expr::Nested(inner) if matches!(**inner, sql::Expr::BinaryOp { .. }) => {
            split_and(inner, out)
        }
        other => out.push(other),
    }
}

/// The input an expression reads, if it reads fields of exactly one.
fn side_of(expr: &Expr, left_len: usize) -> Option<Side> {
    let mut columns = Vec::new();
    visit_columns(expr, &mut |at| columns.push(at));
    if columns.is_empty() {
        None
    } else if columns.iter().all(|&at| at < left_len) {
        Some(Side::Left)
    } else if columns.iter().all(|&at| at >= left_len) {
        Some(Side::Right)
    } else {
        None
    }
}

fn children(node: &Node) -> Vec<&Expr> {
    match node {
        Node::Column(_) | Node::Literal(_) => Vec::new(),
        Node::Neg(a) | Node::Not(a) | Node::IsNull(a, _) | Node::Cast(a, _, _) => vec![a],
        Node::Arith(_, a, b)
        | Node::Concat(a, b)
        | Node::Compare(_, a, b)
        | Node::And(a, b)
        | Node::Or(a, b)
        | Node::Like(a, b, _) => vec![a, b],
        Node::In(a, list, _) => std::iter::once(&**a).chain(list).collect(),
        Node::Between(a, b, c, _) => vec![a, b, c],
        Node::Case {
            operand,
            whens,
            otherwise,
        } => operand
            .iter()
            .map(|a| &**a)
            .chain(whens.iter().flat_map(|(w, t)| [w, t]))
            .chain(otherwise.iter().map(|a| &**a))
            .collect(),
        Node::Call(_, args) => args.iter().collect(),
    }
}

fn children_mut(node: &mut Node) -> Vec<&mut Expr> {
    match node {
        Node::Column(_) | Node::Literal(_) => Vec::new(),
        Node::Neg(a) | Node::Not(a) | Node::IsNull(a, _) | Node::Cast(a, _, _) => vec![a],
        Node::Arith(_, a, b)
        | Node::Concat(a, b)
        | Node::Compare(_, a, b)
        | Node::And(a, b)
        | Node::Or(a, b)
        | Node::Like(a, b, _) => vec![a, b],
        Node::In(a, list, _) => std::iter::once(&mut **a).chain(list).collect(),
        Node::Between(a, b, c, _) => vec![a, b, c],
        Node::Case {
            operand,
            whens,
            otherwise,
        } => operand
            .iter_mut()
            .map(|a| &mut **a)
            .chain(whens.iter_mut().flat_map(|(w, t)| [w, t]))
            .chain(otherwise.iter_mut().map(|a| &mut **a))
            .collect(),
        Node::Call(_, args) => args.iter_mut().collect(),
    }
}

fn visit_columns(expr: &Expr, found: &mut impl FnMut(usize)) {
    if let Node::Column(at) = expr.node {
        found(at);
    }
    for child in children(&expr.node) {
        visit_columns(child, found);
    }
}

/// Makes `expr`, over a pair's fields, read the right row alone: its fields are `by`
/// places earlier there.
fn shift_columns(expr: &mut Expr, by: usize) {
    if let Node::Column(at) = &mut expr.node {
        *at -= by;
    }
    for child in children_mut(&mut expr.node) {
        shift_columns(child, by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> Schema {
        Schema::new(vec![
            ("bids.price", Type::U64),
            ("bids.auction", Type::U64),
            ("highest.top", Type::U64),
            ("highest.window_end", Type::Timestamp),
        ])
    }

    #[test]
    fn equalities_become_keys_of_each_side() {
        let keys = Expr::parse_join_on(
            "top = bids.price AND (bids.auction + 1 = highest.top * 2)",
            &pair(),
            2,
        )
        .unwrap();
        assert_eq!(keys.left.len(), 2);
        assert_eq!(keys.left[0].as_column(), Some(0));
        assert_eq!(keys.right[0].as_column(), Some(0));
        let mut right = Vec::new();
        visit_columns(&keys.right[1], &mut |at| right.push(at));
        assert_eq!(right, [0]);
    }

    #[test]
    fn mistakes_point_into_the_text() {
        let cases = [
            ("bids.price > highest.top", 0, "an equality"),
            (
                "bids.price = bids.auction",
                0,
                "both sides read the same one",
            ),
            ("bids.price + top = 3", 0, "of one input"),
            ("bids.price = window_end", 0, "keys of one type"),
            (
                "bids.price = highest.nope",
                13,
                "there is no `highest.nope`",
            ),
        ];
        for (text, at, message) in cases {
            let error = Expr::parse_join_on(text, &pair(), 2).unwrap_err();
            assert_eq!(error.at, at, "{text}: {error}");
            assert!(error.message.contains(message), "{text}: {error}");
        }
        let ambiguous = Schema::new(vec![("a.x", Type::U64), ("b.x", Type::U64)]);
        let error = Expr::parse_join_on("a.x = x", &ambiguous, 1).unwrap_err();
        assert_eq!(error.at, 6);
        assert!(error.message.contains("write a.x or b.x"), "{error}");
    }
}
