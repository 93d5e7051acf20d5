//! Data-plane scheduling: per-app latency targets (SLOs), each message's deadline, the
//! measured cost of operators, and the policy that orders a shard's ready work.
//!
//! # Deadlines
//!
//! Following Cameo, a message for operator `o` of an app with SLO `L`, whose event entered
//! at `t`, should start by `S = t + L − C(o)`, where `C(o)` is `o`'s own measured cost
//! plus the largest summed cost of any path from `o` to the end of the pipeline. The
//! runtime stamps `S` into [`SchedContext::deadline`] whenever a message is sent to an
//! operator of an app with an SLO (apps without one keep `Nanos::MAX`).
//!
//! Costs are measured around handlers (only while some app has an SLO or the policy asks
//! for them), smoothed as moving averages per operator, and propagated upstream along the
//! edges the runtime observes between operators (a handler of operator `a` sending to
//! operator `b`), recomputed about once a millisecond.
//!
//! # Policies
//!
//! A [`SchedulingPolicy`] decides the order in which a shard runs its ready actors: each
//! actor with ready messages is ranked by the [`priority`](SchedulingPolicy::priority) of
//! its oldest one (messages inside an actor keep their arrival order, so that per-sender
//! order and ordering keys hold). Built in: [`RoundRobin`] (ready actors take turns; the
//! default), [`Fifo`] (oldest event first: no priorities, the paper's baseline),
//! [`Edf`] (earliest deadline first) and [`Dirigo`] (deadlines, laxity admission, and
//! lessees added on other shards when a message cannot start in time, or to spare a
//! saturated shard that apps without an SLO share, retired when idle).
//! A policy returns its decisions as data ([`Admission`]); the runtime carries them out.
//!
//! ```
//! use std::time::Duration;
//! use dirigo_runtime::scheduling::Edf;
//! use dirigo_runtime::{Actor, Context, Envelope, Runtime};
//!
//! struct Work;
//! impl Actor<u32> for Work {
//!     fn receive(&mut self, ctx: &mut Context<'_, u32>, _message: Envelope<u32>) {
//!         // Every message of app 1 carries a deadline: ingress + 5 ms − measured costs.
//!         assert!(ctx.current().deadline <= ctx.current().ingress + 5_000_000);
//!     }
//! }
//!
//! let runtime = Runtime::<u32>::builder()
//!     .shards(1)
//!     .policy(Edf)
//!     .app_slo(1, Duration::from_millis(5))
//!     .operator(1, 0, |_, _| Box::new(Work) as Box<dyn Actor<u32>>)
//!     .build()
//!     .unwrap();
//! runtime.ingress().send_to(dirigo_runtime::ActorId::new(1, 0, 0), 7).unwrap();
//! runtime.shutdown();
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::envelope::{ActorId, AppId, Nanos, OperatorId, SchedContext, ShardId};

