//! The timely-dataflow peer: the same pipeline as dirigo's, run on
//! [timely dataflow](https://github.com/TimelyDataflow/timely-dataflow) 0.32, so the two
//! runtimes can be compared on one workload.
//!
//! The pipeline is a keyed tumbling-window count over NEXMark bids: the key is
//! [`Bid::auction`], windows are [`WINDOW_MS`] of event time ([`Bid::date_time`], ms),
//! half-open `[s, s + WINDOW_MS)` and aligned to multiples of `WINDOW_MS`. Each closed
//! window yields one row `(window_end, auction, count)` per auction bid on in it.
//!
//! In timely the pipeline is: one input per worker (the bids split round-robin by index,
//! each projected to `(date_time, auction)` before the clock starts), an exchange by
//! auction to a `unary_frontier` operator that counts per `(window, auction)` and holds a
//! capability at `window_end - 1` for each open window, and emits a window's rows once
//! timely's progress tracking says the frontier has passed `window_end - 1`. Timely's
//! timestamp is the event time in ms: each input advances its time as event time advances,
//! so windows close on event time, as in dirigo.
//!
//! - [`timely_throughput`]: every bid as fast as possible, wall time to the last output;
//! - [`timely_latency`]: bids offered open loop at a fixed rate, latency of each output
//!   row from the intended send time of the bid that closed its window;
//! - [`reference_window_counts`] and [`checksum`]: the expected result, plain and
//!   single-threaded, and an order-independent checksum of rows to compare runs by.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use dirigo_operators::nexmark::events::Bid;
use hdrhistogram::Histogram;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Capability, Inspect, Operator, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle, Stream};

/// The window length, ms of event time.
pub const WINDOW_MS: u64 = 10_000;

/// How many records each worker feeds between advancing its input's time, in
/// [`timely_throughput`].
const BATCH: usize = 1024;

/// One measurement.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerRun {
    /// Bids fed.
    pub events: u64,
    /// Wall time from the start of feeding to the last output (end of input included).
    pub seconds: f64,
    /// `events / seconds`.
    pub events_per_s: f64,
    /// Output latency, ns (open-loop runs only).
    pub latency_ns: Option<Latency>,
    /// The latencies themselves, to merge runs by (open-loop runs only).
    #[serde(skip)]
    pub histogram: Option<Histogram<u64>>,
    /// Output rows `(window_end, auction, count)`: one per auction per closed window.
    pub windows_out: u64,
    /// [`checksum`] of the output rows.
    pub checksum: u64,
    /// Open-loop runs: per worker (or shard), in the order they came out, the latency of
    /// each window's first row — how late each window began to come out.
    #[serde(skip)]
    pub window_latencies: Vec<Vec<u64>>,
}

/// How many windows began to come out more than [`LATE_WINDOW_NS`] after the bid that
/// closed them was due: the stalls behind a p99, counted.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LateWindows {
    /// Windows seen, over every worker (or shard) and run.
    pub windows: u64,
    /// Of those, the ones over [`LATE_WINDOW_NS`].
    pub late: u64,
    /// Of the first [`START_WINDOWS`] windows of every worker (or shard) and run, the ones
    /// over [`LATE_WINDOW_NS`]: a late start (memory faulted in, threads not yet on a
    /// CPU) rather than a stall in the middle.
    pub late_at_start: u64,
    /// The longest run of consecutive late windows at one worker (or shard): one stall
    /// of the whole system makes a run of them.
    pub longest_late_run: u64,
}

/// A window is late past this, in [`LateWindows`].
pub const LATE_WINDOW_NS: u64 = 1_000_000;
/// How many windows of a run count as its start, in [`LateWindows`].
pub const START_WINDOWS: usize = 10;

impl LateWindows {
    /// Counts `latencies` (per worker or shard, in order) into `self`.
    pub fn add(&mut self, latencies: &[Vec<u64>]) {
        for windows in latencies {
            self.windows += windows.len() as u64;
            let mut run = 0;
            for (index, &latency) in windows.iter().enumerate() {
                if latency > LATE_WINDOW_NS {
                    self.late += 1;
                    self.late_at_start += u64::from(index < START_WINDOWS);
                    run += 1;
                    self.longest_late_run = self.longest_late_run.max(run);
                } else {
                    run = 0;
                }
            }
        }
    }
}

