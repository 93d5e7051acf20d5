//! Exactly once through NATS JetStream, end to end, through the `dirigo` binary: a
//! producer publishes keyed records to a stream while `dirigo run` (NATS source → keyed
//! window sum → NATS sink, checkpoints every 100 ms) is killed with SIGKILL at random
//! moments and started again; once the producer is done and the last run has drained,
//! the output stream holds exactly the sums a reference computes over the input, each
//! once. And while the output's server is down (the input's is up, so records keep
//! coming), a checkpoint's commit (its publishes) cannot finish: no later checkpoint
//! starts, the staged output waits on disk, and once the server is back the run
//! completes with every sum exactly once. The servers are the test's own (`LocalServer`,
//! on free loopback ports); the test fails when none starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use dirigo_operators::io::nats::LocalServer;
use futures_lite::StreamExt;

/// Records the producer publishes. 200 000 at about 25 000 a second keeps the producer
/// going for ~8 s, through most of the kills.
const RECORDS: u64 = 200_000;
/// Records per published burst, and the pause between bursts.
const BURST: u64 = 1_000;
const BURST_PAUSE: Duration = Duration::from_millis(40);
/// Kills, each at a random moment between these many ms after the run started.
const KILLS: u32 = 12;
const KILL_FROM_MS: u64 = 250;
const KILL_TO_MS: u64 = 1_200;
/// Tumbling windows of this many ms of event time.
const WINDOW_MS: u64 = 50;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dirigo-nats-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Record `i`: its key, value, event time (ms) and subject. Each subject's times never
/// go back, so no record is late and every window's sum is fixed by the input alone.
fn record(i: u64) -> (u64, u64, u64, String) {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    x ^= x >> 29;
    (x % 300, x % 1_000, i / 20, format!("in.{}", i % 2))
}

/// The sums the pipeline must publish for the first `records` records: per (key, window
/// start), the sum of the values.
fn reference(records: u64) -> BTreeMap<(u64, u64), u64> {
    let mut sums = BTreeMap::new();
    for i in 0..records {
        let (key, value, time, _) = record(i);
        *sums.entry((key, time - time % WINDOW_MS)).or_insert(0) += value;
    }
    sums
}

fn config(url: &str) -> String {
    config_between(url, url)
}

/// The pipeline reading from the server at `input` and writing to the one at `output`.
fn config_between(input: &str, output: &str) -> String {
    format!(
        r#"[run]
duration_s = 300
[report]
dir = "report"
plots = false
hgrm = false
[checkpoint]
dir = "state"
interval = "100ms"
[[app]]
name = "sums"
parallelism = 2
[app.source]
kind = "nats"
format = "json"
partitions = 2
out_of_orderness_ms = 5
[app.source.nats]
url = "{input}"
stream = "IN"
subject = "in.{{partition}}"
consumer = "sums"
create = true
end_after_idle_ms = 4000
[[app.operator]]
name = "per-key"
kind = "window_sum"
window = {{ kind = "tumbling", size_ms = {WINDOW_MS} }}
[app.sink]
kind = "nats"
[app.sink.nats]
url = "{output}"
stream = "OUT"
subject = "sums.{{key}}"
create = true
"#
    )
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Publishes every record to the stream IN (made first), in bursts, each with an id so
/// that a retry is stored once; a burst the server did not acknowledge (it was down) is
/// sent again, for up to a minute.
fn produce(url: String, records: u64) -> std::thread::JoinHandle<()> {
    let runtime = tokio_runtime();
    let context =
        runtime.block_on(async { jetstream::new(async_nats::connect(&url).await.unwrap()) });
    runtime
        .block_on(context.create_stream(stream::Config {
            name: "IN".into(),
            subjects: vec!["in.*".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        }))
        .unwrap();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            for burst in 0..records / BURST {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let mut acks = Vec::new();
                    for i in burst * BURST..(burst + 1) * BURST {
                        let (key, value, time, subject) = record(i);
                        let payload =
                            format!("{{\"key\":{key},\"value\":{value},\"time\":{time}}}");
                        let message = jetstream::message::PublishMessage::build()
                            .message_id(format!("in-{i}"))
                            .payload(payload.into());
                        if let Ok(ack) = context.send_publish(subject, message).await {
                            acks.push(ack);
                        }
                    }
                    let mut stored = acks.len() as u64 == BURST;
                    for ack in acks {
                        stored &= ack.await.is_ok();
                    }
                    if stored {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the server did not store burst {burst} within a minute"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(BURST_PAUSE).await;
            }
        })
    })
}

