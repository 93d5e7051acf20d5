//! One shard: the loop that runs on one glommio executor and owns everything on its core
//! — its actors, their mailboxes, its ends of the mesh, its outboxes and counters.
//!
//! Each turn of the loop (1) drains every inbound ring and the outside intake into actor
//! mailboxes, (2) runs a bounded batch of ready messages, (3) flushes outboxes into the
//! rings and rings the doorbells of parked receivers. With nothing to do it spins for the
//! spin budget, then parks (see `mesh::Doorbell`).
//!
//! Two places carry the scheduling decisions: [`Router::route`](crate::runtime::Router)
//! decides where a message runs, and [`Shard::next_message`] picks which ready message
//! runs next (FIFO across actors in arrival order; FIFO inside an actor). When nothing is
//! ready and the order is arrival order, there is no choice to make: the first message a
//! turn finds in the rings runs at once, without passing through a mailbox and the ready
//! queue (`Shard::run_first_arrival`), which takes about a fifth off a round trip between
//! shards.
//!
//! Dual-mode actors (see [`crate::dual`]) hook in at three places: admission of a
//! message into its actor (`ActorTable::enqueue`: plain actors take a fast path;
//! lessors may hold the message, forward it to a lessee, or start a sync), control
//! messages arriving through the same rings (`ActorTable::accept_control`), and the end of
//! each handler run (`Shard::after_run`: lessee progress, consolidation points).
//!
//! Backpressure: rings are bounded. A message that finds its ring full waits, in order,
//! in the sender shard's outbox for that destination, so nothing is dropped; and because
//! a shard stops draining its inbound rings only while it has runnable work of its own
//! (below), cycles (A→B→A) and all-to-all traffic cannot deadlock. What bounds memory is
//! two high-water marks. A shard whose mailboxes,
//! with the messages its blocked lessors hold back, pass theirs
//! (`RuntimeBuilder::mailbox_high_water`) stops draining its inbound rings and its intake
//! until it has run them down, so the rings towards it fill. Every message in a mailbox
//! is runnable, and a blocked lessor waits only for its own mailbox, for partial states
//! or for a barrier's parts from other inputs; while either of the last two is due the
//! shard drains on (they may sit behind user messages in a ring). So the shard always
//! gets back under the mark. A shard whose outboxes hold more than theirs stops taking
//! messages from outside threads, whose sends then block (or fail with `Full` for
//! `try_send`), and both marks make `Context::backpressured` true for the sources on the
//! shard. So a shard short of CPU slows its producers down instead of buffering their
//! output without bound.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::actor::{Actor, Context, Factories, SavedState};
use crate::clock;
use crate::dual::{
    ActorMetrics, Barrier, Control, Coordinator, LesseeLink, LesseeProgress, LesseeState, Packet,
    PendingBarrier, ScaleChange, SyncPoint,
};
use crate::envelope::{mix64, ActorId, AppId, Envelope, Nanos, ShardId};
use crate::mesh::{Consumer, ShardLinks};
use crate::outbound::Outbound;
use crate::scheduling::{
    Admission, AdmissionView, ReadyQueue, SchedulingPolicy, ShardLoad, TickView,
};
use crate::shared::Shared;
use crate::stats::{bump, ShardCounters, ShardStats};

/// How many ready messages a shard runs before it looks at its inputs again.
const RUN_BATCH: usize = 64;
/// While handlers are not timed, how many messages a turn runs between two looks at the
/// clock for its time budget.
const BUDGET_CHECK_EVERY: usize = 8;
/// A blocked lessor with at most this many messages left before its critical section
/// runs them ahead of other actors (see `Shard::next_message`).
const BLOCKED_FIRST_MAX: usize = RUN_BATCH;
/// How many messages from outside a shard takes per turn.
const INTAKE_BATCH: usize = 256;
/// An idle shard whose next timer is due within this keeps polling instead of parking:
/// waking from a park takes tens of microseconds at best, and on a virtual machine an
/// idle vCPU may not run again for milliseconds.
const TIMER_SPIN_NS: u64 = 2_000_000;
/// Handler time after which a turn ends early (only while handlers are timed).
const TURN_BUDGET_NS: u64 = 100_000;
/// How often, at most, a busy shard publishes changed lessor metrics.
const METRICS_EVERY_NS: u64 = 1_000_000;
/// How long a shard stuck on full rings past its spin budget sleeps before it retries.
const BACKLOG_NAP: std::time::Duration = std::time::Duration::from_micros(50);
/// How often a lessee publishes how many messages it has run.
const PROGRESS_EVERY: u64 = 16;

/// What an active actor is, besides its handler.
enum Role<M> {
    /// Runs alone on its home shard and has never needed the dual-mode machinery.
    Plain,
    /// The actor's lessor, with its dual-mode state.
    Lessor(Box<Coordinator<M>>),
    /// A lessee of an actor whose home is another shard.
    Lessee(Box<LesseeState>),
}

struct ActorSlot<M> {
    id: ActorId,
    actor: Box<dyn Actor<M>>,
    mailbox: VecDeque<Envelope<M>>,
    /// Whether the slot is in the ready queue.
    queued: bool,
    /// When a turn last ran one of its messages (runtime clock).
    last_active: Nanos,
    role: Role<M>,
}