/// A latency distribution, ns.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// How many samples (output rows).
    pub samples: u64,
}

impl Latency {
    /// Summarizes a histogram of nanosecond values.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            p50: histogram.value_at_quantile(0.50),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            samples: histogram.len(),
        }
    }
}

/// The end (exclusive) of the window that holds event time `t`, ms.
pub fn window_end(t: u64) -> u64 {
    (t / WINDOW_MS + 1) * WINDOW_MS
}

/// A well-mixed hash of one output row `(window_end, auction, count)`; [`checksum`] sums
/// these, so a streaming consumer can accumulate it row by row (`wrapping_add`).
pub fn row_checksum((window_end, auction, count): (u64, u64, u64)) -> u64 {
    mix(mix(mix(window_end) ^ auction) ^ count)
}

/// The order-independent checksum of output rows: the wrapping sum of [`row_checksum`].
pub fn checksum(rows: &[(u64, u64, u64)]) -> u64 {
    rows.iter()
        .fold(0u64, |acc, &row| acc.wrapping_add(row_checksum(row)))
}

/// The expected output, computed plainly on one thread: `(window_end, auction, count)`
/// for every window and every auction bid on in it, sorted. Every window is closed (the
/// end of input closes the last ones).
pub fn reference_window_counts(bids: &[Rec]) -> Vec<(u64, u64, u64)> {
    let mut counts: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for &(date_time, auction) in bids {
        *counts.entry((window_end(date_time), auction)).or_insert(0) += 1;
    }
    counts
        .into_iter()
        .map(|((end, auction), count)| (end, auction, count))
        .collect()
}

/// Max throughput: feed all `bids` as fast as possible through timely with `workers`
/// worker threads (`timely::execute` with `Config::process(workers)`).
///
/// Worker `w` feeds the bids at indices `w, w + workers, …` and advances its input's time
/// to the event time of its next bid every [`BATCH`] (1024) bids; the bids are exchanged
/// by auction to the counting operator, which emits each window's counts when the
/// frontier passes the window's end. The clock runs from the start of feeding (all
/// workers past a barrier) to the last worker's probe reporting the dataflow complete,
/// i.e. everything, the final flush at end of input included. Bids come projected to
/// [`Rec`], before the clock starts.
pub fn timely_throughput(recs: Arc<Vec<Rec>>, workers: usize) -> PeerRun {
    let workers = workers.max(1);
    let barrier = Arc::new(Barrier::new(workers));
    let start = Arc::new(OnceLock::<Instant>::new());
    let guards = timely::execute(timely::Config::process(workers), {
        let (recs, start) = (Arc::clone(&recs), Arc::clone(&start));
        move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let mut input = InputHandleVec::<u64, Rec>::new();
            let probe = ProbeHandle::new();
            let tally = Rc::new(RefCell::new(Tally::default()));
            worker.dataflow::<u64, _, _>(|scope| {
                let tally = Rc::clone(&tally);
                window_count(input.to_stream(scope))
                    .inspect_core(move |event| {
                        if let Ok((_, rows)) = event {
                            tally.borrow_mut().add(rows);
                        }
                    })
                    .probe_with(&probe);
            });
            barrier.wait();
            start.get_or_init(Instant::now);

            let mut next = index;
            let mut sent = 0;
            while next < recs.len() {
                input.send(recs[next]);
                next += peers;
                sent += 1;
                if sent % BATCH == 0 {
                    if let Some(&(t, _)) = recs.get(next) {
                        input.advance_to(t);
                    }
                    worker.step();
                }
            }
            drop(input);
            while !probe.done() {
                worker.step();
            }
            let ended = Instant::now();
            let tally = tally.borrow();
            WorkerResult {
                ended,
                rows: tally.rows,
                checksum: tally.checksum,
                histogram: None,
                window_latencies: Vec::new(),
            }
        }
    })
    .expect("timely starts");
    let results = join(guards);
    let start = *start.get().expect("a worker started the clock");
    summarize(recs.len(), start, results)
}

