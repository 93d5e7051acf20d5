//! Apps as dataflow graphs: the builder, the message every operator exchanges, and the
//! actor that runs one partition of an operator.
//!
//! An app is a DAG. Each vertex is an operator with some number of partitions (by default
//! as many as the runtime has shards); each partition is a virtual actor
//! `(app, operator, partition)`. Each edge declares its partitioning
//! ([`Partitioning`]): forward, key-hash, broadcast or round-robin.
//!
//! Records travel in batches ([`Msg::Data`]), each record with its event time
//! ([`Time`], milliseconds). Event time progresses by watermarks ([`Msg::Watermark`]): a
//! *frontier* `f` from an upstream partition promises that it sends no more records with
//! time `< f`. An operator partition's input frontier is the least frontier over every
//! partition of every input, so where streams merge, watermarks are aligned. When it
//! advances, the operator fires what it can (windows, closed auctions) and passes the new
//! frontier to every downstream partition. Watermarks are critical messages: they run on
//! the lessor, after everything that arrived before them, on consolidated state. That is
//! why operators that may have lessees (mergeable ones) emit only when the frontier
//! advances: everything they emit leaves from the lessor, in order with the watermark.
//! Stateless operators (`map`, `filter`, `flat_map`) are therefore not leased: their
//! parallelism is their partitions.
//!
//! A record with a time below the operator's input frontier is *late*: windows count it
//! (see [`App::late_records`]) and drop it.
//!
//! Finite sources end with the frontier [`Time::MAX`]; it flushes every window, and when
//! every sink partition has seen it the app is complete ([`App::wait`]).

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use dirigo_runtime::{
    Actor, ActorId, AppId, Context, Envelope, Ingress, MessageKind, Nanos, OperatorId, PartitionId,
    RuntimeBuilder, SavedState, SchedContext, Snapshot, SnapshotError, StateKind,
};

use crate::partition::{key_hash, Partitioning, Route};

/// Event time, in milliseconds.
pub type Time = u64;

/// Records that flow between operators: cloneable (broadcast edges and fan-out copy them)
/// and sendable between shards.
pub trait Data: Clone + Send + 'static {}
impl<T: Clone + Send + 'static> Data for T {}

/// The message every operator of every app exchanges.
pub enum Msg {
    /// A batch of records.
    Data {
        /// How many records the batch holds (for accounting without its type).
        records: u32,
        /// A `Vec<(Time, T)>`, `T` the edge's record type.
        batch: Box<dyn Any + Send>,
    },
    /// The sending partition's frontier: it sends no more records with time below it.
    Watermark(Time),
    /// A source's turn to produce (sent to itself, or by [`App::start`]).
    Tick,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Data { records, .. } => write!(f, "Data({records} records)"),
            Msg::Watermark(frontier) => write!(f, "Watermark({frontier})"),
            Msg::Tick => f.write_str("Tick"),
        }
    }
}

/// A batch of records with their event times.
pub type Batch<T> = Vec<(Time, T)>;

/// The batch a [`Msg::Data`] carries on an edge of record type `T`.
///
/// # Panics
/// When the edge carries another type: the typed stream API makes that impossible.
pub(crate) fn batch_of<T: 'static>(data: Box<dyn Any + Send>) -> Batch<T> {
    *data
        .downcast::<Batch<T>>()
        .expect("an edge carries its upstream operator's record type")
}

/// Most records a partition buffers for one downstream partition before it sends them.
pub const MAX_BATCH: usize = 1024;

pub(crate) type KeyHashFn<T> = Arc<dyn Fn(&T) -> u64 + Send + Sync>;

/// One outgoing edge, typed by the records that travel on it.
pub(crate) struct EdgeSpec<T> {
    pub(crate) target: OperatorId,
    pub(crate) partitioning: Partitioning,
    pub(crate) key: Option<KeyHashFn<T>>,
}

