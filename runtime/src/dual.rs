//! Dual-mode actors: the lessor on an actor's home shard, its lessees on other shards,
//! critical messages and barriers, and the control messages that keep them consistent.
//! This module holds the protocol's description, its public types and the messages it
//! sends through the mesh; the lessor's and lessees' state and its steps live in the
//! shard (`shard::lessor`).
//!
//! # Protocol
//!
//! Every message for an actor reaches its lessor first (its home shard), and the lessor
//! alone decides where it runs. That single point of decision is what keeps the protocol
//! simple: the lessor forwards to a lessee through the one FIFO ring from its shard to the
//! lessee's, and control messages travel on that same ring, so a lessee always sees a
//! `Sync` after every message forwarded to it before.
//!
//! - **Runnable**: a user message runs on the lessor, or is forwarded to a lessee: to the
//!   worker its *ordering key* hashes to (so messages with one key never run concurrently
//!   or out of order), or, without a key, to the worker with the least queued work
//!   (ties rotate among the workers).
//! - **Blocked**: a critical message (or a barrier's last one, or a scale request) is
//!   due. New messages are held back in arrival order. Every lessee gets `Sync`; when it
//!   has run everything forwarded before, it archives its partial state
//!   ([`Actor::snapshot`](crate::Actor::snapshot)) and sends the buffer to the lessor,
//!   which merges it in place ([`Actor::merge`](crate::Actor::merge)).
//! - **Critical**: once every partial state is merged and the lessor's own mailbox is
//!   empty, the critical section runs on the consolidated state
//!   ([`Actor::critical`](crate::Actor::critical)); then lessees are added or retired as
//!   requested, held messages are released in order, and the actor is Runnable again.
//!   Lessees start each epoch from empty partial state.
//!
//! Barriers: a critical message whose [`Barrier`] is `Wait { id, inputs }` waits for
//! critical messages with the same `id` from `inputs` distinct inputs (senders). Once an
//! input has delivered its part, its later messages are held (they come after the
//! barrier), while the other inputs keep flowing (they come before it). A part of
//! another barrier, from an input that has not delivered its part of the pending one, is
//! held with its input until the pending barrier has run, so each input must deliver its
//! barrier parts in barrier order. A `Single` critical message runs at once (after a sync)
//! even while a barrier is pending: it comes after everything that arrived before it
//! except what the pending barrier holds, which comes after the barrier.
//!
//! Membership changes (adding or retiring a lessee) happen at such a consolidation point,
//! so the ordering-key-to-worker map never changes while a key has work in flight. The
//! one exception: a lessee is added at once, without blocking, when no message the actor
//! has dispatched or holds in its mailbox carries an ordering key (then no key has work
//! in flight).
//!
//! The correctness rule: for any input and any sequence of scale events, every output
//! and the final state equal those of a run on the lessor alone. What "equal" means for
//! outputs that lessees emit: the same per ordering key, in order, and the same set
//! between two critical sections (the same epoch, see
//! [`Context::epoch`](crate::Context::epoch)); critical sections' outputs are the same,
//! in the same order.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::envelope::{ActorId, Envelope, Nanos, ShardId};
use crate::snapshot::Snapshot;

/// How an operator's state behaves when its actors spread over several shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StateKind {
    /// The state cannot be split: the actor never gets lessees, and a request for one is
    /// refused with [`ScaleError::Exclusive`].
    #[default]
    Exclusive,
    /// Partial states combine with the actor's [`merge`](crate::Actor::merge): lessees
    /// allowed.
    Mergeable,
}

/// What a critical message waits for before its critical section runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Barrier {
    /// Runs alone, as soon as everything that arrived before it has run.
    #[default]
    Single,
    /// Needs no consolidation: runs on the lessor, after what arrived before it there, on
    /// the lessor's own state, without blocking the actor or collecting partial states.
    /// For a critical message that only sometimes reads the whole state (a watermark that
    /// closes no window): the actor answers `Local` when it knows this one does not.
    Local,
    /// Runs together with the critical messages of the same `id` from `inputs` distinct
    /// inputs (for example the same watermark from every upstream partition).
    Wait {
        /// Which barrier (a watermark, a window end).
        id: u64,
        /// How many distinct inputs (senders) deliver a part of it.
        inputs: u32,
    },
}

/// A change to an actor's set of lessees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleChange {
    /// Add a lessee on this shard.
    Add(ShardId),
    /// Retire the lessee on this shard, after merging its state.
    Remove(ShardId),
}

/// Why a scale request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleError {
    /// No operator is registered for the actor.
    UnknownOperator(ActorId),
    /// The actor's operator has exclusive state, which cannot be split across shards.
    Exclusive(ActorId),
    /// The shard does not exist.
    NoSuchShard {
        /// The shard asked for.
        shard: ShardId,
        /// How many shards run.
        shards: usize,
    },
    /// The shard is the actor's home: its lessor runs there already.
    HomeShard {
        /// The actor.
        actor: ActorId,
        /// Its home shard.
        shard: ShardId,
    },
    /// The runtime is shutting down.
    Closed,
}

