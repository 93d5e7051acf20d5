//! dirigo's benchmarks.
//!
//! - [`mesh`]: the `dirigo bench mesh` scenario — shard-to-shard round trips and one-way
//!   throughput, side by side with the hardware floor and with other channels, in one run;
//! - [`checkpoint`]: the `dirigo bench checkpoint` scenario — what checkpoints cost: the
//!   overhead on throughput and on a latency-critical app's p99, and per state size the
//!   checkpoint's duration, the longest shard hold, and the time to restore;
//! - [`consolidate`]: the `dirigo bench consolidate` scenario — merging a lessee's
//!   partial state read in place from its rkyv archive, against deserializing it first;
//! - [`dual`]: the `dirigo bench lessee` and `dirigo bench barrier` scenarios — a
//!   mergeable operator with and without a lessee, and the cost of a barrier;
//! - [`scale`]: the `dirigo bench scale-step` scenario — how fast the `dirigo` policy adds
//!   a lessee when the load steps past one shard's capacity;
//! - [`slo`]: the `dirigo bench slo` scenario — three tenants on two shards under `fifo`,
//!   `edf` and `dirigo`: latency targets met, and cores held;
//! - [`isolation`] and [`isolation_timely`]: the `dirigo bench isolation` scenario — a
//!   latency-critical app beside a bursty heavy app on two cores, in dirigo under each
//!   policy and in timely-dataflow at the same loads: the critical app's tail and SLO, the
//!   heavy app's throughput;
//! - [`soak`]: the `dirigo bench soak` scenario — twice the sustainable load for a long
//!   time, with backpressure and then with shedding: no deadlock, bounded memory, every
//!   record accounted for, a prompt stop;
//! - [`nexmark`]: the `dirigo bench nexmark` scenario — a NEXMark query's throughput on
//!   pre-generated events, and open-loop latency at 50 % and 80 % of it;
//! - [`nats`]: the `dirigo bench nats` scenario — a path through a NATS JetStream server
//!   relayed by dirigo (NATS source → map → NATS sink), side by side with the same path
//!   relayed by a bare client: throughput, and latency at 25 %, 50 % and 80 % load;
//! - [`peer`] and [`peer_timely`]: the `dirigo bench peer` scenario — the same keyed
//!   window count in dirigo and in timely-dataflow, throughput and latency side by side;
//! - [`noise`]: how often the machine itself stops a running thread, reported next to
//!   tail latencies;
//! - [`latency`]: latency summaries from HdrHistogram, in the shape every report uses;
//! - `benches/`: criterion micro benchmarks (ring push/pop, same-shard dispatch).

pub mod checkpoint;
pub mod consolidate;
pub mod dual;
pub mod isolation;
pub mod isolation_timely;
pub mod latency;
pub mod mesh;
pub mod nats;
pub mod nexmark;
pub mod noise;
pub mod peer;
pub mod peer_timely;
mod pin;
pub mod scale;
pub mod slo;
pub mod soak;
