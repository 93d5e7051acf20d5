//! Expression tests: what each construct gives (NULLs included), where each kind of
//! mistake is reported, and a property test of the compiled closures against the
//! interpreter on generated expressions and rows.

use proptest::prelude::*;

use super::interp;
use super::*;

fn schema() -> Schema {
    Schema::new(vec![
        ("b", Type::Bool),
        ("i", Type::I64),
        ("u", Type::U64),
        ("f", Type::F64),
        ("s", Type::String),
        ("t", Type::Timestamp),
    ])
}

fn row() -> Vec<Value> {
    vec![
        Value::Bool(true),
        Value::I64(-7),
        Value::U64(10),
        Value::F64(2.5),
        Value::Str("Card-17".into()),
        Value::Timestamp(1_700_000_123_456),
    ]
}

fn eval(text: &str, row: &[Value]) -> Result<Value, EvalError> {
    let expr = Expr::parse(text, &schema()).unwrap_or_else(|e| panic!("{text}: {e}"));
    let compiled = expr.compile().eval(row).map(|v| v.into_owned());
    assert_eq!(compiled, interp::eval(&expr, row), "{text}");
    compiled
}

#[test]
fn operators_and_functions() {
    let row = row();
    let cases: &[(&str, Value)] = &[
        ("i + u", Value::I64(3)),
        ("u * 2", Value::I64(20)),
        ("u + CAST(2 AS u64)", Value::U64(12)),
        ("f * 2", Value::F64(5.0)),
        ("i / 2", Value::I64(-3)),
        ("i % 4", Value::I64(-3)),
        ("-u", Value::I64(-10)),
        ("t + 1000 - t", Value::I64(1000)),
        (
            "date_trunc('minute', t)",
            Value::Timestamp(1_700_000_100_000),
        ),
        ("s || '!'", Value::Str("Card-17!".into())),
        ("lower(s)", Value::Str("card-17".into())),
        ("upper(s)", Value::Str("CARD-17".into())),
        ("substr(s, 6)", Value::Str("17".into())),
        ("substr(s, 0, 3)", Value::Str("Ca".into())),
        ("SUBSTRING(s FROM 2 FOR 3)", Value::Str("ard".into())),
        ("length(s)", Value::I64(7)),
        (
            "concat(s, NULL, 1, TRUE)",
            Value::Str("Card-171true".into()),
        ),
        ("coalesce(NULL, i, 3.5)", Value::F64(-7.0)),
        ("abs(i)", Value::I64(7)),
        ("round(f)", Value::F64(3.0)),
        ("round(2.345, 2)", Value::F64(2.35)),
        ("floor(-f)", Value::F64(-3.0)),
        ("ceil(f)", Value::F64(3.0)),
        ("CAST('12' AS BIGINT) + 1", Value::I64(13)),
        ("CAST(f AS i64)", Value::I64(3)),
        ("CAST(i AS VARCHAR)", Value::Str("-7".into())),
        ("TRY_CAST('x' AS DOUBLE)", Value::Null),
        (
            "CASE WHEN i < 0 THEN 'neg' ELSE 'pos' END",
            Value::Str("neg".into()),
        ),
        ("CASE u WHEN 3 THEN 1 WHEN 10 THEN 2.5 END", Value::F64(2.5)),
        ("CASE u WHEN 3 THEN 1 END", Value::Null),
        ("f BETWEEN 2 AND 3", Value::Bool(true)),
        ("i NOT BETWEEN -10 AND 0", Value::Bool(false)),
        ("s LIKE 'C%-1_'", Value::Bool(true)),
        ("s NOT LIKE '%x%'", Value::Bool(true)),
        ("u IN (1, 10.0, NULL)", Value::Bool(true)),
        ("i IN (1, NULL)", Value::Null),
        ("i NOT IN (1, 2)", Value::Bool(true)),
        ("s IS NOT NULL AND NOT b", Value::Bool(false)),
        ("i > 18446744073709551615", Value::Bool(false)),
        ("u > i AND f <> 2.5", Value::Bool(false)),
        ("\"s\" = 'Card-17'", Value::Bool(true)),
        ("S = 'Card-17'", Value::Bool(true)),
    ];
    for (text, expected) in cases {
        assert_eq!(eval(text, &row).as_ref(), Ok(expected), "{text}");
    }
}

