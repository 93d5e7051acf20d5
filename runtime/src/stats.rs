//! Per-shard counters: written by the owning shard only (plain stores, no read-modify-
//! write), readable by anyone at any time without locks.

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters of one shard. Each field has a single writer, the shard's thread.
#[derive(Default, Debug)]
pub(crate) struct ShardCounters {
    pub(crate) msgs_in: AtomicU64,
    pub(crate) msgs_out: AtomicU64,
    pub(crate) handled: AtomicU64,
    pub(crate) ring_full: AtomicU64,
    pub(crate) parks: AtomicU64,
    pub(crate) wakes: AtomicU64,
    pub(crate) busy_ns: AtomicU64,
    pub(crate) activations: AtomicU64,
    pub(crate) deactivations: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    /// Messages dropped because their app had failed (see `crate::failure`).
    pub(crate) discarded: AtomicU64,
    /// Messages waiting in the shard's mailboxes now.
    pub(crate) queued: AtomicU64,
    /// Messages the shard's blocked lessors hold back, as of the last turn.
    pub(crate) held: AtomicU64,
    /// The most `queued + held` was at the start or the end of a turn.
    pub(crate) queued_peak: AtomicU64,
    /// The share of recent time the shard was busy, in thousandths (smoothed over about
    /// 8 ms, updated on each tick).
    pub(crate) utilization_permille: AtomicU64,
    pub(crate) shed: AtomicU64,
    pub(crate) slow_handlers: AtomicU64,
}

/// Adds `n` to a single-writer counter: a load and a store, no locked instruction.
#[inline(always)]
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Counts `n` messages as handled. Released after the handler's sends were counted
/// (see `Outbound::send`): shutdown's quiescence check relies on that order.
#[inline]
pub(crate) fn mark_handled(counters: &ShardCounters, n: u64) {
    counters.handled.store(
        counters.handled.load(Ordering::Relaxed) + n,
        Ordering::Release,
    );
}

/// A snapshot of one shard's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// The shard.
    pub shard: usize,
    /// The CPU it is pinned to, or `None` when unpinned.
    pub cpu: Option<usize>,
    /// Messages that arrived at the shard (from other shards, from outside, or sent by its
    /// own actors to each other).
    pub msgs_in: u64,
    /// Messages its handlers sent.
    pub msgs_out: u64,
    /// Messages its handlers finished, and the runtime's control messages it handled
    /// (dual-mode syncs, leases, partial states, scale requests).
    pub handled: u64,
    /// Times a ring towards another shard was found full (the message waited in the
    /// shard's outbox; nothing is dropped).
    pub ring_full: u64,
    /// Times the shard parked its thread.
    pub parks: u64,
    /// Times it woke another, parked shard.
    pub wakes: u64,
    /// Nanoseconds spent running handlers and runtime work (not spinning idle).
    pub busy_ns: u64,
    /// Actor activations (first message, or first after a deactivation).
    pub activations: u64,
    /// Actor deactivations after their idle timeout.
    pub deactivations: u64,
    /// Handlers that panicked; each fails its app (see [`failure`](crate::failure)).
    pub handler_panics: u64,
    /// Messages dropped here because their app had failed, unhandled (they count as
    /// handled).
    pub discarded: u64,
    /// Messages the scheduling policy dropped because they could not meet their deadline.
    pub shed: u64,
    /// Handlers that held the shard past the handler bound (measured while handlers are
    /// timed).
    pub slow_handlers: u64,
    /// The most messages its mailboxes held, together with what blocked lessors held
    /// back, seen at the start or the end of a turn: bounded by the mailbox high-water
    /// mark plus what one drain of the inbound rings and one turn's local sends can add
    /// (see `RuntimeBuilder::mailbox_high_water`), except while lessors wait for partial
    /// states or barrier parts.
    pub queued_peak: u64,
    /// Messages waiting in its mailboxes when the snapshot was taken (as of the shard's
    /// last turn boundary; 0 in the final report, after the drain).
    pub queued: u64,
    /// Dual-mode metrics of the lessors on this shard that had critical messages or
    /// lessees (filled in the final report only; empty in live snapshots).
    pub actors: Vec<crate::dual::ActorMetrics>,
}

impl ShardCounters {
    pub(crate) fn snapshot(&self, shard: usize, cpu: Option<usize>) -> ShardStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Acquire);
        ShardStats {
            shard,
            cpu,
            msgs_in: read(&self.msgs_in),
            msgs_out: read(&self.msgs_out),
            handled: read(&self.handled),
            ring_full: read(&self.ring_full),
            parks: read(&self.parks),
            wakes: read(&self.wakes),
            busy_ns: read(&self.busy_ns),
            activations: read(&self.activations),
            deactivations: read(&self.deactivations),
            handler_panics: read(&self.handler_panics),
            discarded: read(&self.discarded),
            shed: read(&self.shed),
            slow_handlers: read(&self.slow_handlers),
            queued_peak: read(&self.queued_peak),
            queued: read(&self.queued),
            actors: Vec::new(),
        }
    }
}
