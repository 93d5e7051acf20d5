//! Virtual actors: the handler trait, the factories that activate actors, and the context
//! a handler runs in.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::dual::{Barrier, Control, ScaleChange, ScaleError};
/// Also reachable here, where handlers meet it.
pub use crate::envelope::SendError;
use crate::envelope::{
    ActorId, AppId, Envelope, MessageKind, Nanos, OperatorId, PerOperator, SchedContext, ShardId,
};
use crate::outbound::Outbound;
use crate::snapshot::{Snapshot, SnapshotError};

/// State an actor hands back when it is deactivated, and gets again when it is
/// reactivated. It stays on the actor's shard (reactivation happens where the actor
/// lives), so it need not be `Send`: an actor may keep shard-local things in it, or
/// hand back itself.
pub type SavedState = Box<dyn Any>;

/// One partition of one operator: handles the messages addressed to it, one at a time, on
/// its home shard.
///
/// ```
/// use dirigo_runtime::{Actor, Context, Envelope, SavedState};
///
/// /// Counts what it sees and keeps the count across deactivation.
/// struct Counter(u64);
///
/// impl Actor<u64> for Counter {
///     fn receive(&mut self, _ctx: &mut Context<'_, u64>, message: Envelope<u64>) {
///         self.0 += message.payload;
///     }
///     fn deactivate(self: Box<Self>) -> Option<SavedState> {
///         Some(Box::new(self.0))
///     }
/// }
/// ```
pub trait Actor<M>: 'static {
    /// Handles one message. Messages sent through `ctx` to other shards may leave while
    /// the handler still runs; those for this shard run after it returns.
    ///
    /// A handler that panics does not take its shard down, but it fails its app: the
    /// panic is logged and counted, and from then on every message of the app is
    /// discarded unrun (what the handler sent to other apps before it panicked is
    /// delivered). The actor is not re-created: see [`failure`](crate::failure).
    fn receive(&mut self, ctx: &mut Context<'_, M>, message: Envelope<M>);

    /// Called when the actor has been idle past the runtime's deactivation timeout (and at
    /// no other time). What it returns is handed to the factory at the next activation.
    fn deactivate(self: Box<Self>) -> Option<SavedState> {
        None
    }

    /// Mergeable operators (see [`StateKind`](crate::StateKind)): takes this worker's
    /// partial state as a snapshot, leaving the actor with empty state. Called on a lessee
    /// when its lessor consolidates; `Ok(None)` when there is nothing to hand over.
    fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
        Ok(None)
    }

    /// Mergeable operators: merges a lessee's partial state (what its
    /// [`snapshot`](Self::snapshot) returned) into this, the lessor's, state — typically by
    /// reading it in place with [`Snapshot::archived`].
    fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
        let _ = partial;
        Ok(())
    }

    /// The ordering key of a message: messages with the same key never run concurrently
    /// or out of order, lessees or not. `None` (the default): the message may run on any
    /// worker. Called on the lessor, for every message while the actor has lessees.
    fn ordering_key(&self, message: &Envelope<M>) -> Option<u64> {
        let _ = message;
        None
    }

    /// For a critical message: what it waits for (default: nothing; it runs alone).
    fn barrier(&self, message: &Envelope<M>) -> Barrier {
        let _ = message;
        Barrier::Single
    }

    /// Runs a critical section on the consolidated state: the critical messages of one
    /// barrier (one message for [`Barrier::Single`]), in arrival order. By default, each
    /// goes to [`receive`](Self::receive).
    fn critical(&mut self, ctx: &mut Context<'_, M>, messages: Vec<Envelope<M>>) {
        for message in messages {
            self.receive(ctx, message);
        }
    }
}

