//! The typed-row keys through the configuration loader: each kind of mistake with its
//! exact `LINE:COLUMN`, and mutated typed files that never make the loader panic.

use std::path::PathBuf;

use proptest::prelude::*;

use crate::config::{Config, ConfigError};

/// A file in `configs/`, so that `data/payments.jsonl` is found.
fn path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/typed-test.toml"
    ))
}

const FRAUD: &str = r#"[[app]]
name = "fraud"
[app.source]
kind = "file"
path = "data/payments.jsonl"
format = "json"
schema = { card = "string", amount = "f64", merchant = "string", ts = "timestamp_ms" }
event_time = "ts"
[[app.operator]]
name = "big"
kind = "filter"
where = "amount > 1000 AND merchant <> 'm0'"
[[app.operator]]
name = "per-card"
kind = "window"
by = ["card"]
window = { kind = "tumbling", size_ms = 60000 }
aggregates = { n = "count()", total = "sum(amount)" }
having = "n >= 3"
[app.sink]
kind = "json-lines"
path = "alerts.jsonl"
"#;

/// Two inputs of one source joined per window, with the keys a join has.
const JOIN: &str = r#"[[app]]
name = "q8"
[app.source]
kind = "nexmark"
events = 1000
schema = "infer"
event_time = "date_time"
[[app.operator]]
name = "people"
kind = "filter"
where = "event = 'person'"
[[app.operator]]
name = "auctions"
kind = "filter"
input = "source"
where = "event = 'auction'"
[[app.operator]]
name = "sellers"
kind = "join"
input = ["people", "auctions"]
window = { kind = "tumbling", size_ms = 10000, inclusive_end = true }
on = "people.person_id = auctions.seller"
where = "auctions.reserve > 0"
fields = { person = "people.person_id", name = "people.name", at = "window_start" }
[app.sink]
kind = "json-lines"
path = "q8.jsonl"
"#;

/// A running aggregate per card, with late rows sent to the dead letters.
const RUNNING: &str = r#"[[app]]
name = "totals"
[app.source]
kind = "file"
path = "data/payments.jsonl"
format = "json"
schema = { card = "string", amount = "f64", merchant = "string", ts = "timestamp_ms" }
event_time = "ts"
out_of_orderness_ms = 10000
late = "dead-letter"
[[app.operator]]
name = "per-card"
kind = "aggregate"
by = ["card"]
aggregates = { n = "count()", total = "sum(amount)", biggest = "max(amount)" }
having = "total > 100"
[app.sink]
kind = "json-lines"
path = "totals.jsonl"
"#;

/// An app of two sources: a union of two feeds, and a join of one with the other.
const TWO: &str = r#"[[app]]
name = "feeds"
[[app.source]]
name = "eu"
kind = "file"
path = "data/payments-eu.jsonl"
format = "json"
schema = { card = "string", amount = "f64", ts = "timestamp_ms" }
event_time = "ts"
[[app.source]]
name = "us"
kind = "file"
path = "data/payments-us.csv"
schema = { card = "string", amount = "f64", ts = "timestamp_ms" }
event_time = "ts"
[[app.operator]]
name = "payments"
kind = "union"
input = ["eu", "us"]
[[app.operator]]
name = "same-card"
kind = "join"
input = ["eu", "us"]
window = { kind = "tumbling", size_ms = 60000 }
on = "eu.card = us.card"
[app.sink]
kind = "json-lines"
path = "out.jsonl"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(&path(), text)
}

/// `FRAUD` with `from` replaced by `to`: the error's `LINE:COLUMN` and message.
fn error_of(from: &str, to: &str) -> (usize, usize, String) {
    assert!(FRAUD.contains(from), "{from}");
    let error = parse(&FRAUD.replacen(from, to, 1)).expect_err(to);
    let (line, column) = error.position.expect("a position");
    (line, column, error.message)
}

#[test]
fn the_example_is_valid() {
    let config = parse(FRAUD).unwrap();
    assert_eq!(config.apps.len(), 1);
}

