//! The `dirigo bench checkpoint` scenario: what checkpoints cost, in one run.
//!
//! - **Overhead**: NEXMark q5 over pre-generated events, unpaced, with checkpoints every
//!   second and without, in alternating rounds (throughput ratio); and the p99 of a
//!   latency-critical app (a paced filter) that shares the shards with a keyed window
//!   holding a million keys, with checkpoints every second and without, alternating
//!   (p99 ratio).
//! - **Per state size**: a keyed window filled to about the asked size (1 KiB per key),
//!   one checkpoint taken: its duration (start to committed manifest), the longest time
//!   archiving held a shard, and the bytes on disk; then a fresh runtime resumes from it:
//!   the time from the start to every part restored (`restore_ms`), and to the first
//!   output (`first_output_ms`, when the window fires).
//!
//! The machine-noise probe runs for a second before the rounds (it spins a thread per
//! CPU, so never beside them), so that a stall of the machine can be told from one of
//! dirigo.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use dirigo_operators::checkpoint::{CheckpointConfig, Checkpoints};
use dirigo_operators::dataflow::{App, AppBuilder, Msg, Time};
use dirigo_operators::nexmark::events::{Event, NexmarkSpec};
use dirigo_operators::nexmark::queries::Query;
use dirigo_operators::sink::LatencyRecorder;
use dirigo_operators::source::{Pacing, RecordSource};
use dirigo_operators::window::Windows;
use dirigo_runtime::background::ServicePriority;
use dirigo_runtime::Runtime;
use serde::Serialize;

/// What the scenario runs.
#[derive(Clone, Debug)]
pub struct CheckpointBenchConfig {
    /// Shards.
    pub shards: usize,
    /// NEXMark events per q5 round.
    pub events: usize,
    /// Rounds of each side (checkpoints on, off), alternating.
    pub rounds: usize,
    /// Keys of the stateful app beside the latency-critical one.
    pub keys: u64,
    /// Seconds of each latency round.
    pub latency_seconds: f64,
    /// State sizes to checkpoint and restore, in bytes.
    pub sizes: Vec<u64>,
    /// Where checkpoints go (a scratch directory under it, removed at the end).
    pub dir: PathBuf,
    /// The checkpoint thread's priority.
    pub priority: ServicePriority,
}

impl Default for CheckpointBenchConfig {
    fn default() -> Self {
        Self {
            shards: 2,
            events: 2_000_000,
            rounds: 3,
            keys: 1_000_000,
            latency_seconds: 4.0,
            sizes: vec![1 << 20, 64 << 20, 1 << 30],
            dir: std::env::temp_dir(),
            priority: ServicePriority::Normal,
        }
    }
}

/// The overhead of checkpoints every second.
#[derive(Clone, Debug, Serialize)]
pub struct Overhead {
    /// Median q5 throughput with checkpoints over the median without.
    pub throughput_ratio: f64,
    /// Median p99 of the latency-critical app with checkpoints over the median without.
    pub p99_ratio: f64,
    /// q5 events per second per round, without checkpoints.
    pub q5_off_per_s: Vec<f64>,
    /// q5 events per second per round, with checkpoints.
    pub q5_on_per_s: Vec<f64>,
    /// The critical app's p99 per round without checkpoints (ns).
    pub critical_p99_off_ns: Vec<u64>,
    /// The critical app's p99 per round with checkpoints (ns).
    pub critical_p99_on_ns: Vec<u64>,
    /// Checkpoints completed in the latency rounds with checkpoints, and the longest
    /// shard hold among them (µs).
    pub latency_checkpoints: u64,
    /// The longest time one archive held a shard in the latency rounds (µs).
    pub latency_max_shard_hold_us: u64,
}

/// One state size.
#[derive(Clone, Debug, Serialize)]
pub struct SizePoint {
    /// The state's size asked for.
    pub target_bytes: u64,
    /// Bytes of state the checkpoint held.
    pub bytes: u64,
    /// Bytes of its directory on disk.
    pub bytes_on_disk: u64,
    /// Start of the checkpoint to its committed manifest.
    pub checkpoint_ms: f64,
    /// The longest time archiving one partition's state held its shard.
    pub max_shard_hold_us: u64,
    /// From the start of the resuming run to every part restored.
    pub restore_ms: f64,
    /// From the start of the resuming run to its first output.
    pub first_output_ms: f64,
}

/// The scenario's results.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointBenchReport {
    /// Shards.
    pub shards: usize,
    /// The checkpoint thread's priority: `idle` or `normal`.
    pub priority: String,
    /// Checkpoints every second vs none.
    pub overhead: Overhead,
    /// Per state size.
    pub sizes: Vec<SizePoint>,
    /// The machine-noise probe, run for a second before the rounds.
    pub machine_noise: String,
}

