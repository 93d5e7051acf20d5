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
//! runs next (FIFO across actors in arrival order; FIFO inside an actor).
//!
//! Backpressure: rings are bounded. A message that finds its ring full waits, in order,
//! in the sender shard's outbox for that destination, so nothing is dropped; and because
//! a shard never stops draining its inbound rings, cycles (A→B→A) and all-to-all traffic
//! cannot deadlock. What bounds memory is the intake: while a shard's outboxes hold more
//! than the high-water mark, it stops taking messages from outside threads, whose sends
//! then block (or fail with `Full` for `try_send`).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::actor::{Actor, Context, SavedState, SendError};
use crate::clock;
use crate::envelope::{ActorId, Envelope, Nanos, ShardId};
use crate::mesh::{Consumer, Producer, ShardLinks};
use crate::runtime::Shared;
use crate::stats::{bump, ShardCounters, ShardStats};

/// How many ready messages a shard runs before it looks at its inputs again.
const RUN_BATCH: usize = 64;
/// How many messages from outside a shard takes per turn.
const INTAKE_BATCH: usize = 256;

/// What a handler's sends go through: staged locally, or queued towards another shard.
pub(crate) struct Outbound<M> {
    pub(crate) shard: ShardId,
    pub(crate) shared: Arc<Shared<M>>,
    /// Messages for actors on this shard, dispatched right after the handler returns.
    local: Vec<Envelope<M>>,
    /// Per destination shard: the ring towards it (`None` for this shard).
    rings: Vec<Option<Producer<Envelope<M>>>>,
    /// Per destination shard: messages that found the ring full, in send order. While
    /// one waits here, later messages to that shard queue behind it.
    remote: Vec<VecDeque<Envelope<M>>>,
    /// Destinations whose outbox is not empty.
    dirty: Vec<ShardId>,
    /// Destinations that got messages since their doorbell was last rung.
    unrung: Vec<ShardId>,
    /// `unrung` as flags, indexed by shard.
    is_unrung: Vec<bool>,
    /// Messages waiting in all outboxes.
    backlog: usize,
    /// The last target sent to, and its shard: a handler that keeps sending to one actor
    /// skips the registry lookup and the hash.
    last_route: Option<(ActorId, ShardId)>,
}

impl<M> Outbound<M> {
    fn new(
        shard: ShardId,
        shared: Arc<Shared<M>>,
        rings: Vec<Option<Producer<Envelope<M>>>>,
    ) -> Self {
        let shards = shared.shards();
        Self {
            shard,
            shared,
            local: Vec::new(),
            rings,
            remote: (0..shards).map(|_| VecDeque::new()).collect(),
            dirty: Vec::with_capacity(shards),
            unrung: Vec::with_capacity(shards),
            is_unrung: vec![false; shards],
            backlog: 0,
            last_route: None,
        }
    }

    #[inline]
    pub(crate) fn send(&mut self, envelope: Envelope<M>) -> Result<(), SendError<M>> {
        let destination = match self.last_route {
            Some((target, shard)) if target == envelope.target => shard,
            _ => {
                if !self.shared.knows_operator(&envelope.target) {
                    return Err(SendError::UnknownOperator(envelope));
                }
                let shard = self.shared.router.route(&envelope.target);
                self.last_route = Some((envelope.target, shard));
                shard
            }
        };
        // Counted before the message can be seen anywhere: shutdown's quiescence check
        // relies on "sent" never lagging behind "handled".
        bump(&self.shared.counters[self.shard].msgs_out, 1);
        if destination == self.shard {
            self.local.push(envelope);
            return Ok(());
        }
        let outbox = &mut self.remote[destination];
        let envelope = if outbox.is_empty() {
            // Nothing waits for this shard: straight into the ring. The doorbell is rung
            // once per turn, in `Shard::flush`.
            let ring = self.rings[destination]
                .as_mut()
                .expect("remote destinations have rings");
            match ring.try_push(envelope) {
                Ok(()) => {
                    if !self.is_unrung[destination] {
                        self.is_unrung[destination] = true;
                        self.unrung.push(destination);
                    }
                    return Ok(());
                }
                Err(envelope) => {
                    bump(&self.shared.counters[self.shard].ring_full, 1);
                    self.dirty.push(destination);
                    envelope
                }
            }
        } else {
            envelope
        };
        outbox.push_back(envelope);
        self.backlog += 1;
        Ok(())
    }
}