/// Open loop: offer the bids at `rate` events/s of wall clock, and record the latency of
/// every output row in an HdrHistogram (ns).
///
/// Bid `i` has the intended send time `start + i / rate`. On each pass of its loop a
/// worker reads the clock, feeds its own bids (indices `w, w + workers, …`) whose intended
/// time has come, and advances its input's time to the event time of the last bid (of
/// all workers) whose intended time has come — the watermark of in-order input — then
/// steps the dataflow; it never waits for the pipeline. The frontier therefore passes
/// `window_end` once the first bid with event time `>= window_end` is due on every worker,
/// and the latency of an output row is (wall time the row was observed, at the counting
/// operator's output) − (intended send time of that bid). Windows closed only by the end
/// of input take the intended time of the last bid. Latency is from the intended time,
/// not the actual send time, so stalls are not hidden (no coordinated omission).
pub fn timely_latency(recs: Arc<Vec<Rec>>, workers: usize, rate: f64) -> PeerRun {
    assert!(rate > 0.0, "rate must be positive");
    let workers = workers.max(1);
    let barrier = Arc::new(Barrier::new(workers));
    let start = Arc::new(OnceLock::<Instant>::new());
    let guards = timely::execute(timely::Config::process(workers), {
        let (recs, start) = (Arc::clone(&recs), Arc::clone(&start));
        move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let len = recs.len();
            let ns_per_event = 1e9 / rate;
            // Intended send time of bid `i`, ns after the start.
            let intended_ns = move |i: usize| (i as f64 * ns_per_event) as u64;
            let mut input = InputHandleVec::<u64, Rec>::new();
            let probe = ProbeHandle::new();
            let tally = Rc::new(RefCell::new(Tally::default()));
            let histogram = Rc::new(RefCell::new(crate::latency::new_histogram()));
            worker.dataflow::<u64, _, _>(|scope| {
                let (tally, histogram) = (Rc::clone(&tally), Rc::clone(&histogram));
                let (recs, start) = (Arc::clone(&recs), Arc::clone(&start));
                // The window whose rows were last seen, and the intended time (ns after
                // the start) of the bid that closed it.
                let mut closed_by: Option<(u64, u64)> = None;
                window_count(input.to_stream(scope))
                    .inspect_core(move |event| {
                        let Ok((_, rows)) = event else { return };
                        if rows.is_empty() {
                            return;
                        }
                        let start = *start.get().expect("the clock started before data");
                        let observed = start.elapsed().as_nanos() as u64;
                        let mut histogram = histogram.borrow_mut();
                        let mut tally = tally.borrow_mut();
                        for &(end, _, _) in rows.iter() {
                            let intended = match closed_by {
                                Some((seen, intended)) if seen == end => intended,
                                _ => {
                                    let first = recs.partition_point(|&(t, _)| t < end);
                                    let intended = intended_ns(first.min(len - 1));
                                    closed_by = Some((end, intended));
                                    tally
                                        .window_latencies
                                        .push(observed.saturating_sub(intended));
                                    intended
                                }
                            };
                            crate::latency::record(
                                &mut histogram,
                                observed.saturating_sub(intended),
                            );
                        }
                        tally.add(rows);
                    })
                    .probe_with(&probe);
            });
            barrier.wait();
            let start = *start.get_or_init(Instant::now);

            // `due`: how many bids' intended times have come (`i / rate <= elapsed`).
            let (mut next, mut due) = (index, 0);
            while due < len {
                let elapsed = start.elapsed().as_nanos() as f64;
                due = ((elapsed / ns_per_event) as usize)
                    .saturating_add(1)
                    .min(len);
                while next < due {
                    input.send(recs[next]);
                    next += peers;
                }
                let watermark = recs[due - 1].0;
                if watermark > *input.time() {
                    input.advance_to(watermark);
                }
                if due < len {
                    let wait = intended_ns(due).saturating_sub(elapsed as u64);
                    if wait > 100_000 {
                        worker.step_or_park(Some(Duration::from_nanos(wait.min(1_000_000))));
                    } else {
                        worker.step();
                    }
                }
            }
            drop(input);
            while !probe.done() {
                worker.step();
            }
            let ended = Instant::now();
            let histogram = histogram.borrow().clone();
            let tally = tally.borrow();
            WorkerResult {
                ended,
                rows: tally.rows,
                checksum: tally.checksum,
                histogram: Some(histogram),
                window_latencies: tally.window_latencies.clone(),
            }
        }
    })
    .expect("timely starts");
    let results = join(guards);
    let start = *start.get().expect("a worker started the clock");
    summarize(recs.len(), start, results)
}