/// Creates the actors of one operator, on the shard where they live, when their first
/// message arrives (and again after a deactivation, with the state they saved).
///
/// Any `Fn(ActorId, Option<SavedState>) -> Box<dyn Actor<M>>` is a factory.
pub trait ActorFactory<M>: Send + Sync + 'static {
    /// Activates actor `id`; `saved` is what its last deactivation returned, if anything.
    fn activate(&self, id: ActorId, saved: Option<SavedState>) -> Box<dyn Actor<M>>;
}

impl<M, F> ActorFactory<M> for F
where
    F: Fn(ActorId, Option<SavedState>) -> Box<dyn Actor<M>> + Send + Sync + 'static,
{
    fn activate(&self, id: ActorId, saved: Option<SavedState>) -> Box<dyn Actor<M>> {
        self(id, saved)
    }
}

/// Runs user code that is not a handler and changes no state (ordering keys, barriers,
/// admission decisions): a panic there is logged and answered with `fallback`, never
/// unwinds into the shard. (Snapshots and merges change state: a panic there fails the
/// app, see `Failures::guard_state`.)
pub(crate) fn guarded<T>(actor: ActorId, what: &str, fallback: T, call: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|_| {
        tracing::error!(actor = %actor, "`{what}` panicked; using its default");
        fallback
    })
}

/// The operators' factories, indexed by app and then operator: what activation looks up,
/// in two bounds-checked indexings, not a hash. Each shard holds a handle to it; senders
/// look at the operator table in `shared` instead.
pub(crate) struct Factories<M> {
    table: PerOperator<Arc<dyn ActorFactory<M>>>,
}

impl<M> Default for Factories<M> {
    fn default() -> Self {
        Self {
            table: PerOperator::default(),
        }
    }
}

impl<M> Factories<M> {
    pub(crate) fn insert(
        &mut self,
        app: AppId,
        operator: OperatorId,
        factory: Arc<dyn ActorFactory<M>>,
    ) {
        self.table.insert(app, operator, factory);
    }

    /// The factory of the target's operator.
    pub(crate) fn get(&self, target: &ActorId) -> &dyn ActorFactory<M> {
        self.table
            .get(target)
            .map(Arc::as_ref)
            .expect("messages for unregistered operators are refused at send")
    }
}

/// What a handler can do besides changing its own state: send messages and look at the
/// runtime.
pub struct Context<'a, M> {
    pub(crate) out: &'a mut Outbound<M>,
    pub(crate) me: ActorId,
    pub(crate) current: SchedContext,
    pub(crate) epoch: u64,
}

