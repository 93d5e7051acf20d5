//! `dirigo run`: builds the runtime and every app of a configuration, runs them for the
//! configured duration (or until their finite sources end), samples the timeline and each
//! app's latency, shows a progress line on a terminal, serves the live metrics and page
//! when asked (`[metrics] listen`, see `live`), then stops the sources, lets the
//! pipelines drain, and writes the report, the `.hgrm` and `.hlog` files and the plots,
//! all into one folder. Ctrl-C (or SIGTERM) ends the run early the same way: what ran is
//! reported; a second one cuts the drain short (see `signals`). The drain lasts at most
//! `[run] drain_timeout_s`; what is still in flight then is abandoned and counted
//! (`abandoned` in the report).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dirigo_operators::dataflow::Msg;
use dirigo_runtime::{BuildError, Runtime};

use crate::apps::{self, BuiltApp};
use crate::config::Config;
use crate::live::{
    self, AppPublished, Board, BoardApp, BoardCheckpoints, HistoryPoint, LatencyWatch,
};
use crate::report::{
    self, AppReport, CheckpointReport, Latency, OperatorReport, Quantiles, Report, ReportFile,
    RunMeta, Sample, ShardReport, TcpReport,
};
use dirigo_operators::checkpoint::{Checkpoints, RuntimeCheckpoints};

/// How a run is asked for on the command line.
#[derive(Default)]
pub struct RunOptions {
    /// The config's name in the report.
    pub config_name: String,
    /// Overrides `[run] duration_s`.
    pub duration: Option<Duration>,
    /// Overrides `[report] json`.
    pub report: Option<PathBuf>,
    /// The folder for every file of the run; overrides `[report] dir`.
    pub out: Option<PathBuf>,
    /// Overrides `[metrics] listen`.
    pub metrics: Option<SocketAddr>,
    /// Exit non-zero when an app's outputs within its SLO are below this share (%).
    pub fail_on_slo: Option<f64>,
    /// With checkpoints: apps whose checkpointed state no longer fits them (changed
    /// operators or partition counts) start from scratch instead of being refused.
    pub allow_state_drop: bool,
    /// With checkpoints: how many times this run already restored from the last
    /// complete checkpoint after an app failed (each restore is a new `run_with`).
    pub restores: u32,
}

/// How many times one run restores from the last complete checkpoint after an app
/// failed, at most: a failure that comes back each time (the same record makes the same
/// handler panic) then fails the app for good.
pub const MAX_RESTORES: u32 = 3;

/// Why a run could not start or broke down, and the exit code it deserves.
#[derive(Debug)]
pub struct RunError {
    /// [`Exit::Usage`](crate::exit::Exit::Usage) when what the user gave is at fault (a
    /// checkpoint that does not fit the apps, an app that cannot be checkpointed), else
    /// [`Exit::Failure`](crate::exit::Exit::Failure).
    pub exit: crate::exit::Exit,
    /// What went wrong.
    pub message: String,
}

impl From<String> for RunError {
    fn from(message: String) -> Self {
        Self {
            exit: crate::exit::Exit::Failure,
            message,
        }
    }
}

/// Says what the runtime's recovery from the checkpoints did, and prepares a fresh start
/// (empty dead-letter files) when there was nothing to resume from.
fn resume(checkpoints: &Checkpoints, built: &[BuiltApp]) -> Result<(), RunError> {
    let recovery = checkpoints
        .recovery()
        .expect("the runtime recovered the checkpoints when it started");
    for skipped in &recovery.skipped {
        eprintln!("dirigo: {skipped}; trying the one before");
    }
    for dropped in &recovery.dropped {
        eprintln!("dirigo: {dropped}: its state is dropped, it starts from scratch");
    }
    match recovery.resumed_from {
        Some(id) => eprintln!(
            "dirigo: resuming from checkpoint {id} in {}",
            checkpoints.config().dir.display()
        ),
        None => {
            // A fresh start: the dead-letter files start empty, as without checkpoints.
            for app in built {
                if let Some(path) = app.dead_letters.as_ref().and_then(|letters| letters.path()) {
                    if path.is_file() {
                        std::fs::File::create(&path)
                            .map_err(|e| format!("cannot empty {}: {e}", path.display()))?;
                    }
                }
            }
        }
    }
    for app in built {
        if !app.tcp.is_empty() {
            eprintln!(
                "dirigo: app {}: a TCP source cannot be replayed: records it received after \
                 the last checkpoint are lost if the run stops before the next (at most once)",
                app.name
            );
        }
    }
    Ok(())
}

