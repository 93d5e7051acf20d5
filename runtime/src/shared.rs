//! What every shard sees: the state shared by all shards and by every `Ingress` — the
//! actor-to-shard router, the operator table, the shard tunables, the outside intakes,
//! the doorbells and counters, and the scheduling tables.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::dual::{ActorMetrics, Packet, ScaleChange, ScaleError, StateKind};
use crate::envelope::{ActorId, AppId, Envelope, OperatorId, PerOperator, ShardId};
use crate::failure::Failures;
use crate::mesh::Doorbell;
use crate::scheduling::{self, CostTable, SchedulingPolicy, UsageTable};
use crate::stats::ShardCounters;

/// Tunables every shard reads.
#[derive(Clone, Debug)]
pub(crate) struct ShardConfig {
    pub(crate) spin_budget: Duration,
    /// See [`crate::turn`].
    pub(crate) turn_budget_ns: u64,
    pub(crate) park_timeout: Duration,
    pub(crate) idle_deactivation: Option<Duration>,
    pub(crate) backlog_high_water: usize,
    /// Messages a shard's mailboxes may hold before it stops taking more from its
    /// inbound rings and intake (see the module doc of `shard`).
    pub(crate) mailbox_high_water: u64,
    pub(crate) handler_warning_ns: u64,
}

/// The one place that decides which shard runs a message: the target's home shard.
///
/// An operator's partitions go round the shards in turn, from a first shard chosen by a
/// stable hash of `(app, operator)`: partitions `p` and `p + 1` of one operator never
/// share a shard while there are shards left, so an operator with as many partitions as
/// there are shards puts one on each, and different operators start on different shards.
#[derive(Clone, Debug)]
pub(crate) struct ShardRouter {
    shards: u64,
}

impl ShardRouter {
    #[inline]
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: shards as u64,
        }
    }

    #[inline]
    pub(crate) fn route(&self, target: &ActorId) -> ShardId {
        let operator = ActorId::new(target.app, target.operator, 0).stable_hash();
        // Multiply-shift range reduction for the first shard: uniform like `%`, without a
        // division; the partition's step needs one (a handful of cycles).
        let first = ((u128::from(operator) * u128::from(self.shards)) >> 64) as u64;
        ((first + u64::from(target.partition) % self.shards) % self.shards) as ShardId
    }
}

/// How each registered operator's state behaves, indexed by app and then operator: what
/// senders check (is the operator known? mergeable?) on every send, in two bounds-checked
/// indexings, not a hash. The factories themselves are the shards' (`actor::Factories`).
#[derive(Default)]
pub(crate) struct OperatorTable {
    states: PerOperator<StateKind>,
}

impl OperatorTable {
    pub(crate) fn insert(&mut self, app: AppId, operator: OperatorId, state: StateKind) {
        self.states.insert(app, operator, state);
    }

    /// How the target's operator's state behaves; `None` when it is not registered.
    #[inline]
    pub(crate) fn get(&self, target: &ActorId) -> Option<StateKind> {
        self.states.get(target).copied()
    }

    /// Per app: how many operator numbers it spans.
    pub(crate) fn operators_per_app(&self) -> Vec<usize> {
        self.states.operators_per_app()
    }
}

/// The outside intake of one shard: a bounded flume channel plus a counter of what was
/// posted, so that the shard checks one cache line instead of the channel's lock.
pub(crate) struct Intake<M> {
    pub(crate) sender: flume::Sender<Packet<M>>,
    pub(crate) posted: CachePadded<AtomicU64>,
}

/// State shared by all shards and by every `Ingress`.
pub(crate) struct Shared<M> {
    pub(crate) config: ShardConfig,
    pub(crate) router: ShardRouter,
    pub(crate) doorbells: Box<[Doorbell]>,
    pub(crate) counters: Box<[CachePadded<ShardCounters>]>,
    pub(crate) cpus: Vec<Option<usize>>,
    pub(crate) stop: AtomicBool,
    /// Stop at once, even with work left (a shutdown that ran out of time).
    pub(crate) abort: AtomicBool,
    pub(crate) intakes: Box<[Intake<M>]>,
    /// How each operator's state behaves (and which operators exist).
    pub(crate) operators: OperatorTable,
    /// The operators' factories (an `actor::Factories`), held here only so that they
    /// live as long as anything can still send, as they always have; shards activate
    /// actors through their own handle to them.
    pub(crate) _factories_alive: Arc<dyn Any + Send + Sync>,
    pub(crate) accepting: AtomicBool,
    /// Messages accepted from outside threads.
    pub(crate) accepted: CachePadded<AtomicU64>,
    /// Per shard: the last published metrics of its lessors.
    pub(crate) live_metrics: Box<[Mutex<BTreeMap<ActorId, ActorMetrics>>]>,
    /// Orders every shard's ready work.
    pub(crate) policy: Arc<dyn SchedulingPolicy>,
    /// Per app: its SLO in nanoseconds, 0 for none.
    pub(crate) slo_ns: Vec<u64>,
    /// Measured operator costs and the edges between operators.
    pub(crate) costs: CostTable,
    /// Whether handlers are timed (some app has an SLO, or the policy wants costs).
    pub(crate) measure_costs: bool,
    /// Per shard and app: busy and reserved time.
    pub(crate) usage: UsageTable,
    /// Called with each shed message (see [`RuntimeBuilder::on_shed`](crate::RuntimeBuilder::on_shed)).
    pub(crate) shed_hooks: Vec<ShedHook<M>>,
    /// Which apps failed (a handler panicked; see [`crate::failure`]).
    pub(crate) failures: Failures,
    /// Called with each message discarded because its app failed (see
    /// [`RuntimeBuilder::on_discard`](crate::RuntimeBuilder::on_discard)).
    pub(crate) discard_hooks: Vec<ShedHook<M>>,
}

