//! `dirigo bench isolation`: two tenants share two cores — a latency-critical app and a
//! bursty heavy app — in dirigo under each scheduling policy and in timely-dataflow
//! (which has no priorities), at the same offered loads: does the critical app keep its
//! latency target while the heavy app bursts, and what does the heavy app get done?
//!
//! The tenants (the same work per record on both systems):
//! - **critical**: a paced filter (keeps 7 records in 8) at `critical_rate` records/s,
//!   SLO `critical_slo`; each output's latency runs from its own record's intended send
//!   time to when the filter's output reaches the sink (dirigo) or is observed after the
//!   filter (timely);
//! - **heavy**: a q5-like keyed sliding-window count (`window_ms` wide, sliding by
//!   `slide_ms`, over `keys` keys: each record counts in `window_ms / slide_ms` windows;
//!   by default 500 ms by 25 ms over 20 000 keys, so that the window operator, not the
//!   source, is where a burst's backlog queues)
//!   with bursts: `burst_factor` × its mean rate for `burst_length_s` of every
//!   `burst_every_s` seconds, a lower base rate between them. Its mean rate is
//!   `heavy_share` of the heavy app's own throughput on dirigo alone (measured first,
//!   unless `heavy_rate` sets it), so a burst offers more than the cores can take and
//!   leaves a backlog that the quiet time drains. A window's rows count from the intended
//!   send time of the record that closed the window (the first at or past its end), as
//!   `dirigo bench peer` does. Event times are the intended send times, in ms.
//!
//! dirigo runs both apps on one runtime of `shards` shards, each app with its SLO
//! (`critical_slo`, and `heavy_slo` for the heavy one), under `fifo` (oldest first),
//! `edf` (earliest deadline first) and `dirigo` (deadlines, admission, lessees). timely
//! runs both dataflows in one set of `shards` workers ([`crate::isolation_timely`]).
//! Each round runs the four in a rotated order; each system's latencies gather all its
//! rounds into one histogram, and the heavy throughput is the median over rounds.
//! The machine-noise probe and the load average are printed beside the figures: on a
//! shared virtual machine a stall or another process's time slice sets a tail too.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dirigo_operators::dataflow::{App, AppBuilder, Msg, Time};
use dirigo_operators::io::LoadShape;
use dirigo_operators::sink::SinkWriter;
use dirigo_operators::source::Pacing;
use dirigo_operators::window::Windows;
use dirigo_runtime::scheduling::{Dirigo, Edf, Fifo};
use dirigo_runtime::{Nanos, Runtime, RuntimeBuilder};
use hdrhistogram::Histogram;
use serde::Serialize;

/// The critical app's id in dirigo's runtime.
const CRITICAL_APP: u16 = 0;
/// The heavy app's id.
const HEAVY_APP: u16 = 1;

/// What to run.
#[derive(Clone, Debug)]
pub struct IsolationBenchConfig {
    /// Shards (dirigo) and workers (timely).
    pub shards: usize,
    /// Seconds of offered load per run.
    pub seconds: f64,
    /// Rounds; each runs every system once, in a rotated order.
    pub rounds: usize,
    /// Records per second of the critical app.
    pub critical_rate: f64,
    /// The critical app's latency target.
    pub critical_slo: Duration,
    /// The heavy app's latency target (dirigo's deadline policies rank by it).
    pub heavy_slo: Duration,
    /// The heavy app's mean rate, records/s; `None`: `heavy_share` of its throughput
    /// alone on dirigo, measured first.
    pub heavy_rate: Option<f64>,
    /// The heavy app's mean rate as a share of its throughput alone.
    pub heavy_share: f64,
    /// Burst rate over mean rate.
    pub burst_factor: f64,
    /// Seconds from one burst's start to the next (the first starts after one period).
    pub burst_every_s: f64,
    /// Seconds a burst lasts.
    pub burst_length_s: f64,
    /// Keys of the heavy app.
    pub keys: u64,
    /// Sliding window width, ms of event time.
    pub window_ms: u64,
    /// Distance between window starts, ms.
    pub slide_ms: u64,
}

