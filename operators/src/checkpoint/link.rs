//! What an app's operator partitions share with the checkpoint coordinator
//! ([`CheckpointLink`]): the channel on which each partition reports its part of a
//! checkpoint and each sink stages its output, and the parts of the checkpoint the app
//! resumes from, which each partition takes back when it is first activated.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dirigo_runtime::{
    ActorId, AppId, Context, OperatorId, PartitionId, ShardId, Snapshot, SnapshotError,
};

use crate::dataflow::{CheckpointId, Msg, Time};

/// An operator partition's inputs at a checkpoint: each upstream partition's frontier
/// (`None` once it has ended), the aligned frontier, and whether every input has ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedInputs {
    /// Per upstream partition, its frontier; `None` once it has ended.
    pub slots: Vec<Option<Time>>,
    /// The least frontier over the inputs that have not ended.
    pub frontier: Time,
    /// Whether every input has ended (and the end was passed on).
    pub ended: bool,
}

/// An operator partition's state at a checkpoint, as its logic hands it over
/// (`Logic::save`). Only making it holds the shard: a [`Saved::Copy`] is archived by the
/// coordinator's thread, off the shard.
pub(crate) enum Saved {
    /// The logic keeps no state.
    Nothing,
    /// Archived on the shard (small state: a source's position).
    Archived(Snapshot),
    /// A copy of the state, which archives itself when called: the shard is held while
    /// the copy is made (a linear pass over the state into vectors), not while it is
    /// archived or written.
    Copy(Box<dyn FnOnce() -> Result<Snapshot, SnapshotError> + Send>),
}

impl Saved {
    /// A copy of the state, archived later by `archive`.
    pub(crate) fn copy<T: Send + 'static>(
        copy: T,
        archive: impl FnOnce(T) -> Result<Snapshot, SnapshotError> + Send + 'static,
    ) -> Self {
        Self::Copy(Box::new(move || archive(copy)))
    }

    /// The archive, made now if it was deferred (`None`: no state).
    pub(crate) fn archive(self) -> Result<Option<Snapshot>, SnapshotError> {
        match self {
            Self::Nothing => Ok(None),
            Self::Archived(snapshot) => Ok(Some(snapshot)),
            Self::Copy(archive) => archive().map(Some),
        }
    }
}

impl From<Option<Snapshot>> for Saved {
    fn from(snapshot: Option<Snapshot>) -> Self {
        snapshot.map_or(Self::Nothing, Self::Archived)
    }
}

/// One operator partition's part of a checkpoint, as reported from its shard.
pub(crate) struct Part {
    pub(crate) id: CheckpointId,
    pub(crate) actor: ActorId,
    pub(crate) shard: ShardId,
    pub(crate) inputs: SavedInputs,
    /// The logic's state, or why it could not be saved.
    pub(crate) state: Result<Saved, String>,
    /// How long saving the state held the shard.
    pub(crate) held_ns: u64,
    /// When the partition reported it (its barriers aligned and its state saved): the
    /// coordinator may take it later, behind the parts it archives first.
    pub(crate) reported_at: Instant,
}

/// What operator partitions send the coordinator.
pub(crate) enum Report {
    /// A partition's part of a checkpoint.
    Part(Part),
    /// Output a sink partition wrote in epoch `epoch` (after barrier `epoch - 1`, up to
    /// barrier `epoch`): staged until checkpoint `epoch` (or a later one) is complete.
    Output {
        actor: ActorId,
        epoch: CheckpointId,
        bytes: Vec<u8>,
    },
}

/// A part of the checkpoint an app resumes from: the inputs' state and the logic's
/// archive, in a file mapped into memory.
pub(crate) struct RestoredPart {
    pub(crate) inputs: SavedInputs,
    pub(crate) state: Option<(Arc<memmap2::Mmap>, Range<usize>)>,
}

impl RestoredPart {
    pub(crate) fn state(&self) -> Option<&[u8]> {
        self.state.as_ref().map(|(map, range)| &map[range.clone()])
    }
}

/// An app's side of the checkpoint coordinator, shared by its operator partitions.
pub struct CheckpointLink {
    app: AppId,
    reports: flume::Sender<Report>,
    /// Parts of the checkpoint the app resumes from, taken as partitions activate.
    restored: Mutex<HashMap<(OperatorId, PartitionId), RestoredPart>>,
    /// The checkpoint the app resumes from (0: none): sinks stage their output as epoch
    /// `resumed_from + 1` until the next barrier.
    resumed_from: std::sync::atomic::AtomicU64,
    /// Parts taken and still being restored.
    in_restore: std::sync::atomic::AtomicUsize,
    /// The newest checkpoint known complete, for sources that acknowledge what it covers.
    completed: CompletedCheckpoints,
}

/// The newest complete checkpoint of a run, as the coordinator announces it: it moves
/// once a checkpoint's manifest is on disk (and its sinks' output committed), and starts
/// at the checkpoint the run resumed from. A source whose broker wants to be told what
/// it may forget (NATS acknowledgements) reads it from its own I/O thread and tells the
/// broker only what a complete checkpoint covers; reading it is one atomic load.
#[derive(Clone, Debug, Default)]
pub struct CompletedCheckpoints(Arc<std::sync::atomic::AtomicU64>);

