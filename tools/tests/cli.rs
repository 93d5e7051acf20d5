//! The `dirigo` binary end to end: the demo, the mesh benchmark's JSON, help and errors.

use std::process::Command;

fn dirigo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dirigo"))
}

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
    let dir = std::env::temp_dir().join(format!("dirigo-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("mesh.json");
    let output = dirigo()
        .args([
            "bench",
            "mesh",
            "--round-trips",
            "2000",
            "--parked-round-trips",
            "50",
            "--messages",
            "20000",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("dirigo rtt / floor"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in dirigo_bench::mesh::LATENCY_KEYS {
        for field in ["p50", "p99", "p999", "mean"] {
            assert!(report[key][field].is_number(), "{key}.{field} in {report}");
        }
    }
    for key in dirigo_bench::mesh::THROUGHPUT_KEYS {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}");
    }
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
