//! The dirigo engine: thread-per-core shards, the lock-free mesh between them, and the
//! virtual actors they host.
//!
//! What lives where:
//! - [`runtime`]: the [`Runtime`] and its builder, shutdown; `ingress`: the outside intake
//!   ([`Ingress`]) and scale requests from outside;
//! - `shared`: what every shard sees — the actor-to-shard router, the operator table,
//!   shard tunables, intakes, doorbells, counters, scheduling tables;
//! - `shard`: the loop of one shard (timers, fast lane, drain, batch, flush, park);
//!   `shard::table`: its active actors and the ready queue; `shard::lessor`: the lessor
//!   protocol's state and steps;
//! - `outbound`: what a shard sends — one link per destination shard (ring, overflow
//!   queue, pending doorbell), and the flush;
//! - [`mesh`]: one SPSC [`ring`](mesh::ring) per ordered pair of shards, and each
//!   shard's [`Doorbell`](mesh::Doorbell) (the sleep/wake handshake);
//! - [`actor`]: the [`Actor`] trait, factories and the table of them, and the handler
//!   [`Context`];
//! - [`scheduling`]: SLOs, deadlines, measured operator costs, and the policy that orders
//!   each shard's ready work;
//! - [`dual`]: dual-mode actors — the protocol's description and public types, and the
//!   control messages it sends; [`snapshot`]: the rkyv archives partial states travel in;
//! - [`envelope`]: addresses, messages and their scheduling context, [`SendError`];
//! - [`placement`] and [`preflight`]: which CPU each shard gets, and what the machine
//!   must offer;
//! - [`huge_pages`]: whether the process's memory may use transparent huge pages (off by
//!   default: faulting one in stalls a shard while 2 MiB are zeroed);
//! - [`fence`]: the asymmetric barriers behind the doorbell; [`clock`]: the runtime clock;
//! - [`stats`]: per-shard counters; [`background`]: the priority of service threads
//!   beside the shards (checkpoints, metrics);
//! - [`failure`]: what a panicking handler does to its app (fails it).
//!
//! A virtual actor is addressed by `(app, operator, partition)`; it lives on a home shard
//! chosen by a stable hash of that address, is activated by its operator's factory on
//! its first message, and is deactivated after an idle timeout with its state kept.

pub mod actor;
pub mod background;
pub mod clock;
pub mod dual;
pub mod envelope;
pub mod failure;
pub mod fence;
pub mod huge_pages;
mod ingress;
pub mod mesh;
mod outbound;
pub mod placement;
pub mod preflight;
pub mod runtime;
pub mod scheduling;
mod shard;
mod shared;
pub mod snapshot;
pub mod stats;
mod sync;
pub mod turn;

pub use actor::{Actor, ActorFactory, Context, SavedState};
pub use dual::{ActorMetrics, Barrier, ScaleChange, ScaleError, StateKind, LESSEE_TIMELINE_KEPT};
pub use envelope::{
    ActorId, AppId, Envelope, MessageKind, Nanos, OperatorId, PartitionId, SchedContext, SendError,
    ShardId,
};
pub use failure::AppFailure;
pub use runtime::{BuildError, Ingress, Runtime, RuntimeBuilder, RuntimeReport, StatsReader};
pub use snapshot::{Snapshot, SnapshotError, SnapshotFile};
pub use stats::ShardStats;
