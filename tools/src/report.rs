//! The report of a run: the JSON document `dirigo run` writes (with the run's metadata),
//! the `.hgrm` file of each app's latency (HdrHistogram's percentile-distribution text, in
//! microseconds), and the summary table. The SVG plots are drawn from it (`plot`), so
//! `dirigo report REPORT.json --out DIR` draws them again from a saved report:
//! everything they show is in the JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::live::LatencyPoint;

/// The whole report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The configuration file (`(built-in default)` for the embedded one).
    pub config: String,
    /// Who ran it, where, when, and how it ended (absent in reports of older versions).
    #[serde(default)]
    pub meta: Option<RunMeta>,
    /// The scheduling policy.
    pub policy: String,
    /// Shards the runtime ran.
    pub shards: usize,
    /// Seconds from the start of the sources to the end of the drain.
    pub elapsed_s: f64,
    /// Seconds the sources ran.
    pub duration_s: f64,
    /// Stop signals (SIGINT, SIGTERM) the run received: 1 asked for a stop, 2 forced one
    /// (the drain was cut short).
    #[serde(default)]
    pub signals: u32,
    /// Whether every pipeline drained within `[run] drain_timeout_s` after its sources
    /// stopped.
    #[serde(default = "drained_by_default")]
    pub drained: bool,
    /// Messages still in flight when the shards stopped, dropped (0 after a full drain).
    #[serde(default)]
    pub abandoned: u64,
    /// Per app.
    pub apps: Vec<AppReport>,
    /// Per shard.
    pub shard_usage: Vec<ShardReport>,
    /// The apps that failed (a handler panicked), by name; each says why in its `failed`.
    #[serde(default)]
    pub failed_apps: Vec<String>,
    /// Handlers that panicked, over all apps.
    #[serde(default)]
    pub handler_panics: u64,
    /// Samples taken while the run went on.
    pub timeline: Vec<Sample>,
    /// Every write of the run that failed, saying where and how much was lost (outputs,
    /// dead letters, `.hgrm` files, plots); empty when nothing was lost. The run then
    /// exits with code 3.
    #[serde(default)]
    pub output_errors: Vec<String>,
    /// What the checkpoints did, when `[checkpoint]` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<CheckpointReport>,
}

/// The checkpoints of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CheckpointReport {
    /// The directory.
    pub dir: String,
    /// The checkpoint the run resumed from (none: it started from scratch).
    pub resumed_from: Option<u64>,
    /// Times a failed app made the run restore from the last complete checkpoint.
    pub restores: u32,
    /// Checkpoints completed.
    pub completed: u64,
    /// Checkpoints abandoned (timed out, or a part could not be archived or written).
    pub abandoned: u64,
    /// The newest complete checkpoint at the end (0: none).
    pub last_complete: u64,
    /// Start to committed manifest, over the completed checkpoints: p50, p99, max (ms).
    pub duration_ms: Quantiles,
    /// Start to the last partition's part (barrier travel and alignment): p50, p99, max
    /// (ms).
    pub alignment_ms: Quantiles,
    /// The longest time archiving one partition's state held its shard (µs).
    pub max_shard_hold_us: u64,
    /// Bytes of state in the last completed checkpoint.
    pub bytes_last: u64,
    /// Bytes of state written over the run.
    pub bytes_total: u64,
}

/// `unix_ms` as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub fn utc_time(unix_ms: u64) -> String {
    let days = unix_ms / 86_400_000;
    let ms_of_day = unix_ms % 86_400_000;
    // The civil date of a day count (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000
    )
}

/// p50, p99 and max of some durations.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Quantiles {
    /// The quantiles of `micros`, in milliseconds (zeros when empty).
    pub fn of_micros(micros: &[u64]) -> Self {
        let mut sorted = micros.to_vec();
        sorted.sort_unstable();
        let at = |q: f64| {
            sorted
                .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
                .map_or(0.0, |&us| us as f64 / 1e3)
        };
        Self {
            p50: at(0.5),
            p99: at(0.99),
            max: sorted.last().map_or(0.0, |&us| us as f64 / 1e3),
        }
    }
}

/// Reports written before `drained` was recorded came from runs that drained or waited.
fn drained_by_default() -> bool {
    true
}

