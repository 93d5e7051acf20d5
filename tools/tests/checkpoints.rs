//! Checkpoints through the `dirigo` binary: runs killed with SIGKILL at random moments
//! and restarted until they complete commit every output exactly once; damaged
//! checkpoints are passed over with a reason; a panicking handler restores its app from
//! the last complete checkpoint; `dirigo checkpoints` lists what is on disk.
//!
//! "The same output" is compared as sorted lines: the lines of one window come out in
//! any order between partitions, and nothing may be missing or written twice.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `dirigo` binary under test.
fn dirigo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dirigo"))
}

/// A scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dirigo-chk-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `key,value,time` lines with a malformed line now and then.
fn write_input(dir: &Path, lines: u64) {
    let mut text = String::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..lines {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        if i % 4_999 == 17 {
            text.push_str(&format!("not,a,{i}x\n"));
        }
        text.push_str(&format!("{},{},{}\n", state % 3_000, state % 1_000, i / 20));
    }
    std::fs::write(dir.join("in.csv"), text).unwrap();
}

/// A file source, a costly map, a keyed window sum under the `dirigo` policy (lessees
/// come and go), a JSON-lines sink; with `[checkpoint]` when `checkpoint` says.
fn pipeline(out: &str, letters: &str, checkpoint: Option<&str>, extra_map: &str) -> String {
    let checkpoint = checkpoint.map_or(String::new(), |section| {
        format!("[checkpoint]\n{section}\n")
    });
    format!(
        r#"[run]
duration_s = 300
[report]
dir = "report-{out}"
plots = false
hgrm = false
[scheduler]
policy = "dirigo"
{checkpoint}
[[app]]
name = "sums"
slo_ms = 5
parallelism = 2
[app.source]
kind = "file"
path = "in.csv"
format = "csv"
out_of_orderness_ms = 5
dead_letters = "{letters}"
[[app.operator]]
name = "slow"
kind = "map"
work_ns = 10000
{extra_map}
[[app.operator]]
name = "per-key"
kind = "window_sum"
window = {{ kind = "tumbling", size_ms = 50 }}
[app.sink]
kind = "json-lines"
path = "{out}"
"#
    )
}

fn run(dir: &Path, config: &str) -> Output {
    dirigo()
        .current_dir(dir)
        .args(["run", config])
        .output()
        .unwrap()
}

