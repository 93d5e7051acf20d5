//! The report of a run: the JSON document `dirigo run` writes, the `.hgrm` file of each
//! app's latency (HdrHistogram's percentile-distribution text, in microseconds), the SVG
//! plots, and the summary table. `dirigo report REPORT.json --out DIR` draws the plots
//! again from a saved report: everything they show is in the JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// The whole report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The configuration file (`(built-in default)` for the embedded one).
    pub config: String,
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
    /// Records the operators after the sources took in.
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
    /// A TCP source's connections and the records it never handed to the app.
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
    /// The latency distribution: `(quantile, ns)` points, for the CDF plot.
    pub cdf: Vec<(f64, u64)>,
}

/// What a TCP source refused, closed and left unread.
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
/// distance to 100 % (HdrHistogram's percentile iteration), for the CDF plot.
pub fn cdf_points(histogram: &Histogram<u64>) -> Vec<(f64, u64)> {
    histogram
        .iter_quantiles(5)
        .map(|step| {
            let quantile = (step.quantile_iterated_to() * 1e12).round() / 1e12;
            (quantile, step.value_iterated_to())
        })
        .collect()
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

/// Writes the three plots into `dir`; returns their paths.
pub fn plot(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let paths = vec![
        dir.join("latency-cdf.svg"),
        dir.join("busy-cores.svg"),
        dir.join("lessees.svg"),
    ];
    latency_cdf(report, &paths[0]).map_err(|e| format!("latency plot: {e}"))?;
    busy_cores(report, &paths[1]).map_err(|e| format!("busy-cores plot: {e}"))?;
    lessees(report, &paths[2]).map_err(|e| format!("lessees plot: {e}"))?;
    Ok(paths)
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

const SIZE: (u32, u32) = (900, 540);

fn palette(index: usize) -> RGBColor {
    const COLORS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    COLORS[index % COLORS.len()]
}

/// Latency against percentile, HdrHistogram style: the x axis is `1 / (1 - quantile)` on
/// a log scale, so the tail (99 %, 99.9 %, 99.99 %) gets as much room as the body; the
/// latency axis is logarithmic too. Each app's SLO is a dashed line.
fn latency_cdf(report: &Report, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let max_x = report
        .apps
        .iter()
        .flat_map(|app| app.cdf.iter())
        .map(|&(q, _)| inverse_tail(q))
        .fold(100.0_f64, f64::max);
    let max_ms = report
        .apps
        .iter()
        .flat_map(|app| {
            app.cdf
                .iter()
                .map(|&(_, ns)| ns as f64 / 1e6)
                .chain(app.slo_ms)
        })
        .fold(0.01_f64, f64::max);
    let min_ms = report
        .apps
        .iter()
        .flat_map(|app| app.cdf.iter())
        .map(|&(_, ns)| ns as f64 / 1e6)
        .filter(|ms| *ms > 0.0)
        .fold(max_ms, f64::min)
        .min(max_ms / 10.0);
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency by percentile", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (1.0_f64..max_x * 1.2).log_scale(),
            (min_ms * 0.8..max_ms * 1.5).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .draw()?;
    for (index, app) in report.apps.iter().enumerate() {
        let color = palette(index);
        let points: Vec<(f64, f64)> = app
            .cdf
            .iter()
            .map(|&(q, ns)| (inverse_tail(q), (ns as f64 / 1e6).max(min_ms)))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(app.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        if let Some(slo) = app.slo_ms {
            chart.draw_series(DashedLineSeries::new(
                vec![(1.0, slo), (max_x * 1.2, slo)],
                6,
                4,
                color.stroke_width(1),
            ))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

/// `1 / (1 - q)`, capped where `q` is 1.
fn inverse_tail(quantile: f64) -> f64 {
    1.0 / (1.0 - quantile).max(1e-7)
}

fn percentile_label(x: f64) -> String {
    let percent = 100.0 * (1.0 - 1.0 / x);
    if percent < 90.0 {
        format!("{percent:.0}%")
    } else {
        let digits = (-(1.0 - percent / 100.0).log10()).round() as usize;
        format!("{percent:.*}%", digits.saturating_sub(2))
    }
}

type TimelineChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A plot over the run's timeline: seconds across, `0..top` up; `draw` adds the series
/// (given the chart and the last second), labelled in a legend when `legend`.
fn timeline_plot(
    report: &Report,
    path: &Path,
    (caption, y_desc): (&str, &str),
    top: f64,
    legend: bool,
    draw: impl FnOnce(&mut TimelineChart<'_, '_>, f64) -> PlotResult,
) -> PlotResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let end = report
        .timeline
        .last()
        .map_or(1.0, |sample| sample.t_s)
        .max(0.1);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_desc)
        .draw()?;
    draw(&mut chart, end)?;
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn busy_cores(report: &Report, path: &Path) -> PlotResult {
    let shards = report.shards as f64;
    let top = report
        .timeline
        .iter()
        .map(|sample| sample.busy_cores)
        .fold(shards, f64::max);
    timeline_plot(
        report,
        path,
        ("Busy cores", "cores busy (all shards)"),
        top * 1.1,
        false,
        |chart, end| {
            chart.draw_series(LineSeries::new(
                report
                    .timeline
                    .iter()
                    .map(|sample| (sample.t_s, sample.busy_cores)),
                palette(0).stroke_width(2),
            ))?;
            chart.draw_series(DashedLineSeries::new(
                vec![(0.0, shards), (end, shards)],
                6,
                4,
                BLACK.stroke_width(1),
            ))?;
            Ok(())
        },
    )
}

fn lessees(report: &Report, path: &Path) -> PlotResult {
    let top = report
        .timeline
        .iter()
        .flat_map(|sample| sample.lessees.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    timeline_plot(
        report,
        path,
        ("Lessees", "lessees held"),
        f64::from(top) * 1.2,
        true,
        |chart, _| {
            for (index, app) in report.apps.iter().enumerate() {
                let color = palette(index);
                chart
                    .draw_series(LineSeries::new(
                        report.timeline.iter().map(|sample| {
                            (
                                sample.t_s,
                                f64::from(sample.lessees.get(index).copied().unwrap_or(0)),
                            )
                        }),
                        color.stroke_width(2),
                    ))?
                    .label(app.name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
            Ok(())
        },
    )
}

/// Milliseconds with three significant digits.
fn ms(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.3}")
    }
}

/// The summary table printed at the end of a run.
pub fn summary_table(report: &Report) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<16} {:>11} {:>11} {:>7} {:>9} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "app",
        "events in",
        "events out",
        "dead",
        "shed",
        "events/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "SLO ms",
        "met"
    );
    for app in &report.apps {
        let _ = writeln!(
            text,
            "{:<16} {:>11} {:>11} {:>7} {:>9} {:>11.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
            app.name,
            app.events_in,
            app.events_out,
            app.dead_letters,
            app.shed,
            app.events_per_s,
            ms(app.latency_ns.p50),
            ms(app.latency_ns.p99),
            ms(app.latency_ns.p999),
            ms(app.latency_ns.max),
            app.slo_ms.map_or("-".to_string(), |slo| format!("{slo}")),
            app.satisfaction
                .map_or("-".to_string(), |share| format!("{:.1}%", share * 100.0)),
        );
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

    #[test]
    fn percentile_labels_read_like_percentiles() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(2.0), "50%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
    }
}