/// One app's figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AppReport {
    /// Its name.
    pub name: String,
    /// Its SLO, ms.
    pub slo_ms: Option<f64>,
    /// Records its sources read (malformed ones included).
    pub events_in: u64,
    /// Records the operators right after the sources took in (not what reached the
    /// sinks: that is `outputs`).
    pub events_out: u64,
    /// Malformed records, written to the dead-letter file.
    pub dead_letters: u64,
    /// The dead-letter file.
    pub dead_letter_file: Option<String>,
    /// Records the scheduler shed on their way in.
    pub shed: u64,
    /// Records shed further in (between two operators).
    pub shed_downstream: u64,
    /// Records dropped for coming after their window fired.
    pub late: u64,
    /// Why the app failed: the message of the first of its handlers that panicked;
    /// `None` (`null`) when it did not fail.
    #[serde(default)]
    pub failed: Option<String>,
    /// Its handlers that panicked (each fails the app).
    #[serde(default)]
    pub handler_panics: u64,
    /// Records dropped unrun on their way in because the app had failed: with them,
    /// `events_in = events_out + dead_letters + shed + discarded`.
    #[serde(default)]
    pub discarded: u64,
    /// Records dropped unrun further in because the app had failed.
    #[serde(default)]
    pub discarded_downstream: u64,
    /// Records that reached the sink.
    pub outputs: u64,
    /// Records a `json-lines` or `tcp` sink wrote out: the lines in its file (0 for a
    /// `latency` sink, which writes nothing).
    #[serde(default)]
    pub outputs_written: u64,
    /// Records a sink could not write out (lost).
    #[serde(default)]
    pub outputs_failed: u64,
    /// Dead letters written to `dead_letter_file`: the lines in it.
    #[serde(default)]
    pub dead_letters_written: u64,
    /// Dead letters that could not be written (lost).
    #[serde(default)]
    pub dead_letters_failed: u64,
    /// Dead letters past the source's caps (`dead_letter_max_bytes`,
    /// `dead_letter_max_per_s`): counted in `dead_letters`, not written.
    #[serde(default)]
    pub dead_letters_suppressed: u64,
    /// The app's TCP sources' connections and the records they never handed to the app
    /// (summed over its sources).
    #[serde(default)]
    pub tcp: Option<TcpReport>,
    /// `events_in` per second of the run.
    pub events_per_s: f64,
    /// Latency of the outputs from their intended send time (ns).
    pub latency_ns: Latency,
    /// Share of outputs within the SLO (`None` without one).
    pub satisfaction: Option<f64>,
    /// The `.hgrm` file, when written.
    pub hgrm: Option<String>,
    /// The `.hlog` file (HdrHistogram's interval log, one interval per second), when
    /// written.
    #[serde(default)]
    pub hlog: Option<String>,
    /// The latency distribution: `(quantile, ns)` points, for the CDF plot; the last is
    /// the largest value, at the highest quantile the outputs resolve (`1 - 1/n`).
    pub cdf: Vec<(f64, u64)>,
    /// Latency per second of the run.
    #[serde(default)]
    pub latency_timeline: Vec<LatencyPoint>,
    /// Per operator, in operator order: its name and the records it received and sent.
    #[serde(default)]
    pub operators: Vec<OperatorReport>,
}

/// One operator's figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OperatorReport {
    /// Its name.
    pub name: String,
    /// Records its partitions received (0 for a source).
    pub records_in: u64,
    /// Records its partitions sent on (once each, however many edges took them); for a
    /// sink, the records it wrote out of the process (none for one that only records
    /// latency).
    #[serde(default)]
    pub records_out: u64,
}

/// Who ran a report's run, where, when, and how it ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunMeta {
    /// The `dirigo` version.
    pub version: String,
    /// The host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// When the sources started, RFC 3339 in UTC.
    pub started_at: String,
    /// The same, seconds since the Unix epoch.
    pub started_unix_s: f64,
    /// Why the sources stopped: `duration`, `sources ended` or `signal`.
    pub ended_by: String,
    /// Whether a stop signal ended the run early.
    pub interrupted: bool,
    /// `--fail-on-slo`: the share of outputs within their SLO below which the run fails,
    /// in percent.
    pub fail_on_slo_percent: Option<f64>,
    /// The exit code the report calls for (see `configs/README.md`).
    pub exit_code: u8,
    /// What it means.
    pub exit_reason: String,
}

impl RunMeta {
    /// The metadata of a run that started at `started` and ended by `ended_by`; the exit
    /// is filled in once the report is complete.
    pub fn new(started: std::time::SystemTime, ended_by: &str, fail_on_slo: Option<f64>) -> Self {
        let since_epoch = started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_default(),
            pid: std::process::id(),
            started_at: rfc3339(since_epoch),
            started_unix_s: since_epoch.as_secs_f64(),
            ended_by: ended_by.to_owned(),
            interrupted: ended_by == "signal",
            fail_on_slo_percent: fail_on_slo,
            exit_code: 0,
            exit_reason: String::new(),
        }
    }
}

