//! Watching a run: `/metrics` checked by Prometheus' own `promtool`, counters that grow
//! between scrapes, `/api/status`, the live page in a real headless Chromium, and the
//! files a run leaves in its `--out` folder.
//!
//! `promtool` (Debian's `prometheus`) and `chromium` come from `scripts/provision`, which
//! `scripts/test` runs first; a test fails, never skips, when either is missing.

#[allow(dead_code)] // `bench_json`: no benchmark runs here
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::dirigo;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dirigo-live-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One app with a 50 ms SLO on one shard, a steady 2 000 records/s, for `seconds`, with a
/// checkpoint every 200 ms.
fn config(dir: &Path, seconds: u32) -> PathBuf {
    let path = dir.join("run.toml");
    std::fs::write(
        &path,
        format!(
            "[runtime]\nshards = 1\nplacement = \"unpinned\"\n\n[run]\nduration_s = {seconds}\n\n\
             [checkpoint]\ndir = \"checkpoints\"\ninterval = \"200ms\"\n\n\
             [[app]]\nname = \"steady\"\nslo_ms = 50\n\n[app.source]\nkind = \"generator\"\n\
             shape = {{ shape = \"constant\", rate = 2000 }}\nkeys = {{ dist = \"uniform\", keys = 10 }}\n\n\
             [[app.operator]]\nname = \"pass\"\nkind = \"map\"\n"
        ),
    )
    .unwrap();
    path
}

/// A `dirigo run` serving its metrics on a port of the system's choosing.
struct LiveRun {
    child: Child,
    address: SocketAddr,
    stderr: std::thread::JoinHandle<String>,
}

impl LiveRun {
    fn start(dir: &Path, seconds: u32) -> Self {
        let config = config(dir, seconds);
        let mut child = dirigo()
            .current_dir(dir)
            .args(["run"])
            .arg(&config)
            .args(["--out", "out", "--metrics", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let address = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the run ended before serving metrics: {seen}"))
                .unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if let Some(rest) = line.strip_prefix("metrics: http://") {
                break rest.split('/').next().unwrap().parse().unwrap();
            }
        };
        let stderr = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                seen.push_str(&line);
                seen.push('\n');
            }
            seen
        });
        Self {
            child,
            address,
            stderr,
        }
    }

    fn get(&self, path: &str) -> (String, String) {
        get(self.address, path)
    }

    /// Stops the run with SIGINT, as Ctrl-C would; returns its exit code and stderr.
    fn stop(mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        (status.code(), self.stderr.join().unwrap())
    }
}

/// `GET path`: the head and the body.
fn get(address: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// The value of the sample `name{labels}` in a Prometheus text page.
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{page}"))
        .trim()
        .parse()
        .unwrap()
}

/// A program the provisioning installs; the test fails (never skips) without it.
fn program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not on the PATH: run the tests with scripts/test, which installs it (scripts/provision)")
        })
}

