//! Examples for library users of dirigo, each a program of its own
//! (`cargo run --release -p dirigo-examples --example NAME`), built and run by this
//! crate's tests (`tests/examples.rs`), which check what each prints:
//!
//! - `keyed_count`: words from a generator counted per word in event-time windows, on
//!   two shards;
//! - `mergeable_lessees`: a running aggregate of one's own (count and sum per key) whose
//!   state is mergeable, given a lessee on a second shard: the totals are the same;
//! - `custom_policy`: a scheduling policy of one's own that runs one app's messages
//!   before another's, and counts what it saw;
//! - `nexmark_latency`: NEXMark query 5 on a paced stream of events, with a latency
//!   report from the recorder's HdrHistogram.
