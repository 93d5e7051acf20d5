//! `dirigo bench soak`: an app offered twice the load it can sustain, for a long time,
//! first held back by backpressure, then with shedding.
//!
//! The app is a keyed generator paced open loop at `overload` × the capacity of one
//! partition of a running per-key count that spends `work_ns` per record (a mergeable
//! operator: the `dirigo` policy admits, and may shed, its messages), then a latency sink
//! for its updates. `events_out` counts the records the count ran. Each phase runs
//! `seconds`, with `shards` shards:
//!
//! - `backpressure`: `round-robin`, no SLO: the map's queue fills, the shard's rings fill,
//!   and the source waits (it owes what fell due, and counts nothing twice). Rings of
//!   [`RING_CAPACITY`] and a mailbox high-water mark of [`MAILBOX_HIGH_WATER`] messages
//!   hold about a second of work, so the drain after the end fits [`STOP_WITHIN`];
//! - `shedding`: `dirigo` with `shed = true`, no lessees and an SLO of `slo`: messages
//!   that cannot meet their deadline are dropped and counted.
//!
//! Each phase checks what a long overload must not do: deadlock (the pipeline drains
//! after the sources stop), grow (resident memory, sampled every second, stays within
//! [`MAX_RSS_RATIO`] of its lowest after the first [`WARMUP`]), lose records
//! (`events_in = events_out + dead_letters + shed`), or outlast its end (it stops within
//! [`STOP_WITHIN`]). A failed check fails the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dirigo_operators::dataflow::{AppBuilder, Msg};
use dirigo_operators::io::{GeneratorSpec, KeyDist, KeyedRecord, LoadShape};
use dirigo_operators::sink::LatencyRecorder;
use dirigo_runtime::scheduling::{Dirigo, RoundRobin};
use dirigo_runtime::Runtime;
use serde::Serialize;

/// Memory samples taken before this much of a phase has run are not held to the bound
/// (the heaps and queues fill first).
pub const WARMUP: Duration = Duration::from_secs(5);

/// The most resident memory may grow past its lowest sample after [`WARMUP`].
pub const MAX_RSS_RATIO: f64 = 2.0;

/// The longest a phase may take from its end to a drained, stopped runtime.
pub const STOP_WITHIN: Duration = Duration::from_secs(2);

/// Messages per shard-to-shard ring: with the mailbox, about a second of work at 20 µs
/// per record.
pub const RING_CAPACITY: usize = 4;

/// Messages a shard's mailboxes hold before it stops taking in more.
pub const MAILBOX_HIGH_WATER: usize = 8;

/// Settings of `dirigo bench soak`.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// Seconds each phase runs.
    pub seconds: f64,
    /// Shards.
    pub shards: usize,
    /// CPU per record in the map, ns: one partition sustains `1e9 / work_ns` records/s.
    pub work_ns: u64,
    /// Offered load as a multiple of what the map sustains.
    pub overload: f64,
    /// The shedding phase's SLO.
    pub slo: Duration,
}

impl Default for SoakConfig {
    fn default() -> Self {
        Self {
            seconds: 60.0,
            shards: 2,
            work_ns: 20_000,
            overload: 2.0,
            slo: Duration::from_millis(50),
        }
    }
}

/// One phase's figures.
#[derive(Clone, Debug, Serialize)]
pub struct SoakPhase {
    /// `backpressure` or `shedding`.
    pub phase: String,
    /// Records offered per second.
    pub offered_per_s: f64,
    /// Records the source produced.
    pub events_in: u64,
    /// Records that reached the sink.
    pub events_out: u64,
    /// Malformed records (none from a generator; kept for the accounting).
    pub dead_letters: u64,
    /// Records shed (on their way in and further in).
    pub shed: u64,
    /// Whether `events_in = events_out + dead_letters + shed`.
    pub accounted: bool,
    /// Resident memory of the process, sampled every second, bytes.
    pub rss_bytes: Vec<u64>,
    /// Largest over smallest resident memory after [`WARMUP`] (`null` with fewer than two
    /// samples past it).
    pub rss_ratio: Option<f64>,
    /// Whether the pipeline drained once its source stopped (no deadlock).
    pub drained: bool,
    /// Seconds from the phase's end to a stopped runtime.
    pub stop_s: f64,
    /// Median and 99th percentile latency of what reached the sink, ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
}

/// `dirigo bench soak`'s report.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    /// Seconds each phase ran.
    pub seconds: f64,
    /// Shards.
    pub shards: usize,
    /// CPU per record in the map, ns.
    pub work_ns: u64,
    /// Offered load over sustainable load.
    pub overload: f64,
    /// The phases, in order.
    pub phases: Vec<SoakPhase>,
}

impl SoakReport {
    /// A table of the phases.
    pub fn table(&self) -> String {
        let mut out = format!(
            "soak: {} shards, {:.0} s per phase, {:.1}x the sustainable load\n{:<13} {:>11} {:>11} {:>10} {:>9} {:>9} {:>8} {:>8} {:>9}\n",
            self.shards,
            self.seconds,
            self.overload,
            "phase",
            "events in",
            "events out",
            "shed",
            "rss MiB",
            "rss max/min",
            "p99 ms",
            "stop s",
            "accounted"
        );
        for phase in &self.phases {
            let rss = phase.rss_bytes.iter().max().copied().unwrap_or(0) as f64 / 1048576.0;
            out += &format!(
                "{:<13} {:>11} {:>11} {:>10} {:>9.1} {:>11} {:>8.1} {:>8.3} {:>9}\n",
                phase.phase,
                phase.events_in,
                phase.events_out,
                phase.shed,
                rss,
                phase
                    .rss_ratio
                    .map_or_else(|| "-".to_string(), |ratio| format!("{ratio:.2}")),
                phase.p99_ms,
                phase.stop_s,
                phase.accounted
            );
        }
        out
    }
}

