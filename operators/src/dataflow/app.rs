//! A built app ([`App`]): installing it into a runtime (one operator registration per
//! graph node), starting its sources, waiting for it, and the counters behind [`Flow`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use dirigo_runtime::{
    Actor, ActorId, AppId, Envelope, Ingress, Nanos, OperatorId, PartitionId, RuntimeBuilder,
    SavedState, StateKind,
};

use super::batch_size::BatchSizes;
use super::graph::{FrontierTrigger, Node};
use super::message::Msg;
use super::operator::{MakeLogic, OperatorActor, Wiring};
use crate::checkpoint::CheckpointLink;

/// Counters an app's operators update.
#[derive(Default)]
pub(crate) struct AppCounters {
    pub(crate) late: AtomicU64,
    /// Records the sources emitted.
    pub(crate) emitted: AtomicU64,
    /// Records that operators received straight from a source.
    pub(crate) ingested: AtomicU64,
    /// Records in batches the scheduler shed on their way from a source to its first
    /// consumer.
    pub(crate) shed_at_ingest: AtomicU64,
    /// Records in batches the scheduler shed between two operators.
    pub(crate) shed_downstream: AtomicU64,
    /// Sources stop producing (see [`App::stop`]).
    pub(crate) stop: std::sync::atomic::AtomicBool,
    pub(crate) sinks_open: AtomicU64,
    /// When the app's first source partition took its first turn (runtime clock, ns;
    /// 0 until then): every paced source counts its records' intended send times from
    /// this one instant.
    pub(crate) paced_since: AtomicU64,
    /// Set when every sink finished, or when the app failed: what [`App::wait`] waits
    /// for.
    pub(crate) done: Mutex<bool>,
    pub(crate) done_signal: Condvar,
    /// Records sinks wrote out (to a file, standard output or a socket).
    pub(crate) outputs_written: AtomicU64,
    /// Records sinks could not write out.
    pub(crate) outputs_failed: AtomicU64,
    /// The first sink write error: where, and why.
    pub(crate) output_error: Mutex<Option<String>>,
    /// Why the app failed: the first panic's message (see [`App::failure`]).
    pub(crate) failure: Mutex<Option<String>>,
    /// Handlers of the app that panicked.
    pub(crate) handler_panics: AtomicU64,
    /// Records in batches discarded because the app failed, on their way from a source
    /// to its first consumer, and further in.
    pub(crate) discarded_at_ingest: AtomicU64,
    pub(crate) discarded_downstream: AtomicU64,
}

impl AppCounters {
    /// The app's pacing epoch, fixed to `now` by the first source partition that asks.
    pub(crate) fn pacing_epoch(&self, now: Nanos) -> Nanos {
        let now = now.max(1);
        match self
            .paced_since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => now,
            Err(first) => first,
        }
    }

    /// A sink wrote `written` records out and could not write `failed`; `error` says
    /// where and why when `failed > 0` (only the first error is kept).
    pub(crate) fn outputs(&self, written: u64, failed: u64, error: impl FnOnce() -> String) {
        self.outputs_written.fetch_add(written, Ordering::Relaxed);
        if failed > 0 {
            self.outputs_failed.fetch_add(failed, Ordering::Relaxed);
            let mut first = self.output_error.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                *first = Some(error());
            }
        }
    }

    pub(crate) fn sink_finished(&self) {
        if self.sinks_open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.end();
        }
    }

    /// The app failed: a handler panicked with `message` (see `dirigo_runtime::failure`).
    /// The first message is kept; the sources stop (the runtime discards their turns
    /// anyway) and whoever waits for the app is woken at once.
    pub(crate) fn failed(&self, message: &str) {
        self.handler_panics.fetch_add(1, Ordering::Relaxed);
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| message.to_owned());
        self.stop.store(true, Ordering::Relaxed);
        self.end();
    }

    /// Wakes whoever waits for the app: it completed or failed.
    fn end(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.done_signal.notify_all();
    }
}

