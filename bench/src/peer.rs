//! `dirigo bench peer`: the same pipeline in dirigo and in timely-dataflow, in one run — a
//! keyed tumbling-window count (key: the auction, window: 10 s of event time) over NEXMark
//! bids generated in memory beforehand, each bid reduced to `(date_time, auction)` on both
//! sides.
//!
//! Throughput: every bid as fast as each system takes it, on 2 shards / 2 workers, until
//! the last window is out; the median of `rounds` alternating runs. Latency: open loop at
//! the same offered load for both, 50 % of the slower one's throughput, from the intended
//! send time of the bid that closed a window to when the window's rows reach the sink;
//! `latency_rounds` runs of each, alternating which system goes first, merged into one
//! histogram per system. Longer latency runs cycle through the bids, shifted in event
//! time. Both sides read the same vector of 16-byte `(event time, auction)` records, so
//! neither pays for building the other's input. Both sides' outputs
//! are checked against the same plainly computed reference (an order-independent
//! checksum), so neither side can win by computing less.
//!
//! dirigo runs as a latency-critical pipeline is meant to: its app has an SLO (1 ms) and
//! its shards run the earliest deadline first ([`PeerPolicy`]). In 8 alternating pairs of
//! runs (`--policy round-robin`, `--policy edf`), its p99 was lower under `edf` in every
//! pair (medians 401 µs against 595 µs); `--policy` picks another.
//!
//! Both sides emit a window's counts in the order their hash tables hold them: dirigo's
//! window runs with [`WindowSpec::any_order`](dirigo_operators::window::WindowSpec), as
//! timely's side drains its `HashMap`. `--sorted-windows` makes dirigo sort each firing's
//! rows by key (its default for windows) and so do more than timely: in 4 alternating
//! pairs, that cost 20 µs at p50 (69–72 µs against 49–52 µs) and raised dirigo's p99 in
//! every pair (medians 474 µs against 272 µs).
//!
//! Both sides also share the process's allocator, and with it the `dirigo` command's
//! choice to keep freed memory rather than give it back to the operating system
//! (`--release-freed-memory` gives it back; see the command's `allocator` module).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use dirigo_operators::dataflow::{App, AppBuilder, Time};
use dirigo_operators::nexmark::events::{Event, NexmarkSpec};
use dirigo_operators::sink::SinkWriter;
use dirigo_operators::source::Pacing;
use dirigo_operators::window::{Window, WindowSpec, Windows};
use dirigo_runtime::Nanos;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::peer_timely::{
    self, row_checksum, LateWindows, Latency, PeerRun, Rec, START_WINDOWS, WINDOW_MS,
};

/// What to measure.
#[derive(Clone, Debug)]
pub struct PeerBenchConfig {
    /// NEXMark events generated (about 92 % are bids).
    pub events: usize,
    /// Shards (dirigo) and workers (timely).
    pub workers: usize,
    /// Alternating throughput runs of each (the median is reported).
    pub rounds: usize,
    /// Bids per throughput run, at least: the generated bids, cycled and shifted in
    /// event time as often as needed. Runs of a few milliseconds measure start-up more
    /// than throughput.
    pub throughput_bids: usize,
    /// Seconds of offered load per latency run.
    pub latency_seconds: f64,
    /// Latency runs of each, alternating which system goes first (their histograms are
    /// merged).
    pub latency_rounds: usize,
    /// Offered load of the latency runs, bids per second; `None`: 50 % of the slower
    /// system's throughput.
    pub offered_per_s: Option<f64>,
    /// How dirigo's shards order their ready work.
    pub policy: PeerPolicy,
    /// The app's latency target, for the deadline policies: its deadlines are the
    /// intended send time plus this, less the measured cost of the operators ahead (with
    /// one app, `Edf`'s order does not depend on it; `Dirigo` asks for lessees by it).
    pub slo: std::time::Duration,
    /// Whether the process (both systems: they share it and its allocator) may use
    /// transparent huge pages; dirigo's runtime turns them off by default (see
    /// [`dirigo_runtime::huge_pages`]).
    pub transparent_huge_pages: bool,
    /// Whether the process's allocator gave freed memory back to the operating system
    /// during the runs (both systems share it). The bench does not set it: the binary that
    /// owns the allocator does, and says so here for the report (the `dirigo` command
    /// keeps freed memory unless told otherwise).
    pub freed_memory_released: bool,
    /// Whether dirigo's window puts each firing's rows in key order. Off by default: the
    /// timely side emits a window's counts in its hash map's order, so both sides then do
    /// the same work ([`WindowSpec::any_order`](dirigo_operators::window::WindowSpec)).
    pub sorted_windows: bool,
}

