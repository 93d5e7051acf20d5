//! `dirigo bench scale-step`: how fast the `dirigo` policy reacts to a load step.
//!
//! A mergeable operator (a counter whose handler busies its shard for `cost_ns`) has its
//! lessor on shard 0; a source actor on shard 1 sends it records open loop, each stamped
//! with its intended send time: at `low` × one shard's capacity for `before`, then at
//! `high` × capacity for `after`. The app has an SLO, the `dirigo` policy decides, and
//! nothing is scaled by hand. The report gives the time from the step to the first record
//! that ran on a lessee, and latency percentiles (intended send time to handler end, so
//! queueing behind a stall is counted) before the step, during the first `during` after
//! it, and after that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dirigo_runtime::scheduling::Dirigo;
use dirigo_runtime::{
    clock, Actor, ActorId, Context, Envelope, Nanos, Runtime, SchedContext, Snapshot, SnapshotError,
};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::latency::{new_histogram, record, LatencySummary};

const APP: u16 = 0;
const SOURCE: u16 = 0;
const OPERATOR: u16 = 1;
/// Records a source sends per turn at most (it catches up after a stall in steps).
const BATCH: u64 = 64;

#[derive(Clone, Debug)]
enum StepMsg {
    Start(StepPlan),
    Turn,
    Record,
    /// Critical, after the last record: it runs after all of them.
    Finish,
}

#[derive(Clone, Copy, Debug)]
struct StepPlan {
    target: ActorId,
    started: Nanos,
    step_at: Nanos,
    end_at: Nanos,
    low_interval_ns: u64,
    high_interval_ns: u64,
}

impl StepPlan {
    /// The intended send time of record `n`.
    fn intended(&self, n: u64) -> Nanos {
        let before = (self.step_at - self.started) / self.low_interval_ns;
        if n < before {
            self.started + n * self.low_interval_ns
        } else {
            self.step_at + (n - before) * self.high_interval_ns
        }
    }
}

struct Observed {
    step_at: AtomicU64,
    during_until: AtomicU64,
    home: usize,
    cost_ns: u64,
    /// Latency histograms before, during and after the step.
    phases: Mutex<[Histogram<u64>; 3]>,
    first_on_lessee: AtomicU64,
    on_lessee: AtomicU64,
    records: AtomicU64,
    finished: flume::Sender<u64>,
}

struct Counter {
    count: u64,
    observed: Arc<Observed>,
}

impl Actor<StepMsg> for Counter {
    fn receive(&mut self, ctx: &mut Context<'_, StepMsg>, message: Envelope<StepMsg>) {
        if !matches!(message.payload, StepMsg::Record) {
            return;
        }
        let until = clock::now() + self.observed.cost_ns;
        while clock::now() < until {
            std::hint::spin_loop();
        }
        self.count += 1;
        let observed = &*self.observed;
        let now = clock::now();
        let intended = message.ctx.ingress;
        let step_at = observed.step_at.load(Ordering::Relaxed);
        let phase = if intended < step_at {
            0
        } else if intended < observed.during_until.load(Ordering::Relaxed) {
            1
        } else {
            2
        };
        record(
            &mut observed.phases.lock().expect("not poisoned")[phase],
            now.saturating_sub(intended),
        );
        observed.records.fetch_add(1, Ordering::Relaxed);
        if ctx.shard() != observed.home {
            observed.on_lessee.fetch_add(1, Ordering::Relaxed);
            if intended >= step_at {
                observed
                    .first_on_lessee
                    .fetch_min(now.saturating_sub(step_at), Ordering::Relaxed);
            }
        }
    }

    fn critical(&mut self, _ctx: &mut Context<'_, StepMsg>, messages: Vec<Envelope<StepMsg>>) {
        for message in messages {
            if matches!(message.payload, StepMsg::Finish) {
                let _ = self.observed.finished.send(self.count);
            }
        }
    }

    fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
        Snapshot::of(&std::mem::take(&mut self.count)).map(Some)
    }

    fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
        self.count += partial.archived::<u64>()?.to_native();
        Ok(())
    }
}

struct Source {
    plan: Option<StepPlan>,
    sent: u64,
}