/// `since_epoch` as an RFC 3339 time in UTC, to the millisecond.
pub fn rfc3339(since_epoch: std::time::Duration) -> String {
    let seconds = since_epoch.as_secs();
    let (days, in_day) = (seconds / 86_400, seconds % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600,
        in_day % 3_600 / 60,
        in_day % 60,
        since_epoch.subsec_millis()
    )
}

/// What an app's TCP sources (summed) refused, closed and left unread.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TcpReport {
    /// Connections accepted and read.
    pub connections: u64,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: u64,
    /// Connections closed for a wrong or missing `token`.
    pub connections_unauthorized: u64,
    /// Connections closed after `idle_timeout_ms` without a byte.
    pub connections_idle_closed: u64,
    /// Records received and decoded that the app never took because the run stopped
    /// (in flight at the stop): not in `events_in`.
    pub unread_at_stop: u64,
}

/// The JSON report's file, opened before the run so that a path that cannot be
/// written fails at once, and written at the end atomically: into a temporary file
/// next to it (`.NAME.tmp`), then renamed over it. A report left by an earlier run at
/// the same path is removed when the run starts, so it never looks current.
pub struct ReportFile {
    path: PathBuf,
    temp: PathBuf,
    file: Option<std::fs::File>,
}

impl ReportFile {
    /// Opens the temporary file next to `path` (creating its folder) and removes an
    /// old report at `path`.
    ///
    /// # Errors
    /// When `path` is a folder, or its folder or the temporary file cannot be created;
    /// the message names the path.
    pub fn create(path: &Path) -> Result<Self, String> {
        let cannot = |what: &Path, e: &dyn std::fmt::Display| {
            format!(
                "cannot write the report {}: {}: {e}",
                path.display(),
                what.display()
            )
        };
        if path.is_dir() {
            return Err(format!(
                "cannot write the report {}: it is a folder",
                path.display()
            ));
        }
        let name = path
            .file_name()
            .ok_or_else(|| format!("cannot write the report {}: no file name", path.display()))?;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            std::fs::create_dir_all(parent).map_err(|e| cannot(parent, &e))?;
        }
        let temp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
        let file = std::fs::File::create(&temp).map_err(|e| cannot(&temp, &e))?;
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(cannot(path, &e));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            temp,
            file: Some(file),
        })
    }

    /// Where the report goes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `json` and puts it in place.
    ///
    /// # Errors
    /// When a write, the sync or the rename fails; the message names the path.
    pub fn commit(mut self, json: &str) -> Result<(), String> {
        use std::io::Write as _;
        let mut file = self.file.take().expect("committed once");
        file.write_all(json.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&self.temp, &self.path))
            .map_err(|e| format!("cannot write the report {}: {e}", self.path.display()))
    }
}

impl Drop for ReportFile {
    fn drop(&mut self) {
        // Not committed (or the commit failed): leave no temporary file behind.
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// Latency percentiles, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// The largest.
    pub max: u64,
    /// The mean.
    pub mean: f64,
}

impl Latency {
    /// The percentiles of `histogram` (all zero when it is empty).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: histogram.mean(),
        }
    }
}

/// One shard's usage.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShardReport {
    /// The shard.
    pub shard: usize,
    /// Its CPU, when pinned.
    pub cpu: Option<usize>,
    /// Seconds spent running handlers and runtime work.
    pub busy_s: f64,
    /// Messages handled.
    pub handled: u64,
    /// Messages shed.
    pub shed: u64,
    /// Times it parked.
    pub parks: u64,
    /// The most messages its mailboxes held at once (seen at turn boundaries).
    #[serde(default)]
    pub queued_peak: u64,
}

/// A point of the timeline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// Seconds since the sources started.
    pub t_s: f64,
    /// Cores busy on average since the previous sample (sum over shards).
    pub busy_cores: f64,
    /// Per app (in app order): lessees its actors hold.
    pub lessees: Vec<u32>,
    /// Per app: records its sources emitted per second since the previous sample.
    pub events_per_s: Vec<f64>,
}

