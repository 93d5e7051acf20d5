//! Where an app's records go: unbounded sources stopped after a while drain and close
//! their windows, and every record a source emitted is accounted for as ingested or shed.

use std::time::Duration;

use dirigo_operators::dataflow::{App, AppBuilder, Msg};
use dirigo_operators::source::Pacing;
use dirigo_operators::window::Windows;
use dirigo_runtime::scheduling::SchedulingPolicy;
use dirigo_runtime::{ActorId, Runtime, SchedContext};

/// Sheds every other batch bound for operator 1 (the one after the source).
#[derive(Default)]
struct ShedHalf {
    sent: std::sync::atomic::AtomicU64,
}

impl SchedulingPolicy for ShedHalf {
    fn name(&self) -> &str {
        "shed-half"
    }
    fn by_priority(&self) -> bool {
        false
    }
    fn prepares_sends(&self) -> bool {
        true
    }
    fn prepare_send(&self, target: ActorId, _message: &mut SchedContext) -> bool {
        target.operator != 1
            || self
                .sent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .is_multiple_of(2)
    }
}

fn run(shed: bool) -> (dirigo_operators::Flow, u64, u64) {
    let app = AppBuilder::new(0, "flow").parallelism(2);
    let numbers = app.source("numbers", 0, Pacing::Rate(200_000.0), |partition, _| {
        (0u64..).map(move |i| (i / 100, i * 2 + u64::from(partition)))
    });
    let counts = numbers
        .key_by(|n| *n % 16)
        .window_count("per-key", Windows::Tumbling { size: 10 })
        .count("out");
    let app = app.build();
    let mut builder = Runtime::<Msg>::builder().shards(2);
    if shed {
        builder = builder.policy(ShedHalf::default());
    }
    let runtime = app.install(builder).build().unwrap();
    app.start(&runtime.ingress());
    std::thread::sleep(Duration::from_millis(300));
    assert!(!app.is_done(), "an unbounded source runs until stopped");
    app.stop();
    assert!(app.wait(Duration::from_secs(30)), "a stopped app drains");
    let report = runtime.shutdown();
    let shed_messages = report.shards.iter().map(|shard| shard.shed).sum();
    (app.flow(), counts.outputs(), shed_messages)
}

/// Runs an app with finite sources to the end on 2 shards.
fn run_to_end(app: &App) {
    let runtime = app
        .install(Runtime::<Msg>::builder().shards(2))
        .build()
        .unwrap();
    app.start(&runtime.ingress());
    assert!(app.wait(Duration::from_secs(30)), "the app finishes");
    runtime.shutdown();
}

#[test]
fn a_stopped_source_drains_and_every_record_is_ingested() {
    let (flow, outputs, shed) = run(false);
    assert!(flow.emitted > 1_000, "{flow:?}");
    assert_eq!(flow.emitted, flow.ingested, "{flow:?}");
    assert_eq!(flow.shed_at_ingest + flow.shed_downstream, 0);
    assert_eq!(shed, 0);
    // 16 keys per 10 ms window, every window closed by the final watermark.
    assert!(outputs >= 16, "{outputs}");
}

#[test]
fn shed_records_are_counted_where_they_were_dropped() {
    let (flow, _, shed) = run(true);
    assert!(shed > 0, "the policy shed batches");
    assert!(flow.shed_at_ingest > 0, "{flow:?}");
    assert_eq!(
        flow.emitted,
        flow.ingested + flow.shed_at_ingest,
        "{flow:?}"
    );
    assert_eq!(flow.shed_downstream, 0, "{flow:?}");
}

