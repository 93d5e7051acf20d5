//! Sinks: where records leave an app. A sink partition hands each record to a
//! [`SinkWriter`] with its latency, and tells the app when its inputs have ended.
//!
//! Latency is `now − ingress`, where ingress is the intended send time the source stamped
//! on the batch the record descends from (for a window's output, the batch whose watermark
//! closed the window). Built-in writers: collect in memory ([`Stream::collect`]), the
//! latency recorder ([`LatencyRecorder`]), JSON lines to a file or stdout
//! ([`Stream::sink_json_lines`]), and a count ([`Stream::count`]).

use std::any::Any;
use std::io::Write;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dirigo_runtime::{Context, Nanos, PartitionId, StateKind};
use hdrhistogram::Histogram;

use crate::dataflow::{
    add_operator, batch_of, AppCounters, Data, Logic, Msg, Stream, Time, Wiring,
};
use crate::partition::Partitioning;

/// Receives one sink partition's records.
pub trait SinkWriter<T>: 'static {
    /// One record, with its event time and its latency in nanoseconds.
    fn write(&mut self, time: Time, record: T, latency_ns: Nanos);
    /// A batch of records arrived at `now` (the runtime's clock,
    /// [`dirigo_runtime::clock::now`]); its records follow through
    /// [`write`](Self::write). For writers that time records their own way, without a
    /// clock reading per record.
    fn begin_batch(&mut self, now: Nanos) {
        let _ = now;
    }
    /// The input frontier advanced (every record with an earlier time has been written).
    fn frontier(&mut self, frontier: Time) {
        let _ = frontier;
    }
    /// Every input has ended: nothing follows, neither records nor frontiers. A writer
    /// that publishes at [`frontier`](Self::frontier) publishes here too.
    fn finish(&mut self) {}
}

struct SinkLogic<T, W> {
    writer: W,
    counters: Arc<AppCounters>,
    _records: PhantomData<fn(T)>,
}

impl<T: Data, W: SinkWriter<T>> Logic for SinkLogic<T, W> {
    fn on_data(&mut self, ctx: &mut Context<'_, Msg>, _input: usize, data: Box<dyn Any + Send>) {
        let batch = batch_of::<T>(data);
        let now = ctx.now();
        let latency = now.saturating_sub(ctx.current().ingress);
        self.writer.begin_batch(now);
        for (time, record) in batch {
            self.writer.write(time, record, latency);
        }
    }

    fn on_frontier(&mut self, _ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.writer.frontier(frontier);
    }