impl Default for PeerBenchConfig {
    fn default() -> Self {
        Self {
            events: 1_000_000,
            workers: 2,
            rounds: 3,
            throughput_bids: 10_000_000,
            latency_seconds: 2.0,
            latency_rounds: 2,
            offered_per_s: None,
            policy: PeerPolicy::Edf,
            slo: std::time::Duration::from_millis(1),
            transparent_huge_pages: false,
            freed_memory_released: false,
            sorted_windows: false,
        }
    }
}

/// The scheduling policy of dirigo's side.
///
/// The default is [`Edf`](PeerPolicy::Edf), the deadline scheduling a latency-critical
/// pipeline is meant to run with: window rows (due when the window closed) run before the
/// bids that arrive after them, so a window's rows are not held behind the backlog a
/// stall leaves. Round-robin (the runtime's default, for apps without latency targets)
/// lets each ready operator take its turn.
///
/// ```
/// use dirigo_bench::peer::PeerPolicy;
///
/// let policy: PeerPolicy = "round-robin".parse().unwrap();
/// assert_eq!(policy, PeerPolicy::RoundRobin);
/// assert!("fastest".parse::<PeerPolicy>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerPolicy {
    /// Ready operators take turns.
    RoundRobin,
    /// Oldest event first.
    Fifo,
    /// Earliest deadline first, with an SLO for the app.
    Edf,
    /// Deadlines, admission and lessees, with an SLO for the app.
    Dirigo,
}

impl std::str::FromStr for PeerPolicy {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "round-robin" => Ok(Self::RoundRobin),
            "fifo" => Ok(Self::Fifo),
            "edf" => Ok(Self::Edf),
            "dirigo" => Ok(Self::Dirigo),
            other => Err(format!(
                "unknown policy {other:?}; expected round-robin, fifo, edf or dirigo"
            )),
        }
    }
}

impl PeerPolicy {
    /// The name `FromStr` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::Fifo => "fifo",
            Self::Edf => "edf",
            Self::Dirigo => "dirigo",
        }
    }

    fn apply(
        self,
        builder: dirigo_runtime::RuntimeBuilder<dirigo_operators::dataflow::Msg>,
        slo: std::time::Duration,
    ) -> dirigo_runtime::RuntimeBuilder<dirigo_operators::dataflow::Msg> {
        use dirigo_runtime::scheduling::{Dirigo, Edf, Fifo, RoundRobin};
        match self {
            Self::RoundRobin => builder.policy(RoundRobin),
            Self::Fifo => builder.policy(Fifo),
            Self::Edf => builder.policy(Edf).app_slo(PEER_APP, slo),
            Self::Dirigo => builder.policy(Dirigo::default()).app_slo(PEER_APP, slo),
        }
    }
}

/// dirigo's side is this app.
const PEER_APP: dirigo_runtime::AppId = 0;

/// One system's figures.
#[derive(Clone, Debug, Serialize)]
pub struct PeerSide {
    /// Median throughput, bids per second.
    pub events_per_s: f64,
    /// Every throughput run.
    pub rounds_per_s: Vec<f64>,
    /// Latency at the common offered load, ns.
    pub latency_ns: Latency,
    /// The windows of the latency runs that began to come out over 1 ms late: how many,
    /// how many at the start of a run, and the longest stretch of them.
    pub late_windows: LateWindows,
    /// Output rows of a throughput run.
    pub windows_out: u64,
    /// Whether every run's output matched the reference.
    pub correct: bool,
    /// Time the hypervisor took from each CPU during this system's latency runs, in
    /// nanoseconds (steps of the kernel's clock tick; empty where unknown): a p99 of
    /// tens of milliseconds next to tens of milliseconds stolen was the machine's.
    pub stolen_ns: Vec<u64>,
}