fn spawn(dir: &Path, config: &str) -> Child {
    dirigo()
        .current_dir(dir)
        .args(["run", config])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Writes `lines` of input and two configs into `dir`: `reference.toml` (no
/// checkpoints) and `checkpointed.toml` (with `checkpoint` and `extra_map`); runs the
/// reference and returns its sorted output.
fn file_pipelines(dir: &Path, lines: u64, checkpoint: &str, extra_map: &str) -> Vec<String> {
    write_input(dir, lines);
    std::fs::write(
        dir.join("reference.toml"),
        pipeline("reference.jsonl", "reference-letters.jsonl", None, ""),
    )
    .unwrap();
    std::fs::write(
        dir.join("checkpointed.toml"),
        pipeline("out.jsonl", "letters.jsonl", Some(checkpoint), extra_map),
    )
    .unwrap();
    reference_output(dir)
}

/// Runs `reference.toml` in `dir` (no checkpoints, no kills): its sorted output.
/// Checkpoints every 100 ms in `state/`.
const EVERY_100_MS: &str = "[checkpoint]\ndir = \"state\"\ninterval = \"100ms\"";

/// Writes `config(out, checkpoint section)` into `dir` twice: `reference.toml` (output
/// `reference.jsonl`, no checkpoints) and `checkpointed.toml` (`out.jsonl`, a
/// checkpoint every 100 ms); runs the reference and returns its sorted output.
fn reference_and_checkpointed(dir: &Path, config: impl Fn(&str, &str) -> String) -> Vec<String> {
    std::fs::write(dir.join("reference.toml"), config("reference.jsonl", "")).unwrap();
    std::fs::write(
        dir.join("checkpointed.toml"),
        config("out.jsonl", EVERY_100_MS),
    )
    .unwrap();
    reference_output(dir)
}

fn reference_output(dir: &Path) -> Vec<String> {
    let reference = run(dir, "reference.toml");
    assert!(
        reference.status.success(),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    sorted_lines(&dir.join("reference.jsonl"))
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// The dead letters without anything that differs between runs.
fn letters(path: &Path) -> Vec<String> {
    sorted_lines(path)
}

fn assert_same(what: &str, got: &[String], want: &[String]) {
    if got != want {
        let missing = want.iter().filter(|line| !got.contains(line)).count();
        let extra = got.len() as i64 - want.len() as i64 + missing as i64;
        panic!(
            "{what}: {} lines, expected {} ({missing} missing, {extra} extra or repeated); first got: {:?}",
            got.len(),
            want.len(),
            got.first()
        );
    }
}

/// A small deterministic generator of kill delays.
struct Delays(u64);

impl Delays {
    fn next_ms(&mut self, from: u64, to: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        from + (self.0 >> 33) % (to - from)
    }
}

/// Runs `config` in `dir`, killing it with SIGKILL `kills` times at random moments (each
/// a fresh start that resumes from the checkpoints), then lets it complete. Returns how
/// many of the kills hit a run that was still going.
fn kill_and_restart(
    dir: &Path,
    config: &str,
    kills: u32,
    (seed, from_ms, to_ms): (u64, u64, u64),
) -> u32 {
    let mut delays = Delays(seed);
    let mut hit = 0;
    for _ in 0..kills {
        let mut child = spawn(dir, config);
        let delay = Duration::from_millis(delays.next_ms(from_ms, to_ms));
        let started = Instant::now();
        while started.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_none() {
            hit += 1;
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if let Some(code) = status.code() {
            // It finished before the kill: a complete run must have succeeded.
            let mut stderr = String::new();
            use std::io::Read as _;
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            assert_eq!(code, 0, "{stderr}");
        }
    }
    let last = run(dir, config);
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    hit
}

#[test]
fn runs_killed_at_random_moments_commit_every_output_exactly_once() {
    let dir = scratch("kill-file");
    let want = file_pipelines(&dir, 400_000, "dir = \"state\"\ninterval = \"100ms\"", "");
    assert!(want.len() > 10_000, "{} outputs", want.len());

    let hit = kill_and_restart(&dir, "checkpointed.toml", 22, (7, 50, 1_200));
    assert!(hit >= 20, "only {hit} kills hit a running run");
    assert_same(
        "committed output",
        &sorted_lines(&dir.join("out.jsonl")),
        &want,
    );
    assert_same(
        "dead letters",
        &letters(&dir.join("letters.jsonl")),
        &letters(&dir.join("reference-letters.jsonl")),
    );
    // The completed run took a last checkpoint: running again changes nothing.
    let again = run(&dir, "checkpointed.toml");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("resuming from checkpoint"));
    assert_same(
        "after a rerun",
        &sorted_lines(&dir.join("out.jsonl")),
        &want,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_generator_pipeline_killed_and_restarted_commits_every_output_exactly_once() {
    let dir = scratch("kill-generator");
    let config = |out: &str, checkpoint: &str| {
        format!(
            r#"[run]
duration_s = 300
[report]
dir = "report-{out}"
plots = false
hgrm = false
{checkpoint}
[[app]]
name = "gen"
parallelism = 2
[app.source]
kind = "generator"
events = 1000000
partitions = 2
shape = {{ shape = "constant", rate = 200000 }}
keys = {{ dist = "zipf", keys = 5000, exponent = 1.1 }}
[[app.operator]]
name = "per-key"
kind = "window_count"
window = {{ kind = "sliding", size_ms = 40, slide_ms = 20 }}
[app.sink]
kind = "json-lines"
path = "{out}"
"#
        )
    };
    let want = reference_and_checkpointed(&dir, config);
    assert!(want.len() > 1_000, "{} outputs", want.len());
    let hit = kill_and_restart(&dir, "checkpointed.toml", 20, (11, 50, 400));
    assert!(hit >= 10, "only {hit} kills hit a running run");
    assert_same(
        "committed output",
        &sorted_lines(&dir.join("out.jsonl")),
        &want,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nexmark_q5_killed_and_restarted_commits_every_output_exactly_once() {
    nexmark_query_killed_and_restarted("q5", 600_000, 22, 23);
}

/// q8 puts its rows out as records come, before their windows close: a row put out after
/// the last complete checkpoint is put out again after a restore, and committed once.
#[test]
fn nexmark_q8_killed_and_restarted_commits_every_output_exactly_once() {
    nexmark_query_killed_and_restarted("q8", 450_000, 10, 29);
}

/// `query` paced at 150 k events/s over `events`, with checkpoints every 100 ms, killed
/// with SIGKILL at `kills` seeded moments (all but two must hit a running run) and
/// restarted until it completes: its committed rows equal an uninterrupted run's.
fn nexmark_query_killed_and_restarted(query: &str, events: u64, kills: u32, seed: u64) {
    let dir = scratch(&format!("kill-{query}"));
    let config = |out: &str, checkpoint: &str| {
        format!(
            r#"[run]
duration_s = 300
[report]
dir = "report-{out}"
plots = false
hgrm = false
[scheduler]
policy = "dirigo"
{checkpoint}
[[app]]
name = "{query}"
query = "{query}"
parallelism = 2
[app.source]
kind = "nexmark"
events = {events}
shape = {{ shape = "constant", rate = 150000 }}
[app.sink]
kind = "json-lines"
path = "{out}"
"#
        )
    };
    let want = reference_and_checkpointed(&dir, config);
    assert!(want.len() >= 30, "{query}: {} outputs", want.len());
    let hit = kill_and_restart(&dir, "checkpointed.toml", kills, (seed, 50, 600));
    assert!(
        hit + 2 >= kills,
        "{query}: only {hit} kills hit a running run"
    );
    assert_same(
        &format!("committed {query} rows"),
        &sorted_lines(&dir.join("out.jsonl")),
        &want,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_typed_pipeline_killed_and_restarted_commits_every_output_exactly_once() {
    let dir = scratch("kill-typed");
    let config = |out: &str, checkpoint: &str, sink: &str| {
        format!(
            r#"[run]
duration_s = 300
[report]
dir = "report-{out}"
plots = false
hgrm = false
{checkpoint}
[[app]]
name = "q5"
parallelism = 2
[app.source]
kind = "nexmark"
events = 400000
shape = {{ shape = "constant", rate = 150000 }}
schema = "infer"
event_time = "date_time"
[[app.operator]]
name = "bids"
kind = "filter"
where = "event = 'bid'"
[[app.operator]]
name = "counts"
kind = "window"
by = ["auction"]
window = {{ kind = "sliding", size_ms = 10000, slide_ms = 2000 }}
aggregates = {{ bids = "count()" }}
[app.sink]
kind = "{sink}"
path = "{out}"
fields = ["window_end", "auction", "bids"]
"#
        )
    };
    // A CSV file cannot be committed by the checkpoints: refused before anything runs.
    std::fs::write(dir.join("csv.toml"), config("out.csv", EVERY_100_MS, "csv")).unwrap();
    let refused = run(&dir, "csv.toml");
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    // At the sink's path, line 31 of the file.
    assert!(
        stderr.contains("csv.toml:31:8: a json-lines sink with [checkpoint]"),
        "{stderr}"
    );
    let want = reference_and_checkpointed(&dir, |out, checkpoint| {
        config(out, checkpoint, "json-lines")
    });
    assert!(want.len() > 1_000, "{} outputs", want.len());
    let hit = kill_and_restart(&dir, "checkpointed.toml", 10, (31, 50, 500));
    assert!(hit >= 8, "only {hit} kills hit a running run");
    assert_same(
        "committed typed rows",
        &sorted_lines(&dir.join("out.jsonl")),
        &want,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_app_of_two_sources_killed_and_restarted_commits_every_output_exactly_once() {
    let dir = scratch("kill-two-sources");
    // Two paced sources at different rates and lengths: each checkpoint holds each
    // source's own position, and a restore rewinds each to it.
    let config = |out: &str, checkpoint: &str| {
        format!(
            r#"[run]
duration_s = 300
[report]
dir = "report-{out}"
plots = false
hgrm = false
{checkpoint}
[[app]]
name = "two"
parallelism = 2
[[app.source]]
name = "fast"
kind = "nexmark"
events = 300000
shape = {{ shape = "constant", rate = 150000 }}
schema = "infer"
event_time = "date_time"
[[app.source]]
name = "slow"
kind = "nexmark"
events = 100000
partitions = 1
shape = {{ shape = "constant", rate = 50000 }}
schema = "infer"
event_time = "date_time"
[[app.operator]]
name = "both"
kind = "union"
input = ["fast", "slow"]
[[app.operator]]
name = "bids"
kind = "filter"
where = "event = 'bid'"
[[app.operator]]
name = "counts"
kind = "window"
by = ["auction"]
window = {{ kind = "tumbling", size_ms = 2000 }}
aggregates = {{ bids = "count()", top = "max(price)" }}
[app.sink]
kind = "json-lines"
path = "{out}"
fields = ["window_end", "auction", "bids", "top"]
"#
        )
    };
    let want = reference_and_checkpointed(&dir, config);
    assert!(want.len() > 1_000, "{} outputs", want.len());
    let hit = kill_and_restart(&dir, "checkpointed.toml", 10, (47, 50, 500));
    assert!(hit >= 8, "only {hit} kills hit a running run");
    assert_same(
        "committed rows of two sources",
        &sorted_lines(&dir.join("out.jsonl")),
        &want,
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Checkpoints of a run killed part way: a copy of `dir` with its state, for damaging.
fn killed_part_way(name: &str) -> (PathBuf, Vec<String>) {
    let dir = scratch(name);
    let want = file_pipelines(
        &dir,
        200_000,
        "dir = \"state\"\ninterval = \"50ms\"\nretain = 4",
        "",
    );
    // Killed once at least two checkpoints are complete.
    let mut child = spawn(&dir, "checkpointed.toml");
    let started = Instant::now();
    loop {
        let complete = std::fs::read_dir(dir.join("state"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().join("MANIFEST").is_file())
                    .count()
            })
            .unwrap_or(0);
        if complete >= 3 || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoints"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    (dir, want)
}

/// The complete checkpoints' directories, newest first.
fn complete_checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|path| path.join("MANIFEST").is_file())
        .collect();
    found.sort();
    found.reverse();
    found
}

/// The first part with state in a checkpoint's manifest: its file, offset and length.
fn a_part(checkpoint: &Path) -> (PathBuf, u64, u64) {
    let text = std::fs::read_to_string(checkpoint.join("MANIFEST")).unwrap();
    let json = text.rsplit_once("\n#crc32").unwrap().0;
    let manifest: serde_json::Value = serde_json::from_str(json).unwrap();
    let state = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|part| part["state"].as_object().cloned())
        .expect("a part with state");
    (
        checkpoint.join(state["file"].as_str().unwrap()),
        state["offset"].as_u64().unwrap(),
        state["len"].as_u64().unwrap(),
    )
}

#[test]
fn damaged_checkpoints_are_passed_over_with_a_reason() {
    type Damage = fn(&Path);
    let damages: [(&str, Damage, Option<&str>); 4] = [
        (
            "truncated",
            |chk| {
                let (file, offset, len) = a_part(chk);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(file)
                    .unwrap()
                    .set_len(offset + len / 2)
                    .unwrap();
            },
            Some("beyond the file's end"),
        ),
        (
            "flipped",
            |chk| {
                let (file, offset, len) = a_part(chk);
                let mut bytes = std::fs::read(&file).unwrap();
                bytes[(offset + len / 2) as usize] ^= 0x40;
                std::fs::write(file, bytes).unwrap();
            },
            Some("checksum"),
        ),
        (
            "no-manifest",
            |chk| std::fs::remove_file(chk.join("MANIFEST")).unwrap(),
            None,
        ),
        (
            "missing-file",
            |chk| std::fs::remove_file(a_part(chk).0).unwrap(),
            Some("No such file"),
        ),
    ];
    for (name, damage, reason) in damages {
        let (dir, want) = killed_part_way(&format!("damage-{name}"));
        let checkpoints = complete_checkpoints(&dir);
        assert!(checkpoints.len() >= 2, "{name}: {checkpoints:?}");
        damage(&checkpoints[0]);
        let resumed = run(&dir, "checkpointed.toml");
        let stderr = String::from_utf8_lossy(&resumed.stderr);
        assert!(resumed.status.success(), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        let older = checkpoints[1].file_name().unwrap().to_str().unwrap();
        let older_id: u64 = older.trim_start_matches("chk-").parse().unwrap();
        assert!(
            stderr.contains(&format!("resuming from checkpoint {older_id} ")),
            "{name}: {stderr}"
        );
        if let Some(reason) = reason {
            assert!(
                stderr.contains(reason),
                "{name}: expected {reason:?} in {stderr}"
            );
            assert!(stderr.contains("trying the one before"), "{name}: {stderr}");
        }
        assert_same(name, &sorted_lines(&dir.join("out.jsonl")), &want);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn a_panicking_handler_restores_its_app_from_the_last_checkpoint() {
    let dir = scratch("panic");
    // Value 777 comes up ~100 times; the map panics the first time it meets it.
    file_pipelines(
        &dir,
        100_000,
        "dir = \"state\"\ninterval = \"20ms\"",
        "panic_on_value = 777\npanic_times = 1",
    );
    let resumed = run(&dir, "checkpointed.toml");
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains("restoring every app from the last complete checkpoint"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("report-out.jsonl/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["checkpoints"]["restores"], 1, "{report}");
    assert_same(
        "output after the restore",
        &sorted_lines(&dir.join("out.jsonl")),
        &sorted_lines(&dir.join("reference.jsonl")),
    );
    // Without checkpoints, the same panic fails the app (exit code 4).
    std::fs::write(
        dir.join("unchecked.toml"),
        pipeline(
            "unchecked.jsonl",
            "unchecked-letters.jsonl",
            None,
            "panic_on_value = 777",
        ),
    )
    .unwrap();
    let failed = run(&dir, "unchecked.toml");
    assert_eq!(failed.status.code(), Some(4));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoints_are_listed_and_from_scratch_asks_first() {
    let (dir, _) = killed_part_way("list");
    let listed = dirigo()
        .args(["checkpoints"])
        .arg(dir.join("state"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success());
    assert!(text.contains("yes"), "{text}");
    assert!(text.contains("sums"), "{text}");
    // Without a terminal and without --yes, nothing is deleted.
    let refused = dirigo()
        .current_dir(&dir)
        .args(["run", "checkpointed.toml", "--from-scratch"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(!complete_checkpoints(&dir).is_empty());
    let fresh = dirigo()
        .current_dir(&dir)
        .args(["run", "checkpointed.toml", "--from-scratch", "--yes"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&fresh.stderr);
    assert!(fresh.status.success(), "{stderr}");
    assert!(!stderr.contains("resuming"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_changed_app_is_refused_unless_its_state_may_drop() {
    let (dir, _) = killed_part_way("changed");
    let changed = pipeline(
        "out.jsonl",
        "letters.jsonl",
        Some("dir = \"state\"\ninterval = \"50ms\""),
        "",
    )
    .replace("parallelism = 2", "parallelism = 1");
    std::fs::write(dir.join("changed.toml"), changed).unwrap();
    let refused = run(&dir, "changed.toml");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("app `sums` changed"), "{stderr}");
    assert!(stderr.contains("--allow-state-drop"), "{stderr}");
    let dropped = dirigo()
        .current_dir(&dir)
        .args(["run", "changed.toml", "--allow-state-drop"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&dropped.stderr);
    assert!(dropped.status.success(), "{stderr}");
    assert!(stderr.contains("starts from scratch"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_checkpoint_settings_point_at_the_value() {
    let dir = scratch("settings");
    for (section, at) in [
        ("[checkpoint]\ndir = \"s\"\ninterval = \"0ms\"\n", "3:12"),
        ("[checkpoint]\ndir = \"s\"\ninterval = \"soon\"\n", "3:12"),
        ("[checkpoint]\ndir = \"s\"\nretain = 0\n", "3:10"),
        ("[checkpoint]\ndir = \"\"\n", "2:7"),
        ("[checkpoint]\ninterval = \"1s\"\n", "1:1"),
        ("[checkpoint]\ndir = \"s\"\npriority = \"low\"\n", "3:12"),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, section).unwrap();
        let output = dirigo().arg("validate").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{section}: {stderr}");
        assert!(
            stderr.contains(&format!("bad.toml:{at}")),
            "{section}: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