/// Builds one partition's logic, given the node's outgoing edges (each an `EdgeSpec<T>` of
/// the node's output type) and the partition counts of every node.
pub(crate) type MakeLogic =
    Arc<dyn Fn(&Wiring, PartitionId) -> Box<dyn Logic> + Send + Sync + 'static>;

/// Says whether advancing an event-time frontier from the first time to the second
/// makes an operator act (fire a window): the event times an operator's output waits for.
pub(crate) type FrontierTrigger = Arc<dyn Fn(Time, Time) -> bool + Send + Sync>;

/// What an operator's partition needs to know about the graph when it is created.
pub(crate) struct Wiring {
    pub(crate) app: AppId,
    pub(crate) operator: OperatorId,
    pub(crate) edges: Vec<Box<dyn Any + Send + Sync>>,
    pub(crate) partitions: Vec<PartitionId>,
    pub(crate) counters: Arc<AppCounters>,
    /// The triggers of every operator of the app that has one (windows on a fixed grid):
    /// a source sends a watermark at once when its frontier crosses one.
    pub(crate) triggers: Arc<[FrontierTrigger]>,
}

/// How many partitions the operator being created has.
pub(crate) fn partitions_of_self(wiring: &Wiring, _partition: PartitionId) -> PartitionId {
    wiring.partitions[usize::from(wiring.operator)]
}

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
    pub(crate) done: Mutex<bool>,
    pub(crate) done_signal: Condvar,
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

    pub(crate) fn sink_finished(&self) {
        if self.sinks_open.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
            self.done_signal.notify_all();
        }
    }
}

/// The behaviour of one operator partition, behind the actor that runs it.
pub(crate) trait Logic: 'static {
    /// A batch arrived on input `input` (the index of the upstream operator among the
    /// node's inputs).
    fn on_data(&mut self, ctx: &mut Context<'_, Msg>, input: usize, data: Box<dyn Any + Send>);
    /// The input frontier advanced to `frontier`; the logic fires what it can, then the
    /// actor forwards the frontier with [`Logic::forward_frontier`].
    fn on_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        let _ = (ctx, frontier);
    }
    /// Sends `frontier` to every downstream partition.
    fn forward_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time);
    /// Whether advancing the input frontier from `from` to `to` makes the logic read its
    /// whole state (fire a window, emit an aggregate). When not, the watermark runs on the
    /// lessor without consolidating the lessees' partial states. Default: always.
    fn frontier_needs_state(&self, from: Time, to: Time) -> bool {
        let _ = (from, to);
        true
    }
    /// A source's turn.
    fn on_tick(&mut self, ctx: &mut Context<'_, Msg>) {
        let _ = ctx;
    }
    /// Mergeable operators: hands over the partial state, leaving it empty.
    fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
        Ok(None)
    }
    /// Mergeable operators: folds a lessee's partial state in.
    fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
        let _ = partial;
        Ok(())
    }
}

/// The outgoing side of an operator partition: routes records over the edges and batches
/// them per downstream partition.
pub(crate) struct Output<T> {
    app: AppId,
    edges: Vec<EdgeOut<T>>,
    /// The ingress time to stamp on what is flushed next, for sources (`None`: inherit the
    /// message being handled).
    pub(crate) ingress: Option<Nanos>,
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
}

impl<T: Data> Output<T> {
    pub(crate) fn new(wiring: &Wiring, me: PartitionId) -> Self {
        let edges = wiring
            .edges
            .iter()
            .map(|edge| {
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
                }
            })
            .collect();
        Self {
            app: wiring.app,
            edges,
            ingress: None,
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
                        if edge.buffers[partition as usize].len() >= MAX_BATCH {
                            Self::send_buffer(self.app, self.ingress, edge, partition, ctx);
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
                    if buffer.len() >= MAX_BATCH {
                        Self::send_buffer(self.app, self.ingress, edge, partition, ctx);
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
            let room = MAX_BATCH.saturating_sub(buffer.len());
            buffer.reserve(room.min(rest.len()));
            buffer.extend(rest.by_ref().take(room).map(|record| (time, record)));
            if buffer.len() < MAX_BATCH {
                break;
            }
            Self::send_buffer(self.app, self.ingress, edge, partition, ctx);
        }
    }

    fn send_buffer(
        app: AppId,
        ingress: Option<Nanos>,
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
                    Self::send_buffer(self.app, self.ingress, edge, partition, ctx);
                }
            }
        }
    }

    /// Flushes, then sends `frontier` to every downstream partition, as a critical
    /// message.
    pub(crate) fn frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
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
                        payload: Msg::Watermark(frontier),
                    }),
                    None => ctx.send_critical(target, Msg::Watermark(frontier)),
                };
            }
        }
    }
}