/// Orders a shard's ready work. One instance serves every shard, so methods take `&self`;
/// keep per-call work small: [`priority`](Self::priority) runs for every message.
pub trait SchedulingPolicy: Send + Sync + 'static {
    /// The policy's name, for logs and reports.
    fn name(&self) -> &str;

    /// Whether ready actors run in arrival order (`false`), or by
    /// [`priority`](Self::priority) (`true`).
    fn by_priority(&self) -> bool;

    /// The rank of an actor whose oldest ready message has this context: lower runs
    /// first; ties run in arrival order. Only called when [`by_priority`] is `true`.
    ///
    /// [`by_priority`]: Self::by_priority
    ///
    /// The default ranks by deadline; a message without one (its app has no SLO) ranks as
    /// if due [`BEST_EFFORT_HORIZON_NS`] after it entered, so best-effort work yields to
    /// deadlines but is never starved by them.
    fn priority(&self, message: &SchedContext) -> u64 {
        if message.deadline == Nanos::MAX {
            message.ingress.saturating_add(BEST_EFFORT_HORIZON_NS)
        } else {
            message.deadline
        }
    }

    /// Whether the runtime should measure handler costs for this policy even when no app
    /// has an SLO.
    fn wants_costs(&self) -> bool {
        false
    }

    /// Before a handler runs (only while costs are measured, see
    /// [`wants_costs`](Self::wants_costs)): the actor and the message's context.
    fn pre_apply(&self, actor: ActorId, message: &SchedContext) {
        let _ = (actor, message);
    }

    /// After a handler ran: the actor and the handler's cost in nanoseconds (measured
    /// only while costs are measured, see [`wants_costs`](Self::wants_costs)).
    fn post_apply(&self, actor: ActorId, cost_ns: u64) {
        let _ = (actor, cost_ns);
    }

    /// Whether [`prepare_send`](Self::prepare_send) runs for every message sent by a
    /// handler (default `false`: it costs a call per send).
    fn prepares_sends(&self) -> bool {
        false
    }

    /// On the sender's shard, before a handler's message is queued, after the runtime
    /// stamped its deadline: may adjust its scheduling context, or return `false` to shed
    /// it (it is dropped and counted as `shed`; the sender is not told). Critical
    /// messages are never shed: `false` for one of them is ignored.
    fn prepare_send(&self, target: ActorId, message: &mut SchedContext) -> bool {
        let _ = (target, message);
        true
    }

    /// About once a millisecond on every shard: housekeeping, and scale requests to
    /// carry out (refused ones are logged and counted, as for the API).
    fn on_tick(&self, view: &TickView<'_>) -> Vec<(ActorId, crate::dual::ScaleChange)> {
        let _ = view;
        Vec::new()
    }

    /// Whether the policy decides where messages for mergeable operators run
    /// ([`on_enqueue`](Self::on_enqueue)). When `false` (the default), messages run on
    /// the lessor, or on the least loaded of the lessees added through the API.
    fn admits(&self) -> bool {
        false
    }

    /// On the lessor's shard, for each message (without an ordering key) of a mergeable
    /// operator, when [`admits`](Self::admits): where it runs, and whether to ask for a
    /// lessee. The runtime carries the decision out; messages with an ordering key always
    /// go where their key maps.
    fn on_enqueue(&self, view: &AdmissionView<'_>) -> Admission {
        let _ = view;
        Admission::Local
    }

    /// Retire a lessee once it has been given nothing for this long (`None`: never).
    fn retire_idle_lessees_after(&self) -> Option<std::time::Duration> {
        None
    }
}

/// What a policy sees when it decides where a message runs. Every figure is read without
/// locks, and is an estimate.
#[derive(Debug)]
pub struct AdmissionView<'a> {
    /// Now, on the runtime clock.
    pub now: Nanos,
    /// The actor.
    pub actor: ActorId,
    /// The lessor's shard.
    pub home: ShardId,
    /// The message's scheduling context (its deadline is the latest start).
    pub message: &'a SchedContext,
    /// The operator's own measured cost per message, in nanoseconds (0: not measured yet).
    pub cost_ns: u64,
    /// Work queued on the lessor's shard ahead of this message, in nanoseconds.
    pub local_backlog_ns: u64,
    /// The actor's lessees: their shard and how many messages each has not run yet.
    pub lessees: &'a [(ShardId, u64)],
    /// Every shard: messages waiting in its mailboxes, and whether it is parked.
    pub shards: &'a [ShardLoad],
    /// Whether a change of lessees is already under way (another request is ignored).
    pub scaling: bool,
    /// The app's SLO in nanoseconds (0: none).
    pub slo_ns: u64,
    /// Whether actors of apps without an SLO are active on the lessor's shard.
    pub best_effort_here: bool,
}

/// What a policy sees on a tick.
#[derive(Debug)]
pub struct TickView<'a> {
    /// The shard ticking.
    pub shard: ShardId,
    /// Now, on the runtime clock.
    pub now: Nanos,
    /// Every shard's load.
    pub shards: &'a [ShardLoad],
}

/// The load of one shard, as a policy sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardLoad {
    /// Messages waiting in the shard's mailboxes.
    pub queued: u64,
    /// Whether the shard is parked (idle).
    pub parked: bool,
    /// Nanoseconds the shard has been busy since it started (handlers and runtime work).
    pub busy_ns: u64,
    /// The share of recent time (about the last 8 ms) the shard was busy, 0 to 1; 0 while
    /// it is parked.
    pub utilization: f64,
}

/// Where a message runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// On the lessor.
    Local,
    /// On the lessee at this position of [`AdmissionView::lessees`].
    Lessee(usize),
    /// On the lessor, and add a lessee on this shard (it takes messages after the actor's
    /// next consolidation point).
    AddLessee(ShardId),
    /// Dropped: it cannot meet its deadline (counted per shard as `shed`).
    Shed,
}