/// A bid as both pipelines carry it: `(date_time, auction)`, 16 bytes (dirigo's records
/// are `(event time, auction)` too, so both sides read the same vector).
pub type Rec = (u64, u64);
/// An output row: `(window_end, auction, count)`.
type Row = (u64, u64, u64);

/// Each bid as a [`Rec`].
pub fn project(bids: &[Bid]) -> Vec<Rec> {
    bids.iter().map(|b| (b.date_time, b.auction)).collect()
}

/// FxHash-style hasher for `u64` keys (what dirigo's operators use through `rustc-hash`).
#[derive(Clone, Copy, Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type Counts = HashMap<u64, u64, BuildHasherDefault<KeyHasher>>;

/// splitmix64's finalizer.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The counting operator: exchange by auction, count per `(window, auction)`, emit a
/// window's rows (at time `window_end - 1`) once the frontier has passed it.
fn window_count<'s>(bids: Stream<'s, u64, Vec<Rec>>) -> Stream<'s, u64, Vec<Row>> {
    bids.unary_frontier::<CapacityContainerBuilder<Vec<Row>>, _, _, _>(
        Exchange::new(|rec: &Rec| rec.1),
        "WindowCount",
        |_initial, _info| {
            // Open windows by end: a capability at `end - 1`, and the counts.
            let mut windows: BTreeMap<u64, (Capability<u64>, Counts)> = BTreeMap::new();
            move |(input, frontier), output| {
                let port = output.output_index();
                input.for_each(|cap, data| {
                    for &(t, auction) in data.iter() {
                        let end = window_end(t);
                        let (_, counts) = windows
                            .entry(end)
                            .or_insert_with(|| (cap.delayed(&(end - 1), port), Counts::default()));
                        *counts.entry(auction).or_insert(0) += 1;
                    }
                });
                while let Some(entry) = windows.first_entry() {
                    let end = *entry.key();
                    if frontier.less_equal(&(end - 1)) {
                        break;
                    }
                    let (cap, counts) = entry.remove();
                    let mut session = output.session(&cap);
                    session.give_iterator(
                        counts
                            .into_iter()
                            .map(|(auction, count)| (end, auction, count)),
                    );
                }
            }
        },
    )
}

/// What one worker saw at its output.
#[derive(Default)]
struct Tally {
    rows: u64,
    checksum: u64,
    /// Open-loop runs: each window's first row's latency, in order.
    window_latencies: Vec<u64>,
}

impl Tally {
    fn add(&mut self, rows: &[Row]) {
        self.rows += rows.len() as u64;
        for &row in rows {
            self.checksum = self.checksum.wrapping_add(row_checksum(row));
        }
    }
}

/// One worker's result: end of its run, its rows and checksum, and its latencies.
struct WorkerResult {
    ended: Instant,
    rows: u64,
    checksum: u64,
    histogram: Option<Histogram<u64>>,
    window_latencies: Vec<u64>,
}

fn join(guards: timely::communication::WorkerGuards<WorkerResult>) -> Vec<WorkerResult> {
    guards
        .join()
        .into_iter()
        .map(|result| result.expect("a timely worker panicked"))
        .collect()
}