/// The most points a run's timeline holds: a long run samples less often than
/// `[report] sample_ms` rather than grow its timeline without end.
pub const MAX_TIMELINE_POINTS: u32 = 100_000;

/// Once the pipelines drained (or gave up), how long the shards get to fall quiet.
const SHUTDOWN_QUIET: Duration = Duration::from_secs(2);

/// Once the shards are told to stop, how long the run waits for one that is inside a
/// handler (a message carries up to 1024 records of at most 1 ms of `work_ns` each).
const SHARD_JOIN: Duration = Duration::from_secs(2);

/// The same after a second signal.
const FORCED_SHARD_JOIN: Duration = Duration::from_millis(200);

/// How often the drain looks for a second signal.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// The folder every file of a run goes into: `--out`, else the folder of `--report`,
/// else `[report] dir`, else the folder of `[report] json`, else `dirigo-report`.
pub fn output_dir(config: &Config, options: &RunOptions) -> PathBuf {
    let parent_of = |path: &Path| {
        path.parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    if let Some(out) = &options.out {
        return out.clone();
    }
    if let Some(report) = &options.report {
        return parent_of(report);
    }
    if let Some(dir) = &config.report.dir {
        return PathBuf::from(dir);
    }
    if let Some(json) = &config.report.json {
        return parent_of(Path::new(json));
    }
    PathBuf::from("dirigo-report")
}

/// Where the JSON report of `config` run with `options` goes: `--report`, else
/// `OUT/report.json` with `--out`, else `[report] json`, else `DIR/report.json`.
pub fn report_path(config: &Config, options: &RunOptions) -> PathBuf {
    if let Some(report) = &options.report {
        return report.clone();
    }
    if options.out.is_none() {
        if let Some(json) = &config.report.json {
            return PathBuf::from(json);
        }
    }
    output_dir(config, options).join("report.json")
}

/// The metrics address: `--metrics`, else `[metrics] listen` (checked when loaded).
fn metrics_address(config: &Config, options: &RunOptions) -> Option<SocketAddr> {
    options.metrics.or_else(|| {
        config
            .metrics
            .listen
            .as_ref()
            .and_then(|listen| crate::config::socket_address(listen).ok())
    })
}

/// Why the sources stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Duration,
    SourcesEnded,
    Signal,
    /// An app failed with checkpoints on: the run restores from the last checkpoint.
    AppFailed,
}

impl End {
    fn name(self) -> &'static str {
        match self {
            End::Duration => "duration",
            End::SourcesEnded => "sources ended",
            End::Signal => "signal",
            End::AppFailed => "app failed",
        }
    }
}