/// Every message of the stream OUT, as (subject, payload).
fn read_output(url: &str) -> Vec<(String, String)> {
    tokio_runtime().block_on(async {
        let context = jetstream::new(async_nats::connect(url).await.unwrap());
        let mut out = context.get_stream("OUT").await.expect("OUT exists");
        let count = out.info().await.unwrap().state.messages as usize;
        let consumer = out
            .create_consumer(pull::Config {
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut read = Vec::with_capacity(count);
        while read.len() < count {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .expect("OUT gives its messages")
                .unwrap()
                .unwrap();
            read.push((
                message.subject.to_string(),
                String::from_utf8(message.payload.to_vec()).unwrap(),
            ));
        }
        read
    })
}

/// A `dirigo run` whose standard error goes to a file of its own: a pipe nobody reads
/// until the run ends would fill (an outage logs every retry) and stall the run.
struct Run {
    child: Child,
    stderr: PathBuf,
}

impl std::ops::Deref for Run {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Run {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

fn spawn(dir: &Path) -> Run {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stderr = dir.join(format!("run-{n}.stderr"));
    let child = Command::new(env!("CARGO_BIN_EXE_dirigo"))
        .current_dir(dir)
        .args(["run", "sums.toml"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    Run { child, stderr }
}

fn stderr_of(run: &mut Run) -> String {
    std::fs::read_to_string(&run.stderr).unwrap_or_default()
}

/// The last lines of a log, for a failure message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A small deterministic generator of kill delays.
struct Delays(u64);

impl Delays {
    fn next_ms(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        KILL_FROM_MS + (self.0 >> 33) % (KILL_TO_MS - KILL_FROM_MS)
    }
}

#[test]
fn a_nats_pipeline_killed_at_random_moments_publishes_every_sum_exactly_once() {
    let server = LocalServer::start().expect("nats-server must start (scripts/provision)");
    let url = server.url();
    let dir = scratch("exactly-once");
    std::fs::write(dir.join("sums.toml"), config(&url)).unwrap();
    let want = reference(RECORDS);

    let producer = produce(url.clone(), RECORDS);
    let started = Instant::now();
    let mut delays = Delays(25);
    let mut hit = 0;
    for _ in 0..KILLS {
        let mut child = spawn(&dir);
        let delay = Duration::from_millis(delays.next_ms());
        let since = Instant::now();
        while since.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_none() {
            hit += 1;
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        if status.code().is_some() {
            panic!(
                "a run ended on its own while records were still coming ({status}): {}",
                stderr_of(&mut child)
            );
        }
    }
    let producing = started.elapsed();
    producer.join().expect("the producer published everything");
    assert_eq!(hit, KILLS, "every kill hit a running run");

    // The last run drains what is left, ends once no record came for a while, and its
    // last checkpoint publishes the rest.
    let mut last = spawn(&dir);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = last.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the last run did not end; its log ends:\n{}",
            tail(&stderr_of(&mut last))
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = stderr_of(&mut last);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");

    check_output(&url, &want, &format!("kills over {producing:?}"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Asserts that the stream OUT holds exactly the sums `want`, each once.
fn check_output(url: &str, want: &BTreeMap<(u64, u64), u64>, context: &str) {
    let out = read_output(url);
    let mut got: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut repeated = 0;
    for (subject, payload) in &out {
        let row: serde_json::Value = serde_json::from_str(payload).unwrap();
        let key = row["key"].as_u64().unwrap();
        assert_eq!(subject, &format!("sums.{key}"));
        let window = row["time"].as_u64().unwrap();
        if got
            .insert((key, window), row["value"].as_u64().unwrap())
            .is_some()
        {
            repeated += 1;
        }
    }
    let missing = want.keys().filter(|k| !got.contains_key(k)).count();
    let wrong = want
        .iter()
        .filter(|(k, v)| got.get(k).is_some_and(|g| g != *v))
        .count();
    assert!(
        repeated == 0 && missing == 0 && wrong == 0 && out.len() == want.len(),
        "{} outputs for {} expected: {repeated} repeated, {missing} missing, {wrong} wrong \
         ({context})",
        out.len(),
        want.len()
    );
}

/// The newest checkpoint started in the checkpoint folder `state` (its `chk-N` folders),
/// and how many staged output files wait there.
fn checkpoints_and_staged(state: &Path) -> (u64, usize) {
    let newest = std::fs::read_dir(state)
        .map(|entries| {
            entries
                .filter_map(|entry| {
                    entry
                        .ok()?
                        .file_name()
                        .to_str()?
                        .strip_prefix("chk-")?
                        .parse::<u64>()
                        .ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let staged = std::fs::read_dir(state.join("staged"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    (newest, staged)
}

/// Records of the outage run: 60 000 at about 25 000 a second, about 2.4 s of input.
const OUTAGE_RECORDS: u64 = 60_000;
/// How long the server stays down: many checkpoint intervals (100 ms).
const OUTAGE: Duration = Duration::from_secs(3);

#[test]
fn while_a_nats_commit_fails_no_later_checkpoint_starts_and_nothing_is_lost() {
    // The input and the output on servers of their own: with the output's away, records
    // keep coming, and the output they make can only wait.
    let input = LocalServer::start().expect("nats-server must start (scripts/provision)");
    let mut server = LocalServer::start().expect("nats-server must start (scripts/provision)");
    let url = server.url();
    let dir = scratch("outage");
    std::fs::write(dir.join("sums.toml"), config_between(&input.url(), &url)).unwrap();
    let want = reference(OUTAGE_RECORDS);
    let producer = produce(input.url(), OUTAGE_RECORDS);
    let mut run = spawn(&dir);
    let state = dir.join("state");

    // Mid-stream, the output's server goes away for many checkpoint intervals.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(run.try_wait().unwrap().is_none(), "the run ended early");
    let (before, _) = checkpoints_and_staged(&state);
    assert!(before > 0, "checkpoints were being taken before the outage");
    server.stop();
    // The checkpoint whose commit meets the outage is started within the first half
    // second; from then on none may start.
    std::thread::sleep(Duration::from_millis(500));
    let (stuck_at, _) = checkpoints_and_staged(&state);
    std::thread::sleep(OUTAGE - Duration::from_millis(500));
    let (during, staged) = checkpoints_and_staged(&state);
    assert!(
        run.try_wait().unwrap().is_none(),
        "the run ended while the server was down"
    );
    server
        .restart()
        .expect("the server starts again on its store");
    assert_eq!(
        during, stuck_at,
        "checkpoints {stuck_at}..={during} started while a commit could not finish"
    );
    assert!(staged > 0, "the staged output waits on disk for its commit");

    producer.join().expect("the producer published everything");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not end after the server came back; its log ends:\n{}",
            tail(&stderr_of(&mut run))
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = stderr_of(&mut run);
    assert!(status.success(), "{stderr}");
    let (after, _) = checkpoints_and_staged(&state);
    assert!(
        after > during,
        "checkpoints went on once the server was back"
    );
    check_output(
        &url,
        &want,
        &format!("checkpoint {stuck_at} held for {OUTAGE:?}"),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
