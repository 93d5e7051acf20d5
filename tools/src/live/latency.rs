//! One app's latency while it runs: what its sinks recorded since the last look, folded
//! into per-second percentiles (the report's latency over time), the last few seconds'
//! p50/p99 (the progress line, the live page), Prometheus histogram buckets, and the
//! per-second histograms of the `.hlog` interval log.
//!
//! The watch takes the sinks' fresh values with [`LatencyRecorder::take_recent`], which
//! swaps two histograms under the sinks' lock and copies nothing there; everything else
//! happens on the watching thread.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use dirigo_operators::sink::LatencyRecorder;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// How many whole seconds "recent" covers (the progress line's and the page's p99).
pub const RECENT_SECONDS: usize = 5;

/// The most per-second points (and `.hlog` intervals) an app keeps: a day. A longer run
/// keeps its first day's and says so in the log.
pub const MAX_SECONDS_KEPT: usize = 86_400;

/// The upper bounds of the Prometheus latency buckets, in seconds (the app's SLO is
/// added as one more, so that `le="<SLO>"` counts the outputs within it).
pub const BUCKET_BOUNDS_S: [f64; 19] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The latency of one second of the run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LatencyPoint {
    /// The second's end, in seconds since the sources started.
    pub t_s: f64,
    /// Outputs recorded in the second.
    pub outputs: u64,
    /// Their median latency, ms (`None` without outputs).
    pub p50_ms: Option<f64>,
    /// Their 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Their largest, ms.
    pub max_ms: Option<f64>,
}

/// Cumulative latency buckets, as Prometheus histograms count them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets {
    /// `(upper bound in seconds, outputs at or below it)`, ascending; `+Inf` is `count`.
    pub cumulative: Vec<(f64, u64)>,
    /// Sum of the latencies, seconds.
    pub sum_s: f64,
    /// Outputs.
    pub count: u64,
}

/// One app's latency watch.
pub struct LatencyWatch {
    recorder: LatencyRecorder,
    /// Swapped with the sinks' fresh histogram at each look.
    interval: Histogram<u64>,
    /// The second being filled.
    second: Histogram<u64>,
    second_index: u64,
    /// The last closed seconds, newest last.
    recent: VecDeque<Histogram<u64>>,
    recent_percentiles: Option<(u64, u64)>,
    /// Bucket bounds, ns, ascending, and the outputs in each (not cumulative).
    bounds_ns: Vec<u64>,
    bounds_s: Vec<f64>,
    in_bucket: Vec<u64>,
    above_all: u64,
    sum_ns: f64,
    count: u64,
    points: Vec<LatencyPoint>,
    /// Each closed second's histogram, compressed (HdrHistogram's V2 + deflate).
    intervals: Vec<(u64, Vec<u8>)>,
    serializer: V2DeflateSerializer,
    dropped_seconds: u64,
}

impl LatencyWatch {
    /// Watches `recorder`; `slo` adds a bucket bound.
    pub fn new(recorder: LatencyRecorder, slo: Option<Duration>) -> Self {
        let mut bounds_s: Vec<f64> = BUCKET_BOUNDS_S.to_vec();
        if let Some(slo) = slo {
            let slo_s = slo.as_secs_f64();
            if !bounds_s.iter().any(|bound| (bound - slo_s).abs() < 1e-12) {
                bounds_s.push(slo_s);
                bounds_s.sort_by(f64::total_cmp);
            }
        }
        let bounds_ns = bounds_s
            .iter()
            .map(|bound| (bound * 1e9).round() as u64)
            .collect();
        Self {
            recorder,
            interval: LatencyRecorder::empty_histogram(),
            second: LatencyRecorder::empty_histogram(),
            second_index: 0,
            recent: VecDeque::with_capacity(RECENT_SECONDS + 1),
            recent_percentiles: None,
            in_bucket: vec![0; bounds_s.len()],
            bounds_ns,
            bounds_s,
            above_all: 0,
            sum_ns: 0.0,
            count: 0,
            points: Vec::new(),
            intervals: Vec::new(),
            serializer: V2DeflateSerializer::new(),
            dropped_seconds: 0,
        }
    }