#[test]
fn each_mistake_points_at_its_character() {
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        // A type mismatch: at the literal that does not compare.
        ("amount > 1000", "amount > 'x'", (12, 19), "a value that `>` can compare with an f64 (`amount`); `'x'` is a string"),
        // An unknown field.
        ("merchant <>", "merchnt <>", (12, 28), "a field of the input, one of: card, amount, merchant, ts; there is no `merchnt`"),
        // An aggregate of a string.
        ("sum(amount)", "sum(merchant)", (18, 44), "a number to sum; `merchant` is a string"),
        // A key that is not in the schema.
        ("by = [\"card\"]", "by = [\"crd\"]", (16, 7), "a key field of the input, one of: card, amount, merchant, ts; there is no `crd`"),
        // `having` over the window's output: a condition.
        ("\"n >= 3\"", "\"n >= 3 AND total\"", (19, 22), "a condition (a bool) for AND; `total` is an f64"),
        ("\"n >= 3\"", "\"count >= 3\"", (19, 11), "a field of the input, one of: card, n, total, window_start, window_end; there is no `count`"),
        // A syntax error, at the token.
        ("amount > 1000", "amount > > 1000", (12, 19), "an expression, found >"),
        // A type name that is not one.
        ("amount = \"f64\"", "amount = \"float\"", (7, 38), "a field type, one of bool, i64, u64, f64, string, timestamp_ms; not \"float\""),
        ("event_time = \"ts\"", "event_time = \"tss\"", (8, 14), "a field of the schema"),
        ("event_time = \"ts\"", "event_time = \"card\"", (8, 14), "`card` is a string"),
        ("n = \"count()\"", "n = \"median(amount)\"", (18, 21), "an aggregate: count()"),
        ("n = \"count()\"", "card = \"count()\"", (18, 16), "`card` is taken"),
        ("kind = \"filter\"\nwhere = \"amount > 1000 AND merchant <> 'm0'\"", "kind = \"map\"", (11, 8), "an operator of typed rows"),
        ("path = \"alerts.jsonl\"", "path = \"alerts.jsonl\"\nfields = [\"card\", \"nope\"]", (23, 19), "a field of the rows the sink gets"),
        // Escapes in the string: the column is still the character's.
        ("\"amount > 1000 AND merchant <> 'm0'\"", "\"amount\\t> 1000 AND bogus <> 'm0'\"", (12, 29), "there is no `bogus`"),
        // In SQL, double quotes name a field: `"m0"` is not text.
        ("\"amount > 1000 AND merchant <> 'm0'\"", "\"amount\\t> 1000 AND merchant <> \\\"m0\\\"\"", (12, 41), "there is no `m0`"),
        // A literal string in single quotes.
        ("\"amount > 1000 AND merchant <> 'm0'\"", "'amount > 1000 AND nope'", (12, 28), "there is no `nope`"),
    ];
    for (from, to, (line, column), message) in cases {
        let (l, c, m) = error_of(from, to);
        assert_eq!((l, c), (*line, *column), "{to}: {m}");
        assert!(m.contains(message), "{to}: {m}");
    }
}