#[test]
fn a_union_delivers_both_streams_and_waits_for_both_frontiers() {
    let app = AppBuilder::new(0, "union").parallelism(2);
    let evens: Vec<(u64, u64)> = (0..5_000u64).map(|i| (i / 10, 2 * i)).collect();
    // The right side is slower in event time: windows must wait for it.
    let odds: Vec<(u64, u64)> = (0..5_000u64).map(|i| (i / 20, 2 * i + 1)).collect();
    let left = app.source_iter("evens", evens, 0, Pacing::Unpaced);
    let right = app.source_iter("odds", odds, 0, Pacing::Unpaced);
    let both = left.union("both", &[&right]);
    let all = both.collect("all");
    let counts = both
        .key_by(|n| *n % 2)
        .window_count("parity", Windows::Tumbling { size: 100 })
        .collect("counts");
    let app = app.build();
    run_to_end(&app);
    let mut all = all.take();
    all.sort_unstable();
    assert_eq!(all, (0..10_000).collect::<Vec<u64>>());
    let mut total = [0u64; 2];
    for (parity, _, count) in counts.take() {
        total[parity as usize] += count;
    }
    assert_eq!(total, [5_000, 5_000], "every record in a window, none late");
    assert_eq!(app.late_records(), 0);
    let flow = app.flow();
    assert_eq!(flow.emitted, 10_000);
    assert_eq!(flow.ingested, 10_000, "{flow:?}");
}

#[test]
fn a_window_with_thousands_of_keys_emits_them_in_key_order() {
    // One partition per operator: one window partition holds every key, several batches'
    // worth, and its rows leave over a single forward edge.
    let app = AppBuilder::new(0, "wide").parallelism(1);
    let keys = 5_000u64;
    // Two windows of event time, each with every key once, in a shuffled order.
    let records: Vec<(u64, u64)> = (0..2 * keys)
        .map(|i| (i / keys * 10, (i * 7_919) % keys))
        .collect();
    let source = app.source_iter("keys", records, 0, Pacing::Unpaced);
    let rows = source
        .key_by(|key| *key)
        .window_count("per-key", Windows::Tumbling { size: 10 })
        .collect("rows");
    // The same rows routed on by key (not over a forward edge) into a second window.
    let buckets = source
        .key_by(|key| *key)
        .window_count("per-key-again", Windows::Tumbling { size: 10 })
        .key_by(|(key, _, _)| *key % 7)
        .window_count("per-bucket", Windows::Tumbling { size: 10 })
        .collect("buckets");
    let app = app.build();
    assert_eq!(app.paced_since(), None, "no source has started");
    run_to_end(&app);
    assert!(app.paced_since().is_some());
    let rows = rows.take();
    assert_eq!(rows.len() as u64, 2 * keys);
    for (window, rows) in rows.chunks(keys as usize).enumerate() {
        for (expected, &(key, span, count)) in (0..keys).zip(rows) {
            assert_eq!((key, span.start, count), (expected, window as u64 * 10, 1));
        }
    }
    let mut buckets = buckets.take();
    buckets.sort_unstable_by_key(|&(bucket, span, _)| (span.start, bucket));
    let expected: Vec<u64> = (0..7)
        .map(|b| (0..keys).filter(|k| k % 7 == b).count() as u64)
        .collect();
    for (index, &(bucket, _, count)) in buckets.iter().enumerate() {
        assert_eq!(count, expected[bucket as usize], "{buckets:?}");
        assert_eq!(bucket, index as u64 % 7);
    }
    assert_eq!(buckets.len(), 14);
}

