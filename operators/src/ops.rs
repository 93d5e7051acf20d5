//! Stateless operators: `map`, `filter`, `flat_map`, and `inspect`. Each partition takes
//! its upstream partition's records over a forward edge (or the key-hash edge of a
//! [`KeyedStream`]) and passes the watermark on unchanged.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use dirigo_runtime::{Context, SnapshotError, StateKind};

use crate::checkpoint::{Saved, SavedInputs};

use crate::dataflow::{
    batch_of, CheckpointId, Data, KeyedStream, Logic, Msg, Output, Stream, Time, Wiring,
};
use crate::partition::Partitioning;

struct FlatMapLogic<I, O, F> {
    f: Arc<F>,
    out: Output<O>,
    _input: PhantomData<fn(I)>,
}

impl<I, O, F, R> Logic for FlatMapLogic<I, O, F>
where
    I: Data,
    O: Data,
    F: Fn(Time, I) -> R + Send + Sync + 'static,
    R: IntoIterator<Item = O>,
{
    fn on_data(&mut self, ctx: &mut Context<'_, Msg>, _input: usize, data: Box<dyn Any + Send>) {
        let batch = batch_of::<I>(data);
        for (time, record) in batch {
            for output in (self.f)(time, record) {
                self.out.give(ctx, time, output);
            }
        }
        self.out.flush(ctx);
    }

    fn forward_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.out.frontier(ctx, frontier);
    }

    /// A record-at-a-time operator holds nothing to fire.
    fn on_end(&mut self, _ctx: &mut Context<'_, Msg>) {}

    fn forward_end(&mut self, ctx: &mut Context<'_, Msg>) {
        self.out.end(ctx);
    }

    /// A record-at-a-time operator keeps no state a frontier reads.
    fn frontier_needs_state(&self, _from: Time, _to: Time) -> bool {
        false
    }

    /// A record-at-a-time operator keeps no state.
    fn save(&mut self, _: CheckpointId) -> Result<Saved, SnapshotError> {
        Ok(Saved::Nothing)
    }

    fn restore(&mut self, _: &SavedInputs, _: Option<&[u8]>) -> Result<(), SnapshotError> {
        Ok(())
    }

    fn forward_barrier(&mut self, ctx: &mut Context<'_, Msg>, id: CheckpointId) {
        self.out.barrier(ctx, id);
    }
}

fn flat_map_node<I, O, F, R>(
    stream: &Stream<I>,
    name: &str,
    partitioning: Partitioning,
    key: Option<crate::dataflow::KeyHashFn<I>>,
    f: F,
) -> Stream<O>
where
    I: Data,
    O: Data,
    F: Fn(Time, I) -> R + Send + Sync + 'static,
    R: IntoIterator<Item = O> + 'static,
{
    let f = Arc::new(f);
    stream.then(
        name,
        StateKind::Exclusive,
        partitioning,
        key,
        Arc::new(move |wiring: &Wiring, partition| {
            Box::new(FlatMapLogic::<I, O, F> {
                f: f.clone(),
                out: Output::new(wiring, partition),
                _input: PhantomData,
            }) as Box<dyn Logic>
        }),
    )
}

impl<T: Data> Stream<T> {
    /// Transforms each record.
    ///
    /// ```
    /// # use dirigo_operators::dataflow::AppBuilder;
    /// # use dirigo_operators::source::Pacing;
    /// let app = AppBuilder::new(0, "doc");
    /// let lengths = app
    ///     .source_iter("words", vec![(0, "a".to_string())], 0, Pacing::Unpaced)
    ///     .map("length", |word| word.len());
    /// ```
    pub fn map<O: Data>(
        &self,
        name: &str,
        f: impl Fn(T) -> O + Send + Sync + 'static,
    ) -> Stream<O> {
        flat_map_node(self, name, Partitioning::Forward, None, move |_, record| {
            Some(f(record))
        })
    }

    /// Keeps the records `keep` accepts.
    pub fn filter(
        &self,
        name: &str,
        keep: impl Fn(&T) -> bool + Send + Sync + 'static,
    ) -> Stream<T> {
        flat_map_node(self, name, Partitioning::Forward, None, move |_, record| {
            keep(&record).then_some(record)
        })
    }

    /// Turns each record into any number of records (with the same event time).
    pub fn flat_map<O: Data, R: IntoIterator<Item = O> + 'static>(
        &self,
        name: &str,
        f: impl Fn(T) -> R + Send + Sync + 'static,
    ) -> Stream<O> {
        flat_map_node(self, name, Partitioning::Forward, None, move |_, record| {
            f(record)
        })
    }

    /// Like [`flat_map`](Self::flat_map), with each record's event time.
    pub fn flat_map_timed<O: Data, R: IntoIterator<Item = O> + 'static>(
        &self,
        name: &str,
        f: impl Fn(Time, T) -> R + Send + Sync + 'static,
    ) -> Stream<O> {
        flat_map_node(self, name, Partitioning::Forward, None, f)
    }

    /// Spreads records over the next operator's partitions in turn.
    pub fn rebalance(&self, name: &str) -> Stream<T> {
        flat_map_node(self, name, Partitioning::RoundRobin, None, |_, record| {
            Some(record)
        })
    }

    /// Sends every record to every partition of the next operator.
    pub fn broadcast(&self, name: &str) -> Stream<T> {
        flat_map_node(self, name, Partitioning::Broadcast, None, |_, record| {
            Some(record)
        })
    }

    /// One stream of this stream's records and `others'`: an operator reading all of
    /// them, whose frontier is the least of theirs.
    ///
    /// ```
    /// # use dirigo_operators::dataflow::AppBuilder;
    /// # use dirigo_operators::source::Pacing;
    /// let app = AppBuilder::new(0, "doc");
    /// let left = app.source_iter("left", vec![(0, 1u64)], 0, Pacing::Unpaced);
    /// let right = app.source_iter("right", vec![(0, 2u64)], 0, Pacing::Unpaced);
    /// let both = left.union("both", &[&right]);
    /// ```
    ///
    /// # Panics
    /// When one of `others` belongs to another app.
    pub fn union(&self, name: &str, others: &[&Stream<T>]) -> Stream<T> {
        assert!(
            others
                .iter()
                .all(|other| std::rc::Rc::ptr_eq(self.graph(), other.graph())),
            "a union joins streams of one app"
        );
        let merged = flat_map_node(self, name, Partitioning::Forward, None, |_, record| {
            Some(record)
        });
        for other in others {
            other.connect(merged.operator(), Partitioning::Forward, None);
        }
        merged
    }
}

impl<T: Data, K: std::hash::Hash + 'static> KeyedStream<T, K> {
    /// Transforms each record, in the partition its key maps to.
    pub fn map<O: Data>(
        &self,
        name: &str,
        f: impl Fn(T) -> O + Send + Sync + 'static,
    ) -> Stream<O> {
        flat_map_node(
            &self.stream,
            name,
            Partitioning::KeyHash,
            Some(self.hasher()),
            move |_, record| Some(f(record)),
        )
    }
}
