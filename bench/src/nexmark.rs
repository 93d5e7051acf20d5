//! `dirigo bench nexmark`: NEXMark queries on the runtime over events generated in memory
//! beforehand — sustainable throughput (as fast as the pipeline takes them), then
//! open-loop latency at 50 % and 80 % of that rate; one query, or every query in one run
//! (`--all`), with the machine-noise probe ([`crate::noise`]) beside the figures.
//!
//! Throughput is events offered ÷ wall time from the start of the sources until every
//! sink has seen the end of the stream (so the last windows are flushed and counted). It
//! is the median of `rounds` runs, each on a fresh runtime. The load points are shares of
//! the lowest of those runs (`sustained_per_s`), not of the median: a shared machine's
//! speed swings between runs (rounds of one query a third apart), and 80 % of an
//! optimistic median offered more than the slower spells could take, so that point
//! measured a queue growing without bound rather than latency at 80 % load. Latency is from the intended
//! send time (its place in the constant-rate schedule) of the record that produced an
//! output to when the output reaches the sink; a window's outputs count from the record
//! whose watermark closed the window. A source stamps each batch with the due time of its
//! first record, so a later record of the batch is counted from an earlier time than its
//! own: latency is overstated by at most a batch's span, never understated. Event time
//! runs at the generator's 10 000 events per second, so at higher offered rates, 10 s
//! event-time windows close in proportionally less wall time.
//!
//! Beside each latency point: the output batches that reached the sink over 1 ms late
//! (how many, how many among each shard's first 10, and the longest run of consecutive
//! late ones at one shard — a stall of the machine makes a run of them), and the time the
//! hypervisor took from each CPU during the run. A p99 set by one stall shows as a single
//! long run of late batches, with the stall in the noise probe or the stolen time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dirigo_operators::dataflow::{App, AppBuilder, Data, Msg, Time};
use dirigo_operators::nexmark::events::{Event, NexmarkSpec};
use dirigo_operators::nexmark::queries::{Query, QUERIES};
use dirigo_operators::sink::{LatencyRecorder, SinkWriter};
use dirigo_operators::source::Pacing;
use dirigo_operators::Stream;
use dirigo_runtime::{Nanos, Runtime};
use hdrhistogram::Histogram;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::latency::LatencySummary;
use crate::noise::CpuNoise;
use crate::peer_timely::LateWindows;

/// What to measure.
#[derive(Clone, Debug)]
pub struct NexmarkBenchConfig {
    /// The query (one of [`QUERIES`]); [`run_all`] measures every one instead.
    pub query: String,
    /// Events generated for the throughput runs.
    pub events: usize,
    /// Shards.
    pub shards: usize,
    /// Throughput runs (the median is reported).
    pub rounds: usize,
    /// Seconds of offered load per latency run.
    pub latency_seconds: f64,
    /// Seconds the machine-noise probe spins before the runs (0: no probe).
    pub noise_seconds: f64,
}

impl Default for NexmarkBenchConfig {
    fn default() -> Self {
        Self {
            query: "q5".into(),
            events: 1_000_000,
            shards: 2,
            rounds: 3,
            latency_seconds: 5.0,
            noise_seconds: 2.0,
        }
    }
}

/// Output batches that reached the sink late, in one latency run (see the module doc).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LateBatches {
    /// Output batches seen, over every shard.
    pub batches: u64,
    /// Of those, the ones over 1 ms late ([`crate::peer_timely::LATE_WINDOW_NS`]).
    pub late: u64,
    /// Of each shard's first 10 batches ([`crate::peer_timely::START_WINDOWS`]), the late ones: a late start
    /// rather than a stall in the middle.
    pub late_at_start: u64,
    /// The longest run of consecutive late batches at one shard.
    pub longest_late_run: u64,
}

