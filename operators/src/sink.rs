//! Sinks: where records leave an app. A sink partition hands each record to a
//! [`SinkWriter`] with its latency, and tells the app when its inputs have ended.
//!
//! Latency is `now − ingress`, where ingress is the intended send time the source stamped
//! on the batch the record descends from (for a window's output, the batch whose watermark
//! closed the window). Built-in writers: collect in memory ([`Stream::collect`]), the
//! latency recorder ([`LatencyRecorder`]), JSON lines to a file or stdout
//! ([`Stream::sink_json_lines`]), and a count ([`Stream::count`]).
//!
//! Writers that write out (a file, standard output, a socket) report what they wrote
//! and what they could not ([`SinkWriter::take_delivery`]); the app counts both
//! ([`Flow::outputs_written`](crate::dataflow::Flow::outputs_written),
//! [`Flow::outputs_failed`](crate::dataflow::Flow::outputs_failed)). The JSON-lines
//! writer checks every write: after the first failure (a full disk, a file over its size
//! limit, a closed pipe) it writes no more, counts every later record as failed, and
//! logs one line (a closed standard output, `EPIPE`, as when piped into `head`, is
//! expected and logged at debug level only). A file is cut back to its last complete
//! line after a failed write, so the lines in it are exactly the records counted as
//! written.

use std::any::Any;
use std::fs::File;
use std::io::{self, Write};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dirigo_runtime::{ActorId, Context, Nanos, PartitionId, SnapshotError, StateKind};
use hdrhistogram::Histogram;

use crate::checkpoint::{CheckpointLink, Saved, SavedInputs};
use crate::dataflow::{
    add_operator, batch_of, AppCounters, CheckpointId, Data, Logic, Msg, PartitionCount, Stream,
    Time, Wiring,
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
    /// What was written out, and what could not be, since the last call. Called after
    /// every batch and every frontier. The default (nothing) suits writers that keep
    /// records in memory and cannot fail.
    fn take_delivery(&mut self) -> Delivery {
        Delivery::default()
    }
    /// Checkpoints are on: from now on the writer keeps what it would write out, and
    /// hands it over with [`take_staged`](Self::take_staged); the app stages it until a
    /// complete checkpoint covers it, then commits it to its destination (exactly once,
    /// see [`crate::checkpoint`]). A writer that can only write out directly answers
    /// `false`: its output is at least once across a restore.
    fn stage(&mut self) -> bool {
        false
    }
    /// The bytes kept since the last call (after [`stage`](Self::stage) said `true`).
    fn take_staged(&mut self) -> Vec<u8> {
        Vec::new()
    }
}

/// Records a [`SinkWriter`] wrote out and records it could not; see
/// [`SinkWriter::take_delivery`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Records written out.
    pub written: u64,
    /// Records that could not be written out (lost).
    pub failed: u64,
    /// Where and why they could not be (the first error), when `failed > 0`.
    pub error: Option<String>,
}

struct SinkLogic<T, W> {
    writer: W,
    counters: Arc<AppCounters>,
    /// With checkpoints, when the writer stages its output: where it goes, and the
    /// epoch being written (after barrier `epoch - 1`).
    staging: Option<Staging>,
    /// Records written out, per partition of the sink, and this one.
    records_out: (Arc<[PartitionCount]>, usize),
    _records: PhantomData<fn(T)>,
}

/// Where a staging sink partition sends its output, and which epoch it writes.
struct Staging {
    link: Arc<CheckpointLink>,
    actor: ActorId,
    epoch: CheckpointId,
}

impl<T, W: SinkWriter<T>> SinkLogic<T, W> {
    /// Sends what the writer staged on, as output of the current epoch.
    fn stage_output(&mut self) {
        if let Some(staging) = &self.staging {
            let bytes = self.writer.take_staged();
            staging
                .link
                .stage_output(staging.actor, staging.epoch, bytes);
        }
    }

