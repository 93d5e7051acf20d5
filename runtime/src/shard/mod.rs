//! One shard: the loop that runs on one glommio executor and owns everything on its core
//! — its actors ([`table`]), their dual-mode protocol ([`lessor`]), its ends of the mesh,
//! its outbound links (`outbound`) and its counters.
//!
//! Each turn of the loop (1) fires due timers, (2) runs the first arrival at once when
//! nothing else is ready (the fast lane), (3) drains every inbound ring and the outside
//! intake into actor mailboxes, (4) runs a bounded batch of ready messages, (5) flushes
//! the outbound links into the rings and rings the doorbells of parked receivers. With
//! nothing to do it spins for the spin budget, then parks (see `mesh::Doorbell`); the
//! budget adapts to how long its parks last (`spin`).
//!
//! Two places carry the scheduling decisions: `ShardRouter::route` (in `shared`)
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
//! in the sender shard's overflow queue for that destination, so nothing is dropped; and because
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

mod lessor;
mod spin;
mod table;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::actor::{Context, Factories};
use crate::clock;
use crate::dual::{Control, Packet};
use crate::envelope::{Envelope, Nanos, ShardId};
use crate::mesh::{Consumer, ShardLinks};
use crate::outbound::Outbound;
use crate::scheduling::TickView;
use crate::shared::Shared;
use crate::stats::{bump, mark_handled, ShardCounters, ShardStats};