/// Runs `config`, writing its JSON report into `report_file` (opened before, so that a
/// bad report path fails before the run). Writes that fail are not errors here: the
/// report lists them (`output_errors`, and the per-app counts) and is written anyway;
/// a report that cannot be written is added to the returned report's `output_errors`.
pub fn run_with(
    config: &Config,
    options: &RunOptions,
    report_file: ReportFile,
) -> Result<(Report, PathBuf), RunError> {
    if config.apps.is_empty() {
        return Err(format!(
            "{}: no [[app]] to run (see configs/README.md)",
            options.config_name
        )
        .into());
    }
    let _run = tracing::info_span!("run", config = %options.config_name).entered();
    let dir = output_dir(config, options);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let json_path = report_file.path().to_path_buf();
    let duration = options.duration.unwrap_or_else(|| config.duration());
    let sample_every = Duration::from_millis(
        config
            .report
            .sample_ms
            .as_ref()
            .map_or(100, |ms| *ms.get_ref()),
    )
    .max(duration / MAX_TIMELINE_POINTS);

    let built: Vec<BuiltApp> = config
        .apps
        .iter()
        .enumerate()
        .map(|(id, section)| {
            apps::build(
                id as u16,
                section,
                &config.base_dir,
                &dir,
                config.checkpoint.is_some(),
            )
        })
        .collect::<Result<_, _>>()?;
    let checkpoint_settings = config
        .checkpoint
        .as_ref()
        .map(|section| section.settings(&config.base_dir));
    let checkpoints = checkpoint_settings
        .clone()
        .map(|settings| Checkpoints::new(settings.allow_state_drop(options.allow_state_drop)));
    if let Some(checkpoints) = &checkpoints {
        for app in &built {
            checkpoints.attach(&app.app);
        }
    }
    let mut builder = apps::install(&built, config.apply(Runtime::<Msg>::builder()));
    if let Some(checkpoints) = &checkpoints {
        builder = builder.checkpoints(checkpoints);
    }
    let runtime = builder.build().map_err(|e| match e {
        // The checkpoints could not be resumed from (a changed app, an app that cannot be
        // checkpointed, a directory that cannot be written).
        BuildError::Started(message) => RunError {
            exit: crate::exit::Exit::Usage,
            message,
        },
        e => format!("cannot start the runtime: {e}").into(),
    })?;
    if let Some(checkpoints) = &checkpoints {
        if let Err(e) = resume(checkpoints, &built) {
            checkpoints.finish(false);
            runtime.shutdown();
            return Err(e);
        }
    }
    let shards = runtime.shards();

    crate::signals::install()?;
    let started_at = SystemTime::now();
    let board = Board::new(
        runtime.stats_reader(),
        built
            .iter()
            .map(|app| BoardApp {
                name: app.name.clone(),
                operators: app
                    .app
                    .operators()
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect(),
                slo: app.slo,
                app: app.app.clone(),
            })
            .collect(),
        (started_at, duration),
        checkpoints.as_ref().map(|checkpoints| BoardCheckpoints {
            watch: checkpoints.watch(),
            restores: options.restores,
        }),
    );
    let server = match metrics_address(config, options) {
        Some(address) => {
            if !address.ip().is_loopback() {
                tracing::warn!(
                    "metrics listen on {address}: every host that can reach it can read them \
                     (use 127.0.0.1 to keep them on this machine)"
                );
            }
            let server = live::server::Server::start(address, board.clone())?;
            eprintln!(
                "metrics: http://{0}/metrics  live page: http://{0}/",
                server.address()
            );
            Some(server)
        }
        None => None,
    };
    let mut watches: Vec<LatencyWatch> = built
        .iter()
        .map(|app| LatencyWatch::new(app.latency.clone(), app.slo))
        .collect();

    let started = Instant::now();
    for app in &built {
        let _start = tracing::info_span!("app_start", app = %app.name).entered();
        app.app.start(&runtime.ingress());
        tracing::debug!(
            slo_ms = app.slo.map(|slo| slo.as_secs_f64() * 1e3),
            "sources started"
        );
    }
    let progress = crate::logging::progress_enabled();
    let mut timeline = Vec::new();
    let mut previous = (started, busy_ns(&runtime), emitted(&built));
    let mut last_progress = started;
    let mut second = SecondTally::new(started, busy_ns(&runtime), emitted(&built));
    let deadline = started + duration;
    let end = loop {
        let now = Instant::now();
        if crate::signals::stop_requested() {
            tracing::info!("interrupted: stopping the sources and writing the report");
            break End::Signal;
        }
        if now >= deadline {
            break End::Duration;
        }
        if checkpoints.is_some() && built.iter().any(|app| app.app.failure().is_some()) {
            break End::AppFailed;
        }
        if built.iter().all(|app| app.app.is_done()) {
            break End::SourcesEnded;
        }
        // Short naps, so that an interrupt is seen within 50 ms.
        let nap = sample_every
            .min(deadline - now)
            .min(Duration::from_millis(50));
        std::thread::sleep(nap);
        if previous.0.elapsed() < sample_every && Instant::now() < deadline {
            continue;
        }
        let (sample, operator_lessees) = sample(&runtime, &built, started, &mut previous);
        look(
            &mut watches,
            &built,
            (&runtime, &sample.lessees, &operator_lessees),
            &board,
            &mut second,
            started,
        );
        if progress && last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            crate::logging::show_progress(&progress_line(
                &sample,
                &built,
                &watches,
                deadline.saturating_duration_since(Instant::now()),
            ));
        }
        timeline.push(sample);
    };
    let ran = started.elapsed();
    if progress {
        crate::logging::end_progress();
    }
    for app in &built {
        app.app.stop();
        for tcp in &app.tcp {
            // The app takes no more: what its connections still send is counted unread.
            tcp.stop();
        }
        for nats in &app.nats {
            // The readers pull no more; what the app did not take stays unacknowledged
            // in the stream, for the next run.
            nats.stop();
        }
    }
    board.publish(|published| published.phase = "draining");
    let drain_span = tracing::info_span!("drain").entered();
    let drain_started = Instant::now();
    let drain_timeout = config.drain_timeout();
    let drain_deadline = Instant::now() + drain_timeout;
    let mut drained = true;
    for app in &built {
        // In short waits, so that a second signal cuts the drain short at once.
        while !app.app.is_done() {
            let left = drain_deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || crate::signals::forced() {
                drained = false;
                break;
            }
            app.app.wait(left.min(DRAIN_POLL));
        }
    }
    if !drained {
        if crate::signals::forced() {
            tracing::warn!("drain cut short by a second signal; reporting what came out");
        } else {
            tracing::warn!(
                "the pipelines did not drain within {drain_timeout:?} ([run] drain_timeout_s); \
                 reporting what came out, the rest is abandoned"
            );
        }
    }
    tracing::debug!(
        drained,
        ms = drain_started.elapsed().as_secs_f64() * 1e3,
        ended_by = end.name(),
        "sources stopped and pipelines drained"
    );
    drop(drain_span);
    timeline.push(sample(&runtime, &built, started, &mut previous).0);
    // A run whose apps completed on their own commits the rest of their output with one
    // last checkpoint; a run stopped early (its duration, a signal) keeps its last
    // periodic one, from which the next run goes on; after a failure, the next attempt
    // restores from it.
    let completed =
        end == End::SourcesEnded && drained && built.iter().all(|app| app.app.failure().is_none());
    let checkpoint_stats = checkpoints
        .as_ref()
        .map(|checkpoints| checkpoints.finish(completed));
    let elapsed = started.elapsed();
    for watch in &mut watches {
        watch.finish(elapsed);
    }
    // A shard inside a costly handler is not waited for past `SHARD_JOIN` (after a second
    // signal, `FORCED_SHARD_JOIN`): the report comes first.
    let final_report = runtime.shutdown_bounded(
        if drained {
            SHUTDOWN_QUIET
        } else {
            Duration::ZERO
        },
        if crate::signals::forced() {
            FORCED_SHARD_JOIN
        } else {
            SHARD_JOIN
        },
    );
    board.publish(|published| published.phase = "done");
    drop(server);

    let policy = config.scheduler.policy.to_string();
    let write_hgrm = config.report.hgrm.unwrap_or(true);
    let mut app_reports = Vec::new();
    let mut output_errors = Vec::new();
    for (app, watch) in built.iter().zip(&watches) {
        let histogram = app.latency.histogram();
        let flow = app.app.flow();
        if flow.outputs_failed > 0 {
            output_errors.push(format!(
                "app {}: {} of {} outputs were not written: {}",
                app.name,
                flow.outputs_failed,
                flow.outputs_failed + flow.outputs_written,
                app.app.output_error().unwrap_or_default()
            ));
        }
        let dead_letters = app.dead_letters.as_ref().map_or(0, |letters| {
            if let Err(e) = letters.flush() {
                output_errors.push(format!("app {}: {e}", app.name));
            }
            letters.count()
        });
        // An app's TCP sources, summed.
        let tcp = (!app.tcp.is_empty()).then(|| {
            let mut sum = TcpReport::default();
            for tcp in &app.tcp {
                tcp.wait_finished(dirigo_operators::io::tcp::STOP_POLL * 5);
                sum.connections += tcp.connections_accepted();
                sum.connections_refused += tcp.connections_refused();
                sum.connections_unauthorized += tcp.connections_unauthorized();
                sum.connections_idle_closed += tcp.connections_idle_closed();
                sum.unread_at_stop += tcp.unread();
            }
            sum
        });
        let mut written = |extension: &str, write: &dyn Fn(&Path) -> Result<(), String>| {
            let path = dir.join(format!("{}.{extension}", app.name));
            match write(&path) {
                Ok(()) => Some(path.display().to_string()),
                Err(e) => {
                    output_errors.push(format!("cannot write {}: {e}", path.display()));
                    None
                }
            }
        };
        let (hgrm, hlog) = if write_hgrm {
            (
                written("hgrm", &|path| {
                    std::fs::write(path, report::hgrm(&histogram)).map_err(|e| e.to_string())
                }),
                written("hlog", &|path| write_hlog(watch, path, started_at)),
            )
        } else {
            (None, None)
        };
        if watch.dropped_seconds() > 0 {
            tracing::warn!(
                "app {}: latency over time kept for the first {} s only",
                app.name,
                live::latency::MAX_SECONDS_KEPT
            );
        }
        let satisfaction = app.slo.map(|slo| {
            if histogram.is_empty() {
                0.0
            } else {
                let slo_ns = slo.as_nanos() as u64;
                histogram.count_between(0, slo_ns) as f64 / histogram.len() as f64
            }
        });
        let events_in = flow.emitted + dead_letters;
        app_reports.push(AppReport {
            name: app.name.clone(),
            slo_ms: app.slo.map(|slo| slo.as_secs_f64() * 1e3),
            events_in,
            events_out: flow.ingested,
            dead_letters,
            // Named only when it holds this run's letters.
            dead_letter_file: app
                .dead_letters
                .as_ref()
                .filter(|letters| letters.written() > 0)
                .and_then(|letters| letters.path())
                .filter(|path| path.is_file())
                .map(|path| path.display().to_string()),
            dead_letters_written: app.dead_letters.as_ref().map_or(0, |l| l.written()),
            dead_letters_failed: app.dead_letters.as_ref().map_or(0, |l| l.failed_writes()),
            dead_letters_suppressed: app.dead_letters.as_ref().map_or(0, |l| l.suppressed()),
            tcp,
            outputs_written: flow.outputs_written,
            outputs_failed: flow.outputs_failed,
            shed: flow.shed_at_ingest,
            shed_downstream: flow.shed_downstream,
            late: flow.late,
            failed: app.app.failure(),
            handler_panics: app.app.handler_panics(),
            discarded: flow.discarded_at_ingest,
            discarded_downstream: flow.discarded_downstream,
            outputs: app.latency.outputs(),
            events_per_s: events_in as f64 / ran.as_secs_f64().max(1e-9),
            latency_ns: Latency::of(&histogram),
            satisfaction,
            hgrm,
            hlog,
            cdf: report::cdf_points(&histogram),
            latency_timeline: watch.points().to_vec(),
            operators: app
                .app
                .records_in()
                .into_iter()
                .zip(app.app.records_out())
                .map(|((name, records_in), (_, records_out))| OperatorReport {
                    name,
                    records_in,
                    records_out,
                })
                .collect(),
        });
    }
    let mut report = Report {
        config: options.config_name.clone(),
        meta: Some(RunMeta::new(started_at, end.name(), options.fail_on_slo)),
        policy,
        shards,
        elapsed_s: elapsed.as_secs_f64(),
        duration_s: ran.as_secs_f64(),
        failed_apps: app_reports
            .iter()
            .filter(|app| app.failed.is_some())
            .map(|app| app.name.clone())
            .collect(),
        handler_panics: final_report
            .shards
            .iter()
            .map(|shard| shard.handler_panics)
            .sum(),
        signals: crate::signals::received(),
        drained,
        abandoned: final_report.abandoned,
        apps: app_reports,
        shard_usage: final_report
            .shards
            .iter()
            .map(|shard| ShardReport {
                shard: shard.shard,
                cpu: shard.cpu,
                busy_s: shard.busy_ns as f64 / 1e9,
                handled: shard.handled,
                shed: shard.shed,
                parks: shard.parks,
                queued_peak: shard.queued_peak,
            })
            .collect(),
        timeline,
        output_errors,
        checkpoints: checkpoint_stats.map(|stats| CheckpointReport {
            dir: checkpoint_settings
                .as_ref()
                .map(|settings| settings.dir.display().to_string())
                .unwrap_or_default(),
            resumed_from: stats.resumed_from,
            restores: options.restores,
            completed: stats.completed,
            abandoned: stats.abandoned,
            last_complete: stats.last_complete,
            duration_ms: Quantiles::of_micros(&stats.durations_us),
            alignment_ms: Quantiles::of_micros(&stats.alignments_us),
            max_shard_hold_us: stats.max_shard_hold_us,
            bytes_last: stats.bytes_last,
            bytes_total: stats.bytes_total,
        }),
    };
    // The plots first, so that the JSON says when they could not be drawn.
    if config.report.plots.unwrap_or(true) {
        if let Err(e) = crate::plot::plot(&report, &dir) {
            report
                .output_errors
                .push(format!("plots in {}: {e}", dir.display()));
        }
    }
    // The exit the report's contents call for (the report's own write aside).
    let exit = crate::exit::Exit::of_report(&report);
    if let Some(meta) = &mut report.meta {
        meta.exit_code = exit.code();
        meta.exit_reason = exit.reason().to_owned();
    }
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    if let Err(e) = report_file.commit(&json) {
        report.output_errors.push(e);
    }
    Ok((report, json_path))
}

