//! The `dirigo` binary end to end: the demo, every config in `configs/` run and its
//! report checked, the benchmarks' JSON, help and errors.

mod common;

use std::process::Command;

use common::{bench_json, dirigo};
use dirigo_operators::io::nats::LocalServer;

#[test]
fn the_demo_counts_every_event_once() {
    let output = dirigo()
        .args([
            "demo",
            "--events",
            "50000",
            "--keys",
            "300",
            "--partitions",
            "8",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("counted 50000 events"), "{stdout}");
    assert!(
        stdout.contains("ok: every event counted exactly once"),
        "{stdout}"
    );
    assert!(stdout.contains("shard"), "{stdout}");
}

#[test]
fn the_demo_runs_on_more_shards_than_cores_and_says_so() {
    let output = dirigo()
        .args(["demo", "--shards", "8", "--events", "20000"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 8 {
        assert!(stdout.contains("unpinned"), "{stdout}");
        assert!(stderr.contains("unpinned"), "{stderr}");
    }
}

#[test]
fn bench_mesh_writes_every_key() {
    let (report, table) = bench_json(
        "mesh",
        &[
            "--round-trips",
            "2000",
            "--parked-round-trips",
            "50",
            "--messages",
            "20000",
        ],
    );
    assert!(table.contains("dirigo rtt / floor"));
    for key in dirigo_bench::mesh::LATENCY_KEYS {
        for field in ["p50", "p99", "p999", "mean"] {
            assert!(report[key][field].is_number(), "{key}.{field} in {report}");
        }
    }
    for key in dirigo_bench::mesh::THROUGHPUT_KEYS {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}");
    }
}

#[test]
fn bench_consolidate_writes_every_size() {
    let (report, table) = bench_json(
        "consolidate",
        &["--repetitions", "3", "--max-bytes", "65536"],
    );
    assert!(table.contains("rkyv/copy"));
    let sizes = report["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 2, "1 KiB and 64 KiB: {report}");
    for (size, most) in sizes.iter().zip([1024, 65536]) {
        let bytes = size["bytes"].as_u64().unwrap();
        assert!(bytes <= most && bytes > most * 9 / 10, "{size}");
        for key in [
            "rkyv_ns",
            "copy_ns",
            "copy_same_layout_ns",
            "ratio_same_layout",
        ] {
            assert!(size[key].as_f64().unwrap() > 0.0, "{key} in {size}");
        }
    }
    let operators = report["operators"].as_array().unwrap();
    assert_eq!(operators.len(), 2, "window_count at each size: {report}");
    for (row, most) in operators.iter().zip([1024, 65536]) {
        assert_eq!(row["operator"], "window_count");
        let bytes = row["bytes"].as_u64().unwrap();
        assert!(bytes <= most && bytes > most * 9 / 10, "{row}");
        for key in ["in_place_ns", "deserialize_first_ns", "ratio"] {
            assert!(row[key].as_f64().unwrap() > 0.0, "{key} in {row}");
        }
    }
}

#[test]
fn bench_lessee_reports_a_speedup_and_checks_the_merged_state() {
    // The run fails (non-zero exit) if the consolidated state misses any record.
    let (report, _) = bench_json(
        "lessee",
        &["--records", "4000", "--rounds", "1", "--work-ns", "500"],
    );
    assert!(report["speedup"].as_f64().unwrap() > 0.0, "{report}");
    let share = report["lessee_share"].as_f64().unwrap();
    assert!(
        share > 0.0 && share < 1.0,
        "the lessee ran records: {report}"
    );
}

#[test]
fn bench_barrier_reports_its_latency() {
    let (report, _) = bench_json("barrier", &["--barriers", "200"]);
    let barrier = &report["barrier_ns"];
    for key in ["p50", "p99", "p999", "mean"] {
        assert!(barrier[key].as_f64().unwrap() > 0.0, "{key} in {report}");
    }
    assert!(report["barriers"].as_u64().unwrap() >= 150, "{report}");
}

#[test]
fn bench_scale_step_reports_the_first_lessee_and_three_phases() {
    // The run fails if the consolidated count differs from the records that ran.
    let (report, _) = bench_json(
        "scale-step",
        &["--before-s", "0.2", "--after-s", "0.3", "--cost-us", "50"],
    );
    for phase in ["before", "during", "after"] {
        assert!(
            report[phase]["p99"].as_u64().unwrap() > 0,
            "{phase} in {report}"
        );
    }
    for key in ["p99_before_ns", "p99_during_ns", "p99_after_ns"] {
        assert!(report[key].as_u64().unwrap() > 0, "{key} in {report}");
    }
    // 150 % of one shard cannot be served without a lessee.
    assert!(
        report["first_lessee_after_step_ns"].as_u64().is_some(),
        "{report}"
    );
    assert!(report["records"].as_u64().unwrap() > 1000, "{report}");
}

#[test]
fn bench_slo_reports_every_policy_and_app_with_complete_outputs() {
    // One second: both analytics apps burst once, together. Two rounds: the medians'
    // event counts are the rounds' sums.
    let (report, _) = bench_json("slo", &["--seconds", "1", "--rounds", "2"]);
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{report}");
    for policy in ["fifo", "edf", "dirigo"] {
        for app in ["alerts", "analytics-a", "analytics-b"] {
            let summed: u64 = rounds
                .iter()
                .map(|round| round[policy]["apps"][app]["events_in"].as_u64().unwrap())
                .sum();
            assert_eq!(
                report["policies"][policy]["apps"][app]["events_in"].as_u64(),
                Some(summed),
                "{report}"
            );
        }
    }
    for policy in ["fifo", "edf", "dirigo"] {
        let result = &report["policies"][policy];
        assert!(
            result["reserved_core_seconds"].as_f64().unwrap() > 0.0,
            "{report}"
        );
        assert!(
            result["busy_core_seconds"].as_f64().unwrap() > 0.0,
            "{report}"
        );
        for app in ["alerts", "analytics-a", "analytics-b"] {
            let app = &result["apps"][app];
            let events_in = app["events_in"].as_u64().unwrap();
            assert!(events_in > 0, "{report}");
            assert_eq!(app["events_out"].as_u64(), Some(events_in), "{report}");
            let satisfaction = app["satisfaction"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&satisfaction), "{report}");
            for key in ["p50_ns", "p99_ns", "p999_ns", "lessee_events"] {
                assert!(app[key].as_u64().is_some(), "{key}: {report}");
            }
            assert!(app["critical"].as_bool().is_some(), "{report}");
        }
    }
}

#[test]
fn bench_isolation_reports_every_system_with_the_same_heavy_rows() {
    let (report, _) = bench_json(
        "isolation",
        &["--seconds", "1.5", "--rounds", "1", "--heavy-rate", "20000"],
    );
    let systems = &report["systems"];
    let rows = systems["timely"]["heavy"]["rows_per_run"].clone();
    assert!(rows[0].as_u64().unwrap() > 0, "{report}");
    for system in ["fifo", "edf", "dirigo", "timely"] {
        let critical = &systems[system]["critical"];
        for key in ["p50_ns", "p99_ns", "p999_ns", "outputs"] {
            assert!(
                critical[key].as_u64().unwrap() > 0,
                "{system} {key}: {report}"
            );
        }
        let satisfaction = critical["satisfaction"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&satisfaction), "{report}");
        let heavy = &systems[system]["heavy"];
        assert!(heavy["events_per_s"].as_f64().unwrap() > 0.0, "{report}");
        assert!(heavy["p99_ns"].as_u64().unwrap() > 0, "{report}");
        // Both systems count the same windows over the same records.
        assert_eq!(heavy["rows_per_run"], rows, "{system}: {report}");
    }
    assert!(report["load_average"][0].as_f64().is_some(), "{report}");
    assert_eq!(
        report["machine_noise"].as_array().unwrap().len(),
        2,
        "{report}"
    );
}

#[test]
fn every_config_in_configs_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            let output = dirigo().arg("validate").arg(&path).output().unwrap();
            assert!(
                output.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "configs/ has TOML files");
}