impl CompletedCheckpoints {
    /// The newest complete checkpoint (0: none yet).
    pub fn last(&self) -> CheckpointId {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Announces that checkpoint `id` is complete.
    pub(crate) fn complete(&self, id: CheckpointId) {
        self.0.fetch_max(id, std::sync::atomic::Ordering::AcqRel);
    }
}

impl CheckpointLink {
    pub(crate) fn new(app: AppId, reports: flume::Sender<Report>) -> Self {
        Self {
            app,
            reports,
            restored: Mutex::new(HashMap::new()),
            resumed_from: std::sync::atomic::AtomicU64::new(0),
            in_restore: std::sync::atomic::AtomicUsize::new(0),
            completed: CompletedCheckpoints::default(),
        }
    }

    /// The announcements of complete checkpoints.
    pub fn completed(&self) -> &CompletedCheckpoints {
        &self.completed
    }

    /// The app this link serves.
    pub fn app(&self) -> AppId {
        self.app
    }

    pub(crate) fn set_restored(
        &self,
        from: CheckpointId,
        parts: HashMap<(OperatorId, PartitionId), RestoredPart>,
    ) {
        *self.restored.lock().unwrap_or_else(|e| e.into_inner()) = parts;
        self.resumed_from
            .store(from, std::sync::atomic::Ordering::Release);
        self.completed.complete(from);
    }

    /// The checkpoint the app resumed from (0: it started from scratch).
    pub fn resumed_from(&self) -> CheckpointId {
        self.resumed_from.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Takes the restored part of `(operator, partition)`, if the app resumes from a
    /// checkpoint that holds one (only once: a partition re-activated after an idle
    /// spell keeps its own state).
    pub(crate) fn take_restored(
        &self,
        operator: OperatorId,
        partition: PartitionId,
    ) -> Option<RestoredPart> {
        let part = self
            .restored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(operator, partition));
        if part.is_some() {
            self.in_restore
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        part
    }

    /// A part [taken](Self::take_restored) is restored (or failed to be).
    pub(crate) fn restored(&self) {
        self.in_restore
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Parts of the checkpoint the app resumes from that are not restored yet (each
    /// partition takes its part back when it is first activated).
    pub fn restoring(&self) -> usize {
        self.restored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
            + self.in_restore.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reports this partition's part of checkpoint `id`. Blocks while the coordinator's
    /// queue is full (disk backpressure: see [`REPORT_QUEUE`]).
    pub(crate) fn report_part(
        &self,
        ctx: &mut Context<'_, Msg>,
        id: CheckpointId,
        inputs: SavedInputs,
        state: Result<Saved, SnapshotError>,
        held_ns: u64,
    ) {
        let state = state.map_err(|e| {
            let message = format!("cannot archive the state of {}: {e}", ctx.me());
            tracing::error!("{message}; checkpoint {id} will be abandoned");
            message
        });
        // Fails only once the coordinator stopped (the run is over): nothing to do then.
        let _ = self.reports.send(Report::Part(Part {
            id,
            actor: ctx.me(),
            shard: ctx.shard(),
            inputs,
            state,
            held_ns,
            reported_at: Instant::now(),
        }));
    }

    /// Stages `bytes`, output of sink partition `actor` in epoch `epoch`.
    pub(crate) fn stage_output(&self, actor: ActorId, epoch: CheckpointId, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let _ = self.reports.send(Report::Output {
            actor,
            epoch,
            bytes,
        });
    }
}

/// A sink that delivers its committed output itself (to a broker, not a file): its
/// partitions stage their output per epoch like a committed file's, and once a
/// checkpoint is complete the coordinator hands it the staged output of the epochs the
/// checkpoint covers ([`commit`](Self::commit)). Recovery hands it the resumed
/// checkpoint's epochs again (a crash may have come between the manifest and the end of
/// the delivery), so delivering the same epochs twice must deliver nothing twice.
pub(crate) trait CommitTarget: Send + Sync {
    /// Delivers the staged output of `epochs` of partitions `0..partitions` of sink
    /// `(app, operator)`, staged under the checkpoint directory `dir`
    /// ([`store::staged_path`](super::store::staged_path)); returns once all of it is
    /// delivered.
    ///
    /// # Errors
    /// What could not be read or delivered (the checkpoint stays complete; a restart
    /// delivers it again).
    fn commit(
        &self,
        dir: &std::path::Path,
        app: AppId,
        operator: OperatorId,
        partitions: PartitionId,
        epochs: std::ops::RangeInclusive<CheckpointId>,
    ) -> Result<(), String>;
}

/// How many reports (parts and staged output chunks of up to 64 KiB) wait for the
/// coordinator's thread at most; a shard that reports into a full queue waits, which is
/// how a disk slower than the pipeline slows the pipeline down instead of filling memory.
pub(crate) const REPORT_QUEUE: usize = 1024;
