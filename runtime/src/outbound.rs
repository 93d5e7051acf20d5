//! What a shard sends: [`Outbound`] stages a handler's messages for actors here, and
//! queues those for other shards on one [`OutLink`] per destination — the ring producer
//! towards it, the overflow queue behind a full ring, and the doorbell ring it still owes
//! (as Seastar's per-destination `smp_message_queue`). [`Outbound::flush`] moves overflow
//! into the rings and rings the doorbells, once per turn.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashSet;

use crate::dual::{Control, Packet};
use crate::envelope::{
    ActorId, AppId, Envelope, MessageKind, Nanos, OperatorId, SendError, ShardId,
};
use crate::mesh::Producer;
use crate::shared::Shared;
use crate::stats::bump;

/// This shard's end of the way to one other shard.
pub(crate) struct OutLink<M> {
    /// The ring towards the destination (`None` for this shard itself).
    ring: Option<Producer<Packet<M>>>,
    /// Messages that found the ring full, in send order. While one waits here, later
    /// messages to that shard queue behind it.
    overflow: VecDeque<Packet<M>>,
    /// Whether the destination got messages since its doorbell was last rung.
    unrung: bool,
}

impl<M> OutLink<M> {
    #[inline(always)]
    fn ring(&mut self) -> &mut Producer<Packet<M>> {
        self.ring.as_mut().expect("remote destinations have rings")
    }
}

/// What a handler's sends go through: staged locally, or queued towards another shard.
pub(crate) struct Outbound<M> {
    pub(crate) shard: ShardId,
    pub(crate) shared: Arc<Shared<M>>,
    /// Messages for actors on this shard, dispatched right after the handler returns.
    pub(crate) local: Vec<Envelope<M>>,
    /// Control messages for this shard, handled right after the handler returns.
    pub(crate) local_controls: Vec<Control>,
    /// Messages to send later: `(when, message)`, moved into the shard's timers after the
    /// handler returns.
    pub(crate) delayed: Vec<(Nanos, Envelope<M>)>,
    /// Per destination shard: the way there.
    links: Vec<OutLink<M>>,
    /// Destinations whose overflow queue is not empty.
    dirty: Vec<ShardId>,
    /// Destinations that got messages since their doorbell was last rung (those whose
    /// link says `unrung`).
    unrung: Vec<ShardId>,
    /// Messages waiting in all overflow queues.
    pub(crate) backlog: usize,
    /// The last target sent to, and its shard: a handler that keeps sending to one actor
    /// skips the registry lookup and the hash.
    last_route: Option<(ActorId, ShardId)>,
    /// Whether messages get deadlines and operator edges are learned (some app has an
    /// SLO, or the policy wants costs).
    scheduled: bool,
    /// Whether the policy looks at every send (`SchedulingPolicy::prepare_send`).
    prepares_sends: bool,
    /// Operator-to-operator edges this shard has seen, and those not yet published.
    edges_seen: FxHashSet<(AppId, OperatorId, OperatorId)>,
    pub(crate) new_edges: Vec<(AppId, OperatorId, OperatorId)>,
}

