//! A straightforward interpreter of checked expressions: the reference the compiled
//! closures are tested against. It walks the tree for every row and computes integer
//! arithmetic in `i128` with explicit range checks, LIKE by dynamic programming, and
//! three-valued logic by table.

use super::compile::{cast_value, round_to};
use super::{Arith, Cmp, EvalError, Expr, Func, Node};
use crate::typed::value::{Type, Value};

fn err(message: &str) -> EvalError {
    EvalError(message.to_owned())
}

/// A number, wide.
#[derive(Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

fn num(v: &Value) -> Num {
    match v {
        Value::I64(i) | Value::Timestamp(i) => Num::Int(i128::from(*i)),
        Value::U64(u) => Num::Int(i128::from(*u)),
        Value::F64(x) => Num::Float(*x),
        _ => Num::Float(f64::NAN),
    }
}

fn float(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Float(x) => x,
    }
}

fn fits(i: i128, ty: Type) -> bool {
    match ty {
        Type::U64 => (0..=i128::from(u64::MAX)).contains(&i),
        _ => (i128::from(i64::MIN)..=i128::from(i64::MAX)).contains(&i),
    }
}

fn make_int(i: i128, ty: Type) -> Value {
    match ty {
        Type::U64 => Value::U64(i as u64),
        Type::Timestamp => Value::Timestamp(i as i64),
        _ => Value::I64(i as i64),
    }
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => match (num(a), num(b)) {
            (Num::Int(x), Num::Int(y)) => x.cmp(&y),
            (x, y) => {
                let norm = |f: f64| {
                    if f.is_nan() {
                        f64::NAN
                    } else if f == 0.0 {
                        0.0
                    } else {
                        f
                    }
                };
                norm(float(x)).total_cmp(&norm(float(y)))
            }
        },
    }
}

fn holds(cmp: Cmp, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match cmp {
        Cmp::Eq => o == Equal,
        Cmp::NotEq => o != Equal,
        Cmp::Lt => o == Less,
        Cmp::LtEq => o == Less || o == Equal,
        Cmp::Gt => o == Greater,
        Cmp::GtEq => o == Greater || o == Equal,
    }
}

fn like_dp(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // m[i][j]: t[..i] matches p[..j].
    let mut m = vec![vec![false; p.len() + 1]; t.len() + 1];
    m[0][0] = true;
    for j in 1..=p.len() {
        m[0][j] = m[0][j - 1] && p[j - 1] == '%';
    }
    for i in 1..=t.len() {
        for j in 1..=p.len() {
            m[i][j] = match p[j - 1] {
                '%' => m[i][j - 1] || m[i - 1][j],
                '_' => m[i - 1][j - 1],
                c => m[i - 1][j - 1] && t[i - 1] == c,
            };
        }
    }
    m[t.len()][p.len()]
}

fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

fn of_truth(t: Option<bool>) -> Value {
    t.map_or(Value::Null, Value::Bool)
}

