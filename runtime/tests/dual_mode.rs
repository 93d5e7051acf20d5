//! Dual-mode actors against a sequential model: whatever lessees come and go, outputs and
//! final state equal those of the lessor alone.
//!
//! One runtime serves every case; each case drives its own actor (a fresh partition), so
//! ten thousand cases cost ten thousand short conversations, not ten thousand runtimes.
//! Three operators cover the ground:
//! - `ORDERED` (mergeable, ordering key = record key): per-key lists appended in arrival
//!   order, merged by concatenation — any reordering within a key shows;
//! - `UNORDERED` (mergeable, no ordering key): per-key sums and counts;
//! - `EXCLUSIVE` (exclusive state): per-key running counts emitted with every record,
//!   so its outputs depend on every earlier message; scale requests must be refused.
//!
//! Each input (a distinct sender) produces records and, in order, its part of every
//! barrier round (`Mark` with `inputs > 0`), plus occasional single critical messages
//! (`inputs == 0`); the inputs are interleaved at random, scale requests are sprinkled in,
//! and a final single critical `Dump` reports the consolidated state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use dirigo_runtime::scheduling::{Dirigo, Edf};
use dirigo_runtime::{
    Actor, ActorId, Barrier, Context, Envelope, Ingress, Runtime, ScaleError, Snapshot,
    SnapshotError,
};
use proptest::prelude::*;

const APP: u16 = 3;
const ORDERED: u16 = 0;
const UNORDERED: u16 = 1;
const EXCLUSIVE: u16 = 2;
const SHARDS: usize = 3;
/// The sender id of the test driver's own messages (the final dump).
const DRIVER: u32 = 1000;

#[derive(Clone, Debug, PartialEq)]
enum Msg {
    Data {
        key: u8,
        value: u32,
    },
    /// Critical. `inputs == 0`: runs alone; otherwise part `barrier` of a barrier over
    /// `inputs` inputs.
    Mark {
        barrier: u32,
        inputs: u32,
    },
    /// Critical: report the state.
    Dump,
}

type Lists = Vec<(u8, Vec<u32>)>;
type Sums = Vec<(u8, u64, u64)>;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Out {
    Item {
        epoch: u64,
        key: u8,
        value: u32,
        /// Exclusive operator only: how many records of this key came before.
        seen: u64,
    },
    Critical {
        epoch: u64,
        /// `(input, barrier, inputs)` of each critical message, in arrival order.
        marks: Vec<(u32, u32, u32)>,
        lists: Lists,
        sums: Sums,
    },
}

/// What every actor of the test writes its outputs to.
#[derive(Default)]
struct Sink {
    by_actor: Mutex<BTreeMap<ActorId, Written>>,
    dumped: Condvar,
}

#[derive(Default)]
struct Written {
    outputs: Vec<Out>,
    /// Shards that ran a record of the actor.
    ran_on: BTreeSet<usize>,
    dumped: bool,
}

impl Sink {
    /// Waits for `actor`'s final dump and takes what it wrote.
    fn take_after_dump(&self, actor: ActorId) -> Written {
        let mut by_actor = self.by_actor.lock().unwrap();
        loop {
            if by_actor.get(&actor).is_some_and(|w| w.dumped) {
                return by_actor.remove(&actor).unwrap();
            }
            let (guard, timeout) = self
                .dumped
                .wait_timeout(by_actor, Duration::from_secs(20))
                .unwrap();
            assert!(!timeout.timed_out(), "actor {actor} never dumped");
            by_actor = guard;
        }
    }
}

type Outputs = Arc<Sink>;

/// One operator's state and logic; the model runs the very same `apply` and `critical`.
#[derive(Default)]
struct State {
    operator: u16,
    lists: BTreeMap<u8, Vec<u32>>,
    sums: BTreeMap<u8, (u64, u64)>,
}

impl State {
    fn new(operator: u16) -> Self {
        Self {
            operator,
            ..Self::default()
        }
    }

    fn apply(&mut self, epoch: u64, key: u8, value: u32) -> Out {
        let mut seen = 0;
        match self.operator {
            ORDERED => self.lists.entry(key).or_default().push(value),
            _ => {
                let entry = self.sums.entry(key).or_default();
                if self.operator == EXCLUSIVE {
                    seen = entry.1;
                }
                entry.0 += u64::from(value);
                entry.1 += 1;
            }
        }
        Out::Item {
            epoch,
            key,
            value,
            seen,
        }
    }

