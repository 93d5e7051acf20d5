//! dirigo's benchmarks.
//!
//! - [`mesh`]: the `dirigo bench mesh` scenario — shard-to-shard round trips and one-way
//!   throughput, side by side with the hardware floor and with other channels, in one run;
//! - [`latency`]: latency summaries from HdrHistogram, in the shape every report uses;
//! - `benches/`: criterion micro benchmarks (ring push/pop, same-shard dispatch).

pub mod latency;
pub mod mesh;
mod pin;