/// A window that fires hundreds of thousands of rows sends them over several turns of
/// its own (so that other work of its shard runs in between): the frontier it passes on
/// still follows every row, so a second window downstream counts each row in the window
/// it belongs to, and nothing is lost or counted twice; sliding windows (whose batches
/// are cut shorter, each record counting in several windows) too.
#[test]
fn a_window_firing_many_rows_over_several_turns_keeps_them_ahead_of_its_frontier() {
    let app = AppBuilder::new(0, "many-rows");
    let keys = 200_000u64;
    let windows = 3u64;
    let records: Vec<(u64, u64)> = (0..windows * keys)
        .map(|i| (i / keys * 10, (i * 7_919) % keys))
        .collect();
    let source = app.source_iter("keys", records, 0, Pacing::Unpaced);
    let buckets = source
        .key_by(|key| *key)
        .window_count("per-key", Windows::Tumbling { size: 10 }.in_any_order())
        .key_by(|(key, _, _)| *key % 5)
        .window_count("per-bucket", Windows::Tumbling { size: 10 })
        .collect("buckets");
    let sliding = source
        .key_by(|key| *key % 1_000)
        .window_count("sliding", Windows::Sliding { size: 20, slide: 5 })
        .key_by(|(_, span, _)| span.start)
        .window_count("per-window", Windows::Tumbling { size: 5 })
        .collect("sliding");
    let app = app.build();
    run_to_end(&app);
    let mut buckets = buckets.take();
    buckets.sort_unstable_by_key(|&(bucket, span, _)| (span.start, bucket));
    assert_eq!(buckets.len() as u64, 5 * windows, "{buckets:?}");
    for (index, &(bucket, span, count)) in buckets.iter().enumerate() {
        assert_eq!(bucket, index as u64 % 5);
        assert_eq!(span.start, index as u64 / 5 * 10);
        assert_eq!(count, keys / 5, "bucket {bucket} of window {span:?}");
    }
    // Records come at 0, 10 and 20 ms; the sliding windows that hold any start at 0, 5,
    // 10, 15 and 20 ms, and each holds all 1 000 keys: 1 000 rows each.
    let mut sliding = sliding.take();
    sliding.sort_unstable();
    let found: Vec<(u64, u64)> = sliding
        .iter()
        .map(|&(start, _, rows)| (start, rows))
        .collect();
    assert_eq!(
        found,
        vec![
            (0, 1_000),
            (5, 1_000),
            (10, 1_000),
            (15, 1_000),
            (20, 1_000)
        ]
    );
}

#[test]
fn a_window_in_any_order_emits_each_firing_whole_with_the_same_rows() {
    let app = AppBuilder::new(0, "any-order").parallelism(1);
    let keys = 5_000u64;
    let records: Vec<(u64, u64)> = (0..3 * keys)
        .map(|i| (i / keys * 10, (i * 7_919) % keys))
        .collect();
    let source = app.source_iter("keys", records, 0, Pacing::Unpaced);
    let rows = source
        .key_by(|key| *key)
        .window_count("per-key", Windows::Tumbling { size: 10 }.in_any_order())
        .collect("rows");
    let app = app.build();
    run_to_end(&app);
    let rows = rows.take();
    assert_eq!(rows.len() as u64, 3 * keys);
    // Firings do not interleave: each window's rows leave together, windows in order.
    for (window, rows) in rows.chunks(keys as usize).enumerate() {
        let mut rows = rows.to_vec();
        assert!(rows
            .iter()
            .all(|(_, span, _)| span.start == window as u64 * 10));
        rows.sort_unstable();
        for (expected, &(key, _, count)) in (0..keys).zip(&rows) {
            assert_eq!((key, count), (expected, 1));
        }
    }
}

/// One run of a per-key count in any order on 2 shards while lessees come and go:
/// the rows sorted, and the bytes of partial state lessees handed back.
fn any_order_counts_with_lessees(records: &[(u64, u64)]) -> (Vec<(u64, u64, u64)>, u64) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let app = AppBuilder::new(0, "any-order-scaled").parallelism(2);
    let rows = app
        .source_iter("keys", records.to_vec(), 0, Pacing::Unpaced)
        .key_by(|key| *key)
        .window_count("per-key", Windows::Tumbling { size: 10 }.in_any_order())
        .collect("rows");
    let app = app.build();
    let runtime = app
        .install(Runtime::<Msg>::builder().shards(2))
        .build()
        .unwrap();
    let ingress = runtime.ingress();
    let stop = Arc::new(AtomicBool::new(false));
    let scaler = {
        let (actors, ingress, stop) = (app.mergeable_actors(), ingress.clone(), stop.clone());
        assert!(!actors.is_empty());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                for add in [true, false] {
                    for &actor in &actors {
                        let elsewhere = 1 - ingress.home_shard(actor);
                        let _ = if add {
                            ingress.add_lessee(actor, elsewhere)
                        } else {
                            ingress.remove_lessee(actor, elsewhere)
                        };
                    }
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
        })
    };
    app.start(&ingress);
    assert!(app.wait(Duration::from_secs(60)), "the app finishes");
    stop.store(true, Ordering::Release);
    scaler.join().unwrap();
    let merged = runtime
        .actor_metrics()
        .iter()
        .map(|m| m.consolidated_bytes)
        .sum();
    runtime.shutdown();
    let mut rows: Vec<(u64, u64, u64)> = rows
        .take()
        .into_iter()
        .map(|(key, span, count)| (span.start, key, count))
        .collect();
    rows.sort_unstable();
    (rows, merged)
}