use table::{count_app, shard_loads, slot_in, ActorTable, Role};

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
/// How often, at most, a busy shard publishes changed lessor metrics.
const METRICS_EVERY_NS: u64 = 1_000_000;
/// How long a shard stuck on full rings past its spin budget sleeps before it retries.
const BACKLOG_NAP: std::time::Duration = std::time::Duration::from_micros(50);

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
    /// How long an idle spell polls before it parks, adapted to how long parks last.
    spin: spin::SpinBudget,
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
        let configured_spin_ns = shared.config.spin_budget.as_nanos() as u64;
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
            spin: spin::SpinBudget::new(configured_spin_ns),
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
                    let parked_at = clock::now();
                    self.publish_metrics(parked_at);
                    self.park().await;
                    work_since = clock::now();
                    idle_since = work_since;
                    let found_work =
                        self.has_inbound() || self.next_timer().is_some_and(|at| at <= work_since);
                    self.spin
                        .parked(work_since.saturating_sub(parked_at), found_work);
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
        if counters.held.load(Ordering::Relaxed) != self.actors.lessors.held() {
            counters
                .held
                .store(self.actors.lessors.held(), Ordering::Relaxed);
        }
        let waiting = counters.queued.load(Ordering::Relaxed) + self.actors.lessors.held();
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
        let spin_budget_ns = self.spin.current_ns();
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
        if !actors.ready.is_empty()
            || actors.ready.is_ranked()
            || actors.lessors.awaiting_partials() > 0
        {
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
        if self.shared.failures.is_failed(envelope.target.app) {
            table::discard(&envelope, &self.shared, self.id);
            return 1;
        }
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
        let mailboxes_open = counters.queued.load(Ordering::Relaxed) + actors.lessors.held()
            <= shared.config.mailbox_high_water
            || actors.lessors.awaiting_partials() > 0
            || actors.lessors.pending_barriers() > 0;
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
            && matches!(&slot.role, Role::Lessor(coordinator) if coordinator.is_blocked())
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
        // A turn also ends after the turn budget (`crate::turn`), so that timers, inbound
        // rings and the reactor get a look often enough whatever the handlers cost (64
        // messages of a millisecond each made a source's timer a tenth of a second late,
        // and starved it). While handlers are timed, their summed time counts; otherwise the clock is
        // read every `BUDGET_CHECK_EVERY` messages: a few reads per full turn, none for a
        // short one (a hop between shards). Reading it after the 1st, 2nd and 4th too
        // ended turns early behind one costly message, and the window latency of
        // `bench peer` rose by a fifth.
        let timed = self.shared.measure_costs;
        let mut spent = 0;
        let budget = self.shared.config.turn_budget_ns;
        while ran < RUN_BATCH && spent < budget {
            // A shutdown that gave up draining stops after the message at hand, not after
            // the turn: a turn of costly messages would hold the stop for seconds.
            if ran > 0 && self.shared.abort.load(Ordering::Relaxed) {
                break;
            }
            if !timed
                && ran > 0
                && ran % BUDGET_CHECK_EVERY == 0
                && clock::now().saturating_sub(turn_start) >= budget
            {
                break;
            }
            if self.actors.lessors.awaiting_partials() > 0
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

    /// Runs one message; returns the handler's cost when handlers are timed, else 0. A
    /// message of a failed app is discarded unrun (see `crate::failure`), with the same
    /// bookkeeping after it.
    fn run_one(&mut self, index: u32, envelope: Envelope<M>, turn_start: Nanos) -> u64 {
        let slot = self.actors.slots[index as usize]
            .as_mut()
            .expect("ready actors are active");
        slot.last_active = turn_start;
        if self.shared.failures.is_failed(slot.id.app) {
            let counters = &self.shared.counters[self.id];
            table::discarded(&envelope, &self.shared, counters);
            self.ran(index);
            return 0;
        }
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
        let kind = envelope.kind;
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
                        // User: data; Critical: a watermark, a window's end, a barrier;
                        // Control: the runtime's own (scaling, state transfer).
                        kind = ?kind,
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
        if let Err(payload) = outcome {
            bump(&self.shared.counters[self.id].handler_panics, 1);
            self.shared
                .failures
                .handler_panicked(slot.id, &*payload, self.id);
        }
        self.ran(index);
        cost
    }

    /// The bookkeeping after the actor at `index` ran a message (or discarded it).
    fn ran(&mut self, index: u32) {
        let plain = matches!(self.actors.slot_mut(index).role, Role::Plain);
        // Released after the handler's sends were counted (see `Outbound::send`).
        mark_handled(&self.shared.counters[self.id], 1);
        if !plain {
            self.after_run(index);
        }
        self.dispatch_local();
    }

    /// Dual-mode bookkeeping after a lessor or lessee ran a message.
    fn after_run(&mut self, index: u32) {
        let slot = self.actors.slot_mut(index);
        match &mut slot.role {
            Role::Lessee(lessee) => {
                if lessee.ran(slot.mailbox.is_empty()) {
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

    /// Sends every timer due by now; returns how many fired. `estimate` is the turn's
    /// start, which may be interpolated (see [`idle`](Self::idle)) and run ahead of the
    /// clock after the shard lost its CPU while polling: a timer fires only once a clock
    /// reading says it is due, so that no handler sees its timer before the time it asked
    /// for (an actor that tells its own timers from wake-ups by the clock, like a source
    /// partition, would otherwise wait for a timer that already came). The clock is read
    /// only when the estimate says a timer is due.
    fn fire_timers(&mut self, estimate: Nanos) -> usize {
        if self.next_timer().is_none_or(|at| at > estimate) {
            return 0;
        }
        let now = clock::now();
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
        let counters = &self.shared.counters[self.id];
        let Some(held) = self
            .actors
            .consolidate(index, turn_start, &mut self.out, counters)
        else {
            return;
        };
        // What the critical section sent to this shard goes before the held messages.
        self.dispatch_local();
        self.actors
            .release_held(index, held, &mut self.out, &self.shared);
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
            self.actors
                .retire_idle_lessees(now, after.as_nanos() as u64, &mut self.out);
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

    /// Publishes the metrics of lessors that changed, for `Runtime::actor_metrics`.
    /// Called at most once per `METRICS_EVERY_NS` while busy, and before parking.
    fn publish_metrics(&mut self, now: Nanos) {
        if !self.actors.lessors.metrics_changed() {
            return;
        }
        self.last_publish = now;
        let mut published = self.shared.live_metrics[self.id]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let actors = &mut self.actors;
        for id in actors.lessors.take_changed_metrics() {
            let Some(&index) = actors.index.get(&id) else {
                continue;
            };
            if let Some(slot) = &mut actors.slots[index as usize] {
                if let Role::Lessor(coordinator) = &mut slot.role {
                    coordinator.publish_metrics(published.entry(id).or_default());
                }
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