/// The `(quantile, value)` points of `histogram`'s distribution, five per halving of the
/// distance to 100 % (HdrHistogram's percentile iteration), for the CDF plot. `n` values
/// resolve quantiles up to `1 - 1/n`: the points stop there, and the last is the largest
/// value at that quantile, so that no made-up segment runs from the last real percentile
/// to a 100 % that cannot be drawn.
pub fn cdf_points(histogram: &Histogram<u64>) -> Vec<(f64, u64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let count = histogram.len();
    let last_quantile = 1.0 - 1.0 / count as f64;
    let round = |quantile: f64| (quantile * 1e12).round() / 1e12;
    let mut points: Vec<(f64, u64)> = histogram
        .iter_quantiles(5)
        .map(|step| (round(step.quantile_iterated_to()), step.value_iterated_to()))
        .filter(|&(quantile, _)| quantile < last_quantile)
        .collect();
    points.push((round(last_quantile), histogram.max()));
    points
}

/// HdrHistogram's percentile distribution text for `histogram` (nanoseconds), with values
/// in microseconds: the format HdrHistogram's plotters read.
pub fn hgrm(histogram: &Histogram<u64>) -> String {
    const SCALE: f64 = 1_000.0;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for step in histogram.iter_quantiles(5) {
        total += step.count_since_last_iteration();
        let quantile = step.quantile_iterated_to();
        let value = step.value_iterated_to() as f64 / SCALE;
        if quantile < 1.0 {
            let _ = writeln!(
                text,
                "{value:12.3} {quantile:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - quantile)
            );
        } else {
            let _ = writeln!(text, "{value:12.3} {quantile:2.12} {total:10}");
        }
    }
    let _ = writeln!(
        text,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        histogram.mean() / SCALE,
        histogram.stdev() / SCALE
    );
    let _ = writeln!(
        text,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        histogram.max() as f64 / SCALE,
        histogram.len()
    );
    let _ = writeln!(
        text,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        // HdrHistogram's sub-bucket count: 2 * 10^sigfig, rounded up to a power of two.
        (2.0 * 10f64.powi(i32::from(histogram.sigfig())))
            .log2()
            .ceil()
            .exp2() as u64
    );
    text
}

/// `n` with a comma between groups of three digits: `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// Milliseconds with three significant digits.
pub fn ms(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.3}")
    }
}

