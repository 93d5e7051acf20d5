//! `dirigo run`: builds the runtime and every app of a configuration, runs them for the
//! configured duration (or until their finite sources end), samples the timeline, shows a
//! progress line on a terminal, then stops the sources, lets the pipelines drain, and
//! writes the report, the `.hgrm` files and the plots. Ctrl-C (or SIGTERM) ends the run
//! early the same way: what ran is reported; a second one cuts the drain short (see
//! `signals`). The drain lasts at most `[run] drain_timeout_s`; what is still in flight
//! then is abandoned and counted (`abandoned` in the report).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dirigo_operators::dataflow::Msg;
use dirigo_runtime::Runtime;

use crate::apps::{self, BuiltApp};
use crate::config::Config;
use crate::report::{self, AppReport, Latency, Report, ReportFile, Sample, ShardReport, TcpReport};

/// How a run is asked for on the command line.
pub struct RunOptions {
    /// The config's name in the report.
    pub config_name: String,
    /// Overrides `[run] duration_s`.
    pub duration: Option<Duration>,
    /// Overrides `[report] json`.
    pub report: Option<PathBuf>,
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

/// Where the JSON report of `config` run with `options` goes: `--report`, else
/// `[report] json`, else `DIR/report.json`.
pub fn report_path(config: &Config, options: &RunOptions) -> PathBuf {
    options.report.clone().unwrap_or_else(|| {
        let dir = config
            .report
            .dir
            .clone()
            .unwrap_or_else(|| "dirigo-report".into());
        config
            .report
            .json
            .clone()
            .map_or_else(|| PathBuf::from(dir).join("report.json"), PathBuf::from)
    })
}

/// Runs `config`, writing its JSON report into `report_file` (opened before, so that a
/// bad report path fails before the run). Writes that fail are not errors here: the
/// report lists them (`output_errors`, and the per-app counts) and is written anyway;
/// a report that cannot be written is added to the returned report's `output_errors`.
pub fn run_with(
    config: &Config,
    options: &RunOptions,
    report_file: ReportFile,
) -> Result<(Report, PathBuf), String> {
    if config.apps.is_empty() {
        return Err(format!(
            "{}: no [[app]] to run (see configs/README.md)",
            options.config_name
        ));
    }
    let dir = PathBuf::from(
        config
            .report
            .dir
            .clone()
            .unwrap_or_else(|| "dirigo-report".into()),
    );
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
        .map(|(id, section)| apps::build(id as u16, section, &config.base_dir, &dir))
        .collect::<Result<_, _>>()?;
    let runtime = apps::install(&built, config.apply(Runtime::<Msg>::builder()))
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let shards = runtime.shards();

    crate::signals::install()?;
    let started = Instant::now();
    for app in &built {
        app.app.start(&runtime.ingress());
    }
    let progress = std::io::stderr().is_terminal();
    let mut timeline = Vec::new();
    let mut previous = (started, busy_ns(&runtime), emitted(&built));
    let mut last_progress = started;
    let deadline = started + duration;
    loop {
        let now = Instant::now();
        let interrupted = crate::signals::stop_requested();
        if interrupted || now >= deadline || built.iter().all(|app| app.app.is_done()) {
            if interrupted {
                tracing::info!("interrupted: stopping the sources and writing the report");
            }
            break;
        }
        // Short naps, so that an interrupt is seen within 50 ms.
        let nap = sample_every
            .min(deadline - now)
            .min(Duration::from_millis(50));
        std::thread::sleep(nap);
        if previous.0.elapsed() < sample_every && Instant::now() < deadline {
            continue;
        }
        let sample = sample(&runtime, &built, started, &mut previous);
        if progress && last_progress.elapsed() >= Duration::from_millis(500) {
            last_progress = Instant::now();
            let events: f64 = sample.events_per_s.iter().sum();
            let p99 = built
                .iter()
                .map(|app| app.latency.histogram())
                .filter(|histogram| !histogram.is_empty())
                .map(|histogram| histogram.value_at_quantile(0.99))
                .max()
                .unwrap_or(0);
            let lessees: u32 = sample.lessees.iter().sum();
            eprint!(
                "\r{:6.1} s  {:>10.0} events/s  p99 {:>9.3} ms  lessees {:>2}  busy cores {:>4.2}   ",
                sample.t_s,
                events,
                p99 as f64 / 1e6,
                lessees,
                sample.busy_cores
            );
            let _ = std::io::stderr().flush();
        }
        timeline.push(sample);
    }
    let ran = started.elapsed();
    if progress {
        eprintln!();
    }
    for app in &built {
        app.app.stop();
        if let Some(tcp) = &app.tcp {
            // The app takes no more: what its connections still send is counted unread.
            tcp.stop();
        }
    }
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
    timeline.push(sample(&runtime, &built, started, &mut previous));
    let elapsed = started.elapsed();
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

    let policy = config.scheduler.policy.to_string();
    let write_hgrm = config.report.hgrm.unwrap_or(true);
    let mut app_reports = Vec::new();
    let mut output_errors = Vec::new();
    for app in &built {
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
        let tcp = app.tcp.as_ref().map(|tcp| {
            tcp.wait_finished(dirigo_operators::io::tcp::STOP_POLL * 5);
            TcpReport {
                connections: tcp.connections_accepted(),
                connections_refused: tcp.connections_refused(),
                connections_unauthorized: tcp.connections_unauthorized(),
                connections_idle_closed: tcp.connections_idle_closed(),
                unread_at_stop: tcp.unread(),
            }
        });
        let hgrm = if write_hgrm {
            let path = dir.join(format!("{}.hgrm", app.name));
            match std::fs::write(&path, report::hgrm(&histogram)) {
                Ok(()) => Some(path.display().to_string()),
                Err(e) => {
                    output_errors.push(format!("cannot write {}: {e}", path.display()));
                    None
                }
            }
        } else {
            None
        };
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
            cdf: report::cdf_points(&histogram),
        });
    }
    let report = Report {
        config: options.config_name.clone(),
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
    };
    let mut report = report;
    // The plots first, so that the JSON says when they could not be drawn.
    if config.report.plots.unwrap_or(true) {
        if let Err(e) = report::plot(&report, &dir) {
            report
                .output_errors
                .push(format!("plots in {}: {e}", dir.display()));
        }
    }
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    if let Err(e) = report_file.commit(&json) {
        report.output_errors.push(e);
    }
    Ok((report, json_path))
}