    fn critical(&self, epoch: u64, marks: Vec<(u32, u32, u32)>) -> Out {
        Out::Critical {
            epoch,
            marks,
            lists: self.lists.iter().map(|(k, v)| (*k, v.clone())).collect(),
            sums: self.sums.iter().map(|(k, (s, c))| (*k, *s, *c)).collect(),
        }
    }
}

fn mark_of(input: u32, msg: &Msg) -> (u32, u32, u32) {
    match msg {
        Msg::Mark { barrier, inputs } => (input, *barrier, *inputs),
        _ => (input, u32::MAX, 0),
    }
}

struct TestActor {
    id: ActorId,
    state: State,
    outputs: Outputs,
}

impl TestActor {
    fn emit(&self, out: Out, shard: usize, dump: bool) {
        let mut by_actor = self.outputs.by_actor.lock().unwrap();
        let written = by_actor.entry(self.id).or_default();
        if matches!(out, Out::Item { .. }) {
            written.ran_on.insert(shard);
        }
        written.outputs.push(out);
        if dump {
            written.dumped = true;
            self.outputs.dumped.notify_all();
        }
    }
}

fn input_of(envelope: &Envelope<Msg>) -> u32 {
    envelope.source.map_or(u32::MAX, |source| source.partition)
}

impl Actor<Msg> for TestActor {
    fn receive(&mut self, ctx: &mut Context<'_, Msg>, message: Envelope<Msg>) {
        match message.payload {
            Msg::Data { key, value } => {
                let out = self.state.apply(ctx.epoch(), key, value);
                self.emit(out, ctx.shard(), false);
            }
            // Critical messages reach `critical`, never here.
            _ => panic!("critical message in receive"),
        }
    }

    fn critical(&mut self, ctx: &mut Context<'_, Msg>, messages: Vec<Envelope<Msg>>) {
        let dump = messages.iter().any(|m| m.payload == Msg::Dump);
        let marks = messages
            .iter()
            .map(|m| mark_of(input_of(m), &m.payload))
            .collect();
        let out = self.state.critical(ctx.epoch(), marks);
        self.emit(out, ctx.shard(), dump);
    }

    fn ordering_key(&self, message: &Envelope<Msg>) -> Option<u64> {
        match (&message.payload, self.state.operator) {
            (Msg::Data { key, .. }, ORDERED) => Some(u64::from(*key)),
            _ => None,
        }
    }

    fn barrier(&self, message: &Envelope<Msg>) -> Barrier {
        match message.payload {
            Msg::Mark { barrier, inputs } if inputs > 0 => Barrier::Wait {
                id: u64::from(barrier),
                inputs,
            },
            _ => Barrier::Single,
        }
    }

    fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
        let operator = self.state.operator;
        let taken = std::mem::replace(&mut self.state, State::new(operator));
        match taken.operator {
            ORDERED => {
                let lists: Lists = taken.lists.into_iter().collect();
                Snapshot::of(&lists).map(Some)
            }
            _ => {
                let sums: Sums = taken
                    .sums
                    .into_iter()
                    .map(|(k, (s, c))| (k, s, c))
                    .collect();
                Snapshot::of(&sums).map(Some)
            }
        }
    }

    fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
        match self.state.operator {
            ORDERED => {
                for entry in partial.archived::<Lists>()?.iter() {
                    self.state
                        .lists
                        .entry(entry.0)
                        .or_default()
                        .extend(entry.1.iter().map(|v| v.to_native()));
                }
            }
            _ => {
                for entry in partial.archived::<Sums>()?.iter() {
                    let sum = self.state.sums.entry(entry.0).or_default();
                    sum.0 += entry.1.to_native();
                    sum.1 += entry.2.to_native();
                }
            }
        }
        Ok(())
    }
}

struct Harness {
    runtime: Runtime<Msg>,
    outputs: Outputs,
    next_partition: AtomicU32,
}

/// The runtime under test: arrival-order scheduling, or earliest deadline first with an
/// SLO on the app (ranked ready queues, deadlines on every message). Every case runs on
/// both.
fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| start_harness(Scheduling::Fifo))
}

fn edf_harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| start_harness(Scheduling::Edf))
}

/// The Dirigo policy deciding the scaling: with an SLO of one microsecond no message can
/// start in time, so the policy asks for lessees all the time, and retires them after a
/// millisecond without work.
fn dirigo_harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| start_harness(Scheduling::Dirigo))
}

#[derive(Clone, Copy)]
enum Scheduling {
    Fifo,
    Edf,
    Dirigo,
}