#[test]
fn bad_configs_exit_2_with_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("dirigo-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("[runtime]\nshards = \"two\"\n", ":2:"),
        ("[runtime]\nshardz = 2\n", ":2:1:"),
        ("[runtime]\ncpus = [0, 0]\n", ":2:"),
        ("[scheduler]\npolicy = \"lifo\"\n", ":2:"),
        ("[scheduler]\nheadroom = -1.0\n", ":2:"),
        (
            "[scheduler]\npolicy = \"dirigo\"\nbest_effort_spread_above = 1.5\n",
            ":3:28",
        ),
        ("[runtime\nshards = 2\n", ":1:"),
        ("[[app]]\nname = \"a\"\nquery = \"q99\"\n", ":3:9:"),
        (
            "[[app]]\nname = \"c\"\n[[app.operator]]\nname = \"a\"\nkind = \"map\"\ninput = \"b\"\n[[app.operator]]\nname = \"b\"\nkind = \"map\"\ninput = \"a\"\n",
            ":6:9:",
        ),
        ("[[app]]\nname = \"s\"\nslo_ms = 0\nquery = \"q1\"\n", ":3:10:"),
        ("[runtime]\ncpus = [4096]\n", ":2:9:"),
        ("[[app]]\nquery = \"q1\"\n", ":1:1:"),
        (
            "[[app]]\nname = \"x\"\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\nspeed = 3\n",
            ":6:1:",
        ),
        ("[[app]]\nname = \"x\"\nparallelism = \"two\"\nquery = \"q1\"\n", ":3:15:"),
        (
            "[[app]]\nname = \"x\"\n[[app.operator]]\nname = \"f\"\nkind = \"filter\"\n",
            ":5:8:",
        ),
        (
            "[[app]]\nname = \"x\"\n[app.source]\nkind = \"file\"\npath = \"missing.csv\"\n",
            ":5:8:",
        ),
        (
            "[[app]]\nname = \"x\"\n[app.source]\nshape = { shape = \"constant\", rate = -5.0 }\n",
            ":4:9:",
        ),
        (
            "[[app]]\nname = \"x\"\n[[app.operator]]\nname = \"w\"\nkind = \"window_count\"\nwindow = { kind = \"tumbling\", size_ms = 0 }\n",
            ":6:10:",
        ),
        (
            "[[app]]\nname = \"x\"\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\ninput = \"nowhere\"\n",
            ":6:9:",
        ),
        (
            "[[app]]\nname = \"x\"\nquery = \"q1\"\n[[app]]\nname = \"x\"\nquery = \"q2\"\n",
            ":5:8:",
        ),
        (
            "[[app]]\nname = \"x\"\n[[app.operator]]\nname = \"m\"\nkind = \"sort\"\n",
            ":5:8:",
        ),
        ("[run]\nduration_s = 0\n", ":2:14:"),
        (
            "[[app]]\nname = \"x\"\n[[app.operator]]\nname = \"a\"\nkind = \"map\"\ninput = [\"source\", \"c\"]\n[[app.operator]]\nname = \"b\"\nkind = \"map\"\n[[app.operator]]\nname = \"c\"\nkind = \"map\"\n",
            ":6:9:",
        ),
        (
            "[[app]]\nname = \"x\"\n[[app.operator]]\nname = \"a\"\nkind = \"map\"\ninput = [\"source\", \"nope\"]\n",
            ":6:9:",
        ),
        (
            "[[app]]\nname = \"x\"\n[[app.operator]]\nname = \"a\"\nkind = \"map\"\ninput = 7\n",
            ":6:9:",
        ),
    ];
    for (index, (text, place)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{index}.toml"));
        std::fs::write(&path, text).unwrap();
        for command in [vec!["validate"], vec!["demo", "--config"], vec!["run"]] {
            let output = dirigo().args(&command).arg(&path).output().unwrap();
            assert_eq!(output.status.code(), Some(2), "{text:?} with {command:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            let expected = format!("{}{place}", path.display());
            assert!(stderr.starts_with(&expected), "{text:?}: {stderr}");
        }
    }
    // Valid, but nothing to run.
    let path = dir.join("no-apps.toml");
    std::fs::write(&path, "[runtime]\nshards = 1\n").unwrap();
    let output = dirigo().arg("run").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no [[app]] to run"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_shows_examples_and_bad_flags_fail() {
    let output = dirigo().arg("--help").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("Examples:"));
    let output = dirigo()
        .args(["bench", "mesh", "--round-trips", "many"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid value"));
}

#[test]
fn bench_nexmark_reports_throughput_and_latency_at_two_loads() {
    let (report, table) = bench_json(
        "nexmark",
        &[
            "--query",
            "q5",
            "--events",
            "20000",
            "--rounds",
            "1",
            "--latency-seconds",
            "0.2",
        ],
    );
    assert!(report["events_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["outputs"].as_u64().unwrap() > 0, "{report}");
    let loads = report["latency"].as_array().unwrap();
    assert_eq!(loads.len(), 2, "{report}");
    for load in loads {
        assert!(load["p99_ns"].as_u64().unwrap() > 0, "{report}");
        assert!(
            load["late_batches"]["batches"].as_u64().is_some(),
            "{report}"
        );
    }
    assert!(table.contains("q5"), "{table}");
    assert!(table.contains("machine noise"), "{table}");
}

#[test]
fn bench_nexmark_all_reports_every_query_at_both_loads() {
    let (report, table) = bench_json(
        "nexmark",
        &[
            "--all",
            "--events",
            "5000",
            "--rounds",
            "1",
            "--latency-seconds",
            "0.1",
        ],
    );
    let queries = report["queries"].as_object().unwrap();
    // Parsed without `preserve_order`, the keys come back sorted.
    let mut names: Vec<&str> = queries.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["q0", "q1", "q11", "q2", "q3", "q4", "q5", "q7", "q8"],
        "{report}"
    );
    for (name, query) in queries {
        assert!(query["events_per_s"].as_f64().unwrap() > 0.0, "{name}");
        for load in ["load_50", "load_80"] {
            for key in ["p50_ns", "p99_ns", "p999_ns"] {
                assert!(query[load][key].as_u64().is_some(), "{name} {load} {key}");
            }
        }
    }
    assert!(!report["machine_noise"].as_array().unwrap().is_empty());
    assert!(table.contains("q11:"), "{table}");
    let output = dirigo()
        .args(["bench", "nexmark", "--all", "--query", "q1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "--all with --query");
}

#[test]
fn bench_peer_runs_both_systems_and_checks_their_results() {
    let (report, _) = bench_json(
        "peer",
        &[
            "--events",
            "30000",
            "--rounds",
            "1",
            "--latency-seconds",
            "0.2",
        ],
    );
    for system in ["dirigo", "timely"] {
        assert_eq!(report[system]["correct"], true, "{report}");
        assert!(report[system]["events_per_s"].as_f64().unwrap() > 0.0);
        assert!(report[system]["latency_ns"]["p99"].as_u64().unwrap() > 0);
    }
}

#[test]
fn bench_peer_takes_an_offered_load_and_refuses_a_bad_one() {
    let (report, _) = bench_json(
        "peer",
        &[
            "--events",
            "20000",
            "--rounds",
            "1",
            "--latency-seconds",
            "0.2",
            "--offered",
            "250000",
        ],
    );
    assert_eq!(
        report["offered_per_s"].as_f64(),
        Some(250_000.0),
        "{report}"
    );
    for bad in ["0", "-5", "fast", "inf"] {
        let output = dirigo()
            .args(["bench", "peer", &format!("--offered={bad}")])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "--offered {bad}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("events per second"),
            "--offered {bad}"
        );
    }
}

#[test]
fn bench_nexmark_refuses_an_unknown_query() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dirigo"))
        .args(["bench", "nexmark", "--query", "q6", "--events", "1000"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown query"), "{stderr}");
}

/// Runs `dirigo run CONFIG --duration DURATION --report REPORT` from `cwd`; the report.
fn run_config(
    config: &std::path::Path,
    duration: &str,
    cwd: &std::path::Path,
) -> serde_json::Value {
    let report = cwd.join("report.json");
    let output = dirigo()
        .current_dir(cwd)
        .arg("run")
        .arg(config)
        .args(["--duration", duration, "--report"])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}: {stdout}\n{}",
        config.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("events in"), "the summary table: {stdout}");
    serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap()
}

/// An SVG file that parses as XML with an `svg` root and something drawn in it.
fn assert_well_formed_svg(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let document = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", path.display()));
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg", "{}", path.display());
    assert!(
        root.descendants()
            .any(|node| node.has_tag_name("polyline") || node.has_tag_name("path")),
        "{} draws no line",
        path.display()
    );
}

/// A file of `configs/`, by absolute path (runs use scratch folders as their cwd).
fn config_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(name)
        .canonicalize()
        .unwrap()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dirigo-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Records (and one malformed message) for `configs/nats.toml`, in its stream READINGS.
fn publish_readings(url: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let context = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        context
            .create_stream(async_nats::jetstream::stream::Config {
                name: "READINGS".into(),
                subjects: vec!["readings.*".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        for i in 0..200u64 {
            let record = format!(
                "{{\"key\":{},\"value\":{},\"time\":{}}}",
                i % 10,
                i % 7,
                i * 10
            );
            let ack = context
                .publish(format!("readings.{}", i % 2), record.into())
                .await
                .unwrap();
            ack.await.unwrap();
        }
        let ack = context
            .publish("readings.0", "not a record".into())
            .await
            .unwrap();
        ack.await.unwrap();
    });
}

#[test]
fn every_config_in_configs_runs_and_its_report_adds_up() {
    let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .canonicalize()
        .unwrap();
    let mut ran = 0;
    for entry in std::fs::read_dir(&configs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "toml") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let cwd = scratch(&format!("run-{name}"));
        let text = std::fs::read_to_string(&path).unwrap();
        // A NATS pipeline runs against a server of its own, with records waiting.
        let _server;
        let (path, text) = if text.contains("kind = \"nats\"") {
            let server = LocalServer::start().expect("nats-server must start");
            let text = text.replace("nats://127.0.0.1:4222", &server.url());
            publish_readings(&server.url());
            _server = server;
            let copy = cwd.join(format!("{name}.toml"));
            std::fs::write(&copy, &text).unwrap();
            (copy, text)
        } else {
            (path, text)
        };
        let report = run_config(&path, "1s", &cwd);
        let declared = text.lines().filter(|line| line.trim() == "[[app]]").count();
        let apps = report["apps"].as_array().unwrap();
        assert_eq!(apps.len(), declared, "{name}: {report}");
        for app in apps {
            let count = |key: &str| {
                app[key]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{name}: `{key}` missing in {app}"))
            };
            assert!(count("events_in") > 0, "{name}: {app}");
            assert_eq!(
                count("events_in"),
                count("events_out") + count("dead_letters") + count("shed"),
                "{name}: events in = out + dead letters + shed: {app}"
            );
            for key in ["p50", "p90", "p99", "p999", "max"] {
                assert!(app["latency_ns"][key].as_u64().is_some(), "{name}: {app}");
            }
            assert!(app["latency_ns"]["p50"].as_u64() <= app["latency_ns"]["p99"].as_u64());
            if app["slo_ms"].is_number() {
                let share = app["satisfaction"].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&share), "{name}: {app}");
            } else {
                assert!(app["satisfaction"].is_null(), "{name}: {app}");
            }
            let hgrm = cwd.join(app["hgrm"].as_str().unwrap());
            let hgrm_text = std::fs::read_to_string(&hgrm).unwrap();
            assert!(
                hgrm_text.contains("Percentile") && hgrm_text.contains("#[Max"),
                "{hgrm_text}"
            );
            let plots = hgrm.parent().unwrap();
            for plot in ["latency-cdf.svg", "busy-cores.svg", "lessees.svg"] {
                assert_well_formed_svg(&plots.join(plot));
            }
        }
        let shards = report["shards"].as_u64().unwrap() as usize;
        assert_eq!(
            report["shard_usage"].as_array().unwrap().len(),
            shards,
            "{name}"
        );
        assert!(!report["timeline"].as_array().unwrap().is_empty(), "{name}");
        std::fs::remove_dir_all(&cwd).unwrap();
        ran += 1;
    }
    assert!(ran >= 4, "configs/ holds the example files");
}

