//! `dirigo bench nexmark`: one NEXMark query on the runtime over events generated in
//! memory beforehand — sustainable throughput (as fast as the pipeline takes them), then
//! open-loop latency at 50 % and 80 % of that rate.
//!
//! Throughput is events offered ÷ wall time from the start of the sources until every
//! sink has seen the end of the stream (so the last windows are flushed and counted). It
//! is the median of `rounds` runs, each on a fresh runtime. Latency is from each event's
//! intended send time (its place in the constant-rate schedule) to when its outputs reach
//! the sink; a window's outputs count from the batch whose watermark closed the window.
//! Event time runs at the generator's 10 000 events per second, so at higher offered
//! rates, 10 s event-time windows close in proportionally less wall time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dirigo_operators::dataflow::{App, AppBuilder, Msg, Time};
use dirigo_operators::nexmark::events::{Event, NexmarkSpec};
use dirigo_operators::nexmark::queries::{Query, QUERIES};
use dirigo_operators::sink::LatencyRecorder;
use dirigo_operators::source::Pacing;
use dirigo_runtime::Runtime;
use serde::Serialize;

use crate::latency::LatencySummary;

/// What to measure.
#[derive(Clone, Debug)]
pub struct NexmarkBenchConfig {
    /// The query (one of [`QUERIES`]).
    pub query: String,
    /// Events generated for the throughput runs.
    pub events: usize,
    /// Shards.
    pub shards: usize,
    /// Throughput runs (the median is reported).
    pub rounds: usize,
    /// Seconds of offered load per latency run.
    pub latency_seconds: f64,
}

impl Default for NexmarkBenchConfig {
    fn default() -> Self {
        Self {
            query: "q5".into(),
            events: 1_000_000,
            shards: 2,
            rounds: 3,
            latency_seconds: 5.0,
        }
    }
}

/// One latency run.
#[derive(Clone, Debug, Serialize)]
pub struct LoadPoint {
    /// Offered load, as a share of the measured throughput.
    pub share: f64,
    /// Offered load, events per second.
    pub offered_per_s: f64,
    /// Events offered.
    pub events: u64,
    /// Outputs recorded.
    pub outputs: u64,
    /// Latency percentiles, ns.
    pub latency_ns: LatencySummary,
    /// Largest latency, ns.
    pub max_ns: u64,
}

/// The scenario's result.
#[derive(Clone, Debug, Serialize)]
pub struct NexmarkBenchReport {
    /// The query.
    pub query: String,
    /// Shards.
    pub shards: usize,
    /// Events per throughput run.
    pub events: u64,
    /// Median throughput, events per second.
    pub events_per_s: f64,
    /// Every throughput run, events per second.
    pub rounds_per_s: Vec<f64>,
    /// Outputs of one throughput run.
    pub outputs: u64,
    /// Latency at 50 % and 80 % of the throughput.
    pub latency: Vec<LoadPoint>,
}

impl NexmarkBenchReport {
    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "nexmark {} on {} shards: {:.0} events/s (median of {:?}), {} outputs per {} events\n",
            self.query,
            self.shards,
            self.events_per_s,
            self.rounds_per_s
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>(),
            self.outputs,
            self.events
        );
        out.push_str("load   offered/s    outputs     p50 µs     p99 µs   p99.9 µs     max µs\n");
        for point in &self.latency {
            out.push_str(&format!(
                "{:>3.0} % {:>11.0} {:>10} {:>10.1} {:>10.1} {:>10.1} {:>10.1}\n",
                point.share * 100.0,
                point.offered_per_s,
                point.outputs,
                point.latency_ns.p50 as f64 / 1e3,
                point.latency_ns.p99 as f64 / 1e3,
                point.latency_ns.p999 as f64 / 1e3,
                point.max_ns as f64 / 1e3,
            ));
        }
        out
    }
}

/// One run of a pipeline built by `build` over `records` on a fresh runtime: wall time
/// until every sink has seen the end, and the latency recorder.
pub fn run_app<T: Clone + Send + Sync + 'static>(
    shards: usize,
    records: Arc<Vec<(Time, T)>>,
    pacing: Pacing,
    build: impl FnOnce(&dirigo_operators::Stream<T>) -> LatencyRecorder,
) -> Result<(Duration, LatencyRecorder), String> {
    let app = AppBuilder::new(0, "bench");
    let source = app.source_iter("events", records, 0, pacing);
    let recorder = build(&source);
    let elapsed = run_to_end(&app.build(), shards)?;
    Ok((elapsed, recorder))
}

