//! Running aggregates: per key, an accumulator over the whole stream, emitted for the keys
//! that changed whenever the input frontier advances. Mergeable: lessees fold records into
//! partial accumulators that the lessor merges at a watermark.

use std::any::Any;
use std::sync::Arc;

use dirigo_runtime::{Context, Snapshot, SnapshotError, StateKind};
use rustc_hash::FxHashMap;

use crate::checkpoint::{Saved, SavedInputs};
use crate::dataflow::{
    batch_of, CheckpointId, Data, KeyedStream, Logic, Msg, Output, Stream, Time, Wiring,
};
use crate::partition::Partitioning;
use crate::state::{snapshot_of, Key, Portable, Unarchiver};
use crate::window::MergeFn;

impl<T: Data, K: Key> KeyedStream<T, K> {
    /// A running aggregate per key over the whole stream: whenever the input frontier
    /// advances, emits `emit(key, acc)` for every key whose accumulator changed since the
    /// last time (sorted by key). What it emits last for a key is deterministic; when the
    /// intermediate updates come depends on when watermarks arrive.
    pub fn aggregate<A: Portable + Data, O: Data>(
        &self,
        name: &str,
        init: impl Fn() -> A + Send + Sync + 'static,
        fold: impl Fn(&mut A, Time, &T) + Send + Sync + 'static,
        merge: impl Fn(&mut A, A) + Send + Sync + 'static,
        emit: impl Fn(&K, &A) -> O + Send + Sync + 'static,
    ) -> Stream<O> {
        self.aggregate_filtered(name, init, fold, merge, move |key: &K, acc: &A| {
            Some(emit(key, acc))
        })
    }

    /// [`aggregate`](Self::aggregate), where `emit` may put out nothing for a key that
    /// changed (`None`): a condition on the aggregate's output, checked in the operator
    /// itself rather than by a filter after it.
    pub fn aggregate_filtered<A: Portable + Data, O: Data>(
        &self,
        name: &str,
        init: impl Fn() -> A + Send + Sync + 'static,
        fold: impl Fn(&mut A, Time, &T) + Send + Sync + 'static,
        merge: impl Fn(&mut A, A) + Send + Sync + 'static,
        emit: impl Fn(&K, &A) -> Option<O> + Send + Sync + 'static,
    ) -> Stream<O> {
        let fns = Arc::new(AggregateFns {
            key: self.key.clone(),
            init: Arc::new(init),
            fold: Arc::new(fold),
            merge: Arc::new(merge),
            emit: Arc::new(emit),
        });
        self.stream.then(
            name,
            StateKind::Mergeable,
            Partitioning::KeyHash,
            Some(self.hasher()),
            Arc::new(move |wiring: &Wiring, partition| {
                Box::new(AggregateLogic {
                    fns: fns.clone(),
                    state: FxHashMap::default(),
                    changed: Vec::new(),
                    out: Output::new(wiring, partition),
                }) as Box<dyn Logic>
            }),
        )
    }
}

type AggregateFold<A, T> = Arc<dyn Fn(&mut A, Time, &T) + Send + Sync>;
type AggregateEmit<K, A, O> = Arc<dyn Fn(&K, &A) -> Option<O> + Send + Sync>;

struct AggregateFns<T, K, A, O> {
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    init: Arc<dyn Fn() -> A + Send + Sync>,
    fold: AggregateFold<A, T>,
    merge: MergeFn<A>,
    emit: AggregateEmit<K, A, O>,
}

struct AggregateLogic<T, K, A, O> {
    fns: Arc<AggregateFns<T, K, A, O>>,
    /// Per key: accumulator, and whether it changed since it was last emitted.
    state: FxHashMap<K, (A, bool)>,
    /// The keys whose flag is set, so that a watermark costs the keys that changed since
    /// the last one, not every key the aggregate ever saw.
    changed: Vec<K>,
    out: Output<O>,
}

impl<T: Data, K: Key, A: Portable + Data, O: Data> AggregateLogic<T, K, A, O> {
    /// Emits, at `time`, every key whose accumulator changed since it was last emitted,
    /// sorted by key.
    fn emit_changed(&mut self, ctx: &mut Context<'_, Msg>, time: Time) {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        for key in changed.drain(..) {
            let Some((acc, flag)) = self.state.get_mut(&key) else {
                continue;
            };
            *flag = false;
            if let Some(output) = (self.fns.emit)(&key, acc) {
                self.out.give(ctx, time, output);
            }
        }
        // The emptied list keeps its capacity for the next watermark.
        self.changed = changed;
    }
}

