//! The `dirigo` binary against hostile and careless input: files that are not text
//! files, settings past their bounds, and stop signals at awkward moments. Every test
//! is bounded in time: a command that does not end within its limit is killed and fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn dirigo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dirigo"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dirigo-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits for `child` at most `limit`; kills it and fails past that. The output and how
/// long it took.
fn finish_within(mut child: Child, limit: Duration, what: &str) -> (Output, Duration) {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{what}: still running after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `dirigo ARGS`, which must end within `limit`.
fn dirigo_within(args: &[&std::ffi::OsStr], limit: Duration) -> (Output, Duration) {
    let child = dirigo()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish_within(child, limit, &format!("dirigo {args:?}"))
}

/// `validate` and `run` on `path` exit with code 2 at once, and the error starts with
/// `PATH:PLACE: `.
fn refused_at(path: &Path, place: &str) -> String {
    let mut stderr = String::new();
    for command in ["validate", "run"] {
        let (output, took) = dirigo_within(
            &[command.as_ref(), path.as_os_str()],
            Duration::from_secs(10),
        );
        stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{command} {}: {stderr}",
            path.display()
        );
        assert!(
            stderr.starts_with(&format!("{}:{place}: ", path.display())),
            "{command} {}: {stderr}",
            path.display()
        );
        assert!(took < Duration::from_secs(5), "{command} took {took:?}");
    }
    stderr
}

