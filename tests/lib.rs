//! Helpers shared by dirigo's end-to-end tests: a keyed pipeline built from the operators
//! crate's partitioning on top of the runtime, and its sequential reference.
//!
//! The pipeline: an outside thread sends `(key, value)` records; a key-hash edge routes
//! each to a `sum` partition, which keeps a per-key running sum and the order in which it
//! saw each key's values, and forwards every update to a single `log` actor. At the end
//! each `sum` partition reports its state.

use std::collections::BTreeMap;
use std::time::Duration;

use dirigo_operators::{Partitioner, Partitioning};
use dirigo_runtime::{Actor, ActorId, Context, Envelope, Runtime, SavedState};

pub mod nexmark_reference;

const APP: u16 = 7;
const SUM: u16 = 0;

/// Per key: the sum, and every value in the order it was applied.
pub type KeyedState = BTreeMap<u64, (i64, Vec<i64>)>;

/// What the pipeline's actors exchange.
pub enum Record {
    /// One input record.
    Value {
        /// Its key.
        key: u64,
        /// Its value.
        value: i64,
    },
    /// Report your state.
    Report,
}

struct Summer {
    state: KeyedState,
    reports: flume::Sender<KeyedState>,
}

impl Actor<Record> for Summer {
    fn receive(&mut self, _ctx: &mut Context<'_, Record>, message: Envelope<Record>) {
        match message.payload {
            Record::Value { key, value } => {
                let entry = self.state.entry(key).or_default();
                entry.0 += value;
                entry.1.push(value);
            }
            Record::Report => {
                let _ = self.reports.send(self.state.clone());
            }
        }
    }

    fn deactivate(self: Box<Self>) -> Option<SavedState> {
        Some(Box::new(self.state))
    }
}

/// How to run the pipeline.
#[derive(Clone, Debug)]
pub struct PipelineRun {
    /// Shards.
    pub shards: usize,
    /// Partitions of the `sum` operator.
    pub partitions: u32,
    /// Ring capacity (small values force full rings).
    pub ring_capacity: usize,
    /// Deactivate idle actors after this long (exercises deactivation mid-run).
    pub idle_deactivation: Option<Duration>,
}

/// Runs `records` through the pipeline and returns the merged state of all partitions.
pub fn run_pipeline(records: &[(u64, i64)], run: &PipelineRun) -> KeyedState {
    let (reports_tx, reports_rx) = flume::unbounded();
    let runtime = Runtime::<Record>::builder()
        .shards(run.shards)
        .ring_capacity(run.ring_capacity)
        .spin_budget(Duration::from_micros(10))
        .idle_deactivation(run.idle_deactivation)
        .operator(APP, SUM, move |_, saved: Option<SavedState>| {
            let state = saved
                .and_then(|state| state.downcast::<KeyedState>().ok())
                .map(|state| *state)
                .unwrap_or_default();
            Box::new(Summer {
                state,
                reports: reports_tx.clone(),
            }) as Box<dyn Actor<Record>>
        })
        .build()
        .expect("runtime starts");
    let ingress = runtime.ingress();
    let mut edge = Partitioner::new(Partitioning::KeyHash, run.partitions);
    for &(key, value) in records {
        for partition in edge.targets(0, &key) {
            ingress
                .send_to(
                    ActorId::new(APP, SUM, partition),
                    Record::Value { key, value },
                )
                .expect("intake open");
        }
    }
    for partition in 0..run.partitions {
        ingress
            .send_to(ActorId::new(APP, SUM, partition), Record::Report)
            .expect("intake open");
    }
    runtime.shutdown();
    let mut merged = KeyedState::new();
    for report in reports_rx.try_iter() {
        for (key, state) in report {
            assert!(
                merged.insert(key, state).is_none(),
                "key {key} reported by two partitions"
            );
        }
    }
    merged
}

/// The same computation, sequentially, on one thread.
pub fn sequential(records: &[(u64, i64)]) -> KeyedState {
    let mut state = KeyedState::new();
    for &(key, value) in records {
        let entry = state.entry(key).or_default();
        entry.0 += value;
        entry.1.push(value);
    }
    state
}