#[test]
fn a_window_in_any_order_with_lessees_counts_as_a_plain_grouping_says() {
    let records: Vec<(u64, u64)> = (0..200_000u64)
        .map(|i| (i / 2_000, i.wrapping_mul(2_654_435_761) % 3_000))
        .collect();
    let mut expected: std::collections::BTreeMap<(u64, u64), u64> = Default::default();
    for &(time, key) in &records {
        *expected.entry((time - time % 10, key)).or_insert(0) += 1;
    }
    let expected: Vec<(u64, u64, u64)> = expected
        .into_iter()
        .map(|((start, key), count)| (start, key, count))
        .collect();
    // Whether a lessee held records when state was handed back depends on timing: a few
    // runs, until partial state was merged at least once.
    for attempt in 1..=3 {
        let (rows, merged) = any_order_counts_with_lessees(&records);
        assert_eq!(rows, expected, "attempt {attempt}");
        if merged > 0 {
            return;
        }
    }
    panic!("no lessee handed partial state back in 3 runs");
}

#[test]
fn a_tumbling_window_counts_and_drops_records_behind_its_frontier() {
    // One partition per operator: one path, so the replayed records arrive after
    // watermarks past their windows, whatever the timing.
    let app = AppBuilder::new(0, "late").parallelism(1);
    // More records than a source turn takes, so watermarks go out between them.
    let mut records: Vec<(u64, u64)> = (0..10_000u64).map(|i| (i / 10, i % 3)).collect();
    // The first 20 ms again at the end: their windows have fired.
    let replayed: Vec<(u64, u64)> = records.iter().take(200).copied().collect();
    records.extend(&replayed);
    let counts = app
        .source_iter("numbers", records, 0, Pacing::Unpaced)
        .key_by(|n| *n)
        .window_count("per-key", Windows::Tumbling { size: 10 })
        .collect("counts");
    let app = app.build();
    run_to_end(&app);
    assert_eq!(app.late_records(), replayed.len() as u64);
    let mut counts = counts.take();
    counts.sort_unstable_by_key(|&(key, window, _)| (window.start, key));
    // 100 windows of 100 records, keys 0..3 in turn: 34, 33 and 33 per window (the
    // first key of each window's run of 100 gets one more).
    assert_eq!(counts.len(), 300);
    for (index, &(key, window, count)) in counts.iter().enumerate() {
        assert_eq!(window.start, (index / 3) as u64 * 10);
        let first = (window.start * 10) % 3;
        assert_eq!(count, if key == first { 34 } else { 33 }, "{counts:?}");
    }
}