    /// Takes what the sinks recorded since the last look; `elapsed` is the time since
    /// the sources started. Closes every second that ended.
    pub fn look(&mut self, elapsed: Duration) {
        self.recorder.take_recent(&mut self.interval);
        for step in self.interval.iter_recorded() {
            let value = step.value_iterated_to();
            let n = step.count_at_value();
            let bucket = self.bounds_ns.partition_point(|&bound| bound < value);
            match self.in_bucket.get_mut(bucket) {
                Some(count) => *count += n,
                None => self.above_all += n,
            }
            self.sum_ns += value as f64 * n as f64;
            self.count += n;
        }
        // Values taken now count in the second the look falls in (they arrived at most
        // one sampling interval before it).
        let now_index = elapsed.as_secs();
        while self.second_index < now_index {
            self.close_second();
        }
        let _ = self.second.add(&self.interval);
    }

    /// Takes the last values and closes the last (partial) second: the run ended at
    /// `elapsed`.
    pub fn finish(&mut self, elapsed: Duration) {
        self.look(elapsed);
        if !self.second.is_empty() || elapsed.as_secs_f64() > self.second_index as f64 {
            let end = elapsed.as_secs_f64();
            self.close_second_at(end);
        }
    }

    fn close_second(&mut self) {
        let end = (self.second_index + 1) as f64;
        self.close_second_at(end);
    }

    fn close_second_at(&mut self, end_s: f64) {
        let histogram = &self.second;
        let ms = |ns: u64| ns as f64 / 1e6;
        let point = if histogram.is_empty() {
            LatencyPoint {
                t_s: end_s,
                outputs: 0,
                p50_ms: None,
                p99_ms: None,
                max_ms: None,
            }
        } else {
            LatencyPoint {
                t_s: end_s,
                outputs: histogram.len(),
                p50_ms: Some(ms(histogram.value_at_quantile(0.5))),
                p99_ms: Some(ms(histogram.value_at_quantile(0.99))),
                max_ms: Some(ms(histogram.max())),
            }
        };
        if self.points.len() < MAX_SECONDS_KEPT {
            self.points.push(point);
            let mut bytes = Vec::new();
            if self.serializer.serialize(histogram, &mut bytes).is_ok() {
                self.intervals.push((self.second_index, bytes));
            }
        } else {
            self.dropped_seconds += 1;
        }
        // The closed second joins the recent ones; the oldest leaves (its memory is
        // reused for the next second).
        let mut next = if self.recent.len() >= RECENT_SECONDS {
            let mut oldest = self.recent.pop_front().expect("RECENT_SECONDS > 0");
            oldest.reset();
            oldest
        } else {
            LatencyRecorder::empty_histogram()
        };
        std::mem::swap(&mut next, &mut self.second);
        self.recent.push_back(next);
        self.second_index += 1;
        self.recent_percentiles = self.percentiles_of_recent();
    }

    fn percentiles_of_recent(&self) -> Option<(u64, u64)> {
        let mut merged = LatencyRecorder::empty_histogram();
        for second in &self.recent {
            let _ = merged.add(second);
        }
        (!merged.is_empty()).then(|| {
            (
                merged.value_at_quantile(0.5),
                merged.value_at_quantile(0.99),
            )
        })
    }

    /// p50 and p99 over the last [`RECENT_SECONDS`] whole seconds, ns (`None` when they
    /// had no output).
    pub fn recent(&self) -> Option<(u64, u64)> {
        self.recent_percentiles
    }

    /// Every output's latency bucketed so far.
    pub fn buckets(&self) -> Buckets {
        let mut running = 0;
        let cumulative = self
            .bounds_s
            .iter()
            .zip(&self.in_bucket)
            .map(|(&bound, &n)| {
                running += n;
                (bound, running)
            })
            .collect();
        Buckets {
            cumulative,
            sum_s: self.sum_ns / 1e9,
            count: self.count,
        }
    }

    /// The latency of each second so far.
    pub fn points(&self) -> &[LatencyPoint] {
        &self.points
    }

    /// Seconds past [`MAX_SECONDS_KEPT`], not kept.
    pub fn dropped_seconds(&self) -> u64 {
        self.dropped_seconds
    }