#[test]
fn malformed_records_go_to_the_dead_letter_file_and_the_run_goes_on() {
    let config = config_file("file.toml");
    let cwd = scratch("dead-letters");
    let report = run_config(&config, "2s", &cwd);
    let app = &report["apps"][0];
    assert_eq!(app["dead_letters"], 3, "{app}");
    assert_eq!(app["events_out"], 2000, "{app}");
    let letters =
        std::fs::read_to_string(cwd.join(app["dead_letter_file"].as_str().unwrap())).unwrap();
    assert_eq!(letters.lines().count(), 3, "{letters}");
    assert!(letters.contains("not-a-number"), "{letters}");
    let maxima = std::fs::read_to_string(cwd.join("dirigo-report/file/maxima.jsonl")).unwrap();
    assert!(maxima.lines().count() > 10, "{maxima}");
    std::fs::remove_dir_all(&cwd).unwrap();
}

#[test]
fn run_for_five_seconds_writes_the_report_and_report_redraws_its_plots() {
    let config = config_file("default.toml");
    let cwd = scratch("five-seconds");
    let report = run_config(&config, "5s", &cwd);
    let seconds = report["duration_s"].as_f64().unwrap();
    assert!((4.9..8.0).contains(&seconds), "{seconds}");
    let names: Vec<&str> = report["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|app| app["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alerts", "analytics"]);
    let out = cwd.join("redrawn");
    let output = dirigo()
        .arg("report")
        .arg(cwd.join("report.json"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("alerts") && stdout.contains("p99 ms"),
        "{stdout}"
    );
    for plot in ["latency-cdf.svg", "busy-cores.svg", "lessees.svg"] {
        assert_well_formed_svg(&out.join(plot));
    }
    // Not a report: a clear error, no panic.
    std::fs::write(cwd.join("not-a-report.json"), "{\"apps\": 3}").unwrap();
    let output = dirigo()
        .arg("report")
        .arg(cwd.join("not-a-report.json"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a dirigo report"));
    std::fs::remove_dir_all(&cwd).unwrap();
}

#[test]
fn a_tcp_source_takes_records_while_the_run_lasts() {
    let cwd = scratch("tcp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = cwd.join("tcp.toml");
    std::fs::write(
        &config,
        format!(
            "[run]\nduration_s = 3\n\n[report]\ndir = \"out\"\n\n[[app]]\nname = \"net\"\n\n[app.source]\nkind = \"tcp\"\nlisten = \"127.0.0.1:{port}\"\nformat = \"json\"\n\n[[app.operator]]\nname = \"sums\"\nkind = \"running_sum\"\n"
        ),
    )
    .unwrap();
    let sender = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let mut stream = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => break stream,
                Err(_) if started.elapsed() < std::time::Duration::from_secs(20) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(error) => panic!("no listener: {error}"),
            }
        };
        use std::io::Write;
        for i in 0..100u64 {
            writeln!(stream, "{{\"key\":{},\"value\":{i},\"time\":{i}}}", i % 7).unwrap();
            if i % 50 == 0 {
                writeln!(stream, "{{\"key\":\"seven\"}}").unwrap();
            }
        }
    });
    let report = run_config(&config, "3s", &cwd);
    sender.join().unwrap();
    let app = &report["apps"][0];
    assert_eq!(app["dead_letters"], 2, "{app}");
    assert_eq!(app["events_out"], 100, "{app}");
    assert_eq!(app["events_in"], 102, "{app}");
    std::fs::remove_dir_all(&cwd).unwrap();
}

#[test]
fn ctrl_c_ends_a_run_early_and_it_still_reports() {
    let config = config_file("default.toml");
    let cwd = scratch("interrupt");
    let report = cwd.join("report.json");
    let child = dirigo()
        .current_dir(&cwd)
        .arg("run")
        .arg(&config)
        .args(["--duration", "60s", "--report"])
        .arg(&report)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let seconds = report["duration_s"].as_f64().unwrap();
    assert!(seconds < 10.0, "stopped early: {seconds}");
    assert!(report["apps"][0]["events_in"].as_u64().unwrap() > 0);
    std::fs::remove_dir_all(&cwd).unwrap();
}

/// Runs `config` for at most `duration` from `cwd` and returns the report, how long the
/// run took, and the lines of the sink file `sink` (relative to `cwd`).
fn run_with_sink(
    config: &std::path::Path,
    duration: &str,
    cwd: &std::path::Path,
    sink: &str,
) -> (serde_json::Value, f64, Vec<String>) {
    let report = run_config(config, duration, cwd);
    let seconds = report["duration_s"].as_f64().unwrap();
    let lines = std::fs::read_to_string(cwd.join(sink))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    (report, seconds, lines)
}

#[test]
fn a_record_at_u64_max_in_a_file_is_a_dead_letter_and_the_run_reads_to_the_end() {
    let cwd = scratch("end-of-time-file");
    // 20 000 records, 4 keys, 1 ms apart; the 2 000th line claims the end of time.
    let mut text = String::from("key,value,time\n");
    for i in 0..20_000u64 {
        if i == 2_000 {
            text.push_str(&format!("9,1,{}\n", u64::MAX));
        }
        text.push_str(&format!("{},1,{i}\n", i % 4));
    }
    std::fs::write(cwd.join("in.csv"), text).unwrap();
    let config = cwd.join("file.toml");
    std::fs::write(
        &config,
        "[run]\nduration_s = 20\n\n[report]\ndir = \"out\"\n\n[[app]]\nname = \"f\"\n\n\
         [app.source]\nkind = \"file\"\npath = \"in.csv\"\nformat = \"csv\"\n\n\
         [[app.operator]]\nname = \"sums\"\nkind = \"window_sum\"\n\
         window = { kind = \"tumbling\", size_ms = 100 }\n\n\
         [app.sink]\nkind = \"json-lines\"\npath = \"sums.jsonl\"\n",
    )
    .unwrap();
    let (report, seconds, lines) = run_with_sink(&config, "20s", &cwd, "sums.jsonl");
    let app = &report["apps"][0];
    // Every good record went in, the bad one is a letter, and the run ended with the file
    // (not at the bad line, not at the deadline).
    assert_eq!(app["events_out"], 20_000, "{app}");
    assert_eq!(app["dead_letters"], 1, "{app}");
    assert!(seconds < 15.0, "the run ends when the file does: {seconds}");
    // 200 windows × 4 keys, each a sum of 25, and the report's outputs are the file's.
    assert_eq!(lines.len(), 800, "{lines:?}");
    assert_eq!(app["outputs"].as_u64(), Some(lines.len() as u64), "{app}");
    assert!(lines.iter().all(|line| line.contains("\"value\":25")));
    let letters =
        std::fs::read_to_string(cwd.join(app["dead_letter_file"].as_str().unwrap())).unwrap();
    assert_eq!(letters.lines().count(), 1, "{letters}");
    assert!(letters.contains("\"position\":\"line 2002\""), "{letters}");
    assert!(
        letters.contains("event time 18446744073709551615 ms is out of range"),
        "{letters}"
    );
    std::fs::remove_dir_all(&cwd).unwrap();
}

#[test]
fn a_record_at_u64_max_over_tcp_is_a_dead_letter_and_the_run_lasts_its_time() {
    let cwd = scratch("end-of-time-tcp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = cwd.join("tcp.toml");
    std::fs::write(
        &config,
        format!(
            "[run]\nduration_s = 4\n\n[report]\ndir = \"out\"\n\n[[app]]\nname = \"net\"\n\n\
             [app.source]\nkind = \"tcp\"\nlisten = \"127.0.0.1:{port}\"\nformat = \"json\"\n\n\
             [app.sink]\nkind = \"json-lines\"\npath = \"out.jsonl\"\n"
        ),
    )
    .unwrap();
    let sender = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let mut stream = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => break stream,
                Err(_) if started.elapsed() < std::time::Duration::from_secs(20) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(error) => panic!("no listener: {error}"),
            }
        };
        use std::io::Write;
        for i in 0..100u64 {
            writeln!(stream, "{{\"key\":1,\"value\":{i},\"time\":{i}}}").unwrap();
        }
        writeln!(stream, "{{\"key\":1,\"value\":0,\"time\":{}}}", u64::MAX).unwrap();
        stream.flush().unwrap();
        // The rest comes later: a stream that the bad line ended would miss it.
        std::thread::sleep(std::time::Duration::from_millis(300));
        for i in 100..200u64 {
            writeln!(stream, "{{\"key\":1,\"value\":{i},\"time\":{i}}}").unwrap();
        }
    });
    let (report, seconds, lines) = run_with_sink(&config, "4s", &cwd, "out.jsonl");
    sender.join().unwrap();
    let app = &report["apps"][0];
    assert!(seconds >= 3.9, "the run lasts its duration: {seconds}");
    assert_eq!(app["dead_letters"], 1, "{app}");
    assert_eq!(app["events_in"], 201, "{app}");
    assert_eq!(app["events_out"], 200, "{app}");
    assert_eq!(lines.len(), 200, "{lines:?}");
    assert_eq!(app["outputs"].as_u64(), Some(lines.len() as u64), "{app}");
    let letters =
        std::fs::read_to_string(cwd.join(app["dead_letter_file"].as_str().unwrap())).unwrap();
    assert!(
        letters.contains("\"position\":\"conn 1 line 101\""),
        "{letters}"
    );
    assert!(letters.contains("out of range"), "{letters}");
    std::fs::remove_dir_all(&cwd).unwrap();
}