#[test]
fn each_join_mistake_points_at_its_character() {
    parse(JOIN).unwrap();
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        (
            "on = \"people.person_id = auctions.seller\"",
            "on = \"people.person_id > auctions.seller\"",
            (22, 7),
            "an equality between an expression of each input",
        ),
        (
            "on = \"people.person_id = auctions.seller\"",
            "on = \"people.person_id = auctions.sellr\"",
            (22, 26),
            "there is no `auctions.sellr`",
        ),
        (
            "on = \"people.person_id = auctions.seller\"",
            "on = \"people.person_id = people.name\"",
            (22, 7),
            "both sides read the same one",
        ),
        (
            "on = \"people.person_id = auctions.seller\"",
            "on = \"people.person_id = auctions.item_name\"",
            (22, 7),
            "keys of one type on both sides",
        ),
        (
            "on = \"people.person_id = auctions.seller\"",
            "on = \"people.person_id = 7\"",
            (22, 26),
            "an expression over the fields of one input",
        ),
        // A field name alone that both inputs have.
        (
            "where = \"auctions.reserve > 0\"",
            "where = \"auctions.reserve > 'x'\"",
            (23, 29),
            "a value that `>` can compare",
        ),
        (
            "where = \"auctions.reserve > 0\"",
            "where = \"reserve > 0\"",
            (23, 10),
            "`reserve` is in both inputs: write people.reserve or auctions.reserve",
        ),
        (
            "input = [\"people\", \"auctions\"]",
            "input = [\"people\"]",
            (20, 9),
            "two inputs for a `join`",
        ),
        (
            "on = \"people.person_id = auctions.seller\"\n",
            "",
            (19, 8),
            "an `on` condition for a `join`",
        ),
        (
            "inclusive_end = true }",
            "inclusive_end = 1 }",
            (21, 10),
            "bool",
        ),
        (
            "kind = \"join\"",
            "kind = \"join\"\nk = 3",
            (20, 5),
            "no `k` on a `join`",
        ),
        (
            "where = \"event = 'person'\"",
            "where = \"event = 'person'\"\non = \"x = y\"",
            (12, 6),
            "`on` only on a `join`",
        ),
    ];
    for (from, to, (line, column), message) in cases {
        assert!(JOIN.contains(from), "{from}");
        let error = parse(&JOIN.replacen(from, to, 1)).expect_err(to);
        let (l, c) = error.position.expect("a position");
        assert_eq!((l, c), (*line, *column), "{to}: {}", error.message);
        assert!(error.message.contains(message), "{to}: {}", error.message);
    }
}

#[test]
fn each_running_aggregate_mistake_points_at_its_character() {
    parse(RUNNING).unwrap();
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        // An aggregate of a string.
        ("sum(amount)", "sum(merchant)", (15, 44), "a number to sum; `merchant` is a string"),
        // An unknown field in an aggregate, and in `having`.
        ("max(amount)", "max(amont)", (15, 69), "there is no `amont`"),
        ("\"total > 100\"", "\"window_end > 0\"", (16, 11), "a field of the input, one of: card, n, total, biggest; there is no `window_end`"),
        // `having` of a type that does not compare, or not a condition.
        ("\"total > 100\"", "\"total > 'x'\"", (16, 19), "a value that `>` can compare with an f64 (`total`); `'x'` is a string"),
        ("\"total > 100\"", "\"total\"", (16, 11), "a condition"),
        // A key that is not in the schema.
        ("by = [\"card\"]", "by = [\"crd\"]", (14, 7), "there is no `crd`"),
        ("n = \"count()\"", "card = \"count()\"", (15, 16), "`card` is taken"),
        ("aggregates = { n = \"count()\", total = \"sum(amount)\", biggest = \"max(amount)\" }\n", "", (13, 8), "`aggregates` for an `aggregate`"),
        // No windows on a running aggregate.
        ("kind = \"aggregate\"", "kind = \"aggregate\"\nwindow = { kind = \"tumbling\", size_ms = 1000 }", (14, 10), "only windowed operators have windows"),
        ("kind = \"json-lines\"", "kind = \"json-lines\"\nfields = [\"card\", \"window_end\"]", (19, 19), "a field of the rows the sink gets, one of: card, n, total, biggest"),
        // `late` takes one of its two values, on a file source of typed rows.
        ("late = \"dead-letter\"", "late = \"keep\"", (10, 8), "`drop` or `dead-letter`"),
    ];
    for (from, to, (line, column), message) in cases {
        assert!(RUNNING.contains(from), "{from}");
        let error = parse(&RUNNING.replacen(from, to, 1)).expect_err(to);
        let (l, c) = error.position.expect("a position");
        assert_eq!((l, c), (*line, *column), "{to}: {}", error.message);
        assert!(error.message.contains(message), "{to}: {}", error.message);
    }
    // `late` only where the source reads typed rows from a file.
    let untyped = "[[app]]\nname = \"a\"\n[app.source]\nkind = \"file\"\npath = \"data/readings.csv\"\nlate = \"drop\"\n";
    let error = parse(untyped).unwrap_err();
    assert_eq!(error.position, Some((6, 8)), "{}", error.message);
    assert!(
        error
            .message
            .contains("`late` is for `file`, `tcp` and `nats` sources of typed rows"),
        "{}",
        error.message
    );
    let generated = JOIN.replacen(
        "event_time = \"date_time\"",
        "event_time = \"date_time\"\nlate = \"drop\"",
        1,
    );
    let error = parse(&generated).unwrap_err();
    assert_eq!(error.position, Some((8, 8)), "{}", error.message);
    assert!(
        error.message.contains("no `late` on a `nexmark` source"),
        "{}",
        error.message
    );
}

