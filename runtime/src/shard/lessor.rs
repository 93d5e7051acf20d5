//! The lessor protocol (see [`crate::dual`] for the protocol itself): the lessor's
//! dual-mode state ([`Coordinator`]) and its lessees' ([`LesseeState`]), and the steps
//! that move them — admission of a message (hold, forward by key, or start a barrier or a
//! sync), scale changes and leases, partial states merged, the consolidation point, and
//! idle lessees found. What the shard's lessors share (partial states awaited, messages
//! held, barriers pending) is counted in [`Lessors`].
//!
//! These types keep their fields private: the actor table (`table`) drives them through
//! these methods and carries out what they answer (run a message here, look at the
//! consolidation point, ask the policy), so each step can be driven without a shard.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::actor::{guarded, Actor, Context};
use crate::clock;
use crate::dual::{
    ActorMetrics, Barrier, Control, LesseeProgress, ScaleChange, LESSEE_TIMELINE_KEPT,
};
use crate::envelope::{mix64, ActorId, Envelope, Nanos, ShardId};
use crate::outbound::Outbound;
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::stats::{bump, mark_handled, ShardCounters};

/// Routing decisions a lessor makes on its last reading of a lessee's progress before
/// reading it again. A stale reading only overstates the lessee's queue, by at most
/// what was forwarded since.
const ESTIMATES_PER_READ: u32 = 8;
/// How often a lessee publishes how many messages it has run.
const PROGRESS_EVERY: u64 = 16;

/// What the lessors of one shard have in common: what the shard loop looks at to decide
/// whether to keep draining its rings, and what it publishes.
#[derive(Default)]
pub(crate) struct Lessors {
    /// Partial states this shard's lessors wait for: while there are any, the shard looks
    /// at its rings between messages, not only between turns.
    awaiting_partials: usize,
    /// Messages lessors here hold back (blocked, or behind a pending barrier): they count
    /// towards the mailbox high-water mark with the mailboxes.
    held: u64,
    /// Lessors here with a barrier that waits for parts from some inputs: while there are
    /// any, the shard drains its rings whatever its mailboxes hold, since the parts may
    /// sit behind other messages there.
    pending_barriers: usize,
    /// Lessors whose metrics changed since they were last published.
    metrics_dirty: Vec<ActorId>,
    /// Lessors here that have lessees (checked for idle lessees on each tick).
    with_lessees: Vec<ActorId>,
}

impl Lessors {
    /// Partial states the lessors here wait for.
    #[inline]
    pub(crate) fn awaiting_partials(&self) -> usize {
        self.awaiting_partials
    }

    /// Messages the lessors here hold back.
    #[inline]
    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    /// Lessors here whose barrier waits for parts from some inputs.
    #[inline]
    pub(crate) fn pending_barriers(&self) -> usize {
        self.pending_barriers
    }

    /// Lessors here that have lessees.
    pub(crate) fn with_lessees(&self) -> &[ActorId] {
        &self.with_lessees
    }

    /// Whether some lessor's metrics changed since they were last published.
    pub(crate) fn metrics_changed(&self) -> bool {
        !self.metrics_dirty.is_empty()
    }

    /// The lessors whose metrics changed, for publication.
    pub(crate) fn take_changed_metrics(&mut self) -> std::vec::Drain<'_, ActorId> {
        self.metrics_dirty.drain(..)
    }

    fn note_lessees(&mut self, actor: ActorId) {
        if !self.with_lessees.contains(&actor) {
            self.with_lessees.push(actor);
        }
    }
}

/// The lessor's side of a lessee.
pub(crate) struct LesseeLink {
    shard: ShardId,
    forwarded: u64,
    progress: Arc<LesseeProgress>,
    /// `progress.processed` when last read, and routing decisions since: the lessee
    /// writes that counter as it runs, so each read is a cache miss (a hundred
    /// nanoseconds or more across cores), too much to pay for every message routed.
    processed_seen: u64,
    estimates_since_read: u32,
    /// `forwarded` at the last idleness check, and since when it has not moved.
    seen_forwarded: u64,
    idle_since: Nanos,
}

impl LesseeLink {
    /// Messages forwarded and not yet run, as of a reading at most
    /// [`ESTIMATES_PER_READ`] calls old.
    #[inline]
    fn queued(&mut self) -> u64 {
        if self.forwarded == self.processed_seen {
            return 0;
        }
        self.estimates_since_read += 1;
        if self.estimates_since_read >= ESTIMATES_PER_READ {
            return self.queued_now();
        }
        self.forwarded - self.processed_seen
    }

    /// Messages forwarded and not yet run, read now.
    fn queued_now(&mut self) -> u64 {
        self.estimates_since_read = 0;
        self.processed_seen = self
            .progress
            .processed
            .load(Ordering::Relaxed)
            .min(self.forwarded);
        self.forwarded - self.processed_seen
    }

    /// Passes a message on to the lessee.
    #[inline]
    fn forward<M>(&mut self, envelope: Envelope<M>, out: &mut Outbound<M>) {
        self.forwarded += 1;
        out.forward(self.shard, envelope);
    }
}

/// Critical messages gathered for a barrier that still waits for some inputs.
struct PendingBarrier<M> {
    id: u64,
    inputs: u32,
    arrived: Vec<Envelope<M>>,
}

/// A consolidation point in progress: the actor is Blocked.
struct SyncPoint<M> {
    /// The critical section to run once consolidated (empty for a scale-only sync).
    critical: Vec<Envelope<M>>,
    scale: Option<ScaleChange>,
    /// Lessees whose partial state has not arrived yet.
    awaiting: usize,
    started: Nanos,
}

/// What became of a message a lessor admitted.
pub(crate) enum Admitted<M> {
    /// Held back, forwarded to a lessee, or gathered into a pending barrier.
    Taken,
    /// It runs on the lessor: into its mailbox.
    Here(Envelope<M>),
    /// It started a sync: the consolidation point may be due already.
    Blocked,
    /// A user message of a mergeable operator while the policy admits: the policy
    /// decides where it runs (by its ordering key, if it has one).
    AskPolicy {
        envelope: Envelope<M>,
        key: Option<u64>,
    },
}