/// The actor that runs one operator partition: finds which input a message came from,
/// aligns watermarks over every upstream partition, and hands the rest to the logic.
pub(crate) struct OperatorActor {
    logic: Box<dyn Logic>,
    inputs: Arc<[(OperatorId, PartitionId)]>,
    /// Per input: whether it comes straight from a source (its records are counted as
    /// ingested).
    from_source: Arc<[bool]>,
    counters: Arc<AppCounters>,
    /// Per upstream partition of every input, its frontier; inputs side by side.
    frontiers: Vec<Time>,
    frontier: Time,
    /// The same, as of the watermarks admitted so far (the runtime asks
    /// [`Actor::barrier`] once per critical message, in the order they will run).
    admitted: std::cell::RefCell<(Vec<Time>, Time)>,
    /// Whether the operator's state is exclusive: it never has lessees, so its lessor's
    /// state is the whole state and a watermark needs no consolidation.
    exclusive: bool,
}

impl OperatorActor {
    fn input_of(&self, source: Option<ActorId>) -> (usize, usize) {
        let mut offset = 0;
        if let Some(source) = source {
            for (index, &(operator, partitions)) in self.inputs.iter().enumerate() {
                if operator == source.operator {
                    return (index, offset + source.partition as usize);
                }
                offset += partitions as usize;
            }
        }
        (0, 0)
    }
}

impl Actor<Msg> for OperatorActor {
    /// A watermark that moves the aligned frontier past no window end runs on the lessor
    /// alone: nothing it does reads state a lessee holds. Nor does any watermark of an
    /// operator with exclusive state (it has no lessees): it runs in arrival order,
    /// without blocking the actor. (A blocked actor holds back what arrives, and runs its
    /// mailbox ahead of other actors' work until the critical message's turn comes.)
    fn barrier(&self, message: &Envelope<Msg>) -> dirigo_runtime::Barrier {
        let Msg::Watermark(frontier) = message.payload else {
            return dirigo_runtime::Barrier::Single;
        };
        if self.exclusive {
            return dirigo_runtime::Barrier::Local;
        }
        let (_, slot) = self.input_of(message.source);
        let mut admitted = self.admitted.borrow_mut();
        let (frontiers, aligned) = &mut *admitted;
        if let Some(seen) = frontiers.get_mut(slot) {
            *seen = (*seen).max(frontier);
        }
        let next = frontiers.iter().copied().min().unwrap_or(frontier);
        if next <= *aligned {
            return dirigo_runtime::Barrier::Local;
        }
        let from = std::mem::replace(aligned, next);
        if self.logic.frontier_needs_state(from, next) {
            dirigo_runtime::Barrier::Single
        } else {
            dirigo_runtime::Barrier::Local
        }
    }

    fn receive(&mut self, ctx: &mut Context<'_, Msg>, message: Envelope<Msg>) {
        match message.payload {
            Msg::Data { records, batch } => {
                let (input, _) = self.input_of(message.source);
                if self.from_source.get(input).copied().unwrap_or(false) {
                    self.counters
                        .ingested
                        .fetch_add(u64::from(records), Ordering::Relaxed);
                }
                self.logic.on_data(ctx, input, batch);
            }
            Msg::Watermark(frontier) => {
                let (_, slot) = self.input_of(message.source);
                if let Some(seen) = self.frontiers.get_mut(slot) {
                    *seen = (*seen).max(frontier);
                }
                let aligned = self.frontiers.iter().copied().min().unwrap_or(frontier);
                if aligned > self.frontier {
                    self.frontier = aligned;
                    self.logic.on_frontier(ctx, aligned);
                    self.logic.forward_frontier(ctx, aligned);
                }
            }
            Msg::Tick => self.logic.on_tick(ctx),
        }
    }