impl Default for IsolationBenchConfig {
    fn default() -> Self {
        Self {
            shards: 2,
            seconds: 4.0,
            rounds: 3,
            critical_rate: 10_000.0,
            critical_slo: Duration::from_millis(1),
            heavy_slo: Duration::from_millis(500),
            heavy_rate: None,
            heavy_share: 0.5,
            burst_factor: 3.0,
            burst_every_s: 1.0,
            burst_length_s: 0.2,
            keys: 20_000,
            window_ms: 500,
            slide_ms: 25,
        }
    }
}

/// Records of one tenant, and when each is due.
#[derive(Debug)]
pub struct Feed {
    /// `(event time ms, value)`: the critical app's values are record indices, the heavy
    /// app's are keys.
    pub records: Vec<(Time, u64)>,
    /// Intended send time of each record, ns after the start of the run.
    pub due: Vec<Nanos>,
}

impl Feed {
    fn from_due(due: Vec<Nanos>, value: impl Fn(usize) -> u64) -> Self {
        let records = due
            .iter()
            .enumerate()
            .map(|(i, &due)| (due / 1_000_000, value(i)))
            .collect();
        Self { records, due }
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Record `index`'s intended send time.
    pub fn due_ns(&self, index: usize) -> Nanos {
        self.due[index.min(self.due.len().saturating_sub(1))]
    }

    /// How many records are due `elapsed` ns after the start.
    pub fn due_by(&self, elapsed: Nanos) -> usize {
        self.due.partition_point(|&due| due <= elapsed)
    }

    /// When the record after the first `count` is due, if there is one.
    pub fn next_due_after(&self, count: usize) -> Option<Nanos> {
        self.due.get(count).copied()
    }

    /// The intended send time of the record that closed a window ending (exclusive) at
    /// `end` ms: the first at or past `end`, or the last record for windows that only the
    /// end of input closed.
    pub fn closing_due_ns(&self, end: Time) -> Nanos {
        self.due_ns(self.records.partition_point(|&(t, _)| t < end))
    }
}

/// Both tenants' input, shared by every run.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The critical app's records.
    pub critical: Arc<Feed>,
    /// The heavy app's records.
    pub heavy: Arc<Feed>,
    /// The heavy app's pacing, for dirigo's source (its schedule is `heavy.due`).
    pub heavy_shape: LoadShape,
    /// The critical app's rate, for dirigo's source (its schedule is `critical.due`).
    pub critical_rate: f64,
    /// Sliding window width, ms.
    pub window_ms: u64,
    /// Sliding window step, ms.
    pub slide_ms: u64,
}

/// Whether the critical filter keeps record `index`.
pub fn keeps(index: u64) -> bool {
    index % 8 != 7
}

/// Which timely worker a heavy key goes to (any fixed spread does; dirigo hashes keys to
/// its partitions its own way).
pub fn key_route(key: u64) -> u64 {
    mix(key)
}

/// Calls `each` with the end of every aligned sliding window (`[k * slide, k * slide +
/// size)`) that holds event time `t`, as dirigo's window assignment does.
pub fn window_ends(t: Time, size: Time, slide: Time, mut each: impl FnMut(Time)) {
    let (size, slide) = (size.max(1), slide.max(1));
    let mut start = t - t % slide;
    loop {
        let end = start.saturating_add(size);
        if end <= t {
            break;
        }
        each(end);
        if start < slide {
            break;
        }
        start -= slide;
    }
}

