//! The SVG plots of a report, drawn from its JSON alone (so `dirigo report` redraws
//! them): the latency CDF (`latency-cdf.svg`), latency over time (`latency.svg`, p50 and
//! p99 per second per app against each SLO), events per second (`events.svg`), busy
//! cores (`busy-cores.svg`) and lessees (`lessees.svg`).

use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::report::Report;

/// The plots, by file name, and what draws each.
/// Draws one plot of a report into a file.
type Draw = fn(&Report, &Path) -> PlotResult;

const PLOTS: [(&str, Draw); 5] = [
    ("latency-cdf.svg", latency_cdf),
    ("latency.svg", latency_over_time),
    ("events.svg", events_per_s),
    ("busy-cores.svg", busy_cores),
    ("lessees.svg", lessees),
];

/// Writes the plots into `dir`; returns their paths.
pub fn plot(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for (name, draw) in PLOTS {
        let path = dir.join(name);
        draw(report, &path).map_err(|e| format!("{name}: {e}"))?;
        paths.push(path);
    }
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
    // Whole decades, labelled at each power of ten only: plotters' log axis otherwise
    // labels nothing below the first power of ten in range, and every power of ten
    // twice.
    let (low, high) = decades(min_ms * 0.8, max_ms * 1.5);
    let decade_count = (high / low).log10().round().max(1.0) as usize;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency by percentile", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0_f64..max_x * 1.2).log_scale(), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_labels(decade_count + 1)
        .y_label_formatter(&|y| ms_label(*y))
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
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(1.0, slo), (max_x * 1.2, slo)],
                    6,
                    4,
                    color.stroke_width(1),
                ))?
                .label(format!("{} SLO {} ms", app.name, ms_label(slo)))
                .legend(move |(x, y)| {
                    // A dashed swatch, like the line.
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (6, 0)], color)
                        + PathElement::new(vec![(10, 0), (16, 0)], color)
                });
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

/// `low..high` widened to whole powers of ten.
fn decades(low: f64, high: f64) -> (f64, f64) {
    let low = 10f64.powf(low.max(1e-6).log10().floor());
    let high = 10f64.powf(high.max(low * 10.0).log10().ceil());
    (low, high)
}

/// A latency axis label: milliseconds with no more digits than they need (`0.05`, `2`,
/// `1500`), never `1000000.0`.
pub fn ms_label(ms: f64) -> String {
    if ms <= 0.0 {
        return "0".into();
    }
    let text = if ms >= 100.0 {
        format!("{ms:.0}")
    } else {
        // Three significant digits, trailing zeros dropped.
        let decimals = (2 - ms.log10().floor() as i32).clamp(0, 9) as usize;
        let text = format!("{ms:.decimals$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text
        }
    };
    if ms >= 10_000.0 {
        crate::report::thousands(ms.round() as u64)
    } else {
        text
    }
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

/// p50 (thin) and p99 (thick) latency per second of each app, with its SLO dashed; a
/// late start or a stall shows at once. Seconds without outputs leave a gap.
fn latency_over_time(report: &Report, path: &Path) -> PlotResult {
    let top = report
        .apps
        .iter()
        .flat_map(|app| {
            app.latency_timeline
                .iter()
                .filter_map(|point| point.p99_ms)
                .chain(app.slo_ms)
        })
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let end = report
        .apps
        .iter()
        .filter_map(|app| app.latency_timeline.last())
        .map(|point| point.t_s)
        .fold(0.1_f64, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Latency over time (p50 thin, p99 thick)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end, 0.0..top * 1.2)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("latency (ms)")
        .y_label_formatter(&|y| ms_label(*y))
        .draw()?;
    for (index, app) in report.apps.iter().enumerate() {
        let color = palette(index);
        // Each run of seconds with outputs is one line; a gap breaks it.
        for (thick, pick) in [
            (
                false,
                (|p| p.p50_ms) as fn(&crate::live::LatencyPoint) -> Option<f64>,
            ),
            (true, |p| p.p99_ms),
        ] {
            let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for point in &app.latency_timeline {
                match pick(point) {
                    Some(ms) => runs.last_mut().expect("one run").push((point.t_s, ms)),
                    None => runs.push(Vec::new()),
                }
            }
            for (n, run) in runs.into_iter().filter(|run| !run.is_empty()).enumerate() {
                let series = chart.draw_series(LineSeries::new(
                    run,
                    color.stroke_width(if thick { 2 } else { 1 }),
                ))?;
                if thick && n == 0 {
                    series
                        .label(format!("{} p99", app.name))
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
                }
            }
        }
        if let Some(slo) = app.slo_ms {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, slo), (end, slo)],
                    6,
                    4,
                    color.stroke_width(1),
                ))?
                .label(format!("{} SLO {} ms", app.name, ms_label(slo)))
                .legend(move |(x, y)| {
                    // A dashed swatch, like the line.
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (6, 0)], color)
                        + PathElement::new(vec![(10, 0), (16, 0)], color)
                });
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

/// Records each app's sources emitted per second, from the timeline.
fn events_per_s(report: &Report, path: &Path) -> PlotResult {
    let top = report
        .timeline
        .iter()
        .flat_map(|sample| sample.events_per_s.iter().copied())
        .fold(1.0_f64, f64::max);
    timeline_plot(
        report,
        path,
        ("Events per second", "events/s"),
        top * 1.2,
        true,
        |chart, _| {
            for (index, app) in report.apps.iter().enumerate() {
                let color = palette(index);
                chart
                    .draw_series(LineSeries::new(
                        report.timeline.iter().map(|sample| {
                            (
                                sample.t_s,
                                sample.events_per_s.get(index).copied().unwrap_or(0.0),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_read_like_percentiles() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(2.0), "50%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
    }

    #[test]
    fn latency_axes_span_whole_decades() {
        let close = |(a, b): (f64, f64), (x, y): (f64, f64)| {
            assert!(
                (a / x - 1.0).abs() < 1e-9 && (b / y - 1.0).abs() < 1e-9,
                "{a}..{b}"
            );
        };
        close(decades(16.0, 1500.0), (10.0, 10_000.0));
        close(decades(0.05, 0.2), (0.01, 1.0));
        // At least one decade, however narrow the values.
        close(decades(20.0, 20.0), (10.0, 100.0));
    }

    #[test]
    fn latency_labels_read_like_milliseconds() {
        assert_eq!(ms_label(1_000_000.0), "1,000,000");
        assert_eq!(ms_label(1500.0), "1500");
        assert_eq!(ms_label(12.5), "12.5");
        assert_eq!(ms_label(2.0), "2");
        assert_eq!(ms_label(0.05), "0.05");
        assert_eq!(ms_label(0.001234), "0.00123");
    }
}
