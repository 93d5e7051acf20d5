//! The actors active on one shard: [`ActorTable`], a slab of [`ActorSlot`]s indexed
//! through a hash map, what deactivated actors left behind, and the ready queue. Messages
//! enter actors here (`enqueue`: plain actors and lessees take a fast path into their
//! mailbox; lessors go through admission); the lessor protocol's steps
//! ([`lessor`](super::lessor)) are carried out here on the slots they concern, and
//! control messages are dispatched to them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::actor::{guarded, Actor, Factories, SavedState};
use crate::clock;
use crate::dual::{ActorMetrics, Control, ScaleChange};
use crate::envelope::{ActorId, AppId, Envelope, Nanos, ShardId};
use crate::outbound::Outbound;
use crate::scheduling::{Admission, AdmissionView, ReadyQueue, SchedulingPolicy, ShardLoad};
use crate::shared::Shared;
use crate::stats::{bump, mark_handled, ShardCounters};

use super::lessor::{Admitted, Coordinator, LesseeState, Lessors};

/// What an active actor is, besides its handler.
pub(super) enum Role<M> {
    /// Runs alone on its home shard and has never needed the dual-mode machinery.
    Plain,
    /// The actor's lessor, with its dual-mode state.
    Lessor(Box<Coordinator<M>>),
    /// A lessee of an actor whose home is another shard.
    Lessee(Box<LesseeState>),
}

/// One active actor: its handler, its mailbox, and its dual-mode role.
pub(super) struct ActorSlot<M> {
    pub(super) id: ActorId,
    pub(super) actor: Box<dyn Actor<M>>,
    pub(super) mailbox: VecDeque<Envelope<M>>,
    /// Whether the slot is in the ready queue.
    pub(super) queued: bool,
    /// When a turn last ran one of its messages (runtime clock).
    pub(super) last_active: Nanos,
    pub(super) role: Role<M>,
}

impl<M: 'static> ActorSlot<M> {
    /// The epoch a handler of this actor runs in (see `Context::epoch`).
    pub(super) fn epoch(&self) -> u64 {
        match &self.role {
            Role::Plain => 0,
            Role::Lessor(coordinator) => coordinator.epoch(),
            Role::Lessee(lessee) => lessee.epoch(),
        }
    }

    /// The lessor's dual-mode state, created on first use.
    fn coordinator(&mut self) -> &mut Coordinator<M> {
        if matches!(self.role, Role::Plain) {
            self.role = Role::Lessor(Box::new(Coordinator::new(self.id, 0)));
        }
        match &mut self.role {
            Role::Lessor(coordinator) => coordinator,
            _ => unreachable!("lessees never coordinate"),
        }
    }
}

/// What a deactivated actor leaves behind until its next message.
struct Dormant {
    state: Option<SavedState>,
    /// Critical sections it had completed.
    epoch: u64,
}

/// The actors active on one shard, in a slab indexed through a hash map, and the queue of
/// those with work ready.
pub(super) struct ActorTable<M> {
    pub(super) index: FxHashMap<ActorId, u32>,
    pub(super) slots: Vec<Option<ActorSlot<M>>>,
    free: Vec<u32>,
    /// What deactivated actors left, until their next message.
    dormant: FxHashMap<ActorId, Dormant>,
    /// The last actor looked up and its slot: runs of messages for one actor skip the
    /// hash map.
    last_hit: Option<(ActorId, u32)>,
    /// Actors with ready work, in the order the policy runs them.
    pub(super) ready: ReadyQueue,
    /// The scheduling policy (for the rank of ready actors).
    pub(super) policy: Arc<dyn SchedulingPolicy>,
    /// What the lessors here have in common (partial states awaited, messages held,
    /// barriers pending, metrics to publish).
    pub(super) lessors: Lessors,
    /// Whether the policy decides where mergeable operators' messages run.
    pub(super) admits: bool,
    /// The mean cost of a handler on this shard (while costs are measured).
    pub(super) avg_cost_ns: u64,
    /// Active actors (lessors, plain actors and lessees) here, per app.
    app_actors: Vec<u32>,
    /// While the policy admits: messages waiting in mailboxes here, per app, and the mean
    /// handler cost here, per app — what runs ahead of a message under deadline order.
    pub(super) app_queued: Vec<u64>,
    pub(super) app_cost_ns: Vec<u64>,
    /// The operators' factories, for activations.
    pub(super) factories: Arc<Factories<M>>,
    /// Scratch space for admission views.
    scratch_lessees: Vec<(ShardId, u64)>,
    pub(super) scratch_shards: Vec<ShardLoad>,
}