/// splitmix64's finalizer.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Workload {
    /// The records of a run of `config.seconds` with the heavy app's mean at `heavy_rate`.
    pub fn new(config: &IsolationBenchConfig, heavy_rate: f64) -> Result<Self, String> {
        let horizon = (config.seconds * 1e9) as Nanos;
        let critical_rate = config.critical_rate;
        let spacing = 1e9 / critical_rate.max(1e-9);
        let critical_due: Vec<Nanos> = (0..)
            .map(|i: usize| (i as f64 * spacing) as Nanos)
            .take_while(|&due| due < horizon)
            .collect();
        // base + (burst - base) * length / every = mean, with burst = factor * mean.
        let share = config.burst_length_s / config.burst_every_s;
        let burst = heavy_rate * config.burst_factor;
        let base = (heavy_rate - burst * share) / (1.0 - share);
        if !(base >= 0.0 && share > 0.0 && share < 1.0) {
            return Err(format!(
                "bursts of {}x the mean for {} s of every {} s leave no base rate",
                config.burst_factor, config.burst_length_s, config.burst_every_s
            ));
        }
        let heavy_shape = LoadShape::Bursts {
            base,
            burst,
            every_s: config.burst_every_s,
            length_s: config.burst_length_s,
        };
        heavy_shape.validate()?;
        let heavy_due: Vec<Nanos> = heavy_shape
            .schedule(0)
            .take_while(|&due| due < horizon)
            .collect();
        let keys = config.keys.max(1);
        Ok(Self {
            critical: Arc::new(Feed::from_due(critical_due, |i| i as u64)),
            heavy: Arc::new(Feed::from_due(heavy_due, |i| mix(i as u64) % keys)),
            heavy_shape,
            critical_rate,
            window_ms: config.window_ms,
            slide_ms: config.slide_ms,
        })
    }
}

/// What one run of one system measured.
pub struct RunFigures {
    /// The critical app's output latencies, ns.
    pub critical: Histogram<u64>,
    /// The heavy app's window-row latencies, ns.
    pub heavy: Histogram<u64>,
    /// Window rows out of the heavy app.
    pub heavy_rows: u64,
    /// Heavy records offered.
    pub heavy_records: u64,
    /// Seconds from the start until the heavy app's last output.
    pub heavy_seconds: f64,
}

impl RunFigures {
    /// Nothing measured yet.
    pub fn empty() -> Self {
        Self {
            critical: crate::latency::new_histogram(),
            heavy: crate::latency::new_histogram(),
            heavy_rows: 0,
            heavy_records: 0,
            heavy_seconds: 0.0,
        }
    }

    fn heavy_per_s(&self) -> f64 {
        self.heavy_records as f64 / self.heavy_seconds.max(1e-9)
    }
}

/// The critical app's figures in one system.
#[derive(Clone, Debug, Serialize)]
pub struct CriticalFigures {
    /// Median latency, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Share of outputs within the SLO.
    pub satisfaction: f64,
    /// Outputs measured (all rounds).
    pub outputs: u64,
}

/// The heavy app's figures in one system.
#[derive(Clone, Debug, Serialize)]
pub struct HeavyFigures {
    /// Records offered ÷ seconds until its last output, the median over rounds.
    pub events_per_s: f64,
    /// Each round's.
    pub rounds_per_s: Vec<f64>,
    /// 99th percentile of window-row latency, ns.
    pub p99_ns: u64,
    /// Median window-row latency, ns.
    pub p50_ns: u64,
    /// Window rows out, per run (the same in every run of every system when both count
    /// the same windows).
    pub rows_per_run: Vec<u64>,
}

/// One system's figures.
#[derive(Clone, Debug, Serialize)]
pub struct SystemFigures {
    /// The latency-critical app.
    pub critical: CriticalFigures,
    /// The heavy app.
    pub heavy: HeavyFigures,
}