    /// An operator idle past the runtime's deactivation timeout (a source that went
    /// quiet upstream) keeps everything: its logic's state (open windows, running
    /// aggregates, a sink's writer) and its inputs' frontiers. The factory takes it back
    /// as it was on the next message; without this, a window's records from before the
    /// quiet spell were lost and a file sink was opened afresh.
    fn deactivate(self: Box<Self>) -> Option<SavedState> {
        Some(self)
    }

    fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
        self.logic.snapshot()
    }

    fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
        self.logic.merge(partial)
    }
}

struct Node {
    name: String,
    parallelism: Option<PartitionId>,
    state: StateKind,
    inputs: Vec<OperatorId>,
    outputs: Vec<Box<dyn Any + Send + Sync>>,
    make: MakeLogic,
    sink: bool,
    source: bool,
    trigger: Option<FrontierTrigger>,
}

pub(crate) struct Graph {
    app: AppId,
    name: String,
    parallelism: PartitionId,
    nodes: Vec<Node>,
}

/// Builds an app: add sources, chain operators onto their streams, end in sinks, then
/// [`build`](AppBuilder::build).
///
/// ```
/// use std::time::Duration;
/// use dirigo_operators::dataflow::{AppBuilder, Msg};
/// use dirigo_operators::source::Pacing;
/// use dirigo_runtime::Runtime;
///
/// let app = AppBuilder::new(0, "squares");
/// let numbers: Vec<(u64, u64)> = (0..100u64).map(|i| (i, i)).collect();
/// let numbers = app.source_iter("numbers", numbers, 0, Pacing::Unpaced);
/// let squares = numbers.map("square", |n| n * n).filter("even", |n| n % 2 == 0);
/// let out = squares.collect("out");
/// let app = app.build();
///
/// let runtime = app.install(Runtime::<Msg>::builder().shards(2)).build().unwrap();
/// app.start(&runtime.ingress());
/// assert!(app.wait(Duration::from_secs(10)));
/// let mut squares = out.take();
/// squares.sort();
/// assert_eq!(squares.len(), 50);
/// assert_eq!(squares[1], 4);
/// runtime.shutdown();
/// ```
pub struct AppBuilder {
    graph: Rc<RefCell<Graph>>,
}

impl AppBuilder {
    /// An empty app with id `app` (unique in the runtime) and a name for reports.
    pub fn new(app: AppId, name: &str) -> Self {
        Self {
            graph: Rc::new(RefCell::new(Graph {
                app,
                name: name.to_owned(),
                parallelism: 0,
                nodes: Vec::new(),
            })),
        }
    }

    /// Partitions per operator, unless an operator sets its own (default: as many as the
    /// runtime has shards, decided at [`App::install`]).
    pub fn parallelism(self, partitions: PartitionId) -> Self {
        self.graph.borrow_mut().parallelism = partitions;
        self
    }

    pub(crate) fn add_source<T: Data>(&self, name: &str, make: MakeLogic) -> Stream<T> {
        let node = add_node(&self.graph, name, StateKind::Exclusive, make);
        self.graph.borrow_mut().nodes[usize::from(node)].source = true;
        Stream::new(self.graph.clone(), node)
    }

