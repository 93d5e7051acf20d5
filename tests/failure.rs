//! A panicking operator fails its app, at once and loudly: the app's wait ends without a
//! drain timeout and says why, its sources stop (an unbounded one included, without
//! starting again from its first record), every record it emitted is accounted for, and
//! the other app of the runtime runs to its end with its full output.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dirigo_operators::dataflow::{AppBuilder, Msg};
use dirigo_operators::source::Pacing;
use dirigo_operators::window::Windows;
use dirigo_runtime::Runtime;

/// Runs `body` on its own thread and fails the test if it does not finish in time: a
/// failed app that left something waiting shows up as a failure, not a hung test run.
fn within<T: Send + 'static>(seconds: u64, body: impl FnOnce() -> T + Send + 'static) -> T {
    let body = std::thread::spawn(body);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !body.is_finished() {
        assert!(
            Instant::now() < deadline,
            "did not finish in {seconds} s: something waits for the failed app"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    body.join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `RECORDS` records, `(time, value)` with 10 records per millisecond, for the healthy
/// app; and the per-key, per-window counts they must give.
const RECORDS: u64 = 20_000;
const KEYS: u64 = 7;
const WINDOW_MS: u64 = 50;

fn healthy_records() -> Vec<(u64, u64)> {
    (0..RECORDS).map(|i| (i / 10, i)).collect()
}

fn expected_counts() -> BTreeMap<(u64, u64), u64> {
    let mut counts = BTreeMap::new();
    for (time, value) in healthy_records() {
        *counts
            .entry((value % KEYS, time / WINDOW_MS * WINDOW_MS))
            .or_insert(0) += 1;
    }
    counts
}

/// App 1: a finite source, a windowed count per key, collected.
fn healthy_app() -> (
    dirigo_operators::dataflow::App,
    dirigo_operators::sink::Collected<(u64, dirigo_operators::window::Window, u64)>,
) {
    let app = AppBuilder::new(1, "healthy").parallelism(2);
    let counts = app
        .source_iter("numbers", healthy_records(), 0, Pacing::Unpaced)
        .key_by(|value| *value % KEYS)
        .window_count("per-key", Windows::Tumbling { size: WINDOW_MS })
        .collect("out");
    (app.build(), counts)
}

fn assert_full_output(
    counts: &dirigo_operators::sink::Collected<(u64, dirigo_operators::window::Window, u64)>,
) {
    let got: BTreeMap<(u64, u64), u64> = counts
        .take()
        .into_iter()
        .map(|(key, window, count)| ((key, window.start), count))
        .collect();
    assert_eq!(
        got,
        expected_counts(),
        "the healthy app's output is complete"
    );
}

/// An unbounded, paced generator feeds a `map` that panics on one value, then a window:
/// the app fails with the panic's message, its wait ends within a second of the panic,
/// and the runtime shuts down drained (the source is not re-created to start over).
#[test]
fn a_panicking_map_fails_its_app_while_another_app_completes() {
    within(30, || {
        let fragile = AppBuilder::new(0, "fragile").parallelism(2);
        fragile
            .source("numbers", 0, Pacing::Rate(100_000.0), |partition, _| {
                (0u64..).map(move |i| (i / 100, i * 2 + u64::from(partition)))
            })
            .map("check", |value: u64| {
                assert!(value != 4_001, "value {value} is poison");
                value
            })
            .key_by(|value| *value % 16)
            .window_count("per-key", Windows::Tumbling { size: 10 })
            .count("out");
        let fragile = fragile.build();
        let (healthy, counts) = healthy_app();
        let builder = Runtime::<Msg>::builder().shards(2);
        let runtime = healthy.install(fragile.install(builder)).build().unwrap();
        let started = Instant::now();
        fragile.start(&runtime.ingress());
        healthy.start(&runtime.ingress());

        // No stop(): only the failure ends this unbounded app. Value 4 001 leaves the
        // second source partition about 20 ms in.
        assert!(
            fragile.wait(Duration::from_secs(10)),
            "the failed app ended"
        );
        let failed_after = started.elapsed();
        assert!(failed_after < Duration::from_secs(5), "{failed_after:?}");
        assert_eq!(fragile.failure().as_deref(), Some("value 4001 is poison"));
        assert_eq!(fragile.handler_panics(), 1);
        assert!(fragile.is_done());

        assert!(
            healthy.wait(Duration::from_secs(10)),
            "the healthy app ran on"
        );
        assert_eq!(healthy.failure(), None);
        assert_eq!(healthy.handler_panics(), 0);
        assert_full_output(&counts);

        let report = runtime.shutdown();
        assert_eq!(report.abandoned, 0, "shutdown drained: nothing keeps going");
        let panics: u64 = report.shards.iter().map(|s| s.handler_panics).sum();
        assert_eq!(panics, 1);
        let flow = fragile.flow();
        assert!(flow.emitted >= 4_000, "{flow:?}");
        assert_eq!(
            flow.emitted,
            flow.ingested + flow.shed_at_ingest + flow.discarded_at_ingest,
            "every record the failed app's source emitted is accounted for: {flow:?}"
        );
        let healthy_flow = healthy.flow();
        assert_eq!(healthy_flow.emitted, RECORDS);
        assert_eq!(healthy_flow.ingested, RECORDS);
        assert_eq!(healthy_flow.discarded_at_ingest, 0);
        assert!(started.elapsed() < Duration::from_secs(10));
    });
}

/// A running aggregate whose `emit` panics at a watermark: the panic is in a critical
/// section on consolidated state (a mergeable operator's lessor), and it fails the app
/// the same way; the finite source's last watermark then waits for nothing.
#[test]
fn a_panic_in_a_critical_section_fails_its_app() {
    within(30, || {
        let fragile = AppBuilder::new(0, "fragile").parallelism(2);
        let records: Vec<(u64, u64)> = (0..10_000u64).map(|i| (i / 10, i)).collect();
        let sums = fragile
            .source_iter("numbers", records, 0, Pacing::Unpaced)
            .key_by(|value| *value % 4)
            .aggregate(
                "sum",
                || 0u64,
                |sum, _, value| *sum += *value,
                |a, b| *a += b,
                |key, sum| {
                    assert!(*key != 3, "no emitting key 3");
                    (*key, *sum)
                },
            )
            .count("out");
        let fragile = fragile.build();
        let (healthy, counts) = healthy_app();
        let builder = Runtime::<Msg>::builder().shards(2);
        let runtime = healthy.install(fragile.install(builder)).build().unwrap();
        let started = Instant::now();
        fragile.start(&runtime.ingress());
        healthy.start(&runtime.ingress());
        assert!(fragile.wait(Duration::from_secs(10)));
        assert_eq!(fragile.failure().as_deref(), Some("no emitting key 3"));
        assert!(healthy.wait(Duration::from_secs(10)));
        assert_eq!(healthy.failure(), None);
        assert_full_output(&counts);
        let report = runtime.shutdown();
        assert_eq!(report.abandoned, 0);
        let panics: u64 = report.shards.iter().map(|s| s.handler_panics).sum();
        assert_eq!(panics, fragile.handler_panics());
        let flow = fragile.flow();
        assert_eq!(
            flow.emitted,
            flow.ingested + flow.shed_at_ingest + flow.discarded_at_ingest,
            "{flow:?}"
        );
        // Emitted before the panic, at most: the other keys of earlier watermarks.
        assert!(sums.outputs() < 10_000, "{}", sums.outputs());
        assert!(started.elapsed() < Duration::from_secs(10));
    });
}