/// Deadlines plus laxity admission plus lessees (Dirigo): a message runs on the lessor if
/// the work queued ahead of it leaves it enough slack to start by its deadline (at least
/// `headroom` × SLO); otherwise on the lessee that can start it soonest; and when no
/// worker has that slack, a lessee is added on the least loaded other shard (parked
/// shards first). Lessees given nothing for `retire_after` are retired. Messages that
/// cannot meet their deadline anywhere are shed only when `shed` is set.
///
/// Apps without an SLO have no deadline to defend themselves with: under deadline order
/// they get what the apps with one leave, and a shard that an app with an SLO keeps busy
/// starves them while another shard idles. So, on a shard that hosts actors of apps
/// without an SLO, a mergeable actor of an app with one spreads its messages as if it had
/// no slack once that shard is saturated (busier than `best_effort_spread_above` lately):
/// it adds a lessee on the least busy other shard (one under half busy, parked shards
/// first) and sends its messages there while its home stays nearly that busy and busier
/// than the lessee's shard. Then its messages stay home again, and the idle lessee is
/// retired.
#[derive(Clone, Copy, Debug)]
pub struct Dirigo {
    /// Drop messages that cannot start by their deadline anywhere (off by default).
    pub shed: bool,
    /// Retire a lessee that was given nothing for this long.
    pub retire_after: std::time::Duration,
    /// The most lessees one actor gets.
    pub max_lessees: usize,
    /// Ask for a lessee once a message's slack (how long it could still wait and start by
    /// its deadline) falls below this fraction of the SLO: capacity arrives before
    /// deadlines are missed, not after.
    pub headroom: f64,
    /// Spread mergeable actors of apps with an SLO off a shard that hosts apps without one
    /// once that shard is busier than this share of the time (`None`: never; default 0.9).
    pub best_effort_spread_above: Option<f64>,
}

impl Default for Dirigo {
    fn default() -> Self {
        Self {
            shed: false,
            retire_after: std::time::Duration::from_millis(20),
            max_lessees: usize::MAX,
            headroom: 0.75,
            best_effort_spread_above: Some(0.9),
        }
    }
}

/// A shard less busy than this can take a lessee to spare a saturated one.
const SPARE: f64 = 0.5;
/// How much less busy a lessee's shard must be than the lessor's to take a message.
const BUSIER_BY: f64 = 0.1;
/// Once spread, messages keep going to lessees until the home shard is this much below
/// the saturation threshold (so that the choice does not flip with every sample).
const SPREAD_HYSTERESIS: f64 = 0.15;

impl Dirigo {
    /// Where a message with slack to spare runs so that best-effort work on its home
    /// shard is not starved (see the type's documentation); `None`: at home.
    fn offload(&self, view: &AdmissionView<'_>) -> Option<Admission> {
        let above = self.best_effort_spread_above?;
        if view.slo_ns == 0 || !view.best_effort_here {
            return None;
        }
        let utilization =
            |shard: ShardId| view.shards.get(shard).map_or(0.0, |load| load.utilization);
        let home = utilization(view.home);
        let least_busy_lessee = view
            .lessees
            .iter()
            .enumerate()
            .map(|(position, (shard, _))| (utilization(*shard), position))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((lessee, position)) = least_busy_lessee {
            let spread = home >= above - SPREAD_HYSTERESIS && home > lessee + BUSIER_BY;
            return spread.then_some(Admission::Lessee(position));
        }
        if home < above || view.scaling || self.max_lessees == 0 {
            return None;
        }
        view.shards
            .iter()
            .enumerate()
            .filter(|(shard, load)| {
                *shard != view.home && (load.parked || load.utilization < SPARE)
            })
            .min_by(|(_, a), (_, b)| {
                (!a.parked, a.utilization)
                    .partial_cmp(&(!b.parked, b.utilization))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|(shard, _)| Admission::AddLessee(shard))
    }
}

impl SchedulingPolicy for Dirigo {
    fn name(&self) -> &str {
        "dirigo"
    }

    fn by_priority(&self) -> bool {
        true
    }

    fn wants_costs(&self) -> bool {
        true
    }

    fn admits(&self) -> bool {
        true
    }