#[test]
fn metrics_pass_promtool_and_grow_between_scrapes() {
    let dir = scratch("metrics");
    let run = LiveRun::start(&dir, 30);
    std::thread::sleep(Duration::from_millis(1500));
    let (head, first) = run.get("/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    std::thread::sleep(Duration::from_millis(1500));
    let (_, second) = run.get("/metrics");

    let mut promtool = Command::new(program("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(second.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}\n{second}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool found lint problems: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    for series in [
        "dirigo_app_events_in_total{app=\"steady\"}",
        "dirigo_app_outputs_total{app=\"steady\"}",
        "dirigo_app_latency_seconds_count{app=\"steady\"}",
        "dirigo_shard_busy_seconds_total{shard=\"0\"}",
        "dirigo_shard_messages_handled_total{shard=\"0\"}",
        "dirigo_run_elapsed_seconds",
        "dirigo_app_reserved_seconds_total{app=\"steady\"}",
        "dirigo_operator_records_in_total{app=\"steady\",operator=\"pass\"}",
        "dirigo_operator_records_out_total{app=\"steady\",operator=\"pass\"}",
        "dirigo_checkpoints_completed_total",
        "dirigo_checkpoint_written_bytes_total",
        "dirigo_checkpoint_last_complete_id",
    ] {
        let (before, after) = (sample(&first, series), sample(&second, series));
        assert!(after > before, "{series}: {before} then {after}");
    }
    // 2 000 records/s for about 1.5 s between the scrapes.
    let grew = sample(&second, "dirigo_app_events_in_total{app=\"steady\"}")
        - sample(&first, "dirigo_app_events_in_total{app=\"steady\"}");
    assert!(
        (500.0..=12_000.0).contains(&grew),
        "{grew} (a source behind on a busy machine catches up)"
    );
    assert_eq!(
        sample(&second, "dirigo_app_slo_seconds{app=\"steady\"}"),
        0.05
    );
    // Per operator, named as in the configuration.
    assert_eq!(
        sample(
            &second,
            "dirigo_operator_lessees{app=\"steady\",operator=\"pass\"}"
        ),
        0.0
    );
    assert!(
        sample(
            &second,
            "dirigo_operator_handler_seconds{app=\"steady\",operator=\"pass\"}"
        ) >= 0.0
    );
    // A map sends on what it receives, but for what is still in flight between them.
    let pass = |direction: &str| {
        sample(
            &second,
            &format!(
                "dirigo_operator_records_{direction}_total{{app=\"steady\",operator=\"pass\"}}"
            ),
        )
    };
    assert!(
        pass("out") <= pass("in") && pass("out") >= pass("in") - 2_000.0,
        "in {} out {}",
        pass("in"),
        pass("out")
    );
    // Every completed checkpoint is one observation of the duration histogram.
    assert_eq!(
        sample(&second, "dirigo_checkpoint_duration_seconds_count"),
        sample(&second, "dirigo_checkpoints_completed_total")
    );
    assert_eq!(sample(&second, "dirigo_checkpoints_abandoned_total"), 0.0);
    assert_eq!(sample(&second, "dirigo_checkpoint_restores_total"), 0.0);
    assert!(sample(&second, "dirigo_checkpoint_last_size_bytes") > 0.0);
    // The SLO is a bucket bound, and buckets add up to the count.
    let within = sample(
        &second,
        "dirigo_app_latency_seconds_bucket{app=\"steady\",le=\"0.05\"}",
    );
    let all = sample(
        &second,
        "dirigo_app_latency_seconds_bucket{app=\"steady\",le=\"+Inf\"}",
    );
    assert_eq!(
        all,
        sample(&second, "dirigo_app_latency_seconds_count{app=\"steady\"}")
    );
    let ratio = sample(&second, "dirigo_app_slo_satisfaction_ratio{app=\"steady\"}");
    assert!(
        (ratio - within / all).abs() < 1e-9,
        "{ratio} vs {within}/{all}"
    );

    // Every metric the Grafana dashboard in deploy/ queries is served.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repository().join("deploy/grafana/dirigo.json")).unwrap(),
    )
    .unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                queried += 1;
                assert!(
                    second.lines().any(|line| line.starts_with(&name)),
                    "the dashboard's {name:?} ({expr}) is not served:\n{second}"
                );
            }
        }
    }
    assert!(queried >= 15, "{queried}");

    let (head, status) = run.get("/api/status");
    assert!(head.contains("application/json"), "{head}");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["apps"][0]["name"], "steady");
    assert_eq!(status["phase"], "running");
    assert!(status["history"].as_array().unwrap().len() >= 2, "{status}");
    let (head, _) = run.get("/nowhere");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    let (code, stderr) = run.stop();
    assert_eq!(code, Some(0), "{stderr}");
}