/// The scenario's result.
#[derive(Clone, Debug, Serialize)]
pub struct PeerBenchReport {
    /// Bids per throughput run.
    pub bids: u64,
    /// Distinct bids generated (throughput and latency runs cycle through them).
    pub generated_bids: u64,
    /// Shards / workers.
    pub workers: usize,
    /// The offered load of the latency runs, bids per second.
    pub offered_per_s: f64,
    /// Latency runs of each system (their histograms merged).
    pub latency_rounds: usize,
    /// Whether both systems ran with transparent huge pages allowed.
    pub transparent_huge_pages: bool,
    /// Whether the allocator gave freed memory back to the operating system (both
    /// systems share it).
    pub freed_memory_released: bool,
    /// Whether dirigo's window put each firing's rows in key order.
    pub dirigo_sorted_windows: bool,
    /// dirigo's scheduling policy.
    pub dirigo_policy: PeerPolicy,
    /// The SLO dirigo's app had (deadline policies), µs.
    pub slo_us: u64,
    /// dirigo.
    pub dirigo: PeerSide,
    /// timely-dataflow.
    pub timely: PeerSide,
    /// dirigo's throughput ÷ timely's.
    pub throughput_ratio: f64,
    /// timely's p99 ÷ dirigo's.
    pub p99_ratio: f64,
    /// Share of the time dirigo's shards were busy (handlers and runtime work, not idle
    /// polling) in its latency runs, the mean over the runs: the rest is the room it has
    /// to catch up after the machine stalls it, which sets the tail.
    pub dirigo_busy_share: f64,
    /// How much of each CPU the machine itself took, measured with a spinning thread per
    /// CPU for two seconds just before the latency runs. Both systems run at
    /// half their capacity there, so a stretch of tens of milliseconds in which the
    /// machine takes half a CPU or more (`worst_stretch_lost`) is a lag neither can avoid,
    /// and it sets their p99.
    pub machine_noise: Vec<crate::noise::CpuNoise>,
}

impl PeerBenchReport {
    /// A table for people.
    pub fn table(&self) -> String {
        let mut out =
            format!(
            "keyed 10 s tumbling count over {} NEXMark bids ({} distinct), {} shards / workers; \
             latency at {:.0} bids/s, {} runs of each; transparent huge pages {}; freed memory \
             {}; dirigo's policy {} (SLO {} µs), window rows {}\n",
            self.bids,
            self.generated_bids,
            self.workers,
            self.offered_per_s,
            self.latency_rounds,
            if self.transparent_huge_pages { "on" } else { "off" },
            if self.freed_memory_released { "released" } else { "kept" },
            self.dirigo_policy.name(),
            self.slo_us,
            if self.dirigo_sorted_windows { "in key order" } else { "in any order" }
        );
        out.push_str("system      bids/s      p50 µs      p99 µs    p99.9 µs   correct\n");
        for (name, side) in [("dirigo", &self.dirigo), ("timely", &self.timely)] {
            out.push_str(&format!(
                "{name:<8} {:>10.0} {:>11.1} {:>11.1} {:>11.1}   {}\n",
                side.events_per_s,
                side.latency_ns.p50 as f64 / 1e3,
                side.latency_ns.p99 as f64 / 1e3,
                side.latency_ns.p999 as f64 / 1e3,
                side.correct
            ));
        }
        out.push_str(&format!(
            "dirigo/timely throughput {:.2}; timely/dirigo p99 {:.2}\n",
            self.throughput_ratio, self.p99_ratio
        ));
        out.push_str(&format!(
            "  dirigo's shards were busy {:.0}% of its latency runs\n",
            self.dirigo_busy_share * 100.0
        ));
        for (name, side) in [("dirigo", &self.dirigo), ("timely", &self.timely)] {
            let late = &side.late_windows;
            out.push_str(&format!(
                "  {name}: {} of {} windows began to come out over 1 ms late ({} of them among \
                 the first {START_WINDOWS} of a run and shard/worker; longest stretch {})\n",
                late.late, late.windows, late.late_at_start, late.longest_late_run
            ));
        }
        out.push_str(&crate::noise::describe(&self.machine_noise));
        for (name, side) in [("dirigo", &self.dirigo), ("timely", &self.timely)] {
            if !side.stolen_ns.is_empty() {
                let each: Vec<String> = side
                    .stolen_ns
                    .iter()
                    .map(|stolen| format!("{:.0} ms", *stolen as f64 / 1e6))
                    .collect();
                out.push_str(&format!(
                    "  stolen by the hypervisor during {name}'s latency runs, per CPU: {}\n",
                    each.join(", ")
                ));
            }
        }
        out
    }
}