/// A sink operator that delivers committed output itself, its partition count, and
/// how it delivers.
pub(crate) type CommitTargetOf = (
    OperatorId,
    PartitionId,
    Arc<dyn crate::checkpoint::link::CommitTarget>,
);

struct AppInner {
    app: AppId,
    name: String,
    parallelism: PartitionId,
    nodes: Mutex<Option<Vec<Node>>>,
    partitions: Mutex<Vec<(String, PartitionId)>>,
    sources: Mutex<Vec<(OperatorId, PartitionId)>>,
    mergeable: Mutex<Vec<(OperatorId, PartitionId)>>,
    /// The operators that are sinks.
    sink_ops: Mutex<Vec<OperatorId>>,
    /// Sinks whose output the checkpoints commit: operator, partitions, file.
    committed: Mutex<Vec<(OperatorId, PartitionId, std::path::PathBuf)>>,
    /// Sinks that deliver the output the checkpoints commit themselves.
    commit_targets: Mutex<Vec<CommitTargetOf>>,
    /// Operators whose state cannot be checkpointed: name, and why.
    not_checkpointable: Mutex<Vec<(String, &'static str)>>,
    /// The app's side of the checkpoints, when they are on (set before install).
    checkpoint: Mutex<Option<Arc<CheckpointLink>>>,
    counters: Arc<AppCounters>,
    /// Per operator, per partition: records it received and sent (filled by `install`).
    counts: Mutex<Vec<OperatorCounts>>,
}

/// One operator's record counts, per partition.
#[derive(Clone)]
struct OperatorCounts {
    records_in: Arc<[PartitionCount]>,
    records_out: Arc<[PartitionCount]>,
}

/// One operator partition's count of the records it received (or sent), alone on its
/// cache line so that partitions on different shards never share one. Its partition's
/// actor adds to it (and its lessees, on their shards, when it has some).
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct PartitionCount(pub(crate) AtomicU64);

impl PartitionCount {
    /// A zero count for each of `partitions`.
    fn per_partition(partitions: PartitionId) -> Arc<[Self]> {
        (0..partitions).map(|_| Self::default()).collect()
    }

