//! Windowed joins: a window operator over records of either of two keyed inputs
//! ([`Either`]), whose windows buffer both sides until they fire.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use dirigo_runtime::{Context, Snapshot, SnapshotError, StateKind};

use super::logic::{WindowFns, WindowLogic};
use super::{Window, WindowSpec};
use crate::checkpoint::{Saved, SavedInputs};
use crate::dataflow::{
    add_operator, batch_of, set_trigger, set_work_per_record, CheckpointId, Data, KeyedStream,
    Logic, Msg, Stream, Time, Wiring,
};
use crate::state::{Key, Portable};

/// A windowed join: a window operator over records of either side, buffering both.
type JoinLogic<L, R, K, O> = WindowLogic<Either<L, R>, K, (Vec<L>, Vec<R>), O>;

/// Joins two keyed streams per window: `emit(key, window, lefts, rights, out)` runs once
/// per window and key that has records on either side, when the window fires. Left and
/// right records keep their arrival order only within one worker; sort them in `emit`
/// when order matters.
impl<L: Data + Portable + Sync, K: Key + Sync> KeyedStream<L, K> {
    /// A windowed join with `other` (which must come from a different operator).
    pub fn window_join<R: Data + Portable + Sync, O: Data>(
        &self,
        other: &KeyedStream<R, K>,
        name: &str,
        spec: impl Into<WindowSpec>,
        emit: impl Fn(&K, Window, Vec<L>, Vec<R>, &mut Vec<O>) + Send + Sync + 'static,
    ) -> Stream<O> {
        let spec = spec.into();
        let left_key = self.key.clone();
        let right_key = other.key.clone();
        let fns = Arc::new(WindowFns::<Either<L, R>, K, (Vec<L>, Vec<R>), O> {
            spec,
            key: Arc::new(move |record: &Either<L, R>| match record {
                Either::Left(l) => left_key(l),
                Either::Right(r) => right_key(r),
            }),
            init: Arc::new(|| (Vec::new(), Vec::new())),
            fold: Arc::new(|acc, _, _, record| match record {
                Either::Left(l) => acc.0.push(l.clone()),
                Either::Right(r) => acc.1.push(r.clone()),
            }),
            merge: Arc::new(|acc, other| {
                acc.0.extend(other.0);
                acc.1.extend(other.1);
            }),
            emit: Arc::new(move |key, window, (lefts, rights), out| {
                emit(key, window, lefts, rights, out)
            }),
            eager: None,
        });
        let node = add_operator(
            self.stream.graph(),
            name,
            StateKind::Mergeable,
            Arc::new(move |wiring: &Wiring, partition| {
                Box::new(TwoInputs {
                    inner: WindowLogic::new(fns.clone(), wiring, partition),
                    _sides: PhantomData::<fn(L, R)>,
                }) as Box<dyn Logic>
            }),
        );
        if let Some(trigger) = spec.trigger() {
            set_trigger(self.stream.graph(), node, trigger);
        }
        set_work_per_record(self.stream.graph(), node, spec.windows_per_record());
        self.connect_with(other, node)
    }
}

/// A record of one of two inputs.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum Either<L, R> {
    /// From the first input.
    Left(L),
    /// From the second input.
    Right(R),
}

/// Feeds a window operator over `Either<L, R>` from two inputs of types `L` and `R`.
struct TwoInputs<L, R, K, O> {
    inner: JoinLogic<L, R, K, O>,
    _sides: PhantomData<fn(L, R)>,
}

impl<L: Data + Portable + Sync, R: Data + Portable + Sync, K: Key + Sync, O: Data> Logic
    for TwoInputs<L, R, K, O>
{
    fn on_data(&mut self, _ctx: &mut Context<'_, Msg>, input: usize, data: Box<dyn Any + Send>) {
        if input == 0 {
            let batch = batch_of::<L>(data);
            for (time, record) in batch {
                self.inner.add(time, &Either::Left(record));
            }
        } else {
            let batch = batch_of::<R>(data);
            for (time, record) in batch {
                self.inner.add(time, &Either::Right(record));
            }
        }
    }

    fn on_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.inner.on_frontier(ctx, frontier);
    }

    fn forward_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.inner.forward_frontier(ctx, frontier);
    }

    fn on_end(&mut self, ctx: &mut Context<'_, Msg>) {
        self.inner.on_end(ctx);
    }

    fn forward_end(&mut self, ctx: &mut Context<'_, Msg>) {
        self.inner.forward_end(ctx);
    }

    fn on_tick(&mut self, ctx: &mut Context<'_, Msg>) {
        self.inner.on_tick(ctx);
    }

    fn save(&mut self, id: CheckpointId) -> Result<Saved, SnapshotError> {
        self.inner.save(id)
    }

    fn restore(&mut self, inputs: &SavedInputs, saved: Option<&[u8]>) -> Result<(), SnapshotError> {
        self.inner.restore(inputs, saved)
    }

    fn forward_barrier(&mut self, ctx: &mut Context<'_, Msg>, id: CheckpointId) {
        self.inner.forward_barrier(ctx, id);
    }

    fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
        self.inner.snapshot()
    }

    fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
        self.inner.merge(partial)
    }
}
