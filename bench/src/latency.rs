//! Latency summaries: what every benchmark reports for a latency, in nanoseconds.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles and mean of a latency distribution, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Mean.
    pub mean: f64,
}

impl LatencySummary {
    /// Summarizes a histogram of nanosecond values.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            p50: histogram.value_at_quantile(0.50),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            mean: histogram.mean(),
        }
    }
}

/// A histogram for nanosecond latencies from 1 ns to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static bounds are valid")
}

/// Records `value` ns, clamping into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, value: u64) {
    histogram.saturating_record(value.max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_percentiles() {
        let mut histogram = new_histogram();
        for value in 1..=1000 {
            record(&mut histogram, value);
        }
        let summary = LatencySummary::of(&histogram);
        assert!((499..=501).contains(&summary.p50));
        assert!((989..=991).contains(&summary.p99));
        assert!((998..=1000).contains(&summary.p999));
        assert!((summary.mean - 500.5).abs() < 1.0);
    }
}