fn write_hlog(watch: &LatencyWatch, path: &Path, started_at: SystemTime) -> Result<(), String> {
    use std::io::Write as _;
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut out = std::io::BufWriter::new(file);
    watch.write_hlog(&mut out, started_at)?;
    out.flush().map_err(|e| e.to_string())?;
    out.into_inner()
        .map_err(|e| e.to_string())?
        .sync_all()
        .map_err(|e| e.to_string())
}

/// The counts of the second being filled, for the live page's per-second history.
struct SecondTally {
    index: u64,
    at: Instant,
    busy_ns: u64,
    emitted: Vec<u64>,
}

impl SecondTally {
    fn new(at: Instant, busy_ns: u64, emitted: Vec<u64>) -> Self {
        Self {
            index: 0,
            at,
            busy_ns,
            emitted,
        }
    }
}

/// Takes each app's fresh latencies and publishes the run's state (with the `lessees`
/// the sample just read) to the board; adds a history point when a second ended.
fn look(
    watches: &mut [LatencyWatch],
    apps: &[BuiltApp],
    (runtime, lessees, operator_lessees): (&Runtime<Msg>, &[u32], &[Vec<u32>]),
    board: &Arc<Board>,
    second: &mut SecondTally,
    started: Instant,
) {
    let elapsed = started.elapsed();
    for watch in watches.iter_mut() {
        watch.look(elapsed);
    }
    let apps_published: Vec<AppPublished> = apps
        .iter()
        .zip(watches.iter())
        .zip(lessees)
        .zip(operator_lessees)
        .map(|(((app, watch), &lessees), operator_lessees)| {
            let buckets = watch.buckets();
            let within_slo = app.slo.map(|slo| {
                let slo_s = slo.as_secs_f64();
                buckets
                    .cumulative
                    .iter()
                    .find(|(bound, _)| (bound - slo_s).abs() < 1e-12)
                    .map_or(0, |&(_, n)| n)
            });
            let recent = watch.recent();
            AppPublished {
                lessees,
                operator_lessees: operator_lessees.clone(),
                dead_letters: app.dead_letters.as_ref().map_or(0, |l| l.count()),
                outputs: app.latency.outputs(),
                recent_p50_ms: recent.map(|(p50, _)| p50 as f64 / 1e6),
                recent_p99_ms: recent.map(|(_, p99)| p99 as f64 / 1e6),
                buckets,
                within_slo,
            }
        })
        .collect();
    let history_point = (elapsed.as_secs() > second.index).then(|| {
        let now = Instant::now();
        let interval = now.duration_since(second.at).as_secs_f64().max(1e-9);
        let busy = busy_ns(runtime);
        let counts = emitted(apps);
        let point = HistoryPoint {
            t_s: elapsed.as_secs_f64(),
            busy_cores: busy.saturating_sub(second.busy_ns) as f64 / 1e9 / interval,
            events_per_s: counts
                .iter()
                .zip(&second.emitted)
                .map(|(now, before)| now.saturating_sub(*before) as f64 / interval)
                .collect(),
            p50_ms: watches
                .iter()
                .map(|watch| watch.points().last().and_then(|point| point.p50_ms))
                .collect(),
            p99_ms: watches
                .iter()
                .map(|watch| watch.points().last().and_then(|point| point.p99_ms))
                .collect(),
            lessees: lessees.to_vec(),
        };
        *second = SecondTally {
            index: elapsed.as_secs(),
            at: now,
            busy_ns: busy,
            emitted: counts,
        };
        point
    });
    board.publish(|published| {
        published.elapsed_s = elapsed.as_secs_f64();
        published.apps = apps_published;
        if let Some(point) = history_point {
            if published.history.len() >= live::HISTORY_SECONDS {
                published.history.pop_front();
            }
            published.history.push_back(point);
        }
    });
}