/// Adds `delta` to `app`'s entry, growing the table as needed.
#[inline]
pub(super) fn count_app(table: &mut Vec<u64>, app: AppId, delta: i64) {
    let index = usize::from(app);
    if table.len() <= index {
        table.resize(index + 1, 0);
    }
    table[index] = table[index].saturating_add_signed(delta);
}

/// Every shard's load as policies see it, into `loads`.
pub(super) fn shard_loads<M>(shared: &Shared<M>, loads: &mut Vec<ShardLoad>) {
    loads.clear();
    loads.extend(shared.counters.iter().zip(shared.doorbells.iter()).map(
        |(counters, doorbell)| ShardLoad {
            queued: counters.queued.load(Ordering::Relaxed),
            parked: doorbell.is_sleeping(),
            busy_ns: counters.busy_ns.load(Ordering::Relaxed),
            utilization: if doorbell.is_sleeping() {
                0.0
            } else {
                counters.utilization_permille.load(Ordering::Relaxed) as f64 / 1000.0
            },
        },
    ));
}

/// Counts a message of a failed app that is dropped unrun (see `crate::failure`); the
/// caller counts it as handled.
pub(super) fn discarded<M>(envelope: &Envelope<M>, shared: &Shared<M>, counters: &ShardCounters) {
    for hook in &shared.discard_hooks {
        hook(envelope);
    }
    bump(&counters.discarded, 1);
}

/// Drops a message of a failed app as it arrives; it counts as handled (shutdown waits for
/// nothing more).
pub(super) fn discard<M>(envelope: &Envelope<M>, shared: &Shared<M>, shard: ShardId) {
    let counters = &shared.counters[shard];
    discarded(envelope, shared, counters);
    mark_handled(counters, 1);
}

/// The occupied slot at `index` (borrowing only the slab, not the whole table).
#[inline]
pub(super) fn slot_in<M>(slots: &mut [Option<ActorSlot<M>>], index: u32) -> &mut ActorSlot<M> {
    slots[index as usize]
        .as_mut()
        .expect("indexed actor slots are occupied")
}