    /// Adds what the writer delivered to the app's counters.
    fn count_delivery(&mut self) {
        let Delivery {
            written,
            failed,
            error,
        } = self.writer.take_delivery();
        let (records_out, partition) = &self.records_out;
        PartitionCount::add(records_out, *partition, written);
        self.counters.outputs(written, failed, || {
            error.unwrap_or_else(|| "a sink write failed".to_owned())
        });
    }
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
        self.stage_output();
        self.count_delivery();
    }

    fn on_frontier(&mut self, _ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.writer.frontier(frontier);
        self.stage_output();
        self.count_delivery();
    }

    fn forward_frontier(&mut self, _: &mut Context<'_, Msg>, _: Time) {}

    /// Every input has ended ([`Msg::End`]; no time ends a sink): the writer finishes and
    /// the app learns that one more sink partition is done.
    fn on_end(&mut self, _ctx: &mut Context<'_, Msg>) {
        self.writer.finish();
        self.stage_output();
        self.count_delivery();
        self.counters.sink_finished();
    }

    fn forward_end(&mut self, _: &mut Context<'_, Msg>) {}

    /// Stages everything written since the last barrier as epoch `id`'s output; what
    /// comes next belongs to the next epoch. A sink keeps no state of its own: a
    /// restored partition starts the epoch after the checkpoint.
    fn save(&mut self, id: CheckpointId) -> Result<Saved, SnapshotError> {
        if self.staging.is_some() {
            self.writer.frontier(Time::MAX);
            self.stage_output();
            self.count_delivery();
        }
        if let Some(staging) = &mut self.staging {
            staging.epoch = id + 1;
        }
        Ok(Saved::Nothing)
    }

    fn restore(&mut self, _: &SavedInputs, _: Option<&[u8]>) -> Result<(), SnapshotError> {
        Ok(())
    }

    fn forward_barrier(&mut self, _: &mut Context<'_, Msg>, _: CheckpointId) {}
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
///
/// Sink partitions add what they recorded at each watermark into a histogram of fresh
/// values, under the one lock they take. A reader that watches the run
/// ([`take_recent`](Self::take_recent)) swaps that histogram for an empty one of its own
/// (constant time under the sinks' lock, nothing copied there) and folds it into the
/// total outside it, so watching a run does not hold up the sinks it measures.
#[derive(Clone)]
pub struct LatencyRecorder {
    shared: Arc<RecorderShared>,
}

struct RecorderShared {
    /// What the sinks added since a reader last took it: the only lock sinks take.
    fresh: Mutex<Histogram<u64>>,
    /// Everything taken out of `fresh` so far (sinks never lock it). Locked before
    /// `fresh` whenever both are held.
    taken: Mutex<Histogram<u64>>,
    outputs: AtomicU64,
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
            shared: Arc::new(RecorderShared {
                fresh: Mutex::new(new_histogram()),
                taken: Mutex::new(new_histogram()),
                outputs: AtomicU64::new(0),
            }),
        }
    }

    /// An empty histogram with the recorder's bounds: the one to pass to
    /// [`take_recent`](Self::take_recent).
    pub fn empty_histogram() -> Histogram<u64> {
        new_histogram()
    }

    /// A copy of the histogram so far (everything the sinks added up to their last
    /// watermark). Copies under the sinks' lock: for the end of a run; a reader that
    /// watches a running app uses [`take_recent`](Self::take_recent).
    pub fn histogram(&self) -> Histogram<u64> {
        let taken = lock(&self.shared.taken);
        let mut all = taken.clone();
        // Same bounds on both sides: adding cannot fail.
        let _ = all.add(&*lock(&self.shared.fresh));
        all
    }

    /// Replaces `recent` with what the sinks recorded since the last call (since the
    /// start, on the first): the latencies of a recent interval. The sinks' lock is held
    /// only to swap two histograms; `recent`'s old contents are dropped, and it is
    /// replaced by an empty one first when its bounds are not the recorder's (pass
    /// [`empty_histogram`](Self::empty_histogram) to allocate nothing). Values taken
    /// stay in [`histogram`](Self::histogram). Meant for one reader: two readers would
    /// each see part of every interval.
    ///
    /// ```
    /// use dirigo_operators::sink::LatencyRecorder;
    ///
    /// let recorder = LatencyRecorder::new();
    /// let mut recent = LatencyRecorder::empty_histogram();
    /// recorder.take_recent(&mut recent);
    /// assert!(recent.is_empty()); // nothing ran yet
    /// ```
    pub fn take_recent(&self, recent: &mut Histogram<u64>) {
        let template = new_histogram();
        if recent.low() != template.low()
            || recent.high() != template.high()
            || recent.sigfig() != template.sigfig()
        {
            *recent = template;
        } else {
            recent.reset();
        }
        let mut taken = lock(&self.shared.taken);
        std::mem::swap(&mut *lock(&self.shared.fresh), recent);
        let _ = taken.add(&*recent);
    }

    /// Adds the latencies in `values` (nanoseconds) as a latency sink partition does at a
    /// watermark: for a custom sink that keeps its own histogram. Values above the
    /// recorder's hour are dropped.
    ///
    /// ```
    /// use dirigo_operators::sink::LatencyRecorder;
    ///
    /// let recorder = LatencyRecorder::new();
    /// let mut mine = LatencyRecorder::empty_histogram();
    /// mine.record(250_000).unwrap();
    /// recorder.add(&mine);
    /// assert_eq!(recorder.outputs(), 1);
    /// assert_eq!(recorder.histogram().len(), 1);
    /// ```
    pub fn add(&self, values: &hdrhistogram::Histogram<u64>) {
        if values.is_empty() {
            return;
        }
        let _ = lock(&self.shared.fresh).add(values);
        self.shared
            .outputs
            .fetch_add(values.len(), Ordering::Relaxed);
    }

    /// Outputs recorded so far (counted as they arrive; the histogram catches up at each
    /// watermark).
    pub fn outputs(&self) -> u64 {
        self.shared.outputs.load(Ordering::Relaxed)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

struct LatencyWriter {
    local: Histogram<u64>,
    recorder: LatencyRecorder,
    pending: u64,
}

impl<T: 'static> SinkWriter<T> for LatencyWriter {
    fn write(&mut self, _: Time, _: T, latency_ns: Nanos) {
        self.local.saturating_record(latency_ns.max(1));
        self.pending += 1;
    }
    fn frontier(&mut self, _: Time) {
        if self.pending > 0 {
            self.recorder.add(&self.local);
            self.local.reset();
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
        self.sink_node(name, make);
    }

    /// [`sink`](Self::sink), returning the sink's operator.
    fn sink_node<W: SinkWriter<T>>(
        &self,
        name: &str,
        make: impl Fn(PartitionId) -> W + Send + Sync + 'static,
    ) -> dirigo_runtime::OperatorId {
        let make = Arc::new(make);
        let node = add_operator(
            self.graph(),
            name,
            StateKind::Exclusive,
            Arc::new(move |wiring: &Wiring, partition| {
                let mut writer = make(partition);
                let staging = wiring
                    .checkpoint
                    .as_ref()
                    .filter(|_| writer.stage())
                    .map(|link| Staging {
                        link: link.clone(),
                        actor: ActorId::new(wiring.app, wiring.operator, partition),
                        epoch: link.resumed_from() + 1,
                    });
                Box::new(SinkLogic {
                    writer,
                    counters: wiring.counters.clone(),
                    staging,
                    records_out: (wiring.records_out.clone(), partition as usize),
                    _records: PhantomData::<fn(T)>,
                }) as Box<dyn Logic>
            }),
        );
        self.connect(node, Partitioning::Forward, None);
        self.mark_sink(node);
        node
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
            recorder: recorder.clone(),
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
    /// A file, created (or truncated) when the app is built; partitions share it.
    File(PathBuf),
    /// A file that receives each record exactly once across crashes and restores, for
    /// apps with checkpoints ([`crate::checkpoint`]): output is staged per checkpoint and
    /// appended to the file when the checkpoint is complete, and the checkpoints, not
    /// the build, decide what the file holds at the start (empty for a fresh start, the
    /// committed output when resuming). Without checkpoints, lines are appended to the
    /// file as they come.
    Committed(PathBuf),
}

/// Where a JSON-lines sink's partitions write, shared by them.
struct LineOut {
    out: LineOutput,
    /// What the output is, for messages: a path or `standard output`.
    name: String,
    /// Bytes of complete lines in the file so far.
    bytes: u64,
    /// The first write error; nothing is written after it.
    broken: Option<String>,
}

enum LineOutput {
    Stdout,
    File(File),
}

impl LineOut {
    /// Writes `buffer` (whole lines); returns how many of its lines are now out, and
    /// the error when not all are.
    fn write_lines(&mut self, buffer: &[u8]) -> Result<u64, (u64, String)> {
        if let Some(error) = &self.broken {
            return Err((0, error.clone()));
        }
        let (done, result) = match &mut self.out {
            LineOutput::Stdout => {
                // Standard output is buffered by the library: only a flushed buffer is
                // known to be out, so a failure counts the whole buffer as lost.
                let mut stdout = io::stdout().lock();
                match stdout.write_all(buffer).and_then(|()| stdout.flush()) {
                    Ok(()) => (buffer.len(), Ok(())),
                    Err(e) => (0, Err(e)),
                }
            }
            LineOutput::File(file) => {
                let mut done = 0;
                let mut result = Ok(());
                while done < buffer.len() {
                    match file.write(&buffer[done..]) {
                        Ok(0) => {
                            result = Err(io::Error::new(
                                io::ErrorKind::WriteZero,
                                "the file took no more bytes",
                            ));
                            break;
                        }
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                (done, result)
            }
        };
        // Only complete lines count: a line cut by the failure is not out.
        let complete = buffer[..done]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        let lines = buffer[..complete].iter().filter(|&&b| b == b'\n').count() as u64;
        self.bytes += complete as u64;
        let Err(error) = result else {
            return Ok(lines);
        };
        if let LineOutput::File(file) = &self.out {
            if complete < done {
                // Cut the partial line, so the file holds exactly the lines counted.
                let _ = file.set_len(self.bytes);
            }
        }
        let message = format!("cannot write to {}: {error}", self.name);
        if error.kind() == io::ErrorKind::BrokenPipe {
            tracing::debug!("{message}; its output is counted as failed from now on");
        } else {
            tracing::warn!("{message}; its output is counted as failed from now on");
        }
        self.broken = Some(message.clone());
        Err((lines, message))
    }
}

struct JsonLinesWriter {
    out: Arc<Mutex<LineOut>>,
    buffer: Vec<u8>,
    /// Records in `buffer`.
    pending: u64,
    delivery: Delivery,
    /// Whether the target takes staged output (a committed file).
    can_stage: bool,
    /// Output kept for the checkpoints instead of written (see [`SinkWriter::stage`]).
    staged: Option<Vec<u8>>,
}

impl JsonLinesWriter {
    fn drain(&mut self) {
        if self.pending == 0 {
            self.buffer.clear();
            return;
        }
        if let Some(staged) = &mut self.staged {
            staged.extend_from_slice(&self.buffer);
            self.delivery.written += self.pending;
            self.pending = 0;
            self.buffer.clear();
            return;
        }
        let result = self
            .out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_lines(&self.buffer);
        match result {
            Ok(lines) => self.delivery.written += lines,
            Err((lines, error)) => {
                self.delivery.written += lines;
                self.delivery.failed += self.pending - lines;
                self.delivery.error.get_or_insert(error);
            }
        }
        self.pending = 0;
        self.buffer.clear();
    }
}

impl<T: serde::Serialize + 'static> SinkWriter<T> for JsonLinesWriter {
    fn write(&mut self, _: Time, record: T, _: Nanos) {
        let before = self.buffer.len();
        match serde_json::to_writer(&mut self.buffer, &record) {
            Ok(()) => {
                self.buffer.push(b'\n');
                self.pending += 1;
            }
            Err(e) => {
                self.buffer.truncate(before);
                self.delivery.failed += 1;
                self.delivery
                    .error
                    .get_or_insert_with(|| format!("cannot encode a record as JSON: {e}"));
            }
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
    fn take_delivery(&mut self) -> Delivery {
        std::mem::take(&mut self.delivery)
    }
    fn stage(&mut self) -> bool {
        if self.can_stage {
            self.staged = Some(Vec::new());
        }
        self.can_stage
    }
    fn take_staged(&mut self) -> Vec<u8> {
        self.staged.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

impl<T: Data + serde::Serialize> Stream<T> {
    /// Writes every record as one JSON line to stdout or a file. Lines are written
    /// through a buffer, at least at every watermark; what was written and what could
    /// not be is counted (see the [module docs](self)).
    ///
    /// # Errors
    /// When the file cannot be created; the error names its path.
    pub fn sink_json_lines(&self, name: &str, target: LineTarget) -> std::io::Result<()> {
        let (out, name_of_out) = match &target {
            LineTarget::Stdout => (LineOutput::Stdout, "standard output".to_owned()),
            LineTarget::File(path) => {
                let file = File::create(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
                })?;
                (LineOutput::File(file), path.display().to_string())
            }
            LineTarget::Committed(path) => {
                // Not truncated: the checkpoints decide what it holds (see `Committed`).
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
                    })?;
                (LineOutput::File(file), path.display().to_string())
            }
        };
        let committed = match &target {
            LineTarget::Committed(path) => Some(std::path::absolute(path)?),
            _ => None,
        };
        let can_stage = committed.is_some();
        let out = Arc::new(Mutex::new(LineOut {
            out,
            name: name_of_out,
            bytes: 0,
            broken: None,
        }));
        let node = self.sink_node(name, move |_| JsonLinesWriter {
            out: out.clone(),
            buffer: Vec::new(),
            pending: 0,
            delivery: Delivery::default(),
            can_stage,
            staged: None,
        });
        if let Some(path) = committed {
            self.mark_committed_output(node, path);
        }
        Ok(())
    }
}

#[cfg(test)]
mod latency_recorder_tests {
    use super::*;

    fn record(recorder: &LatencyRecorder, values: &[u64]) {
        let mut writer = LatencyWriter {
            local: new_histogram(),
            recorder: recorder.clone(),
            pending: 0,
        };
        for &value in values {
            SinkWriter::<()>::write(&mut writer, 0, (), value);
        }
        SinkWriter::<()>::frontier(&mut writer, 0);
    }

    #[test]
    fn recent_intervals_partition_the_total() {
        let recorder = LatencyRecorder::new();
        let mut recent = LatencyRecorder::empty_histogram();
        record(&recorder, &[1_000, 2_000, 3_000]);
        recorder.take_recent(&mut recent);
        assert_eq!(recent.len(), 3);
        record(&recorder, &[50_000]);
        // A reader of the total sees what was not taken yet too.
        assert_eq!(recorder.histogram().len(), 4);
        recorder.take_recent(&mut recent);
        assert_eq!(recent.len(), 1);
        assert_eq!(recent.max(), recent.highest_equivalent(50_000));
        recorder.take_recent(&mut recent);
        assert!(recent.is_empty());
        let total = recorder.histogram();
        assert_eq!(total.len(), 4);
        assert_eq!(recorder.outputs(), 4);
    }

    #[test]
    fn a_histogram_with_other_bounds_is_replaced() {
        let recorder = LatencyRecorder::new();
        record(&recorder, &[7_000_000_000]);
        let mut small = Histogram::<u64>::new_with_bounds(1, 1_000, 2).unwrap();
        recorder.take_recent(&mut small);
        assert_eq!(small.len(), 1);
        assert_eq!(small.high(), 3_600_000_000_000);
    }
}
