//! `dirigo bench lessee` and `dirigo bench barrier`: a dual-mode actor under load, on two
//! shards.
//!
//! Both scenarios run a *source* actor and a mergeable *histogram* operator whose lessor
//! lives on shard 0 with it; the lessee, when there is one, runs on shard 1. The source
//! generates the load inside the runtime (no outside thread competes for the two cores):
//! each turn it emits the records that are due — all of them for a throughput run, one
//! every `interval_ns` for an open-loop latency run — then sends itself the next turn. Each record costs the operator a calibrated amount of CPU:
//! it draws pseudo-random values and counts them into its key's log2 histogram, so the
//! state is a per-key histogram table — mergeable by adding bucket counts, archived with
//! rkyv when a lessee hands it over.
//!
//! - `lessee`: about 2 µs per record; throughput of the lessor alone against lessor +
//!   one lessee, in alternating rounds on one runtime; `speedup` is the ratio of medians.
//!   After each leased round, the lessee is retired and a critical message checks that the
//!   consolidated histograms count every value of every record.
//! - `barrier`: light records (about 200 ns), one every 400 ns (open loop, whatever the
//!   runtime does), keep both shards busy; every `critical_every` records the source
//!   sends a critical message followed by a probe. A
//!   sample is the time from sending the critical message to the probe starting to run:
//!   block, sync the lessee (it finishes what it was forwarded), archive and hand over its
//!   partial state, merge, run the critical section, release the held probe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use dirigo_runtime::{
    clock, Actor, ActorId, Context, Envelope, Nanos, Runtime, SendError, Snapshot, SnapshotError,
};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::latency::{new_histogram, record, LatencySummary};

const APP: u16 = 0;
const SOURCE: u16 = 0;
const OPERATOR: u16 = 1;
/// Buckets of one key's histogram: log2 of a 64-bit value.
const BUCKETS: usize = 64;
/// Records a source emits per turn at most.
const BATCH: u64 = 32;
/// A source at most this far behind its schedule when it sends a critical message is on
/// schedule (a turn of the shard that runs it takes about this long).
const ON_SCHEDULE_NS: Nanos = 2_000;

#[derive(Clone, Debug)]
enum BenchMsg {
    /// To the source: start emitting.
    Start(Plan),
    /// The source's next turn.
    Turn,
    /// A record: `iterations` values drawn from `seed` into `key`'s histogram.
    Record { key: u32, seed: u64 },
    /// Critical: read the consolidated state (its total count goes to `Probes::total`).
    Check,
    /// Runs right after a critical message; carries when that was sent, and how far
    /// behind its schedule the source was then.
    Probe { sent: Nanos, behind: Nanos },
    /// Critical, after a plan's last record: by the rules of critical messages it runs
    /// after every record before it, wherever those ran, so it marks the end of the run.
    Finish,
}

#[derive(Clone, Debug)]
struct Plan {
    target: ActorId,
    records: u64,
    /// Nanoseconds between two records (0: all at once).
    interval_ns: u64,
    /// A critical message and a probe after every this many records (0: never).
    critical_every: u64,
}

/// What workers and sources share with the benchmark thread.
struct Shared {
    /// Messages run, per shard (single writer each).
    processed: Vec<CachePadded<AtomicU64>>,
    iterations: u64,
    keys: u32,
    probes: Mutex<Histogram<u64>>,
    /// The same samples, split by whether the source was on schedule when it sent the
    /// critical message (at most [`ON_SCHEDULE_NS`] behind) or catching up.
    on_schedule: Mutex<Histogram<u64>>,
    behind_schedule: Mutex<Histogram<u64>>,
    /// The total count a `Check` found, plus one (0: no check yet).
    checked_total: AtomicU64,
    /// Told when a `Finish` ran, so the benchmark thread can sleep through the run
    /// instead of polling on the cores it measures.
    finished: flume::Sender<()>,
}