fn busy_ns(runtime: &Runtime<Msg>) -> u64 {
    runtime.stats().iter().map(|shard| shard.busy_ns).sum()
}

fn emitted(apps: &[BuiltApp]) -> Vec<u64> {
    apps.iter().map(|app| app.app.flow().emitted).collect()
}

/// One timeline point; `previous` holds the last one's time, busy total and counts.
fn sample(
    runtime: &Runtime<Msg>,
    apps: &[BuiltApp],
    started: Instant,
    previous: &mut (Instant, u64, Vec<u64>),
) -> Sample {
    let now = Instant::now();
    let busy = busy_ns(runtime);
    let counts = emitted(apps);
    let interval = now.duration_since(previous.0).as_secs_f64().max(1e-9);
    let metrics = runtime.actor_metrics();
    let lessees = apps
        .iter()
        .map(|app| {
            metrics
                .iter()
                .filter(|metrics| metrics.actor.app == app.app.id())
                .map(|metrics| metrics.lessees)
                .sum()
        })
        .collect();
    let events_per_s = counts
        .iter()
        .zip(&previous.2)
        .map(|(now, before)| now.saturating_sub(*before) as f64 / interval)
        .collect();
    let busy_cores = busy.saturating_sub(previous.1) as f64 / 1e9 / interval;
    *previous = (now, busy, counts);
    Sample {
        t_s: now.duration_since(started).as_secs_f64(),
        busy_cores,
        lessees,
        events_per_s,
    }
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
    let plots = report::plot(&report, out)?;
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