impl From<&LateWindows> for LateBatches {
    fn from(late: &LateWindows) -> Self {
        Self {
            batches: late.windows,
            late: late.late,
            late_at_start: late.late_at_start,
            longest_late_run: late.longest_late_run,
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
    /// Median latency, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Largest latency, ns.
    pub max_ns: u64,
    /// Mean latency, ns.
    pub mean_ns: f64,
    /// Output batches over 1 ms late.
    pub late_batches: LateBatches,
    /// Time the hypervisor took from each of the shards' CPUs during the run, ns (empty
    /// where it cannot be read).
    pub stolen_ns: Vec<u64>,
    /// Share of the run's time the shards were busy (handlers and runtime work).
    pub busy_share: f64,
}

/// One query's figures.
#[derive(Clone, Debug, Serialize)]
pub struct QueryFigures {
    /// Median throughput, events per second.
    pub events_per_s: f64,
    /// The lowest throughput run, events per second: what the load points are shares of.
    pub sustained_per_s: f64,
    /// Every throughput run, events per second.
    pub rounds_per_s: Vec<f64>,
    /// Outputs of one throughput run.
    pub outputs: u64,
    /// Latency at 50 % of the throughput.
    pub load_50: LoadPoint,
    /// Latency at 80 % of the throughput.
    pub load_80: LoadPoint,
}

/// One query's result.
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
    /// The lowest throughput run, events per second: what the load points are shares of.
    pub sustained_per_s: f64,
    /// Every throughput run, events per second.
    pub rounds_per_s: Vec<f64>,
    /// Outputs of one throughput run.
    pub outputs: u64,
    /// Latency at 50 % and 80 % of the lowest throughput run.
    pub latency: Vec<LoadPoint>,
    /// What the machine-noise probe saw just before the runs, per CPU.
    pub machine_noise: Vec<CpuNoise>,
    /// The system's load average (1, 5, 15 minutes) at the start and at the end.
    pub load_average: [[f64; 3]; 2],
}

/// Every query's result, from [`run_all`].
#[derive(Clone, Debug, Serialize)]
pub struct AllQueriesReport {
    /// Shards.
    pub shards: usize,
    /// Events per throughput run.
    pub events: u64,
    /// Throughput runs per query.
    pub rounds: usize,
    /// Seconds of offered load per latency run.
    pub latency_seconds: f64,
    /// Each query's figures, in [`QUERIES`] order.
    #[serde(serialize_with = "in_order")]
    pub queries: Vec<(String, QueryFigures)>,
    /// What the machine-noise probe saw just before the runs, per CPU.
    pub machine_noise: Vec<CpuNoise>,
    /// The system's load average (1, 5, 15 minutes) at the start and at the end.
    pub load_average: [[f64; 3]; 2],
}

/// The queries as a JSON object, keyed by name, in the order they ran.
fn in_order<S: Serializer>(queries: &[(String, QueryFigures)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(queries.len()))?;
    for (name, figures) in queries {
        map.serialize_entry(name, figures)?;
    }
    map.end()
}

const TABLE_HEADER: &str =
    "load   offered/s    outputs     p50 µs     p99 µs   p99.9 µs     max µs  late batches (at start, longest run)  busy\n";

fn point_line(point: &LoadPoint) -> String {
    format!(
        "{:>3.0} % {:>11.0} {:>10} {:>10.1} {:>10.1} {:>10.1} {:>10.1}  {:>6} of {:<8} ({}, {}){:>11.0} %\n",
        point.share * 100.0,
        point.offered_per_s,
        point.outputs,
        point.p50_ns as f64 / 1e3,
        point.p99_ns as f64 / 1e3,
        point.p999_ns as f64 / 1e3,
        point.max_ns as f64 / 1e3,
        point.late_batches.late,
        point.late_batches.batches,
        point.late_batches.late_at_start,
        point.late_batches.longest_late_run,
        point.busy_share * 100.0,
    )
}

fn stolen_line(points: &[&LoadPoint]) -> String {
    let stolen: Vec<String> = points
        .iter()
        .filter(|point| !point.stolen_ns.is_empty())
        .map(|point| {
            let each: Vec<String> = point
                .stolen_ns
                .iter()
                .map(|ns| format!("{:.0} ms", *ns as f64 / 1e6))
                .collect();
            format!("{:.0} %: {}", point.share * 100.0, each.join(" + "))
        })
        .collect();
    if stolen.is_empty() {
        String::new()
    } else {
        format!(
            "  stolen by the hypervisor, per CPU: {}\n",
            stolen.join("; ")
        )
    }
}

fn load_line(load: &[[f64; 3]; 2]) -> String {
    format!(
        "  load average at the start {:.2} {:.2} {:.2}, at the end {:.2} {:.2} {:.2}\n",
        load[0][0], load[0][1], load[0][2], load[1][0], load[1][1], load[1][2]
    )
}

impl NexmarkBenchReport {
    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "nexmark {} on {} shards: {:.0} events/s (median of {:?}; load points are shares of \
             the lowest, {:.0}), {} outputs per {} events\n",
            self.query,
            self.shards,
            self.events_per_s,
            self.rounds_per_s
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>(),
            self.sustained_per_s,
            self.outputs,
            self.events
        );
        out.push_str(TABLE_HEADER);
        for point in &self.latency {
            out.push_str(&point_line(point));
        }
        out.push_str(&stolen_line(&self.latency.iter().collect::<Vec<_>>()));
        out.push_str(&crate::noise::describe(&self.machine_noise));
        out.push_str(&load_line(&self.load_average));
        out
    }
}

