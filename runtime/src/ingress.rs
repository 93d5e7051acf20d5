//! [`Ingress`]: how threads outside the runtime send messages into it and ask for scale
//! changes. Its sends wait for room in a shard's intake (or fail with `Full` when asked
//! not to wait) and are refused once the runtime stops accepting.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::dual::{Control, Packet, ScaleChange, ScaleError};
use crate::envelope::{ActorId, Envelope, SendError, ShardId};
use crate::shared::Shared;

/// Sends messages into the runtime from threads outside it. Cheap to clone.
///
/// ```
/// use dirigo_runtime::{Actor, ActorId, Context, Envelope, Runtime, SendError};
///
/// struct Sink(flume::Sender<u32>);
/// impl Actor<u32> for Sink {
///     fn receive(&mut self, _ctx: &mut Context<'_, u32>, message: Envelope<u32>) {
///         self.0.send(message.payload).unwrap();
///     }
/// }
///
/// let (tx, rx) = flume::unbounded();
/// let runtime = Runtime::<u32>::builder()
///     .shards(1)
///     .operator(0, 0, move |_, _| Box::new(Sink(tx.clone())) as Box<dyn Actor<u32>>)
///     .build()
///     .unwrap();
/// let ingress = runtime.ingress();
/// assert_eq!(ingress.shards(), 1);
/// ingress.send_to(ActorId::new(0, 0, 0), 1).unwrap();
/// match ingress.try_send(Envelope::user(ActorId::new(0, 0, 0), 2)) {
///     Ok(()) | Err(SendError::Full(_)) => {}
///     Err(error) => panic!("{error}"),
/// }
/// assert_eq!(rx.recv().unwrap(), 1);
/// runtime.shutdown();
/// // After shutdown, sends are refused and the message comes back.
/// assert!(matches!(ingress.send_to(ActorId::new(0, 0, 0), 3), Err(SendError::Closed(_))));
/// ```
pub struct Ingress<M> {
    shared: Arc<Shared<M>>,
}

impl<M> Clone for Ingress<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<M: Send + 'static> Ingress<M> {
    /// The intake of the runtime whose shards share `shared`.
    pub(crate) fn new(shared: Arc<Shared<M>>) -> Self {
        Self { shared }
    }

    /// Sends `envelope` to its actor's home shard, waiting while that shard's intake is
    /// full.
    pub fn send(&self, envelope: Envelope<M>) -> Result<(), SendError<M>> {
        self.submit(envelope, true)
    }

    /// Like [`send`](Self::send) but fails with `Full` instead of waiting.
    pub fn try_send(&self, envelope: Envelope<M>) -> Result<(), SendError<M>> {
        self.submit(envelope, false)
    }

    /// Sends `payload` to `target` as a user message entering now.
    pub fn send_to(&self, target: ActorId, payload: M) -> Result<(), SendError<M>> {
        self.send(Envelope::user(target, payload))
    }

    /// How many shards the runtime runs.
    pub fn shards(&self) -> usize {
        self.shared.shards()
    }

    /// The home shard of `actor`.
    pub fn home_shard(&self, actor: ActorId) -> ShardId {
        self.shared.router.route(&actor)
    }

    /// Asks for a lessee of `actor` on `shard`. Refused at once, with the reason, when the
    /// actor's state is exclusive or the shard is wrong; otherwise the lessee starts at
    /// the actor's next consolidation point (at once when it has none pending).
    pub fn add_lessee(&self, actor: ActorId, shard: ShardId) -> Result<(), ScaleError> {
        self.scale(actor, ScaleChange::Add(shard))
    }

    /// Asks to retire the lessee of `actor` on `shard`; its partial state is merged into
    /// the lessor's first, so nothing is lost.
    pub fn remove_lessee(&self, actor: ActorId, shard: ShardId) -> Result<(), ScaleError> {
        self.scale(actor, ScaleChange::Remove(shard))
    }

    fn scale(&self, actor: ActorId, change: ScaleChange) -> Result<(), ScaleError> {
        let shared = &*self.shared;
        let home = shared.check_scale(actor, change)?;
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if !shared.accepting.load(Ordering::SeqCst) {
            shared.accepted.fetch_sub(1, Ordering::SeqCst);
            return Err(ScaleError::Closed);
        }
        let packet = Packet::Control(Box::new(Control::Scale { actor, change }));
        if shared.intakes[home].sender.send(packet).is_err() {
            shared.accepted.fetch_sub(1, Ordering::SeqCst);
            return Err(ScaleError::Closed);
        }
        shared.intakes[home].posted.fetch_add(1, Ordering::AcqRel);
        shared.doorbells[home].ring();
        Ok(())
    }

    fn submit(&self, envelope: Envelope<M>, wait: bool) -> Result<(), SendError<M>> {
        let shared = &*self.shared;
        if !shared.knows_operator(&envelope.target) {
            return Err(SendError::UnknownOperator(envelope));
        }
        // Count first, then check: shutdown closes intake before it starts counting, so
        // every message that passes the check is in the count it waits for.
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if !shared.accepting.load(Ordering::SeqCst) {
            shared.accepted.fetch_sub(1, Ordering::SeqCst);
            return Err(SendError::Closed(envelope));
        }
        let shard = shared.router.route(&envelope.target);
        let intake = &shared.intakes[shard];
        let mut envelope = envelope;
        shared.stamp_deadline(&mut envelope);
        let packet = Packet::Message(envelope);
        let unwrap = |packet| match packet {
            Packet::Message(envelope) => envelope,
            Packet::Control(_) => unreachable!("only messages are submitted here"),
        };
        let sent = if wait {
            intake
                .sender
                .send(packet)
                .map_err(|error| SendError::Closed(unwrap(error.into_inner())))
        } else {
            intake.sender.try_send(packet).map_err(|error| match error {
                flume::TrySendError::Full(packet) => SendError::Full(unwrap(packet)),
                flume::TrySendError::Disconnected(packet) => SendError::Closed(unwrap(packet)),
            })
        };
        if let Err(error) = sent {
            shared.accepted.fetch_sub(1, Ordering::SeqCst);
            return Err(error);
        }
        intake.posted.fetch_add(1, Ordering::AcqRel);
        shared.doorbells[shard].ring();
        Ok(())
    }
}