/// Runs a built app with finite sources on a fresh runtime of `shards` shards: wall time
/// from the start of its sources until every sink has seen the end.
pub fn run_to_end(app: &App, shards: usize) -> Result<Duration, String> {
    run_to_end_busy(app, shards).map(|(elapsed, _)| elapsed)
}

/// [`run_to_end`], and the share of that time the shards were busy (handlers and runtime
/// work, not idle polling), over all shards: at a given offered load, the lower, the
/// more room the pipeline has to catch up after a stall.
pub fn run_to_end_busy(app: &App, shards: usize) -> Result<(Duration, f64), String> {
    run_to_end_on(app, Runtime::<Msg>::builder().shards(shards))
}

/// [`run_to_end_busy`] on a runtime configured by `builder`.
pub fn run_to_end_on(
    app: &App,
    builder: dirigo_runtime::RuntimeBuilder<Msg>,
) -> Result<(Duration, f64), String> {
    let shards = builder.planned_shards();
    let runtime = app.install(builder).build().map_err(|e| e.to_string())?;
    let busy_before: u64 = runtime.stats().iter().map(|shard| shard.busy_ns).sum();
    let started = Instant::now();
    app.start(&runtime.ingress());
    let finished = app.wait(Duration::from_secs(600));
    let elapsed = started.elapsed();
    let busy: u64 = runtime.stats().iter().map(|shard| shard.busy_ns).sum();
    runtime.shutdown();
    if !finished {
        return Err("the pipeline did not finish within 10 minutes".into());
    }
    let busy_share = busy.saturating_sub(busy_before) as f64
        / (elapsed.as_nanos() as f64 * shards.max(1) as f64).max(1.0);
    Ok((elapsed, busy_share))
}

/// Runs the scenario.
pub fn run(config: &NexmarkBenchConfig) -> Result<NexmarkBenchReport, String> {
    if !QUERIES.contains(&config.query.as_str()) {
        return Err(format!(
            "unknown query {:?}; expected one of {}",
            config.query,
            QUERIES.join(", ")
        ));
    }
    let events: Arc<Vec<(Time, Event)>> = Arc::new(
        NexmarkSpec {
            events: config.events,
            ..NexmarkSpec::default()
        }
        .iter()
        .map(|event| (event.time(), event))
        .collect(),
    );
    let query = config.query.clone();
    let build = |source: &dirigo_operators::Stream<Event>| {
        Query::build(&query, source)
            .expect("checked above")
            .record_latency("out")
    };
    let mut rounds = Vec::new();
    let mut outputs = 0;
    for _ in 0..config.rounds.max(1) {
        let (elapsed, recorder) = run_app(config.shards, events.clone(), Pacing::Unpaced, build)?;
        outputs = recorder.outputs();
        rounds.push(events.len() as f64 / elapsed.as_secs_f64());
    }
    let mut sorted = rounds.clone();
    sorted.sort_by(f64::total_cmp);
    let events_per_s = sorted[sorted.len() / 2];
    let mut latency = Vec::new();
    for share in [0.5, 0.8] {
        let rate = events_per_s * share;
        let wanted = ((rate * config.latency_seconds) as usize).clamp(1, events.len());
        let offered: Arc<Vec<(Time, Event)>> = Arc::new(events[..wanted].to_vec());
        let (_, recorder) = run_app(config.shards, offered, Pacing::Rate(rate), build)?;
        let histogram = recorder.histogram();
        latency.push(LoadPoint {
            share,
            offered_per_s: rate,
            events: wanted as u64,
            outputs: recorder.outputs(),
            latency_ns: LatencySummary::of(&histogram),
            max_ns: histogram.max(),
        });
    }
    Ok(NexmarkBenchReport {
        query: config.query.clone(),
        shards: config.shards,
        events: events.len() as u64,
        events_per_s,
        rounds_per_s: rounds,
        outputs,
        latency,
    })
}