#[test]
fn a_running_aggregate_emits_only_what_changed_and_ends_at_the_totals() {
    let app = AppBuilder::new(0, "running").parallelism(2);
    let keys = 3_000u64;
    // Event time moves on every 1 000 records; each record adds `value` to its key, and
    // keys are visited in a different order in each stretch of event time.
    let records: Vec<(u64, (u64, u64))> = (0..60_000u64)
        .map(|i| (i / 1_000, ((i * 7_919 + i / 1_000) % keys, i % 5 + 1)))
        .collect();
    let totals = records
        .iter()
        .fold(vec![0u64; keys as usize], |mut sums, (_, (key, value))| {
            sums[*key as usize] += value;
            sums
        });
    let source = app.source_iter("adds", records, 0, Pacing::Unpaced);
    let updates = source
        .key_by(|(key, _)| *key)
        .aggregate(
            "sums",
            || 0u64,
            |sum, _, (_, value)| *sum += value,
            |sum, other| *sum += other,
            |key, sum| (*key, *sum),
        )
        .collect("updates");
    let app = app.build();
    run_to_end(&app);
    let mut last = vec![0u64; keys as usize];
    for (key, sum) in updates.take() {
        // Values only grow: a key emitted again without a change would repeat its sum.
        assert!(
            sum > last[key as usize],
            "key {key}: {sum} after {}",
            last[key as usize]
        );
        last[key as usize] = sum;
    }
    assert_eq!(last, totals);
}

#[test]
fn session_windows_grow_merge_and_fire_as_a_plain_grouping_says() {
    let app = AppBuilder::new(0, "sessions").parallelism(2);
    let (keys, gap, bound) = (40u64, 3u64, 15u64);
    // Event time creeps up with jitter below the out-of-orderness bound: sessions grow
    // record by record, and a late record often bridges two sessions of its key.
    let records: Vec<(u64, u64)> = (0..40_000u64)
        .map(|i| {
            let mixed = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
            (i / 20 + mixed % bound, mixed % keys)
        })
        .collect();
    let mut expected: Vec<(u64, u64, u64, u64)> = Vec::new();
    for key in 0..keys {
        let mut times: Vec<u64> = records
            .iter()
            .filter(|(_, k)| *k == key)
            .map(|(t, _)| *t)
            .collect();
        times.sort_unstable();
        let mut session: Option<(u64, u64, u64)> = None;
        for time in times {
            session = match session {
                Some((start, end, count)) if time < end => {
                    Some((start, end.max(time + gap), count + 1))
                }
                Some((start, end, count)) => {
                    expected.push((key, start, end, count));
                    Some((time, time + gap, 1))
                }
                None => Some((time, time + gap, 1)),
            };
        }
        let (start, end, count) = session.expect("every key has records");
        expected.push((key, start, end, count));
    }
    expected.sort_unstable();
    let source = app.source_iter("visits", records, bound, Pacing::Unpaced);
    let sessions = source
        .key_by(|key| *key)
        .window(
            "sessions",
            Windows::Session { gap },
            || 0u64,
            |count, _, _, _| *count += 1,
            |count, other| *count += other,
            |key, window, count, out| out.push((*key, window.start, window.end, count)),
        )
        .collect("out");
    let app = app.build();
    run_to_end(&app);
    let mut sessions = sessions.take();
    sessions.sort_unstable();
    assert!(expected.len() > 1_000, "{} sessions", expected.len());
    assert_eq!(sessions, expected);
}

/// Where a paced test source's records were seen: `(record, when)` on the runtime's
/// clock, taken at the start of each batch a sink receives.
#[derive(Clone, Default)]
struct Arrivals(std::sync::Arc<std::sync::Mutex<Vec<(u64, u64)>>>);

struct ArrivalWriter {
    arrivals: Arrivals,
    batch_at: u64,
}

impl dirigo_operators::sink::SinkWriter<u64> for ArrivalWriter {
    fn begin_batch(&mut self, now: u64) {
        self.batch_at = now;
    }
    fn write(&mut self, _: u64, record: u64, _: u64) {
        self.arrivals
            .0
            .lock()
            .unwrap()
            .push((record, self.batch_at));
    }
}

