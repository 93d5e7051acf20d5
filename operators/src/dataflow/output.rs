//! The outgoing side of an operator partition: its edges ([`EdgeSpec`], as the graph
//! declares them) and [`Output`], which routes records over them by the rule of
//! [`partition`](crate::partition) and batches them per downstream partition.

use dirigo_runtime::{
    ActorId, AppId, Context, Envelope, MessageKind, Nanos, OperatorId, PartitionId, SchedContext,
};
use std::sync::Arc;

use super::app::PartitionCount;
use super::batch_size::{BatchSizes, MAX_BATCH};
use super::message::{Batch, CheckpointId, Data, Msg, Time};
use super::operator::Wiring;
use crate::partition::{Partitioning, Route};

pub(crate) type KeyHashFn<T> = Arc<dyn Fn(&T) -> u64 + Send + Sync>;

/// One outgoing edge, typed by the records that travel on it.
pub(crate) struct EdgeSpec<T> {
    pub(crate) target: OperatorId,
    pub(crate) partitioning: Partitioning,
    pub(crate) key: Option<KeyHashFn<T>>,
}

/// The outgoing side of an operator partition: routes records over the edges and batches
/// them per downstream partition.
pub(crate) struct Output<T> {
    app: AppId,
    edges: Vec<EdgeOut<T>>,
    /// The ingress time to stamp on what is flushed next, for sources (`None`: inherit the
    /// message being handled).
    pub(crate) ingress: Option<Nanos>,
    /// Records this partition sent on, per partition of the operator, and this one.
    sent: (Arc<[PartitionCount]>, usize),
}

struct EdgeOut<T> {
    target: OperatorId,
    partitions: PartitionId,
    /// The partition a forward edge sends to: this one's index modulo the target's
    /// partitions, computed once (a division per record costs as much as the push).
    forward: PartitionId,
    route: Route,
    key: Option<KeyHashFn<T>>,
    buffers: Vec<Batch<T>>,
    /// The most records one batch on this edge holds: the target's size (see
    /// `batch_size`) as of the last batch sent.
    max_batch: usize,
    sizes: Arc<BatchSizes>,
    /// Whether what leaves on this edge counts as sent: the first edge's records do
    /// (for a broadcast edge, those to its partition 0), so that a record sent over
    /// several edges counts once.
    counts_sent: bool,
}

impl<T: Data> Output<T> {
    pub(crate) fn new(wiring: &Wiring, me: PartitionId) -> Self {
        let edges = wiring
            .edges
            .iter()
            .enumerate()
            .map(|(index, edge)| {
                let edge = edge
                    .downcast_ref::<EdgeSpec<T>>()
                    .expect("an edge carries its upstream operator's record type");
                let partitions = wiring.partitions[usize::from(edge.target)];
                EdgeOut {
                    target: edge.target,
                    partitions,
                    forward: me % partitions,
                    route: Route::new(edge.partitioning, partitions, me % partitions),
                    key: edge.key.clone(),
                    buffers: (0..partitions).map(|_| Vec::new()).collect(),
                    max_batch: wiring.batch_sizes.limit(edge.target),
                    sizes: wiring.batch_sizes.clone(),
                    counts_sent: index == 0,
                }
            })
            .collect();
        Self {
            app: wiring.app,
            edges,
            ingress: None,
            sent: (wiring.records_out.clone(), me as usize),
        }
    }

    /// Routes one record; sends full batches at once.
    pub(crate) fn give(&mut self, ctx: &mut Context<'_, Msg>, time: Time, record: T) {
        let last = self.edges.len().saturating_sub(1);
        let mut record = Some(record);
        for index in 0..self.edges.len() {
            let edge = &mut self.edges[index];
            let value = if index == last {
                record.take().expect("the last edge takes the record")
            } else {
                record.as_ref().expect("earlier edges clone").clone()
            };
            match edge.route.partitioning() {
                Partitioning::Broadcast => {
                    for partition in 0..edge.partitions {
                        edge.buffers[partition as usize].push((time, value.clone()));
                    }
                    for partition in 0..edge.partitions {
                        if edge.buffers[partition as usize].len() >= edge.max_batch {
                            Self::send_buffer(
                                self.app,
                                self.ingress,
                                &self.sent,
                                edge,
                                partition,
                                ctx,
                            );
                        }
                    }
                }
                _ => {
                    let key = &edge.key;
                    let partition = edge
                        .route
                        .target(edge.forward, || key.as_ref().map_or(0, |key| key(&value)));
                    let buffer = &mut edge.buffers[partition as usize];
                    buffer.push((time, value));
                    if buffer.len() >= edge.max_batch {
                        Self::send_buffer(self.app, self.ingress, &self.sent, edge, partition, ctx);
                    }
                }
            }
        }
    }

