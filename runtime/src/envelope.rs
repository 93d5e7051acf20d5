//! Messages in flight: who they are for, what kind they are, and their scheduling context.

use std::fmt;

/// The application an actor belongs to.
pub type AppId = u16;
/// An operator of an application.
pub type OperatorId = u16;
/// A partition of an operator.
pub type PartitionId = u32;
/// A shard, by its index in the runtime (`0..shards`).
pub type ShardId = usize;

/// The address of a virtual actor: one partition of one operator of one application.
///
/// A virtual actor always exists logically; the runtime activates it on its first message.
/// It packs into 8 bytes, so that an envelope's header stays at 40 bytes and an envelope
/// with a payload of up to 16 bytes fills one cache line in a ring slot. The fields are
/// laid out (low to high) as in [`ActorId::packed`], so comparing and hashing addresses
/// compiles to single 8-byte loads. Addresses order by app, then operator, then partition.
#[derive(Clone, Copy, Eq, Debug, Default)]
#[repr(C)]
pub struct ActorId {
    /// The partition of the operator.
    pub partition: PartitionId,
    /// The operator inside the application.
    pub operator: OperatorId,
    /// The application.
    pub app: AppId,
}

impl Ord for ActorId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.packed().cmp(&other.packed())
    }
}

impl PartialOrd for ActorId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl ActorId {
    /// The actor for `partition` of `operator` in `app`.
    pub const fn new(app: AppId, operator: OperatorId, partition: PartitionId) -> Self {
        Self {
            app,
            operator,
            partition,
        }
    }

    /// A hash of the address that is the same in every run and on every machine, so that
    /// an actor's home shard never depends on the process.
    #[inline]
    pub fn stable_hash(&self) -> u64 {
        mix64(self.packed())
    }

    /// The address as one integer: app, operator and partition side by side.
    #[inline]
    pub const fn packed(&self) -> u64 {
        (self.app as u64) << 48 | (self.operator as u64) << 32 | self.partition as u64
    }
}

impl PartialEq for ActorId {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.packed() == other.packed()
    }
}

impl std::hash::Hash for ActorId {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.packed());
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.app, self.operator, self.partition)
    }
}

/// splitmix64's finalizer: a fixed, well-mixing 64-bit permutation.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Who produced a message.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum MessageKind {
    /// Produced by an operator (or by ingress on its behalf).
    #[default]
    User,
    /// A user message that must run sequentially on the lessor, after every message that
    /// arrived before it and before every one after it, on the actor's consolidated state
    /// (a window end, a watermark, a read of the whole state). See [`crate::dual`].
    Critical,
    /// Produced by the runtime itself (scaling, state transfer, synchronization).
    Control,
}

/// A point in time, in nanoseconds on the runtime's monotonic clock ([`crate::clock`]).
pub type Nanos = u64;

/// What the scheduler knows about a message.
///
/// The application is the target's (`Envelope::app`). Handlers' outputs inherit the
/// context of the message being handled, so the ingress time of an event follows it
/// through the pipeline.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SchedContext {
    /// When the event entered the runtime (its intended send time, for open-loop load).
    pub ingress: Nanos,
    /// The latest time the message should start; `Nanos::MAX` when it has none.
    pub deadline: Nanos,
}

impl SchedContext {
    /// A context for an event that entered at `ingress`, with no deadline.
    pub const fn at(ingress: Nanos) -> Self {
        Self {
            ingress,
            deadline: Nanos::MAX,
        }
    }
}

/// A message in flight.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope<M> {
    /// The actor that will handle it.
    pub target: ActorId,
    /// The actor that sent it; `None` when it came from outside the runtime.
    pub source: Option<ActorId>,
    /// User or control.
    pub kind: MessageKind,
    /// Scheduling context.
    pub ctx: SchedContext,
    /// What the message carries.
    pub payload: M,
}

impl<M> Envelope<M> {
    /// A user message for `target`, entering now, with no deadline.
    pub fn user(target: ActorId, payload: M) -> Self {
        Self {
            target,
            source: None,
            kind: MessageKind::User,
            ctx: SchedContext::at(crate::clock::now()),
            payload,
        }
    }

    /// A critical message for `target`, entering now (see [`MessageKind::Critical`]).
    pub fn critical(target: ActorId, payload: M) -> Self {
        Self {
            kind: MessageKind::Critical,
            ..Self::user(target, payload)
        }
    }

    /// The same message, as sent by `source` (the input a barrier counts it under).
    pub fn from_source(mut self, source: ActorId) -> Self {
        self.source = Some(source);
        self
    }