/// Checks that record `i` of a source paced at `ns_per_record` arrived no sooner than it
/// was due, and that records `0..count` all arrived, once each.
fn assert_paced(app: &App, arrivals: &Arrivals, count: u64, ns_per_record: f64) {
    let epoch = app.paced_since().expect("the source started");
    let mut arrivals = arrivals.0.lock().unwrap().clone();
    arrivals.sort_unstable();
    assert_eq!(
        arrivals
            .iter()
            .map(|&(record, _)| record)
            .collect::<Vec<_>>(),
        (0..count).collect::<Vec<_>>()
    );
    for &(record, at) in &arrivals {
        let due = epoch + (record as f64 * ns_per_record) as u64;
        assert!(at >= due, "record {record} arrived {} ns early", due - at);
    }
}

#[test]
fn a_paced_source_sends_every_record_and_none_before_it_is_due() {
    let app = AppBuilder::new(0, "paced").parallelism(2);
    let count = 20_000u64;
    let records: Vec<(u64, u64)> = (0..count).map(|i| (i / 100, i)).collect();
    let arrivals = Arrivals::default();
    let sink_arrivals = arrivals.clone();
    // 200 000 a second: 100 ms, two partitions each taking every other record.
    app.source_iter("numbers", records, 0, Pacing::Rate(200_000.0))
        .sink("arrivals", move |_| ArrivalWriter {
            arrivals: sink_arrivals.clone(),
            batch_at: 0,
        });
    let app = app.build();
    run_to_end(&app);
    assert_paced(&app, &arrivals, count, 5_000.0);
}

/// A record source with nothing to give until the test releases records: `released`
/// says how many of `0..count` it may hand out so far.
struct Gated {
    released: std::sync::Arc<std::sync::atomic::AtomicU64>,
    next: u64,
    count: u64,
}

impl dirigo_operators::source::RecordSource<u64> for Gated {
    fn next_record(&mut self) -> Option<(u64, u64)> {
        unreachable!("polled only")
    }
    fn poll_record(&mut self) -> std::task::Poll<Option<(u64, u64)>> {
        use std::task::Poll;
        if self.next == self.count {
            return Poll::Ready(None);
        }
        if self.next >= self.released.load(std::sync::atomic::Ordering::Acquire) {
            return Poll::Pending;
        }
        self.next += 1;
        Poll::Ready(Some((self.next - 1, self.next - 1)))
    }
}

/// A source of records `0..count` (event time = record) that gives only what the
/// returned gate has released so far.
fn gated_source(
    app: &AppBuilder,
    pacing: Pacing,
    count: u64,
) -> (
    dirigo_operators::Stream<u64>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let released = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let gate = released.clone();
    let stream = app.source("gated", 0, pacing, move |_, _| Gated {
        released: gate.clone(),
        next: 0,
        count,
    });
    (stream, released)
}

#[test]
fn a_paced_source_whose_records_come_late_sends_them_as_they_come() {
    // One partition: the gate counts records of the whole source.
    let app = AppBuilder::new(0, "gated").parallelism(1);
    let count = 3_000u64;
    let arrivals = Arrivals::default();
    let sink_arrivals = arrivals.clone();
    // Due every 10 µs (30 ms in all); released in three bursts, the later two after
    // their records were due, so those go out as soon as they come.
    let (source, released) = gated_source(&app, Pacing::Rate(100_000.0), count);
    source.sink("arrivals", move |_| ArrivalWriter {
        arrivals: sink_arrivals.clone(),
        batch_at: 0,
    });
    let app = app.build();
    let runtime = app
        .install(Runtime::<Msg>::builder().shards(2))
        .build()
        .unwrap();
    app.start(&runtime.ingress());
    for burst in 1..=3 {
        released.store(burst * count / 3, std::sync::atomic::Ordering::Release);
        std::thread::sleep(Duration::from_millis(40));
    }
    assert!(app.wait(Duration::from_secs(30)), "the app finishes");
    runtime.shutdown();
    assert_paced(&app, &arrivals, count, 10_000.0);
    assert_eq!(app.flow().emitted, count);
}