impl fmt::Display for ScaleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownOperator(actor) => {
                write!(f, "no operator is registered for actor {actor}")
            }
            Self::Exclusive(actor) => write!(
                f,
                "actor {actor} has exclusive state, which cannot be split across shards; \
                 register its operator as mergeable to allow lessees"
            ),
            Self::NoSuchShard { shard, shards } => {
                write!(f, "shard {shard} does not exist (the runtime has {shards})")
            }
            Self::HomeShard { actor, shard } => write!(
                f,
                "shard {shard} is the home of actor {actor}: its lessor already runs there"
            ),
            Self::Closed => write!(f, "the runtime is shutting down"),
        }
    }
}

impl std::error::Error for ScaleError {}

/// What one actor's lessor did with lessees, barriers and consolidation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActorMetrics {
    /// The actor.
    pub actor: ActorId,
    /// Its lessees now.
    pub lessees: u32,
    /// `(when, lessees)` at the latest changes of the number of lessees (runtime clock),
    /// oldest first: at least the last [`LESSEE_TIMELINE_KEPT`], so that an actor that
    /// scales all day keeps bounded metrics. [`lessee_changes`](Self::lessee_changes)
    /// counts them all.
    pub lessee_timeline: Vec<(Nanos, u32)>,
    /// Changes of the number of lessees since the actor's lessor was created.
    pub lessee_changes: u64,
    /// Critical sections run (barriers count once).
    pub critical_sections: u64,
    /// Times the actor was blocked (critical sections and membership changes).
    pub syncs: u64,
    /// Nanoseconds spent blocked, from the sync to the release of held messages.
    pub blocked_ns: u64,
    /// Partial states merged.
    pub consolidations: u64,
    /// Bytes of archived partial state merged.
    pub consolidated_bytes: u64,
    /// Nanoseconds from a sync to its last merged partial state, summed.
    pub consolidation_ns: u64,
    /// Nanoseconds spent in `merge`, summed.
    pub merge_ns: u64,
    /// Scale requests refused (exclusive state, bad shard, ...).
    pub refused_scale_requests: u64,
    /// Snapshots or merges that failed (logged with their reason).
    pub snapshot_errors: u64,
}

/// Written by a lessee's shard after each message: how many it has run. Read by the
/// lessor to estimate the lessee's queue.
#[derive(Default)]
pub(crate) struct LesseeProgress {
    pub(crate) processed: CachePadded<AtomicU64>,
}

/// Runtime-to-runtime messages, carried by the mesh next to user messages.
pub(crate) enum Control {
    /// To the lessor: change the lessees.
    Scale { actor: ActorId, change: ScaleChange },
    /// To a lessee's shard: start a lessee for `actor`.
    Lease {
        actor: ActorId,
        home: ShardId,
        epoch: u64,
        progress: Arc<LesseeProgress>,
    },
    /// To a lessee: after what was forwarded before, hand over the partial state.
    Sync {
        actor: ActorId,
        retire: bool,
        epoch_after: u64,
    },
    /// To the lessor: a lessee's partial state.
    Partial {
        actor: ActorId,
        from: ShardId,
        snapshot: Option<Snapshot>,
        retired: bool,
    },
}

impl Control {
    pub(crate) fn actor(&self) -> ActorId {
        match self {
            Self::Scale { actor, .. }
            | Self::Lease { actor, .. }
            | Self::Sync { actor, .. }
            | Self::Partial { actor, .. } => *actor,
        }
    }
}

/// What travels through the mesh and the intake.
pub(crate) enum Packet<M> {
    Message(Envelope<M>),
    Control(Box<Control>),
}

impl ActorMetrics {
    /// Copies these metrics over `published`, the timeline only when it changed: they
    /// are published every millisecond while they change, and the timeline is the one
    /// part that can be long.
    pub(crate) fn publish_into(&self, published: &mut ActorMetrics) {
        // The last change's time tells a reactivated actor's timeline from its
        // predecessor's with as many changes.
        if published.actor == self.actor
            && published.lessee_changes == self.lessee_changes
            && published.lessee_timeline.last() == self.lessee_timeline.last()
        {
            let lessee_timeline = std::mem::take(&mut published.lessee_timeline);
            *published = ActorMetrics {
                lessee_timeline,
                ..*self
            };
        } else {
            published.clone_from(self);
        }
    }
}

/// Changes of the number of lessees an actor's metrics keep at least (at most twice as
/// many).
pub const LESSEE_TIMELINE_KEPT: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_cost_user_messages_no_space() {
        // The packet's tag lives in a niche of the envelope: a ring slot holds a user
        // message of 16 bytes in one cache line, as before control messages shared it.
        assert_eq!(
            std::mem::size_of::<Packet<[u64; 2]>>(),
            std::mem::size_of::<Envelope<[u64; 2]>>()
        );
        assert_eq!(std::mem::size_of::<Packet<()>>(), 40);
    }
}