#[test]
fn sums_that_overflow_saturate_instead_of_wrapping() {
    let cwd = scratch("overflow");
    let big = u64::MAX - 1;
    // Key 1 overflows in window [0, 100) and in the running sum; key 2 does not.
    std::fs::write(
        cwd.join("in.csv"),
        format!("1,{big},1\n1,5,2\n2,7,3\n2,8,4\n1,1,150\n"),
    )
    .unwrap();
    let config = cwd.join("overflow.toml");
    let app = |name: &str, operator: &str| {
        format!(
            "[[app]]\nname = \"{name}\"\nparallelism = 1\n\n\
             [app.source]\nkind = \"file\"\npath = \"in.csv\"\nformat = \"csv\"\n\n\
             [[app.operator]]\nname = \"sums\"\n{operator}\n\n\
             [app.sink]\nkind = \"json-lines\"\npath = \"{name}.jsonl\"\n\n"
        )
    };
    std::fs::write(
        &config,
        format!(
            "[run]\nduration_s = 20\n\n[report]\ndir = \"out\"\n\n{}{}",
            app(
                "windowed",
                "kind = \"window_sum\"\nwindow = { kind = \"tumbling\", size_ms = 100 }"
            ),
            app("running", "kind = \"running_sum\""),
        ),
    )
    .unwrap();
    let report = run_config(&config, "20s", &cwd);
    let rows = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(cwd.join(format!("{name}.jsonl")))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let value = |rows: &[serde_json::Value], key: u64, time: Option<u64>| -> Vec<u64> {
        rows.iter()
            .filter(|row| row["key"] == key && time.is_none_or(|time| row["time"] == time))
            .map(|row| row["value"].as_u64().unwrap())
            .collect()
    };
    let windowed = rows("windowed");
    assert_eq!(value(&windowed, 1, Some(0)), [u64::MAX], "{windowed:?}");
    assert_eq!(value(&windowed, 2, Some(0)), [15], "{windowed:?}");
    assert_eq!(value(&windowed, 1, Some(100)), [1], "{windowed:?}");
    // The running sum's last value per key is its total: saturated for key 1.
    let running = rows("running");
    assert_eq!(
        value(&running, 1, None).last(),
        Some(&u64::MAX),
        "{running:?}"
    );
    assert_eq!(value(&running, 2, None).last(), Some(&15), "{running:?}");
    for app in report["apps"].as_array().unwrap() {
        assert_eq!(app["dead_letters"], 0, "{app}");
        assert_eq!(app["events_out"], 5, "{app}");
    }
    std::fs::remove_dir_all(&cwd).unwrap();
}