/// The sink of dirigo's side: latency, row count and checksum.
struct PeerSink {
    latency: Histogram<u64>,
    shared: Arc<PeerTotals>,
    /// Paced runs: how to find when the bid that closed a window was due.
    closing: Option<ClosingBids>,
    /// When the batch being written arrived (runtime clock).
    batch_at: Nanos,
    /// Paced runs: the latency of each window's first row, in order, and the end of the
    /// window last seen.
    window_latencies: Vec<u64>,
    last_window: Option<Time>,
    rows: u64,
    checksum: u64,
}

/// Finds the intended send time of the bid that closed a window, as timely's side does:
/// the first bid at or past the window's end, due `index / rate` after the app's pacing
/// epoch.
struct ClosingBids {
    records: Arc<Vec<(Time, u64)>>,
    ns_per_bid: f64,
    app: Arc<OnceLock<App>>,
    /// The window end last looked up, and the due time of its closing bid.
    last: Option<(Time, Nanos)>,
}

impl ClosingBids {
    fn due(&mut self, end: Time) -> Option<Nanos> {
        if let Some((seen, due)) = self.last {
            if seen == end {
                return Some(due);
            }
        }
        let epoch = self.app.get()?.paced_since()?;
        let first = self.records.partition_point(|&(t, _)| t < end);
        let index = first.min(self.records.len().saturating_sub(1));
        // The source's schedule, to the nanosecond: bid `i` is due `(i * spacing) as u64`
        // after the epoch.
        let due = epoch + (index as f64 * self.ns_per_bid) as Nanos;
        self.last = Some((end, due));
        Some(due)
    }
}

#[derive(Default)]
struct PeerTotals {
    latency: Mutex<Option<Histogram<u64>>>,
    /// Each shard's [`PeerSink::window_latencies`].
    window_latencies: Mutex<Vec<Vec<u64>>>,
    rows: AtomicU64,
    checksum: AtomicU64,
}

impl SinkWriter<(u64, Window, u64)> for PeerSink {
    fn begin_batch(&mut self, now: Nanos) {
        self.batch_at = now;
    }

    fn write(&mut self, _: Time, (auction, window, count): (u64, Window, u64), latency_ns: Nanos) {
        let row = (window.end, auction, count);
        let latency_ns = match self.closing.as_mut().and_then(|c| c.due(window.end)) {
            Some(due) => {
                let latency_ns = self.batch_at.saturating_sub(due);
                if self.last_window != Some(window.end) {
                    self.last_window = Some(window.end);
                    self.window_latencies.push(latency_ns);
                }
                latency_ns
            }
            None => latency_ns,
        };
        self.latency.saturating_record(latency_ns.max(1));
        self.rows += 1;
        self.checksum = self.checksum.wrapping_add(row_checksum(row));
    }

    /// The sink's rows, latencies and checksum go to the run's totals once, at the end,
    /// as each timely worker hands over its own at the end: merging (and clearing) an
    /// hour-wide histogram under a lock both shards take whenever a window fires cost
    /// the shards time on the latency path that timely's side does not pay.
    fn finish(&mut self) {
        let mut shared = self
            .shared
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match shared.as_mut() {
            Some(total) => {
                let _ = total.add(&self.latency);
            }
            None => *shared = Some(self.latency.clone()),
        }
        if !self.window_latencies.is_empty() {
            self.shared
                .window_latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(std::mem::take(&mut self.window_latencies));
        }
        self.shared.rows.fetch_add(self.rows, Ordering::Relaxed);
        self.shared
            .checksum
            .fetch_add(self.checksum, Ordering::Relaxed);
    }
}