#[test]
fn a_fifo_and_a_device_are_refused_at_once() {
    let dir = scratch("fifo");
    let fifo = dir.join("config.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Nothing ever writes to the FIFO: reading it would wait for ever.
    let stderr = refused_at(&fifo, "1:1");
    assert!(stderr.contains("a FIFO"), "{stderr}");
    // Reading /dev/zero would never end.
    let stderr = refused_at(Path::new("/dev/zero"), "1:1");
    assert!(stderr.contains("character device"), "{stderr}");
    let stderr = refused_at(&dir, "1:1");
    assert!(stderr.contains("folder"), "{stderr}");
    // `dirigo report` reads a saved report: the same refusal, at once.
    for path in [fifo.as_path(), Path::new("/dev/zero")] {
        let out = dir.join("plots");
        let (output, took) = dirigo_within(
            &[
                "report".as_ref(),
                path.as_os_str(),
                "--out".as_ref(),
                out.as_os_str(),
            ],
            Duration::from_secs(10),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "report {}: {stderr}",
            path.display()
        );
        assert!(
            stderr.contains(&format!("{}:1:1: a regular file", path.display())),
            "{stderr}"
        );
        assert!(took < Duration::from_secs(5), "report took {took:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn text_that_is_not_toml_gets_a_position() {
    let dir = scratch("text");
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "invalid-utf8",
            b"[runtime]\nshards = 2\n# caf\xE9\n".to_vec(),
            "3:6",
            "UTF-8",
        ),
        (
            "binary",
            (0..=255u8).cycle().take(4096).collect(),
            // The newline is byte 10, 0x80 the first byte that is not UTF-8.
            "2:118",
            "UTF-8",
        ),
        ("nul-bytes", b"\0\0\0\0".to_vec(), "1:5", "expected"),
        (
            "deep-arrays",
            format!("a = {}{}\n", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            // Where the parser's depth limit (80 levels) is crossed.
            "1:85",
            "recursion",
        ),
        (
            "deep-tables",
            format!("a = {}1{}\n", "{b = ".repeat(10_000), "}".repeat(10_000)).into_bytes(),
            "1:405",
            "recursion",
        ),
        (
            "deep-keys",
            format!("{} = 1\n", vec!["a"; 20_000].join(".")).into_bytes(),
            "1:1",
            "",
        ),
        (
            "deep-headers",
            format!("[{}]\n", vec!["a"; 20_000].join(".")).into_bytes(),
            "1:1",
            "",
        ),
        (
            "too-large",
            vec![b'#'; 2 << 20],
            "1:1",
            "at most 1048576 bytes",
        ),
    ];
    for (name, bytes, place, needle) in cases {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, bytes).unwrap();
        let stderr = refused_at(&path, place);
        assert!(stderr.contains(needle), "{name}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Settings that panicked, aborted, ran out of memory or ran for far longer than asked,
/// each with where its error must point.
const OUT_OF_BOUNDS: &[(&str, &str)] = &[
    ("[runtime]\nring_capacity = 9223372036854775807\n", "2:17"),
    ("[runtime]\nshards = 10000\n", "2:10"),
    ("[runtime]\nmailbox_high_water = 99999999\n", "2:22"),
    ("[runtime]\nintake_capacity = 99999999\n", "2:19"),
    ("[runtime]\npark_timeout_ms = 99999999\n", "2:19"),
    ("[scheduler]\nmax_lessees = 99999\n", "2:15"),
    ("[run]\ndrain_timeout_s = 1e9\n", "2:19"),
    ("[report]\nsample_ms = 999999999\n", "2:13"),
    (
        "[[app]]\nname = \"a\"\nparallelism = 4096\nquery = \"q1\"\n",
        "3:15",
    ),
    (
        "[[app]]\nname = \"a\"\n[app.source]\nshape = { shape = \"constant\", rate = 1e-300 }\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\n",
        "4:9",
    ),
    (
        "[[app]]\nname = \"a\"\n[app.source]\nkeys = { dist = \"uniform\", keys = 99999999999999 }\n",
        "4:8",
    ),
    (
        "[[app]]\nname = \"a\"\n[app.source]\nout_of_orderness_ms = 99999999999\n",
        "4:23",
    ),
    (
        "[[app]]\nname = \"a\"\n[[app.operator]]\nname = \"w\"\nkind = \"window_count\"\nwindow = { kind = \"sliding\", size_ms = 10000000000, slide_ms = 1 }\n",
        "6:10",
    ),
    (
        "[[app]]\nname = \"a\"\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\nwork_ns = 2000000\n",
        "6:11",
    ),
];

#[test]
fn every_bound_exits_2_at_its_value() {
    let dir = scratch("bounds");
    for (index, (text, place)) in OUT_OF_BOUNDS.iter().enumerate() {
        let path = dir.join(format!("bound{index}.toml"));
        std::fs::write(&path, text).unwrap();
        refused_at(&path, place);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A `dirigo run` of `config` (written to `dir`), started and ready for signals: its
/// stderr's lines go to the returned receiver.
fn start_run(dir: &Path, config: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = dirigo()
        .current_dir(dir)
        .arg("run")
        .arg(&path)
        .arg("--report")
        .arg(dir.join("report.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // The signal handlers are in place before this line is written.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(line) if line.starts_with("running ") => break,
            Ok(_) => {}
            Err(error) => {
                let _ = child.kill();
                panic!("the run never started: {error}");
            }
        }
    }
    (child, receiver)
}

fn signal(child: &Child, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// One record every 100 s for a minute: the source's next turn is far off when the
/// signal comes.
const SLOW_SOURCE: &str = "[runtime]\nshards = 1\n[run]\nduration_s = 60\n[report]\ndir = \"out\"\nplots = false\n[[app]]\nname = \"slow\"\n[app.source]\nshape = { shape = \"constant\", rate = 0.01 }\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\n";

#[test]
fn sigterm_stops_a_slowly_paced_run_at_once_and_it_reports() {
    let dir = scratch("sigterm-slow");
    let (child, _lines) = start_run(&dir, SLOW_SOURCE);
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, "TERM");
    // The source sees the stop within 50 ms and the pipeline drains at once; well within
    // the 10 s drain deadline.
    let (output, took) = finish_within(child, Duration::from_secs(10), "run after SIGTERM");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let report = report(&dir);
    assert_eq!(report["signals"], 1, "{report}");
    assert_eq!(report["drained"], true, "{report}");
    assert_eq!(report["abandoned"], 0, "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// 1 ms of work per record at 20 000 records/s on one shard: a backlog that would take
/// minutes to drain.
fn stuck(drain_timeout_s: f64) -> String {
    format!("[runtime]\nshards = 1\n[run]\nduration_s = 60\ndrain_timeout_s = {drain_timeout_s}\n[report]\ndir = \"out\"\nplots = false\n[[app]]\nname = \"stuck\"\nparallelism = 1\n[app.source]\nshape = {{ shape = \"constant\", rate = 20000 }}\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\nwork_ns = 1000000\n")
}

#[test]
fn sigterm_abandons_a_stuck_drain_at_its_deadline_with_exit_5() {
    let dir = scratch("sigterm-stuck");
    // A drain of 1 ms: the shard is always inside a batch of 1 ms records, and the paced
    // source owes more than it can take, so the drain cannot finish however the machine
    // shares its CPUs with other tests.
    let (child, _lines) = start_run(&dir, &stuck(0.001));
    // Half a second of records due: more than the map can take.
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    signal(&child, "TERM");
    let (output, _) = finish_within(child, Duration::from_secs(15), "run after SIGTERM");
    let took = sent.elapsed();
    assert_eq!(
        output.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    // 50 ms to see the signal, the 1 ms drain, at most 2 s for the shard to finish the
    // message at hand (up to 1024 records of 1 ms), then the report.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let report = report(&dir);
    assert_eq!(report["signals"], 1, "{report}");
    assert_eq!(report["drained"], false, "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_sigint_stops_at_once_with_exit_130_and_a_report() {
    let dir = scratch("second-sigint");
    let (child, lines) = start_run(&dir, &stuck(60.0));
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "INT");
    // The second once the first was taken in.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("the first signal is acknowledged")
        .contains("SIGINT: stopping")
    {}
    let sent = Instant::now();
    signal(&child, "INT");
    let (output, _) = finish_within(child, Duration::from_secs(10), "run after two SIGINTs");
    let took = sent.elapsed();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    // The shards get 200 ms to leave their handlers, then the report is written.
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let report = report(&dir);
    assert_eq!(report["signals"], 2, "{report}");
    assert_eq!(report["drained"], false, "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_soak_writes_its_phases_and_accounts_for_every_record() {
    let dir = scratch("soak");
    let json = dir.join("soak.json");
    let (output, _) = dirigo_within(
        &[
            "bench".as_ref(),
            "soak".as_ref(),
            "--seconds".as_ref(),
            "1".as_ref(),
            "--json".as_ref(),
            json.as_os_str(),
        ],
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let phases = report["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2, "{report}");
    for (phase, name) in phases.iter().zip(["backpressure", "shedding"]) {
        assert_eq!(phase["phase"], name);
        let count = |key: &str| phase[key].as_u64().unwrap();
        assert!(count("events_in") > 0, "{phase}");
        assert_eq!(
            count("events_in"),
            count("events_out") + count("dead_letters") + count("shed"),
            "{phase}"
        );
        assert_eq!(phase["accounted"], true);
        assert_eq!(phase["drained"], true);
        assert!(phase["stop_s"].as_f64().unwrap() <= 2.0, "{phase}");
        assert!(
            !phase["rss_bytes"].as_array().unwrap().is_empty(),
            "{phase}"
        );
        assert!(phase["rss_bytes"][0].as_u64().unwrap() > 0, "{phase}");
    }
    // Twice the load a partition sustains: backpressure sheds nothing, the deadline
    // policy sheds what cannot meet its SLO.
    assert_eq!(phases[0]["shed"], 0, "{report}");
    assert!(phases[1]["shed"].as_u64().unwrap() > 0, "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn demo_flags_that_would_run_away_exit_2_at_once() {
    for args in [
        ["demo", "--shards", "10000"],
        ["demo", "--shards", "0"],
        ["demo", "--partitions", "4096"],
    ] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let (output, took) = dirigo_within(&args, Duration::from_secs(10));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--shards") || stderr.contains("--partitions"),
            "{stderr}"
        );
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
}