/// Evaluates `expr` on `row`, walking the tree.
pub(crate) fn eval(expr: &Expr, row: &[Value]) -> Result<Value, EvalError> {
    Ok(match &expr.node {
        Node::Column(i) => row[*i].clone(),
        Node::Literal(v) => v.clone(),
        Node::Neg(x) => match eval(x, row)? {
            Value::Null => Value::Null,
            Value::F64(f) => Value::F64(-f),
            v => {
                let Num::Int(i) = num(&v) else { unreachable!() };
                if !fits(-i, Type::I64) {
                    return Err(err("integer overflow in a negation"));
                }
                Value::I64((-i) as i64)
            }
        },
        Node::Not(x) => of_truth(truth(&eval(x, row)?).map(|b| !b)),
        Node::Arith(op, l, r) => {
            let a = eval(l, row)?;
            if a.is_null() {
                return Ok(Value::Null);
            }
            let b = eval(r, row)?;
            if b.is_null() {
                return Ok(Value::Null);
            }
            let name = match op {
                Arith::Add => "an addition",
                Arith::Sub => "a subtraction",
                Arith::Mul => "a multiplication",
                Arith::Div => "a division",
                Arith::Mod => "a modulo",
            };
            let overflow = || EvalError(format!("integer overflow in {name}"));
            if expr.ty == Type::F64 {
                let (x, y) = (float(num(&a)), float(num(&b)));
                if matches!(op, Arith::Div | Arith::Mod) && y == 0.0 {
                    return Err(err("division by zero"));
                }
                return Ok(Value::F64(match op {
                    Arith::Add => x + y,
                    Arith::Sub => x - y,
                    Arith::Mul => x * y,
                    Arith::Div => x / y,
                    Arith::Mod => x % y,
                }));
            }
            let (Num::Int(x), Num::Int(y)) = (num(&a), num(&b)) else {
                unreachable!()
            };
            // Operands take the result's type first (timestamps: i64 milliseconds).
            let operand_ty = if expr.ty == Type::U64 {
                Type::U64
            } else {
                Type::I64
            };
            if !fits(x, operand_ty) || !fits(y, operand_ty) {
                return Err(EvalError(
                    "integer overflow in a conversion of a u64 to i64".into(),
                ));
            }
            if matches!(op, Arith::Div | Arith::Mod) && y == 0 {
                return Err(err("division by zero"));
            }
            let z = match op {
                Arith::Add => x + y,
                Arith::Sub => x - y,
                Arith::Mul => x * y,
                Arith::Div => x / y,
                Arith::Mod => x % y,
            };
            if !fits(z, operand_ty) {
                return Err(overflow());
            }
            make_int(z, expr.ty)
        }
        Node::Concat(l, r) => {
            let a = eval(l, row)?;
            if a.is_null() {
                return Ok(Value::Null);
            }
            let b = eval(r, row)?;
            if b.is_null() {
                return Ok(Value::Null);
            }
            Value::Str(format!("{a}{b}"))
        }
        Node::Compare(cmp, l, r) => {
            let a = eval(l, row)?;
            if a.is_null() {
                return Ok(Value::Null);
            }
            let b = eval(r, row)?;
            if b.is_null() {
                return Ok(Value::Null);
            }
            Value::Bool(holds(*cmp, compare(&a, &b)))
        }
        Node::And(l, r) => {
            let a = truth(&eval(l, row)?);
            if a == Some(false) {
                return Ok(Value::Bool(false));
            }
            let b = truth(&eval(r, row)?);
            of_truth(match (a, b) {
                (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            })
        }
        Node::Or(l, r) => {
            let a = truth(&eval(l, row)?);
            if a == Some(true) {
                return Ok(Value::Bool(true));
            }
            let b = truth(&eval(r, row)?);
            of_truth(match (a, b) {
                (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            })
        }
        Node::IsNull(x, negated) => Value::Bool(eval(x, row)?.is_null() != *negated),
        Node::In(x, list, negated) => {
            let v = eval(x, row)?;
            if v.is_null() {
                return Ok(Value::Null);
            }
            let mut result = Some(false);
            for item in list {
                let c = eval(item, row)?;
                if c.is_null() {
                    result = None;
                } else if compare(&v, &c) == std::cmp::Ordering::Equal {
                    result = Some(true);
                    break;
                }
            }
            of_truth(if *negated { result.map(|b| !b) } else { result })
        }
        Node::Between(x, low, high, negated) => {
            let (v, l, h) = (eval(x, row)?, eval(low, row)?, eval(high, row)?);
            let ge = if v.is_null() || l.is_null() {
                None
            } else {
                Some(compare(&v, &l).is_ge())
            };
            let le = if v.is_null() || h.is_null() {
                None
            } else {
                Some(compare(&v, &h).is_le())
            };
            let both = match (ge, le) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
            of_truth(if *negated { both.map(|b| !b) } else { both })
        }
        Node::Like(x, p, negated) => match (eval(x, row)?, eval(p, row)?) {
            (Value::Str(t), Value::Str(p)) => Value::Bool(like_dp(&t, &p) != *negated),
            _ => Value::Null,
        },
        Node::Case {
            operand,
            whens,
            otherwise,
        } => {
            let subject = operand.as_ref().map(|o| eval(o, row)).transpose()?;
            for (condition, result) in whens {
                let c = eval(condition, row)?;
                let matched = match &subject {
                    Some(s) => !s.is_null() && !c.is_null() && compare(s, &c).is_eq(),
                    None => c == Value::Bool(true),
                };
                if matched {
                    return eval(result, row);
                }
            }
            match otherwise {
                Some(o) => eval(o, row)?,
                None => Value::Null,
            }
        }
        Node::Cast(x, ty, tried) => {
            let v = eval(x, row)?;
            match cast_value(&v, *ty) {
                Ok(c) => c,
                Err(_) if *tried => Value::Null,
                Err(e) => return Err(e),
            }
        }
        Node::Call(func, args) => call(*func, args, row)?,
    })
}

fn call(func: Func, args: &[Expr], row: &[Value]) -> Result<Value, EvalError> {
    match func {
        Func::Concat => {
            let mut s = String::new();
            for a in args {
                let v = eval(a, row)?;
                s.push_str(&v.to_string());
            }
            Ok(Value::Str(s))
        }
        Func::Coalesce => {
            for a in args {
                let v = eval(a, row)?;
                if !v.is_null() {
                    return Ok(v);
                }
            }
            Ok(Value::Null)
        }
        _ => {
            let mut values = Vec::new();
            for a in args {
                let v = eval(a, row)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                values.push(v);
            }
            Ok(match (func, &values[0]) {
                (Func::Round, x) if values.len() == 2 => {
                    let Num::Int(d) = num(&values[1]) else {
                        unreachable!()
                    };
                    let d = d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
                    Value::F64(round_to(float(num(x)), d))
                }
                (Func::Abs, Value::I64(i)) => {
                    if *i == i64::MIN {
                        return Err(err("integer overflow in abs"));
                    }
                    Value::I64(i.abs())
                }
                (Func::Abs, Value::F64(x)) => Value::F64(x.abs()),
                (Func::Round, Value::F64(x)) => Value::F64(x.round()),
                (Func::Floor, Value::F64(x)) => Value::F64(x.floor()),
                (Func::Ceil, Value::F64(x)) => Value::F64(x.ceil()),
                (Func::Lower, Value::Str(s)) => Value::Str(s.to_lowercase()),
                (Func::Upper, Value::Str(s)) => Value::Str(s.to_uppercase()),
                (Func::Length, Value::Str(s)) => Value::I64(s.chars().count() as i64),
                (Func::Substr, Value::Str(s)) => {
                    let Num::Int(start) = num(&values[1]) else {
                        unreachable!()
                    };
                    let chars: Vec<char> = s.chars().collect();
                    let end = match values.get(2) {
                        Some(l) => {
                            let Num::Int(l) = num(l) else { unreachable!() };
                            if l < 0 {
                                return Err(EvalError(format!("a negative substr length ({l})")));
                            }
                            start + l
                        }
                        None => i128::MAX,
                    };
                    let mut out = String::new();
                    for (i, c) in chars.iter().enumerate() {
                        let position = i as i128 + 1;
                        if start <= position && position < end {
                            out.push(*c);
                        }
                    }
                    Value::Str(out)
                }
                (Func::DateTrunc(unit), Value::Timestamp(t)) => {
                    let unit = i128::from(unit);
                    let t = i128::from(*t);
                    let floor = t - t.rem_euclid(unit);
                    if !fits(floor, Type::I64) {
                        return Err(err("integer overflow in date_trunc"));
                    }
                    Value::Timestamp(floor as i64)
                }
                (_, other) => other.clone(),
            })
        }
    }
}