    /// Adds `records` to partition `partition`'s count.
    pub(crate) fn add(counts: &[Self], partition: usize, records: u64) {
        if let Some(count) = counts.get(partition) {
            count.0.fetch_add(records, Ordering::Relaxed);
        }
    }
}

/// A built app: install it into a runtime builder, start its sources, wait for it.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

impl App {
    /// The app of a finished graph: `nodes` wait for [`install`](Self::install).
    pub(super) fn new(
        app: AppId,
        name: String,
        parallelism: PartitionId,
        nodes: Vec<Node>,
    ) -> Self {
        Self {
            inner: Arc::new(AppInner {
                app,
                name,
                parallelism,
                nodes: Mutex::new(Some(nodes)),
                partitions: Mutex::new(Vec::new()),
                sources: Mutex::new(Vec::new()),
                mergeable: Mutex::new(Vec::new()),
                sink_ops: Mutex::new(Vec::new()),
                committed: Mutex::new(Vec::new()),
                commit_targets: Mutex::new(Vec::new()),
                not_checkpointable: Mutex::new(Vec::new()),
                checkpoint: Mutex::new(None),
                counters: Arc::new(AppCounters::default()),
                counts: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The app's id.
    pub fn id(&self) -> AppId {
        self.inner.app
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Registers every operator's partitions with `runtime`. Call once.
    ///
    /// # Panics
    /// When called twice.
    pub fn install(&self, runtime: RuntimeBuilder<Msg>) -> RuntimeBuilder<Msg> {
        let nodes = self.take_nodes();
        let partitions = self.partition_counts(&nodes, runtime.planned_shards());
        self.record_layout(&nodes, &partitions);
        let first_consumer = first_consumers(&nodes);
        let mut runtime = self.count_shed(runtime, first_consumer.clone());
        runtime = self.watch_failure(runtime, first_consumer.clone());
        let triggers: Arc<[FrontierTrigger]> = nodes
            .iter()
            .filter_map(|node| node.trigger.clone())
            .collect();
        let batch_sizes = BatchSizes::declared(nodes.iter().map(|node| node.work_per_record));
        let checkpoint = self
            .inner
            .checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (id, node) in nodes.into_iter().enumerate() {
            let operator = id as OperatorId;
            let inputs = NodeInputs::of(operator, &node, &partitions, &first_consumer);
            let wiring = Wiring {
                app: self.inner.app,
                operator,
                edges: node.outputs,
                partitions: partitions.clone(),
                batch_sizes: batch_sizes.clone(),
                counters: self.inner.counters.clone(),
                triggers: triggers.clone(),
                checkpoint: checkpoint.clone(),
                records_out: PartitionCount::per_partition(partitions[id]),
            };
            let records_in = PartitionCount::per_partition(partitions[id]);
            self.inner
                .counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(OperatorCounts {
                    records_in: records_in.clone(),
                    records_out: wiring.records_out.clone(),
                });
            let factory = operator_factory(wiring, node.make, inputs, node.state, records_in);
            runtime = match node.state {
                StateKind::Mergeable => {
                    runtime.mergeable_operator(self.inner.app, operator, factory)
                }
                StateKind::Exclusive => runtime.operator(self.inner.app, operator, factory),
            };
        }
        runtime
    }

    /// The graph's nodes, taken out to be installed.
    fn take_nodes(&self) -> Vec<Node> {
        self.inner
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("an app is installed once")
    }

    /// Each operator's partition count: its own, else the app's, else one per shard of
    /// the runtime (`planned_shards`).
    fn partition_counts(&self, nodes: &[Node], planned_shards: usize) -> Vec<PartitionId> {
        let default = if self.inner.parallelism > 0 {
            self.inner.parallelism
        } else {
            planned_shards as PartitionId
        };
        nodes
            .iter()
            .map(|node| node.parallelism.unwrap_or(default).max(1))
            .collect()
    }

    /// Notes what the app's handle reports about its operators once installed: names and
    /// partition counts, how many sink partitions must finish, the sources to start and
    /// the operators that may get lessees.
    fn record_layout(&self, nodes: &[Node], partitions: &[PartitionId]) {
        *self
            .inner
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = nodes
            .iter()
            .zip(partitions)
            .map(|(node, &p)| (node.name.clone(), p))
            .collect();
        let sinks: u64 = nodes
            .iter()
            .zip(partitions)
            .filter(|(node, _)| node.sink)
            .map(|(_, &p)| u64::from(p))
            .sum();
        self.inner
            .counters
            .sinks_open
            .store(sinks, Ordering::Release);
        *self.inner.sources.lock().unwrap_or_else(|e| e.into_inner()) = nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.source)
            .map(|(id, _)| (id as OperatorId, partitions[id]))
            .collect();
        *self
            .inner
            .mergeable
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.state == StateKind::Mergeable)
            .map(|(id, _)| (id as OperatorId, partitions[id]))
            .collect();
        *self
            .inner
            .sink_ops
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.sink)
            .map(|(id, _)| id as OperatorId)
            .collect();
        *self
            .inner
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = nodes
            .iter()
            .enumerate()
            .filter_map(|(id, node)| {
                let path = node.committed_output.clone()?;
                Some((id as OperatorId, partitions[id], path))
            })
            .collect();
        *self
            .inner
            .commit_targets
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = nodes
            .iter()
            .enumerate()
            .filter_map(|(id, node)| {
                let target = node.commit_target.clone()?;
                Some((id as OperatorId, partitions[id], target))
            })
            .collect();
        *self
            .inner
            .not_checkpointable
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = nodes
            .iter()
            .filter_map(|node| Some((node.name.clone(), node.not_checkpointable?)))
            .collect();
    }

    /// Connects the app to the checkpoints (before [`install`](Self::install)).
    pub(crate) fn attach_checkpoint(&self, link: Arc<CheckpointLink>) {
        *self
            .inner
            .checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(link);
    }

    /// The sink partitions that finished before the checkpoint the app resumes from:
    /// they see no end again, so they count as finished now.
    pub(crate) fn restore_finished_sinks(&self, finished: u64) {
        for _ in 0..finished {
            self.inner.counters.sink_finished();
        }
    }

    /// The source partitions (after [`install`](Self::install)).
    pub(crate) fn source_actors(&self) -> Vec<ActorId> {
        self.actors_of(&self.inner.sources)
    }

    /// Every partition's actor of the operators in `operators` (each with its partition
    /// count).
    fn actors_of(&self, operators: &Mutex<Vec<(OperatorId, PartitionId)>>) -> Vec<ActorId> {
        operators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|&(operator, partitions)| {
                (0..partitions).map(move |p| ActorId::new(self.inner.app, operator, p))
            })
            .collect()
    }

    /// Sinks whose output the checkpoints commit: operator, partitions and file (after
    /// [`install`](Self::install)).
    pub(crate) fn committed_sinks(&self) -> Vec<(OperatorId, PartitionId, std::path::PathBuf)> {
        self.inner
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sinks that deliver committed output themselves: operator, partitions and target
    /// (after [`install`](Self::install)).
    pub(crate) fn commit_targets(&self) -> Vec<CommitTargetOf> {
        self.inner
            .commit_targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The operators whose state cannot be checkpointed, with why (after
    /// [`install`](Self::install)): an app with any runs without checkpoints only.
    pub fn not_checkpointable(&self) -> Vec<(String, &'static str)> {
        self.inner
            .not_checkpointable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The operators that are sinks (after [`install`](Self::install)).
    pub(crate) fn sink_operators(&self) -> Vec<OperatorId> {
        self.inner
            .sink_ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts the records of this app's batches that the runtime sheds: between a source
    /// and its first consumer, or further in.
    fn count_shed(
        &self,
        runtime: RuntimeBuilder<Msg>,
        first_consumer: Vec<Option<OperatorId>>,
    ) -> RuntimeBuilder<Msg> {
        runtime.on_shed(count_dropped(
            self.inner.app,
            self.inner.counters.clone(),
            first_consumer,
            |counters| (&counters.shed_at_ingest, &counters.shed_downstream),
        ))
    }

    /// Hears of the app's handler panics, which fail it (see [`failure`](Self::failure)),
    /// and counts the records of its batches the runtime discards from then on, like
    /// shed ones: between a source and its first consumer, or further in.
    fn watch_failure(
        &self,
        runtime: RuntimeBuilder<Msg>,
        first_consumer: Vec<Option<OperatorId>>,
    ) -> RuntimeBuilder<Msg> {
        let app = self.inner.app;
        let counters = self.inner.counters.clone();
        let runtime = runtime.on_handler_panic(move |actor, message| {
            if actor.app == app {
                counters.failed(message);
            }
        });
        runtime.on_discard(count_dropped(
            app,
            self.inner.counters.clone(),
            first_consumer,
            |counters| {
                (
                    &counters.discarded_at_ingest,
                    &counters.discarded_downstream,
                )
            },
        ))
    }

    /// Each operator's name and partition count, in operator order (after
    /// [`install`](Self::install)).
    pub fn operators(&self) -> Vec<(String, PartitionId)> {
        self.inner
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records each operator received so far (summed over its partitions), in operator
    /// order, with its name; sources receive none. Read with plain loads, no lock a
    /// partition takes: for a monitor that runs beside the shards. Empty before
    /// [`install`](Self::install).
    ///
    /// ```
    /// use dirigo_operators::dataflow::{AppBuilder, Msg};
    /// use dirigo_operators::source::Pacing;
    /// use dirigo_runtime::Runtime;
    /// use std::time::Duration;
    ///
    /// let app = AppBuilder::new(0, "doubling").parallelism(1);
    /// let doubled = app
    ///     .source("numbers", 0, Pacing::Unpaced, |_, _| (0u64..100).map(|n| (n, n)))
    ///     .map("double", |n| n * 2)
    ///     .collect("out");
    /// let app = app.build();
    /// let runtime = app.install(Runtime::<Msg>::builder().shards(1).pinned(false)).build().unwrap();
    /// app.start(&runtime.ingress());
    /// assert!(app.wait(Duration::from_secs(30)));
    /// runtime.shutdown();
    /// let records_in: Vec<u64> = app.records_in().into_iter().map(|(_, n)| n).collect();
    /// assert_eq!(records_in, [0, 100, 100]); // the source, the map, the sink
    /// assert_eq!(doubled.take().len(), 100);
    /// ```
    pub fn records_in(&self) -> Vec<(String, u64)> {
        self.per_operator(|counts| &counts.records_in)
    }

    /// Records each operator sent on (summed over its partitions), in operator order,
    /// with its name: what it handed to the operators after it, a record sent over
    /// several edges (or broadcast) counted once; for a sink, the records it wrote out of
    /// the process (none for one that keeps them in memory or only records latency).
    /// Read like [`records_in`](Self::records_in), and counted as batches leave, so a
    /// record still buffered in its operator is not counted yet.
    ///
    /// ```
    /// use dirigo_operators::dataflow::{AppBuilder, Msg};
    /// use dirigo_operators::source::Pacing;
    /// use dirigo_runtime::Runtime;
    /// use std::time::Duration;
    ///
    /// let app = AppBuilder::new(0, "evens").parallelism(1);
    /// let evens = app
    ///     .source("numbers", 0, Pacing::Unpaced, |_, _| (0u64..100).map(|n| (n, n)))
    ///     .filter("even", |n| n % 2 == 0)
    ///     .collect("out");
    /// let app = app.build();
    /// let runtime = app.install(Runtime::<Msg>::builder().shards(1).pinned(false)).build().unwrap();
    /// app.start(&runtime.ingress());
    /// assert!(app.wait(Duration::from_secs(30)));
    /// runtime.shutdown();
    /// let records_out: Vec<u64> = app.records_out().into_iter().map(|(_, n)| n).collect();
    /// // The source, the filter, and the sink, which keeps its records in memory: none leave.
    /// assert_eq!(records_out, [100, 50, 0]);
    /// assert_eq!(evens.take().len(), 50);
    /// ```
    pub fn records_out(&self) -> Vec<(String, u64)> {
        self.per_operator(|counts| &counts.records_out)
    }

    /// One of each operator's counts, summed over its partitions, with its name.
    fn per_operator(
        &self,
        count: impl Fn(&OperatorCounts) -> &Arc<[PartitionCount]>,
    ) -> Vec<(String, u64)> {
        let counts = self
            .inner
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.operators()
            .into_iter()
            .zip(counts.iter())
            .map(|((name, _), counts)| {
                let records = count(counts)
                    .iter()
                    .map(|partition| partition.0.load(Ordering::Relaxed))
                    .sum();
                (name, records)
            })
            .collect()
    }

    /// The actors of the operators whose state is mergeable: those that may get lessees
    /// (after [`install`](Self::install)).
    pub fn mergeable_actors(&self) -> Vec<ActorId> {
        self.actors_of(&self.inner.mergeable)
    }

    /// Starts every source partition.
    pub fn start(&self, ingress: &Ingress<Msg>) {
        let sources = self
            .inner
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (operator, partitions) in sources {
            for partition in 0..partitions {
                let actor = ActorId::new(self.inner.app, operator, partition);
                // Fails only while the runtime shuts down.
                let _ = ingress.send(Envelope::user(actor, Msg::Tick));
            }
        }
    }

    /// Waits until the app ended: every sink partition has seen the end of every input
    /// (finite sources only), or the app failed; `false` on timeout. Which of the two:
    /// [`failure`](Self::failure). A failed app ends at once, without waiting for its
    /// pipeline to drain.
    pub fn wait(&self, timeout: Duration) -> bool {
        let counters = &self.inner.counters;
        let done = counters.done.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = counters
            .done_signal
            .wait_timeout_while(done, timeout, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }

    /// Whether the app ended: every sink has seen the end of its inputs, or the app
    /// failed ([`failure`](Self::failure) tells which).
    pub fn is_done(&self) -> bool {
        *self
            .inner
            .counters
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Why the app failed, if it did: the message of the first of its handlers that
    /// panicked. A handler panic fails its app: the runtime stops running its handlers
    /// and discards its messages (counted in [`Flow`]), its sources stop, and
    /// [`wait`](Self::wait) returns at once; the runtime's other apps go on. Nothing is
    /// re-created or replayed (see [`dirigo_runtime::failure`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dirigo_operators::dataflow::{AppBuilder, Msg};
    /// use dirigo_operators::source::Pacing;
    /// use dirigo_runtime::Runtime;
    ///
    /// // (time, value) pairs.
    /// let records: Vec<(u64, u64)> = (0..100u64).map(|i| (i, i)).collect();
    /// let fragile = AppBuilder::new(0, "fragile");
    /// fragile
    ///     .source_iter("numbers", records.clone(), 0, Pacing::Unpaced)
    ///     .map("check", |value: u64| {
    ///         assert!(value != 42, "value {value} is bad");
    ///         value
    ///     })
    ///     .count("out");
    /// let healthy = AppBuilder::new(1, "healthy");
    /// let outputs = healthy
    ///     .source_iter("numbers", records, 0, Pacing::Unpaced)
    ///     .count("out");
    /// let (fragile, healthy) = (fragile.build(), healthy.build());
    /// let builder = Runtime::<Msg>::builder().shards(2);
    /// let runtime = healthy.install(fragile.install(builder)).build().unwrap();
    /// fragile.start(&runtime.ingress());
    /// healthy.start(&runtime.ingress());
    /// assert!(fragile.wait(Duration::from_secs(10)), "a failed app ends at once");
    /// assert_eq!(fragile.failure().as_deref(), Some("value 42 is bad"));
    /// assert_eq!(fragile.handler_panics(), 1);
    /// assert!(healthy.wait(Duration::from_secs(10)));
    /// assert_eq!(healthy.failure(), None);
    /// assert_eq!(outputs.outputs(), 100);
    /// runtime.shutdown();
    /// ```
    pub fn failure(&self) -> Option<String> {
        self.inner
            .counters
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many of the app's handlers panicked: 0 unless it [failed](Self::failure);
    /// usually 1, more when partitions on other shards panicked before they saw the
    /// failure.
    pub fn handler_panics(&self) -> u64 {
        self.inner.counters.handler_panics.load(Ordering::Relaxed)
    }

    /// Records that arrived after their operator's input frontier had passed them, and
    /// were dropped.
    pub fn late_records(&self) -> u64 {
        self.inner.counters.late.load(Ordering::Relaxed)
    }

    /// Stops every source: each ends as if exhausted (its end, [`Msg::End`], closes every
    /// window), so the pipeline drains and [`wait`](Self::wait) returns. For unbounded
    /// sources and runs of a fixed duration.
    pub fn stop(&self) {
        self.inner.counters.stop.store(true, Ordering::Relaxed);
    }

    /// When the app's sources started, on the runtime's clock
    /// ([`dirigo_runtime::clock::now`]): the instant from which every paced source counts
    /// its records' intended send times (record `i` of a source paced at `r` records per
    /// second is due `i / r` seconds after it). `None` before the first source turn.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dirigo_operators::dataflow::{AppBuilder, Msg};
    /// use dirigo_operators::source::Pacing;
    /// use dirigo_runtime::{clock, Runtime};
    ///
    /// let app = AppBuilder::new(0, "paced");
    /// let ticks: Vec<(u64, u64)> = (0..1_000u64).map(|i| (i, i)).collect();
    /// app.source_iter("ticks", ticks, 0, Pacing::Rate(100_000.0)).count("out");
    /// let app = app.build();
    /// let runtime = app.install(Runtime::<Msg>::builder().shards(2)).build().unwrap();
    /// assert_eq!(app.paced_since(), None);
    /// app.start(&runtime.ingress());
    /// assert!(app.wait(Duration::from_secs(10)));
    /// // 1 000 records at 100 000 a second: the last was due 9.99 ms after the epoch.
    /// let since = app.paced_since().unwrap();
    /// assert!(clock::now() >= since + 9_990_000);
    /// runtime.shutdown();
    /// ```
    pub fn paced_since(&self) -> Option<Nanos> {
        match self.inner.counters.paced_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(since),
        }
    }

    /// Where the app's records went so far: see [`Flow`].
    pub fn flow(&self) -> Flow {
        let counters = &self.inner.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Flow {
            emitted: read(&counters.emitted),
            ingested: read(&counters.ingested),
            shed_at_ingest: read(&counters.shed_at_ingest),
            shed_downstream: read(&counters.shed_downstream),
            late: read(&counters.late),
            outputs_written: read(&counters.outputs_written),
            outputs_failed: read(&counters.outputs_failed),
            discarded_at_ingest: read(&counters.discarded_at_ingest),
            discarded_downstream: read(&counters.discarded_downstream),
        }
    }

    /// The first error a sink of the app met writing its output (where, and why), if
    /// any: see [`Flow::outputs_failed`].
    pub fn output_error(&self) -> Option<String> {
        self.inner
            .counters
            .output_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A hook that counts the records of the app's batches the runtime drops (shed or
/// discarded): in the first of the two counters `which` picks when the batch went from a
/// source to its first consumer, in the second when it was further in.
fn count_dropped(
    app: AppId,
    counters: Arc<AppCounters>,
    first_consumer: Vec<Option<OperatorId>>,
    which: fn(&AppCounters) -> (&AtomicU64, &AtomicU64),
) -> impl Fn(&Envelope<Msg>) + Send + Sync + 'static {
    move |envelope| {
        if envelope.target.app != app {
            return;
        }
        if let Msg::Data { records, .. } = &envelope.payload {
            let (at_ingest, downstream) = which(&counters);
            let counter = if is_ingest(envelope, &first_consumer) {
                at_ingest
            } else {
                downstream
            };
            counter.fetch_add(u64::from(*records), Ordering::Relaxed);
        }
    }
}

/// Whether `envelope` goes from a source to its first consumer (see [`first_consumers`]).
fn is_ingest(envelope: &Envelope<Msg>, first_consumer: &[Option<OperatorId>]) -> bool {
    envelope.source.is_some_and(|sender| {
        first_consumer
            .get(usize::from(sender.operator))
            .copied()
            .flatten()
            == Some(envelope.target.operator)
    })
}

/// Per operator: for a source, its first consumer (the lowest-numbered operator reading
/// it), where its records are counted once, as they arrive, however many operators read
/// it; `None` for other operators and unread sources.
fn first_consumers(nodes: &[Node]) -> Vec<Option<OperatorId>> {
    (0..nodes.len())
        .map(|source| {
            if !nodes[source].source {
                return None;
            }
            nodes
                .iter()
                .position(|node| node.inputs.contains(&(source as OperatorId)))
                .map(|consumer| consumer as OperatorId)
        })
        .collect()
}

/// What an operator's actor knows of its inputs, shared by its partitions.
struct NodeInputs {
    /// Per input, the upstream operator and its partition count.
    inputs: Arc<[(OperatorId, PartitionId)]>,
    /// Per input, whether it comes straight from a source whose first consumer this is.
    from_source: Arc<[bool]>,
    /// Upstream partitions over every input.
    slots: usize,
    /// Distinct upstream partitions (an operator read twice counts once): how many
    /// parts of a checkpoint barrier arrive.
    barrier_inputs: u32,
}

impl NodeInputs {
    fn of(
        operator: OperatorId,
        node: &Node,
        partitions: &[PartitionId],
        first_consumer: &[Option<OperatorId>],
    ) -> Self {
        let inputs: Arc<[(OperatorId, PartitionId)]> = node
            .inputs
            .iter()
            .map(|&input| (input, partitions[usize::from(input)]))
            .collect();
        let slots: usize = inputs.iter().map(|&(_, p)| p as usize).sum();
        let from_source: Arc<[bool]> = node
            .inputs
            .iter()
            .map(|&input| first_consumer[usize::from(input)] == Some(operator))
            .collect();
        let mut distinct: Vec<OperatorId> = node.inputs.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let barrier_inputs: u32 = distinct
            .iter()
            .map(|&input| partitions[usize::from(input)])
            .sum();
        Self {
            inputs,
            from_source,
            slots,
            barrier_inputs,
        }
    }
}

/// The factory the runtime calls for each of an operator's actors: a fresh
/// [`OperatorActor`] around the operator's logic, or the one that went dormant.
fn operator_factory(
    wiring: Wiring,
    make: MakeLogic,
    inputs: NodeInputs,
    state: StateKind,
    records_in: Arc<[PartitionCount]>,
) -> impl Fn(ActorId, Option<SavedState>) -> Box<dyn Actor<Msg>> + Send + Sync + 'static {
    let wiring = Arc::new(wiring);
    let exclusive = state == StateKind::Exclusive;
    move |actor: ActorId, saved: Option<SavedState>| -> Box<dyn Actor<Msg>> {
        // Back from an idle spell: as it was (see `OperatorActor::deactivate`).
        if let Some(Ok(dormant)) = saved.map(|saved| saved.downcast::<OperatorActor>()) {
            return dormant;
        }
        let mut fresh = OperatorActor::new(
            make(&wiring, actor.partition),
            (inputs.inputs.clone(), inputs.from_source.clone()),
            (
                wiring.counters.clone(),
                wiring.batch_sizes.meter(actor.operator),
            ),
            (records_in.clone(), actor.partition as usize),
            (inputs.slots, inputs.barrier_inputs),
            exclusive,
            wiring.checkpoint.clone(),
        );
        if let Some(link) = &wiring.checkpoint {
            if let Some(part) = link.take_restored(actor.operator, actor.partition) {
                if let Err(e) = fresh.restore(&part.inputs, part.state()) {
                    let message = format!(
                        "cannot restore {actor} from checkpoint {}: {e}",
                        link.resumed_from()
                    );
                    tracing::error!("{message}");
                    wiring.counters.failed(&message);
                }
                link.restored();
            }
        }
        Box::new(fresh)
    }
}

/// Where an app's records went. Once the app is done, every record its sources emitted
/// was either taken in by the operator after them, shed on the way, or discarded because
/// the app failed: `emitted == ingested + shed_at_ingest + discarded_at_ingest` (while
/// it runs, some are in flight).
/// Malformed input never becomes a record: sources count it as dead letters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Flow {
    /// Records the sources emitted.
    pub emitted: u64,
    /// Records the operators right after the sources received (for a source read by
    /// several operators, counted at the first of them, so each record once).
    pub ingested: u64,
    /// Records the scheduler shed between a source and its first consumer.
    pub shed_at_ingest: u64,
    /// Records the scheduler shed further in (between two operators).
    pub shed_downstream: u64,
    /// Records dropped because they came after their window had fired.
    pub late: u64,
    /// Records sinks wrote out (JSON lines to a file, standard output or a socket; the
    /// in-memory and latency sinks write nothing out).
    pub outputs_written: u64,
    /// Records sinks could not write out (a full disk, a closed pipe, a peer that
    /// stopped reading): lost. [`App::output_error`] says where and why.
    pub outputs_failed: u64,
    /// Records discarded between a source and its first consumer because the app failed
    /// (see [`App::failure`]).
    pub discarded_at_ingest: u64,
    /// Records discarded further in because the app failed.
    pub discarded_downstream: u64,
}