impl Shared {
    fn bump(&self, shard: usize) {
        let count = &self.processed[shard];
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    fn ran(&self, shard: usize) -> u64 {
        self.processed[shard].load(Ordering::Acquire)
    }
}

/// Per-key log2 histograms of pseudo-random values.
#[derive(Clone, Default)]
struct Histograms {
    keys: Vec<[u64; BUCKETS]>,
}

type ArchivedForm = Vec<(u32, [u64; BUCKETS])>;

impl Histograms {
    fn with_keys(keys: u32) -> Self {
        Self {
            keys: vec![[0; BUCKETS]; keys as usize],
        }
    }

    /// The CPU-heavy part of a record.
    #[inline(never)]
    fn draw(&mut self, key: u32, seed: u64, iterations: u64) {
        let histogram = &mut self.keys[key as usize];
        let mut x = seed | 1;
        for _ in 0..iterations {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            histogram[63 - (x | 1).leading_zeros() as usize] += 1;
        }
    }

    fn total(&self) -> u64 {
        self.keys.iter().flatten().sum()
    }
}

struct Worker {
    shared: Arc<Shared>,
    state: Histograms,
}

impl Actor<BenchMsg> for Worker {
    fn receive(&mut self, ctx: &mut Context<'_, BenchMsg>, message: Envelope<BenchMsg>) {
        match message.payload {
            BenchMsg::Record { key, seed } => {
                self.state.draw(key, seed, self.shared.iterations);
            }
            BenchMsg::Probe { sent, behind } => {
                let took = clock::now().saturating_sub(sent);
                record(&mut self.shared.probes.lock().expect("not poisoned"), took);
                let split = if behind <= ON_SCHEDULE_NS {
                    &self.shared.on_schedule
                } else {
                    &self.shared.behind_schedule
                };
                record(&mut split.lock().expect("not poisoned"), took);
            }
            _ => {}
        }
        self.shared.bump(ctx.shard());
    }

    fn critical(&mut self, ctx: &mut Context<'_, BenchMsg>, messages: Vec<Envelope<BenchMsg>>) {
        for message in messages {
            self.shared.bump(ctx.shard());
            match message.payload {
                BenchMsg::Finish => {
                    let _ = self.shared.finished.send(());
                }
                _ => self
                    .shared
                    .checked_total
                    .store(self.state.total() + 1, Ordering::Release),
            }
        }
    }

    fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
        let partial: ArchivedForm = self
            .state
            .keys
            .iter_mut()
            .enumerate()
            .filter(|(_, histogram)| histogram.iter().any(|&count| count > 0))
            .map(|(key, histogram)| (key as u32, std::mem::replace(histogram, [0; BUCKETS])))
            .collect();
        Snapshot::of(&partial).map(Some)
    }

    fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
        for entry in partial.archived::<ArchivedForm>()?.iter() {
            let histogram = &mut self.state.keys[entry.0.to_native() as usize];
            for (bucket, count) in histogram.iter_mut().zip(entry.1.iter()) {
                *bucket += count.to_native();
            }
        }
        Ok(())
    }
}

struct Source {
    shared: Arc<Shared>,
    plan: Option<Plan>,
    started_at: Nanos,
    records: u64,
    since_critical: u64,
    seed: u64,
}

impl Source {
    fn send(ctx: &mut Context<'_, BenchMsg>, envelope: Envelope<BenchMsg>) {
        if let Err(SendError::UnknownOperator(_)) = ctx.send_envelope(envelope) {
            unreachable!("the benchmark registers both operators");
        }
    }
}