fn summarize(events: usize, start: Instant, results: Vec<WorkerResult>) -> PeerRun {
    let ended = results.iter().map(|r| r.ended).max().unwrap_or(start);
    let seconds = ended.duration_since(start).as_secs_f64();
    let mut histogram: Option<Histogram<u64>> = None;
    for h in results.iter().filter_map(|r| r.histogram.as_ref()) {
        match histogram.as_mut() {
            Some(all) => all.add(h).expect("histograms share bounds"),
            None => histogram = Some(h.clone()),
        }
    }
    PeerRun {
        events: events as u64,
        seconds,
        events_per_s: if seconds > 0.0 {
            events as f64 / seconds
        } else {
            0.0
        },
        latency_ns: histogram.as_ref().map(Latency::of),
        histogram,
        windows_out: results.iter().map(|r| r.rows).sum(),
        checksum: results
            .iter()
            .fold(0u64, |acc, r| acc.wrapping_add(r.checksum)),
        window_latencies: results
            .into_iter()
            .map(|r| r.window_latencies)
            .filter(|windows| !windows.is_empty())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dirigo_operators::nexmark::events::{Event, NexmarkSpec};

    fn bids(spec: NexmarkSpec) -> Arc<Vec<Rec>> {
        let bids: Vec<Bid> = spec
            .iter()
            .filter_map(|e| match e {
                Event::Bid(b) => Some(b),
                _ => None,
            })
            .collect();
        Arc::new(project(&bids))
    }

    /// 50 000 events at 2 000 events/s of event time: 25 s, three windows, two of which
    /// close on event time before the end of input.
    fn small() -> Arc<Vec<Rec>> {
        bids(NexmarkSpec {
            events: 50_000,
            event_time_rate: 2_000,
            ..NexmarkSpec::default()
        })
    }

    #[test]
    fn reference_counts_every_bid_once() {
        let bids = small();
        let rows = reference_window_counts(&bids);
        assert_eq!(rows.iter().map(|r| r.2).sum::<u64>(), bids.len() as u64);
        let windows: std::collections::BTreeSet<u64> = rows.iter().map(|r| r.0).collect();
        assert!(windows.len() >= 3, "{windows:?}");
        assert!(rows.windows(2).all(|w| w[0] < w[1]));
        let mut shuffled = rows.clone();
        shuffled.reverse();
        assert_eq!(checksum(&rows), checksum(&shuffled));
        assert_ne!(checksum(&rows), checksum(&rows[1..]));
    }

    #[test]
    fn throughput_matches_reference() {
        let bids = small();
        let reference = reference_window_counts(&bids);
        for workers in [1, 2] {
            let run = timely_throughput(bids.clone(), workers);
            assert_eq!(run.events, bids.len() as u64);
            assert_eq!(run.windows_out, reference.len() as u64, "{workers} workers");
            assert_eq!(run.checksum, checksum(&reference), "{workers} workers");
            assert!(run.latency_ns.is_none());
        }
    }

    #[test]
    fn open_loop_matches_reference_and_records_every_row() {
        let bids = small();
        let reference = reference_window_counts(&bids);
        // ~46 000 bids at 20 M/s: a few ms of offered load.
        let run = timely_latency(bids.clone(), 2, 20e6);
        assert_eq!(run.windows_out, reference.len() as u64);
        assert_eq!(run.checksum, checksum(&reference));
        let latency = run.latency_ns.expect("open loop records latency");
        assert_eq!(latency.samples, reference.len() as u64);
        assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
        // Each worker sees each window it has rows of once, in window order.
        let windows: std::collections::BTreeSet<u64> =
            reference.iter().map(|&(end, _, _)| end).collect();
        assert!(!run.window_latencies.is_empty());
        for seen in &run.window_latencies {
            assert!(!seen.is_empty() && seen.len() <= windows.len(), "{seen:?}");
        }
    }

    #[test]
    fn late_windows_are_counted_with_their_start_and_longest_stretch() {
        const LATE: u64 = LATE_WINDOW_NS + 1;
        let mut first = vec![LATE, LATE, 5];
        first.extend(std::iter::repeat_n(7, START_WINDOWS));
        first.extend([LATE, LATE, LATE, 9, LATE_WINDOW_NS]);
        let mut late = LateWindows::default();
        late.add(&[first, vec![1, LATE]]);
        assert_eq!(late.windows, 3 + START_WINDOWS as u64 + 5 + 2);
        assert_eq!(late.late, 2 + 3 + 1, "exactly LATE_WINDOW_NS is not late");
        assert_eq!(late.late_at_start, 2 + 1);
        assert_eq!(late.longest_late_run, 3);
    }
}
