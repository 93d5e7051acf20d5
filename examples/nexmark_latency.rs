//! NEXMark query 5 (the hottest auctions over a sliding window) on a paced stream of
//! generated events, with a latency report: percentiles from the HdrHistogram of every
//! output's latency, measured from the intended send time of the events.
//!
//! `cargo run --release -p dirigo-examples --example nexmark_latency`

use std::time::Duration;

use dirigo_operators::dataflow::{AppBuilder, Msg};
use dirigo_operators::nexmark::events::NexmarkSpec;
use dirigo_operators::nexmark::queries::Query;
use dirigo_operators::source::Pacing;
use dirigo_runtime::Runtime;

/// The latency report: outputs, and `(percentile, ns)` rows.
pub struct LatencyReport {
    /// Outputs recorded.
    pub outputs: u64,
    /// p50, p90, p99, p99.9 and the largest, ns.
    pub percentiles: Vec<(f64, u64)>,
}

/// Runs q5 over `events` events offered at `rate` events per second on 2 shards.
pub fn run(events: usize, rate: f64) -> LatencyReport {
    let app = AppBuilder::new(0, "q5").parallelism(2);
    let spec = NexmarkSpec {
        events,
        ..NexmarkSpec::default()
    };
    let stream = app.source(
        "events",
        0,
        Pacing::Rate(rate),
        move |partition, partitions| {
            spec.partition_iter(partition, partitions)
                .map(|event| (event.time(), event))
        },
    );
    let query = Query::build("q5", &stream).expect("q5 is a query");
    let latency = query.record_latency("out");
    let app = app.build();
    let runtime = app
        .install(Runtime::<Msg>::builder().shards(2).pinned(false))
        .build()
        .expect("the runtime starts");
    app.start(&runtime.ingress());
    assert!(app.wait(Duration::from_secs(120)), "the app finishes");
    runtime.shutdown();
    let histogram = latency.histogram();
    LatencyReport {
        outputs: latency.outputs(),
        percentiles: [50.0, 90.0, 99.0, 99.9, 100.0]
            .into_iter()
            .map(|percentile| (percentile, histogram.value_at_percentile(percentile)))
            .collect(),
    }
}

fn main() {
    let report = run(200_000, 100_000.0);
    println!(
        "q5: {} outputs; latency from intended send time:",
        report.outputs
    );
    for (percentile, ns) in &report.percentiles {
        println!("  p{percentile:<5} {:>10.3} ms", *ns as f64 / 1e6);
    }
}
