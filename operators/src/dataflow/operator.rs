//! One operator partition at run time: the [`Logic`] every operator implements, what it
//! learns of the graph when created ([`Wiring`]), and [`OperatorActor`], the virtual actor
//! that aligns watermarks and the end of the stream over its inputs and hands messages to
//! the logic.

use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dirigo_runtime::{
    Actor, ActorId, AppId, Context, Envelope, OperatorId, PartitionId, SavedState, Snapshot,
    SnapshotError,
};

use super::app::{AppCounters, PartitionCount};
use super::batch_size::{BatchMeter, BatchSizes};
use super::graph::FrontierTrigger;
use super::message::{CheckpointId, Msg, Time};
use crate::checkpoint::{CheckpointLink, Saved, SavedInputs};

/// Builds one partition's logic, given the node's outgoing edges (each an `EdgeSpec<T>` of
/// the node's output type) and the partition counts of every node.
pub(crate) type MakeLogic =
    Arc<dyn Fn(&Wiring, PartitionId) -> Box<dyn Logic> + Send + Sync + 'static>;

/// What an operator's partition needs to know about the graph when it is created.
pub(crate) struct Wiring {
    pub(crate) app: AppId,
    pub(crate) operator: OperatorId,
    pub(crate) edges: Vec<Box<dyn Any + Send + Sync>>,
    pub(crate) partitions: Vec<PartitionId>,
    /// Per operator of the app: the most records one batch sent to it holds now.
    pub(crate) batch_sizes: Arc<BatchSizes>,
    pub(crate) counters: Arc<AppCounters>,
    /// The triggers of every operator of the app that has one (windows on a fixed grid):
    /// a source sends a watermark at once when its frontier crosses one.
    pub(crate) triggers: Arc<[FrontierTrigger]>,
    /// Where the partition reports its part of each checkpoint, and finds the state to
    /// resume from; `None` when the app runs without checkpoints.
    pub(crate) checkpoint: Option<Arc<CheckpointLink>>,
    /// Records each partition of the operator sent on (or, for a sink, wrote out).
    pub(crate) records_out: Arc<[PartitionCount]>,
}