struct ActorSlot<M> {
    id: ActorId,
    actor: Box<dyn Actor<M>>,
    mailbox: VecDeque<Envelope<M>>,
    /// Whether the slot is in the ready queue.
    queued: bool,
    /// When a turn last ran one of its messages (runtime clock).
    last_active: Nanos,
}

/// The actors active on one shard, in a slab indexed through a hash map.
struct ActorTable<M> {
    index: FxHashMap<ActorId, u32>,
    slots: Vec<Option<ActorSlot<M>>>,
    free: Vec<u32>,
    /// State of deactivated actors, until their next message.
    dormant: FxHashMap<ActorId, SavedState>,
    /// The last actor looked up and its slot: runs of messages for one actor skip the
    /// hash map.
    last_hit: Option<(ActorId, u32)>,
}

impl<M: Send + 'static> ActorTable<M> {
    fn new() -> Self {
        Self {
            index: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            dormant: FxHashMap::default(),
            last_hit: None,
        }
    }

    #[cold]
    #[inline(never)]
    fn activate(&mut self, id: ActorId, shared: &Shared<M>, counters: &ShardCounters) -> u32 {
        let saved = self.dormant.remove(&id);
        let actor = shared.factory(&id).activate(id, saved);
        let slot = ActorSlot {
            id,
            actor,
            mailbox: VecDeque::new(),
            queued: false,
            last_active: clock::now(),
        };
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
        bump(&counters.activations, 1);
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

    /// Puts a message in its actor's mailbox, activating the actor if needed, and marks the
    /// actor ready.
    #[inline]
    fn enqueue(
        &mut self,
        envelope: Envelope<M>,
        ready: &mut VecDeque<u32>,
        shared: &Shared<M>,
        counters: &ShardCounters,
    ) {
        let target = envelope.target;
        let index = match self.last_hit {
            Some((id, index)) if id == target => index,
            _ => self.lookup(target, shared, counters),
        };
        let slot = self.slots[index as usize]
            .as_mut()
            .expect("indexed actor slots are occupied");
        slot.mailbox.push_back(envelope);
        if !slot.queued {
            slot.queued = true;
            ready.push_back(index);
        }
    }

    /// Deactivates every actor idle since before `cutoff`, keeping the state it returns.
    fn deactivate_idle(&mut self, cutoff: Nanos, counters: &ShardCounters) {
        for index in 0..self.slots.len() {
            let idle = matches!(
                &self.slots[index],
                Some(slot) if !slot.queued && slot.mailbox.is_empty() && slot.last_active < cutoff
            );
            if !idle {
                continue;
            }
            let slot = self.slots[index].take().expect("checked above");
            self.index.remove(&slot.id);
            if self.last_hit.is_some_and(|(id, _)| id == slot.id) {
                self.last_hit = None;
            }
            self.free.push(index as u32);
            if let Some(state) = slot.actor.deactivate() {
                self.dormant.insert(slot.id, state);
            }
            bump(&counters.deactivations, 1);
        }
    }
}

/// How an idle spell ended.
enum Idle {
    /// Input arrived (at about this time).
    Found(Nanos),
    /// The spin budget is spent: park.
    Park,
    /// The runtime is stopping.
    Stop,
}

/// Everything a shard needs to start, handed to its thread once all shards exist.
pub(crate) struct ShardStart<M> {
    pub(crate) shared: Arc<Shared<M>>,
    pub(crate) links: ShardLinks<Envelope<M>>,
    pub(crate) intake: flume::Receiver<Envelope<M>>,
}

pub(crate) struct Shard<M> {
    id: ShardId,
    shared: Arc<Shared<M>>,
    incoming: Vec<(usize, Consumer<Envelope<M>>)>,
    intake: flume::Receiver<Envelope<M>>,
    intake_taken: u64,
    actors: ActorTable<M>,
    ready: VecDeque<u32>,
    out: Outbound<M>,
    /// When the last deactivation sweep ran.
    last_sweep: Nanos,
    busy_ns: u64,
    pinned: bool,
    /// Average duration of one idle poll (see `idle`).
    poll_ns: u64,
}