    fn on_enqueue(&self, view: &AdmissionView<'_>) -> Admission {
        let deadline = i128::from(view.message.deadline);
        let now = i128::from(view.now);
        // How long a message could still wait and start by its deadline, behind `backlog`.
        let slack = |backlog: u64| deadline - now - i128::from(backlog);
        let headroom = (view.slo_ns as f64 * self.headroom) as i128;
        let local = slack(view.local_backlog_ns);
        if local >= headroom {
            return self.offload(view).unwrap_or(Admission::Local);
        }
        // Short of slack. Unless the work queued here is what eats it (the message may
        // simply have arrived late), another worker would not start it any sooner.
        let queueing = view.local_backlog_ns as f64 >= view.slo_ns as f64 * (1.0 - self.headroom);
        if !queueing && local >= 0 {
            return Admission::Local;
        }
        // The lessee that can start it soonest.
        let best = view
            .lessees
            .iter()
            .enumerate()
            .map(|(position, (_, queued))| (queued.saturating_mul(view.cost_ns), position))
            .min();
        let lessee_slack = best.map(|(backlog, _)| slack(backlog));
        if let (Some((_, position)), Some(lessee)) = (best, lessee_slack) {
            if lessee >= headroom || (lessee >= 0 && lessee > local) {
                return Admission::Lessee(position);
            }
        }
        // Every worker is short of headroom: ask for one more (this message runs here).
        if !view.scaling && view.lessees.len() < self.max_lessees {
            let candidate = view
                .shards
                .iter()
                .enumerate()
                .filter(|(shard, _)| {
                    *shard != view.home && !view.lessees.iter().any(|(lessee, _)| lessee == shard)
                })
                .min_by_key(|(_, load)| (!load.parked, load.queued));
            if let Some((shard, _)) = candidate {
                return Admission::AddLessee(shard);
            }
        }
        if local >= 0 {
            return Admission::Local;
        }
        if self.shed && lessee_slack.is_none_or(|lessee| lessee < 0) {
            return Admission::Shed;
        }
        match (best, lessee_slack) {
            (Some((_, position)), Some(lessee)) if lessee > local => Admission::Lessee(position),
            _ => Admission::Local,
        }
    }

    fn retire_idle_lessees_after(&self) -> Option<std::time::Duration> {
        Some(self.retire_after)
    }
}

/// Actors take turns in the order they became ready, one message per turn: every actor
/// with work gets the shard in rotation. The default: the cheapest order to keep.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundRobin;

impl SchedulingPolicy for RoundRobin {
    fn name(&self) -> &str {
        "round-robin"
    }

    fn by_priority(&self) -> bool {
        false
    }
}

/// Oldest event first, whatever its app: no priorities (the paper's baseline). Ranks each
/// ready actor by the ingress time of its oldest message.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fifo;

impl SchedulingPolicy for Fifo {
    fn name(&self) -> &str {
        "fifo"
    }

    fn by_priority(&self) -> bool {
        true
    }

    fn priority(&self, message: &SchedContext) -> u64 {
        message.ingress
    }
}

/// How long after it entered a message without a deadline ranks as due, for the
/// deadline-ordered policies: one second. Apps without an SLO get the CPU that apps with
/// one leave, and at worst wait this long before they compete with fresh deadlines.
pub const BEST_EFFORT_HORIZON_NS: Nanos = 1_000_000_000;

/// Earliest deadline first across actors (messages without a deadline rank as due
/// [`BEST_EFFORT_HORIZON_NS`] after they entered).
#[derive(Clone, Copy, Debug, Default)]
pub struct Edf;

impl SchedulingPolicy for Edf {
    fn name(&self) -> &str {
        "edf"
    }

    fn by_priority(&self) -> bool {
        true
    }
}

/// A shard's actors with ready work: in arrival order, or ranked by priority.
pub(crate) enum ReadyQueue {
    Arrival(VecDeque<u32>),
    Ranked {
        heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
        /// Arrival stamps, so equal ranks run in arrival order.
        next: u64,
    },
}

impl ReadyQueue {
    pub(crate) fn new(by_priority: bool) -> Self {
        if by_priority {
            Self::Ranked {
                heap: BinaryHeap::new(),
                next: 0,
            }
        } else {
            Self::Arrival(VecDeque::new())
        }
    }

    pub(crate) fn is_ranked(&self) -> bool {
        matches!(self, Self::Ranked { .. })
    }