#[test]
fn nulls_follow_sql() {
    let nulls = vec![Value::Null; 6];
    for (text, expected) in [
        ("i + 1", Value::Null),
        ("i = i", Value::Null),
        ("FALSE AND b", Value::Bool(false)),
        ("TRUE AND b", Value::Null),
        ("TRUE OR b", Value::Bool(true)),
        ("FALSE OR b", Value::Null),
        ("NOT b", Value::Null),
        ("b IS NULL", Value::Bool(true)),
        ("s LIKE 'a%'", Value::Null),
        ("lower(s)", Value::Null),
        ("coalesce(s, 'none')", Value::Str("none".into())),
        ("CASE WHEN b THEN 1 ELSE 2 END", Value::I64(2)),
        ("i BETWEEN 1 AND 2", Value::Null),
        ("5 BETWEEN i AND 2", Value::Bool(false)),
        ("CAST(i AS VARCHAR)", Value::Null),
        ("NULL = NULL", Value::Null),
    ] {
        assert_eq!(eval(text, &nulls), Ok(expected), "{text}");
    }
    let schema = schema();
    let keep = Expr::parse_condition("i > 0", &schema)
        .unwrap()
        .compile_condition();
    assert!(!keep.test(&nulls).unwrap(), "a filter drops NULL");
}

#[test]
fn run_time_failures_are_errors() {
    let row = row();
    for (text, reason) in [
        ("i / 0", "division by zero"),
        ("f % 0", "division by zero"),
        ("u - CAST(11 AS u64)", "integer overflow in a subtraction"),
        (
            "i * 9223372036854775807",
            "integer overflow in a multiplication",
        ),
        ("CAST(s AS f64)", "cannot cast string \"Card-17\" to f64"),
        ("CAST(-1 AS u64)", "cannot cast i64 -1 to u64"),
        ("substr(s, 1, -1)", "a negative substr length (-1)"),
    ] {
        assert_eq!(eval(text, &row), Err(EvalError(reason.into())), "{text}");
    }
    let min = vec![
        Value::Null,
        Value::I64(i64::MIN),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
    ];
    assert_eq!(eval("i % -1", &min), Ok(Value::I64(0)));
    assert_eq!(
        eval("i / -1", &min),
        Err(EvalError("integer overflow in a division".into()))
    );
    // Short-circuits: the failing side is never evaluated.
    assert_eq!(eval("FALSE AND i / 0 = 1", &row), Ok(Value::Bool(false)));
}

/// Where each kind of mistake is reported: the byte offset in the text, and the
/// message.
#[test]
fn errors_point_into_the_text() {
    let schema = schema();
    let cases: &[(&str, usize, &str)] = &[
        (
            "f > 'x'",
            4,
            "a value that `>` can compare with an f64 (`f`); `'x'` is a string",
        ),
        (
            "i + nope",
            4,
            "a field of the input, one of: b, i, u, f, s, t; there is no `nope`",
        ),
        ("s + 1", 0, "numbers on both sides of `+`"),
        ("1 + s", 4, "numbers on both sides of `+`"),
        (
            "i > 1 AND s",
            10,
            "a condition (a bool) for AND; `s` is a string",
        ),
        ("lower(i)", 6, "text; `i` is an i64"),
        ("nosuch(i)", 0, "a function of the language"),
        ("sum(i)", 0, "is an aggregate"),
        ("i >", 3, "an expression, found EOF"),
        ("i > 1 )", 6, "the end of the expression, found `)`"),
        ("CAST(i AS money)", 10, "a type to CAST to"),
        (
            "CASE WHEN b THEN 1 ELSE 'x' END",
            24,
            "CASE results of one type",
        ),
        ("i IN (1, 'a')", 9, "values IN compares with an i64"),
        ("x.i = 1", 0, "there is no `x.i`"),
        ("date_trunc('week', t)", 11, "a unit in quotes"),
        ("", 0, "an expression, found an empty string"),
    ];
    for (text, at, message) in cases {
        let error = Expr::parse(text, &schema).unwrap_err();
        assert_eq!(error.at, *at, "{text}: {}", error.message);
        assert!(error.message.contains(message), "{text}: {}", error.message);
    }
    let error = Expr::parse_condition("  i + 1", &schema).unwrap_err();
    assert_eq!(error.at, 2);
    assert!(error.message.contains("a condition"), "{}", error.message);
    let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    assert!(Expr::parse(&deep, &schema).is_err());
    let long = format!("i{}", " + 1".repeat(2000));
    assert!(Expr::parse(&long, &schema)
        .unwrap_err()
        .message
        .contains("at most 4096 bytes"));
    // Multi-line text: offsets count bytes, lines included.
    let error = Expr::parse("i > 1\n  AND s > 2", &schema).unwrap_err();
    assert_eq!(error.at, 16);
}