impl Actor<BenchMsg> for Source {
    fn receive(&mut self, ctx: &mut Context<'_, BenchMsg>, message: Envelope<BenchMsg>) {
        match message.payload {
            BenchMsg::Start(plan) => {
                self.plan = Some(plan);
                self.started_at = clock::now();
                self.records = 0;
                self.since_critical = 0;
            }
            BenchMsg::Turn => {}
            _ => return,
        }
        let Some(plan) = &self.plan else { return };
        let target = plan.target;
        if plan.critical_every > 0 && self.since_critical >= plan.critical_every {
            // First in the turn, so that nothing this turn sends waits ahead of it.
            self.since_critical = 0;
            let sent = clock::now();
            // When the next record was due: later than that, the source is catching up
            // (after the machine stopped it), and this barrier waits behind the backlog.
            let next_due = self
                .started_at
                .saturating_add(self.records.saturating_mul(plan.interval_ns));
            let behind = sent.saturating_sub(next_due);
            Self::send(ctx, Envelope::critical(target, BenchMsg::Check));
            Self::send(
                ctx,
                Envelope::user(target, BenchMsg::Probe { sent, behind }),
            );
        }
        let due = match plan.interval_ns {
            0 => plan.records,
            interval => {
                (clock::now().saturating_sub(self.started_at) / interval + 1).min(plan.records)
            }
        };
        let batch = BATCH.min(due.saturating_sub(self.records));
        for _ in 0..batch {
            self.seed = self
                .seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (self.seed >> 40) as u32 % self.shared.keys;
            Self::send(
                ctx,
                Envelope::user(
                    target,
                    BenchMsg::Record {
                        key,
                        seed: self.seed,
                    },
                ),
            );
            self.records += 1;
            self.since_critical += 1;
        }
        if self.records < plan.records {
            let me = ctx.me();
            Self::send(ctx, Envelope::user(me, BenchMsg::Turn));
        } else {
            Self::send(ctx, Envelope::critical(target, BenchMsg::Finish));
            self.plan = None;
        }
    }
}

/// A two-shard runtime with the source and the operator registered, and partitions of
/// each whose home is shard 0.
struct Bench {
    runtime: Runtime<BenchMsg>,
    shared: Arc<Shared>,
    finished: flume::Receiver<()>,
    next_partition: u32,
}

impl Bench {
    fn start(iterations: u64, keys: u32) -> Result<Self, String> {
        let (finished_tx, finished) = flume::unbounded();
        let shared = Arc::new(Shared {
            processed: (0..2)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            iterations,
            keys,
            probes: Mutex::new(new_histogram()),
            on_schedule: Mutex::new(new_histogram()),
            behind_schedule: Mutex::new(new_histogram()),
            checked_total: AtomicU64::new(0),
            finished: finished_tx,
        });
        let for_source = shared.clone();
        let for_worker = shared.clone();
        let runtime = Runtime::builder()
            .shards(2)
            .operator(APP, SOURCE, move |_, _| {
                Box::new(Source {
                    shared: for_source.clone(),
                    plan: None,
                    started_at: 0,
                    records: 0,
                    since_critical: 0,
                    seed: 0x9E37_79B9_7F4A_7C15,
                }) as Box<dyn Actor<BenchMsg>>
            })
            .mergeable_operator(APP, OPERATOR, move |_, _| {
                Box::new(Worker {
                    shared: for_worker.clone(),
                    state: Histograms::with_keys(keys),
                }) as Box<dyn Actor<BenchMsg>>
            })
            .build()
            .map_err(|error| error.to_string())?;
        Ok(Self {
            runtime,
            shared,
            finished,
            next_partition: 0,
        })
    }

    /// A fresh actor of `operator` whose home is shard 0.
    fn actor_on_shard_0(&mut self, operator: u16) -> ActorId {
        loop {
            let actor = ActorId::new(APP, operator, self.next_partition);
            self.next_partition += 1;
            if self.runtime.home_shard(actor) == 0 {
                return actor;
            }
        }
    }

    /// A fresh operator actor on shard 0 with a lessee on shard 1.
    fn leased_actor(&mut self) -> Result<ActorId, String> {
        let actor = self.actor_on_shard_0(OPERATOR);
        self.runtime
            .ingress()
            .add_lessee(actor, 1)
            .map_err(|error| error.to_string())?;
        Ok(actor)
    }