    /// Finishes the graph.
    pub fn build(self) -> App {
        let graph = Rc::try_unwrap(self.graph)
            .map(RefCell::into_inner)
            .unwrap_or_else(|shared| {
                // Streams still alive: take the nodes out of the shared graph.
                let mut graph = shared.borrow_mut();
                Graph {
                    app: graph.app,
                    name: graph.name.clone(),
                    parallelism: graph.parallelism,
                    nodes: std::mem::take(&mut graph.nodes),
                }
            });
        App {
            inner: Arc::new(AppInner {
                app: graph.app,
                name: graph.name,
                parallelism: graph.parallelism,
                nodes: Mutex::new(Some(graph.nodes)),
                partitions: Mutex::new(Vec::new()),
                sources: Mutex::new(Vec::new()),
                mergeable: Mutex::new(Vec::new()),
                counters: Arc::new(AppCounters::default()),
            }),
        }
    }
}

fn add_node(
    graph: &Rc<RefCell<Graph>>,
    name: &str,
    state: StateKind,
    make: MakeLogic,
) -> OperatorId {
    let mut graph = graph.borrow_mut();
    let id = OperatorId::try_from(graph.nodes.len()).expect("at most 65 536 operators per app");
    graph.nodes.push(Node {
        name: name.to_owned(),
        parallelism: None,
        state,
        inputs: Vec::new(),
        outputs: Vec::new(),
        make,
        sink: false,
        source: false,
        trigger: None,
    });
    id
}

/// A stream of records of type `T`: the output of one operator.
pub struct Stream<T> {
    graph: Rc<RefCell<Graph>>,
    node: OperatorId,
    _records: PhantomData<fn() -> T>,
}

impl<T> Clone for Stream<T> {
    fn clone(&self) -> Self {
        Self {
            graph: self.graph.clone(),
            node: self.node,
            _records: PhantomData,
        }
    }
}

/// A stream whose next operator receives its records partitioned by a key `K`.
pub struct KeyedStream<T, K> {
    pub(crate) stream: Stream<T>,
    pub(crate) key: Arc<dyn Fn(&T) -> K + Send + Sync>,
}

impl<T, K> Clone for KeyedStream<T, K> {
    fn clone(&self) -> Self {
        Self {
            stream: self.stream.clone(),
            key: self.key.clone(),
        }
    }
}

impl<T: Data> Stream<T> {
    fn new(graph: Rc<RefCell<Graph>>, node: OperatorId) -> Self {
        Self {
            graph,
            node,
            _records: PhantomData,
        }
    }

    /// The operator that produces this stream.
    pub fn operator(&self) -> OperatorId {
        self.node
    }

    /// Sets the number of partitions of the operator that produces this stream.
    pub fn set_parallelism(self, partitions: PartitionId) -> Self {
        self.graph.borrow_mut().nodes[usize::from(self.node)].parallelism = Some(partitions.max(1));
        self
    }

    /// Keeps the state of the operator that produces this stream on its home shard: it
    /// never gets lessees, even when its state could be merged (a window whose per-key
    /// work is too small to be worth spreading, or a pipeline that must not scale).
    pub fn exclusive(self) -> Self {
        self.graph.borrow_mut().nodes[usize::from(self.node)].state = StateKind::Exclusive;
        self
    }

    /// Whether the operator that produces this stream may get lessees.
    pub fn is_mergeable(&self) -> bool {
        self.graph.borrow().nodes[usize::from(self.node)].state == StateKind::Mergeable
    }

    /// Adds an operator fed by this stream over an edge with `partitioning`.
    pub(crate) fn then<O: Data>(
        &self,
        name: &str,
        state: StateKind,
        partitioning: Partitioning,
        key: Option<KeyHashFn<T>>,
        make: MakeLogic,
    ) -> Stream<O> {
        let node = add_node(&self.graph, name, state, make);
        self.connect(node, partitioning, key);
        Stream::new(self.graph.clone(), node)
    }

    /// Adds an edge from this stream to operator `to`.
    pub(crate) fn connect(
        &self,
        to: OperatorId,
        partitioning: Partitioning,
        key: Option<KeyHashFn<T>>,
    ) {
        let mut graph = self.graph.borrow_mut();
        graph.nodes[usize::from(self.node)]
            .outputs
            .push(Box::new(EdgeSpec::<T> {
                target: to,
                partitioning,
                key,
            }));
        graph.nodes[usize::from(to)].inputs.push(self.node);
    }