/// The progress line: time and time left, events/s, busy cores, and each app's recent
/// p99 against its SLO.
fn progress_line(
    sample: &Sample,
    apps: &[BuiltApp],
    watches: &[LatencyWatch],
    left: Duration,
) -> String {
    let events: f64 = sample.events_per_s.iter().sum();
    let mut line = format!(
        "{:6.1} s ({:.0} s left)  {:>11} events/s  busy cores {:4.2}",
        sample.t_s,
        left.as_secs_f64().ceil(),
        report::thousands(events.round() as u64),
        sample.busy_cores
    );
    for (app, watch) in apps.iter().zip(watches) {
        let p99 = watch
            .recent()
            .map_or_else(|| "-".to_owned(), |(_, p99)| report::ms(p99));
        match app.slo {
            Some(slo) => {
                let slo_ns = slo.as_nanos() as u64;
                let mark = match watch.recent() {
                    Some((_, p99)) if p99 > slo_ns => " MISS",
                    Some(_) => " ok",
                    None => "",
                };
                line.push_str(&format!(
                    "  | {} p99 {p99} / {} ms{mark}",
                    app.name,
                    report::ms(slo_ns)
                ));
            }
            None => line.push_str(&format!("  | {} p99 {p99} ms", app.name)),
        }
    }
    line
}