impl<M> Outbound<M> {
    pub(crate) fn new(
        shard: ShardId,
        shared: Arc<Shared<M>>,
        rings: Vec<Option<Producer<Packet<M>>>>,
    ) -> Self {
        let shards = shared.shards();
        let shared_scheduled = shared.measure_costs;
        let shared_prepares = shared.policy.prepares_sends();
        Self {
            shard,
            shared,
            local: Vec::new(),
            local_controls: Vec::new(),
            delayed: Vec::new(),
            links: rings
                .into_iter()
                .map(|ring| OutLink {
                    ring,
                    overflow: VecDeque::new(),
                    unrung: false,
                })
                .collect(),
            dirty: Vec::with_capacity(shards),
            unrung: Vec::with_capacity(shards),
            backlog: 0,
            last_route: None,
            scheduled: shared_scheduled,
            prepares_sends: shared_prepares,
            edges_seen: FxHashSet::default(),
            new_edges: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn send(&mut self, mut envelope: Envelope<M>) -> Result<(), SendError<M>> {
        let destination = match self.last_route {
            Some((target, shard)) if target == envelope.target => shard,
            _ => {
                if !self.shared.knows_operator(&envelope.target) {
                    return Err(SendError::UnknownOperator(envelope));
                }
                let shard = self.shared.router.route(&envelope.target);
                self.last_route = Some((envelope.target, shard));
                if self.scheduled {
                    self.learn_edge(&envelope);
                }
                shard
            }
        };
        if self.scheduled {
            self.shared.stamp_deadline(&mut envelope);
        }
        // Critical messages (watermarks, barriers) are never shed: the actor's consistency
        // and every downstream frontier depend on them arriving.
        if self.prepares_sends
            && !self
                .shared
                .policy
                .prepare_send(envelope.target, &mut envelope.ctx)
            && envelope.kind == MessageKind::User
        {
            bump(&self.shared.counters[self.shard].shed, 1);
            for hook in &self.shared.shed_hooks {
                hook(&envelope);
            }
            return Ok(());
        }
        // Counted before the message can be seen anywhere: shutdown's quiescence check
        // relies on "sent" never lagging behind "handled".
        bump(&self.shared.counters[self.shard].msgs_out, 1);
        if destination == self.shard {
            self.local.push(envelope);
            return Ok(());
        }
        self.push(destination, Packet::Message(envelope));
        Ok(())
    }

    /// Notes the edge from the sending operator to the target's, for path costs.
    #[cold]
    fn learn_edge(&mut self, envelope: &Envelope<M>) {
        let Some(source) = envelope.source else {
            return;
        };
        let target = envelope.target;
        if source.app == target.app && source.operator != target.operator {
            let edge = (target.app, source.operator, target.operator);
            if self.edges_seen.insert(edge) {
                self.new_edges.push(edge);
            }
        }
    }

    /// Stages a message to send at `at`; it counts as sent now (shutdown waits for it).
    pub(crate) fn send_at(&mut self, at: Nanos, envelope: Envelope<M>) -> Result<(), SendError<M>> {
        if !self.shared.knows_operator(&envelope.target) {
            return Err(SendError::UnknownOperator(envelope));
        }
        bump(&self.shared.counters[self.shard].msgs_out, 1);
        self.delayed.push((at, envelope));
        Ok(())
    }

    /// Sends a message that was counted when it was staged (a timer that fired).
    pub(crate) fn send_counted(&mut self, mut envelope: Envelope<M>) -> Option<Envelope<M>> {
        let destination = self.shared.router.route(&envelope.target);
        if self.scheduled {
            self.shared.stamp_deadline(&mut envelope);
        }
        if destination == self.shard {
            return Some(envelope);
        }
        self.push(destination, Packet::Message(envelope));
        None
    }

    /// Passes a message already counted as sent on to `destination` (a lessee's shard).
    pub(crate) fn forward(&mut self, destination: ShardId, envelope: Envelope<M>) {
        self.push(destination, Packet::Message(envelope));
    }

    /// Sends a control message; it counts as a message until its receiver handles it.
    pub(crate) fn control(&mut self, destination: ShardId, control: Control) {
        bump(&self.shared.counters[self.shard].msgs_out, 1);
        if destination == self.shard {
            self.local_controls.push(control);
        } else {
            self.push(destination, Packet::Control(Box::new(control)));
        }
    }

    #[inline(always)]
    fn push(&mut self, destination: ShardId, packet: Packet<M>) {
        let link = &mut self.links[destination];
        let packet = if link.overflow.is_empty() {
            // Nothing waits for this shard: straight into the ring. The doorbell is rung
            // once per turn, in `flush`.
            match link.ring().try_push(packet) {
                Ok(()) => {
                    if !link.unrung {
                        link.unrung = true;
                        self.unrung.push(destination);
                    }
                    return;
                }
                Err(packet) => {
                    bump(&self.shared.counters[self.shard].ring_full, 1);
                    self.dirty.push(destination);
                    packet
                }
            }
        } else {
            packet
        };
        link.overflow.push_back(packet);
        self.backlog += 1;
    }

    /// Whether messages wait for room in a full ring.
    #[inline]
    pub(crate) fn has_overflow(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Moves overflow queues into the rings, in order, as far as they have room, and
    /// rings the doorbell of every shard that got messages since the last flush; returns
    /// how many messages moved out of overflow queues.
    pub(crate) fn flush(&mut self) -> usize {
        if self.dirty.is_empty() && self.unrung.is_empty() {
            return 0;
        }
        let counters = &self.shared.counters[self.shard];
        let mut moved = 0;
        let mut still_dirty = 0;
        for position in 0..self.dirty.len() {
            let destination = self.dirty[position];
            let link = &mut self.links[destination];
            let ring = link.ring.as_mut().expect("remote destinations have rings");
            let mut pushed = 0;
            while let Some(packet) = link.overflow.pop_front() {
                if let Err(packet) = ring.try_push(packet) {
                    link.overflow.push_front(packet);
                    bump(&counters.ring_full, 1);
                    break;
                }
                pushed += 1;
            }
            if pushed > 0 && !link.unrung {
                link.unrung = true;
                self.unrung.push(destination);
            }
            if !link.overflow.is_empty() {
                self.dirty[still_dirty] = destination;
                still_dirty += 1;
            }
            moved += pushed;
        }
        self.dirty.truncate(still_dirty);
        self.backlog -= moved;
        for destination in self.unrung.drain(..) {
            self.links[destination].unrung = false;
            if self.shared.doorbells[destination].ring() {
                bump(&counters.wakes, 1);
            }
        }
        moved
    }
}