    pub(crate) fn graph(&self) -> &Rc<RefCell<Graph>> {
        &self.graph
    }

    /// Declares the event times at which the operator that produces this stream acts.
    pub(crate) fn set_trigger(&self, trigger: FrontierTrigger) {
        set_trigger(&self.graph, self.node, trigger);
    }

    pub(crate) fn mark_sink(&self, node: OperatorId) {
        self.graph.borrow_mut().nodes[usize::from(node)].sink = true;
    }

    /// Partitions the next operator's input by `key`: records with equal keys reach the
    /// same partition.
    pub fn key_by<K: Hash + 'static>(
        &self,
        key: impl Fn(&T) -> K + Send + Sync + 'static,
    ) -> KeyedStream<T, K> {
        KeyedStream {
            stream: self.clone(),
            key: Arc::new(key),
        }
    }
}

impl<T: Data, K: Hash + 'static> KeyedStream<T, K> {
    /// The key hash the edge partitions by.
    pub(crate) fn hasher(&self) -> KeyHashFn<T> {
        let key = self.key.clone();
        Arc::new(move |record: &T| key_hash(&key(record)))
    }

    /// The stream, unkeyed.
    pub fn stream(&self) -> &Stream<T> {
        &self.stream
    }
}

pub(crate) fn add_operator(
    graph: &Rc<RefCell<Graph>>,
    name: &str,
    state: StateKind,
    make: MakeLogic,
) -> OperatorId {
    add_node(graph, name, state, make)
}

/// Declares the event times at which operator `node` acts (see [`FrontierTrigger`]).
pub(crate) fn set_trigger(graph: &Rc<RefCell<Graph>>, node: OperatorId, trigger: FrontierTrigger) {
    graph.borrow_mut().nodes[usize::from(node)].trigger = Some(trigger);
}

pub(crate) fn stream_of<T: Data>(graph: &Rc<RefCell<Graph>>, node: OperatorId) -> Stream<T> {
    Stream::new(graph.clone(), node)
}

struct AppInner {
    app: AppId,
    name: String,
    parallelism: PartitionId,
    nodes: Mutex<Option<Vec<Node>>>,
    partitions: Mutex<Vec<(String, PartitionId)>>,
    sources: Mutex<Vec<(OperatorId, PartitionId)>>,
    mergeable: Mutex<Vec<(OperatorId, PartitionId)>>,
    counters: Arc<AppCounters>,
}

/// A built app: install it into a runtime builder, start its sources, wait for it.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

