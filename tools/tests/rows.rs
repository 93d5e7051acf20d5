//! Pipelines over typed rows through the `dirigo` binary: the card-fraud example runs
//! as the docs show it, a mistake in an expression exits 2 at its `FILE:LINE:COLUMN`,
//! a CSV pipeline with `select`, `key`, sliding and session windows, a CSV sink and
//! run-time dead letters gives the expected rows, NEXMark queries in TOML give the
//! built-in ones' rows, a running aggregate ends with each key's aggregates (with and
//! without lessees), and late rows go to the dead letters when told.

// Only `dirigo()` of the shared helpers is used here.
#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};

use common::dirigo;

/// A fresh folder for one test.
fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dirigo-rows-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// Runs `dirigo run config` in `dir`; panics unless it succeeds.
fn run_in(dir: &Path, config: &Path) {
    let output = dirigo()
        .current_dir(dir)
        .args(["run"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_fraud_example_gives_the_documented_alerts() {
    let dir = folder("fraud");
    run_in(&dir, &configs().join("fraud.toml"));
    let alerts = std::fs::read_to_string(dir.join("alerts.jsonl")).unwrap();
    assert_eq!(
        alerts,
        "{\"card\":\"c17\",\"n\":3,\"total\":4120.5,\"window_start\":1699999980000,\"window_end\":1700000040000}\n\
         {\"card\":\"c17\",\"n\":3,\"total\":5400.0,\"window_start\":1700000040000,\"window_end\":1700000100000}\n"
    );
    let letters =
        std::fs::read_to_string(dir.join("dirigo-report/fraud/fraud.dead-letters.jsonl")).unwrap();
    assert_eq!(letters.lines().count(), 1, "{letters}");
    assert!(letters.contains(r#""position":"line 9""#), "{letters}");
    assert!(
        letters.contains(r#"field amount: expected f64, found \"lots\""#),
        "{letters}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_type_mismatch_exits_2_inside_the_string() {
    let dir = folder("mismatch");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::copy(
        configs().join("data/payments.jsonl"),
        dir.join("data/payments.jsonl"),
    )
    .unwrap();
    let text = std::fs::read_to_string(configs().join("fraud.toml"))
        .unwrap()
        .replace("amount > 1000 AND", "amount > 'x' AND");
    let config = dir.join("fraud.toml");
    std::fs::write(&config, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("where")).unwrap() + 1;
    let output = dirigo().arg("validate").arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{}:{line}:19: a value that `>` can compare with an f64 (`amount`); `'x'` is a string",
            config.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

const READINGS: &str = "\
time,sensor,site,celsius
1000,s1,north,20.5
1500,s2,north,18.0
2000,s1,north,not-a-number
2500,s1,north,21.5
3000,s2,south,19.0
9000,s1,north,22.0
9200,s2,south,-5
";

const PIPELINE: &str = r#"
[[app]]
name = "sensors"
parallelism = 2
[app.source]
kind = "file"
path = "readings.csv"
format = "csv"
schema = { sensor = "string", site = "string", celsius = "f64", time = "timestamp_ms" }
event_time = "time"
[[app.operator]]
name = "fahrenheit"
kind = "select"
fields = { sensor = "upper(sensor)", f = "round(celsius * 9 / 5 + 32, 1)", time = "time", frost = "CAST(celsius < 0 AS string)" }
[[app.operator]]
name = "per-sensor"
kind = "key"
by = ["sensor"]
[[app.operator]]
name = "sliding"
kind = "window"
window = { kind = "sliding", size_ms = 2000, slide_ms = 1000 }
aggregates = { n = "count()", lo = "min(f)", hi = "max(f)", mean = "avg(f)", last = "last(frost)" }
[[app.operator]]
name = "sessions"
kind = "window"
input = "per-sensor"
window = { kind = "session", gap_ms = 3000 }
aggregates = { readings = "count()", first = "first(f)", kinds = "count(DISTINCT frost)" }
having = "readings > 1"
[app.sink]
kind = "csv"
path = "out.csv"
"#;

#[test]
fn a_csv_pipeline_with_select_key_and_windows() {
    let dir = folder("pipeline");
    std::fs::write(dir.join("readings.csv"), READINGS).unwrap();
    let config = dir.join("sensors.toml");
    std::fs::write(&config, PIPELINE).unwrap();
    run_in(&dir, &config);
    // Two leaves: `out.csv.0` (sliding) and `out.csv.1` (sessions).
    let sliding = std::fs::read_to_string(dir.join("out.csv.0")).unwrap();
    let mut lines: Vec<&str> = sliding.lines().collect();
    assert_eq!(
        lines.remove(0),
        "sensor,n,lo,hi,mean,last,window_start,window_end"
    );
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "S1,1,68.9,68.9,68.9,false,0,2000",
            "S1,1,70.7,70.7,70.7,false,2000,4000",
            "S1,1,71.6,71.6,71.6,false,8000,10000",
            "S1,1,71.6,71.6,71.6,false,9000,11000",
            "S1,2,68.9,70.7,69.80000000000001,false,1000,3000",
            "S2,1,23,23,23,true,8000,10000",
            "S2,1,23,23,23,true,9000,11000",
            "S2,1,64.4,64.4,64.4,false,0,2000",
            "S2,1,64.4,64.4,64.4,false,1000,3000",
            "S2,1,66.2,66.2,66.2,false,2000,4000",
            "S2,1,66.2,66.2,66.2,false,3000,5000",
        ]
    );
    let sessions = std::fs::read_to_string(dir.join("out.csv.1")).unwrap();
    let mut lines: Vec<&str> = sessions.lines().collect();
    assert_eq!(
        lines.remove(0),
        "sensor,readings,first,kinds,window_start,window_end"
    );
    lines.sort_unstable();
    assert_eq!(lines, ["S1,2,68.9,1,1000,5500", "S2,2,64.4,1,1500,6000"]);
    let letters =
        std::fs::read_to_string(dir.join("dirigo-report/sensors.dead-letters.jsonl")).unwrap();
    assert!(letters.contains(r#""position":"line 4""#), "{letters}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validate_prints_an_inferred_schema() {
    let dir = folder("infer");
    std::fs::write(dir.join("readings.csv"), READINGS).unwrap();
    let config = dir.join("infer.toml");
    std::fs::write(
        &config,
        "[[app]]\nname = \"i\"\n[app.source]\nkind = \"file\"\npath = \"readings.csv\"\nschema = \"infer\"\nevent_time = \"time\"\n[[app.operator]]\nname = \"f\"\nkind = \"filter\"\nwhere = \"celsius > 19\"\n",
    )
    .unwrap();
    let output = dirigo().arg("validate").arg(&config).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "app i: inferred schema = { time = \"timestamp_ms\", sensor = \"string\", site = \"string\", celsius = \"f64\" }"
        ),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `config` (its text) in `dir` as `name.toml`; returns the sorted lines of `out`.
fn run_lines(dir: &Path, name: &str, config: &str, out: &str) -> Vec<String> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    run_in(dir, &path);
    let text = std::fs::read_to_string(dir.join(out)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort_unstable();
    lines
}

/// A built-in query app whose sink writes `out` in `format`.
fn builtin(query: &str, events: u64, sink: &str) -> String {
    format!("[[app]]\nname = \"{query}\"\nquery = \"{query}\"\n[app.source]\nevents = {events}\n[app.sink]\n{sink}\n")
}

/// The TOML of `configs/nexmark-QUERY.toml` over `events` events.
fn nexmark_toml(query: &str, events: u64) -> String {
    std::fs::read_to_string(configs().join(format!("nexmark-{query}.toml")))
        .unwrap()
        .replace("events = 100000", &format!("events = {events}"))
}

#[test]
fn nexmark_q7_and_q8_in_toml_give_the_builtin_queries_rows() {
    let dir = folder("nexmark-joins");
    // q7 puts out a few rows per 10 s window: enough event time for a dozen windows.
    for (query, events) in [("q7", 1_500_000), ("q8", 300_000)] {
        let toml = nexmark_toml(query, events);
        let expected = run_lines(
            &dir,
            "builtin",
            &builtin(
                query,
                events,
                "kind = \"json-lines\"\npath = \"builtin.out\"",
            ),
            "builtin.out",
        );
        assert!(expected.len() >= 10, "{query}: {} rows", expected.len());
        for parallelism in [1, 2, 3] {
            let lines = run_lines(
                &dir,
                query,
                &toml.replace(
                    "[[app]]\nname = \"",
                    &format!("[[app]]\nparallelism = {parallelism}\nname = \""),
                ),
                &format!("{query}.jsonl"),
            );
            assert_eq!(lines, expected, "{query} with {parallelism} partitions");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether the run's timeline (in `report`) shows a lessee held by its app.
fn lessees_took_part(report: &Path) -> bool {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|sample| sample["lessees"][0].as_u64().unwrap_or(0) > 0)
}

/// Under the `dirigo` policy with an SLO no run can meet, the mergeable windows and
/// joins of the TOML queries get lessees (which fold rows into partial windows merged
/// back through their archives), and the rows are still the built-in query's. A run is
/// tried again (at most 6 times) until the timeline shows a lessee taking part.
#[test]
fn nexmark_queries_in_toml_with_lessees_give_the_builtin_queries_rows() {
    let dir = folder("nexmark-lessees");
    for (query, events) in [("q5", 300_000), ("q7", 1_000_000), ("q8", 300_000)] {
        let expected = run_lines(
            &dir,
            "builtin",
            &builtin(
                query,
                events,
                "kind = \"json-lines\"\npath = \"builtin.out\"",
            ),
            "builtin.out",
        );
        let settings =
            "[runtime]\nshards = 2\n[scheduler]\npolicy = \"dirigo\"\nretire_after_ms = 1\n\
                        [report]\ndir = \"leased\"\nsample_ms = 1\nplots = false\nhgrm = false\n";
        let toml = nexmark_toml(query, events)
            .replace(
                &format!("[report]\ndir = \"dirigo-report/nexmark-{query}\"\n"),
                settings,
            )
            .replace(
                "[[app]]\nname = \"",
                "[[app]]\nslo_ms = 0.05\nparallelism = 2\nname = \"",
            );
        assert!(
            toml.contains("policy"),
            "{query}: the settings replace [report]"
        );
        let mut leased = false;
        for _ in 0..6 {
            let lines = run_lines(&dir, query, &toml, &format!("{query}.jsonl"));
            assert_eq!(lines, expected, "{query} under the dirigo policy");
            if lessees_took_part(&dir.join("leased/report.json")) {
                leased = true;
                break;
            }
        }
        assert!(leased, "{query}: no run got a lessee");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nexmark_q1_q2_and_q5_in_toml_give_the_builtin_queries_rows() {
    let dir = folder("nexmark");
    for (query, events, sink, out) in [
        (
            "q1",
            30_000,
            "kind = \"json-lines\"\npath = \"builtin.out\"",
            "q1.jsonl",
        ),
        (
            "q2",
            30_000,
            "kind = \"csv\"\npath = \"builtin.out\"\nfields = [\"auction\", \"price\"]",
            "q2.csv",
        ),
        // Enough event time for a few dozen windows.
        (
            "q5",
            300_000,
            "kind = \"json-lines\"\npath = \"builtin.out\"",
            "q5.jsonl",
        ),
    ] {
        let toml = nexmark_toml(query, events);
        let expected = run_lines(
            &dir,
            "builtin",
            &builtin(query, events, sink),
            "builtin.out",
        );
        assert!(expected.len() >= 10, "{query}: {} rows", expected.len());
        // One partition per operator, and two (the rows spread over partitions and
        // merged again at the sink).
        let one = run_lines(
            &dir,
            query,
            &toml.replace("name = \"", "parallelism = 1\nname = \""),
            out,
        );
        assert_eq!(one, expected, "{query}");
        let two = run_lines(
            &dir,
            query,
            &toml.replace("name = \"", "parallelism = 2\nname = \""),
            out,
        );
        assert_eq!(two, expected, "{query} with two partitions");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_query_apps_sink_is_honoured() {
    let dir = folder("query-sink");
    let lines = run_lines(
        &dir,
        "q5",
        &builtin(
            "q5",
            20_000,
            "kind = \"json-lines\"\npath = \"q5.jsonl\"\nfields = [\"auction\", \"bids\"]",
        ),
        "q5.jsonl",
    );
    assert!(!lines.is_empty());
    for line in &lines {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["auction", "bids"], "{line}");
    }
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        builtin(
            "q5",
            10,
            "kind = \"csv\"\npath = \"x.csv\"\nfields = [\"price\"]",
        ),
    )
    .unwrap();
    let output = dirigo().arg("validate").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            ":9:11: a field of q5's output, one of: window_end, auction, bids; there is no `price`"
        ),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The last row of each key of a running aggregate's JSON lines (the one with the
/// largest count `n`, which only grows): key → row.
fn last_rows(lines: &[String], key: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut last: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    for line in lines {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let card = row[key].as_str().unwrap().to_owned();
        let n = row["n"].as_i64().unwrap();
        if last
            .get(&card)
            .is_none_or(|kept| kept["n"].as_i64().unwrap() < n)
        {
            last.insert(card, row);
        }
    }
    last
}

/// Rows of 100 cards (and 5 cards of one row each), in event-time order, with amounts
/// in quarters so that every sum is exact in an `f64`: the file's text, and per card
/// with two rows or more, what the running aggregate must end with.
fn card_rows() -> (
    String,
    std::collections::BTreeMap<String, serde_json::Value>,
) {
    let mut text = String::new();
    let mut expected: std::collections::BTreeMap<String, (i64, f64, f64, f64)> = Default::default();
    let mut add = |card: String, amount: f64, ts: u64| {
        text.push_str(&format!(
            "{{\"card\":\"{card}\",\"amount\":{amount:?},\"ts\":{ts}}}\n"
        ));
        let entry = expected
            .entry(card)
            .or_insert((0, 0.0, f64::NEG_INFINITY, 0.0));
        entry.0 += 1;
        entry.1 += amount;
        entry.2 = entry.2.max(amount);
        entry.3 = amount;
    };
    for i in 0..100_000u64 {
        let card = format!("c{}", (i * 37 + i / 3) % 100);
        let amount = ((i * 7919) % 4000) as f64 / 4.0 - 100.0;
        add(card, amount, 1_000_000 + i * 3);
    }
    for solo in 0..5u64 {
        add(format!("solo{solo}"), 10.0, 2_000_000 + solo);
    }
    let expected = expected
        .into_iter()
        .filter(|(_, (n, ..))| *n >= 2)
        .map(|(card, (n, total, biggest, latest))| {
            let row = serde_json::json!({
                "card": card, "n": n, "total": total, "biggest": biggest, "latest": latest,
            });
            (card, row)
        })
        .collect();
    (text, expected)
}

const RUNNING: &str = r#"
[[app]]
name = "totals"
[app.source]
kind = "file"
path = "rows.jsonl"
format = "json"
schema = { card = "string", amount = "f64", ts = "timestamp_ms" }
event_time = "ts"
[[app.operator]]
name = "per-card"
kind = "aggregate"
by = ["card"]
aggregates = { n = "count()", total = "sum(amount)", biggest = "max(amount)", latest = "last(amount)" }
having = "n >= 2"
[app.sink]
kind = "json-lines"
path = "totals.jsonl"
"#;

/// A running aggregate's last row per key is the aggregate of all the key's rows —
/// with one partition, with three, and under the `dirigo` policy with an SLO no run can
/// meet, where lessees fold rows into partial aggregates merged back (tried again, at
/// most 6 times, until the timeline shows a lessee). `having` keeps the cards of one
/// row out, and every row it lets through meets it.
#[test]
fn a_running_aggregate_ends_with_each_keys_aggregates_with_and_without_lessees() {
    let dir = folder("running");
    let (rows, expected) = card_rows();
    std::fs::write(dir.join("rows.jsonl"), rows).unwrap();
    let check = |lines: &[String], what: &str| {
        assert!(
            lines.len() >= expected.len(),
            "{what}: {} rows",
            lines.len()
        );
        for line in lines {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(row["n"].as_i64().unwrap() >= 2, "{what}: {line}");
        }
        assert_eq!(last_rows(lines, "card"), expected, "{what}");
    };
    for parallelism in [1, 3] {
        let config = RUNNING.replace(
            "[[app]]\n",
            &format!("[[app]]\nparallelism = {parallelism}\n"),
        );
        let lines = run_lines(&dir, "totals", &config, "totals.jsonl");
        check(&lines, &format!("{parallelism} partitions"));
    }
    let leased = format!(
        "[runtime]\nshards = 2\n[scheduler]\npolicy = \"dirigo\"\nretire_after_ms = 1\n\
         [report]\ndir = \"leased\"\nsample_ms = 1\nplots = false\nhgrm = false\n{}",
        RUNNING.replace("[[app]]\n", "[[app]]\nslo_ms = 0.05\nparallelism = 2\n")
    );
    let mut took_part = false;
    for _ in 0..6 {
        let lines = run_lines(&dir, "leased", &leased, "totals.jsonl");
        check(&lines, "under the dirigo policy");
        if lessees_took_part(&dir.join("leased/report.json")) {
            took_part = true;
            break;
        }
    }
    assert!(took_part, "no run got a lessee");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `configs/card-totals.toml`: with `late = "dead-letter"`, the two rows more than
/// `out_of_orderness_ms` behind go to the dead letters with their reason and the totals
/// leave them out; with `late = "drop"` (the default) the source passes them on, and a
/// running aggregate (no windows to be late for) counts them.
#[test]
fn late_rows_go_to_the_dead_letters_when_told() {
    let dir = folder("late");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::copy(
        configs().join("data/late-payments.jsonl"),
        dir.join("data/late-payments.jsonl"),
    )
    .unwrap();
    let text = std::fs::read_to_string(configs().join("card-totals.toml")).unwrap();
    let totals = |lines: &[String]| -> Vec<(String, i64, f64)> {
        last_rows(lines, "card")
            .into_iter()
            .map(|(card, row)| {
                (
                    card,
                    row["n"].as_i64().unwrap(),
                    row["total"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let lines = run_lines(&dir, "card-totals", &text, "card-totals.jsonl");
    assert_eq!(
        totals(&lines),
        [
            ("c02".to_owned(), 3, 3185.0),
            ("c09".to_owned(), 2, 3000.0 + 999.99),
            ("c17".to_owned(), 5, 7020.5),
        ]
    );
    let letters =
        std::fs::read_to_string(dir.join("dirigo-report/card-totals/totals.dead-letters.jsonl"))
            .unwrap();
    let letters: Vec<&str> = letters.lines().collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters[0].contains(r#""position":"line 8""#),
        "{}",
        letters[0]
    );
    assert!(
        letters[0].contains(
            "late: event time 1700000018000 ms is behind the watermark, 1700000023000 ms \
             (the highest event time before it, 1700000033000 ms, less out_of_orderness_ms, 10000)"
        ),
        "{}",
        letters[0]
    );
    assert!(
        letters[1].contains(r#""position":"line 10""#),
        "{}",
        letters[1]
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("dirigo-report/card-totals/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["apps"][0]["dead_letters"], 2, "{report}");

    let passed = text.replace("late = \"dead-letter\"", "late = \"drop\"");
    let lines = run_lines(&dir, "card-totals", &passed, "card-totals.jsonl");
    assert_eq!(
        totals(&lines),
        [
            ("c02".to_owned(), 4, 5085.0),
            // The sum is exact, rounded once: 4200 + 999.99 (not 3999.99 + 1200).
            ("c09".to_owned(), 3, 4200.0 + 999.99),
            ("c17".to_owned(), 5, 7020.5),
        ]
    );
    assert!(!dir
        .join("dirigo-report/card-totals/totals.dead-letters.jsonl")
        .exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The sorted lines of `file`.
fn sorted_lines(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort_unstable();
    lines
}

#[test]
fn apps_of_two_sources_union_and_join_them_alike_in_every_setting() {
    let card_minutes = [
        r#"{"card":"c1","n":3,"total":400.0,"window_start":1700000040000,"window_end":1700000100000}"#,
        r#"{"card":"c2","n":2,"total":50.0,"window_start":1700000040000,"window_end":1700000100000}"#,
        r#"{"card":"c3","n":1,"total":7.25,"window_start":1700000160000,"window_end":1700000220000}"#,
        r#"{"card":"c3","n":2,"total":15.0,"window_start":1700000100000,"window_end":1700000160000}"#,
    ];
    let shipped = [
        r#"{"order":"o1","card":"c1","amount":120.0,"carrier":"ups"}"#,
        r#"{"order":"o3","card":"c1","amount":80.0,"carrier":"dhl"}"#,
        r#"{"order":"o4","card":"c3","amount":10.0,"carrier":"ups"}"#,
    ];
    let example = std::fs::read_to_string(configs().join("two-sources.toml")).unwrap();
    let data = configs().join("data");
    let example = example.replace("\"data/", &format!("\"{}/", data.display()));
    // As written; with two partitions per operator and lessees allowed; and with
    // checkpoints, which rewind each source to its own position.
    let settings = [
        ("plain", String::new()),
        (
            "partitioned",
            "[runtime]\nshards = 2\n[scheduler]\npolicy = \"dirigo\"\n".to_owned(),
        ),
        (
            "checkpointed",
            "[checkpoint]\ndir = \"checkpoints\"\ninterval = \"5ms\"\n".to_owned(),
        ),
    ];
    for (name, settings) in settings {
        let dir = folder(&format!("two-sources-{name}"));
        let mut config = format!("{settings}\n{example}");
        if name == "partitioned" {
            config = config.replace(
                "[[app]]\nname = \"feeds\"\n",
                "[[app]]\nname = \"feeds\"\nparallelism = 2\n",
            );
            config = config.replace(
                "[[app]]\nname = \"shipped\"\n",
                "[[app]]\nname = \"shipped\"\nparallelism = 2\n",
            );
        }
        let path = dir.join("two-sources.toml");
        std::fs::write(&path, config).unwrap();
        run_in(&dir, &path);
        assert_eq!(
            sorted_lines(&dir.join("card-minutes.jsonl")),
            card_minutes,
            "{name}"
        );
        assert_eq!(sorted_lines(&dir.join("shipped.jsonl")), shipped, "{name}");
        // Both feeds' malformed lines are in the app's one dead-letter file.
        let letters = sorted_lines(&dir.join("dirigo-report/two-sources/feeds.dead-letters.jsonl"));
        assert_eq!(letters.len(), 2, "{name}: {letters:?}");
        assert!(
            letters[0].contains("payments-eu.jsonl")
                && letters[0].contains(r#""position":"line 3""#)
                && letters[0].contains(r#"field amount: expected f64, found \"lots\""#),
            "{name}: {letters:?}"
        );
        assert!(
            letters[1].contains("payments-us.csv")
                && letters[1].contains(r#""position":"line 4""#)
                && letters[1].contains(r#"expected timestamp_ms, found \"oops\""#),
            "{name}: {letters:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
