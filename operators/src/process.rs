//! `process` operators: keyed operators with state of their own, arbitrary and exclusive
//! (they never get lessees), over one keyed input ([`KeyedStream::process`]) or two
//! ([`KeyedStream::process2`]).

use std::any::Any;
use std::hash::Hash;
use std::sync::Arc;

use dirigo_runtime::{Context, PartitionId, SnapshotError, StateKind};

use crate::checkpoint::{Saved, SavedInputs};

use crate::dataflow::{
    add_operator, batch_of, CheckpointId, Data, KeyedStream, Logic, Msg, Output, Stream, Time,
    Wiring,
};
use crate::partition::Partitioning;

/// Outputs of a [`process`](KeyedStream::process) operator, with their event times.
pub type Emitted<O> = Vec<(Time, O)>;

type OnRecord<S, T, O> = Arc<dyn Fn(&mut S, Time, T, &mut Emitted<O>) + Send + Sync>;
type OnFrontier<S, O> = Arc<dyn Fn(&mut S, Time, &mut Emitted<O>) + Send + Sync>;

struct ProcessLogic<S, L, R, O> {
    state: S,
    on_left: OnRecord<S, L, O>,
    on_right: Option<OnRecord<S, R, O>>,
    on_frontier: OnFrontier<S, O>,
    out: Output<O>,
    emitted: Emitted<O>,
}

impl<S: 'static, L: Data, R: Data, O: Data> ProcessLogic<S, L, R, O> {
    fn drain(&mut self, ctx: &mut Context<'_, Msg>) {
        for (time, output) in self.emitted.drain(..) {
            self.out.give(ctx, time, output);
        }
    }
}

impl<S: 'static, L: Data, R: Data, O: Data> Logic for ProcessLogic<S, L, R, O> {
    fn on_data(&mut self, ctx: &mut Context<'_, Msg>, input: usize, data: Box<dyn Any + Send>) {
        if input == 0 {
            let batch = batch_of::<L>(data);
            for (time, record) in batch {
                (self.on_left)(&mut self.state, time, record, &mut self.emitted);
            }
        } else if let Some(on_right) = &self.on_right {
            let batch = batch_of::<R>(data);
            for (time, record) in batch {
                on_right(&mut self.state, time, record, &mut self.emitted);
            }
        }
        self.drain(ctx);
        self.out.flush(ctx);
    }

    fn on_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        (self.on_frontier)(&mut self.state, frontier, &mut self.emitted);
        self.drain(ctx);
    }

    fn forward_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.out.frontier(ctx, frontier);
    }

    /// Every input has ended: `on_frontier` runs once more with [`Time::MAX`] (every
    /// time has passed), even when a watermark brought the frontier there before.
    fn on_end(&mut self, ctx: &mut Context<'_, Msg>) {
        (self.on_frontier)(&mut self.state, Time::MAX, &mut self.emitted);
        self.drain(ctx);
    }

    fn forward_end(&mut self, ctx: &mut Context<'_, Msg>) {
        self.out.end(ctx);
    }

    /// The state is the user's own type, which nothing can archive: an app with a
    /// `process` operator runs without checkpoints (it is refused with them).
    fn save(&mut self, _: CheckpointId) -> Result<Saved, SnapshotError> {
        Err(SnapshotError::Unsupported(NOT_CHECKPOINTABLE))
    }

    fn restore(&mut self, _: &SavedInputs, _: Option<&[u8]>) -> Result<(), SnapshotError> {
        Err(SnapshotError::Unsupported(NOT_CHECKPOINTABLE))
    }

    fn forward_barrier(&mut self, ctx: &mut Context<'_, Msg>, id: CheckpointId) {
        self.out.barrier(ctx, id);
    }
}

/// Why a `process` operator cannot be checkpointed.
const NOT_CHECKPOINTABLE: &str =
    "a `process` operator's state is a type of its own, which checkpoints cannot archive";

impl<T: Data, K: Hash + 'static> KeyedStream<T, K> {
    /// A keyed operator with state of its own (exclusive: it never gets lessees). Each
    /// partition's state starts as `init(partition)`; `on_record(state, time, record,
    /// out)` runs per record and `on_frontier(state, frontier, out)` when the input
    /// frontier advances, and once more with `Time::MAX` when every input has ended (a
    /// watermark may reach `Time::MAX` too, and records at `Time::MAX` may follow it; the
    /// end is the last call). Outputs go into `out` with their event times.
    pub fn process<S: 'static, O: Data>(
        &self,
        name: &str,
        init: impl Fn(PartitionId) -> S + Send + Sync + 'static,
        on_record: impl Fn(&mut S, Time, T, &mut Emitted<O>) + Send + Sync + 'static,
        on_frontier: impl Fn(&mut S, Time, &mut Emitted<O>) + Send + Sync + 'static,
    ) -> Stream<O> {
        let init = Arc::new(init);
        let on_record: OnRecord<S, T, O> = Arc::new(on_record);
        let on_frontier: OnFrontier<S, O> = Arc::new(on_frontier);
        let stream = self.stream.then(
            name,
            StateKind::Exclusive,
            Partitioning::KeyHash,
            Some(self.hasher()),
            Arc::new(move |wiring: &Wiring, partition| {
                Box::new(ProcessLogic::<S, T, T, O> {
                    state: init(partition),
                    on_left: on_record.clone(),
                    on_right: None,
                    on_frontier: on_frontier.clone(),
                    out: Output::new(wiring, partition),
                    emitted: Vec::new(),
                }) as Box<dyn Logic>
            }),
        );
        stream.mark_not_checkpointable(stream.node_id(), NOT_CHECKPOINTABLE);
        stream
    }

    /// Like [`process`](Self::process), over two keyed inputs (`other` must come from a
    /// different operator): `on_left` runs for this stream's records, `on_right` for
    /// `other`'s.
    #[allow(clippy::too_many_arguments)]
    pub fn process2<R: Data, S: 'static, O: Data>(
        &self,
        other: &KeyedStream<R, K>,
        name: &str,
        init: impl Fn(PartitionId) -> S + Send + Sync + 'static,
        on_left: impl Fn(&mut S, Time, T, &mut Emitted<O>) + Send + Sync + 'static,
        on_right: impl Fn(&mut S, Time, R, &mut Emitted<O>) + Send + Sync + 'static,
        on_frontier: impl Fn(&mut S, Time, &mut Emitted<O>) + Send + Sync + 'static,
    ) -> Stream<O> {
        let init = Arc::new(init);
        let on_left: OnRecord<S, T, O> = Arc::new(on_left);
        let on_right: OnRecord<S, R, O> = Arc::new(on_right);
        let on_frontier: OnFrontier<S, O> = Arc::new(on_frontier);
        let node = add_operator(
            self.stream.graph(),
            name,
            StateKind::Exclusive,
            Arc::new(move |wiring: &Wiring, partition| {
                Box::new(ProcessLogic::<S, T, R, O> {
                    state: init(partition),
                    on_left: on_left.clone(),
                    on_right: Some(on_right.clone()),
                    on_frontier: on_frontier.clone(),
                    out: Output::new(wiring, partition),
                    emitted: Vec::new(),
                }) as Box<dyn Logic>
            }),
        );
        self.stream
            .mark_not_checkpointable(node, NOT_CHECKPOINTABLE);
        self.connect_with(other, node)
    }
}