    /// Routes every record of `records` (leaving it empty), all at `time`. Over a single
    /// forward edge — a window's rows on their way to the next operator, typically — the
    /// records go into whole batches in one pass, without routing each on its own.
    pub(crate) fn give_all(
        &mut self,
        ctx: &mut Context<'_, Msg>,
        time: Time,
        records: &mut Vec<T>,
    ) {
        let single_forward = self.edges.len() == 1
            && matches!(self.edges[0].route.partitioning(), Partitioning::Forward);
        if !single_forward {
            for record in records.drain(..) {
                self.give(ctx, time, record);
            }
            return;
        }
        let edge = &mut self.edges[0];
        let partition = edge.forward;
        let mut rest = records.drain(..);
        loop {
            let buffer = &mut edge.buffers[partition as usize];
            let room = edge.max_batch.saturating_sub(buffer.len());
            buffer.reserve(room.min(rest.len()));
            buffer.extend(rest.by_ref().take(room).map(|record| (time, record)));
            if buffer.len() < edge.max_batch {
                break;
            }
            Self::send_buffer(self.app, self.ingress, &self.sent, edge, partition, ctx);
        }
    }

    fn send_buffer(
        app: AppId,
        ingress: Option<Nanos>,
        (sent, me): &(Arc<[PartitionCount]>, usize),
        edge: &mut EdgeOut<T>,
        partition: PartitionId,
        ctx: &mut Context<'_, Msg>,
    ) {
        // The next batch starts with room for as many records as this one had: growing a
        // batch from empty reallocates it a dozen times, and under the allocator's lock
        // when another shard frees batches of this one (the paced, small-batch case).
        let buffer = &mut edge.buffers[partition as usize];
        let room = buffer.len().min(MAX_BATCH);
        let batch = std::mem::replace(buffer, Vec::with_capacity(room));
        edge.max_batch = edge.sizes.limit(edge.target);
        if edge.counts_sent
            && (partition == 0 || !matches!(edge.route.partitioning(), Partitioning::Broadcast))
        {
            PartitionCount::add(sent, *me, batch.len() as u64);
        }
        let target = ActorId::new(app, edge.target, partition);
        let payload = Msg::Data {
            records: u32::try_from(batch.len()).unwrap_or(u32::MAX),
            batch: Box::new(batch),
        };
        // A send fails only while the runtime shuts down; what is in flight then is
        // discarded with it.
        let _ = match ingress {
            Some(ingress) => ctx.send_envelope(Envelope {
                target,
                source: None,
                kind: MessageKind::User,
                ctx: SchedContext {
                    ingress,
                    deadline: Nanos::MAX,
                },
                payload,
            }),
            None => ctx.send(target, payload),
        };
    }

    /// Sends everything buffered.
    pub(crate) fn flush(&mut self, ctx: &mut Context<'_, Msg>) {
        for edge in &mut self.edges {
            for partition in 0..edge.partitions {
                if !edge.buffers[partition as usize].is_empty() {
                    Self::send_buffer(self.app, self.ingress, &self.sent, edge, partition, ctx);
                }
            }
        }
    }

    /// Flushes, then sends `frontier` to every downstream partition, as a critical
    /// message.
    pub(crate) fn frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.control(ctx, || Msg::Watermark(frontier));
    }

    /// Flushes, then sends the end of the stream ([`Msg::End`]) to every downstream
    /// partition, as a critical message: it runs after every batch sent before it.
    pub(crate) fn end(&mut self, ctx: &mut Context<'_, Msg>) {
        self.control(ctx, || Msg::End);
    }

    /// Flushes, then sends checkpoint barrier `id` to every downstream partition, as a
    /// critical message: once to each, even where two edges lead to one operator (the
    /// downstream partition waits for one barrier per upstream partition).
    pub(crate) fn barrier(&mut self, ctx: &mut Context<'_, Msg>, id: CheckpointId) {
        self.flush(ctx);
        let mut sent: Vec<OperatorId> = Vec::new();
        for edge in &self.edges {
            if sent.contains(&edge.target) {
                continue;
            }
            sent.push(edge.target);
            for partition in 0..edge.partitions {
                let target = ActorId::new(self.app, edge.target, partition);
                let _ = ctx.send_critical(target, Msg::Barrier(id));
            }
        }
    }

    /// Flushes, then sends the control message `message()` to every downstream partition,
    /// as a critical message.
    fn control(&mut self, ctx: &mut Context<'_, Msg>, message: impl Fn() -> Msg) {
        self.flush(ctx);
        for edge in &self.edges {
            for partition in 0..edge.partitions {
                let target = ActorId::new(self.app, edge.target, partition);
                let _ = match self.ingress {
                    Some(ingress) => ctx.send_envelope(Envelope {
                        target,
                        source: None,
                        kind: MessageKind::Critical,
                        ctx: SchedContext {
                            ingress,
                            deadline: Nanos::MAX,
                        },
                        payload: message(),
                    }),
                    None => ctx.send_critical(target, message()),
                };
            }
        }
    }
}