#[test]
fn each_several_sources_mistake_points_at_its_character() {
    let config = parse(TWO).unwrap();
    assert_eq!(config.apps[0].sources.len(), 2);
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        // Each of several sources needs a name: the table's first key.
        ("name = \"us\"\n", "", (10, 1), "a `name` for each of the app's sources"),
        ("name = \"us\"", "name = \"eu\"", (11, 8), "`eu` is taken"),
        ("name = \"us\"", "name = \"payments\"", (11, 8), "`payments` is an operator's"),
        ("name = \"us\"", "name = \"u s\"", (11, 8), "a source name of letters"),
        // Several sources are for typed rows.
        (
            "schema = { card = \"string\", amount = \"f64\", ts = \"timestamp_ms\" }\nevent_time = \"ts\"\n[[app.operator]]",
            "[[app.operator]]",
            (10, 1),
            "a `schema` on each of the app's sources",
        ),
        // The first operator must say which source it reads.
        ("kind = \"union\"\ninput = [\"eu\", \"us\"]", "kind = \"filter\"\nwhere = \"amount > 0\"", (17, 8), "the app has several sources, name the one it reads (one of: eu, us)"),
        // An input that is neither a source nor an operator.
        ("input = [\"eu\", \"us\"]\n[[app.operator]]", "input = [\"eu\", \"uk\"]\n[[app.operator]]", (19, 9), "one of: eu, us, payments, same-card; there is no `uk`"),
        // A union of one input is nothing.
        ("input = [\"eu\", \"us\"]\n[[app.operator]]", "input = \"eu\"\n[[app.operator]]", (19, 9), "two inputs or more for a `union`"),
        // A union's inputs have the same fields.
        ("ts = \"timestamp_ms\" }\nevent_time = \"ts\"\n[[app.operator]]", "ts = \"timestamp_ms\", x = \"i64\" }\nevent_time = \"ts\"\n[[app.operator]]", (19, 9), "inputs whose rows have the same fields"),
        // The join reads the sources by name.
        ("on = \"eu.card = us.card\"", "on = \"eu.card = uk.card\"", (25, 17), "there is no `uk.card`"),
        // The dead letters are set on the first source.
        ("name = \"us\"", "name = \"us\"\ndead_letters = \"x.jsonl\"", (12, 16), "set on its first source"),
    ];
    for (from, to, (line, column), message) in cases {
        assert!(TWO.contains(from), "{from}");
        let error = parse(&TWO.replacen(from, to, 1)).expect_err(to);
        let (l, c) = error.position.expect("a position");
        assert_eq!((l, c), (*line, *column), "{to}: {}", error.message);
        assert!(error.message.contains(message), "{to}: {}", error.message);
    }
    // A query reads the NEXMark events: one source.
    let query = "[[app]]\nname = \"q\"\nquery = \"q5\"\n[[app.source]]\nname = \"a\"\n[[app.source]]\nname = \"b\"\n";
    let error = parse(query).unwrap_err();
    assert_eq!(error.position, Some((3, 9)), "{}", error.message);
    assert!(
        error.message.contains("one source for a `query`"),
        "{}",
        error.message
    );
}

#[test]
fn typed_keys_need_a_schema() {
    let untyped = FRAUD.replace(
        "schema = { card = \"string\", amount = \"f64\", merchant = \"string\", ts = \"timestamp_ms\" }\n",
        "",
    );
    let error = parse(&untyped).unwrap_err();
    assert!(
        error.message.contains("a `schema` on the"),
        "{}",
        error.message
    );
    assert_eq!(error.position, Some((11, 9)), "{}", error.message);
}