/// What `dirigo bench isolation` measured.
#[derive(Clone, Debug, Serialize)]
pub struct IsolationReport {
    /// Shards / workers.
    pub shards: usize,
    /// Seconds per run.
    pub seconds: f64,
    /// Rounds.
    pub rounds: usize,
    /// The critical app's rate and SLO.
    pub critical_rate: f64,
    /// The critical app's SLO, ns.
    pub critical_slo_ns: u64,
    /// The heavy app's throughput alone on dirigo (records/s), if measured.
    pub heavy_alone_per_s: Option<f64>,
    /// The heavy app's keys.
    pub heavy_keys: u64,
    /// Its sliding window's width and step, ms.
    pub heavy_window_ms: [u64; 2],
    /// The heavy app's mean offered rate, records/s.
    pub heavy_mean_per_s: f64,
    /// Its rate inside a burst.
    pub heavy_burst_per_s: f64,
    /// Its rate between bursts.
    pub heavy_base_per_s: f64,
    /// Per system: `fifo`, `edf`, `dirigo` (dirigo's policies) and `timely`.
    pub systems: BTreeMap<String, SystemFigures>,
    /// timely's critical p99 ÷ each dirigo policy's.
    pub critical_p99_timely_over: BTreeMap<String, f64>,
    /// dirigo `fifo`'s critical p99 ÷ each dirigo policy's.
    pub critical_p99_fifo_over: BTreeMap<String, f64>,
    /// Each system's heavy throughput ÷ dirigo `fifo`'s.
    pub heavy_throughput_over_fifo: BTreeMap<String, f64>,
    /// The one-minute load average before and after the runs (other processes on the
    /// machine take CPU time too).
    pub load_average: [f64; 2],
    /// The machine-noise probe, run just before the rounds.
    pub machine_noise: Vec<crate::noise::CpuNoise>,
}

impl IsolationReport {
    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "isolation: critical filter at {:.0}/s (SLO {} µs) beside a bursty sliding-window count \
             ({} keys, {} ms windows every {} ms; mean {:.0}/s, bursts {:.0}/s, base {:.0}/s{}), {} shards / workers, {} rounds of {:.1} s; \
             load average {:.2} before, {:.2} after\n",
            self.critical_rate,
            self.critical_slo_ns / 1000,
            self.heavy_keys,
            self.heavy_window_ms[0],
            self.heavy_window_ms[1],
            self.heavy_mean_per_s,
            self.heavy_burst_per_s,
            self.heavy_base_per_s,
            self.heavy_alone_per_s
                .map(|alone| format!("; alone on dirigo {alone:.0}/s"))
                .unwrap_or_default(),
            self.shards,
            self.rounds,
            self.seconds,
            self.load_average[0],
            self.load_average[1],
        );
        out.push_str(
            "  system    crit p50 µs   p99 µs  p99.9 µs  satisfied   heavy/s   heavy p50 ms  p99 ms\n",
        );
        for name in SYSTEMS {
            let Some(system) = self.systems.get(name) else {
                continue;
            };
            let (c, h) = (&system.critical, &system.heavy);
            out.push_str(&format!(
                "  {name:<8} {:>11.0} {:>8.0} {:>9.0} {:>10.3} {:>9.0} {:>14.1} {:>7.1}\n",
                c.p50_ns as f64 / 1e3,
                c.p99_ns as f64 / 1e3,
                c.p999_ns as f64 / 1e3,
                c.satisfaction,
                h.events_per_s,
                h.p50_ns as f64 / 1e6,
                h.p99_ns as f64 / 1e6,
            ));
        }
        for policy in ["edf", "dirigo"] {
            out.push_str(&format!(
                "  {policy}: critical p99 {:.1}x lower than timely's (target 10), {:.1}x lower than fifo's (target 5); heavy throughput {:.2}x fifo's (target 0.8)\n",
                self.critical_p99_timely_over.get(policy).copied().unwrap_or(0.0),
                self.critical_p99_fifo_over.get(policy).copied().unwrap_or(0.0),
                self.heavy_throughput_over_fifo.get(policy).copied().unwrap_or(0.0),
            ));
        }
        if let Some(fifo) = self.systems.get("fifo") {
            out.push_str(&format!(
                "  fifo {} the critical app's SLO: satisfaction {:.3}\n",
                if fifo.critical.satisfaction < 0.99 {
                    "misses"
                } else {
                    "meets"
                },
                fifo.critical.satisfaction
            ));
        }
        out.push_str(&crate::noise::describe(&self.machine_noise));
        out
    }
}