impl CheckpointBenchReport {
    /// The results as a table.
    pub fn table(&self) -> String {
        let o = &self.overhead;
        let mut out = format!(
            "checkpoints every 1 s vs none, {} shards, checkpoint thread at {} priority, alternating rounds\n\
             q5 throughput ratio {:.3} (off {:?}/s, on {:?}/s)\n\
             critical app p99 ratio {:.3} (off {:?} µs, on {:?} µs; {} checkpoints, longest shard hold {} µs)\n",
            self.shards,
            self.priority,
            o.throughput_ratio,
            o.q5_off_per_s.iter().map(|r| r.round()).collect::<Vec<_>>(),
            o.q5_on_per_s.iter().map(|r| r.round()).collect::<Vec<_>>(),
            o.p99_ratio,
            o.critical_p99_off_ns.iter().map(|ns| ns / 1_000).collect::<Vec<_>>(),
            o.critical_p99_on_ns.iter().map(|ns| ns / 1_000).collect::<Vec<_>>(),
            o.latency_checkpoints,
            o.latency_max_shard_hold_us,
        );
        out.push_str("state bytes   on disk       checkpoint ms  max shard hold µs  restore ms  first output ms\n");
        for size in &self.sizes {
            out.push_str(&format!(
                "{:>11} {:>11} {:>15.1} {:>18} {:>11.1} {:>16.1}\n",
                size.bytes,
                size.bytes_on_disk,
                size.checkpoint_ms,
                size.max_shard_hold_us,
                size.restore_ms,
                size.first_output_ms
            ));
        }
        out.push_str(&self.machine_noise);
        out
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn scratch(config: &CheckpointBenchConfig, name: &str) -> Result<PathBuf, String> {
    let dir = config.dir.join(format!(
        "dirigo-bench-checkpoint-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Runs `app` to its end on `shards` shards, with checkpoints every second into `dir`
/// when given; returns the wall time and what the checkpoints did.
fn run_to_end(
    app: &App,
    shards: usize,
    checkpoints_in: Option<&Path>,
    priority: ServicePriority,
) -> Result<
    (
        Duration,
        Option<dirigo_operators::checkpoint::CheckpointStats>,
    ),
    String,
> {
    let checkpoints = checkpoints_in.map(|dir| {
        let checkpoints = Checkpoints::new(CheckpointConfig::new(dir).priority(priority));
        checkpoints.attach(app);
        checkpoints
    });
    let runtime = app
        .install(Runtime::<Msg>::builder().shards(shards))
        .build()
        .map_err(|e| e.to_string())?;
    if let Some(checkpoints) = &checkpoints {
        checkpoints.recover(false)?;
        checkpoints.start(runtime.ingress());
    }
    let started = Instant::now();
    app.start(&runtime.ingress());
    let finished = app.wait(Duration::from_secs(600));
    let elapsed = started.elapsed();
    let stats = checkpoints.map(|checkpoints| checkpoints.finish(false));
    runtime.shutdown();
    if !finished {
        return Err("the pipeline did not finish within 10 minutes".into());
    }
    Ok((elapsed, stats))
}

fn q5_round(
    events: &Arc<Vec<(Time, Event)>>,
    config: &CheckpointBenchConfig,
    checkpoints_in: Option<&Path>,
) -> Result<f64, String> {
    let app = AppBuilder::new(0, "q5");
    let source = app.source_iter("events", events.clone(), 0, Pacing::Unpaced);
    Query::build("q5", &source)
        .expect("q5 exists")
        .record_latency("out");
    let (elapsed, _) = run_to_end(&app.build(), config.shards, checkpoints_in, config.priority)?;
    Ok(events.len() as f64 / elapsed.as_secs_f64())
}

/// A latency round: a paced critical app (filter) beside a keyed window that grows to
/// `keys` keys; the critical app's p99, and the checkpoints' stats.
fn latency_round(
    config: &CheckpointBenchConfig,
    checkpoints_in: Option<&Path>,
) -> Result<(u64, Option<dirigo_operators::checkpoint::CheckpointStats>), String> {
    let seconds = config.latency_seconds;
    let critical_rate = 20_000.0;
    let critical: Vec<(Time, u64)> = (0..(critical_rate * seconds) as u64)
        .map(|i| ((i as f64 / critical_rate * 1e3) as Time, i))
        .collect();
    let state_rate = config.keys as f64 / seconds;
    let stateful: Vec<(Time, u64)> = (0..config.keys)
        .map(|i| ((i as f64 / state_rate * 1e3) as Time, i))
        .collect();
    let critical_app = AppBuilder::new(0, "critical");
    let recorder: LatencyRecorder = critical_app
        .source_iter("readings", critical, 0, Pacing::Rate(critical_rate))
        .filter("odd", |value| value % 2 == 1)
        .count("out");
    let state_app = AppBuilder::new(1, "state");
    state_app
        .source_iter("keys", stateful, 0, Pacing::Rate(state_rate))
        .key_by(|key: &u64| *key)
        .window_count("per-key", Windows::Tumbling { size: 3_600_000 })
        .count("out");
    let (critical_app, state_app) = (critical_app.build(), state_app.build());
    let checkpoints = checkpoints_in.map(|dir| {
        let checkpoints = Checkpoints::new(CheckpointConfig::new(dir).priority(config.priority));
        checkpoints.attach(&critical_app);
        checkpoints.attach(&state_app);
        checkpoints
    });
    let builder = Runtime::<Msg>::builder()
        .shards(config.shards)
        .app_slo(0, Duration::from_millis(5));
    let runtime = state_app
        .install(critical_app.install(builder))
        .build()
        .map_err(|e| e.to_string())?;
    if let Some(checkpoints) = &checkpoints {
        checkpoints.recover(false)?;
        checkpoints.start(runtime.ingress());
    }
    critical_app.start(&runtime.ingress());
    state_app.start(&runtime.ingress());
    let finished = critical_app.wait(Duration::from_secs(600));
    state_app.stop();
    state_app.wait(Duration::from_secs(60));
    let stats = checkpoints.map(|checkpoints| checkpoints.finish(false));
    runtime.shutdown();
    if !finished {
        return Err("the latency round did not finish".into());
    }
    Ok((recorder.histogram().value_at_quantile(0.99), stats))
}

/// A record source that gives `fill` records at time 0, one per key, then nothing until
/// `open`, then `trigger` records past the window's end, then ends.
struct Gated {
    fill: u64,
    next: u64,
    open: Arc<AtomicBool>,
    trigger: u64,
    window: Time,
}

impl RecordSource<u64> for Gated {
    fn next_record(&mut self) -> Option<(Time, u64)> {
        unreachable!("polled only")
    }

    fn poll_record(&mut self) -> Poll<Option<(Time, u64)>> {
        if self.next < self.fill {
            self.next += 1;
            return Poll::Ready(Some((0, self.next - 1)));
        }
        if !self.open.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        if self.next < self.fill + self.trigger {
            self.next += 1;
            return Poll::Ready(Some((self.window, 0)));
        }
        Poll::Ready(None)
    }
}

/// Bytes one key's accumulator holds: 128 `u64`s.
const ACC_WORDS: usize = 128;

fn sized_app(keys: u64, open: Arc<AtomicBool>) -> (App, LatencyRecorder) {
    let window: Time = 10_000;
    let app = AppBuilder::new(0, "sized");
    let recorder = app
        .source("keys", 0, Pacing::Unpaced, move |_, _| Gated {
            fill: keys,
            next: 0,
            open: open.clone(),
            trigger: 1,
            window,
        })
        .set_parallelism(1)
        .key_by(|key: &u64| *key)
        .window(
            "per-key",
            Windows::Tumbling { size: window },
            || vec![0u64; ACC_WORDS],
            |acc, _, _, key: &u64| acc[0] = acc[0].wrapping_add(*key),
            |acc, other| acc[0] = acc[0].wrapping_add(other[0]),
            |key, _, acc, out| out.push((*key, acc[0])),
        )
        .count("out");
    (app.build(), recorder)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|entry| {
                let path = entry.path();
                if path.is_dir() {
                    dir_bytes(&path)
                } else {
                    entry.metadata().map_or(0, |m| m.len())
                }
            })
            .sum()
    })
}

fn size_point(config: &CheckpointBenchConfig, target: u64) -> Result<SizePoint, String> {
    let dir = scratch(config, &format!("size-{target}"))?;
    let keys = (target / (ACC_WORDS as u64 * 8 + 24)).max(1);
    let settings = {
        let mut settings = CheckpointConfig::new(dir.join("state")).priority(config.priority);
        settings.interval = Duration::from_secs(3_600);
        settings.timeout = Duration::from_secs(600);
        settings
    };
    // Fill, then one checkpoint.
    let open = Arc::new(AtomicBool::new(false));
    let (app, _) = sized_app(keys, open.clone());
    let checkpoints = Checkpoints::new(settings.clone());
    checkpoints.attach(&app);
    let runtime = app
        .install(Runtime::<Msg>::builder().shards(config.shards))
        .build()
        .map_err(|e| e.to_string())?;
    checkpoints.recover(false)?;
    checkpoints.start(runtime.ingress());
    app.start(&runtime.ingress());
    let deadline = Instant::now() + Duration::from_secs(600);
    while app.flow().ingested < keys {
        if Instant::now() > deadline {
            return Err("the state did not fill within 10 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    checkpoints.checkpoint_now();
    while checkpoints.stats().completed + checkpoints.stats().abandoned == 0 {
        if Instant::now() > deadline {
            return Err("the checkpoint did not complete within 10 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let stats = checkpoints.finish(false);
    // The source waits at its gate: stopped, it ends, and the runtime can drain.
    app.stop();
    app.wait(Duration::from_secs(600));
    runtime.shutdown();
    if stats.completed == 0 {
        return Err(format!("the checkpoint of {target} bytes was abandoned"));
    }
    let bytes_on_disk = dir_bytes(&dir.join("state"));
    // Resume in a fresh runtime.
    let started = Instant::now();
    open.store(true, Ordering::Release);
    let (app, recorder) = sized_app(keys, open);
    let checkpoints = Checkpoints::new(settings);
    checkpoints.attach(&app);
    let runtime = app
        .install(Runtime::<Msg>::builder().shards(config.shards))
        .build()
        .map_err(|e| e.to_string())?;
    let recovery = checkpoints.recover(false)?;
    if recovery.resumed_from.is_none() {
        return Err("the resuming run found no checkpoint".into());
    }
    checkpoints.start(runtime.ingress());
    app.start(&runtime.ingress());
    let mut restore_ms = None;
    let mut first_output_ms = None;
    while first_output_ms.is_none() || restore_ms.is_none() {
        if restore_ms.is_none() && checkpoints.restoring() == 0 {
            restore_ms = Some(started.elapsed().as_secs_f64() * 1e3);
        }
        if first_output_ms.is_none() && recorder.outputs() > 0 {
            first_output_ms = Some(started.elapsed().as_secs_f64() * 1e3);
        }
        if Instant::now() > deadline {
            return Err("the resumed run gave no output within 10 minutes".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    app.wait(Duration::from_secs(600));
    checkpoints.finish(false);
    runtime.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(SizePoint {
        target_bytes: target,
        bytes: stats.bytes_last,
        bytes_on_disk,
        checkpoint_ms: stats.durations_us.first().copied().unwrap_or(0) as f64 / 1e3,
        max_shard_hold_us: stats.max_shard_hold_us,
        restore_ms: restore_ms.unwrap_or(0.0),
        first_output_ms: first_output_ms.unwrap_or(0.0),
    })
}

/// Runs the scenario.
pub fn run(config: &CheckpointBenchConfig) -> Result<CheckpointBenchReport, String> {
    let events: Arc<Vec<(Time, Event)>> = Arc::new(
        NexmarkSpec {
            events: config.events,
            ..NexmarkSpec::default()
        }
        .iter()
        .map(|event| (event.time(), event))
        .collect(),
    );
    let dir = scratch(config, "overhead")?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut p99_off, mut p99_on) = (Vec::new(), Vec::new());
    let (mut latency_checkpoints, mut latency_hold) = (0, 0);
    let noise_cpus: Vec<Option<usize>> = (0..config.shards).map(Some).collect();
    let noise = crate::noise::measure(&noise_cpus, Duration::from_secs(1));
    for round in 0..config.rounds.max(1) {
        let state = dir.join(format!("q5-{round}"));
        off.push(q5_round(&events, config, None)?);
        on.push(q5_round(&events, config, Some(&state))?);
        let state = dir.join(format!("latency-{round}"));
        p99_off.push(latency_round(config, None)?.0);
        let (p99, stats) = latency_round(config, Some(&state))?;
        p99_on.push(p99);
        if let Some(stats) = stats {
            latency_checkpoints += stats.completed;
            latency_hold = latency_hold.max(stats.max_shard_hold_us);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let p99 = |values: &[u64]| median(&values.iter().map(|&v| v as f64).collect::<Vec<_>>());
    let overhead = Overhead {
        throughput_ratio: median(&on) / median(&off).max(1e-9),
        p99_ratio: p99(&p99_on) / p99(&p99_off).max(1.0),
        q5_off_per_s: off,
        q5_on_per_s: on,
        critical_p99_off_ns: p99_off,
        critical_p99_on_ns: p99_on,
        latency_checkpoints,
        latency_max_shard_hold_us: latency_hold,
    };
    let sizes = config
        .sizes
        .iter()
        .map(|&bytes| size_point(config, bytes))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CheckpointBenchReport {
        shards: config.shards,
        priority: config.priority.name().into(),
        overhead,
        sizes,
        machine_noise: crate::noise::describe(&noise),
    })
}