fn busy_ns(runtime: &Runtime<Msg>) -> u64 {
    runtime.stats().iter().map(|shard| shard.busy_ns).sum()
}

fn emitted(apps: &[BuiltApp]) -> Vec<u64> {
    apps.iter().map(|app| app.app.flow().emitted).collect()
}

/// The lessees each app's actors hold now, per app and per (app, operator).
fn lessees(runtime: &Runtime<Msg>, apps: &[BuiltApp]) -> (Vec<u32>, Vec<Vec<u32>>) {
    let metrics = runtime.actor_metrics();
    let per_operator: Vec<Vec<u32>> = apps
        .iter()
        .map(|app| {
            let mut operators = vec![0u32; app.app.operators().len()];
            for metrics in metrics.iter().filter(|m| m.actor.app == app.app.id()) {
                if let Some(held) = operators.get_mut(usize::from(metrics.actor.operator)) {
                    *held += metrics.lessees;
                }
            }
            operators
        })
        .collect();
    (
        per_operator.iter().map(|ops| ops.iter().sum()).collect(),
        per_operator,
    )
}

/// One timeline point, and the lessees per (app, operator); `previous` holds the last
/// point's time, busy total and counts.
fn sample(
    runtime: &Runtime<Msg>,
    apps: &[BuiltApp],
    started: Instant,
    previous: &mut (Instant, u64, Vec<u64>),
) -> (Sample, Vec<Vec<u32>>) {
    let now = Instant::now();
    let busy = busy_ns(runtime);
    let counts = emitted(apps);
    let interval = now.duration_since(previous.0).as_secs_f64().max(1e-9);
    let (lessees, operator_lessees) = lessees(runtime, apps);
    let events_per_s = counts
        .iter()
        .zip(&previous.2)
        .map(|(now, before)| now.saturating_sub(*before) as f64 / interval)
        .collect();
    let busy_cores = busy.saturating_sub(previous.1) as f64 / 1e9 / interval;
    *previous = (now, busy, counts);
    let sample = Sample {
        t_s: now.duration_since(started).as_secs_f64(),
        busy_cores,
        lessees,
        events_per_s,
    };
    (sample, operator_lessees)
}