/// The lessor's dual-mode state. Created on an actor's first critical message or scale
/// request; plain actors never carry one.
pub(crate) struct Coordinator<M> {
    epoch: u64,
    lessees: Vec<LesseeLink>,
    held: VecDeque<Envelope<M>>,
    /// Inputs whose part of the pending barrier arrived: their later messages are held.
    held_inputs: Vec<Option<ActorId>>,
    barrier: Option<PendingBarrier<M>>,
    sync: Option<SyncPoint<M>>,
    scale_queue: VecDeque<ScaleChange>,
    /// Where the search for the least loaded worker starts next (ties rotate).
    rotation: u32,
    /// Whether any message dispatched so far had an ordering key.
    saw_keys: bool,
    metrics: ActorMetrics,
    /// Whether the actor is listed for the next publication of metrics (listed once,
    /// however often they change meanwhile).
    metrics_dirty: bool,
}

impl<M: 'static> Coordinator<M> {
    pub(crate) fn new(actor: ActorId, epoch: u64) -> Self {
        Self {
            epoch,
            lessees: Vec::new(),
            held: VecDeque::new(),
            held_inputs: Vec::new(),
            barrier: None,
            sync: None,
            scale_queue: VecDeque::new(),
            rotation: 0,
            saw_keys: false,
            metrics: ActorMetrics {
                actor,
                ..ActorMetrics::default()
            },
            metrics_dirty: false,
        }
    }

    /// Critical sections completed (see `Context::epoch`).
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// What this lessor did with lessees, barriers and consolidation.
    pub(crate) fn metrics(&self) -> &ActorMetrics {
        &self.metrics
    }

    /// Whether the actor is Blocked: a sync is in progress.
    #[inline]
    pub(crate) fn is_blocked(&self) -> bool {
        self.sync.is_some()
    }

    /// Whether a scale change is under way or queued.
    pub(crate) fn is_scaling(&self) -> bool {
        self.sync.is_some() || !self.scale_queue.is_empty()
    }

    /// Whether every partial state of the sync in progress is merged.
    #[inline]
    pub(crate) fn consolidation_due(&self) -> bool {
        self.sync.as_ref().is_some_and(|sync| sync.awaiting == 0)
    }

    /// Whether the actor could be deactivated without losing anything but its state.
    pub(crate) fn is_quiet(&self) -> bool {
        self.lessees.is_empty()
            && self.held.is_empty()
            && self.barrier.is_none()
            && self.sync.is_none()
            && self.scale_queue.is_empty()
    }

    fn record_lessees(&mut self, now: Nanos) {
        let lessees = self.lessees.len() as u32;
        let metrics = &mut self.metrics;
        metrics.lessees = lessees;
        metrics.lessee_changes += 1;
        if metrics.lessee_timeline.len() >= 2 * LESSEE_TIMELINE_KEPT {
            // Amortized: one drain per `LESSEE_TIMELINE_KEPT` changes.
            metrics.lessee_timeline.drain(..LESSEE_TIMELINE_KEPT);
        }
        metrics.lessee_timeline.push((now, lessees));
    }

    /// Marks the metrics as changed since the last publication, listing the actor in
    /// `to_publish` the first time.
    fn mark_metrics_dirty(&mut self, to_publish: &mut Vec<ActorId>) {
        if !std::mem::replace(&mut self.metrics_dirty, true) {
            to_publish.push(self.metrics.actor);
        }
    }

    /// Copies the metrics over `published` and marks them as published.
    pub(crate) fn publish_metrics(&mut self, published: &mut ActorMetrics) {
        self.metrics_dirty = false;
        self.metrics.publish_into(published);
    }

    /// Whether `change` can be applied now; the reason when not.
    fn check(&self, change: ScaleChange, home: ShardId) -> Result<(), String> {
        match change {
            ScaleChange::Add(shard) if shard == home => {
                Err(format!("shard {shard} is the actor's home"))
            }
            ScaleChange::Add(shard) if self.lessees.iter().any(|l| l.shard == shard) => {
                Err(format!("a lessee already runs on shard {shard}"))
            }
            ScaleChange::Remove(shard) if !self.lessees.iter().any(|l| l.shard == shard) => {
                Err(format!("no lessee runs on shard {shard}"))
            }
            _ => Ok(()),
        }
    }

    /// A lessor's admission: holds the message (the actor is blocked, or its input
    /// already delivered its part of a pending barrier), starts a barrier or a sync for a
    /// critical message, or runs a user message here or on a lessee. `lessor_queue` is
    /// the lessor's own mailbox; `admits` whether the policy decides where this actor's
    /// messages run.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn admit(
        &mut self,
        id: ActorId,
        actor: &dyn Actor<M>,
        envelope: Envelope<M>,
        lessor_queue: u64,
        admits: bool,
        lessors: &mut Lessors,
        out: &mut Outbound<M>,
    ) -> Admitted<M> {
        let input = envelope.source;
        if self.sync.is_some() || self.held_inputs.contains(&input) {
            self.held.push_back(envelope);
            lessors.held += 1;
            return Admitted::Taken;
        }
        if envelope.is_critical() {
            let barrier = guarded(id, "barrier", Barrier::Single, || actor.barrier(&envelope));
            let complete = match (barrier, &mut self.barrier) {
                (Barrier::Local, _) => return Admitted::Here(envelope),
                (Barrier::Wait { id, .. }, Some(pending)) if pending.id == id => {
                    pending.arrived.push(envelope);
                    self.held_inputs.push(input);
                    pending.arrived.len() >= pending.inputs as usize
                }
                (Barrier::Single, _) => {
                    // Runs after everything that arrived before it, except what a pending
                    // barrier holds (that comes after the barrier, which may itself come
                    // after this message).
                    self.begin_sync(id, vec![envelope], None, lessors, out);
                    return Admitted::Blocked;
                }
                (Barrier::Wait { .. }, Some(_)) => {
                    // Another barrier's part, from an input that has not delivered its
                    // part of the pending one: it comes after the pending barrier.
                    self.held_inputs.push(input);
                    self.held.push_back(envelope);
                    lessors.held += 1;
                    return Admitted::Taken;
                }
                (Barrier::Wait { id, inputs }, None) => {
                    lessors.pending_barriers += 1;
                    self.barrier = Some(PendingBarrier {
                        id,
                        inputs,
                        arrived: vec![envelope],
                    });
                    self.held_inputs.push(input);
                    inputs <= 1
                }
            };
            if !complete {
                return Admitted::Taken;
            }
            let barrier = self.barrier.take().expect("completed above");
            lessors.pending_barriers -= 1;
            self.held_inputs.clear();
            self.begin_sync(id, barrier.arrived, None, lessors, out);
            return Admitted::Blocked;
        }
        if self.lessees.is_empty() && !admits {
            return Admitted::Here(envelope);
        }
        let key = guarded(id, "ordering_key", None, || actor.ordering_key(&envelope));
        self.saw_keys |= key.is_some();
        if admits {
            return Admitted::AskPolicy { envelope, key };
        }
        match self.route_by_key(envelope, key, lessor_queue, out) {
            Some(envelope) => Admitted::Here(envelope),
            None => Admitted::Taken,
        }
    }

    /// Runs a lessor's message on the worker its key maps to, or (without a key) on the
    /// least loaded worker: forwards it to a lessee, or hands it back to run on the lessor.
    pub(crate) fn route_by_key(
        &mut self,
        envelope: Envelope<M>,
        key: Option<u64>,
        lessor_queue: u64,
        out: &mut Outbound<M>,
    ) -> Option<Envelope<M>> {
        if self.lessees.is_empty() {
            return Some(envelope);
        }
        let workers = self.lessees.len() as u64 + 1;
        let worker = match key {
            Some(key) => (mix64(key) % workers) as usize,
            None => {
                // The worker with the least queued work. Ties rotate, so that under light
                // load a lessee still gets its share and stays warm (an idle lessee parks,
                // and waking it would add to the next consolidation).
                let start = self.rotation as usize % workers as usize;
                self.rotation = self.rotation.wrapping_add(1);
                let lessees = &mut self.lessees;
                let mut queued = |worker: usize| match worker {
                    0 => lessor_queue,
                    lessee => lessees[lessee - 1].queued(),
                };
                let mut best = (queued(start), start);
                for step in 1..workers as usize {
                    let worker = (start + step) % workers as usize;
                    let load = queued(worker);
                    if load < best.0 {
                        best = (load, worker);
                    }
                }
                best.1
            }
        };
        if worker == 0 {
            return Some(envelope);
        }
        self.lessees[worker - 1].forward(envelope, out);
        None
    }

    /// Forwards a message to the lessee at `position` (as the policy chose); hands it
    /// back when there is no such lessee.
    pub(crate) fn forward_to(
        &mut self,
        position: usize,
        envelope: Envelope<M>,
        out: &mut Outbound<M>,
    ) -> Option<Envelope<M>> {
        match self.lessees.get_mut(position) {
            Some(lessee) => {
                lessee.forward(envelope, out);
                None
            }
            None => Some(envelope),
        }
    }

    /// Every lessee's shard and estimated queue, into `loads` (for the policy).
    pub(crate) fn lessee_loads(&mut self, loads: &mut Vec<(ShardId, u64)>) {
        loads.clear();
        loads.extend(
            self.lessees
                .iter_mut()
                .map(|lessee| (lessee.shard, lessee.queued())),
        );
    }

    /// Queues a scale request behind the sync in progress; `false` when there is none
    /// and the change should start now.
    pub(crate) fn queue_scale_if_blocked(&mut self, change: ScaleChange) -> bool {
        if self.sync.is_some() {
            self.scale_queue.push_back(change);
            return true;
        }
        false
    }

    /// The next scale request that waited for a consolidation, unless the actor is
    /// blocked again.
    pub(crate) fn next_queued_scale(&mut self) -> Option<ScaleChange> {
        if self.sync.is_some() {
            return None;
        }
        self.scale_queue.pop_front()
    }

    /// Starts a scale change now, or refuses it with a logged reason. Returns whether it
    /// started a sync (then the consolidation point may be due already). `mailbox` is
    /// the lessor's own: a lessee is added without a sync only while no message there
    /// carries an ordering key.
    pub(crate) fn start_scale(
        &mut self,
        id: ActorId,
        actor: &dyn Actor<M>,
        mailbox: &VecDeque<Envelope<M>>,
        change: ScaleChange,
        lessors: &mut Lessors,
        out: &mut Outbound<M>,
    ) -> bool {
        // Scale events are rare (a request, a retirement): a span for the logs of each.
        let _scale = tracing::debug_span!("scale", actor = %id, ?change).entered();
        let mergeable = out.shared.is_mergeable(&id);
        let checked = match change {
            ScaleChange::Add(_) if !mergeable => {
                Err("its state is exclusive and cannot be split across shards".to_string())
            }
            _ => self.check(change, out.shard),
        };
        if let Err(reason) = checked {
            tracing::warn!(actor = %id, ?change, "scale request refused: {reason}");
            self.metrics.refused_scale_requests += 1;
            self.mark_metrics_dirty(&mut lessors.metrics_dirty);
            return false;
        }
        if let ScaleChange::Add(shard) = change {
            // Without ordering keys in flight, a new worker changes no key's home: add it
            // now, without blocking the actor.
            let keyless = !self.saw_keys
                && mailbox.iter().all(|message| {
                    guarded(id, "ordering_key", Some(0), || actor.ordering_key(message)).is_none()
                });
            if keyless {
                self.lease(id, shard, out);
                lessors.note_lessees(id);
                self.mark_metrics_dirty(&mut lessors.metrics_dirty);
                return false;
            }
        }
        self.begin_sync(id, Vec::new(), Some(change), lessors, out);
        true
    }

    /// Starts a lessee of `actor` on `shard`: the lease travels ahead of every message
    /// forwarded to it, on the same ring.
    fn lease(&mut self, actor: ActorId, shard: ShardId, out: &mut Outbound<M>) {
        tracing::debug!(actor = %actor, shard, "lessee added");
        let now = clock::now();
        let progress = Arc::new(LesseeProgress::default());
        out.control(
            shard,
            Control::Lease {
                actor,
                home: out.shard,
                epoch: self.epoch,
                progress: progress.clone(),
            },
        );
        self.lessees.push(LesseeLink {
            shard,
            forwarded: 0,
            progress,
            processed_seen: 0,
            estimates_since_read: 0,
            seen_forwarded: 0,
            idle_since: now,
        });
        self.record_lessees(now);
    }

    /// Blocks the lessor: asks every lessee for its partial state (retiring the one
    /// `scale` removes), and records what to do once consolidated.
    fn begin_sync(
        &mut self,
        actor: ActorId,
        critical: Vec<Envelope<M>>,
        scale: Option<ScaleChange>,
        lessors: &mut Lessors,
        out: &mut Outbound<M>,
    ) {
        let retiring = match scale {
            Some(ScaleChange::Remove(shard)) => Some(shard),
            _ => None,
        };
        if let Some(shard) = retiring {
            tracing::debug!(actor = %actor, shard, "lessee retiring: its partial state is merged first");
        }
        let epoch_after = self.epoch + u64::from(!critical.is_empty());
        for lessee in &self.lessees {
            out.control(
                lessee.shard,
                Control::Sync {
                    actor,
                    retire: retiring == Some(lessee.shard),
                    epoch_after,
                },
            );
        }
        self.metrics.syncs += 1;
        self.sync = Some(SyncPoint {
            critical,
            scale,
            awaiting: self.lessees.len(),
            started: clock::now(),
        });
        lessors.awaiting_partials += self.lessees.len();
    }

    /// Merges a lessee's partial state (from `from`, which has left if `retired`). A
    /// panicking merge fails the app (see `crate::failure`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn accept_partial(
        &mut self,
        id: ActorId,
        actor: &mut dyn Actor<M>,
        from: ShardId,
        snapshot: Option<Snapshot>,
        retired: bool,
        lessors: &mut Lessors,
        shared: &Shared<M>,
        shard: ShardId,
    ) {
        if let Some(snapshot) = snapshot {
            let started = clock::now();
            let merged =
                shared
                    .failures
                    .guard_state(id, &shared.counters[shard], shard, Err(None), || {
                        actor.merge(&snapshot).map_err(Some)
                    });
            let metrics = &mut self.metrics;
            metrics.merge_ns += clock::now().saturating_sub(started);
            metrics.consolidations += 1;
            metrics.consolidated_bytes += snapshot.len() as u64;
            if let Err(error) = merged {
                metrics.snapshot_errors += 1;
                if let Some(error) = error {
                    tracing::error!(actor = %id, "merge failed: {error}");
                }
            }
        }
        if retired {
            self.lessees.retain(|lessee| lessee.shard != from);
            self.record_lessees(clock::now());
            if self.lessees.is_empty() {
                lessors.with_lessees.retain(|lessor| *lessor != id);
            }
        }
        if let Some(sync) = &mut self.sync {
            sync.awaiting = sync.awaiting.saturating_sub(1);
            lessors.awaiting_partials = lessors.awaiting_partials.saturating_sub(1);
            if sync.awaiting == 0 {
                self.metrics.consolidation_ns += clock::now().saturating_sub(sync.started);
            }
        }
    }

    /// The consolidation point: every partial state is merged and everything that
    /// arrived before the sync has run. Runs the critical section (a panicking one fails
    /// the app; one of an app that failed is discarded unrun: see `crate::failure`) and
    /// applies a lessee's addition; returns the
    /// held messages, to release in arrival order (`None` when no sync was due). Scale
    /// requests that waited come next (`next_queued_scale`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn consolidate(
        &mut self,
        id: ActorId,
        actor: &mut Box<dyn Actor<M>>,
        counters: &ShardCounters,
        lessors: &mut Lessors,
        out: &mut Outbound<M>,
    ) -> Option<VecDeque<Envelope<M>>> {
        let sync = self.sync.take()?;
        if let Some(first) = sync.critical.first() {
            let critical = sync.critical.len() as u64;
            let shard = out.shard;
            let mut ctx = Context {
                out: &mut *out,
                me: id,
                current: first.ctx,
                epoch: self.epoch,
            };
            let messages = sync.critical;
            if ctx.out.shared.failures.is_failed(id.app) {
                for message in &messages {
                    super::table::discarded(message, &ctx.out.shared, counters);
                }
            } else if let Err(payload) =
                catch_unwind(AssertUnwindSafe(|| actor.critical(&mut ctx, messages)))
            {
                bump(&counters.handler_panics, 1);
                ctx.out
                    .shared
                    .failures
                    .handler_panicked(id, &*payload, shard);
            }
            self.epoch += 1;
            self.metrics.critical_sections += 1;
            mark_handled(counters, critical);
        }
        let now = clock::now();
        if let Some(ScaleChange::Add(shard)) = sync.scale {
            self.lease(id, shard, out);
            lessors.note_lessees(id);
        }
        self.metrics.blocked_ns += now.saturating_sub(sync.started);
        let held = std::mem::take(&mut self.held);
        self.mark_metrics_dirty(&mut lessors.metrics_dirty);
        // Released: admission counts again whatever it holds anew.
        debug_assert!(lessors.held >= held.len() as u64);
        lessors.held = lessors.held.saturating_sub(held.len() as u64);
        Some(held)
    }

    /// Puts released messages back, in order, after one of them blocked the actor again:
    /// behind what it held just now (`envelope` first, then the rest of `held`).
    pub(crate) fn hold_again(
        &mut self,
        mut held: VecDeque<Envelope<M>>,
        envelope: Envelope<M>,
        lessors: &mut Lessors,
    ) {
        // Whatever it held just now goes first; the backlog itself is not copied (held is
        // usually the long one).
        held.push_front(envelope);
        let returned = held.len() as u64;
        let just_held = std::mem::replace(&mut self.held, held);
        for earlier in just_held.into_iter().rev() {
            self.held.push_front(earlier);
        }
        lessors.held += returned;
    }

    /// A lessee given nothing for `after_ns` and with nothing queued, to retire (none
    /// while a scale change is under way).
    pub(crate) fn idle_lessee(&mut self, now: Nanos, after_ns: u64) -> Option<ShardId> {
        if self.is_scaling() {
            return None;
        }
        let mut idle = None;
        for lessee in &mut self.lessees {
            if lessee.forwarded != lessee.seen_forwarded {
                lessee.seen_forwarded = lessee.forwarded;
                lessee.idle_since = now;
            } else if idle.is_none()
                && now.saturating_sub(lessee.idle_since) >= after_ns
                && lessee.queued_now() == 0
            {
                idle = Some(lessee.shard);
            }
        }
        idle
    }
}