/// The repository's root.
fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `dirigo_…` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("dirigo_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[test]
fn the_systemd_unit_verifies_and_the_scrape_job_is_valid() {
    let dir = scratch("deploy");
    // The unit names /usr/local/bin/dirigo; verify checks the binary exists, so a copy
    // names the one under test.
    let unit = std::fs::read_to_string(repository().join("deploy/systemd/dirigo.service"))
        .unwrap()
        .replace("/usr/local/bin/dirigo", env!("CARGO_BIN_EXE_dirigo"));
    for key in [
        "CPUAffinity=",
        "LimitMEMLOCK=",
        "TimeoutStopSec=",
        "Restart=",
        "KillSignal=SIGINT",
    ] {
        assert!(unit.contains(key), "{key}");
    }
    let path = dir.join("dirigo.service");
    std::fs::write(&path, unit).unwrap();
    let verified = Command::new(program("systemd-analyze"))
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        verified.status.success() && verified.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let checked = Command::new(program("promtool"))
        .args(["check", "config"])
        .arg(repository().join("deploy/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "promtool check config: {}",
        String::from_utf8_lossy(&checked.stdout)
    );
}

#[test]
fn the_live_page_shows_the_run_in_headless_chromium() {
    let chromium = program("chromium");
    let dir = scratch("page");
    let run = LiveRun::start(&dir, 60);
    // Some history first: the page draws the last minutes.
    std::thread::sleep(Duration::from_secs(3));
    let url = format!("http://{}/", run.address);
    let profile = dir.join("chromium-profile");
    let headless = |extra: &[&str]| {
        let started = Instant::now();
        let output = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,1100",
                "--virtual-time-budget=4000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "chromium failed after {:?}: {}",
            started.elapsed(),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    let dom = String::from_utf8(headless(&["--dump-dom"]).stdout).unwrap();
    assert!(
        dom.contains("data-state=\"live\""),
        "the page never got data:\n{dom}"
    );
    let row_start = dom
        .find("data-app=\"steady\"")
        .unwrap_or_else(|| panic!("no row for the app:\n{dom}"));
    let row = &dom[row_start..dom[row_start..].find("</tr>").unwrap() + row_start];
    let field = |name: &str| {
        let at = row
            .find(&format!("data-field=\"{name}\""))
            .unwrap_or_else(|| panic!("no {name} in {row}"));
        let text = &row[at..];
        let text = &text[text.find('>').unwrap() + 1..];
        text[..text.find('<').unwrap()].to_owned()
    };
    let rate: f64 = field("events-per-s").replace(',', "").parse().unwrap();
    assert!(
        (500.0..=8_000.0).contains(&rate),
        "events/s {rate} in {row}"
    );
    let p99: f64 = field("p99-ms")
        .parse()
        .unwrap_or_else(|_| panic!("p99 in {row}"));
    assert!(p99 > 0.0, "{row}");
    assert_eq!(field("slo-ms"), "50");
    let events_in: f64 = field("events-in").replace(',', "").parse().unwrap();
    assert!(events_in > 2_000.0, "{row}");

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-page.png");
    let _ = std::fs::remove_file(&screenshot);
    headless(&[&format!("--screenshot={}", screenshot.display())]);
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    let (code, stderr) = run.stop();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn out_holds_every_file_of_the_run_with_its_metadata() {
    let dir = scratch("out");
    let config = config(&dir, 3);
    let output = dirigo()
        .current_dir(&dir)
        .arg("run")
        .arg(&config)
        .args(["--out", "everything", "--duration", "2s"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut files: Vec<String> = std::fs::read_dir(dir.join("everything"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "busy-cores.svg",
            "events.svg",
            "latency-cdf.svg",
            "latency.svg",
            "lessees.svg",
            "report.json",
            "steady.hgrm",
            "steady.hlog",
        ]
    );
    assert!(!dir.join("dirigo-report").exists(), "nothing outside --out");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("everything/report.json")).unwrap())
            .unwrap();
    let meta = &report["meta"];
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(meta["ended_by"], "duration");
    assert_eq!(meta["interrupted"], false);
    assert_eq!(meta["exit_code"], 0);
    assert!(
        meta["started_at"].as_str().unwrap().ends_with('Z'),
        "{meta}"
    );
    let app = &report["apps"][0];
    let seconds = app["latency_timeline"].as_array().unwrap();
    assert!((2..=3).contains(&seconds.len()), "{app}");
    assert!(seconds[0]["p99_ms"].as_f64().unwrap() > 0.0, "{app}");
    // Per operator: what each received (the source none, the map every record taken).
    let operators = app["operators"].as_array().unwrap();
    let names: Vec<&str> = operators
        .iter()
        .map(|op| op["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"pass"), "{app}");
    let pass = operators.iter().find(|op| op["name"] == "pass").unwrap();
    assert_eq!(pass["records_in"], app["events_out"], "{app}");
    // The run drained: the map sent on every record it received.
    assert_eq!(pass["records_out"], pass["records_in"], "{app}");
    let hlog = std::fs::read_to_string(dir.join("everything/steady.hlog")).unwrap();
    assert!(hlog.contains("#[StartTime: "), "{hlog}");
    assert_eq!(
        hlog.lines().filter(|line| line.contains(",HIST")).count(),
        seconds.len()
    );
    let table = String::from_utf8_lossy(&output.stdout);
    let header = table.lines().next().unwrap();
    assert!(header.contains("outputs"), "{table}");
    let outputs = app["outputs"].as_u64().unwrap();
    assert!(outputs > 1_000, "{app}");
    let grouped = {
        let digits = outputs.to_string();
        let mut text = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index).is_multiple_of(3) {
                text.push(',');
            }
            text.push(digit);
        }
        text
    };
    assert!(
        table.contains(&grouped),
        "sink outputs {grouped} in:\n{table}"
    );

    // `--report` alone moves every file next to the JSON.
    let output = dirigo()
        .current_dir(&dir)
        .arg("run")
        .arg(&config)
        .args(["--report", "elsewhere/r.json", "--duration", "1s"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in ["r.json", "steady.hgrm", "steady.hlog", "latency-cdf.svg"] {
        assert!(dir.join("elsewhere").join(file).is_file(), "{file}");
    }
    assert!(
        !dir.join("dirigo-report").exists(),
        "nothing in the default folder"
    );
}

#[test]
fn fail_on_slo_exits_6_when_an_app_misses_its_slo() {
    let dir = scratch("slo");
    // A 1 µs SLO no output can meet.
    let path = dir.join("run.toml");
    std::fs::write(
        &path,
        "[runtime]\nshards = 1\nplacement = \"unpinned\"\n\n[[app]]\nname = \"tight\"\nslo_ms = 0.001\n\n\
         [app.source]\nkind = \"generator\"\nshape = { shape = \"constant\", rate = 1000 }\n",
    )
    .unwrap();
    let run = |flags: &[&str]| {
        dirigo()
            .current_dir(&dir)
            .arg("run")
            .arg(&path)
            .args(["--duration", "1s", "--out", "out"])
            .args(flags)
            .output()
            .unwrap()
    };
    let output = run(&["--fail-on-slo"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("app tight delivered"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["meta"]["exit_code"], 6);
    assert_eq!(report["meta"]["fail_on_slo_percent"], 99.0);
    // Without the flag the same run succeeds; a share that is not a percentage is refused.
    assert_eq!(run(&[]).status.code(), Some(0));
    assert_eq!(run(&["--fail-on-slo=0"]).status.code(), Some(2));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = scratch("json");
    let output = dirigo()
        .current_dir(&dir)
        .args(["--log-format", "json", "run"])
        .arg(config(&dir, 1))
        .args(["--out", "out", "--duration", "1s"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(!logs.is_empty(), "{stderr}");
    assert!(logs
        .iter()
        .all(|log| log["level"].is_string() && log["fields"].is_object()));
    assert!(
        logs.iter().any(|log| log["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|span| span["name"] == "run"))),
        "no log inside the run's span: {stderr}"
    );
}