    /// Queues actor `index`, whose oldest ready message has rank `rank` (ignored in
    /// arrival order).
    #[inline]
    pub(crate) fn push(&mut self, index: u32, rank: u64) {
        match self {
            Self::Arrival(queue) => queue.push_back(index),
            Self::Ranked { heap, next } => {
                heap.push(Reverse((rank, *next, index)));
                *next += 1;
            }
        }
    }

    /// Queues actor `index` ahead of everything else.
    pub(crate) fn push_first(&mut self, index: u32) {
        match self {
            Self::Arrival(queue) => queue.push_front(index),
            Self::Ranked { heap, .. } => heap.push(Reverse((0, 0, index))),
        }
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<u32> {
        match self {
            Self::Arrival(queue) => queue.pop_front(),
            Self::Ranked { heap, .. } => heap.pop().map(|Reverse((_, _, index))| index),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Self::Arrival(queue) => queue.is_empty(),
            Self::Ranked { heap, .. } => heap.is_empty(),
        }
    }

    /// Moves actor `index` to the front if it was the last one queued (arrival order
    /// only: ranked queues already order old work by its rank).
    pub(crate) fn promote_last(&mut self, index: u32) {
        if let Self::Arrival(queue) = self {
            if queue.back() == Some(&index) {
                queue.pop_back();
                queue.push_front(index);
            }
        }
    }
}

/// Measured costs per operator, and the edges seen between operators.
pub(crate) struct CostTable {
    /// Indexed by app, then operator: own cost and path cost, in nanoseconds.
    apps: Vec<Vec<OperatorCost>>,
    /// `(app, from, to)` for every operator-to-operator send seen.
    edges: Mutex<BTreeSet<(AppId, OperatorId, OperatorId)>>,
}

#[derive(Default)]
struct OperatorCost {
    own_ns: AtomicU64,
    path_ns: AtomicU64,
}

/// The measured cost of one operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperatorCosts {
    /// The app.
    pub app: AppId,
    /// The operator.
    pub operator: OperatorId,
    /// Its own handler cost (moving average), in nanoseconds.
    pub own_ns: u64,
    /// Its own cost plus the costliest path downstream of it, in nanoseconds: `C(o)`.
    pub path_ns: u64,
}

impl CostTable {
    /// A table for operators `0..operators[app]` of each app.
    pub(crate) fn new(operators: &[usize]) -> Self {
        Self {
            apps: operators
                .iter()
                .map(|&count| (0..count).map(|_| OperatorCost::default()).collect())
                .collect(),
            edges: Mutex::default(),
        }
    }

    fn cost(&self, app: AppId, operator: OperatorId) -> Option<&OperatorCost> {
        self.apps.get(usize::from(app))?.get(usize::from(operator))
    }

    /// The own cost of the actor's operator.
    #[inline]
    pub(crate) fn own_ns(&self, actor: &ActorId) -> u64 {
        self.cost(actor.app, actor.operator)
            .map_or(0, |cost| cost.own_ns.load(Ordering::Relaxed))
    }

    /// `C(o)` of the actor's operator.
    #[inline]
    pub(crate) fn path_ns(&self, actor: &ActorId) -> u64 {
        self.cost(actor.app, actor.operator)
            .map_or(0, |cost| cost.path_ns.load(Ordering::Relaxed))
    }

    /// Folds one measured handler cost into the operator's moving average (weight 1/8).
    /// Shards update without locks; a lost update between two shards only delays the
    /// average by one sample.
    pub(crate) fn record(&self, actor: &ActorId, cost_ns: u64) {
        if let Some(cost) = self.cost(actor.app, actor.operator) {
            let old = cost.own_ns.load(Ordering::Relaxed);
            let new = if old == 0 {
                cost_ns
            } else {
                old - old / 8 + cost_ns / 8
            };
            cost.own_ns.store(new.max(1), Ordering::Relaxed);
        }
    }

    /// Adds edges seen by a shard.
    pub(crate) fn add_edges(
        &self,
        seen: impl IntoIterator<Item = (AppId, OperatorId, OperatorId)>,
    ) {
        let mut edges = self
            .edges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        edges.extend(seen);
    }