/// A lessee's own state, on its shard.
pub(crate) struct LesseeState {
    home: ShardId,
    epoch: u64,
    progress: Arc<LesseeProgress>,
    processed: u64,
    /// A sync that waits for the lessee's mailbox to empty: `(retire, epoch_after)`.
    pending_sync: Option<(bool, u64)>,
}

impl LesseeState {
    pub(crate) fn new(home: ShardId, epoch: u64, progress: Arc<LesseeProgress>) -> Self {
        Self {
            home,
            epoch,
            progress,
            processed: 0,
            pending_sync: None,
        }
    }

    /// The lessor's epoch when this lessee last synced (see `Context::epoch`).
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Counts a message run; returns whether a sync is due now (`mailbox_empty`: the
    /// lessee has run everything forwarded before it).
    #[inline]
    pub(crate) fn ran(&mut self, mailbox_empty: bool) -> bool {
        self.processed += 1;
        // Published now and then, not after every message: the lessor reads it on
        // every dispatch, and each store would cost it a cache miss.
        if self.processed.is_multiple_of(PROGRESS_EVERY) || mailbox_empty {
            self.progress
                .processed
                .store(self.processed, Ordering::Relaxed);
        }
        self.pending_sync.is_some() && mailbox_empty
    }

    /// Records a sync from the lessor, answered once the mailbox is empty.
    pub(crate) fn sync_requested(&mut self, retire: bool, epoch_after: u64) {
        self.pending_sync = Some((retire, epoch_after));
    }

    /// Answers a pending sync: the partial state, to the lessor. Returns whether the
    /// lessee retires (and must leave); `None` when no sync was pending.
    pub(crate) fn answer_sync<M: 'static>(
        &mut self,
        id: ActorId,
        actor: &mut dyn Actor<M>,
        out: &mut Outbound<M>,
    ) -> Option<bool> {
        let (retire, epoch_after) = self.pending_sync.take()?;
        let counters = &out.shared.counters[out.shard];
        let snapshot = match out.shared.failures.guard_state(
            id,
            counters,
            out.shard,
            Ok(None),
            || actor.snapshot(),
        ) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::error!(actor = %id, "snapshot failed, its partial state is lost: {error}");
                None
            }
        };
        self.epoch = epoch_after;
        out.control(
            self.home,
            Control::Partial {
                actor: id,
                from: out.shard,
                snapshot,
                retired: retire,
            },
        );
        Some(retire)
    }
}