fn start_harness(scheduling: Scheduling) -> Harness {
    {
        let outputs: Outputs = Arc::default();
        let factory = |outputs: Outputs| {
            move |id: ActorId, _saved| {
                Box::new(TestActor {
                    id,
                    state: State::new(id.operator),
                    outputs: outputs.clone(),
                }) as Box<dyn Actor<Msg>>
            }
        };
        let mut builder = Runtime::builder()
            .shards(SHARDS)
            .spin_budget(Duration::from_micros(50))
            .park_timeout(Duration::from_millis(1));
        match scheduling {
            Scheduling::Fifo => {}
            Scheduling::Edf => {
                builder = builder.policy(Edf).app_slo(APP, Duration::from_millis(10));
            }
            Scheduling::Dirigo => {
                builder = builder
                    .policy(Dirigo {
                        retire_after: Duration::from_millis(1),
                        ..Dirigo::default()
                    })
                    .app_slo(APP, Duration::from_micros(1));
            }
        }
        let runtime = builder
            .mergeable_operator(APP, ORDERED, factory(outputs.clone()))
            .mergeable_operator(APP, UNORDERED, factory(outputs.clone()))
            .operator(APP, EXCLUSIVE, factory(outputs.clone()))
            .build()
            .expect("runtime starts");
        Harness {
            runtime,
            outputs,
            next_partition: AtomicU32::new(0),
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Send {
        input: u32,
        msg: Msg,
    },
    /// Add (`true`) or remove a lessee on the `n`th shard other than the home shard.
    Scale {
        add: bool,
        n: usize,
    },
}

type PendingBarrier = (u32, u32, Vec<(u32, Msg)>);
/// Items by `(epoch, key)`.
type ItemGroups = BTreeMap<(u64, u8), Vec<Out>>;

/// The sequential model: the same state logic, one worker, the documented hold rules.
struct Model {
    state: State,
    epoch: u64,
    held_inputs: Vec<u32>,
    /// `(barrier, inputs, parts so far)`.
    pending: Option<PendingBarrier>,
    held: VecDeque<(u32, Msg)>,
    outputs: Vec<Out>,
}

impl Model {
    fn new(operator: u16) -> Self {
        Self {
            state: State::new(operator),
            epoch: 0,
            held_inputs: Vec::new(),
            pending: None,
            held: VecDeque::new(),
            outputs: Vec::new(),
        }
    }

    fn run_critical(&mut self, parts: Vec<(u32, Msg)>) {
        let marks = parts.iter().map(|(input, m)| mark_of(*input, m)).collect();
        let out = self.state.critical(self.epoch, marks);
        self.outputs.push(out);
        self.epoch += 1;
        for (input, msg) in std::mem::take(&mut self.held) {
            self.process(input, msg);
        }
    }

    fn process(&mut self, input: u32, msg: Msg) {
        if self.held_inputs.contains(&input) {
            self.held.push_back((input, msg));
            return;
        }
        match msg {
            Msg::Data { key, value } => {
                let out = self.state.apply(self.epoch, key, value);
                self.outputs.push(out);
            }
            Msg::Mark { barrier, inputs } if inputs > 0 => {
                let complete = match &mut self.pending {
                    Some((id, needed, parts)) if *id == barrier => {
                        parts.push((input, msg));
                        self.held_inputs.push(input);
                        parts.len() >= *needed as usize
                    }
                    Some(_) => {
                        self.held_inputs.push(input);
                        self.held.push_back((input, msg));
                        return;
                    }
                    None => {
                        self.pending = Some((barrier, inputs, vec![(input, msg)]));
                        self.held_inputs.push(input);
                        inputs <= 1
                    }
                };
                if complete {
                    let (_, _, parts) = self.pending.take().unwrap();
                    self.held_inputs.clear();
                    self.run_critical(parts);
                }
            }
            single => {
                // Held messages of a pending barrier stay held through a single critical.
                let held = std::mem::take(&mut self.held);
                let marks = vec![mark_of(input, &single)];
                let out = self.state.critical(self.epoch, marks);
                self.outputs.push(out);
                self.epoch += 1;
                self.held = held;
            }
        }
    }
}

/// Items grouped the way the correctness rule compares them.
fn normalize(operator: u16, outputs: &[Out]) -> (Vec<Out>, ItemGroups) {
    let mut critical = Vec::new();
    let mut items = ItemGroups::new();
    for out in outputs {
        match out {
            Out::Critical { .. } => critical.push(out.clone()),
            Out::Item { epoch, key, .. } => {
                items.entry((*epoch, *key)).or_default().push(out.clone())
            }
        }
    }
    if operator == UNORDERED {
        // No ordering key: within an epoch and key, any order is a sequential order.
        for group in items.values_mut() {
            group.sort();
        }
    }
    (critical, items)
}

fn run_case(harness: &Harness, operator: u16, steps: &[Step]) -> Result<(), TestCaseError> {
    let partition = harness.next_partition.fetch_add(1, Ordering::Relaxed);
    let actor = ActorId::new(APP, operator, partition);
    let ingress: Ingress<Msg> = harness.runtime.ingress();
    let home = ingress.home_shard(actor);
    let others: Vec<usize> = (0..SHARDS).filter(|&s| s != home).collect();
    let mut model = Model::new(operator);
    for step in steps {
        match step {
            Step::Send { input, msg } => {
                let source = ActorId::new(APP, 99, *input);
                let envelope = match msg {
                    Msg::Data { .. } => Envelope::user(actor, msg.clone()),
                    _ => Envelope::critical(actor, msg.clone()),
                };
                ingress.send(envelope.from_source(source)).unwrap();
                model.process(*input, msg.clone());
            }
            Step::Scale { add, n } => {
                let shard = others[n % others.len()];
                let result = if *add {
                    ingress.add_lessee(actor, shard)
                } else {
                    ingress.remove_lessee(actor, shard)
                };
                if operator == EXCLUSIVE && *add {
                    prop_assert_eq!(result, Err(ScaleError::Exclusive(actor)));
                } else {
                    prop_assert_eq!(result, Ok(()));
                }
            }
        }
    }
    let source = ActorId::new(APP, 99, DRIVER);
    ingress
        .send(Envelope::critical(actor, Msg::Dump).from_source(source))
        .unwrap();
    model.process(DRIVER, Msg::Dump);
    let written = harness.outputs.take_after_dump(actor);
    let (critical, items) = normalize(operator, &written.outputs);
    let (expected_critical, expected_items) = normalize(operator, &model.outputs);
    prop_assert_eq!(critical, expected_critical);
    prop_assert_eq!(items, expected_items);
    Ok(())
}

/// One input's stream: records, its part of each barrier round in order, and a few
/// single critical messages.
fn input_stream(inputs: u32, rounds: u32) -> impl Strategy<Value = Vec<Msg>> {
    let record = (0u8..4, 0u32..1000).prop_map(|(key, value)| Msg::Data { key, value });
    let item = prop_oneof![
        8 => record,
        1 => (0u32..3).prop_map(|barrier| Msg::Mark { barrier: 100 + barrier, inputs: 0 }),
    ];
    proptest::collection::vec(proptest::collection::vec(item, 0..5), rounds as usize + 1).prop_map(
        move |chunks| {
            let mut stream = Vec::new();
            for (round, chunk) in chunks.into_iter().enumerate() {
                if round > 0 {
                    stream.push(Msg::Mark {
                        barrier: round as u32,
                        inputs,
                    });
                }
                stream.extend(chunk);
            }
            stream
        },
    )
}

fn case() -> impl Strategy<Value = (u16, u32, Vec<Step>)> {
    (
        prop_oneof![Just(ORDERED), Just(UNORDERED), Just(EXCLUSIVE)],
        1u32..=3,
        0u32..=2,
    )
        .prop_flat_map(|(operator, inputs, rounds)| {
            let streams = proptest::collection::vec(input_stream(inputs, rounds), inputs as usize);
            // Adds twice as likely as removals, so most cases run with lessees.
            let scale = (
                prop_oneof![2 => Just(true), 1 => Just(false)],
                0usize..2,
                any::<u16>(),
            );
            let scales = proptest::collection::vec(scale, 0..6);
            let order = proptest::collection::vec(any::<u16>(), 64);
            (Just(operator), Just(inputs), streams, scales, order)
        })
        .prop_map(|(operator, inputs, streams, scales, order)| {
            // Interleave the inputs' streams (each kept in order) and the scale requests.
            let mut queues: Vec<VecDeque<Msg>> = streams.into_iter().map(VecDeque::from).collect();
            let total: usize = queues.iter().map(VecDeque::len).sum();
            let mut steps = Vec::with_capacity(total + scales.len());
            let mut turn = 0;
            while queues.iter().any(|q| !q.is_empty()) {
                let pick = order[turn % order.len()] as usize + turn;
                turn += 1;
                let live: Vec<usize> = (0..queues.len())
                    .filter(|&i| !queues[i].is_empty())
                    .collect();
                let input = live[pick % live.len()];
                let msg = queues[input].pop_front().unwrap();
                steps.push(Step::Send {
                    input: input as u32,
                    msg,
                });
            }
            for (add, n, at) in scales {
                let at = at as usize % (steps.len() + 1);
                steps.insert(at, Step::Scale { add, n });
            }
            (operator, inputs, steps)
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn scaling_never_changes_outputs_or_state((operator, inputs, steps) in case()) {
        let _ = inputs;
        run_case(harness(), operator, &steps)?;
        run_case(edf_harness(), operator, &steps)?;
        run_case(dirigo_harness(), operator, &steps)?;
    }
}

#[test]
fn lessees_run_messages_and_retiring_loses_nothing() {
    let harness = harness();
    let partition = harness.next_partition.fetch_add(1, Ordering::Relaxed);
    let actor = ActorId::new(APP, UNORDERED, partition);
    let ingress = harness.runtime.ingress();
    let home = ingress.home_shard(actor);
    let lessees: Vec<usize> = (0..SHARDS).filter(|&s| s != home).collect();
    for &shard in &lessees {
        ingress.add_lessee(actor, shard).unwrap();
    }
    let source = ActorId::new(APP, 99, 0);
    let mut model = Model::new(UNORDERED);
    for value in 0..20_000u32 {
        let msg = Msg::Data {
            key: (value % 7) as u8,
            value,
        };
        ingress
            .send(Envelope::user(actor, msg.clone()).from_source(source))
            .unwrap();
        model.process(0, msg);
    }
    for &shard in &lessees {
        ingress.remove_lessee(actor, shard).unwrap();
    }
    ingress
        .send(Envelope::critical(actor, Msg::Dump).from_source(source))
        .unwrap();
    model.process(0, Msg::Dump);
    let written = harness.outputs.take_after_dump(actor);
    assert_eq!(
        normalize(UNORDERED, &written.outputs),
        normalize(UNORDERED, &model.outputs)
    );
    assert_eq!(written.outputs.len(), 20_001);
    assert!(
        written.ran_on.iter().any(|&shard| shard != home),
        "no record ran on a lessee: {:?}",
        written.ran_on
    );
    // The lessor's metrics tell the story: two lessees came and went, their states were
    // merged, and the dump ran as a critical section.
    let started = std::time::Instant::now();
    let metrics = loop {
        let found = harness
            .runtime
            .actor_metrics()
            .into_iter()
            .find(|metrics| metrics.actor == actor && metrics.critical_sections == 1);
        if let Some(metrics) = found {
            break metrics;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "metrics never published"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    let counts: Vec<u32> = metrics.lessee_timeline.iter().map(|(_, n)| *n).collect();
    assert_eq!(counts, [1, 2, 1, 0], "{metrics:?}");
    assert_eq!(metrics.lessees, 0);
    assert!(
        metrics.consolidations >= 2 && metrics.consolidated_bytes > 0,
        "{metrics:?}"
    );
    // Adding a lessee to a key-less actor needs no sync; retiring one and the dump do.
    assert!(metrics.syncs >= 3 && metrics.blocked_ns > 0, "{metrics:?}");
    assert_eq!(metrics.refused_scale_requests, 0);
}

#[test]
fn scale_requests_are_refused_with_a_reason() {
    let ingress = harness().runtime.ingress();
    let exclusive = ActorId::new(APP, EXCLUSIVE, 1);
    let error = ingress.add_lessee(exclusive, 0).unwrap_err();
    assert_eq!(error, ScaleError::Exclusive(exclusive));
    assert!(error.to_string().contains("exclusive state"), "{error}");
    let mergeable = ActorId::new(APP, ORDERED, 1);
    let home = ingress.home_shard(mergeable);
    assert_eq!(
        ingress.add_lessee(mergeable, home),
        Err(ScaleError::HomeShard {
            actor: mergeable,
            shard: home
        })
    );
    assert_eq!(
        ingress.add_lessee(mergeable, SHARDS),
        Err(ScaleError::NoSuchShard {
            shard: SHARDS,
            shards: SHARDS
        })
    );
    let unknown = ActorId::new(APP, 77, 0);
    assert_eq!(
        ingress.add_lessee(unknown, 0),
        Err(ScaleError::UnknownOperator(unknown))
    );
}