/// How many partitions the operator being created has.
pub(crate) fn partitions_of_self(wiring: &Wiring, _partition: PartitionId) -> PartitionId {
    wiring.partitions[usize::from(wiring.operator)]
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
    /// Every partition of every input has ended ([`Msg::End`]): the logic fires everything
    /// it holds (every record has arrived), then the actor forwards the end with
    /// [`Logic::forward_end`]. Called once; no message follows it.
    fn on_end(&mut self, ctx: &mut Context<'_, Msg>);
    /// Sends the end of the stream to every downstream partition.
    fn forward_end(&mut self, ctx: &mut Context<'_, Msg>);
    /// Whether advancing the input frontier from `from` to `to` makes the logic read its
    /// whole state (fire a window, emit an aggregate). When not, the watermark runs on the
    /// lessor without consolidating the lessees' partial states. Default: always.
    fn frontier_needs_state(&self, from: Time, to: Time) -> bool {
        let _ = (from, to);
        true
    }
    /// A turn the partition asked for: a source's next records, a window's next fired
    /// rows.
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
    /// Checkpoint `id`: the whole state (on the lessor, after every lessee's partial
    /// state was merged in), leaving it as it is: archived, or a copy to be archived off
    /// the shard ([`Saved::Copy`]: large state, where archiving would hold the shard);
    /// [`Saved::Nothing`] when the logic holds none. Sinks stage what they wrote since
    /// the last checkpoint here. Called once per checkpoint, before
    /// [`forward_barrier`](Self::forward_barrier).
    fn save(&mut self, id: CheckpointId) -> Result<Saved, SnapshotError>;
    /// Takes back what [`save`](Self::save) archived (`None` when it archived nothing),
    /// with the partition's inputs as they were, before the partition handles any
    /// message. The bytes come from disk: the logic validates them (bytecheck) as it
    /// reads them.
    fn restore(&mut self, inputs: &SavedInputs, saved: Option<&[u8]>) -> Result<(), SnapshotError>;
    /// Sends checkpoint barrier `id` to every downstream partition (after what it
    /// buffered).
    fn forward_barrier(&mut self, ctx: &mut Context<'_, Msg>, id: CheckpointId);
}

/// Per input, the upstream operator and its partition count.
pub(crate) type UpstreamInputs = Arc<[(OperatorId, PartitionId)]>;

/// The actor that runs one operator partition: finds which input a message came from,
/// aligns watermarks over every upstream partition, and hands the rest to the logic.
pub(crate) struct OperatorActor {
    logic: Box<dyn Logic>,
    inputs: Arc<[(OperatorId, PartitionId)]>,
    /// Per input: whether it comes straight from a source (its records are counted as
    /// ingested).
    from_source: Arc<[bool]>,
    counters: Arc<AppCounters>,
    /// What this partition measures of the batches it handles, for the size of the
    /// batches sent to its operator.
    meter: BatchMeter,
    /// Records in, per partition of this operator, and this actor's partition.
    records_in: (Arc<[PartitionCount]>, usize),
    /// Per upstream partition of every input, its frontier and whether it has ended;
    /// inputs side by side.
    inputs_seen: Alignment,
    /// The same, as of the critical messages admitted so far (the runtime asks
    /// [`Actor::barrier`] once per critical message, in the order they will run).
    admitted: std::cell::RefCell<Alignment>,
    /// Whether the operator's state is exclusive: it never has lessees, so its lessor's
    /// state is the whole state and a watermark needs no consolidation.
    exclusive: bool,
    /// Distinct upstream partitions: how many parts of each checkpoint barrier arrive.
    barrier_inputs: u32,
    /// Parts of the pending checkpoint barrier handed over so far.
    barrier_parts: u32,
    checkpoint: Option<Arc<CheckpointLink>>,
}

impl OperatorActor {
    /// A partition of an operator with `inputs` (upstream operator and its partition
    /// count each; `slots` upstream partitions in all), none of whose frontiers has
    /// advanced yet.
    pub(crate) fn new(
        logic: Box<dyn Logic>,
        (inputs, from_source): (UpstreamInputs, Arc<[bool]>),
        (counters, meter): (Arc<AppCounters>, BatchMeter),
        records_in: (Arc<[PartitionCount]>, usize),
        (slots, barrier_inputs): (usize, u32),
        exclusive: bool,
        checkpoint: Option<Arc<CheckpointLink>>,
    ) -> Self {
        Self {
            logic,
            inputs,
            from_source,
            counters,
            meter,
            records_in,
            inputs_seen: Alignment::new(slots),
            admitted: std::cell::RefCell::new(Alignment::new(slots)),
            exclusive,
            barrier_inputs,
            barrier_parts: 0,
            checkpoint,
        }
    }

    /// Resumes from a checkpoint's part: the inputs' frontiers and ends as they were,
    /// and the logic's state.
    pub(crate) fn restore(
        &mut self,
        inputs: &SavedInputs,
        state: Option<&[u8]>,
    ) -> Result<(), SnapshotError> {
        self.inputs_seen = Alignment::restored(inputs);
        *self.admitted.borrow_mut() = Alignment::restored(inputs);
        self.logic.restore(inputs, state)
    }

    /// Checkpoint `id` reached this partition (every upstream barrier part has arrived,
    /// or, for a source, the coordinator's trigger): reports the part (the inputs' state
    /// and the logic's archive, with how long archiving held the shard), then passes the
    /// barrier on.
    fn checkpoint(&mut self, ctx: &mut Context<'_, Msg>, id: CheckpointId) {
        if let Some(link) = &self.checkpoint {
            let started = ctx.now();
            let state = self.logic.save(id);
            let held_ns = ctx.now().saturating_sub(started);
            link.report_part(ctx, id, self.inputs_seen.saved(), state, held_ns);
        }
        self.logic.forward_barrier(ctx, id);
    }

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
        let news = match message.payload {
            Msg::Barrier(id) => {
                return dirigo_runtime::Barrier::Wait {
                    id,
                    inputs: self.barrier_inputs,
                }
            }
            Msg::Watermark(frontier) => Some(frontier),
            Msg::End => None,
            // A partition's turn of its own (a window sending the rows it fired) reads
            // nothing a lessee holds.
            Msg::Tick => return dirigo_runtime::Barrier::Local,
            _ => return dirigo_runtime::Barrier::Single,
        };
        if self.exclusive {
            return dirigo_runtime::Barrier::Local;
        }
        let (_, slot) = self.input_of(message.source);
        let mut admitted = self.admitted.borrow_mut();
        let from = admitted.frontier;
        match admitted.admit(slot, news) {
            Advance::None => dirigo_runtime::Barrier::Local,
            Advance::Ended => dirigo_runtime::Barrier::Single,
            Advance::To(to) if self.logic.frontier_needs_state(from, to) => {
                dirigo_runtime::Barrier::Single
            }
            Advance::To(_) => dirigo_runtime::Barrier::Local,
        }
    }

    fn receive(&mut self, ctx: &mut Context<'_, Msg>, message: Envelope<Msg>) {
        let news = match message.payload {
            Msg::Data { records, batch } => {
                let (input, _) = self.input_of(message.source);
                let (records_in, partition) = &self.records_in;
                PartitionCount::add(records_in, *partition, u64::from(records));
                if self.from_source.get(input).copied().unwrap_or(false) {
                    self.counters
                        .ingested
                        .fetch_add(u64::from(records), Ordering::Relaxed);
                }
                let budget = ctx.turn_budget_ns();
                if self.meter.times(records, budget) {
                    let started = ctx.now();
                    self.logic.on_data(ctx, input, batch);
                    self.meter
                        .observe(records, ctx.now().saturating_sub(started), budget);
                } else {
                    self.logic.on_data(ctx, input, batch);
                }
                return;
            }
            Msg::Tick => {
                self.logic.on_tick(ctx);
                return;
            }
            Msg::Checkpoint(id) => {
                self.checkpoint(ctx, id);
                return;
            }
            Msg::Barrier(id) => {
                // The runtime hands every part of the barrier over together, one per
                // upstream partition: the checkpoint runs with the last.
                self.barrier_parts += 1;
                if self.barrier_parts >= self.barrier_inputs {
                    self.barrier_parts = 0;
                    self.checkpoint(ctx, id);
                }
                return;
            }
            Msg::Watermark(frontier) => Some(frontier),
            Msg::End => None,
        };
        let (_, slot) = self.input_of(message.source);
        match self.inputs_seen.admit(slot, news) {
            Advance::None => {}
            Advance::To(aligned) => {
                self.logic.on_frontier(ctx, aligned);
                self.logic.forward_frontier(ctx, aligned);
            }
            Advance::Ended => {
                self.logic.on_end(ctx);
                self.logic.forward_end(ctx);
            }
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

/// What an operator partition knows of its upstream partitions: each one's frontier and
/// whether it has ended, and the aligned frontier over them. An ended partition no longer
/// holds the frontier back; when every one has ended, so has the operator partition.
struct Alignment {
    /// Per upstream partition: its frontier, `None` once it has ended.
    slots: Vec<Option<Time>>,
    /// The least frontier over the partitions that have not ended.
    frontier: Time,
    /// Whether every upstream partition has ended (and the end has been passed on).
    ended: bool,
}

/// What one watermark or end did to an operator partition's aligned input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Advance {
    /// Nothing: the aligned frontier stays.
    None,
    /// The aligned frontier advanced to this time.
    To(Time),
    /// The last upstream partition ended: so does this one.
    Ended,
}

impl Alignment {
    fn new(slots: usize) -> Self {
        Self {
            slots: vec![Some(0); slots],
            frontier: 0,
            ended: false,
        }
    }

    fn saved(&self) -> SavedInputs {
        SavedInputs {
            slots: self.slots.clone(),
            frontier: self.frontier,
            ended: self.ended,
        }
    }

    fn restored(saved: &SavedInputs) -> Self {
        Self {
            slots: saved.slots.clone(),
            frontier: saved.frontier,
            ended: saved.ended,
        }
    }

    /// Takes in a watermark (`Some(frontier)`) or the end (`None`) from upstream partition
    /// `slot`. A watermark after its partition's end is ignored, and so is anything once
    /// every partition has ended.
    fn admit(&mut self, slot: usize, news: Option<Time>) -> Advance {
        if self.ended {
            return Advance::None;
        }
        if let Some(seen) = self.slots.get_mut(slot) {
            *seen = match (*seen, news) {
                (Some(seen), Some(frontier)) => Some(seen.max(frontier)),
                (Some(_), None) | (None, _) => None,
            };
        }
        match self.slots.iter().flatten().min() {
            None => {
                self.ended = true;
                Advance::Ended
            }
            Some(&aligned) if aligned > self.frontier => {
                self.frontier = aligned;
                Advance::To(aligned)
            }
            Some(_) => Advance::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_is_aligned_like_a_watermark_and_no_time_ends_anything() {
        let mut inputs = Alignment::new(3);
        assert_eq!(inputs.admit(0, Some(5)), Advance::None);
        assert_eq!(inputs.admit(1, Some(7)), Advance::None);
        assert_eq!(inputs.admit(2, Some(3)), Advance::To(3));
        // The largest time is only a frontier.
        assert_eq!(inputs.admit(0, Some(Time::MAX)), Advance::None);
        assert_eq!(inputs.admit(1, Some(Time::MAX)), Advance::None);
        assert_eq!(inputs.admit(2, Some(Time::MAX)), Advance::To(Time::MAX));
        assert!(!inputs.ended);
        // One partition ends: it no longer holds the frontier back, and a watermark from
        // it afterwards is ignored.
        let mut inputs = Alignment::new(2);
        assert_eq!(inputs.admit(0, Some(4)), Advance::None);
        assert_eq!(inputs.admit(1, None), Advance::To(4));
        assert_eq!(inputs.admit(1, Some(100)), Advance::None);
        assert_eq!(inputs.admit(0, Some(9)), Advance::To(9));
        // The last one ends: the operator partition ends, once.
        assert_eq!(inputs.admit(0, None), Advance::Ended);
        assert_eq!(inputs.admit(0, None), Advance::None);
        assert_eq!(inputs.admit(1, Some(200)), Advance::None);
        // Ended before any watermark.
        let mut inputs = Alignment::new(1);
        assert_eq!(inputs.admit(0, None), Advance::Ended);
    }
}