/// Runs both phases; an error names the first check that failed.
pub fn run(config: &SoakConfig) -> Result<SoakReport, String> {
    let phases = vec![phase(config, false)?, phase(config, true)?];
    let report = SoakReport {
        seconds: config.seconds,
        shards: config.shards,
        work_ns: config.work_ns,
        overload: config.overload,
        phases,
    };
    for phase in &report.phases {
        let name = &phase.phase;
        if !phase.drained {
            return Err(format!("{name}: the pipeline did not drain (deadlock?)"));
        }
        if !phase.accounted {
            return Err(format!(
                "{name}: {} records in, but {} out + {} dead letters + {} shed",
                phase.events_in, phase.events_out, phase.dead_letters, phase.shed
            ));
        }
        if phase.stop_s > STOP_WITHIN.as_secs_f64() {
            return Err(format!(
                "{name}: stopping took {:.2} s, more than {STOP_WITHIN:?}",
                phase.stop_s
            ));
        }
        if phase.rss_ratio.is_some_and(|ratio| ratio > MAX_RSS_RATIO) {
            return Err(format!(
                "{name}: resident memory grew {:.2}x after the first {WARMUP:?}",
                phase.rss_ratio.unwrap_or_default()
            ));
        }
    }
    Ok(report)
}

/// One phase: shedding or backpressure alone.
fn phase(config: &SoakConfig, shedding: bool) -> Result<SoakPhase, String> {
    let offered = config.overload * 1e9 / config.work_ns.max(1) as f64;
    let spec = GeneratorSpec {
        shape: LoadShape::Constant { rate: offered },
        keys: KeyDist::Uniform { keys: 1000 },
        events: None,
        seed: 1,
        base_time_ms: 0,
    };
    let builder = AppBuilder::new(0, "soak").parallelism(1);
    let work_ns = config.work_ns;
    let latency = LatencyRecorder::new();
    // Records the operator ran: what came out of the overload (the aggregate itself emits
    // one update per changed key and watermark).
    let processed = Arc::new(AtomicU64::new(0));
    let folded = processed.clone();
    builder
        .source("source", 0, spec.pacing(), move |partition, partitions| {
            spec.generator()
                .skip(partition as usize)
                .step_by(partitions.max(1) as usize)
                .map(|(_, record)| (record.time, record))
        })
        .key_by(|record: &KeyedRecord| record.key)
        .aggregate(
            "work",
            || 0u64,
            move |count, _, _| {
                let started = Instant::now();
                while started.elapsed() < Duration::from_nanos(work_ns) {
                    std::hint::spin_loop();
                }
                *count += 1;
                folded.fetch_add(1, Ordering::Relaxed);
            },
            |count, more| *count += more,
            |key, count| (*key, *count),
        )
        .record_latency("sink", &latency);
    let app = Arc::new(builder.build());
    // Queues sized to about a second of the map's work (a message carries up to 1024
    // records): backpressure reaches the source that soon, and the drain after the end
    // takes no longer.
    let mut runtime = app.install(
        Runtime::<Msg>::builder()
            .shards(config.shards.max(1))
            .ring_capacity(RING_CAPACITY)
            .mailbox_high_water(MAILBOX_HIGH_WATER)
            .handler_warning(Duration::from_secs(1)),
    );
    runtime = if shedding {
        // No lessee: the phase overloads what the one partition sustains, and the policy
        // sheds what cannot meet its deadline instead of spreading it.
        runtime.app_slo(app.id(), config.slo).policy(Dirigo {
            shed: true,
            max_lessees: 0,
            ..Dirigo::default()
        })
    } else {
        runtime.policy(RoundRobin)
    };
    let runtime = runtime
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(config.seconds.max(0.1));
    app.start(&runtime.ingress());
    let mut rss_bytes = Vec::new();
    let mut rss_after_warmup = Vec::new();
    let mut next_sample = started;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            let rss = resident_bytes();
            rss_bytes.push(rss);
            if now.duration_since(started) >= WARMUP {
                rss_after_warmup.push(rss);
            }
            next_sample += Duration::from_secs(1);
        }
        std::thread::sleep(
            next_sample
                .min(end)
                .saturating_duration_since(Instant::now()),
        );
    }
    let stopping = Instant::now();
    app.stop();
    let drained = app.wait(STOP_WITHIN * 5);
    let runtime_report = runtime.shutdown_bounded(Duration::from_secs(1), Duration::from_secs(1));
    let stop_s = stopping.elapsed().as_secs_f64();
    let flow = app.flow();
    let shed = flow.shed_at_ingest + flow.shed_downstream;
    let events_out = processed.load(Ordering::Relaxed);
    let rss_ratio = match (rss_after_warmup.iter().max(), rss_after_warmup.iter().min()) {
        (Some(&max), Some(&min)) if rss_after_warmup.len() >= 2 && min > 0 => {
            Some(max as f64 / min as f64)
        }
        _ => None,
    };
    let histogram = latency.histogram();
    let quantile = |q: f64| {
        if histogram.is_empty() {
            0.0
        } else {
            histogram.value_at_quantile(q) as f64 / 1e6
        }
    };
    Ok(SoakPhase {
        phase: if shedding { "shedding" } else { "backpressure" }.into(),
        offered_per_s: offered,
        events_in: flow.emitted,
        events_out,
        dead_letters: 0,
        shed,
        accounted: flow.emitted == events_out + shed && runtime_report.abandoned == 0,
        rss_bytes,
        rss_ratio,
        drained,
        stop_s,
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
    })
}

/// The process's resident memory, bytes (0 where `/proc` cannot tell).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}