/// A hook called with each shed (or discarded) message.
pub(crate) type ShedHook<M> = Arc<dyn Fn(&Envelope<M>) + Send + Sync>;

impl<M> Shared<M> {
    pub(crate) fn shards(&self) -> usize {
        self.doorbells.len()
    }

    /// Whether the target's operator has mergeable state.
    #[inline]
    pub(crate) fn is_mergeable(&self, target: &ActorId) -> bool {
        self.operators.get(target) == Some(StateKind::Mergeable)
    }

    #[inline]
    pub(crate) fn knows_operator(&self, target: &ActorId) -> bool {
        self.operators.get(target).is_some()
    }

    /// Whether a lessee for `actor` may be asked for; its home shard if so. The lessor
    /// checks the rest (an existing lessee, a lessee to retire) when it applies the change.
    pub(crate) fn check_scale(
        &self,
        actor: ActorId,
        change: ScaleChange,
    ) -> Result<ShardId, ScaleError> {
        let Some(state) = self.operators.get(&actor) else {
            return Err(ScaleError::UnknownOperator(actor));
        };
        let home = self.router.route(&actor);
        let shard = match change {
            ScaleChange::Add(shard) | ScaleChange::Remove(shard) => shard,
        };
        if shard >= self.shards() {
            return Err(ScaleError::NoSuchShard {
                shard,
                shards: self.shards(),
            });
        }
        if let ScaleChange::Add(_) = change {
            if state == StateKind::Exclusive {
                return Err(ScaleError::Exclusive(actor));
            }
            if shard == home {
                return Err(ScaleError::HomeShard { actor, shard });
            }
        }
        Ok(home)
    }

    /// The SLO of `app` in nanoseconds (0: none).
    #[inline]
    pub(crate) fn slo_ns(&self, app: AppId) -> u64 {
        self.slo_ns.get(usize::from(app)).copied().unwrap_or(0)
    }

    /// Stamps the start deadline `t + L − C(o)` on a message for an app with an SLO.
    #[inline]
    pub(crate) fn stamp_deadline(&self, envelope: &mut Envelope<M>) {
        if let Some(&slo) = self.slo_ns.get(usize::from(envelope.target.app)) {
            if slo > 0 {
                envelope.ctx.deadline = scheduling::deadline(
                    envelope.ctx.ingress,
                    slo,
                    self.costs.path_ns(&envelope.target),
                );
            }
        }
    }

    #[inline]
    pub(crate) fn intake_posted(&self, shard: ShardId) -> u64 {
        self.intakes[shard].posted.load(Ordering::Acquire)
    }

    /// Messages created (accepted from outside, or sent by handlers) and messages handled.
    pub(crate) fn totals(&self) -> (u64, u64) {
        let mut created = self.accepted.load(Ordering::SeqCst);
        let mut handled = 0;
        for counters in self.counters.iter() {
            created += counters.msgs_out.load(Ordering::SeqCst);
            handled += counters.handled.load(Ordering::SeqCst);
        }
        (created, handled)
    }
}

#[cfg(test)]
impl<M: 'static> Shared<M> {
    /// The shared state of `shards` shards that do not run, for driving a shard's parts
    /// directly: operator `(0, 0)` is registered as mergeable, the order is round-robin,
    /// and nothing is measured.
    pub(crate) fn for_tests(shards: usize) -> Self {
        let mut operators = OperatorTable::default();
        operators.insert(0, 0, StateKind::Mergeable);
        Shared {
            config: ShardConfig {
                spin_budget: Duration::ZERO,
                turn_budget_ns: crate::turn::DEFAULT.as_nanos() as u64,
                park_timeout: Duration::from_millis(1),
                idle_deactivation: None,
                backlog_high_water: 1 << 16,
                mailbox_high_water: 1 << 16,
                handler_warning_ns: u64::MAX,
            },
            router: ShardRouter::new(shards),
            doorbells: (0..shards)
                .map(|_| Doorbell::new(std::thread::current()))
                .collect(),
            counters: (0..shards).map(|_| CachePadded::default()).collect(),
            cpus: vec![None; shards],
            stop: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            intakes: (0..shards)
                .map(|_| Intake {
                    sender: flume::bounded(1).0,
                    posted: CachePadded::new(AtomicU64::new(0)),
                })
                .collect(),
            operators,
            _factories_alive: Arc::new(()),
            accepting: AtomicBool::new(true),
            accepted: CachePadded::new(AtomicU64::new(0)),
            live_metrics: (0..shards).map(|_| Mutex::default()).collect(),
            policy: Arc::new(scheduling::RoundRobin),
            slo_ns: vec![0],
            costs: CostTable::new(&[1]),
            measure_costs: false,
            usage: UsageTable::new(shards, 1),
            shed_hooks: Vec::new(),
            failures: Failures::new(1, Vec::new()),
            discard_hooks: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_partitions_spread_over_every_shard() {
        for shards in 1..=16u64 {
            let router = ShardRouter::new(shards as usize);
            for operator in 0..20 {
                let homes: std::collections::BTreeSet<ShardId> = (0..shards as u32)
                    .map(|partition| router.route(&ActorId::new(3, operator, partition)))
                    .collect();
                assert_eq!(homes.len() as u64, shards, "operator {operator}");
            }
        }
        // Different operators start on different shards.
        let router = ShardRouter::new(8);
        let firsts: std::collections::BTreeSet<ShardId> = (0..20)
            .map(|operator| router.route(&ActorId::new(0, operator, 0)))
            .collect();
        assert!(firsts.len() > 3, "{firsts:?}");
    }
}