/// Waits for `child` at most `seconds`; kills it and fails the test past that.
fn wait_within(
    mut child: std::process::Child,
    seconds: u64,
) -> (std::process::Output, std::time::Duration) {
    let started = std::time::Instant::now();
    let deadline = started + std::time::Duration::from_secs(seconds);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after {seconds} s\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

/// A `map` told to panic on one value fails its app: the run does not wait for it (no
/// drain timeout, no run to the end of `--duration`), the other app's output is complete,
/// the report names the failure and its message, and the command exits with code 4.
#[test]
fn a_panicking_operator_fails_its_app_and_the_run_exits_4() {
    let cwd = scratch("panic");
    let lines = |count: u64| -> String {
        (0..count)
            .map(|i| format!("{},{},{}\n", i % 10, i, i / 10))
            .collect()
    };
    std::fs::write(cwd.join("fragile.csv"), lines(5_000)).unwrap();
    std::fs::write(cwd.join("healthy.csv"), lines(3_000)).unwrap();
    std::fs::write(
        cwd.join("panic.toml"),
        r#"[runtime]
shards = 2

[run]
duration_s = 60

[[app]]
name = "fragile"
[app.source]
kind = "file"
path = "fragile.csv"
[[app.operator]]
name = "poisoned"
kind = "map"
panic_on_value = 1234
[[app.operator]]
name = "per-key"
kind = "window_count"
window = { kind = "tumbling", size_ms = 10 }

[[app]]
name = "healthy"
[app.source]
kind = "file"
path = "healthy.csv"
[[app.operator]]
name = "pass"
kind = "map"
[app.sink]
kind = "json-lines"
path = "healthy.jsonl"
"#,
    )
    .unwrap();
    let child = dirigo()
        .current_dir(&cwd)
        .args(["run", "panic.toml", "--report", "report.json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (output, took) = wait_within(child, 30);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(
        took < std::time::Duration::from_secs(15),
        "waited for the failed app: {took:?}\n{stderr}"
    );
    let message = "`panic_on_value = 1234` met key 4";
    assert!(
        stdout.contains("app fragile FAILED") && stdout.contains(message),
        "the summary says which app failed and why: {stdout}"
    );
    assert!(stderr.contains("fragile"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cwd.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["failed_apps"],
        serde_json::json!(["fragile"]),
        "{report}"
    );
    assert_eq!(report["handler_panics"], 1, "{report}");
    let fragile = &report["apps"][0];
    assert_eq!(fragile["failed"], message, "{fragile}");
    assert_eq!(fragile["handler_panics"], 1, "{fragile}");
    let count = |app: &serde_json::Value, key: &str| app[key].as_u64().unwrap();
    assert_eq!(
        count(fragile, "events_in"),
        count(fragile, "events_out")
            + count(fragile, "dead_letters")
            + count(fragile, "shed")
            + count(fragile, "discarded"),
        "{fragile}"
    );
    assert!(count(fragile, "events_out") < 5_000, "{fragile}");
    let healthy = &report["apps"][1];
    assert!(healthy["failed"].is_null(), "{healthy}");
    assert_eq!(healthy["handler_panics"], 0, "{healthy}");
    assert_eq!(count(healthy, "events_in"), 3_000, "{healthy}");
    assert_eq!(count(healthy, "outputs"), 3_000, "{healthy}");
    let written = std::fs::read_to_string(cwd.join("healthy.jsonl")).unwrap();
    assert_eq!(written.lines().count(), 3_000);
    std::fs::remove_dir_all(&cwd).unwrap();
}