    /// Writes the `.hlog` interval log of the closed seconds (HdrHistogram's interval
    /// log, values in nanoseconds, max in ms) into `out`; `start` is when the sources
    /// started.
    pub fn write_hlog(
        &self,
        out: &mut impl std::io::Write,
        start: SystemTime,
    ) -> Result<(), String> {
        use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
        use hdrhistogram::serialization::Deserializer;
        let mut serializer = V2DeflateSerializer::new();
        let mut log = IntervalLogWriterBuilder::new()
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(1e6)
            .add_comment("dirigo latency, nanoseconds from intended send time to output; one interval per second")
            .begin_log_with(out, &mut serializer)
            .map_err(|e| e.to_string())?;
        let mut deserializer = Deserializer::new();
        for (index, bytes) in &self.intervals {
            let histogram: Histogram<u64> = deserializer
                .deserialize(&mut bytes.as_slice())
                .map_err(|e| format!("interval {index}: {e:?}"))?;
            log.write_histogram(
                &histogram,
                Duration::from_secs(*index),
                Duration::from_secs(1),
                None,
            )
            .map_err(|e| format!("{e:?}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `values` to `recorder` the way a latency sink does at a watermark.
    fn record(recorder: &LatencyRecorder, values: &[u64]) {
        let mut histogram = LatencyRecorder::empty_histogram();
        for &value in values {
            histogram.record(value).unwrap();
        }
        recorder.add(&histogram);
    }

    #[test]
    fn seconds_close_with_their_percentiles() {
        let recorder = LatencyRecorder::new();
        let mut watch = LatencyWatch::new(recorder.clone(), Some(Duration::from_millis(5)));
        record(&recorder, &[1_000_000; 99]);
        record(&recorder, &[9_000_000]);
        watch.look(Duration::from_millis(400));
        assert!(watch.points().is_empty());
        watch.look(Duration::from_millis(1_100));
        let first = &watch.points()[0];
        assert_eq!(first.outputs, 100);
        assert!((first.p50_ms.unwrap() - 1.0).abs() < 0.01, "{first:?}");
        assert!((first.p99_ms.unwrap() - 1.0).abs() < 0.01, "{first:?}");
        assert!((first.max_ms.unwrap() - 9.0).abs() < 0.01, "{first:?}");
        // An empty second, then the run ends mid-second.
        record(&recorder, &[2_000_000]);
        watch.finish(Duration::from_millis(2_500));
        let points = watch.points();
        assert_eq!(points.len(), 3, "{points:?}");
        assert_eq!(points[1].outputs, 0);
        assert_eq!(points[2].outputs, 1);
        assert!((points[2].t_s - 2.5).abs() < 1e-9);
        let (p50, _) = watch.recent().unwrap();
        assert_eq!(
            p50, 1_000_447,
            "the recent seconds hold 101 outputs of 1 ms"
        );
        let buckets = watch.buckets();
        assert_eq!(buckets.count, 101);
        let at = |bound: f64| {
            buckets
                .cumulative
                .iter()
                .find(|(b, _)| (b - bound).abs() < 1e-12)
                .unwrap()
                .1
        };
        assert_eq!(
            at(0.001),
            0,
            "1 ms recorded as its bucket's upper end, just above"
        );
        assert_eq!(at(0.0025), 100);
        assert_eq!(at(0.005), 100, "the SLO is a bound too");
        assert_eq!(at(0.01), 101);
    }

    #[test]
    fn the_hlog_reads_back_with_hdrhistogram() {
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        let recorder = LatencyRecorder::new();
        let mut watch = LatencyWatch::new(recorder.clone(), None);
        record(&recorder, &[3_000, 4_000]);
        watch.look(Duration::from_millis(200));
        watch.look(Duration::from_millis(1_200));
        record(&recorder, &[5_000]);
        watch.finish(Duration::from_millis(1_500));
        let mut log = Vec::new();
        watch.write_hlog(&mut log, SystemTime::now()).unwrap();
        let text = String::from_utf8(log).unwrap();
        let intervals: Vec<_> = IntervalLogIterator::new(text.as_bytes())
            .filter_map(|entry| match entry {
                Ok(LogEntry::Interval(interval)) => Some(interval),
                _ => None,
            })
            .collect();
        assert_eq!(intervals.len(), 2, "{text}");
        assert_eq!(intervals[1].start_timestamp(), Duration::from_secs(1));
        let mut deserializer = hdrhistogram::serialization::Deserializer::new();
        let second: Histogram<u64> = deserializer
            .deserialize(&mut base64_decode(intervals[0].encoded_histogram()).as_slice())
            .unwrap();
        assert_eq!(second.len(), 2);
    }

    fn base64_decode(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = 0u32;
        let mut held = 0;
        let mut out = Vec::new();
        for byte in text.bytes().filter(|&b| b != b'=') {
            let value = ALPHABET.iter().position(|&a| a == byte).unwrap() as u32;
            bits = (bits << 6) | value;
            held += 6;
            if held >= 8 {
                held -= 8;
                out.push((bits >> held) as u8);
            }
        }
        out
    }
}