impl Actor<StepMsg> for Source {
    fn receive(&mut self, ctx: &mut Context<'_, StepMsg>, message: Envelope<StepMsg>) {
        match message.payload {
            StepMsg::Start(plan) => {
                self.plan = Some(plan);
                self.sent = 0;
            }
            StepMsg::Turn => {}
            _ => return,
        }
        let Some(plan) = self.plan else { return };
        let now = clock::now();
        for _ in 0..BATCH {
            let intended = plan.intended(self.sent);
            if intended > now || intended >= plan.end_at {
                break;
            }
            let mut envelope = Envelope::user(plan.target, StepMsg::Record);
            envelope.ctx = SchedContext::at(intended);
            let _ = ctx.send_envelope(envelope);
            self.sent += 1;
        }
        if plan.intended(self.sent) >= plan.end_at {
            let _ = ctx.send_envelope(Envelope::critical(plan.target, StepMsg::Finish));
            self.plan = None;
        } else {
            // The next turn fires when the next record is due; a fresh context, since one
            // inherited from the start would carry the earliest deadline on the shard.
            let me = ctx.me();
            let _ = ctx.send_at(plan.intended(self.sent), Envelope::user(me, StepMsg::Turn));
        }
    }
}

/// Settings of `dirigo bench scale-step`.
#[derive(Clone, Debug)]
pub struct ScaleStepConfig {
    /// CPU per record, in nanoseconds: one shard's capacity is `1e9 / cost_ns` records/s.
    pub cost_ns: u64,
    /// Load before the step, as a share of one shard's capacity.
    pub low: f64,
    /// Load after the step.
    pub high: f64,
    /// How long the low load runs.
    pub before: Duration,
    /// How long the high load runs.
    pub after: Duration,
    /// The window right after the step reported as "during".
    pub during: Duration,
    /// The app's SLO.
    pub slo: Duration,
}

impl Default for ScaleStepConfig {
    fn default() -> Self {
        Self {
            cost_ns: 20_000,
            low: 0.3,
            high: 1.5,
            before: Duration::from_secs(1),
            after: Duration::from_secs(2),
            during: Duration::from_millis(100),
            slo: Duration::from_millis(1),
        }
    }
}

/// What `dirigo bench scale-step` measured.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleStepReport {
    /// From the step to the first record run on a lessee (`None`: no lessee ran one).
    pub first_lessee_after_step_ns: Option<u64>,
    /// Latency (intended send time to handler end) before the step.
    pub before: LatencySummary,
    /// During the first `during_ms` after the step.
    pub during: LatencySummary,
    /// After that.
    pub after: LatencySummary,
    /// p99 of each phase, in nanoseconds (the same figures as above, side by side).
    pub p99_before_ns: u64,
    /// p99 during.
    pub p99_during_ns: u64,
    /// p99 after.
    pub p99_after_ns: u64,
    /// Milliseconds reported as "during".
    pub during_ms: u64,
    /// Records per second before and after the step.
    pub low_records_per_s: f64,
    /// Records per second after the step.
    pub high_records_per_s: f64,
    /// CPU per record, in nanoseconds.
    pub cost_ns: u64,
    /// The SLO, in nanoseconds.
    pub slo_ns: u64,
    /// Records handled, and the count the consolidated state reports (equal, or the run
    /// lost something).
    pub records: u64,
    /// Share of records that ran on a lessee.
    pub lessee_share: f64,
    /// `(ms since start, lessees)` at every change.
    pub lessee_timeline: Vec<(f64, u32)>,
}

impl ScaleStepReport {
    /// A table for the terminal.
    pub fn table(&self) -> String {
        let row = |name: &str, s: &LatencySummary| {
            format!(
                "  {:<10} {:>10} {:>10} {:>10} {:>10.0}\n",
                name, s.p50, s.p99, s.p999, s.mean
            )
        };
        let mut out = format!(
            "scale-step: {:.0} -> {:.0} records/s ({} ns each; one shard: {:.0}/s), SLO {} us, policy dirigo\n",
            self.low_records_per_s,
            self.high_records_per_s,
            self.cost_ns,
            1e9 / self.cost_ns as f64,
            self.slo_ns / 1000
        );
        out.push_str(&format!(
            "  {:<10} {:>10} {:>10} {:>10} {:>10}\n",
            "latency ns", "p50", "p99", "p99.9", "mean"
        ));
        out.push_str(&row("before", &self.before));
        out.push_str(&row(&format!("during {}ms", self.during_ms), &self.during));
        out.push_str(&row("after", &self.after));
        out.push_str(&match self.first_lessee_after_step_ns {
            Some(ns) => format!(
                "  first record on a lessee {:.0} us after the step (target <= 1000 us); lessees ran {:.0}% of the records\n",
                ns as f64 / 1000.0,
                self.lessee_share * 100.0
            ),
            None => "  no record ran on a lessee\n".to_string(),
        });
        out.push_str(&format!(
            "  lessees over time (ms, count): {:?}\n",
            self.lessee_timeline
        ));
        out
    }
}