/// One run of dirigo's side. Paced runs time each row from the intended send time of the
/// bid that closed its window (as timely's side does), not from the batch that carried
/// the watermark.
fn dirigo_run(
    records: Arc<Vec<Rec>>,
    config: &PeerBenchConfig,
    pacing: Pacing,
) -> Result<(PeerRun, f64), String> {
    let workers = config.workers.max(1);
    let totals = Arc::new(PeerTotals::default());
    let sink_totals = totals.clone();
    let app_cell: Arc<OnceLock<App>> = Arc::new(OnceLock::new());
    let ns_per_bid = match pacing {
        Pacing::Rate(rate) => Some(1e9 / rate.max(1e-9)),
        _ => None,
    };
    let builder = AppBuilder::new(PEER_APP, "peer");
    let window_spec = if config.sorted_windows {
        WindowSpec::from(Windows::Tumbling { size: WINDOW_MS })
    } else {
        Windows::Tumbling { size: WINDOW_MS }.in_any_order()
    };
    let bids = builder.source_iter("bids", records.clone(), 0, pacing);
    let sink_records = records.clone();
    let sink_app = app_cell.clone();
    bids.key_by(|auction: &u64| *auction)
        .window_count("count", window_spec)
        // Observed where the counts leave the window operator, as on timely's side (rows
        // are shaped in the sink, not by an operator of their own).
        .sink("peer", move |_| PeerSink {
            latency: Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds"),
            shared: sink_totals.clone(),
            closing: ns_per_bid.map(|ns_per_bid| ClosingBids {
                records: sink_records.clone(),
                ns_per_bid,
                app: sink_app.clone(),
                last: None,
            }),
            batch_at: 0,
            window_latencies: Vec::new(),
            last_window: None,
            rows: 0,
            checksum: 0,
        });
    let app = builder.build();
    let _ = app_cell.set(app.clone());
    let (elapsed, busy_share) = crate::nexmark::run_to_end_on(
        &app,
        config.policy.apply(
            dirigo_runtime::Runtime::builder()
                .shards(workers)
                .transparent_huge_pages(config.transparent_huge_pages),
            config.slo,
        ),
    )?;
    let histogram = totals
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let seconds = elapsed.as_secs_f64();
    let run = PeerRun {
        events: records.len() as u64,
        seconds,
        events_per_s: records.len() as f64 / seconds,
        latency_ns: histogram.as_ref().map(Latency::of),
        histogram,
        windows_out: totals.rows.load(Ordering::Relaxed),
        checksum: totals.checksum.load(Ordering::Relaxed),
        window_latencies: std::mem::take(
            &mut *totals
                .window_latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        ),
    };
    Ok((run, busy_share))
}

/// The bids among `events` generated NEXMark events, each as a [`Rec`].
fn nexmark_bids(events: usize) -> Vec<Rec> {
    NexmarkSpec {
        events,
        ..NexmarkSpec::default()
    }
    .iter()
    .filter_map(|event| match event {
        Event::Bid(bid) => Some((bid.date_time, bid.auction)),
        _ => None,
    })
    .collect()
}