/// The systems, in the order the first round runs them.
const SYSTEMS: [&str; 4] = ["fifo", "edf", "dirigo", "timely"];

/// The one-minute load average, or 0 where unknown.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Runs `dirigo bench isolation`.
pub fn run(config: &IsolationBenchConfig) -> Result<IsolationReport, String> {
    let load_before = load_average();
    let (heavy_rate, alone) = match config.heavy_rate {
        Some(rate) => (rate, None),
        None => {
            let alone = heavy_alone(config)?;
            (alone * config.heavy_share, Some(alone))
        }
    };
    let workload = Workload::new(config, heavy_rate)?;
    let available = dirigo_runtime::placement::available_cpus();
    let noise_cpus: Vec<Option<usize>> = available
        .iter()
        .take(config.shards.max(1))
        .map(|&cpu| Some(cpu))
        .collect();
    let machine_noise = crate::noise::measure(&noise_cpus, Duration::from_secs(2));
    let mut runs: BTreeMap<&str, Vec<RunFigures>> = BTreeMap::new();
    for round in 0..config.rounds.max(1) {
        for turn in 0..SYSTEMS.len() {
            let name = SYSTEMS[(round + turn) % SYSTEMS.len()];
            let figures = match name {
                "timely" => crate::isolation_timely::run(&workload, config.shards),
                policy => dirigo_run(&workload, config, policy)?,
            };
            runs.entry(name).or_default().push(figures);
        }
    }
    let slo_ns = config.critical_slo.as_nanos() as u64;
    let mut systems = BTreeMap::new();
    for (name, runs) in &runs {
        let mut critical = crate::latency::new_histogram();
        let mut heavy = crate::latency::new_histogram();
        for run in runs {
            critical.add(&run.critical).map_err(|e| e.to_string())?;
            heavy.add(&run.heavy).map_err(|e| e.to_string())?;
        }
        let within: u64 = critical
            .iter_recorded()
            .filter(|value| value.value_iterated_to() <= slo_ns)
            .map(|value| value.count_at_value())
            .sum();
        let rounds_per_s: Vec<f64> = runs.iter().map(RunFigures::heavy_per_s).collect();
        systems.insert(
            name.to_string(),
            SystemFigures {
                critical: CriticalFigures {
                    p50_ns: critical.value_at_quantile(0.5),
                    p99_ns: critical.value_at_quantile(0.99),
                    p999_ns: critical.value_at_quantile(0.999),
                    satisfaction: within as f64 / critical.len().max(1) as f64,
                    outputs: critical.len(),
                },
                heavy: HeavyFigures {
                    events_per_s: median(&rounds_per_s),
                    rounds_per_s,
                    p99_ns: heavy.value_at_quantile(0.99),
                    p50_ns: heavy.value_at_quantile(0.5),
                    rows_per_run: runs.iter().map(|run| run.heavy_rows).collect(),
                },
            },
        );
    }
    let ratio = |top: f64, bottom: f64| top / bottom.max(1e-9);
    let (mut timely_over, mut fifo_over, mut heavy_over) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for (name, system) in &systems {
        let p99 = system.critical.p99_ns as f64;
        if name != "timely" {
            timely_over.insert(
                name.clone(),
                ratio(systems["timely"].critical.p99_ns as f64, p99),
            );
            fifo_over.insert(
                name.clone(),
                ratio(systems["fifo"].critical.p99_ns as f64, p99),
            );
        }
        heavy_over.insert(
            name.clone(),
            ratio(
                system.heavy.events_per_s,
                systems["fifo"].heavy.events_per_s,
            ),
        );
    }
    let share = config.burst_length_s / config.burst_every_s;
    let burst = heavy_rate * config.burst_factor;
    Ok(IsolationReport {
        shards: config.shards,
        seconds: config.seconds,
        rounds: config.rounds.max(1),
        critical_rate: config.critical_rate,
        critical_slo_ns: slo_ns,
        heavy_alone_per_s: alone,
        heavy_keys: config.keys,
        heavy_window_ms: [config.window_ms, config.slide_ms],
        heavy_mean_per_s: heavy_rate,
        heavy_burst_per_s: burst,
        heavy_base_per_s: (heavy_rate - burst * share) / (1.0 - share),
        systems,
        critical_p99_timely_over: timely_over,
        critical_p99_fifo_over: fifo_over,
        heavy_throughput_over_fifo: heavy_over,
        load_average: [load_before, load_average()],
        machine_noise,
    })
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 0 => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        n => sorted[n / 2],
    }
}