/// Runs `dirigo bench scale-step`.
pub fn scale_step(config: &ScaleStepConfig) -> Result<ScaleStepReport, String> {
    let cost_ns = config.cost_ns.max(100);
    let capacity = 1e9 / cost_ns as f64;
    let low_interval_ns = (1e9 / (capacity * config.low.max(0.01))) as u64;
    let high_interval_ns = (1e9 / (capacity * config.high.max(0.01))).max(1.0) as u64;
    let (finished_tx, finished) = flume::unbounded();
    // The lessor's home is shard 0 (chosen below); the observed state knows it.
    let observed = Arc::new(Observed {
        step_at: AtomicU64::new(u64::MAX),
        during_until: AtomicU64::new(u64::MAX),
        home: 0,
        cost_ns,
        phases: Mutex::new([new_histogram(), new_histogram(), new_histogram()]),
        first_on_lessee: AtomicU64::new(u64::MAX),
        on_lessee: AtomicU64::new(0),
        records: AtomicU64::new(0),
        finished: finished_tx,
    });
    let for_counter = observed.clone();
    let runtime = Runtime::<StepMsg>::builder()
        .shards(2)
        // The source's app has no SLO, but it is the load harness, not a tenant to
        // protect: the step is met by the operator's own deadlines.
        .policy(Dirigo {
            best_effort_spread_above: None,
            ..Dirigo::default()
        })
        .app_slo(APP, config.slo)
        .operator(APP, SOURCE, |_, _| {
            Box::new(Source {
                plan: None,
                sent: 0,
            }) as Box<dyn Actor<StepMsg>>
        })
        .mergeable_operator(APP, OPERATOR, move |_, _| {
            Box::new(Counter {
                count: 0,
                observed: for_counter.clone(),
            }) as Box<dyn Actor<StepMsg>>
        })
        .build()
        .map_err(|error| error.to_string())?;
    let on_shard = |operator: u16, shard: usize| {
        (0..)
            .map(|partition| ActorId::new(APP, operator, partition))
            .find(|actor| runtime.home_shard(*actor) == shard)
            .expect("some partition lives on every shard")
    };
    let target = on_shard(OPERATOR, 0);
    let source = on_shard(SOURCE, 1);
    let started = clock::now() + 10_000_000;
    let step_at = started + config.before.as_nanos() as u64;
    observed.step_at.store(step_at, Ordering::Relaxed);
    observed
        .during_until
        .store(step_at + config.during.as_nanos() as u64, Ordering::Relaxed);
    let plan = StepPlan {
        target,
        started,
        step_at,
        end_at: step_at + config.after.as_nanos() as u64,
        low_interval_ns,
        high_interval_ns,
    };
    let wall = Instant::now();
    runtime
        .ingress()
        .send(Envelope::user(source, StepMsg::Start(plan)))
        .map_err(|error| error.to_string())?;
    let limit = config.before + config.after + Duration::from_secs(60);
    let counted = finished
        .recv_timeout(limit)
        .map_err(|_| format!("the run did not finish within {:?}", wall.elapsed()))?;
    let metrics = runtime
        .actor_metrics()
        .into_iter()
        .find(|metrics| metrics.actor == target)
        .unwrap_or_default();
    runtime.shutdown();
    let records = observed.records.load(Ordering::Relaxed);
    if counted != records {
        return Err(format!(
            "the consolidated count is {counted} but {records} records ran: state was lost"
        ));
    }
    let phases = observed.phases.lock().expect("not poisoned").clone();
    let [before, during, after] = phases.map(|histogram| LatencySummary::of(&histogram));
    let first = observed.first_on_lessee.load(Ordering::Relaxed);
    Ok(ScaleStepReport {
        first_lessee_after_step_ns: (first != u64::MAX).then_some(first),
        p99_before_ns: before.p99,
        p99_during_ns: during.p99,
        p99_after_ns: after.p99,
        before,
        during,
        after,
        during_ms: config.during.as_millis() as u64,
        low_records_per_s: 1e9 / low_interval_ns as f64,
        high_records_per_s: 1e9 / high_interval_ns as f64,
        cost_ns,
        slo_ns: config.slo.as_nanos() as u64,
        records,
        lessee_share: observed.on_lessee.load(Ordering::Relaxed) as f64 / records.max(1) as f64,
        lessee_timeline: metrics
            .lessee_timeline
            .iter()
            .map(|(at, lessees)| (at.saturating_sub(started) as f64 / 1e6, *lessees))
            .collect(),
    })
}