impl App {
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
        let nodes = self
            .inner
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("an app is installed once");
        let default = if self.inner.parallelism > 0 {
            self.inner.parallelism
        } else {
            runtime.planned_shards() as PartitionId
        };
        let partitions: Vec<PartitionId> = nodes
            .iter()
            .map(|node| node.parallelism.unwrap_or(default).max(1))
            .collect();
        *self
            .inner
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = nodes
            .iter()
            .zip(&partitions)
            .map(|(node, &p)| (node.name.clone(), p))
            .collect();
        let sinks: u64 = nodes
            .iter()
            .zip(&partitions)
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
        // A source's records are counted once, as they reach its first consumer (the
        // lowest-numbered operator reading it), however many operators read it.
        let first_consumer: Vec<Option<OperatorId>> = (0..nodes.len())
            .map(|source| {
                if !nodes[source].source {
                    return None;
                }
                nodes
                    .iter()
                    .position(|node| node.inputs.contains(&(source as OperatorId)))
                    .map(|consumer| consumer as OperatorId)
            })
            .collect();
        let app = self.inner.app;
        let counters = self.inner.counters.clone();
        let consumers = first_consumer.clone();
        let mut runtime = runtime.on_shed(move |envelope| {
            if envelope.target.app != app {
                return;
            }
            if let Msg::Data { records, .. } = &envelope.payload {
                let ingest = envelope.source.is_some_and(|sender| {
                    consumers
                        .get(usize::from(sender.operator))
                        .copied()
                        .flatten()
                        == Some(envelope.target.operator)
                });
                let counter = if ingest {
                    &counters.shed_at_ingest
                } else {
                    &counters.shed_downstream
                };
                counter.fetch_add(u64::from(*records), Ordering::Relaxed);
            }
        });
        let triggers: Arc<[FrontierTrigger]> = nodes
            .iter()
            .filter_map(|node| node.trigger.clone())
            .collect();
        for (id, node) in nodes.into_iter().enumerate() {
            let inputs: Arc<[(OperatorId, PartitionId)]> = node
                .inputs
                .iter()
                .map(|&input| (input, partitions[usize::from(input)]))
                .collect();
            let slots: usize = inputs.iter().map(|&(_, p)| p as usize).sum();
            let from_source: Arc<[bool]> = node
                .inputs
                .iter()
                .map(|&input| first_consumer[usize::from(input)] == Some(id as OperatorId))
                .collect();
            let wiring = Arc::new(Wiring {
                app: self.inner.app,
                operator: id as OperatorId,
                edges: node.outputs,
                partitions: partitions.clone(),
                counters: self.inner.counters.clone(),
                triggers: triggers.clone(),
            });
            let make = node.make.clone();
            let exclusive = node.state == StateKind::Exclusive;
            let factory = move |actor: ActorId, saved: Option<SavedState>| -> Box<dyn Actor<Msg>> {
                // Back from an idle spell: as it was (see `OperatorActor::deactivate`).
                if let Some(Ok(dormant)) = saved.map(|saved| saved.downcast::<OperatorActor>()) {
                    return dormant;
                }
                Box::new(OperatorActor {
                    logic: make(&wiring, actor.partition),
                    inputs: inputs.clone(),
                    from_source: from_source.clone(),
                    counters: wiring.counters.clone(),
                    frontiers: vec![0; slots],
                    frontier: 0,
                    admitted: std::cell::RefCell::new((vec![0; slots], 0)),
                    exclusive,
                })
            };
            let operator = id as OperatorId;
            runtime = match node.state {
                StateKind::Mergeable => {
                    runtime.mergeable_operator(self.inner.app, operator, factory)
                }
                StateKind::Exclusive => runtime.operator(self.inner.app, operator, factory),
            };
        }
        runtime
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

    /// The actors of the operators whose state is mergeable: those that may get lessees
    /// (after [`install`](Self::install)).
    pub fn mergeable_actors(&self) -> Vec<ActorId> {
        self.inner
            .mergeable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|&(operator, partitions)| {
                (0..partitions).map(move |p| ActorId::new(self.inner.app, operator, p))
            })
            .collect()
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

    /// Waits until every sink partition has seen the end of every input (finite sources
    /// only); `false` on timeout.
    pub fn wait(&self, timeout: Duration) -> bool {
        let counters = &self.inner.counters;
        let done = counters.done.lock().unwrap_or_else(|e| e.into_inner());
        let (done, _) = counters
            .done_signal
            .wait_timeout_while(done, timeout, |done| !*done)
            .unwrap_or_else(|e| e.into_inner());
        *done
    }

    /// Whether every sink has seen the end of its inputs.
    pub fn is_done(&self) -> bool {
        *self
            .inner
            .counters
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records that arrived after their operator's input frontier had passed them, and
    /// were dropped.
    pub fn late_records(&self) -> u64 {
        self.inner.counters.late.load(Ordering::Relaxed)
    }

    /// Stops every source: each ends as if exhausted (its last watermark closes every
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
        }
    }
}

/// Where an app's records went. Once the app is done, every record its sources emitted
/// was either taken in by the operator after them or shed on the way:
/// `emitted == ingested + shed_at_ingest` (while it runs, some are in flight).
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
}