/// The heavy app alone on dirigo, unpaced: records per second, the median of three runs
/// over two seconds' worth of records at a nominal 500 000/s (event times only decide
/// which windows a record falls in and when they close).
fn heavy_alone(config: &IsolationBenchConfig) -> Result<f64, String> {
    let nominal = IsolationBenchConfig {
        seconds: 2.0,
        ..config.clone()
    };
    let workload = Workload::new(&nominal, 500_000.0)?;
    let mut rates = Vec::new();
    for _ in 0..3 {
        let app = AppBuilder::new(HEAVY_APP, "heavy");
        heavy_pipeline(&app, &workload, Pacing::Unpaced, None);
        let app = app.build();
        let (elapsed, _) = crate::nexmark::run_to_end_on(
            &app,
            Runtime::<Msg>::builder().shards(config.shards.max(1)),
        )?;
        rates.push(workload.heavy.len() as f64 / elapsed.as_secs_f64());
    }
    Ok(median(&rates))
}

/// Where a run's sinks leave their figures.
#[derive(Default)]
struct Shared {
    critical: Mutex<Option<Histogram<u64>>>,
    heavy: Mutex<Option<Histogram<u64>>>,
    rows: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn add(slot: &Mutex<Option<Histogram<u64>>>, histogram: &Histogram<u64>) {
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            Some(total) => {
                let _ = total.add(histogram);
            }
            None => *slot = Some(histogram.clone()),
        }
    }
}

/// When an app's paced sources started, once known.
struct Epoch {
    app: Arc<OnceLock<App>>,
    since: Option<Nanos>,
}

impl Epoch {
    fn get(&mut self) -> Option<Nanos> {
        if self.since.is_none() {
            self.since = self.app.get()?.paced_since();
        }
        self.since
    }
}

/// The critical app's sink: each output's latency from its record's intended send time.
struct CriticalSink {
    feed: Arc<Feed>,
    epoch: Epoch,
    now: Nanos,
    latency: Histogram<u64>,
    shared: Arc<Shared>,
}

impl SinkWriter<u64> for CriticalSink {
    fn begin_batch(&mut self, now: Nanos) {
        self.now = now;
    }

    fn write(&mut self, _: Time, index: u64, latency_ns: Nanos) {
        let latency = match self.epoch.get() {
            Some(epoch) => self
                .now
                .saturating_sub(epoch + self.feed.due_ns(index as usize)),
            None => latency_ns,
        };
        crate::latency::record(&mut self.latency, latency);
    }

    fn finish(&mut self) {
        Shared::add(&self.shared.critical, &self.latency);
    }
}

/// The heavy app's sink: each window row's latency from the intended send time of the
/// record that closed its window.
struct HeavySink {
    feed: Arc<Feed>,
    epoch: Epoch,
    now: Nanos,
    /// The window end last looked up, and its closing record's intended time.
    last: Option<(Time, Nanos)>,
    latency: Histogram<u64>,
    rows: u64,
    shared: Arc<Shared>,
}

impl SinkWriter<(u64, dirigo_operators::window::Window, u64)> for HeavySink {
    fn begin_batch(&mut self, now: Nanos) {
        self.now = now;
    }