    /// Recomputes every operator's path cost from own costs and edges. Cycles in the
    /// observed graph are cut where a path would revisit an operator.
    pub(crate) fn refresh_paths(&self) {
        let edges: Vec<(AppId, OperatorId, OperatorId)> = self
            .edges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        for (app, operators) in self.apps.iter().enumerate() {
            let app = app as AppId;
            let successors = |operator: OperatorId| {
                edges
                    .iter()
                    .filter(move |(a, from, _)| *a == app && *from == operator)
                    .map(|(_, _, to)| *to)
            };
            let mut memo: Vec<Option<u64>> = vec![None; operators.len()];
            for operator in 0..operators.len() {
                let mut on_path = vec![false; operators.len()];
                let cost = path(
                    operator as OperatorId,
                    operators,
                    &successors,
                    &mut memo,
                    &mut on_path,
                );
                operators[operator].path_ns.store(cost, Ordering::Relaxed);
            }
        }
    }

    /// Every operator's costs.
    pub(crate) fn snapshot(&self) -> Vec<OperatorCosts> {
        let mut all = Vec::new();
        for (app, operators) in self.apps.iter().enumerate() {
            for (operator, cost) in operators.iter().enumerate() {
                all.push(OperatorCosts {
                    app: app as AppId,
                    operator: operator as OperatorId,
                    own_ns: cost.own_ns.load(Ordering::Relaxed),
                    path_ns: cost.path_ns.load(Ordering::Relaxed),
                });
            }
        }
        all
    }
}

fn path<I: Iterator<Item = OperatorId>>(
    operator: OperatorId,
    operators: &[OperatorCost],
    successors: &impl Fn(OperatorId) -> I,
    memo: &mut [Option<u64>],
    on_path: &mut [bool],
) -> u64 {
    let index = usize::from(operator);
    if index >= operators.len() || on_path[index] {
        return 0;
    }
    if let Some(known) = memo[index] {
        return known;
    }
    on_path[index] = true;
    let downstream = successors(operator)
        .map(|next| path(next, operators, successors, memo, on_path))
        .max()
        .unwrap_or(0);
    on_path[index] = false;
    let total = operators[index].own_ns.load(Ordering::Relaxed) + downstream;
    memo[index] = Some(total);
    total
}

/// What an app used: CPU time in its handlers, and shards it occupied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppUsage {
    /// The app.
    pub app: AppId,
    /// Nanoseconds its handlers ran, on all shards (measured while costs are measured).
    pub busy_ns: u64,
    /// Shard-nanoseconds reserved: for each shard, how long at least one of the app's
    /// actors (a lessor or a lessee) was active there, summed over shards.
    pub reserved_ns: u64,
}

/// One shard's usage counters for one app; written by that shard only.
#[derive(Default)]
struct UsageCell {
    busy_ns: AtomicU64,
    /// Closed intervals of occupation.
    reserved_ns: AtomicU64,
    /// Start of the open interval (`0`: the app has no actor on the shard now).
    open_since: AtomicU64,
}

/// Per shard and app: busy and reserved time.
pub(crate) struct UsageTable {
    rows: Box<[Box<[UsageCell]>]>,
}

impl UsageTable {
    pub(crate) fn new(shards: usize, apps: usize) -> Self {
        Self {
            rows: (0..shards)
                .map(|_| (0..apps).map(|_| UsageCell::default()).collect())
                .collect(),
        }
    }

    fn cell(&self, shard: usize, app: AppId) -> Option<&UsageCell> {
        self.rows.get(shard)?.get(usize::from(app))
    }

    /// Adds handler time (single writer: the shard).
    #[inline]
    pub(crate) fn busy(&self, shard: usize, app: AppId, ns: u64) {
        if let Some(cell) = self.cell(shard, app) {
            let busy = &cell.busy_ns;
            busy.store(busy.load(Ordering::Relaxed) + ns, Ordering::Relaxed);
        }
    }

    /// The app's first actor on the shard became active.
    pub(crate) fn occupy(&self, shard: usize, app: AppId, now: Nanos) {
        if let Some(cell) = self.cell(shard, app) {
            cell.open_since.store(now.max(1), Ordering::Release);
        }
    }

    /// The app's last actor on the shard went away.
    pub(crate) fn vacate(&self, shard: usize, app: AppId, now: Nanos) {
        if let Some(cell) = self.cell(shard, app) {
            let since = cell.open_since.swap(0, Ordering::AcqRel);
            if since > 0 {
                let reserved = &cell.reserved_ns;
                reserved.store(
                    reserved.load(Ordering::Relaxed) + now.saturating_sub(since),
                    Ordering::Release,
                );
            }
        }
    }