#[cfg(test)]
mod tests {
    //! The protocol driven step by step, without shards or threads: a lessor on shard 0
    //! of three, whose sends land in rings the tests read.

    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::dual::Packet;
    use crate::mesh::{build_links, ShardLinks};
    use crate::snapshot::SnapshotError;

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Msg {
        /// A user message with an ordering key.
        Keyed(u64),
        /// A user message without one.
        Free(u64),
        /// A critical message that runs alone.
        Single(u64),
        /// A critical message, part of barrier `id` of `inputs` inputs.
        Part { id: u64, inputs: u32 },
    }

    /// What the actor saw: messages received, critical sections (their messages),
    /// partial states merged.
    #[derive(Default)]
    struct Seen {
        received: Vec<Msg>,
        critical: Vec<Vec<Msg>>,
        merged: Vec<u64>,
    }

    struct Recorder(Rc<RefCell<Seen>>);

    impl Actor<Msg> for Recorder {
        fn receive(&mut self, _ctx: &mut Context<'_, Msg>, message: Envelope<Msg>) {
            self.0.borrow_mut().received.push(message.payload);
        }
        fn ordering_key(&self, message: &Envelope<Msg>) -> Option<u64> {
            match message.payload {
                Msg::Keyed(key) => Some(key),
                _ => None,
            }
        }
        fn barrier(&self, message: &Envelope<Msg>) -> Barrier {
            match message.payload {
                Msg::Part { id, inputs } => Barrier::Wait { id, inputs },
                _ => Barrier::Single,
            }
        }
        fn critical(&mut self, _ctx: &mut Context<'_, Msg>, messages: Vec<Envelope<Msg>>) {
            let messages = messages.into_iter().map(|m| m.payload).collect();
            self.0.borrow_mut().critical.push(messages);
        }
        fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
            let received = self.0.borrow().received.len() as u64;
            Snapshot::of(&received).map(Some)
        }
        fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
            let partial = partial.archived::<u64>()?.to_native();
            self.0.borrow_mut().merged.push(partial);
            Ok(())
        }
    }

    const ACTOR: ActorId = ActorId::new(0, 0, 0);
    const SHARDS: usize = 3;

    /// A lessor on shard 0: its state, its handler, its shard's tallies, and its sends.
    struct Lessor {
        coordinator: Coordinator<Msg>,
        actor: Box<dyn Actor<Msg>>,
        seen: Rc<RefCell<Seen>>,
        lessors: Lessors,
        out: Outbound<Msg>,
        /// Every shard's ends of the mesh (shard 0's outgoing ones are in `out`).
        links: Vec<ShardLinks<Packet<Msg>>>,
    }

    impl Lessor {
        fn new() -> Self {
            let shared = Arc::new(Shared::for_tests(SHARDS));
            let mut links = build_links(SHARDS, 64);
            let outgoing = std::mem::take(&mut links[0].outgoing);
            let seen = Rc::new(RefCell::new(Seen::default()));
            Self {
                coordinator: Coordinator::new(ACTOR, 0),
                actor: Box::new(Recorder(seen.clone())),
                seen,
                lessors: Lessors::default(),
                out: Outbound::new(0, shared, outgoing),
                links,
            }
        }

        fn admit(&mut self, message: Envelope<Msg>) -> Admitted<Msg> {
            self.coordinator.admit(
                ACTOR,
                &*self.actor,
                message,
                0,
                false,
                &mut self.lessors,
                &mut self.out,
            )
        }

        fn scale(&mut self, change: ScaleChange, mailbox: &[Msg]) -> bool {
            let mailbox = mailbox
                .iter()
                .map(|m| Envelope::user(ACTOR, m.clone()))
                .collect();
            self.coordinator.start_scale(
                ACTOR,
                &*self.actor,
                &mailbox,
                change,
                &mut self.lessors,
                &mut self.out,
            )
        }

        fn partial(&mut self, from: ShardId, state: Option<u64>, retired: bool) {
            let snapshot = state.map(|state| Snapshot::of(&state).unwrap());
            self.coordinator.accept_partial(
                ACTOR,
                &mut *self.actor,
                from,
                snapshot,
                retired,
                &mut self.lessors,
                &self.out.shared,
                0,
            );
        }

        fn consolidate(&mut self) -> Option<Vec<Msg>> {
            let shared = self.out.shared.clone();
            let held = self.coordinator.consolidate(
                ACTOR,
                &mut self.actor,
                &shared.counters[0],
                &mut self.lessors,
                &mut self.out,
            )?;
            Some(held.into_iter().map(|m| m.payload).collect())
        }

        /// Everything shard 0 sent to `shard` so far.
        fn received_by(&mut self, shard: ShardId) -> Vec<Packet<Msg>> {
            let mut packets = Vec::new();
            for (from, ring) in &mut self.links[shard].incoming {
                if *from == 0 {
                    ring.drain(|packet| packets.push(packet));
                }
            }
            packets
        }

        /// A lessor with lessees on shards 1 and 2 (added without a sync: nothing keyed
        /// was seen), their leases taken off the rings.
        fn with_two_lessees() -> Self {
            let mut lessor = Self::new();
            assert!(!lessor.scale(ScaleChange::Add(1), &[]));
            assert!(!lessor.scale(ScaleChange::Add(2), &[]));
            for shard in [1, 2] {
                let packets = lessor.received_by(shard);
                assert!(matches!(
                    packets.as_slice(),
                    [Packet::Control(lease)] if matches!(**lease, Control::Lease { actor, home: 0, epoch: 0, .. } if actor == ACTOR)
                ));
            }
            assert_eq!(lessor.coordinator.metrics().lessees, 2);
            assert_eq!(lessor.lessors.with_lessees(), [ACTOR]);
            lessor
        }
    }

    fn from(input: u32, payload: Msg) -> Envelope<Msg> {
        Envelope::user(ACTOR, payload).from_source(ActorId::new(0, 1, input))
    }

    fn critical(input: u32, payload: Msg) -> Envelope<Msg> {
        Envelope::critical(ACTOR, payload).from_source(ActorId::new(0, 1, input))
    }

    /// The syncs a lessee got: `(retire, epoch_after)`.
    fn syncs(packets: &[Packet<Msg>]) -> Vec<(bool, u64)> {
        packets
            .iter()
            .filter_map(|packet| match packet {
                Packet::Control(control) => match **control {
                    Control::Sync {
                        actor,
                        retire,
                        epoch_after,
                    } if actor == ACTOR => Some((retire, epoch_after)),
                    _ => None,
                },
                Packet::Message(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_critical_message_blocks_the_lessor_and_syncs_every_lessee() {
        let mut lessor = Lessor::with_two_lessees();
        assert!(matches!(
            lessor.admit(critical(0, Msg::Single(1))),
            Admitted::Blocked
        ));
        assert!(lessor.coordinator.is_blocked());
        assert!(!lessor.coordinator.consolidation_due());
        assert_eq!(lessor.lessors.awaiting_partials(), 2);
        for shard in [1, 2] {
            assert_eq!(syncs(&lessor.received_by(shard)), [(false, 1)]);
        }
        // While blocked, every message is held, user or critical.
        for payload in [Msg::Free(2), Msg::Keyed(3), Msg::Single(4)] {
            let message = if let Msg::Single(_) = payload {
                critical(0, payload)
            } else {
                from(0, payload)
            };
            assert!(matches!(lessor.admit(message), Admitted::Taken));
        }
        assert_eq!(lessor.lessors.held(), 3);
        assert_eq!(lessor.coordinator.metrics().syncs, 1);
    }

    #[test]
    fn partial_states_merge_then_the_critical_section_runs_and_held_messages_release_in_order() {
        let mut lessor = Lessor::with_two_lessees();
        lessor.admit(critical(0, Msg::Single(1)));
        for payload in [Msg::Free(2), Msg::Keyed(3), Msg::Free(4)] {
            lessor.admit(from(0, payload));
        }
        lessor.partial(2, Some(7), false);
        assert!(!lessor.coordinator.consolidation_due());
        assert_eq!(lessor.lessors.awaiting_partials(), 1);
        lessor.partial(1, Some(5), false);
        assert!(lessor.coordinator.consolidation_due());
        assert_eq!(lessor.lessors.awaiting_partials(), 0);
        assert_eq!(lessor.seen.borrow().merged, [7, 5]);
        let metrics = lessor.coordinator.metrics();
        assert_eq!(metrics.consolidations, 2);
        assert!(metrics.consolidated_bytes > 0);

        let held = lessor.consolidate().expect("a sync was due");
        assert_eq!(held, [Msg::Free(2), Msg::Keyed(3), Msg::Free(4)]);
        assert_eq!(lessor.seen.borrow().critical, [vec![Msg::Single(1)]]);
        assert_eq!(lessor.lessors.held(), 0);
        assert_eq!(lessor.coordinator.epoch(), 1);
        assert!(!lessor.coordinator.is_blocked());
        assert_eq!(lessor.coordinator.metrics().critical_sections, 1);
        assert_eq!(lessor.coordinator.metrics().lessees, 2);
        // Nothing more is due.
        assert!(lessor.consolidate().is_none());
    }

    #[test]
    fn released_messages_that_block_again_go_back_in_order() {
        let mut lessor = Lessor::with_two_lessees();
        lessor.admit(critical(0, Msg::Single(1)));
        lessor.admit(from(0, Msg::Free(2)));
        lessor.admit(critical(0, Msg::Single(3)));
        lessor.admit(from(0, Msg::Free(4)));
        lessor.partial(1, None, false);
        lessor.partial(2, None, false);
        let mut held: VecDeque<_> = lessor
            .consolidate()
            .unwrap()
            .into_iter()
            .map(|m| Envelope::user(ACTOR, m))
            .collect();
        // Released in order: the first runs, the critical one blocks the actor again...
        let first = held.pop_front().unwrap();
        assert!(matches!(
            lessor.admit(first),
            Admitted::Here(_) | Admitted::Taken
        ));
        let mut second = held.pop_front().unwrap();
        second.kind = crate::envelope::MessageKind::Critical;
        assert!(matches!(lessor.admit(second), Admitted::Blocked));
        // ... and one it holds anew goes before the rest of the released backlog.
        lessor.admit(from(0, Msg::Free(5)));
        let rest = held.pop_front().unwrap();
        lessor
            .coordinator
            .hold_again(held, rest, &mut lessor.lessors);
        assert_eq!(lessor.lessors.held(), 2);
        lessor.partial(1, None, false);
        lessor.partial(2, None, false);
        assert_eq!(lessor.consolidate().unwrap(), [Msg::Free(5), Msg::Free(4)]);
        assert_eq!(lessor.coordinator.epoch(), 2);
    }

    #[test]
    fn a_barrier_waits_for_a_part_from_every_input() {
        let mut lessor = Lessor::new();
        let part = Msg::Part { id: 9, inputs: 2 };
        assert!(matches!(
            lessor.admit(critical(1, part.clone())),
            Admitted::Taken
        ));
        assert_eq!(lessor.lessors.pending_barriers(), 1);
        assert!(!lessor.coordinator.is_blocked());
        // Input 1 delivered its part: what it sends next comes after the barrier.
        assert!(matches!(
            lessor.admit(from(1, Msg::Free(10))),
            Admitted::Taken
        ));
        assert_eq!(lessor.lessors.held(), 1);
        // Input 2 has not: its messages come before the barrier, and run.
        assert!(matches!(
            lessor.admit(from(2, Msg::Free(20))),
            Admitted::Here(envelope) if envelope.payload == Msg::Free(20)
        ));
        // Input 1's part of a later barrier waits behind this one.
        let later = Msg::Part { id: 10, inputs: 2 };
        assert!(matches!(
            lessor.admit(critical(1, later.clone())),
            Admitted::Taken
        ));
        assert_eq!(lessor.lessors.held(), 2);
        // The last part completes the barrier: a sync without lessees is due at once.
        let last = Msg::Part { id: 9, inputs: 2 };
        assert!(matches!(
            lessor.admit(critical(2, last.clone())),
            Admitted::Blocked
        ));
        assert_eq!(lessor.lessors.pending_barriers(), 0);
        assert!(lessor.coordinator.consolidation_due());
        let held = lessor.consolidate().unwrap();
        assert_eq!(lessor.seen.borrow().critical, [vec![part, last]]);
        assert_eq!(held, [Msg::Free(10), later]);
        assert_eq!(lessor.coordinator.epoch(), 1);
    }

    #[test]
    fn keyed_messages_stay_on_their_worker_and_keyless_ones_spread() {
        let mut lessor = Lessor::with_two_lessees();
        let worker_of = |lessor: &mut Lessor, key: u64| -> usize {
            match lessor.coordinator.route_by_key(
                Envelope::user(ACTOR, Msg::Keyed(key)),
                Some(key),
                0,
                &mut lessor.out,
            ) {
                Some(_) => 0,
                None => (1..SHARDS)
                    .find(|&shard| !lessor.received_by(shard).is_empty())
                    .expect("forwarded somewhere"),
            }
        };
        for key in 0..50 {
            let worker = worker_of(&mut lessor, key);
            assert_eq!(worker, (mix64(key) % 3) as usize, "key {key}");
            assert_eq!(worker_of(&mut lessor, key), worker, "key {key}");
        }
        // Without a key, the least loaded worker: the lessees hold what was forwarded
        // (none of it has run), so the idle lessor.
        let free = Envelope::user(ACTOR, Msg::Free(0));
        assert!(lessor
            .coordinator
            .route_by_key(free, None, 0, &mut lessor.out)
            .is_some());
        // Ties rotate over the lessor and both lessees.
        let mut lessor = Lessor::with_two_lessees();
        let mut workers = Vec::new();
        for n in 0..3 {
            let free = Envelope::user(ACTOR, Msg::Free(n));
            match lessor
                .coordinator
                .route_by_key(free, None, 0, &mut lessor.out)
            {
                Some(_) => workers.push(0),
                None => workers.extend((1..SHARDS).filter(|&s| !lessor.received_by(s).is_empty())),
            }
        }
        workers.sort_unstable();
        assert_eq!(workers, [0, 1, 2]);
    }

    #[test]
    fn a_scale_request_waits_for_the_consolidation_point() {
        let mut lessor = Lessor::new();
        // A keyed message waits in the mailbox: adding a worker would move keys, so the
        // addition waits for a consolidation point.
        assert!(lessor.scale(ScaleChange::Add(1), &[Msg::Keyed(3)]));
        assert!(lessor.coordinator.is_blocked());
        assert!(lessor.coordinator.is_scaling());
        assert!(
            lessor.received_by(1).is_empty(),
            "no lease before the point"
        );
        // Another request queues behind it.
        assert!(lessor
            .coordinator
            .queue_scale_if_blocked(ScaleChange::Add(2)));
        assert!(lessor.coordinator.consolidation_due());
        assert_eq!(lessor.consolidate().unwrap(), []);
        // A scale-only sync ends no epoch.
        assert_eq!(lessor.coordinator.epoch(), 0);
        assert!(lessor.seen.borrow().critical.is_empty());
        let packets = lessor.received_by(1);
        assert!(matches!(
            packets.as_slice(),
            [Packet::Control(lease)] if matches!(**lease, Control::Lease { actor, home: 0, epoch: 0, .. } if actor == ACTOR)
        ));
        assert_eq!(lessor.coordinator.metrics().lessees, 1);
        assert_eq!(
            lessor.coordinator.next_queued_scale(),
            Some(ScaleChange::Add(2))
        );
        assert_eq!(lessor.coordinator.next_queued_scale(), None);
        // Refused: the home shard, and a lessee that is there already.
        assert!(!lessor.scale(ScaleChange::Add(0), &[]));
        assert!(!lessor.scale(ScaleChange::Add(1), &[]));
        assert_eq!(lessor.coordinator.metrics().refused_scale_requests, 2);
    }

    #[test]
    fn retiring_a_lessee_merges_its_state_and_lets_it_go() {
        let mut lessor = Lessor::with_two_lessees();
        assert!(lessor.scale(ScaleChange::Remove(2), &[]));
        assert_eq!(syncs(&lessor.received_by(1)), [(false, 0)]);
        assert_eq!(syncs(&lessor.received_by(2)), [(true, 0)]);
        lessor.partial(2, Some(4), true);
        assert_eq!(lessor.coordinator.metrics().lessees, 1);
        lessor.partial(1, Some(6), false);
        assert_eq!(lessor.seen.borrow().merged, [4, 6]);
        lessor.consolidate().unwrap();
        assert_eq!(lessor.lessors.with_lessees(), [ACTOR]);
        assert!(lessor.scale(ScaleChange::Remove(1), &[]));
        lessor.partial(1, None, true);
        lessor.consolidate().unwrap();
        assert_eq!(lessor.coordinator.metrics().lessees, 0);
        assert!(lessor.lessors.with_lessees().is_empty());
        assert!(lessor.coordinator.is_quiet());
    }

    #[test]
    fn a_lessee_answers_a_sync_once_its_mailbox_is_empty() {
        let shared = Arc::new(Shared::<Msg>::for_tests(SHARDS));
        let mut links = build_links(SHARDS, 64);
        let mut out = Outbound::new(1, shared, std::mem::take(&mut links[1].outgoing));
        let progress = Arc::new(LesseeProgress::default());
        let mut lessee = LesseeState::new(0, 3, progress.clone());
        let seen = Rc::new(RefCell::new(Seen::default()));
        seen.borrow_mut().received = vec![Msg::Free(1), Msg::Free(2)];
        let mut actor = Recorder(seen);
        lessee.sync_requested(true, 4);
        assert!(
            !lessee.ran(false),
            "messages forwarded before the sync wait"
        );
        assert!(lessee.ran(true));
        assert_eq!(progress.processed.load(Ordering::Relaxed), 2);
        assert_eq!(lessee.answer_sync(ACTOR, &mut actor, &mut out), Some(true));
        assert_eq!(lessee.epoch(), 4);
        assert_eq!(lessee.answer_sync(ACTOR, &mut actor, &mut out), None);
        let mut packets = Vec::new();
        for (from, ring) in &mut links[0].incoming {
            if *from == 1 {
                ring.drain(|packet| packets.push(packet));
            }
        }
        let [Packet::Control(control)] = packets.as_slice() else {
            panic!("one partial state for the lessor");
        };
        let Control::Partial {
            actor,
            from: 1,
            snapshot: Some(snapshot),
            retired: true,
        } = &**control
        else {
            panic!("a partial state from shard 1, retiring");
        };
        assert_eq!(*actor, ACTOR);
        assert_eq!(snapshot.archived::<u64>().unwrap().to_native(), 2);
    }

    #[test]
    fn an_actor_that_scales_all_day_keeps_bounded_metrics() {
        let mut coordinator = Coordinator::<()>::new(ActorId::new(0, 0, 0), 0);
        let changes = 3 * LESSEE_TIMELINE_KEPT as u64 + 7;
        for at in 0..changes {
            coordinator.record_lessees(at);
            let timeline = &coordinator.metrics.lessee_timeline;
            assert!(timeline.len() <= 2 * LESSEE_TIMELINE_KEPT);
            assert_eq!(timeline.last(), Some(&(at, 0)));
        }
        let timeline = &coordinator.metrics.lessee_timeline;
        assert!(timeline.len() >= LESSEE_TIMELINE_KEPT);
        assert!(timeline.windows(2).all(|pair| pair[0].0 + 1 == pair[1].0));
        assert_eq!(coordinator.metrics.lessee_changes, changes);
    }

    #[test]
    fn published_metrics_equal_the_lessors() {
        let mut coordinator = Coordinator::<()>::new(ActorId::new(0, 1, 2), 0);
        let mut published = ActorMetrics::default();
        for step in 0..50u64 {
            if step % 7 == 0 {
                coordinator.record_lessees(step);
            }
            coordinator.metrics.syncs += 1;
            coordinator.metrics.blocked_ns += step;
            coordinator.metrics.publish_into(&mut published);
            assert_eq!(published, coordinator.metrics);
        }
        // Another actor's metrics published over these are that actor's, timeline included.
        let other = Coordinator::<()>::new(ActorId::new(0, 1, 3), 0);
        other.metrics.publish_into(&mut published);
        assert_eq!(published, other.metrics);
    }

    #[test]
    fn metrics_are_listed_once_per_publication() {
        let actor = ActorId::new(0, 0, 0);
        let mut coordinator = Coordinator::<()>::new(actor, 0);
        let mut listed = Vec::new();
        coordinator.mark_metrics_dirty(&mut listed);
        coordinator.mark_metrics_dirty(&mut listed);
        assert_eq!(listed, [actor]);
        coordinator.metrics_dirty = false;
        coordinator.mark_metrics_dirty(&mut listed);
        assert_eq!(listed, [actor, actor]);
    }
}