#[test]
fn a_multi_line_expression_points_at_its_line() {
    let text = FRAUD.replace(
        "where = \"amount > 1000 AND merchant <> 'm0'\"",
        "where = \"\"\"\namount > 1000\n  AND merchant <> 0\"\"\"",
    );
    let error = parse(&text).unwrap_err();
    assert_eq!(error.position, Some((14, 19)), "{}", error.message);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    /// No typed file makes the loader panic: each example (a windowed aggregate, a
    /// join, a running aggregate with late rows dead-lettered, two sources) with bytes replaced,
    /// inserted or cut gives a config or an error with a position inside the file.
    #[test]
    fn mutated_typed_files_never_panic(
        example in 0usize..4,
        position in 0usize..FRAUD.len().min(JOIN.len()).min(RUNNING.len()).min(TWO.len()),
        byte in prop_oneof![any::<u8>(), Just(b'\''), Just(b'"'), Just(b'('), Just(b'\\'), Just(b'%')],
        mode in 0u8..3,
    ) {
        let mut bytes = [FRAUD, JOIN, RUNNING, TWO][example].as_bytes().to_vec();
        match mode {
            0 => bytes[position] = byte,
            1 => bytes.insert(position, byte),
            _ => bytes.truncate(position),
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Err(error) = parse(&text) {
            let (line, column) = error.position.expect("a position");
            prop_assert!(line >= 1 && line <= text.lines().count() + 1, "{}", error);
            let width = text.lines().nth(line - 1).map_or(0, |l| l.chars().count());
            prop_assert!(column >= 1 && column <= width + 1, "{}", error);
        }
    }
}

/// The NEXMark example files, planned: `(plan, app)`.
fn planned(file: &str, edit: impl Fn(String) -> String) -> (super::plan::Plan, Config) {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs")).join(file);
    let text = edit(std::fs::read_to_string(&path).unwrap());
    let config = Config::parse(&path, &text).unwrap();
    let plan = super::plan::plan(&config.apps[0], &config.base_dir)
        .ok()
        .flatten()
        .expect("a typed app that plans");
    (plan, config)
}

#[test]
fn filters_of_one_kind_of_nexmark_event_are_left_to_the_source() {
    for file in ["nexmark-q5.toml", "nexmark-q7.toml"] {
        let (plan, _) = planned(file, |text| text);
        assert_eq!(plan.event_kind, Some(("bid".to_owned(), vec![0])), "{file}");
    }
    // Two kinds: both filters stay.
    let (plan, _) = planned("nexmark-q8.toml", |text| text);
    assert_eq!(plan.event_kind, None);
    // A later operator reads `event`: the filter must hand it on.
    let (plan, _) = planned("nexmark-q5.toml", |text| {
        text.replace(r#"by = ["auction"]"#, r#"by = ["auction", "event"]"#)
    });
    assert_eq!(plan.event_kind, None);
    // Not an equality with a kind alone.
    let (plan, _) = planned("nexmark-q5.toml", |text| {
        text.replace("event = 'bid'", "event = 'bid' AND price > 0")
    });
    assert_eq!(plan.event_kind, None);
}

#[test]
fn a_join_with_its_own_windows_max_is_planned_as_an_extreme() {
    let (plan, config) = planned("nexmark-q7.toml", |text| text);
    let app = &config.apps[0];
    let extreme = super::build::extreme_join(app, &plan, 2).expect("an extreme join");
    assert_eq!((extreme.right, extreme.greatest), (1, true));
    let (plan, config) = planned("nexmark-q7.toml", |text| {
        text.replace("max(price)", "min(price)")
    });
    let extreme = super::build::extreme_join(&config.apps[0], &plan, 2).expect("min too");
    assert!(!extreme.greatest);
    // Not the same windows, another aggregate, or a key: a plain join.
    for (from, to) in [
        (
            "window = { kind = \"tumbling\", size_ms = 10000 }\naggregates",
            "window = { kind = \"tumbling\", size_ms = 5000 }\naggregates",
        ),
        ("max(price)", "sum(price)"),
        (
            "aggregates = { price",
            "by = [\"date_time\"]\naggregates = { price",
        ),
    ] {
        let (plan, config) = planned("nexmark-q7.toml", |text| {
            assert!(text.contains(from), "{from}");
            text.replace(from, to)
        });
        assert!(
            super::build::extreme_join(&config.apps[0], &plan, 2).is_none(),
            "{to}"
        );
    }
}