impl<M: Send + 'static> Shard<M> {
    pub(crate) fn new(id: ShardId, start: ShardStart<M>) -> Self {
        let ShardStart {
            shared,
            links,
            intake,
        } = start;
        Self {
            id,
            pinned: shared.cpus[id].is_some(),
            out: Outbound::new(id, shared.clone(), links.outgoing),
            shared,
            incoming: links.incoming,
            intake,
            intake_taken: 0,
            actors: ActorTable::new(),
            ready: VecDeque::new(),
            last_sweep: clock::now(),
            busy_ns: 0,
            poll_ns: 20,
        }
    }

    fn counters(&self) -> &ShardCounters {
        &self.shared.counters[self.id]
    }

    /// Runs the shard until shutdown; returns its final counters.
    pub(crate) async fn run(mut self) -> ShardStats {
        // When the current stretch of work began or will begin: the end of the previous
        // turn, or the moment idle polling found input.
        let mut work_since = clock::now();
        loop {
            if let Some(end) = self.turn(work_since) {
                work_since = end;
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
                // Rings towards some shard are full: retry until it drains them. Parking
                // here could sleep through the moment space frees up.
                std::thread::yield_now();
                work_since = clock::now();
                continue;
            }
            match self.idle(work_since) {
                Idle::Found(at) => work_since = at,
                Idle::Park => {
                    self.park().await;
                    work_since = clock::now();
                }
                Idle::Stop => break,
            }
        }
        self.counters().snapshot(self.id, self.shared.cpus[self.id])
    }

    /// One turn: take what arrived, run a batch of ready messages, flush the outboxes.
    /// `start` is when the work was found. Returns when the turn ended, or `None` when
    /// there was nothing to do.
    fn turn(&mut self, start: Nanos) -> Option<Nanos> {
        let arrived = self.drain_inbound();
        if arrived == 0 && self.ready.is_empty() && self.out.dirty.is_empty() {
            // `unrung` is only ever filled by handlers, whose turn flushes it.
            return None;
        }
        let ran = self.run_ready(start);
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
        self.busy_ns += end.saturating_sub(start);
        self.counters()
            .busy_ns
            .store(self.busy_ns, Ordering::Relaxed);
        Some(end)
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
    fn idle(&mut self, idle_since: Nanos) -> Idle {
        // Polls between two looks at the clock and the stop flag. Unpinned shards yield
        // the CPU after each poll, which takes far longer than a poll, so they look at the
        // clock after every one.
        let polls_per_check: u64 = if self.pinned { 64 } else { 1 };
        self.sweep_idle_actors(idle_since);
        let spin_budget_ns = self.shared.config.spin_budget.as_nanos() as u64;
        let mut last_reading = idle_since;
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
            if now.saturating_sub(idle_since) >= spin_budget_ns {
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
        doorbell.sleep(self.shared.config.park_timeout);
    }

    fn drain_inbound(&mut self) -> usize {
        let Self {
            shared,
            incoming,
            actors,
            ready,
            intake,
            intake_taken,
            out,
            id,
            ..
        } = self;
        let shared = &**shared;
        let counters = &shared.counters[*id];
        let mut arrived = 0;
        for (_, ring) in incoming.iter_mut() {
            arrived += ring.drain(|envelope| actors.enqueue(envelope, ready, shared, counters));
        }
        let intake_open = out.backlog <= shared.config.backlog_high_water;
        if intake_open && shared.intake_posted(*id) != *intake_taken {
            for _ in 0..INTAKE_BATCH {
                let Ok(envelope) = intake.try_recv() else {
                    break;
                };
                *intake_taken += 1;
                arrived += 1;
                actors.enqueue(envelope, ready, shared, counters);
            }
        }
        if arrived > 0 {
            bump(&counters.msgs_in, arrived as u64);
        }
        arrived
    }

    /// The one place that picks the next message to run: the oldest message of the actor
    /// at the head of the ready queue; the actor goes to the back if it has more.
    #[inline]
    fn next_message(&mut self) -> Option<(u32, Envelope<M>)> {
        let index = self.ready.pop_front()?;
        let slot = self.actors.slots[index as usize]
            .as_mut()
            .expect("ready actors are active");
        let envelope = slot.mailbox.pop_front().expect("ready actors have mail");
        if slot.mailbox.is_empty() {
            slot.queued = false;
        } else {
            self.ready.push_back(index);
        }
        Some((index, envelope))
    }

    fn run_ready(&mut self, turn_start: Nanos) -> usize {
        let mut ran = 0;
        while ran < RUN_BATCH {
            let Some((index, envelope)) = self.next_message() else {
                break;
            };
            self.run_one(index, envelope, turn_start);
            ran += 1;
        }
        ran
    }

    fn run_one(&mut self, index: u32, envelope: Envelope<M>, turn_start: Nanos) {
        let slot = self.actors.slots[index as usize]
            .as_mut()
            .expect("ready actors are active");
        slot.last_active = turn_start;
        let mut ctx = Context {
            out: &mut self.out,
            me: slot.id,
            current: envelope.ctx,
        };
        let actor = &mut slot.actor;
        let outcome = catch_unwind(AssertUnwindSafe(|| actor.receive(&mut ctx, envelope)));
        let counters = &self.shared.counters[self.id];
        if outcome.is_err() {
            let id = slot.id;
            tracing::error!(actor = %id, shard = self.id, "handler panicked; restarting the actor from its factory");
            slot.actor = self.shared.factory(&id).activate(id, None);
            bump(&counters.handler_panics, 1);
        }
        // Released after the handler's sends were counted (see `Outbound::send`).
        counters.handled.store(
            counters.handled.load(Ordering::Relaxed) + 1,
            Ordering::Release,
        );
        let local = self.out.local.len();
        if local > 0 {
            for envelope in self.out.local.drain(..) {
                self.actors
                    .enqueue(envelope, &mut self.ready, &self.shared, counters);
            }
            bump(&counters.msgs_in, local as u64);
        }
    }

    /// Moves outboxes into the rings, in order, as far as they have room, and rings the
    /// doorbell of every shard that got messages this turn; returns how many messages
    /// moved out of outboxes.
    fn flush(&mut self) -> usize {
        let out = &mut self.out;
        if out.dirty.is_empty() && out.unrung.is_empty() {
            return 0;
        }
        let counters = &self.shared.counters[self.id];
        let mut moved = 0;
        let mut still_dirty = 0;
        for position in 0..out.dirty.len() {
            let destination = out.dirty[position];
            let ring = out.rings[destination]
                .as_mut()
                .expect("remote destinations have rings");
            let outbox = &mut out.remote[destination];
            let mut pushed = 0;
            while let Some(envelope) = outbox.pop_front() {
                if let Err(envelope) = ring.try_push(envelope) {
                    outbox.push_front(envelope);
                    bump(&counters.ring_full, 1);
                    break;
                }
                pushed += 1;
            }
            if pushed > 0 && !out.is_unrung[destination] {
                out.is_unrung[destination] = true;
                out.unrung.push(destination);
            }
            if !outbox.is_empty() {
                out.dirty[still_dirty] = destination;
                still_dirty += 1;
            }
            moved += pushed;
        }
        out.dirty.truncate(still_dirty);
        out.backlog -= moved;
        for destination in out.unrung.drain(..) {
            out.is_unrung[destination] = false;
            if self.shared.doorbells[destination].ring() {
                bump(&counters.wakes, 1);
            }
        }
        moved
    }

    fn sweep_idle_actors(&mut self, now: Nanos) {
        let Some(timeout) = self.shared.config.idle_deactivation else {
            return;
        };
        let timeout_ns = timeout.as_nanos() as u64;
        let interval_ns = (timeout_ns / 4).clamp(1_000_000, 1_000_000_000);
        if now - self.last_sweep < interval_ns {
            return;
        }
        self.last_sweep = now;
        let counters = &self.shared.counters[self.id];
        self.actors
            .deactivate_idle(now.saturating_sub(timeout_ns), counters);
    }
}