    /// Every app's usage until `now`.
    pub(crate) fn snapshot(&self, now: Nanos) -> Vec<AppUsage> {
        let apps = self.rows.first().map_or(0, |row| row.len());
        (0..apps)
            .map(|app| {
                let mut usage = AppUsage {
                    app: app as AppId,
                    ..AppUsage::default()
                };
                for row in self.rows.iter() {
                    let cell = &row[app];
                    usage.busy_ns += cell.busy_ns.load(Ordering::Relaxed);
                    usage.reserved_ns += cell.reserved_ns.load(Ordering::Acquire);
                    let since = cell.open_since.load(Ordering::Acquire);
                    if since > 0 {
                        usage.reserved_ns += now.saturating_sub(since);
                    }
                }
                usage
            })
            .collect()
    }
}

/// The Cameo start deadline `t + L − C(o)` (saturating at the clock's ends).
#[inline]
pub(crate) fn deadline(event_time: Nanos, slo_ns: u64, path_ns: u64) -> Nanos {
    event_time.saturating_add(slo_ns).saturating_sub(path_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_effort_messages_rank_as_due_a_horizon_after_they_entered() {
        let best_effort = SchedContext::at(5);
        assert_eq!(Edf.priority(&best_effort), 5 + BEST_EFFORT_HORIZON_NS);
        let due = SchedContext {
            ingress: 5,
            deadline: 10,
        };
        assert_eq!(Edf.priority(&due), 10);
        assert_eq!(
            Dirigo::default().priority(&best_effort),
            5 + BEST_EFFORT_HORIZON_NS
        );
        // An old enough best-effort message goes before a fresh deadline.
        let old = SchedContext::at(1);
        let fresh = SchedContext {
            ingress: 2 * BEST_EFFORT_HORIZON_NS,
            deadline: 2 * BEST_EFFORT_HORIZON_NS + 1_000,
        };
        assert!(Edf.priority(&old) < Edf.priority(&fresh));
    }

    /// A message with plenty of slack: due 20 ms after it entered, at time 0.
    const ROOMY: SchedContext = SchedContext {
        ingress: 0,
        deadline: 20_000_000,
    };

    /// An admission view for [`ROOMY`] (SLO 20 ms, nothing ahead).
    fn relaxed<'a>(
        shards: &'a [ShardLoad],
        lessees: &'a [(ShardId, u64)],
        best_effort_here: bool,
    ) -> AdmissionView<'a> {
        AdmissionView {
            now: 0,
            actor: ActorId::new(1, 0, 0),
            home: 0,
            message: &ROOMY,
            cost_ns: 10_000,
            local_backlog_ns: 0,
            lessees,
            shards,
            scaling: false,
            slo_ns: 20_000_000,
            best_effort_here,
        }
    }

    fn load(utilization: f64, parked: bool) -> ShardLoad {
        ShardLoad {
            utilization,
            parked,
            ..ShardLoad::default()
        }
    }

    #[test]
    fn dirigo_spreads_a_saturated_shard_that_hosts_best_effort_apps() {
        let policy = Dirigo::default();
        let saturated = [load(0.97, false), load(0.1, false), load(0.3, false)];
        // Saturated home, best-effort actors there: a lessee on the least busy shard.
        let view = relaxed(&saturated, &[], true);
        assert_eq!(policy.on_enqueue(&view), Admission::AddLessee(1));
        // A parked shard comes first.
        let parked = [load(0.97, false), load(0.1, false), load(0.0, true)];
        let view = relaxed(&parked, &[], true);
        assert_eq!(policy.on_enqueue(&view), Admission::AddLessee(2));
        // No best-effort app on the shard: its own slack is what counts.
        let view = relaxed(&saturated, &[], false);
        assert_eq!(policy.on_enqueue(&view), Admission::Local);
        // Turned off.
        let off = Dirigo {
            best_effort_spread_above: None,
            ..Dirigo::default()
        };
        let view = relaxed(&saturated, &[], true);
        assert_eq!(off.on_enqueue(&view), Admission::Local);
        // No shard to spare: stays home.
        let all_busy = [load(0.97, false), load(0.8, false)];
        let view = relaxed(&all_busy, &[], true);
        assert_eq!(policy.on_enqueue(&view), Admission::Local);
        // Not saturated: its own slack is what counts.
        let calm = [load(0.6, false), load(0.1, false)];
        let view = relaxed(&calm, &[], true);
        assert_eq!(policy.on_enqueue(&view), Admission::Local);
        // A change already under way: no second request.
        let mut view = relaxed(&saturated, &[], true);
        view.scaling = true;
        assert_eq!(policy.on_enqueue(&view), Admission::Local);
    }

    #[test]
    fn dirigo_sends_to_a_lessee_only_while_home_is_busier() {
        let policy = Dirigo::default();
        let lessees = [(2, 0), (1, 5)];
        // Home busier than the least busy lessee's shard (shard 1): there.
        let shards = [load(0.9, false), load(0.4, false), load(0.7, false)];
        let view = relaxed(&shards, &lessees, true);
        assert_eq!(policy.on_enqueue(&view), Admission::Lessee(1));
        // Balanced within the margin: home.
        let shards = [load(0.85, false), load(0.8, false), load(0.9, false)];
        let view = relaxed(&shards, &lessees, true);
        assert_eq!(policy.on_enqueue(&view), Admission::Local);
        // Home no longer near saturation: home, so that the lessee goes idle and retires.
        let shards = [load(0.7, false), load(0.1, false), load(0.7, false)];
        let view = relaxed(&shards, &lessees, true);
        assert_eq!(policy.on_enqueue(&view), Admission::Local);
        // Nearly saturated still (within the hysteresis): the lessee.
        let shards = [load(0.8, false), load(0.1, false), load(0.7, false)];
        let view = relaxed(&shards, &lessees, true);
        assert_eq!(policy.on_enqueue(&view), Admission::Lessee(1));
    }

    #[test]
    fn path_costs_follow_the_costliest_downstream_path() {
        // 0 → 1 → 3 and 0 → 2 → 3, with 2 costlier than 1; plus a cycle 3 → 0.
        let table = CostTable::new(&[4]);
        for (operator, cost) in [(0, 100), (1, 10), (2, 50), (3, 7)] {
            table.record(&ActorId::new(0, operator, 0), cost);
        }
        table.add_edges([(0, 0, 1), (0, 0, 2), (0, 1, 3), (0, 2, 3), (0, 3, 0)]);
        table.refresh_paths();
        let paths: Vec<u64> = table.snapshot().iter().map(|c| c.path_ns).collect();
        assert_eq!(paths, [157, 17, 57, 7]);
    }

    #[test]
    fn costs_are_smoothed() {
        let table = CostTable::new(&[1]);
        let actor = ActorId::new(0, 0, 0);
        table.record(&actor, 800);
        table.record(&actor, 1600);
        assert_eq!(table.snapshot()[0].own_ns, 800 - 100 + 200);
    }

    #[test]
    fn usage_sums_busy_time_and_occupied_intervals() {
        let usage = UsageTable::new(2, 1);
        usage.busy(0, 0, 300);
        usage.busy(1, 0, 200);
        usage.occupy(0, 0, 1_000);
        usage.vacate(0, 0, 4_000);
        usage.occupy(1, 0, 2_000);
        assert_eq!(
            usage.snapshot(10_000),
            [AppUsage {
                app: 0,
                busy_ns: 500,
                reserved_ns: 3_000 + 8_000
            }]
        );
    }

    #[test]
    fn deadlines_saturate() {
        assert_eq!(deadline(1_000, 500, 200), 1_300);
        assert_eq!(deadline(100, 10, 1_000), 0);
        assert_eq!(deadline(Nanos::MAX - 1, 10, 0), Nanos::MAX);
    }

    #[test]
    fn ranked_queues_run_lowest_rank_first_and_ties_in_arrival_order() {
        let mut queue = ReadyQueue::new(true);
        queue.push(1, 50);
        queue.push(2, 10);
        queue.push(3, 50);
        queue.push_first(4);
        let order: Vec<u32> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, [4, 2, 1, 3]);
        let mut queue = ReadyQueue::new(false);
        queue.push(1, 50);
        queue.push(2, 10);
        queue.promote_last(2);
        assert_eq!(
            std::iter::from_fn(|| queue.pop()).collect::<Vec<_>>(),
            [2, 1]
        );
    }
}