impl<M> ActorSlot<M> {
    /// The epoch a handler of this actor runs in (see `Context::epoch`).
    fn epoch(&self) -> u64 {
        match &self.role {
            Role::Plain => 0,
            Role::Lessor(coordinator) => coordinator.epoch,
            Role::Lessee(lessee) => lessee.epoch,
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
struct ActorTable<M> {
    index: FxHashMap<ActorId, u32>,
    slots: Vec<Option<ActorSlot<M>>>,
    free: Vec<u32>,
    /// What deactivated actors left, until their next message.
    dormant: FxHashMap<ActorId, Dormant>,
    /// The last actor looked up and its slot: runs of messages for one actor skip the
    /// hash map.
    last_hit: Option<(ActorId, u32)>,
    /// Actors with ready work, in the order the policy runs them.
    ready: ReadyQueue,
    /// The scheduling policy (for the rank of ready actors).
    policy: Arc<dyn SchedulingPolicy>,
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
    /// Whether the policy decides where mergeable operators' messages run.
    admits: bool,
    /// The mean cost of a handler on this shard (while costs are measured).
    avg_cost_ns: u64,
    /// Lessors here that have lessees (checked for idle lessees on each tick).
    with_lessees: Vec<ActorId>,
    /// Active actors (lessors, plain actors and lessees) here, per app.
    app_actors: Vec<u32>,
    /// While the policy admits: messages waiting in mailboxes here, per app, and the mean
    /// handler cost here, per app — what runs ahead of a message under deadline order.
    app_queued: Vec<u64>,
    app_cost_ns: Vec<u64>,
    /// The operators' factories, for activations.
    factories: Arc<Factories<M>>,
    /// Scratch space for admission views.
    scratch_lessees: Vec<(ShardId, u64)>,
    scratch_shards: Vec<ShardLoad>,
}

/// Adds `delta` to `app`'s entry, growing the table as needed.
#[inline]
fn count_app(table: &mut Vec<u64>, app: AppId, delta: i64) {
    let index = usize::from(app);
    if table.len() <= index {
        table.resize(index + 1, 0);
    }
    table[index] = table[index].saturating_add_signed(delta);
}

/// Counts `n` messages as handled. Released after the handler's sends were counted
/// (see `Outbound::send`): shutdown's quiescence check relies on that order.
#[inline]
fn mark_handled(counters: &ShardCounters, n: u64) {
    counters.handled.store(
        counters.handled.load(Ordering::Relaxed) + n,
        Ordering::Release,
    );
}

/// Every shard's load as policies see it, into `loads`.
fn shard_loads<M>(shared: &Shared<M>, loads: &mut Vec<ShardLoad>) {
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

/// The occupied slot at `index` (borrowing only the slab, not the whole table).
#[inline]
fn slot_in<M>(slots: &mut [Option<ActorSlot<M>>], index: u32) -> &mut ActorSlot<M> {
    slots[index as usize]
        .as_mut()
        .expect("indexed actor slots are occupied")
}

/// Runs user code that is not a handler (ordering keys, barriers, snapshots, merges):
/// a panic there is logged and answered with `fallback`, never unwinds into the shard.
fn guarded<T>(actor: ActorId, what: &str, fallback: T, call: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|_| {
        tracing::error!(actor = %actor, "`{what}` panicked; using its default");
        fallback
    })
}

impl<M: Send + 'static> ActorTable<M> {
    fn new(policy: Arc<dyn SchedulingPolicy>, factories: Arc<Factories<M>>) -> Self {
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
            with_lessees: Vec::new(),
            app_actors: Vec::new(),
            app_queued: Vec::new(),
            app_cost_ns: Vec::new(),
            scratch_lessees: Vec::new(),
            scratch_shards: Vec::new(),
            awaiting_partials: 0,
            held: 0,
            pending_barriers: 0,
            metrics_dirty: Vec::new(),
        }
    }

    #[inline]
    fn slot_mut(&mut self, index: u32) -> &mut ActorSlot<M> {
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
    fn route(&mut self, envelope: &Envelope<M>, shard: ShardId, shared: &Shared<M>) -> (u32, bool) {
        let target = envelope.target;
        let index = match self.last_hit {
            Some((id, index)) if id == target => index,
            _ => self.lookup(target, shared, &shared.counters[shard]),
        };
        let direct = match slot_in(&mut self.slots, index).role {
            Role::Plain => !(envelope.is_critical() || self.admits && shared.is_mergeable(&target)),
            Role::Lessee(_) => true,
            Role::Lessor(_) => false,
        };
        (index, direct)
    }

    /// Admits a message into its actor, activating the actor if needed: into its mailbox
    /// (marking it ready) for plain actors and lessees; lessors decide (see `admit`).
    #[inline]
    fn enqueue(&mut self, envelope: Envelope<M>, out: &mut Outbound<M>, shared: &Shared<M>) {
        let (index, direct) = self.route(&envelope, out.shard, shared);
        self.enqueue_routed(index, direct, envelope, out, shared);
    }

    /// [`enqueue`](Self::enqueue) for a message already routed to slot `index`.
    #[inline]
    fn enqueue_routed(
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

    /// A lessor's admission: hold the message (the actor is blocked, or its input already
    /// delivered its part of a pending barrier), start a barrier or a sync for a critical
    /// message, or run a user message here or on a lessee.
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
        let input = envelope.source;
        if coordinator.sync.is_some() || coordinator.held_inputs.contains(&input) {
            coordinator.held.push_back(envelope);
            self.held += 1;
            return;
        }
        if envelope.is_critical() {
            let barrier = guarded(id, "barrier", Barrier::Single, || actor.barrier(&envelope));
            if barrier == Barrier::Local {
                return self.run_here(index, envelope, &shared.counters[out.shard].queued);
            }
            let complete = match (barrier, &mut coordinator.barrier) {
                (Barrier::Local, _) => unreachable!("handled above"),
                (Barrier::Wait { id, .. }, Some(pending)) if pending.id == id => {
                    pending.arrived.push(envelope);
                    coordinator.held_inputs.push(input);
                    pending.arrived.len() >= pending.inputs as usize
                }
                (Barrier::Single, _) => {
                    // Runs after everything that arrived before it, except what a pending
                    // barrier holds (that comes after the barrier, which may itself come
                    // after this message).
                    self.awaiting_partials +=
                        begin_sync(coordinator, id, vec![envelope], None, out);
                    self.check_consolidated(index);
                    return;
                }
                (Barrier::Wait { .. }, Some(_)) => {
                    // Another barrier's part, from an input that has not delivered its
                    // part of the pending one: it comes after the pending barrier.
                    coordinator.held_inputs.push(input);
                    coordinator.held.push_back(envelope);
                    self.held += 1;
                    return;
                }
                (Barrier::Wait { id, inputs }, None) => {
                    self.pending_barriers += 1;
                    coordinator.barrier = Some(PendingBarrier {
                        id,
                        inputs,
                        arrived: vec![envelope],
                    });
                    coordinator.held_inputs.push(input);
                    inputs <= 1
                }
            };
            if complete {
                let barrier = coordinator.barrier.take().expect("completed above");
                self.pending_barriers -= 1;
                coordinator.held_inputs.clear();
                self.awaiting_partials += begin_sync(coordinator, id, barrier.arrived, None, out);
                self.check_consolidated(index);
            }
            return;
        }
        let admits = self.admits && shared.is_mergeable(&id);
        if coordinator.lessees.is_empty() && !admits {
            return self.run_here(index, envelope, &shared.counters[out.shard].queued);
        }
        let key = guarded(id, "ordering_key", None, || actor.ordering_key(&envelope));
        coordinator.saw_keys |= key.is_some();
        if key.is_none() && admits {
            return self.admit_by_policy(index, envelope, out, shared);
        }
        if key.is_some() && admits {
            // A keyed message runs where its key maps; the policy still decides whether
            // to shed it, and whether the actor needs another worker.
            match self.policy_decision(index, &envelope, out.shard, shared) {
                Admission::Shed => return self.shed(envelope, shared, out.shard),
                Admission::AddLessee(shard) => {
                    self.route_by_key(index, envelope, key, lessor_queue, out, shared);
                    return self.request_lessee(index, shard, out);
                }
                _ => {}
            }
        }
        self.route_by_key(index, envelope, key, lessor_queue, out, shared);
    }

    /// Runs a lessor's message on the worker its key maps to, or (without a key) on the
    /// least loaded worker.
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
        if coordinator.lessees.is_empty() {
            return self.run_here(index, envelope, &shared.counters[out.shard].queued);
        }
        let workers = coordinator.lessees.len() as u64 + 1;
        let worker = match key {
            Some(key) => (mix64(key) % workers) as usize,
            None => {
                // The worker with the least queued work. Ties rotate, so that under light
                // load a lessee still gets its share and stays warm (an idle lessee parks,
                // and waking it would add to the next consolidation).
                let start = coordinator.rotation as usize % workers as usize;
                coordinator.rotation = coordinator.rotation.wrapping_add(1);
                let mut queued = |worker: usize| match worker {
                    0 => lessor_queue,
                    lessee => coordinator.lessees[lessee - 1].queued(),
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
            return self.run_here(index, envelope, &shared.counters[out.shard].queued);
        }
        let lessee = &mut coordinator.lessees[worker - 1];
        lessee.forwarded += 1;
        out.forward(lessee.shard, envelope);
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
        if coordinator.sync.is_none() && coordinator.scale_queue.is_empty() {
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
                if let Some(lessee) = coordinator.lessees.get_mut(position) {
                    lessee.forwarded += 1;
                    out.forward(lessee.shard, envelope);
                } else {
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
    fn policy_decision(
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
        self.scratch_lessees.clear();
        self.scratch_lessees.extend(
            coordinator
                .lessees
                .iter_mut()
                .map(|lessee| (lessee.shard, lessee.queued())),
        );
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
            scaling: coordinator.sync.is_some() || !coordinator.scale_queue.is_empty(),
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
    fn check_consolidated(&mut self, index: u32) {
        let slot = self.slot_mut(index);
        let Role::Lessor(coordinator) = &slot.role else {
            return;
        };
        let due = coordinator
            .sync
            .as_ref()
            .is_some_and(|sync| sync.awaiting == 0);
        if due && slot.mailbox.is_empty() && !slot.queued {
            slot.queued = true;
            self.ready.push_first(index);
        }
    }

    /// Starts a scale change now, or refuses it with a logged reason.
    fn start_scale(&mut self, index: u32, change: ScaleChange, out: &mut Outbound<M>) {
        let slot = slot_in(&mut self.slots, index);
        let id = slot.id;
        let mergeable = out.shared.is_mergeable(&id);
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
        let checked = match change {
            ScaleChange::Add(_) if !mergeable => {
                Err("its state is exclusive and cannot be split across shards".to_string())
            }
            _ => coordinator.check(change, out.shard),
        };
        if let Err(reason) = checked {
            tracing::warn!(actor = %id, ?change, "scale request refused: {reason}");
            coordinator.metrics.refused_scale_requests += 1;
            coordinator.mark_metrics_dirty(&mut self.metrics_dirty);
            return;
        }
        if let ScaleChange::Add(shard) = change {
            // Without ordering keys in flight, a new worker changes no key's home: add it
            // now, without blocking the actor.
            let keyless = !coordinator.saw_keys
                && mailbox.iter().all(|message| {
                    guarded(id, "ordering_key", Some(0), || actor.ordering_key(message)).is_none()
                });
            if keyless {
                lease(coordinator, id, shard, out);
                if !self.with_lessees.contains(&id) {
                    self.with_lessees.push(id);
                }
                coordinator.mark_metrics_dirty(&mut self.metrics_dirty);
                return;
            }
        }
        self.awaiting_partials += begin_sync(coordinator, id, Vec::new(), Some(change), out);
        self.check_consolidated(index);
    }

    /// Handles a control message that arrived at this shard.
    fn accept_control(&mut self, control: Control, out: &mut Outbound<M>, shared: &Shared<M>) {
        let counters = &shared.counters[out.shard];
        let actor = control.actor();
        match control {
            Control::Scale { change, .. } => {
                let index = self.lookup(actor, shared, counters);
                let coordinator = self.slot_mut(index).coordinator();
                if coordinator.sync.is_some() {
                    coordinator.scale_queue.push_back(change);
                } else {
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
                        role: Role::Lessee(Box::new(LesseeState {
                            home,
                            epoch,
                            progress,
                            processed: 0,
                            pending_sync: None,
                        })),
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
                        lessee.pending_sync = Some((retire, epoch_after));
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
                if let Some(snapshot) = snapshot {
                    let started = clock::now();
                    let merged = guarded(actor, "merge", Err(None), || {
                        handler.merge(&snapshot).map_err(Some)
                    });
                    let metrics = &mut coordinator.metrics;
                    metrics.merge_ns += clock::now().saturating_sub(started);
                    metrics.consolidations += 1;
                    metrics.consolidated_bytes += snapshot.len() as u64;
                    if let Err(error) = merged {
                        metrics.snapshot_errors += 1;
                        if let Some(error) = error {
                            tracing::error!(actor = %actor, "merge failed: {error}");
                        }
                    }
                }
                if retired {
                    coordinator.lessees.retain(|lessee| lessee.shard != from);
                    coordinator.record_lessees(clock::now());
                    if coordinator.lessees.is_empty() {
                        self.with_lessees.retain(|lessor| *lessor != actor);
                    }
                }
                if let Some(sync) = &mut coordinator.sync {
                    sync.awaiting = sync.awaiting.saturating_sub(1);
                    self.awaiting_partials = self.awaiting_partials.saturating_sub(1);
                    if sync.awaiting == 0 {
                        coordinator.metrics.consolidation_ns +=
                            clock::now().saturating_sub(sync.started);
                    }
                }
                self.check_consolidated(index);
            }
        }
        mark_handled(counters, 1);
    }

    /// A lessee's answer to a sync, once it has run everything forwarded before it: its
    /// partial state, to the lessor. A retiring lessee then leaves.
    fn answer_sync(&mut self, index: u32, out: &mut Outbound<M>) {
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
        let Some((retire, epoch_after)) = lessee.pending_sync.take() else {
            return;
        };
        let snapshot = match guarded(id, "snapshot", Ok(None), || actor.snapshot()) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::error!(actor = %id, "snapshot failed, its partial state is lost: {error}");
                None
            }
        };
        lessee.epoch = epoch_after;
        let home = lessee.home;
        out.control(
            home,
            Control::Partial {
                actor: id,
                from: out.shard,
                snapshot,
                retired: retire,
            },
        );
        if retire {
            self.remove(index);
            self.occupancy(id.app, -1, out.shard, &out.shared);
        }
    }

    /// Deactivates every actor idle since before `cutoff`, keeping the state it returns.
    /// Lessees, and lessors with lessees or held work, stay.
    fn deactivate_idle(&mut self, cutoff: Nanos, shard: ShardId, shared: &Shared<M>) {
        let counters = &shared.counters[shard];
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
            let epoch = slot.epoch();
            let state = slot.actor.deactivate();
            if state.is_some() || epoch > 0 {
                self.dormant.insert(slot.id, Dormant { state, epoch });
            }
            bump(&counters.deactivations, 1);
            self.occupancy(slot.id.app, -1, shard, shared);
        }
    }

    /// The dual-mode metrics of every lessor here.
    fn metrics(&self) -> Vec<ActorMetrics> {
        let mut metrics: Vec<ActorMetrics> = self
            .slots
            .iter()
            .flatten()
            .filter_map(|slot| match &slot.role {
                Role::Lessor(coordinator) => Some(coordinator.metrics.clone()),
                _ => None,
            })
            .collect();
        metrics.sort_by_key(|metrics| metrics.actor);
        metrics
    }
}

/// Starts a lessee of `actor` on `shard`: the lease travels ahead of every message
/// forwarded to it, on the same ring.
fn lease<M>(
    coordinator: &mut Coordinator<M>,
    actor: ActorId,
    shard: ShardId,
    out: &mut Outbound<M>,
) {
    let now = clock::now();
    let progress = Arc::new(LesseeProgress::default());
    out.control(
        shard,
        Control::Lease {
            actor,
            home: out.shard,
            epoch: coordinator.epoch,
            progress: progress.clone(),
        },
    );
    coordinator.lessees.push(LesseeLink {
        shard,
        forwarded: 0,
        progress,
        processed_seen: 0,
        estimates_since_read: 0,
        seen_forwarded: 0,
        idle_since: now,
    });
    coordinator.record_lessees(now);
}

/// Blocks a lessor: asks every lessee for its partial state (retiring the one `scale`
/// removes), and records what to do once consolidated. Returns how many partial states
/// it waits for.
fn begin_sync<M>(
    coordinator: &mut Coordinator<M>,
    actor: ActorId,
    critical: Vec<Envelope<M>>,
    scale: Option<ScaleChange>,
    out: &mut Outbound<M>,
) -> usize {
    let retiring = match scale {
        Some(ScaleChange::Remove(shard)) => Some(shard),
        _ => None,
    };
    let epoch_after = coordinator.epoch + u64::from(!critical.is_empty());
    for lessee in &coordinator.lessees {
        out.control(
            lessee.shard,
            Control::Sync {
                actor,
                retire: retiring == Some(lessee.shard),
                epoch_after,
            },
        );
    }
    coordinator.metrics.syncs += 1;
    coordinator.sync = Some(SyncPoint {
        critical,
        scale,
        awaiting: coordinator.lessees.len(),
        started: clock::now(),
    });
    coordinator.lessees.len()
}

/// How an idle spell ended.
enum Idle {
    /// Input arrived (at about this time).
    Found(Nanos),
    /// The spin budget is spent: park.
    Park,
    /// Periodic housekeeping is due (at about this time).
    Tick(Nanos),
    /// The runtime is stopping.
    Stop,
}

/// Everything a shard needs to start, handed to its thread once all shards exist.
pub(crate) struct ShardStart<M> {
    pub(crate) shared: Arc<Shared<M>>,
    pub(crate) factories: Arc<Factories<M>>,
    pub(crate) links: ShardLinks<Packet<M>>,
    pub(crate) intake: flume::Receiver<Packet<M>>,
}

/// A message waiting for its time (see `Context::send_at`).
struct Timer<M> {
    at: Nanos,
    seq: u64,
    envelope: Envelope<M>,
}

impl<M> PartialEq for Timer<M> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<M> Eq for Timer<M> {}

impl<M> PartialOrd for Timer<M> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<M> Ord for Timer<M> {
    /// Reversed, so that the max-heap pops the earliest timer first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

pub(crate) struct Shard<M> {
    id: ShardId,
    /// Messages waiting for their time, earliest first.
    timers: std::collections::BinaryHeap<Timer<M>>,
    timer_seq: u64,
    shared: Arc<Shared<M>>,
    incoming: Vec<(usize, Consumer<Packet<M>>)>,
    intake: flume::Receiver<Packet<M>>,
    intake_taken: u64,
    actors: ActorTable<M>,
    out: Outbound<M>,
    /// When the last deactivation sweep ran.
    last_sweep: Nanos,
    /// When lessor metrics were last published.
    last_publish: Nanos,
    /// When a slow handler was last warned about.
    last_slow_warning: Nanos,
    busy_ns: u64,
    /// Recent utilization (see `ShardCounters::utilization_permille`): when it was last
    /// sampled, the busy time then, and the smoothed share.
    utilization: (Nanos, u64, f64),
    pinned: bool,
    /// Average duration of one idle poll (see `idle`).
    poll_ns: u64,
}

impl<M: Send + 'static> Shard<M> {
    pub(crate) fn new(id: ShardId, start: ShardStart<M>) -> Self {
        let ShardStart {
            shared,
            factories,
            links,
            intake,
        } = start;
        let start_policy = shared.policy.clone();
        Self {
            id,
            timers: std::collections::BinaryHeap::new(),
            timer_seq: 0,
            pinned: shared.cpus[id].is_some(),
            out: Outbound::new(id, shared.clone(), links.outgoing),
            shared,
            incoming: links.incoming,
            intake,
            intake_taken: 0,
            actors: ActorTable::new(start_policy, factories),
            last_sweep: clock::now(),
            last_publish: 0,
            last_slow_warning: 0,
            busy_ns: 0,
            utilization: (0, 0, 0.0),
            poll_ns: 20,
        }
    }

    fn counters(&self) -> &ShardCounters {
        &self.shared.counters[self.id]
    }

    /// Runs the shard until shutdown; returns its final counters.
    pub(crate) async fn run(mut self) -> ShardStats {
        // When the current stretch of work began or will begin: the end of the previous
        // turn, the moment idle polling found input, or the last tick.
        let mut work_since = clock::now();
        // When the shard last ran out of work (the spin budget counts from here).
        let mut idle_since = work_since;
        // Since when the shard has had nothing to do but wait for ring space.
        let mut backlog_since: Option<Nanos> = None;
        let backlog_spin_ns = self.shared.config.spin_budget.as_nanos() as u64;
        loop {
            if let Some(end) = self.turn(work_since) {
                work_since = end;
                idle_since = end;
                if self.shared.abort.load(Ordering::Relaxed) {
                    break;
                }
                glommio::yield_if_needed().await;
                continue;
            }
            if self.out.backlog > 0 {
                if self.shared.abort.load(Ordering::Relaxed) {
                    break;
                }
                // Rings towards some shard are full: retry until it drains them (parking
                // on the doorbell could sleep through the moment space frees up). A running
                // peer frees space within microseconds, so spin for the spin budget first.
                // Past it the peer is not running, most likely because the machine is
                // oversubscribed: nap briefly so that it can run. (Yielding instead hands
                // the CPU to whichever other thread is runnable, for a whole time slice,
                // and moved a ring's worth of messages per slice.)
                let now = clock::now();
                let stuck_since = *backlog_since.get_or_insert(now);
                if now.saturating_sub(stuck_since) >= backlog_spin_ns {
                    std::thread::sleep(BACKLOG_NAP);
                    backlog_since = None;
                } else {
                    std::hint::spin_loop();
                }
                work_since = clock::now();
                idle_since = work_since;
                continue;
            }
            backlog_since = None;
            match self.idle(idle_since, work_since) {
                Idle::Found(at) => work_since = at,
                Idle::Tick(at) => {
                    self.publish_metrics(at);
                    self.tick(at);
                    self.flush();
                    // Work found from here on is counted from the tick, not from the
                    // start of the idle spell; the spin budget keeps counting.
                    work_since = at;
                }
                Idle::Park => {
                    self.publish_metrics(clock::now());
                    self.park().await;
                    work_since = clock::now();
                    idle_since = work_since;
                }
                Idle::Stop => break,
            }
        }
        self.publish_metrics(clock::now());
        let mut stats = self.counters().snapshot(self.id, self.shared.cpus[self.id]);
        stats.actors = self.actors.metrics();
        stats
    }

    /// One turn: take what arrived, run a batch of ready messages, flush the outboxes.
    /// `start` is when the work was found. Returns when the turn ended, or `None` when
    /// there was nothing to do.
    fn turn(&mut self, start: Nanos) -> Option<Nanos> {
        let fired = self.fire_timers(start);
        let first = self.run_first_arrival(start);
        let arrived = self.drain_inbound() + fired + first;
        if arrived == 0 && self.actors.ready.is_empty() && !self.out.has_overflow() {
            // `unrung` is only ever filled by handlers, whose turn flushes it.
            return None;
        }
        self.note_queued_peak();
        let (ran, arrived_meanwhile) = self.run_ready(start);
        let arrived = arrived + arrived_meanwhile;
        self.note_queued_peak();
        let moved = self.flush();
        if arrived > 0 {
            // Only now, with this turn's messages out, give the read slots back.
            for (_, ring) in &mut self.incoming {
                ring.release();
            }
        }
        if arrived + ran + moved == 0 {
            // Only outboxes towards full rings: nothing moved, so this was no work.
            return None;
        }
        let end = clock::now();
        if end.saturating_sub(self.last_publish) >= METRICS_EVERY_NS {
            self.publish_metrics(end);
            self.tick(end);
            self.flush();
        }
        self.busy_ns += end.saturating_sub(start);
        self.counters()
            .busy_ns
            .store(self.busy_ns, Ordering::Relaxed);
        Some(end)
    }
    /// Publishes what blocked lessors hold (for `Context::backpressured`) and keeps
    /// `queued_peak`, a statistic of mailboxes and held messages together.
    #[inline]
    fn note_queued_peak(&self) {
        let counters = self.counters();
        if counters.held.load(Ordering::Relaxed) != self.actors.held {
            counters.held.store(self.actors.held, Ordering::Relaxed);
        }
        let waiting = counters.queued.load(Ordering::Relaxed) + self.actors.held;
        if waiting > counters.queued_peak.load(Ordering::Relaxed) {
            counters.queued_peak.store(waiting, Ordering::Relaxed);
        }
    }

    /// Waits for input: polls until input arrives, the spin budget (counted from
    /// `idle_since`) is spent, or the shard must stop. A plain function, not an `async`
    /// one: leaving it is on the path of every message that finds the shard idle.
    ///
    /// A clock read (rdtsc, which virtual machines make slow) costs a large share of a
    /// whole hop, so the poll loop reads the clock only every 64 polls, and the moment
    /// input was found is interpolated from the number of polls since the last reading and
    /// the measured average poll duration. Busy time therefore starts within a poll or two
    /// of the real start, without a clock read between finding a message and running it.
    /// `polling_from` is when this call starts polling (the last clock reading), later
    /// than `idle_since` when a tick interrupted the idle spell.
    fn idle(&mut self, idle_since: Nanos, polling_from: Nanos) -> Idle {
        // Polls between two looks at the clock and the stop flag. Unpinned shards yield
        // the CPU after each poll, which takes far longer than a poll, so they look at the
        // clock after every one.
        let polls_per_check: u64 = if self.pinned { 64 } else { 1 };
        self.sweep_idle_actors(idle_since);
        let spin_budget_ns = self.shared.config.spin_budget.as_nanos() as u64;
        let mut last_reading = polling_from.max(idle_since);
        loop {
            for polls in 1..=polls_per_check {
                if self.has_inbound() {
                    return Idle::Found(last_reading + polls * self.poll_ns);
                }
                if self.pinned {
                    std::hint::spin_loop();
                } else {
                    // Unpinned shards may share a core with other shards: spinning there
                    // would keep the very shard we wait for off the CPU.
                    std::thread::yield_now();
                }
            }
            let now = clock::now();
            let per_poll = now.saturating_sub(last_reading) / polls_per_check;
            self.poll_ns = (self.poll_ns * 7 + per_poll) / 8;
            last_reading = now;
            if self.shared.stop.load(Ordering::Acquire) {
                return Idle::Stop;
            }
            if now.saturating_sub(self.last_publish) >= METRICS_EVERY_NS {
                return Idle::Tick(now);
            }
            if self.next_timer().is_some_and(|at| at <= now) {
                return Idle::Found(now);
            }
            let timer_soon = self
                .next_timer()
                .is_some_and(|at| at.saturating_sub(now) < TIMER_SPIN_NS);
            if now.saturating_sub(idle_since) >= spin_budget_ns && !timer_soon {
                return Idle::Park;
            }
        }
    }

    /// Whether anything waits in an inbound ring or the intake.
    #[inline]
    fn has_inbound(&self) -> bool {
        self.incoming.iter().any(|(_, ring)| ring.has_pending())
            || self.shared.intake_posted(self.id) != self.intake_taken
    }

    async fn park(&mut self) {
        // Let other tasks on this executor (timers, I/O) run before the thread sleeps.
        futures_lite::future::yield_now().await;
        let doorbell = &self.shared.doorbells[self.id];
        doorbell.prepare_sleep();
        if self.has_inbound() || self.shared.stop.load(Ordering::Acquire) {
            doorbell.cancel_sleep();
            return;
        }
        bump(&self.shared.counters[self.id].parks, 1);
        let mut timeout = self.shared.config.park_timeout;
        if let Some(at) = self.next_timer() {
            let until = std::time::Duration::from_nanos(at.saturating_sub(clock::now()));
            timeout = timeout.min(until.max(std::time::Duration::from_micros(1)));
        }
        doorbell.sleep(timeout);
    }

    /// The fast lane of an idle shard: when nothing is ready and the policy runs messages
    /// in arrival order, the first message in the rings is the next one to run anyway, so
    /// it runs at once — not through a mailbox and the ready queue, which cost each hop
    /// about a tenth of a round trip between two shards. `next_message` stays the one place
    /// that chooses among ready messages; this only skips the queues when there is no
    /// choice to make. Messages that need the lessor's admission, and any control message,
    /// take the usual way. Returns how many messages it took from the rings (0 or 1).
    #[inline]
    fn run_first_arrival(&mut self, start: Nanos) -> usize {
        let actors = &self.actors;
        if !actors.ready.is_empty() || actors.ready.is_ranked() || actors.awaiting_partials > 0 {
            return 0;
        }
        let Some(packet) = self
            .incoming
            .iter_mut()
            .find_map(|(_, ring)| ring.try_pop())
        else {
            return 0;
        };
        bump(&self.shared.counters[self.id].msgs_in, 1);
        let envelope = match packet {
            Packet::Message(envelope) => envelope,
            Packet::Control(control) => {
                self.actors
                    .accept_control(*control, &mut self.out, &self.shared);
                return 1;
            }
        };
        let (index, direct) = self.actors.route(&envelope, self.id, &self.shared);
        if direct && !slot_in(&mut self.actors.slots, index).queued {
            self.run_one(index, envelope, start);
        } else {
            self.actors
                .enqueue_routed(index, direct, envelope, &mut self.out, &self.shared);
        }
        1
    }

    fn drain_inbound(&mut self) -> usize {
        let Self {
            shared,
            incoming,
            actors,
            intake,
            intake_taken,
            out,
            id,
            ..
        } = self;
        let shared = &**shared;
        let counters = &shared.counters[*id];
        let mut arrived = 0;
        // Past the mailbox high-water mark the rings are left to fill, so that senders
        // see backpressure instead of this shard buffering without bound. What counts is
        // the mailboxes and what blocked lessors hold back. The mailboxes hold only
        // runnable messages, and a blocked lessor waits only for its mailbox to run
        // down, for partial states, or for a pending barrier's parts; so the shard keeps
        // running them and comes back under the mark, and while partial states or
        // barrier parts are due it drains on, since they may sit behind user messages in
        // a ring.
        let mailboxes_open = counters.queued.load(Ordering::Relaxed) + actors.held
            <= shared.config.mailbox_high_water
            || actors.awaiting_partials > 0
            || actors.pending_barriers > 0;
        if mailboxes_open {
            for (_, ring) in incoming.iter_mut() {
                arrived += ring.drain(|packet| match packet {
                    Packet::Message(envelope) => actors.enqueue(envelope, out, shared),
                    Packet::Control(control) => actors.accept_control(*control, out, shared),
                });
            }
        }
        let intake_open = out.backlog <= shared.config.backlog_high_water && mailboxes_open;
        if intake_open && shared.intake_posted(*id) != *intake_taken {
            for _ in 0..INTAKE_BATCH {
                let Ok(packet) = intake.try_recv() else {
                    break;
                };
                *intake_taken += 1;
                arrived += 1;
                match packet {
                    Packet::Message(envelope) => actors.enqueue(envelope, out, shared),
                    Packet::Control(control) => actors.accept_control(*control, out, shared),
                }
            }
        }
        if arrived > 0 {
            bump(&counters.msgs_in, arrived as u64);
        }
        arrived
    }

    /// The one place that picks the next message to run: the oldest message of the actor
    /// at the head of the ready queue; the actor goes to the back if it has more. A ready
    /// actor with an empty mailbox is a lessor whose consolidation point is due (`None`).
    #[inline]
    fn next_message(&mut self) -> Option<(u32, Option<Envelope<M>>)> {
        let index = self.actors.ready.pop()?;
        let slot = self.actors.slots[index as usize]
            .as_mut()
            .expect("ready actors are active");
        let Some(envelope) = slot.mailbox.pop_front() else {
            slot.queued = false;
            return Some((index, None));
        };
        if self.actors.admits {
            count_app(&mut self.actors.app_queued, envelope.target.app, -1);
        }
        let queued = &self.shared.counters[self.id].queued;
        queued.store(
            queued.load(Ordering::Relaxed).wrapping_sub(1),
            Ordering::Relaxed,
        );
        if slot.mailbox.is_empty() {
            slot.queued = false;
        } else if !self.actors.ready.is_ranked()
            && slot.mailbox.len() <= BLOCKED_FIRST_MAX
            && matches!(&slot.role, Role::Lessor(coordinator) if coordinator.sync.is_some())
        {
            // A blocked lessor's mailbox holds what its critical section waits for: in
            // arrival order it runs first, so that a consolidation is not spread over
            // many turns. Only a short mailbox: a deep one would keep every other actor
            // here waiting until it ran dry (a source starved for seconds behind an
            // overloaded operator's backlog), so it takes its turns with the others.
            // Ranked policies keep their own order (a deep mailbox must not jump ahead
            // of tighter deadlines).
            self.actors.ready.push_first(index);
        } else {
            let rank = if self.actors.ready.is_ranked() {
                self.actors.policy.priority(&slot.mailbox[0].ctx)
            } else {
                0
            };
            self.actors.ready.push(index, rank);
        }
        Some((index, Some(envelope)))
    }

    /// Runs up to a batch of ready messages; returns how many ran, and how many arrived
    /// meanwhile (a lessor waiting for partial states looks at the rings between
    /// messages, so that a consolidation does not wait for the end of a long turn).
    fn run_ready(&mut self, turn_start: Nanos) -> (usize, usize) {
        let mut ran = 0;
        let mut arrived = 0;
        // A turn also ends after `TURN_BUDGET_NS`, so that timers, inbound rings and the
        // reactor get a look often enough whatever the handlers cost (64 messages of a
        // millisecond each made a source's timer a tenth of a second late, and starved
        // it). While handlers are timed, their summed time counts; otherwise the clock is
        // read every `BUDGET_CHECK_EVERY` messages: a few reads per full turn, none for a
        // short one (a hop between shards). Reading it after the 1st, 2nd and 4th too
        // ended turns early behind one costly message, and the window latency of
        // `bench peer` rose by a fifth.
        let timed = self.shared.measure_costs;
        let mut spent = 0;
        while ran < RUN_BATCH && spent < TURN_BUDGET_NS {
            if !timed
                && ran > 0
                && ran % BUDGET_CHECK_EVERY == 0
                && clock::now().saturating_sub(turn_start) >= TURN_BUDGET_NS
            {
                break;
            }
            if self.actors.awaiting_partials > 0
                && self.incoming.iter().any(|(_, ring)| ring.has_pending())
            {
                arrived += self.drain_inbound();
            }
            let Some((index, envelope)) = self.next_message() else {
                break;
            };
            match envelope {
                Some(envelope) => spent += self.run_one(index, envelope, turn_start),
                None => self.consolidated(index, turn_start),
            }
            ran += 1;
        }
        (ran, arrived)
    }

    /// Runs one message; returns the handler's cost when handlers are timed, else 0.
    fn run_one(&mut self, index: u32, envelope: Envelope<M>, turn_start: Nanos) -> u64 {
        let slot = self.actors.slots[index as usize]
            .as_mut()
            .expect("ready actors are active");
        slot.last_active = turn_start;
        let mut ctx = Context {
            out: &mut self.out,
            me: slot.id,
            current: envelope.ctx,
            epoch: slot.epoch(),
        };
        let actor = &mut slot.actor;
        let measure = self.shared.measure_costs;
        if measure {
            self.shared.policy.pre_apply(slot.id, &envelope.ctx);
        }
        let started = if measure { clock::raw() } else { 0 };
        let outcome = catch_unwind(AssertUnwindSafe(|| actor.receive(&mut ctx, envelope)));
        let mut cost = 0;
        if measure {
            cost = clock::raw_delta_ns(started, clock::raw());
            if cost > self.shared.config.handler_warning_ns {
                bump(&self.shared.counters[self.id].slow_handlers, 1);
                let now = clock::now();
                if now.saturating_sub(self.last_slow_warning) >= 1_000_000_000 {
                    self.last_slow_warning = now;
                    tracing::warn!(
                        actor = %slot.id,
                        shard = self.id,
                        cost_us = cost / 1000,
                        "a handler held its shard past the bound; messages behind it waited (more are counted as slow_handlers, warned at most once a second)"
                    );
                }
            }
            self.shared.costs.record(&slot.id, cost);
            self.shared.usage.busy(self.id, slot.id.app, cost);
            self.shared.policy.post_apply(slot.id, cost);
            let smooth = |average: &mut u64| {
                *average = if *average == 0 {
                    cost
                } else {
                    *average - *average / 16 + cost / 16
                };
            };
            smooth(&mut self.actors.avg_cost_ns);
            if self.actors.admits {
                let app = usize::from(slot.id.app);
                let costs = &mut self.actors.app_cost_ns;
                if costs.len() <= app {
                    costs.resize(app + 1, 0);
                }
                smooth(&mut costs[app]);
            }
        }
        let counters = &self.shared.counters[self.id];
        if outcome.is_err() {
            let id = slot.id;
            tracing::error!(actor = %id, shard = self.id, "handler panicked; restarting the actor from its factory");
            slot.actor = self.actors.factories.get(&id).activate(id, None);
            bump(&counters.handler_panics, 1);
        }
        let plain = matches!(slot.role, Role::Plain);
        // Released after the handler's sends were counted (see `Outbound::send`).
        mark_handled(counters, 1);
        if !plain {
            self.after_run(index);
        }
        self.dispatch_local();
        cost
    }

    /// Dual-mode bookkeeping after a lessor or lessee ran a message.
    fn after_run(&mut self, index: u32) {
        let slot = self.actors.slot_mut(index);
        match &mut slot.role {
            Role::Lessee(lessee) => {
                lessee.processed += 1;
                // Published now and then, not after every message: the lessor reads it on
                // every dispatch, and each store would cost it a cache miss.
                if lessee.processed % PROGRESS_EVERY == 0 || slot.mailbox.is_empty() {
                    lessee
                        .progress
                        .processed
                        .store(lessee.processed, Ordering::Relaxed);
                }
                if lessee.pending_sync.is_some() && slot.mailbox.is_empty() {
                    self.actors.answer_sync(index, &mut self.out);
                }
            }
            Role::Lessor(_) => self.actors.check_consolidated(index),
            Role::Plain => {}
        }
    }

    /// When the earliest timer is due, if any.
    fn next_timer(&self) -> Option<Nanos> {
        self.timers.peek().map(|timer| timer.at)
    }

    /// Sends every timer due by `now`; returns how many fired.
    fn fire_timers(&mut self, now: Nanos) -> usize {
        let mut local = 0;
        let mut fired = 0;
        while self.timers.peek().is_some_and(|timer| timer.at <= now) {
            let timer = self.timers.pop().expect("peeked");
            fired += 1;
            if let Some(envelope) = self.out.send_counted(timer.envelope) {
                self.actors.enqueue(envelope, &mut self.out, &self.shared);
                local += 1;
            }
        }
        if local > 0 {
            bump(&self.shared.counters[self.id].msgs_in, local as u64);
        }
        fired
    }

    /// Dispatches what handlers sent to actors on this shard, and control messages for it.
    fn dispatch_local(&mut self) {
        if !self.out.delayed.is_empty() {
            for (at, envelope) in std::mem::take(&mut self.out.delayed) {
                self.timer_seq += 1;
                self.timers.push(Timer {
                    at,
                    seq: self.timer_seq,
                    envelope,
                });
            }
        }
        let local = self.out.local.len();
        if local > 0 {
            let mut messages = std::mem::take(&mut self.out.local);
            for envelope in messages.drain(..) {
                self.actors.enqueue(envelope, &mut self.out, &self.shared);
            }
            self.out.local = messages;
            bump(&self.shared.counters[self.id].msgs_in, local as u64);
        }
        while !self.out.local_controls.is_empty() {
            let controls = std::mem::take(&mut self.out.local_controls);
            for control in controls {
                self.actors
                    .accept_control(control, &mut self.out, &self.shared);
            }
        }
    }

    /// A lessor's consolidation point: every partial state is merged and everything that
    /// arrived before the sync has run. Runs the critical section, applies the scale
    /// change, and releases the held messages in arrival order.
    fn consolidated(&mut self, index: u32, turn_start: Nanos) {
        let slot = slot_in(&mut self.actors.slots, index);
        slot.last_active = turn_start;
        let id = slot.id;
        let ActorSlot {
            actor,
            role: Role::Lessor(coordinator),
            ..
        } = slot
        else {
            return;
        };
        let Some(sync) = coordinator.sync.take() else {
            return;
        };
        let counters = &self.shared.counters[self.id];
        if let Some(first) = sync.critical.first() {
            let critical = sync.critical.len() as u64;
            let mut ctx = Context {
                out: &mut self.out,
                me: id,
                current: first.ctx,
                epoch: coordinator.epoch,
            };
            let messages = sync.critical;
            let outcome = catch_unwind(AssertUnwindSafe(|| actor.critical(&mut ctx, messages)));
            if outcome.is_err() {
                tracing::error!(actor = %id, shard = self.id, "critical section panicked; restarting the actor from its factory");
                *actor = self.actors.factories.get(&id).activate(id, None);
                bump(&counters.handler_panics, 1);
            }
            coordinator.epoch += 1;
            coordinator.metrics.critical_sections += 1;
            mark_handled(counters, critical);
        }
        let now = clock::now();
        if let Some(ScaleChange::Add(shard)) = sync.scale {
            lease(coordinator, id, shard, &mut self.out);
            if !self.actors.with_lessees.contains(&id) {
                self.actors.with_lessees.push(id);
            }
        }
        coordinator.metrics.blocked_ns += now.saturating_sub(sync.started);
        let mut held = std::mem::take(&mut coordinator.held);
        coordinator.mark_metrics_dirty(&mut self.actors.metrics_dirty);
        // Released: admission below counts again whatever it holds anew.
        debug_assert!(self.actors.held >= held.len() as u64);
        self.actors.held = self.actors.held.saturating_sub(held.len() as u64);
        self.dispatch_local();
        // Scale requests that waited for this consolidation go first: held messages are
        // re-admitted after them (the rest put back at once if one blocks the actor), so a retire
        // does not wait behind a burst of held work. Refused or immediate ones do not
        // block, so the next one starts at once.
        loop {
            let slot = self.actors.slot_mut(index);
            let Role::Lessor(coordinator) = &mut slot.role else {
                break;
            };
            if coordinator.sync.is_some() {
                break;
            }
            let Some(change) = coordinator.scale_queue.pop_front() else {
                break;
            };
            self.actors.start_scale(index, change, &mut self.out);
        }
        while let Some(envelope) = held.pop_front() {
            let slot = self.actors.slot_mut(index);
            if let Role::Lessor(coordinator) = &mut slot.role {
                if coordinator.sync.is_some() {
                    // A held message started the next consolidation: admission would hold
                    // every later one again, one by one. Put them back at once, in order,
                    // behind what it held just now. Re-admitting the whole backlog at every
                    // barrier made each barrier cost as much as the backlog, so a backlog
                    // from one stall grew without end.
                    // Whatever it held just now goes first; the backlog itself is not
                    // copied (held is usually the long one).
                    held.push_front(envelope);
                    let returned = held.len() as u64;
                    let just_held = std::mem::replace(&mut coordinator.held, held);
                    for earlier in just_held.into_iter().rev() {
                        coordinator.held.push_front(earlier);
                    }
                    self.actors.held += returned;
                    break;
                }
            }
            self.actors.enqueue(envelope, &mut self.out, &self.shared);
        }
        // Messages held through the block are the oldest waiting here: they run next,
        // not behind whatever became ready while the actor was blocked.
        self.actors.ready.promote_last(index);
    }

    /// Moves outboxes into the rings and rings the doorbells (see `Outbound::flush`).
    #[inline]
    fn flush(&mut self) -> usize {
        self.out.flush()
    }

    /// Periodic housekeeping (about once a millisecond, busy or idle): publish the operator
    /// edges seen and recompute path costs, deactivate idle actors, retire idle lessees,
    /// and the policy's `on_tick`.
    fn tick(&mut self, now: Nanos) {
        self.last_publish = now;
        self.sample_utilization(now);
        // Here as well as when the shard falls idle: a shard that never runs out of work
        // must still let go of the actors that stopped getting any.
        self.sweep_idle_actors(now);
        if self.shared.measure_costs {
            if !self.out.new_edges.is_empty() {
                self.shared.costs.add_edges(self.out.new_edges.drain(..));
            }
            self.shared.costs.refresh_paths();
        }
        if let Some(after) = self.shared.policy.retire_idle_lessees_after() {
            self.retire_idle_lessees(now, after.as_nanos() as u64);
        }
        let shared = self.shared.clone();
        shard_loads(&shared, &mut self.actors.scratch_shards);
        let view = TickView {
            shard: self.id,
            now,
            shards: &self.actors.scratch_shards,
        };
        let policy = &shared.policy;
        let requests =
            catch_unwind(AssertUnwindSafe(|| policy.on_tick(&view))).unwrap_or_else(|_| {
                tracing::error!(shard = self.id, "the policy's on_tick panicked; ignored");
                Vec::new()
            });
        for (actor, change) in requests {
            match shared.check_scale(actor, change) {
                Ok(home) => self.out.control(home, Control::Scale { actor, change }),
                Err(error) => {
                    tracing::warn!(actor = %actor, "policy scale request refused: {error}")
                }
            }
        }
        // Requests for actors whose home is this shard are queued locally: carry them out
        // now, or an idle shard would park with them pending.
        self.dispatch_local();
    }

    /// Folds the busy share since the last sample into the smoothed utilization, weighted
    /// by the time it covers (a sample of 8 ms or more replaces it).
    fn sample_utilization(&mut self, now: Nanos) {
        const HORIZON_NS: f64 = 8_000_000.0;
        let (at, busy_then, smoothed) = self.utilization;
        let elapsed = now.saturating_sub(at);
        if elapsed < METRICS_EVERY_NS / 2 {
            return;
        }
        let busy = self.busy_ns.saturating_sub(busy_then);
        let sample = (busy as f64 / elapsed as f64).min(1.0);
        let weight = (elapsed as f64 / HORIZON_NS).min(1.0);
        let smoothed = smoothed + (sample - smoothed) * weight;
        self.utilization = (now, self.busy_ns, smoothed);
        self.counters()
            .utilization_permille
            .store((smoothed * 1000.0) as u64, Ordering::Relaxed);
    }

    /// Retires lessees given nothing for `after_ns` (one per lessor per tick).
    fn retire_idle_lessees(&mut self, now: Nanos, after_ns: u64) {
        for position in 0..self.actors.with_lessees.len() {
            let Some(id) = self.actors.with_lessees.get(position).copied() else {
                break;
            };
            let Some(&index) = self.actors.index.get(&id) else {
                continue;
            };
            let slot = self.actors.slot_mut(index);
            let Role::Lessor(coordinator) = &mut slot.role else {
                continue;
            };
            if coordinator.sync.is_some() || !coordinator.scale_queue.is_empty() {
                continue;
            }
            let mut idle = None;
            for lessee in &mut coordinator.lessees {
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
            if let Some(shard) = idle {
                self.actors
                    .start_scale(index, ScaleChange::Remove(shard), &mut self.out);
            }
        }
    }

    /// Publishes the metrics of lessors that changed, for `Runtime::actor_metrics`.
    /// Called at most once per `METRICS_EVERY_NS` while busy, and before parking.
    fn publish_metrics(&mut self, now: Nanos) {
        if self.actors.metrics_dirty.is_empty() {
            return;
        }
        self.last_publish = now;
        let mut published = self.shared.live_metrics[self.id]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in self.actors.metrics_dirty.drain(..) {
            let Some(&index) = self.actors.index.get(&id) else {
                continue;
            };
            if let Some(ActorSlot {
                role: Role::Lessor(coordinator),
                ..
            }) = &mut self.actors.slots[index as usize]
            {
                coordinator.metrics_dirty = false;
                coordinator
                    .metrics
                    .publish_into(published.entry(id).or_default());
            }
        }
    }

    fn sweep_idle_actors(&mut self, now: Nanos) {
        let Some(timeout) = self.shared.config.idle_deactivation else {
            return;
        };
        let timeout_ns = timeout.as_nanos() as u64;
        let interval_ns = (timeout_ns / 4).clamp(1_000_000, 1_000_000_000);
        // `now` can be older than the last sweep: an idle spell sweeps as of its start,
        // after ticks during it swept as of later.
        if now.saturating_sub(self.last_sweep) < interval_ns {
            return;
        }
        self.last_sweep = now;
        self.actors
            .deactivate_idle(now.saturating_sub(timeout_ns), self.id, &self.shared);
    }
}