    /// Runs `plan` from a fresh source to completion; returns the elapsed time.
    fn run(&mut self, plan: Plan) -> Result<Duration, String> {
        let source = self.actor_on_shard_0(SOURCE);
        let started = Instant::now();
        self.runtime
            .ingress()
            .send(Envelope::user(source, BenchMsg::Start(plan)))
            .map_err(|error| error.to_string())?;
        if self.finished.recv_timeout(Duration::from_secs(60)).is_err() {
            return Err(format!(
                "the benchmark run did not finish within a minute; shard counters: {:?}",
                self.runtime.stats()
            ));
        }
        Ok(started.elapsed())
    }

    /// Sends a `Check` to `actor` and returns the consolidated total it reports.
    fn check(&self, actor: ActorId) -> Result<u64, String> {
        self.shared.checked_total.store(0, Ordering::Release);
        self.runtime
            .ingress()
            .send(Envelope::critical(actor, BenchMsg::Check))
            .map_err(|error| error.to_string())?;
        let started = Instant::now();
        loop {
            let total = self.shared.checked_total.load(Ordering::Acquire);
            if total > 0 {
                return Ok(total - 1);
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err("the consistency check never ran".into());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// How many draw iterations take about `target_ns` on this machine, and what one record
/// then costs. The fastest of several trials: a trial that another thread interrupted
/// only looks slower.
fn calibrate(target_ns: u64) -> (u64, f64) {
    let mut state = Histograms::with_keys(1);
    let trial_iterations = 1u64 << 20;
    let mut per_iteration = f64::MAX;
    for seed in 0..7 {
        let started = Instant::now();
        state.draw(0, seed, trial_iterations);
        per_iteration =
            per_iteration.min(started.elapsed().as_nanos() as f64 / trial_iterations as f64);
    }
    std::hint::black_box(state.total());
    let iterations = ((target_ns as f64 / per_iteration).round() as u64).clamp(1, 1 << 24);
    (iterations, iterations as f64 * per_iteration)
}

/// Settings of `dirigo bench lessee`.
#[derive(Clone, Debug)]
pub struct LesseeBenchConfig {
    /// Records per round.
    pub records: u64,
    /// CPU per record, in nanoseconds (calibrated at start).
    pub work_ns: u64,
    /// Alternating rounds of each configuration.
    pub rounds: usize,
    /// Keys of the histogram table.
    pub keys: u32,
}

impl Default for LesseeBenchConfig {
    fn default() -> Self {
        Self {
            records: 200_000,
            work_ns: 2_000,
            rounds: 5,
            keys: 64,
        }
    }
}

/// What `dirigo bench lessee` measured.
#[derive(Clone, Debug, Serialize)]
pub struct LesseeReport {
    /// Lessor + one lessee against the lessor alone: ratio of median throughputs.
    pub speedup: f64,
    /// Median records per second, lessor alone.
    pub alone_records_per_s: f64,
    /// Median records per second, lessor + one lessee.
    pub leased_records_per_s: f64,
    /// Every round, in order: `[alone, leased]` records per second.
    pub rounds: Vec<[f64; 2]>,
    /// Measured CPU per record before the run, in nanoseconds.
    pub work_ns_per_record: f64,
    /// Records per round.
    pub records: u64,
    /// Share of the leased rounds' records that ran on the lessee.
    pub lessee_share: f64,
}

impl LesseeReport {
    /// A table for the terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "lessee: {} records per round, {:.0} ns of work each, 2 shards\n",
            self.records, self.work_ns_per_record
        ));
        out.push_str(&format!(
            "  {:<28} {:>14}\n",
            "configuration", "records/s (p50)"
        ));
        out.push_str(&format!(
            "  {:<28} {:>14.0}\n",
            "lessor alone", self.alone_records_per_s
        ));
        out.push_str(&format!(
            "  {:<28} {:>14.0}\n",
            "lessor + 1 lessee", self.leased_records_per_s
        ));
        out.push_str(&format!(
            "  speedup {:.2} (target >= 1.7); the lessee ran {:.0}% of the records\n",
            self.speedup,
            self.lessee_share * 100.0
        ));
        out
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs `dirigo bench lessee`.
pub fn lessee(config: &LesseeBenchConfig) -> Result<LesseeReport, String> {
    let (iterations, work_ns) = calibrate(config.work_ns);
    let mut bench = Bench::start(iterations, config.keys.max(1))?;
    let mut rounds = Vec::new();
    let mut on_lessee = 0u64;
    let mut leased_records = 0u64;
    for _ in 0..config.rounds.max(1) {
        let alone_actor = bench.actor_on_shard_0(OPERATOR);
        let alone = bench.run(Plan {
            target: alone_actor,
            records: config.records,
            interval_ns: 0,
            critical_every: 0,
        })?;
        let actor = bench.leased_actor()?;
        let lessee_before = bench.shared.processed[1].load(Ordering::Acquire);
        let leased = bench.run(Plan {
            target: actor,
            records: config.records,
            interval_ns: 0,
            critical_every: 0,
        })?;
        on_lessee += bench.shared.processed[1].load(Ordering::Acquire) - lessee_before;
        leased_records += config.records;
        bench
            .runtime
            .ingress()
            .remove_lessee(actor, 1)
            .map_err(|error| error.to_string())?;
        let total = bench.check(actor)?;
        let expected = config.records * iterations;
        if total != expected {
            return Err(format!(
                "consolidated state counts {total} values, expected {expected}: a partial state was lost"
            ));
        }
        let rate = |elapsed: Duration| config.records as f64 / elapsed.as_secs_f64();
        rounds.push([rate(alone), rate(leased)]);
    }
    bench.runtime.shutdown();
    let alone = median(&mut rounds.iter().map(|r| r[0]).collect::<Vec<_>>());
    let leased = median(&mut rounds.iter().map(|r| r[1]).collect::<Vec<_>>());
    Ok(LesseeReport {
        speedup: leased / alone,
        alone_records_per_s: alone,
        leased_records_per_s: leased,
        rounds,
        work_ns_per_record: work_ns,
        records: config.records,
        lessee_share: on_lessee as f64 / leased_records.max(1) as f64,
    })
}

/// Settings of `dirigo bench barrier`.
#[derive(Clone, Debug)]
pub struct BarrierBenchConfig {
    /// Barriers to measure.
    pub barriers: u64,
    /// Records between two critical messages.
    pub critical_every: u64,
    /// CPU per record, in nanoseconds (calibrated at start).
    pub work_ns: u64,
    /// Nanoseconds between two records (open loop).
    pub interval_ns: u64,
    /// Keys of the histogram table (the state a lessee hands over).
    pub keys: u32,
}

impl Default for BarrierBenchConfig {
    fn default() -> Self {
        Self {
            barriers: 20_000,
            critical_every: 64,
            work_ns: 200,
            interval_ns: 400,
            keys: 4,
        }
    }
}

/// What `dirigo bench barrier` measured.
#[derive(Clone, Debug, Serialize)]
pub struct BarrierReport {
    /// From sending a critical message to the first message after it running: block,
    /// collect one lessee's partial state, merge, run the critical section, resume.
    pub barrier_ns: LatencySummary,
    /// Barriers measured.
    pub barriers: u64,
    /// The barriers whose critical message the source sent on schedule (at most 2 µs
    /// behind it): what the protocol itself costs on busy shards.
    pub on_schedule_ns: LatencySummary,
    /// The others: sent while the open-loop source was catching up after the machine
    /// stopped it, so each waits for the backlog of records due before it (every record
    /// sent before a critical message runs before it). With records of 200 ns due every
    /// 400 ns, a stop of 50 µs leaves 25 µs of work ahead of the next barrier, at least
    /// 12.5 µs on two shards however fast the runtime is.
    pub behind_schedule_ns: LatencySummary,
    /// Share of the barriers sent behind schedule (all of them in a closed-loop run,
    /// `interval_ns` 1, whose source is always behind).
    pub behind_schedule_share: f64,
    /// Records between two critical messages.
    pub critical_every: u64,
    /// Measured CPU per record, in nanoseconds.
    pub work_ns_per_record: f64,
    /// Nanoseconds between two records (open loop).
    pub interval_ns: u64,
    /// Records per second the measured run got through, from its start to its last
    /// record run: below `1e9 / interval_ns` when the pipeline could not keep up with the
    /// offered load (a closed-loop run, `interval_ns` 1, measures its capacity).
    pub records_per_s: f64,
    /// The machine's own floor at the barriers' cadence: an atomic round trip between
    /// the two shards' CPUs, one every `critical_every × interval_ns`, measured for a
    /// second just before the run (see [`crate::noise::paced_round_trips`]). A barrier
    /// needs at least one such round trip (lessor to lessee and back), so its
    /// percentiles cannot beat these on this machine.
    pub floor_ns: LatencySummary,
    /// Mean archived partial state handed over per sync, in bytes.
    pub mean_partial_bytes: f64,
    /// Mean time the lessor was blocked per sync (its own metric), in nanoseconds.
    pub mean_blocked_ns: f64,
    /// Mean time from a sync to the lessee's partial state merged, in nanoseconds.
    pub mean_consolidation_ns: f64,
    /// Mean time of one merge, in nanoseconds.
    pub mean_merge_ns: f64,
    /// Times each shard parked during the whole run (a parked lessee must be woken
    /// before it can hand over its state).
    pub parks: Vec<u64>,
    /// Messages of the measured operator each shard ran (lessor, lessee).
    pub operator_messages: Vec<u64>,
    /// Time the hypervisor took from each of the two CPUs during the measured run, in
    /// nanoseconds (in steps of the kernel's clock tick, 10 ms; empty where unknown). A
    /// run with a long tail and stolen time was stalled by the machine, not the runtime.
    pub stolen_ns: Vec<u64>,
    /// The CPUs the two shards ran on (`None`: unpinned).
    #[serde(skip)]
    pub cpus: Vec<Option<usize>>,
    /// How often the machine stopped a spinning thread on each of the two CPUs, measured
    /// just before: a barrier that overlaps such a stop takes at least its length.
    pub machine_noise: Vec<crate::noise::CpuNoise>,
}

impl BarrierReport {
    /// A table for the terminal.
    pub fn table(&self) -> String {
        let b = &self.barrier_ns;
        format!(
            "barrier: {} critical messages, one every {} records of {:.0} ns, a record every {} ns, 1 lessee\n  \
             {:<12} {:>8} {:>8} {:>8} {:>10}\n  {:<12} {:>8} {:>8} {:>8} {:>10.0}\n  \
             {:<12} {:>8} {:>8} {:>8} {:>10.0}   (critical message sent on schedule)\n  \
             {:<12} {:>8} {:>8} {:>8} {:>10.0}   (sent catching up after a stall: {:.1}% of them)\n  \
             {:<12} {:>8} {:>8} {:>8} {:>10.0}   (an atomic round trip between the two CPUs, one per barrier interval)\n  \
             {:.2} M records/s got through (offered {:.2} M/s)\n  \
             partial state {:.0} bytes per sync; per sync (means): blocked {:.0} ns, state collected {:.0} ns, merge {:.0} ns\n  \
             parks per shard: {:?}; operator messages per shard {:?}; target p99 <= 10000 ns\n{}{}",
            self.barriers,
            self.critical_every,
            self.work_ns_per_record,
            self.interval_ns,
            "ns",
            "p50",
            "p99",
            "p99.9",
            "mean",
            "barrier",
            b.p50,
            b.p99,
            b.p999,
            b.mean,
            "  on time",
            self.on_schedule_ns.p50,
            self.on_schedule_ns.p99,
            self.on_schedule_ns.p999,
            self.on_schedule_ns.mean,
            "  behind",
            self.behind_schedule_ns.p50,
            self.behind_schedule_ns.p99,
            self.behind_schedule_ns.p999,
            self.behind_schedule_ns.mean,
            self.behind_schedule_share * 100.0,
            "floor",
            self.floor_ns.p50,
            self.floor_ns.p99,
            self.floor_ns.p999,
            self.floor_ns.mean,
            self.records_per_s / 1e6,
            1e3 / self.interval_ns.max(1) as f64,
            self.mean_partial_bytes,
            self.mean_blocked_ns,
            self.mean_consolidation_ns,
            self.mean_merge_ns,
            self.parks,
            self.operator_messages,
            crate::noise::describe(&self.machine_noise),
            crate::noise::describe_stolen(&self.stolen_ns, &self.cpus),
        )
    }
}

/// Runs `dirigo bench barrier`.
pub fn barrier(config: &BarrierBenchConfig) -> Result<BarrierReport, String> {
    let available = dirigo_runtime::placement::available_cpus();
    let cpus: Vec<Option<usize>> = if available.len() >= 2 {
        vec![Some(available[0]), Some(available[1])]
    } else {
        vec![None, None]
    };
    let machine_noise = crate::noise::measure(&cpus, Duration::from_millis(500));
    let critical_every = config.critical_every.max(1);
    let floor = crate::noise::paced_round_trips(
        [cpus[0], cpus[1]],
        critical_every.saturating_mul(config.interval_ns),
        Duration::from_secs(1),
    );
    let (iterations, work_ns) = calibrate(config.work_ns);
    let mut bench = Bench::start(iterations, config.keys.max(1))?;
    let actor = bench.leased_actor()?;
    // A short warm-up (the lessee starts, caches fill), then the measured run.
    bench.run(Plan {
        target: actor,
        records: critical_every * 100,
        interval_ns: config.interval_ns,
        critical_every,
    })?;
    for histogram in [
        &bench.shared.probes,
        &bench.shared.on_schedule,
        &bench.shared.behind_schedule,
    ] {
        *histogram.lock().expect("not poisoned") = new_histogram();
    }
    let ran_before: Vec<u64> = (0..2).map(|shard| bench.shared.ran(shard)).collect();
    let stolen_before = crate::noise::stolen_ns();
    let elapsed = bench.run(Plan {
        target: actor,
        records: critical_every * config.barriers.max(1),
        interval_ns: config.interval_ns,
        critical_every,
    })?;
    let stolen_ns = crate::noise::stolen_between(&stolen_before, &crate::noise::stolen_ns(), &cpus);
    let operator_messages = (0..2)
        .map(|shard| bench.shared.ran(shard) - ran_before[shard])
        .collect();
    let probes = bench.shared.probes.lock().expect("not poisoned").clone();
    let on_schedule = bench
        .shared
        .on_schedule
        .lock()
        .expect("not poisoned")
        .clone();
    let behind_schedule = bench
        .shared
        .behind_schedule
        .lock()
        .expect("not poisoned")
        .clone();
    let report = bench.runtime.shutdown();
    let metrics = report
        .shards
        .iter()
        .flat_map(|shard| shard.actors.iter())
        .find(|metrics| metrics.actor == actor)
        .cloned()
        .unwrap_or_default();
    let syncs = metrics.syncs.max(1) as f64;
    Ok(BarrierReport {
        barrier_ns: LatencySummary::of(&probes),
        barriers: probes.len(),
        on_schedule_ns: LatencySummary::of(&on_schedule),
        behind_schedule_ns: LatencySummary::of(&behind_schedule),
        behind_schedule_share: behind_schedule.len() as f64 / probes.len().max(1) as f64,
        critical_every,
        work_ns_per_record: work_ns,
        interval_ns: config.interval_ns,
        floor_ns: LatencySummary::of(&floor),
        records_per_s: (critical_every * config.barriers.max(1)) as f64
            / elapsed.as_secs_f64().max(1e-9),
        mean_partial_bytes: metrics.consolidated_bytes as f64
            / metrics.consolidations.max(1) as f64,
        mean_blocked_ns: metrics.blocked_ns as f64 / syncs,
        mean_consolidation_ns: metrics.consolidation_ns as f64 / syncs,
        mean_merge_ns: metrics.merge_ns as f64 / metrics.consolidations.max(1) as f64,
        parks: report.shards.iter().map(|shard| shard.parks).collect(),
        operator_messages,
        stolen_ns,
        cpus,
        machine_noise,
    })
}