    /// Whether the message is critical.
    #[inline]
    pub fn is_critical(&self) -> bool {
        self.kind == MessageKind::Critical
    }

    /// The application the message belongs to.
    #[inline]
    pub fn app(&self) -> AppId {
        self.target.app
    }
}

/// Why a message could not be sent. The message is handed back.
pub enum SendError<M> {
    /// No factory is registered for the target's operator.
    UnknownOperator(Envelope<M>),
    /// The runtime no longer accepts messages from outside (it is shutting down).
    Closed(Envelope<M>),
    /// The shard's intake is full (only from `Ingress::try_send`).
    Full(Envelope<M>),
}

impl<M> SendError<M> {
    /// The message that was not sent.
    pub fn into_envelope(self) -> Envelope<M> {
        match self {
            Self::UnknownOperator(envelope) | Self::Closed(envelope) | Self::Full(envelope) => {
                envelope
            }
        }
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownOperator(envelope) => write!(
                f,
                "no operator {}/{} is registered (message for actor {})",
                envelope.target.app, envelope.target.operator, envelope.target
            ),
            Self::Closed(envelope) => write!(
                f,
                "the runtime is shutting down and accepts no new messages (message for actor {})",
                envelope.target
            ),
            Self::Full(envelope) => {
                write!(f, "intake full (message for actor {})", envelope.target)
            }
        }
    }
}

impl<M> std::error::Error for SendError<M> {}

/// Values per registered operator, indexed by app and then operator: two bounds-checked
/// indexings, not a hash (it is looked up on every send and every activation).
pub(crate) struct PerOperator<T> {
    apps: Vec<Vec<Option<T>>>,
}

impl<T> Default for PerOperator<T> {
    fn default() -> Self {
        Self { apps: Vec::new() }
    }
}

impl<T> PerOperator<T> {
    /// Sets the value of `(app, operator)`, growing the table as needed.
    pub(crate) fn insert(&mut self, app: AppId, operator: OperatorId, value: T) {
        let (app, operator) = (usize::from(app), usize::from(operator));
        if self.apps.len() <= app {
            self.apps.resize_with(app + 1, Vec::new);
        }
        let operators = &mut self.apps[app];
        if operators.len() <= operator {
            operators.resize_with(operator + 1, || None);
        }
        operators[operator] = Some(value);
    }

    /// The value of the target's operator; `None` when it has none.
    #[inline]
    pub(crate) fn get(&self, target: &ActorId) -> Option<&T> {
        self.apps
            .get(usize::from(target.app))?
            .get(usize::from(target.operator))?
            .as_ref()
    }

    /// Per app: how many operator numbers it spans.
    pub(crate) fn operators_per_app(&self) -> Vec<usize> {
        self.apps.iter().map(Vec::len).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_order_by_app_then_operator_then_partition() {
        let mut ids = vec![
            ActorId::new(1, 0, 0),
            ActorId::new(0, 2, 0),
            ActorId::new(0, 1, 9),
            ActorId::new(0, 1, 3),
        ];
        ids.sort();
        assert_eq!(
            ids,
            [
                ActorId::new(0, 1, 3),
                ActorId::new(0, 1, 9),
                ActorId::new(0, 2, 0),
                ActorId::new(1, 0, 0)
            ]
        );
    }

    #[test]
    fn envelopes_stay_compact() {
        assert_eq!(std::mem::size_of::<ActorId>(), 8);
        assert_eq!(std::mem::size_of::<Envelope<()>>(), 40);
        assert_eq!(std::mem::size_of::<Envelope<[u64; 2]>>(), 56);
    }

    #[test]
    fn stable_hash_is_fixed_and_spreads() {
        // Pinned values: a change of the hash moves every actor to another home shard.
        assert_eq!(ActorId::new(0, 0, 0).stable_hash(), 0);
        assert_eq!(ActorId::new(0, 0, 1).stable_hash(), 0x5692_161d_100b_05e5);
        assert_eq!(ActorId::new(1, 2, 3).stable_hash(), 0x9359_c0fb_0bbd_35f7);
        assert_eq!(ActorId::new(3, 5, 42).stable_hash(), 0xd739_1e78_cf81_1e00);
        let mut buckets = [0usize; 8];
        for partition in 0..8000 {
            buckets[(ActorId::new(1, 2, partition).stable_hash() % 8) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (800..1200).contains(&b)),
            "{buckets:?}"
        );
    }
}