    fn forward_frontier(&mut self, _: &mut Context<'_, Msg>, _: Time) {}

    /// Every input has ended ([`Msg::End`]; no time ends a sink): the writer finishes and
    /// the app learns that one more sink partition is done.
    fn on_end(&mut self, _ctx: &mut Context<'_, Msg>) {
        self.writer.finish();
        self.counters.sink_finished();
    }

    fn forward_end(&mut self, _: &mut Context<'_, Msg>) {}
}

/// Records a sink collected, shared with whoever built the app.
pub struct Collected<T> {
    records: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for Collected<T> {
    fn clone(&self) -> Self {
        Self {
            records: self.records.clone(),
        }
    }
}

impl<T> Collected<T> {
    /// Takes what has been collected so far.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many records are waiting to be taken.
    pub fn len(&self) -> usize {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is waiting to be taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct CollectWriter<T> {
    local: Vec<T>,
    shared: Arc<Mutex<Vec<T>>>,
}

impl<T: Send + 'static> SinkWriter<T> for CollectWriter<T> {
    fn write(&mut self, _: Time, record: T, _: Nanos) {
        self.local.push(record);
    }
    fn frontier(&mut self, _: Time) {
        if !self.local.is_empty() {
            self.shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(&mut self.local);
        }
    }
    fn finish(&mut self) {
        <Self as SinkWriter<T>>::frontier(self, 0);
    }
}

/// The latency recorder: an HdrHistogram of every output's latency (nanoseconds, three
/// significant digits, up to an hour), merged from every partition.
#[derive(Clone)]
pub struct LatencyRecorder {
    histogram: Arc<Mutex<Histogram<u64>>>,
    outputs: Arc<AtomicU64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            histogram: Arc::new(Mutex::new(new_histogram())),
            outputs: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A copy of the histogram so far.
    pub fn histogram(&self) -> Histogram<u64> {
        self.histogram
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Outputs recorded so far (counted as they arrive; the histogram catches up at each
    /// watermark).
    pub fn outputs(&self) -> u64 {
        self.outputs.load(Ordering::Relaxed)
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

struct LatencyWriter {
    local: Histogram<u64>,
    shared: LatencyRecorder,
    pending: u64,
}

impl<T: 'static> SinkWriter<T> for LatencyWriter {
    fn write(&mut self, _: Time, _: T, latency_ns: Nanos) {
        self.local.saturating_record(latency_ns.max(1));
        self.pending += 1;
    }
    fn frontier(&mut self, _: Time) {
        if self.pending > 0 {
            let mut shared = self
                .shared
                .histogram
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Same bounds on both sides: adding cannot fail.
            let _ = shared.add(&self.local);
            self.local.reset();
            self.shared
                .outputs
                .fetch_add(self.pending, Ordering::Relaxed);
            self.pending = 0;
        }
    }
    fn finish(&mut self) {
        <Self as SinkWriter<T>>::frontier(self, 0);
    }
}

impl<T: Data> Stream<T> {
    /// Ends the stream in a sink whose partitions write through `make(partition)`.
    pub fn sink<W: SinkWriter<T>>(
        &self,
        name: &str,
        make: impl Fn(PartitionId) -> W + Send + Sync + 'static,
    ) {
        let make = Arc::new(make);
        let node = add_operator(
            self.graph(),
            name,
            StateKind::Exclusive,
            Arc::new(move |wiring: &Wiring, partition| {
                Box::new(SinkLogic {
                    writer: make(partition),
                    counters: wiring.counters.clone(),
                    _records: PhantomData::<fn(T)>,
                }) as Box<dyn Logic>
            }),
        );
        self.connect(node, Partitioning::Forward, None);
        self.mark_sink(node);
    }

    /// Collects every record in memory (for tests and small results).
    pub fn collect(&self, name: &str) -> Collected<T> {
        let shared = Arc::new(Mutex::new(Vec::new()));
        let records = shared.clone();
        self.sink(name, move |_| CollectWriter {
            local: Vec::new(),
            shared: shared.clone(),
        });
        Collected { records }
    }

    /// Records every output's latency into `recorder`.
    pub fn record_latency(&self, name: &str, recorder: &LatencyRecorder) {
        let recorder = recorder.clone();
        self.sink(name, move |_| LatencyWriter {
            local: new_histogram(),
            shared: recorder.clone(),
            pending: 0,
        });
    }

    /// Counts the records (and records their latency) — the sink of throughput runs.
    pub fn count(&self, name: &str) -> LatencyRecorder {
        let recorder = LatencyRecorder::new();
        self.record_latency(name, &recorder);
        recorder
    }
}

/// Where [`Stream::sink_json_lines`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineTarget {
    /// Standard output.
    Stdout,
    /// A file, created (or truncated) when the app is installed; partitions share it.
    File(PathBuf),
}

struct JsonLinesWriter {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
    buffer: Vec<u8>,
}

impl JsonLinesWriter {
    fn drain(&mut self) {
        if !self.buffer.is_empty() {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(error) = out.write_all(&self.buffer).and_then(|()| out.flush()) {
                tracing::warn!("sink write failed: {error}");
            }
            self.buffer.clear();
        }
    }
}

impl<T: serde::Serialize + 'static> SinkWriter<T> for JsonLinesWriter {
    fn write(&mut self, _: Time, record: T, _: Nanos) {
        if serde_json::to_writer(&mut self.buffer, &record).is_ok() {
            self.buffer.push(b'\n');
        }
        if self.buffer.len() >= 64 * 1024 {
            self.drain();
        }
    }
    fn frontier(&mut self, _: Time) {
        self.drain();
    }
    fn finish(&mut self) {
        self.drain();
    }
}

impl<T: Data + serde::Serialize> Stream<T> {
    /// Writes every record as one JSON line to stdout or a file. Lines are written
    /// through a buffer, at least at every watermark.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn sink_json_lines(&self, name: &str, target: LineTarget) -> std::io::Result<()> {
        let out: Box<dyn Write + Send> = match &target {
            LineTarget::Stdout => Box::new(std::io::stdout()),
            LineTarget::File(path) => Box::new(std::fs::File::create(path)?),
        };
        let out = Arc::new(Mutex::new(out));
        self.sink(name, move |_| JsonLinesWriter {
            out: out.clone(),
            buffer: Vec::new(),
        });
        Ok(())
    }
}