    fn write(
        &mut self,
        _: Time,
        (_, window, _): (u64, dirigo_operators::window::Window, u64),
        latency_ns: Nanos,
    ) {
        self.rows += 1;
        let due = match self.last {
            Some((end, due)) if end == window.end => Some(due),
            _ => {
                let due = self.feed.closing_due_ns(window.end);
                self.last = Some((window.end, due));
                Some(due)
            }
        };
        let latency = match (self.epoch.get(), due) {
            (Some(epoch), Some(due)) => self.now.saturating_sub(epoch + due),
            _ => latency_ns,
        };
        crate::latency::record(&mut self.latency, latency);
    }

    fn finish(&mut self) {
        Shared::add(&self.shared.heavy, &self.latency);
        self.shared
            .rows
            .fetch_add(self.rows, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The heavy app's pipeline on `app`: source, key, sliding-window count, sink.
fn heavy_pipeline(
    app: &AppBuilder,
    workload: &Workload,
    pacing: Pacing,
    measured: Option<(Arc<OnceLock<App>>, Arc<Shared>)>,
) {
    let windows = Windows::Sliding {
        size: workload.window_ms,
        slide: workload.slide_ms,
    }
    .in_any_order();
    let feed = workload.heavy.clone();
    let records: Arc<Vec<(Time, u64)>> = Arc::new(feed.records.clone());
    let counts = app
        .source_iter("records", records, 0, pacing)
        .key_by(|key: &u64| *key)
        .window_count("sliding-count", windows);
    match measured {
        Some((cell, shared)) => counts.sink("rows", move |_| HeavySink {
            feed: feed.clone(),
            epoch: Epoch {
                app: cell.clone(),
                since: None,
            },
            now: 0,
            last: None,
            latency: crate::latency::new_histogram(),
            rows: 0,
            shared: shared.clone(),
        }),
        None => {
            let _ = counts.count("rows");
        }
    }
}

/// One run of both apps on dirigo under `policy`.
fn dirigo_run(
    workload: &Workload,
    config: &IsolationBenchConfig,
    policy: &str,
) -> Result<RunFigures, String> {
    let shared = Arc::new(Shared::default());
    let (critical_cell, heavy_cell) = (Arc::new(OnceLock::new()), Arc::new(OnceLock::new()));
    let critical_app = AppBuilder::new(CRITICAL_APP, "critical");
    let feed = workload.critical.clone();
    let records: Arc<Vec<(Time, u64)>> = Arc::new(feed.records.to_vec());
    {
        let (cell, shared) = (critical_cell.clone(), shared.clone());
        critical_app
            .source_iter("readings", records, 0, Pacing::Rate(workload.critical_rate))
            .filter("keep", |index: &u64| keeps(*index))
            .sink("out", move |_| CriticalSink {
                feed: feed.clone(),
                epoch: Epoch {
                    app: cell.clone(),
                    since: None,
                },
                now: 0,
                latency: crate::latency::new_histogram(),
                shared: shared.clone(),
            });
    }
    let heavy_app = AppBuilder::new(HEAVY_APP, "heavy");
    heavy_pipeline(
        &heavy_app,
        workload,
        Pacing::Shape {
            shape: workload.heavy_shape.clone(),
            seed: 0,
        },
        Some((heavy_cell.clone(), shared.clone())),
    );
    let (critical_app, heavy_app) = (critical_app.build(), heavy_app.build());
    let _ = critical_cell.set(critical_app.clone());
    let _ = heavy_cell.set(heavy_app.clone());
    let builder: RuntimeBuilder<Msg> = Runtime::<Msg>::builder()
        .shards(config.shards.max(1))
        .app_slo(CRITICAL_APP, config.critical_slo)
        .app_slo(HEAVY_APP, config.heavy_slo);
    let builder = match policy {
        "fifo" => builder.policy(Fifo),
        "edf" => builder.policy(Edf),
        "dirigo" => builder.policy(Dirigo::default()),
        other => return Err(format!("unknown policy {other}")),
    };
    let runtime = heavy_app
        .install(critical_app.install(builder))
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    critical_app.start(&runtime.ingress());
    heavy_app.start(&runtime.ingress());
    let limit = Duration::from_secs_f64(config.seconds + 120.0);
    let heavy_done = heavy_app.wait(limit);
    let heavy_seconds = started.elapsed().as_secs_f64();
    let critical_done = critical_app.wait(limit);
    runtime.shutdown();
    if !(heavy_done && critical_done) {
        return Err(format!(
            "a {policy} run did not finish within two minutes after its load"
        ));
    }
    let take = |slot: &Mutex<Option<Histogram<u64>>>| {
        slot.lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(crate::latency::new_histogram)
    };
    Ok(RunFigures {
        critical: take(&shared.critical),
        heavy: take(&shared.heavy),
        heavy_rows: shared.rows.load(std::sync::atomic::Ordering::Relaxed),
        heavy_records: workload.heavy.len() as u64,
        heavy_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_ends_match_the_aligned_windows_that_hold_a_time() {
        let mut ends = Vec::new();
        window_ends(130, 200, 50, |end| ends.push(end));
        assert_eq!(ends, vec![300, 250, 200]);
        ends.clear();
        window_ends(49, 200, 50, |end| ends.push(end));
        assert_eq!(ends, vec![200]);
        ends.clear();
        window_ends(250, 200, 50, |end| ends.push(end));
        assert_eq!(ends, vec![450, 400, 350, 300]);
    }

    #[test]
    fn the_heavy_feed_bursts_around_its_mean_and_closes_windows_by_due_time() {
        let config = IsolationBenchConfig {
            seconds: 3.0,
            ..IsolationBenchConfig::default()
        };
        let workload = Workload::new(&config, 10_000.0).unwrap();
        let heavy = &workload.heavy;
        let mean = heavy.len() as f64 / 3.0;
        // Two bursts (at 1 s and 2 s) in 3 s: below the mean of whole periods.
        assert!(mean > 7_000.0 && mean < 10_500.0, "{mean}");
        let in_burst = heavy.due_by(1_200_000_000) - heavy.due_by(1_000_000_000);
        let quiet = heavy.due_by(800_000_000) - heavy.due_by(600_000_000);
        assert!(in_burst > 5 * quiet, "{in_burst} vs {quiet}");
        assert!(heavy.due.windows(2).all(|w| w[0] <= w[1]));
        let closing = heavy.closing_due_ns(1_000);
        assert!(
            (1_000_000_000..1_001_000_000).contains(&closing),
            "{closing}"
        );
        assert_eq!(workload.critical.len(), 30_000);
    }

    /// Both systems count the same windows: every run of every system gives the same
    /// number of rows, and every critical output is measured.
    #[test]
    fn both_systems_emit_the_same_rows_and_measure_every_output() {
        let config = IsolationBenchConfig {
            seconds: 1.5,
            critical_rate: 2_000.0,
            heavy_rate: Some(20_000.0),
            ..IsolationBenchConfig::default()
        };
        let workload = Workload::new(&config, 20_000.0).unwrap();
        let kept = (0..workload.critical.len() as u64)
            .filter(|&i| keeps(i))
            .count() as u64;
        let mut expected: BTreeMap<(Time, u64), u64> = BTreeMap::new();
        for &(t, key) in &workload.heavy.records {
            window_ends(t, config.window_ms, config.slide_ms, |end| {
                *expected.entry((end, key)).or_insert(0) += 1;
            });
        }
        let timely = crate::isolation_timely::run(&workload, 2);
        assert_eq!(timely.heavy_rows, expected.len() as u64);
        assert_eq!(timely.critical.len(), kept);
        for policy in ["fifo", "edf", "dirigo"] {
            let run = dirigo_run(&workload, &config, policy).unwrap();
            assert_eq!(run.heavy_rows, expected.len() as u64, "{policy}");
            assert_eq!(run.critical.len(), kept, "{policy}");
            assert_eq!(run.heavy.len(), expected.len() as u64, "{policy}");
        }
    }
}