impl<M: Send + 'static> ActorTable<M> {
    pub(super) fn new(policy: Arc<dyn SchedulingPolicy>, factories: Arc<Factories<M>>) -> Self {
        Self {
            factories,
            index: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            dormant: FxHashMap::default(),
            last_hit: None,
            ready: ReadyQueue::new(policy.by_priority()),
            admits: policy.admits(),
            policy,
            avg_cost_ns: 0,
            app_actors: Vec::new(),
            app_queued: Vec::new(),
            app_cost_ns: Vec::new(),
            scratch_lessees: Vec::new(),
            scratch_shards: Vec::new(),
            lessors: Lessors::default(),
        }
    }

    #[inline]
    pub(super) fn slot_mut(&mut self, index: u32) -> &mut ActorSlot<M> {
        slot_in(&mut self.slots, index)
    }

    /// Counts an actor of `app` in or out of this shard, for reserved time.
    fn occupancy(&mut self, app: AppId, delta: i32, shard: ShardId, shared: &Shared<M>) {
        let app_index = usize::from(app);
        if self.app_actors.len() <= app_index {
            self.app_actors.resize(app_index + 1, 0);
        }
        let count = &mut self.app_actors[app_index];
        let before = *count;
        *count = count.saturating_add_signed(delta);
        match (before, *count) {
            (0, 1..) => shared.usage.occupy(shard, app, clock::now()),
            (1.., 0) => shared.usage.vacate(shard, app, clock::now()),
            _ => {}
        }
    }

    fn insert(&mut self, slot: ActorSlot<M>) -> u32 {
        let id = slot.id;
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize] = Some(slot);
                index
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(id, index);
        index
    }

    fn remove(&mut self, index: u32) -> ActorSlot<M> {
        let slot = self.slots[index as usize]
            .take()
            .expect("removed slots are occupied");
        self.index.remove(&slot.id);
        if self.last_hit.is_some_and(|(id, _)| id == slot.id) {
            self.last_hit = None;
        }
        self.free.push(index);
        slot
    }

    #[cold]
    #[inline(never)]
    fn activate(&mut self, id: ActorId, shared: &Shared<M>, counters: &ShardCounters) -> u32 {
        let (saved, epoch) = match self.dormant.remove(&id) {
            Some(dormant) => (dormant.state, dormant.epoch),
            None => (None, 0),
        };
        let actor = self.factories.get(&id).activate(id, saved);
        let role = if epoch > 0 {
            Role::Lessor(Box::new(Coordinator::new(id, epoch)))
        } else {
            Role::Plain
        };
        let index = self.insert(ActorSlot {
            id,
            actor,
            mailbox: VecDeque::new(),
            queued: false,
            last_active: clock::now(),
            role,
        });
        bump(&counters.activations, 1);
        let shard = shared.router.route(&id);
        self.occupancy(id.app, 1, shard, shared);
        index
    }

    /// The slot of `target`, activating it if needed; remembered as the last hit.
    fn lookup(&mut self, target: ActorId, shared: &Shared<M>, counters: &ShardCounters) -> u32 {
        let index = match self.index.get(&target) {
            Some(&index) => index,
            None => self.activate(target, shared, counters),
        };
        self.last_hit = Some((target, index));
        index
    }

    /// The rank of an actor whose oldest ready message is `head`.
    #[inline]
    fn rank(&self, head: Option<&Envelope<M>>) -> u64 {
        match head {
            Some(envelope) if self.ready.is_ranked() => self.policy.priority(&envelope.ctx),
            _ => 0,
        }
    }

    fn mark_ready(&mut self, index: u32) {
        let slot = slot_in(&mut self.slots, index);
        if !slot.queued {
            slot.queued = true;
            let rank = self.rank(
                self.slots[index as usize]
                    .as_ref()
                    .and_then(|s| s.mailbox.front()),
            );
            self.ready.push(index, rank);
        }
    }

    /// The slot of `envelope`'s target, activating the actor if needed, and whether the
    /// message goes straight to its mailbox (plain actors and lessees) rather than through
    /// the lessor's admission (see `admit`).
    #[inline]
    pub(super) fn route(
        &mut self,
        envelope: &Envelope<M>,
        shard: ShardId,
        shared: &Shared<M>,
    ) -> (u32, bool) {
        let target = envelope.target;
        let index = match self.last_hit {
            Some((id, index)) if id == target => index,
            _ => self.lookup(target, shared, &shared.counters[shard]),
        };
        let plain_way = || !(envelope.is_critical() || self.admits && shared.is_mergeable(&target));
        let direct = match &slot_in(&mut self.slots, index).role {
            Role::Plain => plain_way(),
            Role::Lessee(_) => true,
            // A lessor with no lessees, nothing held back, and no barrier, sync or scale
            // change under way admits a user message just as a plain actor does (into its
            // mailbox, `Admitted::Here`): it takes the same way, the fast lane included.
            // The first watermark makes almost every dataflow operator a lessor, and
            // without this it lost the fast lane for good.
            Role::Lessor(coordinator) => coordinator.is_quiet() && plain_way(),
        };
        (index, direct)
    }

    /// Admits a message into its actor, activating the actor if needed: into its mailbox
    /// (marking it ready) for plain actors and lessees; lessors decide (see `admit`). A
    /// message of a failed app is discarded instead (see `crate::failure`).
    #[inline]
    pub(super) fn enqueue(
        &mut self,
        envelope: Envelope<M>,
        out: &mut Outbound<M>,
        shared: &Shared<M>,
    ) {
        if shared.failures.is_failed(envelope.target.app) {
            return discard(&envelope, shared, out.shard);
        }
        let (index, direct) = self.route(&envelope, out.shard, shared);
        self.enqueue_routed(index, direct, envelope, out, shared);
    }

    /// [`enqueue`](Self::enqueue) for a message already routed to slot `index`.
    #[inline]
    pub(super) fn enqueue_routed(
        &mut self,
        index: u32,
        direct: bool,
        envelope: Envelope<M>,
        out: &mut Outbound<M>,
        shared: &Shared<M>,
    ) {
        let target = envelope.target;
        if !direct {
            return self.admit(index, envelope, out, shared);
        }
        let slot = slot_in(&mut self.slots, index);
        bump(&shared.counters[out.shard].queued, 1);
        if self.admits {
            count_app(&mut self.app_queued, target.app, 1);
        }
        let rank = if self.ready.is_ranked() && !slot.queued {
            self.policy.priority(&envelope.ctx)
        } else {
            0
        };
        slot.mailbox.push_back(envelope);
        if !slot.queued {
            slot.queued = true;
            self.ready.push(index, rank);
        }
    }

    /// A lessor's admission (see `Coordinator::admit`), carried out here: into the
    /// lessor's mailbox, the consolidation point checked, or the policy asked.
    fn admit(
        &mut self,
        index: u32,
        envelope: Envelope<M>,
        out: &mut Outbound<M>,
        shared: &Shared<M>,
    ) {
        let slot = slot_in(&mut self.slots, index);
        let id = slot.id;
        let lessor_queue = slot.mailbox.len() as u64;
        slot.coordinator();
        let ActorSlot {
            actor,
            role: Role::Lessor(coordinator),
            ..
        } = slot
        else {
            unreachable!("`coordinator` made this slot a lessor");
        };
        let admits = self.admits && !envelope.is_critical() && shared.is_mergeable(&id);
        let admitted = coordinator.admit(
            id,
            &**actor,
            envelope,
            lessor_queue,
            admits,
            &mut self.lessors,
            out,
        );
        match admitted {
            Admitted::Taken => {}
            Admitted::Here(envelope) => {
                self.run_here(index, envelope, &shared.counters[out.shard].queued)
            }
            Admitted::Blocked => self.check_consolidated(index),
            Admitted::AskPolicy {
                envelope,
                key: None,
            } => self.admit_by_policy(index, envelope, out, shared),
            Admitted::AskPolicy {
                envelope,
                key: Some(key),
            } => {
                // A keyed message runs where its key maps; the policy still decides
                // whether to shed it, and whether the actor needs another worker.
                let decision = self.policy_decision(index, &envelope, out.shard, shared);
                if let Admission::Shed = decision {
                    return self.shed(envelope, shared, out.shard);
                }
                self.route_by_key(index, envelope, Some(key), lessor_queue, out, shared);
                if let Admission::AddLessee(shard) = decision {
                    self.request_lessee(index, shard, out);
                }
            }
        }
    }

    /// Runs a lessor's message where `Coordinator::route_by_key` says.
    fn route_by_key(
        &mut self,
        index: u32,
        envelope: Envelope<M>,
        key: Option<u64>,
        lessor_queue: u64,
        out: &mut Outbound<M>,
        shared: &Shared<M>,
    ) {
        let coordinator = slot_in(&mut self.slots, index).coordinator();
        if let Some(envelope) = coordinator.route_by_key(envelope, key, lessor_queue, out) {
            self.run_here(index, envelope, &shared.counters[out.shard].queued);
        }
    }

    /// The work queued here that runs before a new message of `app` under deadline order:
    /// every app's queued messages whose SLO is no longer than `app`'s (an app without an
    /// SLO comes last), at each app's mean cost here.
    fn backlog_ahead(&self, app: AppId, shared: &Shared<M>) -> u64 {
        let slo = |app: usize| match shared.slo_ns(app as AppId) {
            0 => u64::MAX,
            slo => slo,
        };
        let own = slo(usize::from(app));
        let fallback = self.avg_cost_ns;
        self.app_queued
            .iter()
            .enumerate()
            .filter(|&(other, &queued)| queued > 0 && slo(other) <= own)
            .map(|(other, &queued)| {
                let cost = self.app_cost_ns.get(other).copied().unwrap_or(0);
                queued.saturating_mul(if cost > 0 { cost } else { fallback })
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Drops a message the policy shed; it counts as handled (shutdown waits for nothing
    /// more).
    fn shed(&mut self, envelope: Envelope<M>, shared: &Shared<M>, shard: ShardId) {
        for hook in &shared.shed_hooks {
            hook(&envelope);
        }
        let counters = &shared.counters[shard];
        bump(&counters.shed, 1);
        mark_handled(counters, 1);
    }

    /// Starts adding a lessee on `shard` unless a change is already under way.
    fn request_lessee(&mut self, index: u32, shard: ShardId, out: &mut Outbound<M>) {
        let coordinator = slot_in(&mut self.slots, index).coordinator();
        if !coordinator.is_scaling() {
            self.start_scale(index, ScaleChange::Add(shard), out);
        }
    }

    /// Asks the policy where a message runs, and carries its decision out.
    fn admit_by_policy(
        &mut self,
        index: u32,
        envelope: Envelope<M>,
        out: &mut Outbound<M>,
        shared: &Shared<M>,
    ) {
        let decision = self.policy_decision(index, &envelope, out.shard, shared);
        match decision {
            Admission::Lessee(position) => {
                let coordinator = slot_in(&mut self.slots, index).coordinator();
                if let Some(envelope) = coordinator.forward_to(position, envelope, out) {
                    self.run_here(index, envelope, &shared.counters[out.shard].queued);
                }
            }
            Admission::Shed => self.shed(envelope, shared, out.shard),
            Admission::AddLessee(shard) => {
                self.run_here(index, envelope, &shared.counters[out.shard].queued);
                self.request_lessee(index, shard, out);
            }
            Admission::Local => self.run_here(index, envelope, &shared.counters[out.shard].queued),
        }
    }

    /// The policy's admission decision for a message of the lessor at `index`.
    pub(super) fn policy_decision(
        &mut self,
        index: u32,
        envelope: &Envelope<M>,
        home: ShardId,
        shared: &Shared<M>,
    ) -> Admission {
        let now = clock::now();
        shard_loads(shared, &mut self.scratch_shards);
        let local_backlog_ns = self.backlog_ahead(envelope.target.app, shared);
        let slot = slot_in(&mut self.slots, index);
        let id = slot.id;
        let coordinator = slot.coordinator();
        coordinator.lessee_loads(&mut self.scratch_lessees);
        let slo_ns = shared.slo_ns(id.app);
        let view = AdmissionView {
            now,
            actor: id,
            home,
            message: &envelope.ctx,
            cost_ns: shared.costs.own_ns(&id),
            local_backlog_ns,
            lessees: &self.scratch_lessees,
            shards: &self.scratch_shards,
            scaling: coordinator.is_scaling(),
            slo_ns,
            // Only an app with an SLO spreads for the apps without one.
            best_effort_here: slo_ns != 0
                && self
                    .app_actors
                    .iter()
                    .enumerate()
                    .any(|(app, &actors)| actors > 0 && shared.slo_ns(app as AppId) == 0),
        };
        let policy = &self.policy;
        guarded(id, "on_enqueue", Admission::Local, || {
            policy.on_enqueue(&view)
        })
    }

    fn run_here(&mut self, index: u32, envelope: Envelope<M>, queued: &AtomicU64) {
        bump(queued, 1);
        if self.admits {
            count_app(&mut self.app_queued, envelope.target.app, 1);
        }
        self.slot_mut(index).mailbox.push_back(envelope);
        self.mark_ready(index);
    }

    /// Queues a blocked lessor's consolidation point to run next, once every partial
    /// state is merged and its own mailbox (what arrived before the sync) is empty.
    pub(super) fn check_consolidated(&mut self, index: u32) {
        let slot = self.slot_mut(index);
        let Role::Lessor(coordinator) = &slot.role else {
            return;
        };
        if coordinator.consolidation_due() && slot.mailbox.is_empty() && !slot.queued {
            slot.queued = true;
            self.ready.push_first(index);
        }
    }

    /// Starts a scale change now, or refuses it with a logged reason.
    pub(super) fn start_scale(&mut self, index: u32, change: ScaleChange, out: &mut Outbound<M>) {
        let slot = slot_in(&mut self.slots, index);
        let id = slot.id;
        slot.coordinator();
        let ActorSlot {
            actor,
            mailbox,
            role: Role::Lessor(coordinator),
            ..
        } = slot
        else {
            unreachable!("`coordinator` made this slot a lessor");
        };
        if coordinator.start_scale(id, &**actor, mailbox, change, &mut self.lessors, out) {
            self.check_consolidated(index);
        }
    }

    /// Handles a control message that arrived at this shard.
    pub(super) fn accept_control(
        &mut self,
        control: Control,
        out: &mut Outbound<M>,
        shared: &Shared<M>,
    ) {
        let counters = &shared.counters[out.shard];
        let actor = control.actor();
        match control {
            Control::Scale { change, .. } => {
                let index = self.lookup(actor, shared, counters);
                let coordinator = self.slot_mut(index).coordinator();
                if !coordinator.queue_scale_if_blocked(change) {
                    self.start_scale(index, change, out);
                }
            }
            Control::Lease {
                home,
                epoch,
                progress,
                ..
            } => {
                if self.index.contains_key(&actor) {
                    tracing::error!(actor = %actor, shard = out.shard, "lease for an actor already active here; ignored");
                } else {
                    let actor_box = self.factories.get(&actor).activate(actor, None);
                    self.insert(ActorSlot {
                        id: actor,
                        actor: actor_box,
                        mailbox: VecDeque::new(),
                        queued: false,
                        last_active: clock::now(),
                        role: Role::Lessee(Box::new(LesseeState::new(home, epoch, progress))),
                    });
                    bump(&counters.activations, 1);
                    self.occupancy(actor.app, 1, out.shard, shared);
                }
            }
            Control::Sync {
                retire,
                epoch_after,
                ..
            } => match self.index.get(&actor).copied() {
                Some(index) => {
                    let slot = self.slot_mut(index);
                    if let Role::Lessee(lessee) = &mut slot.role {
                        lessee.sync_requested(retire, epoch_after);
                        if slot.mailbox.is_empty() {
                            self.answer_sync(index, out);
                        }
                    }
                }
                None => {
                    tracing::error!(actor = %actor, shard = out.shard, "sync for a lessee that does not exist")
                }
            },
            Control::Partial {
                from,
                snapshot,
                retired,
                ..
            } => {
                let Some(index) = self.index.get(&actor).copied() else {
                    tracing::error!(actor = %actor, "partial state for an inactive lessor; dropped");
                    return;
                };
                let slot = slot_in(&mut self.slots, index);
                let ActorSlot {
                    actor: handler,
                    role: Role::Lessor(coordinator),
                    ..
                } = slot
                else {
                    tracing::error!(actor = %actor, "partial state for an actor that is not a lessor; dropped");
                    return;
                };
                coordinator.accept_partial(
                    actor,
                    &mut **handler,
                    from,
                    snapshot,
                    retired,
                    &mut self.lessors,
                    shared,
                    out.shard,
                );
                self.check_consolidated(index);
            }
        }
        mark_handled(counters, 1);
    }

    /// A lessee's answer to a sync, once it has run everything forwarded before it: its
    /// partial state, to the lessor. A retiring lessee then leaves.
    pub(super) fn answer_sync(&mut self, index: u32, out: &mut Outbound<M>) {
        let slot = self.slot_mut(index);
        let id = slot.id;
        let ActorSlot {
            actor,
            role: Role::Lessee(lessee),
            ..
        } = slot
        else {
            return;
        };
        if lessee.answer_sync(id, &mut **actor, out) == Some(true) {
            self.remove(index);
            self.occupancy(id.app, -1, out.shard, &out.shared);
        }
    }

    /// A lessor's consolidation point (see `Coordinator::consolidate`); returns the held
    /// messages to release with [`release_held`](Self::release_held).
    pub(super) fn consolidate(
        &mut self,
        index: u32,
        turn_start: Nanos,
        out: &mut Outbound<M>,
        counters: &ShardCounters,
    ) -> Option<VecDeque<Envelope<M>>> {
        let slot = slot_in(&mut self.slots, index);
        slot.last_active = turn_start;
        let id = slot.id;
        let ActorSlot {
            actor,
            role: Role::Lessor(coordinator),
            ..
        } = slot
        else {
            return None;
        };
        coordinator.consolidate(id, actor, counters, &mut self.lessors, out)
    }

    /// After a consolidation point: scale requests that waited for it go first, then the
    /// held messages are admitted again, in arrival order (the rest put back at once if
    /// one blocks the actor again), and run next.
    pub(super) fn release_held(
        &mut self,
        index: u32,
        mut held: VecDeque<Envelope<M>>,
        out: &mut Outbound<M>,
        shared: &Shared<M>,
    ) {
        // Scale requests go first so that a retire does not wait behind a burst of held
        // work. Refused or immediate ones do not block, so the next one starts at once.
        loop {
            let slot = self.slot_mut(index);
            let Role::Lessor(coordinator) = &mut slot.role else {
                break;
            };
            let Some(change) = coordinator.next_queued_scale() else {
                break;
            };
            self.start_scale(index, change, out);
        }
        while let Some(envelope) = held.pop_front() {
            let slot = slot_in(&mut self.slots, index);
            if let Role::Lessor(coordinator) = &mut slot.role {
                if coordinator.is_blocked() {
                    // A held message started the next consolidation: admission would hold
                    // every later one again, one by one. Put them back at once, in order,
                    // behind what it held just now. Re-admitting the whole backlog at every
                    // barrier made each barrier cost as much as the backlog, so a backlog
                    // from one stall grew without end.
                    coordinator.hold_again(held, envelope, &mut self.lessors);
                    break;
                }
            }
            self.enqueue(envelope, out, shared);
        }
        // Messages held through the block are the oldest waiting here: they run next,
        // not behind whatever became ready while the actor was blocked.
        self.ready.promote_last(index);
    }

    /// Retires lessees given nothing for `after_ns` (one per lessor per tick).
    pub(super) fn retire_idle_lessees(&mut self, now: Nanos, after_ns: u64, out: &mut Outbound<M>) {
        for position in 0..self.lessors.with_lessees().len() {
            let Some(id) = self.lessors.with_lessees().get(position).copied() else {
                break;
            };
            let Some(&index) = self.index.get(&id) else {
                continue;
            };
            let Role::Lessor(coordinator) = &mut self.slot_mut(index).role else {
                continue;
            };
            if let Some(shard) = coordinator.idle_lessee(now, after_ns) {
                self.start_scale(index, ScaleChange::Remove(shard), out);
            }
        }
    }

    /// Deactivates every actor idle since before `cutoff`, keeping the state it returns.
    /// Lessees, and lessors with lessees or held work, stay. The actors of a failed app
    /// are dropped instead, with their state, and so is what its deactivated actors left
    /// (see `crate::failure`).
    pub(super) fn deactivate_idle(&mut self, cutoff: Nanos, shard: ShardId, shared: &Shared<M>) {
        let counters = &shared.counters[shard];
        if shared.failures.any() {
            self.dormant
                .retain(|id, _| !shared.failures.is_failed(id.app));
        }
        for index in 0..self.slots.len() {
            let idle = matches!(
                &self.slots[index],
                Some(slot) if !slot.queued
                    && slot.mailbox.is_empty()
                    && slot.last_active < cutoff
                    && match &slot.role {
                        Role::Plain => true,
                        Role::Lessor(coordinator) => coordinator.is_quiet(),
                        Role::Lessee(_) => false,
                    }
            );
            if !idle {
                continue;
            }
            let slot = self.remove(index as u32);
            bump(&counters.deactivations, 1);
            self.occupancy(slot.id.app, -1, shard, shared);
            if shared.failures.is_failed(slot.id.app) {
                continue;
            }
            let epoch = slot.epoch();
            let state = slot.actor.deactivate();
            if state.is_some() || epoch > 0 {
                self.dormant.insert(slot.id, Dormant { state, epoch });
            }
        }
    }

    /// The dual-mode metrics of every lessor here.
    pub(super) fn metrics(&self) -> Vec<ActorMetrics> {
        let mut metrics: Vec<ActorMetrics> = self
            .slots
            .iter()
            .flatten()
            .filter_map(|slot| match &slot.role {
                Role::Lessor(coordinator) => Some(coordinator.metrics().clone()),
                _ => None,
            })
            .collect();
        metrics.sort_by_key(|metrics| metrics.actor);
        metrics
    }
}