impl AllQueriesReport {
    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "nexmark, every query on {} shards: throughput over {} events (median of {} runs), \
             then {:.1} s of latency at 50 % and 80 % of the lowest run\n",
            self.shards, self.events, self.rounds, self.latency_seconds
        );
        for (name, figures) in &self.queries {
            out.push_str(&format!(
                "{name}: {:.0} events/s (lowest run {:.0}), {} outputs per {} events\n",
                figures.events_per_s, figures.sustained_per_s, figures.outputs, self.events
            ));
            out.push_str(TABLE_HEADER);
            out.push_str(&point_line(&figures.load_50));
            out.push_str(&point_line(&figures.load_80));
            out.push_str(&stolen_line(&[&figures.load_50, &figures.load_80]));
        }
        out.push_str(&crate::noise::describe(&self.machine_noise));
        out.push_str(&load_line(&self.load_average));
        out
    }
}

/// The system's load average, 1, 5 and 15 minutes (zeros where it cannot be read).
fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text
        .split_ascii_whitespace()
        .map(|field| field.parse().unwrap_or(0.0));
    [(); 3].map(|()| fields.next().unwrap_or(0.0))
}

/// What the bench's sink partitions gathered, merged at the end of a run.
#[derive(Default)]
struct SinkTotals {
    histogram: Option<Histogram<u64>>,
    /// Per sink partition: each output batch's latency, in order.
    batches: Vec<Vec<u64>>,
    outputs: u64,
}

/// The bench's sink: every output's latency into a histogram of its own (merged once, at
/// the end), and each output batch's latency in order, for the late-batch counts.
struct BenchSink {
    histogram: Histogram<u64>,
    batches: Vec<u64>,
    /// A batch began and its first output has not been seen yet.
    batch_open: bool,
    outputs: u64,
    totals: Arc<Mutex<SinkTotals>>,
}

impl<T: 'static> SinkWriter<T> for BenchSink {
    fn begin_batch(&mut self, _now: Nanos) {
        self.batch_open = true;
    }

    fn write(&mut self, _: Time, _: T, latency_ns: Nanos) {
        self.histogram.saturating_record(latency_ns.max(1));
        self.outputs += 1;
        if std::mem::take(&mut self.batch_open) {
            self.batches.push(latency_ns);
        }
    }

    fn finish(&mut self) {
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        match totals.histogram.as_mut() {
            // Same bounds on both sides: adding cannot fail.
            Some(total) => {
                let _ = total.add(&self.histogram);
            }
            None => totals.histogram = Some(self.histogram.clone()),
        }
        totals.batches.push(std::mem::take(&mut self.batches));
        totals.outputs += self.outputs;
    }
}

fn bench_sink<T: Data>(stream: &Stream<T>, totals: &Arc<Mutex<SinkTotals>>) {
    let totals = totals.clone();
    stream.sink("out", move |_| BenchSink {
        histogram: crate::latency::new_histogram(),
        batches: Vec::new(),
        batch_open: false,
        outputs: 0,
        totals: totals.clone(),
    });
}

/// What one run of a query measured.
struct QueryRun {
    elapsed: Duration,
    busy_share: f64,
    totals: SinkTotals,
}