impl<T: Data, K: Key, A: Portable + Data, O: Data> Logic for AggregateLogic<T, K, A, O> {
    fn on_data(&mut self, _ctx: &mut Context<'_, Msg>, _input: usize, data: Box<dyn Any + Send>) {
        let batch = batch_of::<T>(data);
        for (time, record) in batch.iter() {
            let key = (self.fns.key)(record);
            let (acc, changed) = match self.state.entry(key) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    self.changed.push(slot.key().clone());
                    slot.insert(((self.fns.init)(), true))
                }
            };
            (self.fns.fold)(acc, *time, record);
            if !*changed {
                *changed = true;
                self.changed.push((self.fns.key)(record));
            }
        }
    }

    fn on_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.emit_changed(ctx, frontier.saturating_sub(1));
    }

    fn forward_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.out.frontier(ctx, frontier);
    }

    /// Every input has ended: the keys that changed since the last watermark go out, at
    /// the last time there is (`Time::MAX - 1`, as for a frontier at the end of time).
    fn on_end(&mut self, ctx: &mut Context<'_, Msg>) {
        self.emit_changed(ctx, Time::MAX - 1);
    }

    fn forward_end(&mut self, ctx: &mut Context<'_, Msg>) {
        self.out.end(ctx);
    }

    /// Every key's accumulator, and whether it changed since it was last emitted: copied
    /// on the shard, archived off it.
    fn save(&mut self, _: CheckpointId) -> Result<Saved, SnapshotError> {
        if self.state.is_empty() {
            return Ok(Saved::Nothing);
        }
        let entries: Vec<(K, A, bool)> = self
            .state
            .iter()
            .map(|(key, (acc, changed))| (key.clone(), acc.clone(), *changed))
            .collect();
        Ok(Saved::copy(entries, |entries| {
            let expected = std::mem::size_of_val(entries.as_slice()) + 4096;
            Snapshot::of_sized(&entries, expected)
        }))
    }

    fn restore(&mut self, _: &SavedInputs, saved: Option<&[u8]>) -> Result<(), SnapshotError> {
        let Some(bytes) = saved else {
            return Ok(());
        };
        // Validated in place, in the checkpoint's mapped bytes: no copy.
        let archived = dirigo_runtime::snapshot::access_checked::<Vec<(K, A, bool)>>(bytes)?;
        self.state.reserve(archived.len());
        let mut unarchiver = Unarchiver::new();
        for entry in archived.iter() {
            let key: K = unarchiver.owned(&entry.0)?;
            let acc: A = unarchiver.owned(&entry.1)?;
            let changed: bool = unarchiver.owned(&entry.2)?;
            if changed {
                self.changed.push(key.clone());
            }
            self.state.insert(key, (acc, changed));
        }
        Ok(())
    }

    fn forward_barrier(&mut self, ctx: &mut Context<'_, Msg>, id: CheckpointId) {
        self.out.barrier(ctx, id);
    }

    fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
        self.changed.clear();
        let entries: Vec<(K, A)> = self
            .state
            .drain()
            .map(|(key, (acc, _))| (key, acc))
            .collect();
        snapshot_of(&entries)
    }

    fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
        // Read in place: each archived key and accumulator is converted as it is
        // folded in, never the whole partial state at once.
        let archived = partial.archived::<Vec<(K, A)>>()?;
        let mut unarchiver = Unarchiver::new();
        for entry in archived.iter() {
            let key: K = unarchiver.owned(&entry.0)?;
            let acc: A = unarchiver.owned(&entry.1)?;
            match self.state.entry(key) {
                std::collections::hash_map::Entry::Occupied(mut entry) => {
                    if !entry.get().1 {
                        self.changed.push(entry.key().clone());
                    }
                    let (mine, changed) = entry.get_mut();
                    (self.fns.merge)(mine, acc);
                    *changed = true;
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    self.changed.push(slot.key().clone());
                    slot.insert((acc, true));
                }
            }
        }
        Ok(())
    }
}
