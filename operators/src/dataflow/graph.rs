//! The graph builder: [`AppBuilder`] adds operators and edges to a [`Graph`] as
//! [`Stream`]s and [`KeyedStream`]s are chained, and [`build`](AppBuilder::build) turns it
//! into an [`App`].

use std::any::Any;
use std::cell::RefCell;
use std::hash::Hash;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use dirigo_runtime::{AppId, OperatorId, PartitionId, StateKind};

use super::app::App;
use super::message::{Data, Time};
use super::operator::MakeLogic;
use super::output::{EdgeSpec, KeyHashFn};
use crate::partition::{key_hash, Partitioning};

/// Says whether advancing an event-time frontier from the first time to the second
/// makes an operator act (fire a window): the event times an operator's output waits for.
pub(crate) type FrontierTrigger = Arc<dyn Fn(Time, Time) -> bool + Send + Sync>;

/// One operator of the graph, as declared; [`App::install`] registers it.
pub(super) struct Node {
    pub(super) name: String,
    pub(super) parallelism: Option<PartitionId>,
    pub(super) state: StateKind,
    /// Upstream operators, in input order.
    pub(super) inputs: Vec<OperatorId>,
    /// Outgoing edges, each an `EdgeSpec<T>` of the node's output type.
    pub(super) outputs: Vec<Box<dyn Any + Send + Sync>>,
    pub(super) make: MakeLogic,
    pub(super) sink: bool,
    pub(super) source: bool,
    pub(super) trigger: Option<FrontierTrigger>,
    /// How many units of work one input record costs the operator, against a plain
    /// per-record operator's one (a sliding window counts a record into each window that
    /// holds it): batches sent to it are cut to keep one handler turn short.
    pub(super) work_per_record: u32,
    /// A sink whose output the checkpoints commit to this file
    /// ([`LineTarget::Committed`](crate::sink::LineTarget::Committed)).
    pub(super) committed_output: Option<std::path::PathBuf>,
    /// A sink that delivers the output the checkpoints commit itself (a broker).
    pub(super) commit_target: Option<Arc<dyn crate::checkpoint::link::CommitTarget>>,
    /// Why the operator's state cannot be checkpointed, if it cannot.
    pub(super) not_checkpointable: Option<&'static str>,
}

pub(crate) struct Graph {
    app: AppId,
    name: String,
    parallelism: PartitionId,
    nodes: Vec<Node>,
    /// The checkpoints the built app joins.
    checkpoints: Option<crate::checkpoint::Checkpoints>,
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
                checkpoints: None,
            })),
        }
    }

    /// Partitions per operator, unless an operator sets its own (default: as many as the
    /// runtime has shards, decided at [`App::install`]).
    pub fn parallelism(self, partitions: PartitionId) -> Self {
        self.graph.borrow_mut().parallelism = partitions;
        self
    }

    /// Checkpoints the app's state with `checkpoints`: the built app joins them, and a
    /// runtime built with [`RuntimeCheckpoints::checkpoints`](crate::checkpoint::RuntimeCheckpoints)
    /// resumes it from their newest complete checkpoint (see the
    /// [checkpoint docs](crate::checkpoint)). Every operator must support checkpoints
    /// (`process` operators do not: the runtime's build then fails saying which).
    pub fn checkpoints(self, checkpoints: &crate::checkpoint::Checkpoints) -> Self {
        self.graph.borrow_mut().checkpoints = Some(checkpoints.clone());
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
                    checkpoints: graph.checkpoints.take(),
                }
            });
        let app = App::new(graph.app, graph.name, graph.parallelism, graph.nodes);
        if let Some(checkpoints) = &graph.checkpoints {
            checkpoints.attach(&app);
        }
        app
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
        work_per_record: 1,
        committed_output: None,
        commit_target: None,
        not_checkpointable: None,
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

    /// The name of the app the stream belongs to.
    pub(crate) fn app_name(&self) -> String {
        self.graph.borrow().name.clone()
    }

    /// Declares the event times at which the operator that produces this stream acts.
    pub(crate) fn set_trigger(&self, trigger: FrontierTrigger) {
        set_trigger(&self.graph, self.node, trigger);
    }

    /// Declares how many units of work one input record costs the operator that produces
    /// this stream (see `Node::work_per_record`).
    pub(crate) fn set_work_per_record(&self, work: u32) {
        set_work_per_record(&self.graph, self.node, work);
    }

    /// The operator whose output this stream is.
    pub(crate) fn node_id(&self) -> OperatorId {
        self.node
    }

    pub(crate) fn mark_sink(&self, node: OperatorId) {
        self.graph.borrow_mut().nodes[usize::from(node)].sink = true;
    }

    /// Notes that sink `node` writes to `path` through the checkpoints' commits.
    pub(crate) fn mark_committed_output(&self, node: OperatorId, path: std::path::PathBuf) {
        self.graph.borrow_mut().nodes[usize::from(node)].committed_output = Some(path);
    }

    /// Notes that sink `node` delivers the output the checkpoints commit through
    /// `target`.
    pub(crate) fn mark_commit_target(
        &self,
        node: OperatorId,
        target: Arc<dyn crate::checkpoint::link::CommitTarget>,
    ) {
        self.graph.borrow_mut().nodes[usize::from(node)].commit_target = Some(target);
    }

    /// Notes that operator `node`'s state cannot be checkpointed, and why: an app with
    /// it runs without checkpoints only.
    pub(crate) fn mark_not_checkpointable(&self, node: OperatorId, why: &'static str) {
        self.graph.borrow_mut().nodes[usize::from(node)].not_checkpointable = Some(why);
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

    /// Feeds the two-input operator `node` from this stream (input 0) and `other` (input
    /// 1), both partitioned by their keys; returns the operator's output.
    pub(crate) fn connect_with<R: Data, O: Data>(
        &self,
        other: &KeyedStream<R, K>,
        node: OperatorId,
    ) -> Stream<O> {
        self.stream
            .connect(node, Partitioning::KeyHash, Some(self.hasher()));
        other
            .stream
            .connect(node, Partitioning::KeyHash, Some(other.hasher()));
        stream_of(self.stream.graph(), node)
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

/// Declares how many units of work one input record costs operator `node` (see
/// `Node::work_per_record`).
pub(crate) fn set_work_per_record(graph: &Rc<RefCell<Graph>>, node: OperatorId, work: u32) {
    graph.borrow_mut().nodes[usize::from(node)].work_per_record = work.max(1);
}

pub(crate) fn stream_of<T: Data>(graph: &Rc<RefCell<Graph>>, node: OperatorId) -> Stream<T> {
    Stream::new(graph.clone(), node)
}