/// One run of `query` over `events` on a fresh runtime of `shards` shards.
fn run_query(
    query: &str,
    shards: usize,
    events: Arc<Vec<(Time, Event)>>,
    pacing: Pacing,
) -> Result<QueryRun, String> {
    let app = AppBuilder::new(0, "bench");
    let source = app.source_iter("events", events, 0, pacing);
    let totals = Arc::new(Mutex::new(SinkTotals::default()));
    match Query::build(query, &source).ok_or_else(|| format!("unknown query {query:?}"))? {
        Query::Bids(s) => bench_sink(&s, &totals),
        Query::Q2(s) => bench_sink(&s, &totals),
        Query::Q3(s) => bench_sink(&s, &totals),
        Query::Q4(s) => bench_sink(&s, &totals),
        Query::Q5(s) => bench_sink(&s, &totals),
        Query::Q7(s) => bench_sink(&s, &totals),
        Query::Q8(s) => bench_sink(&s, &totals),
        Query::Q11(s) => bench_sink(&s, &totals),
    }
    let (elapsed, busy_share) = run_to_end_busy(&app.build(), shards)?;
    let totals = std::mem::take(&mut *totals.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(QueryRun {
        elapsed,
        busy_share,
        totals,
    })
}

/// The events of a run: `count` NEXMark events with their event times.
fn generate(count: usize) -> Arc<Vec<(Time, Event)>> {
    Arc::new(
        NexmarkSpec {
            events: count,
            ..NexmarkSpec::default()
        }
        .iter()
        .map(|event| (event.time(), event))
        .collect(),
    )
}

/// The CPUs the probe spins on: the first two the process may use (where the shards run).
fn shard_cpus(shards: usize) -> Vec<Option<usize>> {
    let available = dirigo_runtime::placement::available_cpus();
    let pinned: Vec<Option<usize>> = available.iter().take(shards).copied().map(Some).collect();
    if pinned.is_empty() {
        vec![None; shards.max(1)]
    } else {
        pinned
    }
}

fn probe(config: &NexmarkBenchConfig) -> Vec<CpuNoise> {
    if config.noise_seconds > 0.0 {
        crate::noise::measure(
            &shard_cpus(config.shards),
            Duration::from_secs_f64(config.noise_seconds),
        )
    } else {
        Vec::new()
    }
}

/// Throughput, then latency at 50 % and 80 % of it, of one query over `events`.
fn measure(
    config: &NexmarkBenchConfig,
    query: &str,
    events: &Arc<Vec<(Time, Event)>>,
) -> Result<QueryFigures, String> {
    let mut rounds = Vec::new();
    let mut outputs = 0;
    for _ in 0..config.rounds.max(1) {
        let run = run_query(query, config.shards, events.clone(), Pacing::Unpaced)?;
        outputs = run.totals.outputs;
        rounds.push(events.len() as f64 / run.elapsed.as_secs_f64());
    }
    let mut sorted = rounds.clone();
    sorted.sort_by(f64::total_cmp);
    let events_per_s = sorted[sorted.len() / 2];
    let sustained_per_s = sorted[0];
    let cpus = shard_cpus(config.shards);
    let mut points = Vec::new();
    for share in [0.5, 0.8] {
        let rate = sustained_per_s * share;
        let wanted = ((rate * config.latency_seconds) as usize).clamp(1, events.len());
        let offered: Arc<Vec<(Time, Event)>> = Arc::new(events[..wanted].to_vec());
        let stolen_before = crate::noise::stolen_ns();
        let run = run_query(query, config.shards, offered, Pacing::Rate(rate))?;
        let stolen_ns =
            crate::noise::stolen_between(&stolen_before, &crate::noise::stolen_ns(), &cpus);
        let histogram = run
            .totals
            .histogram
            .unwrap_or_else(crate::latency::new_histogram);
        let summary = LatencySummary::of(&histogram);
        let mut late = LateWindows::default();
        late.add(&run.totals.batches);
        points.push(LoadPoint {
            share,
            offered_per_s: rate,
            events: wanted as u64,
            outputs: run.totals.outputs,
            p50_ns: summary.p50,
            p99_ns: summary.p99,
            p999_ns: summary.p999,
            max_ns: histogram.max(),
            mean_ns: summary.mean,
            late_batches: LateBatches::from(&late),
            stolen_ns,
            busy_share: run.busy_share,
        });
    }
    let load_80 = points.pop().expect("two points");
    let load_50 = points.pop().expect("two points");
    Ok(QueryFigures {
        events_per_s,
        sustained_per_s,
        rounds_per_s: rounds,
        outputs,
        load_50,
        load_80,
    })
}

/// Runs the scenario for `config.query`.
pub fn run(config: &NexmarkBenchConfig) -> Result<NexmarkBenchReport, String> {
    if !QUERIES.contains(&config.query.as_str()) {
        return Err(format!(
            "unknown query {:?}; expected one of {}",
            config.query,
            QUERIES.join(", ")
        ));
    }
    let start_load = load_average();
    let events = generate(config.events);
    let machine_noise = probe(config);
    let figures = measure(config, &config.query, &events)?;
    Ok(NexmarkBenchReport {
        query: config.query.clone(),
        shards: config.shards,
        events: events.len() as u64,
        events_per_s: figures.events_per_s,
        sustained_per_s: figures.sustained_per_s,
        rounds_per_s: figures.rounds_per_s,
        outputs: figures.outputs,
        latency: vec![figures.load_50, figures.load_80],
        machine_noise,
        load_average: [start_load, load_average()],
    })
}

/// Runs the scenario for every query in [`QUERIES`], one after another, with one
/// noise probe before them.
pub fn run_all(config: &NexmarkBenchConfig) -> Result<AllQueriesReport, String> {
    let start_load = load_average();
    let events = generate(config.events);
    let machine_noise = probe(config);
    let mut queries = Vec::new();
    for query in QUERIES {
        queries.push((query.to_string(), measure(config, query, &events)?));
    }
    Ok(AllQueriesReport {
        shards: config.shards,
        events: events.len() as u64,
        rounds: config.rounds.max(1),
        latency_seconds: config.latency_seconds,
        queries,
        machine_noise,
        load_average: [start_load, load_average()],
    })
}

/// Runs an app of one source over `records` (paced by `pacing`) and what `build` puts
/// after it, on a fresh runtime of `shards` shards, to its end: the wall time and the
/// recorder `build` returned.
pub fn run_app<T: Clone + Send + Sync + 'static>(
    shards: usize,
    records: Arc<Vec<(Time, T)>>,
    pacing: Pacing,
    build: impl FnOnce(&Stream<T>) -> LatencyRecorder,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer_timely::LATE_WINDOW_NS;

    /// Every query runs, paced and unpaced, and the sink counts each output once and
    /// each batch once.
    #[test]
    fn every_query_reports_both_loads_with_its_late_batches() {
        let config = NexmarkBenchConfig {
            events: 20_000,
            rounds: 1,
            latency_seconds: 0.2,
            noise_seconds: 0.05,
            ..NexmarkBenchConfig::default()
        };
        let report = run_all(&config).unwrap();
        assert_eq!(report.queries.len(), QUERIES.len());
        for (name, figures) in &report.queries {
            assert!(figures.events_per_s > 0.0, "{name}");
            for point in [&figures.load_50, &figures.load_80] {
                assert!(point.p50_ns <= point.p99_ns && point.p99_ns <= point.p999_ns);
                assert!(point.p999_ns <= point.max_ns, "{name}");
                let late = &point.late_batches;
                assert!(late.late <= late.batches && late.batches <= point.outputs.max(1));
                assert!(late.longest_late_run <= late.late);
            }
        }
        let json = serde_json::to_value(&report).unwrap();
        let q0 = &json["queries"]["q0"];
        for key in ["p50_ns", "p99_ns", "p999_ns"] {
            assert!(q0["load_50"][key].is_u64(), "{key}");
            assert!(q0["load_80"][key].is_u64(), "{key}");
        }
        assert!(q0["events_per_s"].is_f64());
        assert_eq!(json["machine_noise"].as_array().unwrap().len(), 2);
        let order: Vec<&String> = json["queries"].as_object().unwrap().keys().collect();
        assert!(order.len() == QUERIES.len());
        assert_eq!(
            report.table().matches("late batches").count(),
            QUERIES.len()
        );
    }

    #[test]
    fn the_sink_times_each_batch_by_its_first_output() {
        let totals = Arc::new(Mutex::new(SinkTotals::default()));
        let mut sink = BenchSink {
            histogram: crate::latency::new_histogram(),
            batches: Vec::new(),
            batch_open: false,
            outputs: 0,
            totals: totals.clone(),
        };
        SinkWriter::<u64>::begin_batch(&mut sink, 0);
        sink.write(0, 1u64, 5);
        sink.write(0, 2u64, 5);
        SinkWriter::<u64>::begin_batch(&mut sink, 0);
        sink.write(0, 3u64, 2 * LATE_WINDOW_NS);
        SinkWriter::<u64>::finish(&mut sink);
        let totals = totals.lock().unwrap();
        assert_eq!(totals.outputs, 3);
        assert_eq!(totals.batches, vec![vec![5, 2 * LATE_WINDOW_NS]]);
        assert_eq!(totals.histogram.as_ref().unwrap().len(), 3);
        let mut late = LateWindows::default();
        late.add(&totals.batches);
        let late = LateBatches::from(&late);
        assert_eq!((late.batches, late.late, late.late_at_start), (2, 1, 1));
    }
}