#[test]
fn operators_idle_past_the_deactivation_timeout_keep_their_state() {
    // A source that goes quiet (pending) mid-window, for longer than the runtime's idle
    // timeout: the window and the sink downstream are deactivated meanwhile, and must
    // come back with the window's first half and the sink's rows.
    let app = AppBuilder::new(0, "quiet").parallelism(1);
    let count = 1_000u64;
    let (source, released) = gated_source(&app, Pacing::Unpaced, count);
    let counts = source
        // Event time = record number: two 1 000 ms windows, [0, 1000) and, for the
        // watermark's sake, nothing after.
        .key_by(|n| *n % 3)
        .window_count("per-key", Windows::Tumbling { size: 1_000 })
        .collect("counts");
    let app = app.build();
    let runtime = app
        .install(
            Runtime::<Msg>::builder()
                .shards(2)
                .idle_deactivation(Some(Duration::from_millis(20))),
        )
        .build()
        .unwrap();
    app.start(&runtime.ingress());
    released.store(count / 2, std::sync::atomic::Ordering::Release);
    std::thread::sleep(Duration::from_millis(300));
    released.store(count, std::sync::atomic::Ordering::Release);
    assert!(app.wait(Duration::from_secs(30)), "the app finishes");
    let report = runtime.shutdown();
    let deactivations: u64 = report.shards.iter().map(|shard| shard.deactivations).sum();
    assert!(
        deactivations > 0,
        "the quiet spell deactivated the operators"
    );
    let mut counts = counts.take();
    counts.sort_unstable_by_key(|&(key, _, _)| key);
    let counted: Vec<(u64, u64)> = counts.iter().map(|&(key, _, n)| (key, n)).collect();
    assert_eq!(counted, [(0, 334), (1, 333), (2, 333)]);
}

#[test]
fn a_record_and_a_watermark_at_u64_max_are_only_times_the_end_is_its_own_message() {
    // One partition, paced: the records after the one at `u64::MAX` come well after its
    // watermark (also `u64::MAX`) has gone out. Were that the end of the stream, the app
    // would be done before they arrive.
    let app = AppBuilder::new(0, "end-of-time").parallelism(1);
    let mut records: Vec<(u64, u64)> = (0..500u64).map(|i| (i, i)).collect();
    records.push((u64::MAX, 500));
    records.extend((501..1_000u64).map(|i| (i, i)));
    let numbers = app.source_iter("numbers", records, 0, Pacing::Rate(20_000.0));
    let all = numbers.map("pass", |n| n).collect("all");
    let counts = numbers
        .key_by(|_| 0u64)
        .window_count("per-window", Windows::Tumbling { size: 100 })
        .collect("counts");
    let app = app.build();
    run_to_end(&app);
    let mut all = all.take();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..1_000).collect::<Vec<u64>>(),
        "every record arrived"
    );
    // Records behind the watermark at the largest time are late; the few that reached
    // the window before it (in the same batch) are counted. Either way, none is lost, and
    // the window of the largest time itself fires.
    let counts = counts.take();
    let counted: u64 = counts.iter().map(|&(_, _, count)| count).sum();
    assert_eq!(counted + app.late_records(), 1_000, "{counts:?}");
    // Paced at 20 000 a second, the 499 records after it come over 25 ms; a loaded
    // machine that stalls the source makes it catch up several in one batch, which reach
    // the window with the watermark. Most still come after it.
    assert!(app.late_records() >= 100, "{}", app.late_records());
    for start in (0..500).step_by(100) {
        let window: Vec<u64> = counts
            .iter()
            .filter(|(_, window, _)| window.start == start)
            .map(|&(_, _, count)| count)
            .collect();
        assert_eq!(window, [100], "window at {start}: {counts:?}");
    }
    let last: Vec<u64> = counts
        .iter()
        .filter(|(_, window, _)| window.end == u64::MAX)
        .map(|&(_, _, count)| count)
        .collect();
    assert_eq!(last, [1], "{counts:?}");
}