/// Parses `5s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("a duration like 5s, 500ms or 2m, not {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1e3,
        "s" => value,
        "m" | "min" => value * 60.0,
        _ => return Err(format!("a duration like 5s, 500ms or 2m, not {text:?}")),
    };
    if !(seconds > 0.0 && seconds <= crate::config::MAX_SECONDS) {
        return Err(format!(
            "a duration above zero and at most {} s, not {text:?}",
            crate::config::MAX_SECONDS
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The largest report `dirigo report` reads (a report of a long run with a fine sample
/// interval is a few MiB; the timelines are capped).
pub const MAX_REPORT_BYTES: u64 = 256 << 20;

/// Reads a saved report (a regular file of at most [`MAX_REPORT_BYTES`]) and draws its
/// plots into `out`; returns the report and the plots.
pub fn render(report_path: &Path, out: &Path) -> Result<(Report, Vec<PathBuf>), String> {
    let bytes = crate::config::read_regular_file(report_path, MAX_REPORT_BYTES, "a dirigo report")
        .map_err(|refused| {
            let at = if refused.at_start { ":1:1" } else { "" };
            format!("{}{at}: {}", report_path.display(), refused.message)
        })?;
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("{}:1:1: not a dirigo report: {e}", report_path.display()))?;
    let report: Report = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}:{}: not a dirigo report: {e}",
            report_path.display(),
            e.line(),
            e.column()
        )
    })?;
    let plots = crate::plot::plot(&report, out)?;
    Ok((report, plots))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("five").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("1e300s").is_err());
        assert!(parse_duration("NaN").is_err());
    }
}