/// Expression texts of one type, over `schema()`.
fn numbers() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("i".to_string()),
        Just("u".to_string()),
        Just("f".to_string()),
        Just("NULL".to_string()),
        (-3i64..4).prop_map(|n| n.to_string()),
        Just("9223372036854775807".to_string()),
        Just("18446744073709551615".to_string()),
        Just("0.5".to_string()),
        Just("-2.25".to_string()),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop_oneof![Just("+"), Just("-"), Just("*"), Just("/"), Just("%")],
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("-({a})")),
            inner.clone().prop_map(|a| format!("abs({a})")),
            inner.clone().prop_map(|a| format!("round({a})")),
            (inner.clone(), -2i64..3).prop_map(|(a, d)| format!("round({a}, {d})")),
            inner.clone().prop_map(|a| format!("floor({a})")),
            inner.clone().prop_map(|a| format!("CAST({a} AS BIGINT)")),
            inner.clone().prop_map(|a| format!("TRY_CAST({a} AS u64)")),
            inner.clone().prop_map(|a| format!("CAST({a} AS DOUBLE)")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("coalesce({a}, {b})")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("CASE WHEN {c} > 0 THEN {a} ELSE {b} END")),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| format!("CASE {a} WHEN 1 THEN {b} END")),
            Just("length(s)".to_string()),
            Just("(t - CAST(1700000000000 AS TIMESTAMP))".to_string()),
        ]
    })
}

fn texts() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("s".to_string()),
        Just("NULL".to_string()),
        Just("'a'".to_string()),
        Just("'Ab%'".to_string()),
        Just("''".to_string()),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| format!("lower({a})")),
            inner.clone().prop_map(|a| format!("upper({a})")),
            (inner.clone(), -2i64..4, -1i64..3)
                .prop_map(|(a, s, l)| format!("substr({a}, {s}, {l})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("concat({a}, {b})")),
            numbers().prop_map(|a| format!("CAST({a} AS VARCHAR)")),
        ]
    })
}

fn conditions() -> impl Strategy<Value = String> {
    let cmp = prop_oneof![
        Just("="),
        Just("<>"),
        Just("<"),
        Just("<="),
        Just(">"),
        Just(">=")
    ];
    let leaf = prop_oneof![
        Just("b".to_string()),
        Just("TRUE".to_string()),
        Just("NULL".to_string()),
        (numbers(), cmp.clone(), numbers()).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
        (texts(), cmp, texts()).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
        (texts(), texts()).prop_map(|(a, b)| format!("{a} LIKE {b}")),
        (numbers(), numbers(), numbers()).prop_map(|(a, b, c)| format!("{a} BETWEEN {b} AND {c}")),
        (numbers(), numbers(), numbers()).prop_map(|(a, b, c)| format!("{a} NOT IN ({b}, {c}, 2)")),
        numbers().prop_map(|a| format!("{a} IS NULL")),
        Just("date_trunc('second', t) < t".to_string()),
    ];
    leaf.prop_recursive(3, 16, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
            inner.clone().prop_map(|a| format!("NOT ({a})")),
        ]
    })
}

fn rows() -> impl Strategy<Value = Vec<Value>> {
    (
        proptest::option::of(any::<bool>()),
        proptest::option::of(prop_oneof![-5i64..5, Just(i64::MIN), Just(i64::MAX)]),
        proptest::option::of(prop_oneof![0u64..5, Just(u64::MAX)]),
        proptest::option::of(prop_oneof![-5.0f64..5.0, Just(0.0), Just(f64::NAN)]),
        proptest::option::of("[aAb%]{0,3}"),
        proptest::option::of(1_699_999_999_000i64..1_700_000_001_000),
    )
        .prop_map(|(b, i, u, f, s, t)| {
            vec![
                b.map_or(Value::Null, Value::Bool),
                i.map_or(Value::Null, Value::I64),
                u.map_or(Value::Null, Value::U64),
                f.map_or(Value::Null, Value::F64),
                s.map_or(Value::Null, Value::Str),
                t.map_or(Value::Null, Value::Timestamp),
            ]
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// The compiled closures and the interpreter agree on every generated expression and
    /// row: the same value (NULL included) or the same error.
    #[test]
    fn compiled_agrees_with_the_interpreter(
        text in prop_oneof![numbers(), texts(), conditions()],
        rows in proptest::collection::vec(rows(), 8),
    ) {
        let schema = schema();
        let expr = Expr::parse(&text, &schema).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let compiled = expr.compile();
        let condition = matches!(expr.ty(), Type::Bool | Type::Null).then(|| expr.compile_condition());
        for row in &rows {
            let expected = interp::eval(&expr, row);
            let got = compiled.eval(row).map(|v| v.into_owned());
            prop_assert_eq!(&got, &expected, "{} on {:?}", text, row);
            if let Ok(value) = &got {
                prop_assert!(value.is_null() || value.type_of() == expr.ty(), "{} gave {:?}", text, value);
            }
            if let Some(condition) = &condition {
                let truth = condition.truth(row);
                let expected = expected.map(|v| match v { Value::Bool(b) => Some(b), _ => None });
                prop_assert_eq!(truth, expected, "{} as a condition", text);
            }
        }
    }

    /// No text makes the checker panic.
    #[test]
    fn any_text_is_checked_without_panic(text in "[a-z0-9 ()'+*/%<>=!,.|-]{0,40}") {
        let _ = Expr::parse(&text, &schema());
    }
}
