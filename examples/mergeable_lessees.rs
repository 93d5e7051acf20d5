//! A mergeable operator of one's own with a lessee: a running count and sum per key
//! (`aggregate` with a fold and a merge), whose partition gets a lessee on the other
//! shard before the records arrive. The lessee folds part of the records into a partial
//! state that its lessor merges at each watermark: the totals are exactly those of one
//! partition alone.
//!
//! `cargo run --release -p dirigo-examples --example mergeable_lessees`

use std::collections::BTreeMap;
use std::time::Duration;

use dirigo_operators::dataflow::{AppBuilder, Msg};
use dirigo_operators::source::Pacing;
use dirigo_runtime::Runtime;

/// What a run found.
pub struct Outcome {
    /// Per key: (records, sum of values).
    pub totals: BTreeMap<u64, (u64, u64)>,
    /// Lessees the aggregate's partition held at the end.
    pub lessees: u32,
    /// Partial states the lessor merged from its lessee.
    pub consolidations: u64,
}

/// Folds `records` values (record `i` is key `i % keys`, value `i`) on 2 shards, with a
/// lessee for the aggregate.
pub fn run(records: u64, keys: u64) -> Outcome {
    let app = AppBuilder::new(0, "count-and-sum").parallelism(1);
    let values = app.source("values", 0, Pacing::Rate(200_000.0), move |_, _| {
        (0..records).map(move |i| (i / 100, (i % keys, i)))
    });
    let totals = values
        .key_by(|(key, _)| *key)
        .aggregate(
            "count-and-sum",
            || (0u64, 0u64),
            |acc, _time, (_, value)| {
                acc.0 += 1;
                acc.1 += value;
            },
            // Folding a lessee's partial state in: counts and sums add up.
            |acc, partial| {
                acc.0 += partial.0;
                acc.1 += partial.1;
            },
            |key, acc| (*key, acc.0, acc.1),
        )
        .collect("out");
    let app = app.build();
    let runtime = app
        .install(Runtime::<Msg>::builder().shards(2).pinned(false))
        .build()
        .expect("the runtime starts");
    // The aggregate's one partition: a lessee on the shard that is not its home. Without
    // a policy that places messages itself, they go to the least loaded of lessor and
    // lessees.
    let actor = app.mergeable_actors()[0];
    let other = 1 - runtime.home_shard(actor);
    runtime
        .ingress()
        .add_lessee(actor, other)
        .expect("a mergeable operator takes a lessee");
    app.start(&runtime.ingress());
    assert!(app.wait(Duration::from_secs(120)), "the app finishes");
    let metrics = runtime
        .actor_metrics()
        .into_iter()
        .find(|metrics| metrics.actor == actor);
    runtime.shutdown();

    // An aggregate emits a key's running totals each time they change: the last wins.
    let mut last = BTreeMap::new();
    for (key, count, sum) in totals.take() {
        let entry = last.entry(key).or_insert((0, 0));
        if count >= entry.0 {
            *entry = (count, sum);
        }
    }
    Outcome {
        totals: last,
        lessees: metrics.as_ref().map_or(0, |m| m.lessees),
        consolidations: metrics.as_ref().map_or(0, |m| m.consolidations),
    }
}

fn main() {
    let outcome = run(400_000, 8);
    println!(
        "lessees at the end: {}, partial states merged: {}",
        outcome.lessees, outcome.consolidations
    );
    for (key, (count, sum)) in &outcome.totals {
        println!("  key {key}: {count} records, sum {sum}");
    }
}