/// `count` bids cycling through `bids`, each cycle shifted in event time past the last.
fn cycled(bids: &[Rec], count: usize) -> Vec<Rec> {
    let first = bids.first().map_or(0, |&(t, _)| t);
    let span = bids.last().map_or(0, |&(t, _)| t) - first + WINDOW_MS;
    (0..count)
        .map(|i| {
            let (t, auction) = bids[i % bids.len()];
            (t + (i / bids.len()) as u64 * span, auction)
        })
        .collect()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Which system a latency run measures.
#[derive(Clone, Copy)]
enum System {
    Dirigo,
    Timely,
}

/// Runs the scenario.
pub fn run(config: &PeerBenchConfig) -> Result<PeerBenchReport, String> {
    // Set before anything is built, so that both systems (and the bids they read) meet
    // the same setting from the start.
    let huge_pages = config.transparent_huge_pages;
    dirigo_runtime::huge_pages::set_allowed(huge_pages)
        .map_err(|e| format!("could not set transparent huge pages: {e}"))?;
    let bids = nexmark_bids(config.events);
    if bids.is_empty() {
        return Err("no bids: generate more events".into());
    }
    let generated = bids.len();
    let bids = Arc::new(cycled(&bids, generated.max(config.throughput_bids)));
    let expected = peer_timely::reference_window_counts(&bids);
    let expected_checksum = peer_timely::checksum(&expected);
    let workers = config.workers.max(1);
    let (mut dirigo_rounds, mut timely_rounds) = (Vec::new(), Vec::new());
    let (mut dirigo_correct, mut timely_correct) = (true, true);
    let (mut dirigo_rows, mut timely_rows) = (0, 0);
    for _ in 0..config.rounds.max(1) {
        let (run, _) = dirigo_run(bids.clone(), config, Pacing::Unpaced)?;
        dirigo_correct &=
            run.checksum == expected_checksum && run.windows_out == expected.len() as u64;
        dirigo_rows = run.windows_out;
        dirigo_rounds.push(run.events_per_s);
        let run = peer_timely::timely_throughput(bids.clone(), workers);
        timely_correct &=
            run.checksum == expected_checksum && run.windows_out == expected.len() as u64;
        timely_rows = run.windows_out;
        timely_rounds.push(run.events_per_s);
    }
    let (dirigo_tput, timely_tput) = (median(&dirigo_rounds), median(&timely_rounds));
    let offered = config
        .offered_per_s
        .unwrap_or(0.5 * dirigo_tput.min(timely_tput));
    let wanted = ((offered * config.latency_seconds) as usize).max(1000);
    let offered_bids = Arc::new(cycled(&bids[..generated], wanted));
    let expected_offered =
        peer_timely::checksum(&peer_timely::reference_window_counts(&offered_bids));
    // Whichever system runs first after the bids are built meets the machine in a
    // different state (the kernel still reclaiming and compacting memory): the rounds
    // alternate which goes first, and each system's histogram gathers all its rounds.
    let available = dirigo_runtime::placement::available_cpus();
    let noise_cpus: Vec<Option<usize>> = match available.as_slice() {
        [first, second, ..] => vec![Some(*first), Some(*second)],
        _ => vec![None; workers.max(1)],
    };
    let machine_noise = crate::noise::measure(&noise_cpus, std::time::Duration::from_secs(2));
    let (mut dirigo_latency, mut timely_latency) = (None, None);
    let (mut dirigo_stolen, mut timely_stolen) = (Vec::new(), Vec::new());
    let (mut dirigo_late, mut timely_late) = (LateWindows::default(), LateWindows::default());
    let mut dirigo_busy = Vec::new();
    for round in 0..config.latency_rounds.max(1) {
        let order = if round % 2 == 0 {
            [System::Dirigo, System::Timely]
        } else {
            [System::Timely, System::Dirigo]
        };
        for system in order {
            let stolen_before = crate::noise::stolen_ns();
            let (run, correct, total, stolen, late) = match system {
                System::Dirigo => (
                    {
                        let (run, busy) =
                            dirigo_run(offered_bids.clone(), config, Pacing::Rate(offered))?;
                        dirigo_busy.push(busy);
                        run
                    },
                    &mut dirigo_correct,
                    &mut dirigo_latency,
                    &mut dirigo_stolen,
                    &mut dirigo_late,
                ),
                System::Timely => (
                    peer_timely::timely_latency(offered_bids.clone(), workers, offered),
                    &mut timely_correct,
                    &mut timely_latency,
                    &mut timely_stolen,
                    &mut timely_late,
                ),
            };
            let stolen_now = crate::noise::stolen_between(
                &stolen_before,
                &crate::noise::stolen_ns(),
                &noise_cpus,
            );
            if stolen.is_empty() {
                *stolen = stolen_now;
            } else {
                stolen
                    .iter_mut()
                    .zip(stolen_now)
                    .for_each(|(sum, more)| *sum += more);
            }
            *correct &= run.checksum == expected_offered;
            late.add(&run.window_latencies);
            if let Some(histogram) = run.histogram {
                match total {
                    None => *total = Some(histogram),
                    Some(total) => total
                        .add(&histogram)
                        .map_err(|e| format!("latency histograms differ in bounds: {e}"))?,
                }
            }
        }
    }
    let latency_of = |histogram: Option<Histogram<u64>>| {
        histogram.as_ref().map(Latency::of).unwrap_or(Latency {
            p50: 0,
            p99: 0,
            p999: 0,
            max: 0,
            samples: 0,
        })
    };
    let dirigo = PeerSide {
        events_per_s: dirigo_tput,
        rounds_per_s: dirigo_rounds,
        latency_ns: latency_of(dirigo_latency),
        late_windows: dirigo_late,
        windows_out: dirigo_rows,
        correct: dirigo_correct,
        stolen_ns: dirigo_stolen,
    };
    let timely = PeerSide {
        events_per_s: timely_tput,
        rounds_per_s: timely_rounds,
        latency_ns: latency_of(timely_latency),
        late_windows: timely_late,
        windows_out: timely_rows,
        correct: timely_correct,
        stolen_ns: timely_stolen,
    };
    Ok(PeerBenchReport {
        bids: bids.len() as u64,
        generated_bids: generated as u64,
        workers,
        offered_per_s: offered,
        latency_rounds: config.latency_rounds.max(1),
        transparent_huge_pages: huge_pages,
        freed_memory_released: config.freed_memory_released,
        dirigo_sorted_windows: config.sorted_windows,
        dirigo_policy: config.policy,
        slo_us: config.slo.as_micros() as u64,
        throughput_ratio: dirigo.events_per_s / timely.events_per_s,
        p99_ratio: timely.latency_ns.p99 as f64 / dirigo.latency_ns.p99.max(1) as f64,
        dirigo_busy_share: dirigo_busy.iter().sum::<f64>() / dirigo_busy.len().max(1) as f64,
        dirigo,
        timely,
        machine_noise,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_by_name_and_refuse_others() {
        for policy in [
            PeerPolicy::RoundRobin,
            PeerPolicy::Fifo,
            PeerPolicy::Edf,
            PeerPolicy::Dirigo,
        ] {
            assert_eq!(policy.name().parse::<PeerPolicy>(), Ok(policy));
        }
        let error = "fastest".parse::<PeerPolicy>().unwrap_err();
        assert!(
            error.contains("round-robin, fifo, edf or dirigo"),
            "{error}"
        );
    }

    /// Every policy counts every window right, paced and unpaced, and a paced run times
    /// each window once per shard.
    #[test]
    fn every_policy_and_window_order_counts_the_windows_right() {
        let bids = Arc::new(cycled(&nexmark_bids(20_000), 60_000));
        let reference = peer_timely::reference_window_counts(&bids);
        let windows: std::collections::BTreeSet<u64> =
            reference.iter().map(|&(end, _, _)| end).collect();
        // Every policy with the default window (rows in any order), and edf with rows in
        // key order.
        let runs = [
            ("round-robin", false),
            ("fifo", false),
            ("edf", false),
            ("dirigo", false),
            ("edf", true),
        ];
        for (policy, sorted_windows) in runs {
            let config = PeerBenchConfig {
                policy: policy.parse().unwrap(),
                sorted_windows,
                ..PeerBenchConfig::default()
            };
            for pacing in [Pacing::Unpaced, Pacing::Rate(10e6)] {
                let paced = pacing != Pacing::Unpaced;
                let (run, _) = dirigo_run(bids.clone(), &config, pacing).unwrap();
                assert_eq!(run.windows_out, reference.len() as u64, "{policy}");
                assert_eq!(run.checksum, peer_timely::checksum(&reference), "{policy}");
                if paced {
                    assert!(!run.window_latencies.is_empty(), "{policy}");
                    for seen in &run.window_latencies {
                        assert!(seen.len() <= windows.len(), "{policy}: {seen:?}");
                    }
                } else {
                    assert!(run.window_latencies.is_empty(), "{policy}");
                }
            }
        }
    }
}
