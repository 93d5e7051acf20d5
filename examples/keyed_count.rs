//! A keyed count from a generator: words counted per word in 100 ms tumbling windows of
//! event time, on two shards, summed over the windows at the end.
//!
//! `cargo run --release -p dirigo-examples --example keyed_count`

use std::collections::BTreeMap;
use std::time::Duration;

use dirigo_operators::dataflow::{AppBuilder, Msg};
use dirigo_operators::source::Pacing;
use dirigo_operators::window::Windows;
use dirigo_runtime::Runtime;

/// The words the generator draws from.
pub const WORDS: [&str; 5] = ["ant", "bee", "cat", "dog", "eel"];

/// The word of event `i`: a fixed, uneven mix.
pub fn word_of(i: u64) -> u32 {
    [0, 1, 1, 2, 2, 2, 3, 4, 4, 4][(i % 10) as usize]
}

/// Counts `events` generated words on `shards` shards; returns each word's total.
pub fn run(events: u64, shards: usize) -> BTreeMap<&'static str, u64> {
    let app = AppBuilder::new(0, "keyed-count").parallelism(shards as u32);
    // Source partition `p` of `n` makes events p, p + n, p + 2n, …: each event once. An
    // event is (event time in ms, record); here event i happens at i/10 ms.
    let words = app.source("words", 0, Pacing::Unpaced, move |partition, partitions| {
        (u64::from(partition)..events)
            .step_by(partitions.max(1) as usize)
            .map(|i| (i / 10, word_of(i)))
    });
    let counts = words
        .key_by(|word| *word)
        .window_count("per-word", Windows::Tumbling { size: 100 })
        .collect("out");
    let app = app.build();
    let runtime = app
        .install(Runtime::<Msg>::builder().shards(shards).pinned(false))
        .build()
        .expect("the runtime starts");
    app.start(&runtime.ingress());
    assert!(app.wait(Duration::from_secs(120)), "the app finishes");
    runtime.shutdown();

    let mut totals = BTreeMap::new();
    for (word, _window, count) in counts.take() {
        *totals.entry(WORDS[word as usize]).or_insert(0) += count;
    }
    totals
}

fn main() {
    let events = 1_000_000;
    let totals = run(events, 2);
    println!("{events} words counted in 100 ms windows on 2 shards:");
    for (word, count) in &totals {
        println!("  {word}  {count:>7}");
    }
    println!("  all  {:>7}", totals.values().sum::<u64>());
}