/// The summary table printed at the end of a run: per app, the records in, the outputs
/// that reached its sinks (and those written out, when a sink writes), what was dropped,
/// and its latency against its SLO. Columns are as wide as their widest cell; counts
/// have thousands separators.
pub fn summary_table(report: &Report) -> String {
    let mut text = String::new();
    let any_written = report.apps.iter().any(|app| app.outputs_written > 0);
    let mut header = vec!["app", "events in", "outputs"];
    if any_written {
        header.push("written");
    }
    header.extend([
        "dead", "shed", "late", "events/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "SLO ms",
        "met",
    ]);
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for app in &report.apps {
        let mut row = vec![
            app.name.clone(),
            thousands(app.events_in),
            thousands(app.outputs),
        ];
        if any_written {
            row.push(thousands(app.outputs_written));
        }
        row.extend([
            thousands(app.dead_letters),
            thousands(app.shed + app.shed_downstream),
            thousands(app.late),
            thousands(app.events_per_s.round() as u64),
            ms(app.latency_ns.p50),
            ms(app.latency_ns.p99),
            ms(app.latency_ns.p999),
            ms(app.latency_ns.max),
            app.slo_ms.map_or("-".to_string(), |slo| format!("{slo}")),
            app.satisfaction
                .map_or("-".to_string(), |share| format!("{:.1}%", share * 100.0)),
        ]);
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column == 0 {
                let _ = write!(line, "{cell:<width$}", width = widths[0]);
            } else {
                let _ = write!(line, "  {cell:>width$}", width = widths[column]);
            }
        }
        let _ = writeln!(text, "{}", line.trim_end());
    }
    for app in report.apps.iter() {
        if let Some(why) = &app.failed {
            let _ = writeln!(
                text,
                "app {} FAILED: a handler panicked: {why} ({} handler panic(s); {} records discarded on the way in, {} further in)",
                app.name, app.handler_panics, app.discarded, app.discarded_downstream
            );
        }
    }
    let busy: Vec<String> = report
        .shard_usage
        .iter()
        .map(|shard| format!("{:.2}", shard.busy_s))
        .collect();
    let _ = writeln!(
        text,
        "{} shards, policy {}, {:.1} s; busy seconds per shard: {}",
        report.shards,
        report.policy,
        report.elapsed_s,
        busy.join(", ")
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram() -> Histogram<u64> {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for value in 1..=10_000u64 {
            histogram.record(value * 1_000).unwrap();
        }
        histogram
    }

    #[test]
    fn the_cdf_ends_at_the_last_real_percentile() {
        let mut few = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for value in [1_000_000u64, 2_000_000, 3_000_000, 4_000_000, 90_000_000] {
            few.record(value).unwrap();
        }
        let points = cdf_points(&few);
        let &(last_quantile, last_value) = points.last().unwrap();
        // Five values resolve quantiles up to 80 %: the largest is drawn there, not at
        // 100 % (which a log-tail axis would put at 99.99999 %).
        assert_eq!(last_quantile, 0.8, "{points:?}");
        assert_eq!(last_value, few.max());
        assert!(points.iter().all(|&(q, _)| q <= 0.8), "{points:?}");
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1),
            "{points:?}"
        );
        assert!(cdf_points(&Histogram::<u64>::new(3).unwrap()).is_empty());
        let many = cdf_points(&histogram());
        assert_eq!(many.last().unwrap().0, 0.9999);
    }

    fn app(name: &str, events_in: u64, outputs: u64) -> AppReport {
        AppReport {
            name: name.into(),
            slo_ms: Some(20.0),
            events_in,
            events_out: events_in,
            dead_letters: 0,
            dead_letter_file: None,
            shed: 0,
            shed_downstream: 0,
            late: 0,
            failed: None,
            handler_panics: 0,
            discarded: 0,
            discarded_downstream: 0,
            outputs,
            outputs_written: 0,
            outputs_failed: 0,
            dead_letters_written: 0,
            dead_letters_failed: 0,
            dead_letters_suppressed: 0,
            tcp: None,
            events_per_s: 123_456.7,
            latency_ns: Latency::of(&histogram()),
            satisfaction: Some(0.5),
            hgrm: None,
            hlog: None,
            cdf: Vec::new(),
            latency_timeline: Vec::new(),
            operators: Vec::new(),
        }
    }

    #[test]
    fn the_summary_shows_sink_outputs_in_aligned_columns() {
        let report = Report {
            config: "x.toml".into(),
            meta: None,
            policy: "dirigo".into(),
            shards: 2,
            elapsed_s: 1.0,
            duration_s: 1.0,
            signals: 0,
            drained: true,
            abandoned: 0,
            apps: vec![
                app("a", 1_234_567, 89_012),
                app("a-much-longer-app-name-than-sixteen", 5, 5),
            ],
            shard_usage: Vec::new(),
            failed_apps: Vec::new(),
            handler_panics: 0,
            timeline: Vec::new(),
            output_errors: Vec::new(),
            checkpoints: None,
        };
        let table = summary_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("outputs"), "{table}");
        assert!(
            lines[1].contains("1,234,567") && lines[1].contains("89,012"),
            "{table}"
        );
        assert!(lines[1].contains("123,457"), "events/s grouped: {table}");
        // Every row as wide as the header: a long name widens the column, not its row.
        let width = lines[0].chars().count();
        assert!(
            lines[1..3].iter().all(|line| line.chars().count() == width),
            "{table}"
        );
        let outputs_at = lines[0].find("outputs").unwrap() + "outputs".len();
        assert_eq!(&lines[2][outputs_at - 1..outputs_at], "5", "{table}");
    }

    #[test]
    fn thousands_and_times_read_right() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
        assert_eq!(
            rfc3339(std::time::Duration::from_millis(1_796_609_926_682)),
            "2026-12-07T02:18:46.682Z"
        );
        assert_eq!(
            rfc3339(std::time::Duration::ZERO),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(std::time::Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn hgrm_lists_percentiles_and_the_totals() {
        let text = hgrm(&histogram());
        let rows: Vec<&str> = text
            .lines()
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
            .skip(1)
            .collect();
        assert!(rows.len() > 20, "{text}");
        let last: Vec<&str> = rows.last().unwrap().split_whitespace().collect();
        assert_eq!(last[2], "10000", "the last row counts everything: {text}");
        assert!(last[1].starts_with("1.000000000000"), "{text}");
        let median = rows
            .iter()
            .map(|row| row.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols[1].parse::<f64>().unwrap() >= 0.5)
            .unwrap();
        let value: f64 = median[0].parse().unwrap();
        assert!((4_990.0..5_010.0).contains(&value), "{value}");
        let max_line = text.lines().find(|line| line.starts_with("#[Max")).unwrap();
        assert!(
            max_line.contains("Total count    =        10000]"),
            "{max_line}"
        );
        let max: f64 = max_line[11..24].trim().parse().unwrap();
        assert!((9_990.0..10_020.0).contains(&max), "{max_line}");
    }
}
