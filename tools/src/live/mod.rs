//! Watching a run while it goes on: the state the run loop publishes at each sample
//! ([`Board`]), each app's latency watch ([`latency`]), and the HTTP listener
//! ([`server`]) that serves it as Prometheus metrics ([`metrics`], `/metrics`), a JSON
//! status (`/api/status`) and a self-contained live page (`/`).
//!
//! Nothing here runs on a shard. Shard counters are read at each scrape with plain loads
//! of their single-writer atomics ([`dirigo_runtime::StatsReader`]), app counters the
//! same way ([`dirigo_operators::dataflow::App::flow`]); latency and lessees are what the
//! run loop published at its last sample, under a lock no shard ever takes.

pub mod latency;
pub mod metrics;
pub mod server;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use dirigo_operators::checkpoint::CheckpointWatch;
use dirigo_operators::dataflow::{App, Msg};
use dirigo_runtime::StatsReader;
use serde::Serialize;

pub use latency::{Buckets, LatencyPoint, LatencyWatch};

/// How many seconds of history the live page gets: 5 minutes.
pub const HISTORY_SECONDS: usize = 300;

/// What the HTTP thread reads: live counters, and the run loop's last published state.
pub struct Board {
    /// The shards' live counters.
    pub shards: StatsReader<Msg>,
    /// The apps, in order: name, SLO, and the handle whose counters are read live.
    pub apps: Vec<BoardApp>,
    /// When the sources started.
    pub started: SystemTime,
    /// How long the sources are to run.
    pub planned: Duration,
    /// The checkpoints' figures, when the run takes checkpoints.
    pub checkpoints: Option<BoardCheckpoints>,
    published: Mutex<Published>,
}

/// The checkpoints as the board knows them.
pub struct BoardCheckpoints {
    /// Their figures, read at each scrape.
    pub watch: CheckpointWatch,
    /// How many times this run restored from the last complete checkpoint after an app
    /// failed.
    pub restores: u32,
}

/// One app as the board knows it.
pub struct BoardApp {
    /// Its name.
    pub name: String,
    /// Its operators' names, in operator order.
    pub operators: Vec<String>,
    /// Its SLO.
    pub slo: Option<Duration>,
    /// Its dataflow (counters read live).
    pub app: App,
}

/// What the run loop publishes at each sample.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Published {
    /// Seconds since the sources started.
    pub elapsed_s: f64,
    /// `running`, `draining` or `done`.
    pub phase: &'static str,
    /// Per app, in order.
    #[serde(rename = "published_apps")]
    pub apps: Vec<AppPublished>,
    /// One point per second, the last [`HISTORY_SECONDS`].
    pub history: VecDeque<HistoryPoint>,
}

/// One app's published state.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AppPublished {
    /// Lessees its actors hold now.
    pub lessees: u32,
    /// The same per operator, in operator order.
    pub operator_lessees: Vec<u32>,
    /// Malformed records so far.
    pub dead_letters: u64,
    /// Records that reached its sinks.
    pub outputs: u64,
    /// p50 and p99 over the last few seconds, ms.
    pub recent_p50_ms: Option<f64>,
    /// See `recent_p50_ms`.
    pub recent_p99_ms: Option<f64>,
    /// Every output's latency so far, bucketed.
    #[serde(skip)]
    pub buckets: Buckets,
    /// Outputs within the SLO so far (from the buckets: the SLO is a bound).
    pub within_slo: Option<u64>,
}

/// One second of the live page's history.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HistoryPoint {
    /// Seconds since the sources started.
    pub t_s: f64,
    /// Cores busy over the second (all shards).
    pub busy_cores: f64,
    /// Per app: records in per second.
    pub events_per_s: Vec<f64>,
    /// Per app: p50 of the second's outputs, ms.
    pub p50_ms: Vec<Option<f64>>,
    /// Per app: p99 of the second's outputs, ms.
    pub p99_ms: Vec<Option<f64>>,
    /// Per app: lessees held.
    pub lessees: Vec<u32>,
}

impl Board {
    /// A board for `apps`, read through `shards`, for a run that started at `started`
    /// to run for `planned`.
    pub fn new(
        shards: StatsReader<Msg>,
        apps: Vec<BoardApp>,
        (started, planned): (SystemTime, Duration),
        checkpoints: Option<BoardCheckpoints>,
    ) -> Arc<Self> {
        Arc::new(Self {
            shards,
            apps,
            started,
            planned,
            checkpoints,
            published: Mutex::new(Published {
                phase: "running",
                ..Published::default()
            }),
        })
    }

    /// The last published state (the HTTP thread and the run loop take this lock, never
    /// a shard).
    pub fn published(&self) -> MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the run loop's latest look.
    pub fn publish(&self, update: impl FnOnce(&mut Published)) {
        update(&mut self.published());
    }
}

/// The JSON of `/api/status`.
#[derive(Serialize)]
pub struct Status<'a> {
    /// The `dirigo` version.
    pub version: &'static str,
    /// When the sources started, seconds since the Unix epoch.
    pub started_unix_s: f64,
    /// How long the sources are to run, seconds.
    pub planned_s: f64,
    /// Shards running.
    pub shards: usize,
    /// Per app.
    pub apps: Vec<AppStatus<'a>>,
    /// The run loop's last look.
    #[serde(flatten)]
    pub published: &'a Published,
}

/// One app in `/api/status`.
#[derive(Serialize)]
pub struct AppStatus<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its SLO, ms.
    pub slo_ms: Option<f64>,
    /// Records its sources emitted.
    pub events_in: u64,
    /// Records the scheduler shed.
    pub shed: u64,
    /// Records dropped as late.
    pub late: u64,
    /// Why it failed, if it did.
    pub failed: Option<String>,
}

impl Board {
    /// The `/api/status` document.
    pub fn status_json(&self) -> String {
        let published = self.published().clone();
        let status = Status {
            version: env!("CARGO_PKG_VERSION"),
            started_unix_s: self
                .started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64()),
            planned_s: self.planned.as_secs_f64(),
            shards: self.shards.stats().len(),
            apps: self
                .apps
                .iter()
                .map(|app| {
                    let flow = app.app.flow();
                    AppStatus {
                        name: &app.name,
                        slo_ms: app.slo.map(|slo| slo.as_secs_f64() * 1e3),
                        events_in: flow.emitted,
                        shed: flow.shed_at_ingest + flow.shed_downstream,
                        late: flow.late,
                        failed: app.app.failure(),
                    }
                })
                .collect(),
            published: &published,
        };
        serde_json::to_string(&status)
            .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
    }
}