impl<M> Context<'_, M> {
    /// The actor being run.
    pub fn me(&self) -> ActorId {
        self.me
    }

    /// The shard it runs on.
    pub fn shard(&self) -> ShardId {
        self.out.shard
    }

    /// How many shards the runtime has.
    pub fn shards(&self) -> usize {
        self.out.shared.shards()
    }

    /// The runtime's intake, for a thread outside the shards that must wake an actor
    /// (a network source's reader, when a batch it hands on arrives).
    pub fn ingress(&self) -> crate::Ingress<M>
    where
        M: Send + 'static,
    {
        crate::Ingress::new(self.out.shared.clone())
    }

    /// The shard where `actor` lives.
    pub fn home_shard(&self, actor: ActorId) -> ShardId {
        self.out.shared.router.route(&actor)
    }

    /// Whether `shard` is parked right now (a hint, read without locks).
    pub fn shard_sleeping(&self, shard: ShardId) -> bool {
        self.out.shared.doorbells[shard].is_sleeping()
    }

    /// Messages this shard has sent that still wait for room in a full ring: a source
    /// that sees this grow should produce less (backpressure).
    pub fn backlog(&self) -> usize {
        self.out.backlog
    }

    /// Whether this shard is past the point where it stops taking work from outside the
    /// runtime: its outgoing backlog (rings towards other shards are full, because those
    /// shards stopped draining them) or its own mailboxes (with what blocked lessors hold
    /// back) are past their high-water marks. Producers inside the runtime should slow down too.
    pub fn backpressured(&self) -> bool {
        let shared = &self.out.shared;
        let counters = &shared.counters[self.out.shard];
        let waiting = counters.queued.load(std::sync::atomic::Ordering::Relaxed)
            + counters.held.load(std::sync::atomic::Ordering::Relaxed);
        self.out.backlog > shared.config.backlog_high_water
            || waiting > shared.config.mailbox_high_water
    }

    /// The shard's turn budget, ns (see [`turn`](crate::turn)): work that holds the shard
    /// longer than this in one handler keeps latency-critical messages behind it waiting
    /// that long, so batches and long jobs should be cut to about this.
    pub fn turn_budget_ns(&self) -> Nanos {
        self.out.shared.config.turn_budget_ns
    }

    /// The scheduling context of the message being handled.
    pub fn current(&self) -> SchedContext {
        self.current
    }

    /// Now, on the runtime clock.
    pub fn now(&self) -> Nanos {
        crate::clock::now()
    }

    /// Sends a user message to `target`; it inherits the scheduling context of the message
    /// being handled. It leaves when the handler returns, after the messages sent before
    /// it to the same shard.
    ///
    /// Inheriting the context carries an event's ingress time (and so its deadline)
    /// through a pipeline. An actor that keeps sending to itself (a source's next turn)
    /// should send a fresh [`Envelope::user`] instead, best with [`send_at`](Self::send_at)
    /// for when it is next due: one that inherits its first message's context keeps the
    /// earliest deadline on its shard forever, and deadline-first policies would run
    /// nothing else there.
    pub fn send(&mut self, target: ActorId, payload: M) -> Result<(), SendError<M>> {
        let envelope = Envelope {
            target,
            source: Some(self.me),
            kind: MessageKind::User,
            ctx: self.current,
            payload,
        };
        self.out.send(envelope)
    }

    /// Sends a critical message to `target` (see [`MessageKind::Critical`]).
    pub fn send_critical(&mut self, target: ActorId, payload: M) -> Result<(), SendError<M>> {
        let envelope = Envelope {
            target,
            source: Some(self.me),
            kind: MessageKind::Critical,
            ctx: self.current,
            payload,
        };
        self.out.send(envelope)
    }

    /// Sends `envelope` (its source set to this actor) at time `at` on the runtime clock
    /// ([`Context::now`]) rather than now: it waits on this shard until then, without
    /// occupying it. For sources that pace themselves, and timeouts. A time in the past
    /// sends at the next turn.
    pub fn send_at(&mut self, at: Nanos, mut envelope: Envelope<M>) -> Result<(), SendError<M>> {
        envelope.source = Some(self.me);
        self.out.send_at(at, envelope)
    }

    /// How many critical sections this actor has completed before the message being
    /// handled: the same on the lessor and on every lessee, so outputs can say which
    /// stretch between critical sections they belong to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Asks for a lessee of `actor` on `shard`; it starts at the actor's next
    /// consolidation point. Refused at once, with the reason, when it cannot be done.
    pub fn add_lessee(&mut self, actor: ActorId, shard: ShardId) -> Result<(), ScaleError> {
        self.scale(actor, ScaleChange::Add(shard))
    }

    /// Asks to retire the lessee of `actor` on `shard`, after merging its state.
    pub fn remove_lessee(&mut self, actor: ActorId, shard: ShardId) -> Result<(), ScaleError> {
        self.scale(actor, ScaleChange::Remove(shard))
    }

    fn scale(&mut self, actor: ActorId, change: ScaleChange) -> Result<(), ScaleError> {
        let home = self.out.shared.check_scale(actor, change)?;
        self.out.control(home, Control::Scale { actor, change });
        Ok(())
    }

    /// Sends a fully formed envelope (its own kind and scheduling context); the source is
    /// set to this actor.
    pub fn send_envelope(&mut self, mut envelope: Envelope<M>) -> Result<(), SendError<M>> {
        envelope.source = Some(self.me);
        self.out.send(envelope)
    }
}
