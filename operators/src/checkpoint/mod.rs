//! Checkpoints and exactly-once recovery: asynchronous barrier snapshots of every app's
//! state, on disk in rkyv's archived form, and recovery from the newest complete one.
//!
//! How a checkpoint is taken:
//! - The coordinator (a thread outside the shards, see `coordinator`) starts checkpoint
//!   `n` every `interval` at every source partition ([`Msg::Checkpoint`]). The source
//!   records where it stands (records handed out, its frontier, its record source's
//!   extra, such as a dead-letter file's length) and sends barrier `n`
//!   ([`Msg::Barrier`]) after the records before it.
//! - An operator partition waits for barrier `n` from every upstream partition: the
//!   runtime's barrier (`dirigo_runtime::Barrier::Wait`) holds back what an input sends
//!   after its barrier while the others catch up, and, being a critical message, merges
//!   every lessee's partial state into the lessor first. The partition then archives its
//!   state (the only work that holds its shard), reports it, and sends the barrier on.
//! - Sinks whose output is committed ([`LineTarget::Committed`](crate::sink::LineTarget))
//!   stage what they wrote since the last barrier as that epoch's output.
//! - The coordinator writes each part into a file per checkpoint and shard, with a
//!   CRC-32, and once every partition's part is in it flushes everything, commits the
//!   manifest (see `store`), then appends the staged output the checkpoint covers to
//!   each sink's file (two-phase commit), and deletes checkpoints beyond `retain`.
//!   A checkpoint not complete within `timeout` is abandoned and counted.
//!
//! How a run resumes ([`Checkpoints::recover`]): the newest checkpoint whose manifest
//! and parts check out (a damaged one is skipped with a log line saying why, never a
//! panic), the same apps (operators and partition counts; a changed app is refused
//! unless its state may be dropped), each sink's file cut back to its committed length
//! and the covered output committed again (idempotent), staged output no complete
//! checkpoint covers discarded, and each partition restored from its part when it is
//! first activated (keyed by actor address, not by shard, so the shard count may
//! change where partition counts are fixed). Sources rewind: files, the generator and
//! NEXMark replay up to where they were (exactly once); a TCP source cannot be replayed
//! and goes on with what arrives (at most once).
//!
//! Turning checkpoints on: the apps join a [`Checkpoints`] ([`AppBuilder::checkpoints`]),
//! and the runtime resumes them from it when it is built
//! ([`RuntimeCheckpoints::checkpoints`] on `RuntimeBuilder`). Running the same program
//! again after a crash (or a `kill -9`) goes on from the newest complete checkpoint, and
//! the committed output holds every row once.
//!
//! ```
//! use std::time::Duration;
//! use dirigo_operators::checkpoint::{CheckpointConfig, Checkpoints, RuntimeCheckpoints};
//! use dirigo_operators::dataflow::{AppBuilder, Msg};
//! use dirigo_operators::sink::LineTarget;
//! use dirigo_operators::source::Pacing;
//! use dirigo_operators::window::Windows;
//! use dirigo_runtime::Runtime;
//!
//! let dir = std::env::temp_dir().join(format!("dirigo-doc-chk-{}", std::process::id()));
//! let _ = std::fs::remove_dir_all(&dir);
//! std::fs::create_dir_all(&dir).unwrap();
//! let out = dir.join("counts.jsonl");
//!
//! // One run of the program; with `crash`, it stops once a checkpoint is complete.
//! let run = |crash: bool| {
//!     let checkpoints = Checkpoints::new(
//!         CheckpointConfig::new(dir.join("checkpoints")).interval(Duration::from_millis(5)),
//!     );
//!     let app = AppBuilder::new(0, "counts").parallelism(2).checkpoints(&checkpoints);
//!     let records: Vec<(u64, u64)> = (0..10_000u64).map(|i| (i, i % 10)).collect();
//!     app.source_iter("numbers", records, 0, Pacing::Unpaced)
//!         .key_by(|n: &u64| *n)
//!         .window_count("per-key", Windows::Tumbling { size: 1_000 })
//!         .map("row", |(key, window, n)| (key, window.end, n))
//!         .sink_json_lines("out", LineTarget::Committed(out.clone()))
//!         .unwrap();
//!     let app = app.build();
//!     let runtime = app
//!         .install(Runtime::<Msg>::builder().shards(2).checkpoints(&checkpoints))
//!         .build()
//!         .unwrap();
//!     let resumed_from = checkpoints.recovery().unwrap().resumed_from;
//!     app.start(&runtime.ingress());
//!     let completed = if crash {
//!         while checkpoints.stats().completed == 0 {
//!             std::thread::sleep(Duration::from_millis(1));
//!         }
//!         false
//!     } else {
//!         app.wait(Duration::from_secs(10))
//!     };
//!     // Without a last checkpoint, what came after the last one is not committed: a
//!     // crashed run leaves it to the next.
//!     let stats = checkpoints.finish(completed);
//!     app.stop();
//!     app.wait(Duration::from_secs(10));
//!     runtime.shutdown();
//!     (resumed_from, stats)
//! };
//!
//! let (resumed_from, _) = run(true);
//! assert_eq!(resumed_from, None, "a fresh directory: a fresh start");
//! let (resumed_from, stats) = run(false);
//! assert!(resumed_from.is_some(), "the second run goes on from a checkpoint");
//! assert!(stats.completed >= 1, "the last checkpoint commits the output");
//! let lines = std::fs::read_to_string(&out).unwrap().lines().count();
//! assert_eq!(lines, 100, "10 keys in each of 10 windows, each once");
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod coordinator;
pub(crate) mod link;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use dirigo_runtime::background::{self, ServicePriority};
use dirigo_runtime::{Ingress, RuntimeBuilder};

pub(crate) use link::Saved;
pub use link::{CheckpointLink, CompletedCheckpoints, SavedInputs};
pub use store::{list, CheckpointInfo};

#[cfg(doc)]
use crate::dataflow::AppBuilder;
use crate::dataflow::{App, CheckpointId, Msg};
use coordinator::{Command, Coordinator, RegisteredApp};
use link::{Report, REPORT_QUEUE};
use store::AppLayout;

/// Where and how often to checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// The directory that holds the checkpoints (created if missing).
    pub dir: PathBuf,
    /// Time from the end of one checkpoint to the start of the next.
    pub interval: Duration,
    /// Complete checkpoints kept (at least 1): older ones are deleted.
    pub retain: usize,
    /// A checkpoint not complete within this long is abandoned (and counted).
    pub timeout: Duration,
    /// Whether a checkpoint whose apps differ from the runtime's (operators or partition
    /// counts) lets the changed apps start from scratch and the others resume; without
    /// it, such a checkpoint is refused (see [`Checkpoints::recover`]).
    pub allow_state_drop: bool,
    /// The priority of the checkpoint thread, which archives, writes and commits the
    /// checkpoints: [`ServicePriority::Normal`] (the default) keeps their pace. At either
    /// priority the thread offers its CPU to a waiting shard every
    /// [`GIVE_WAY_EVERY`](background::GIVE_WAY_EVERY) (see [`background`]), so where every
    /// core runs a shard a record waits for a burst of its work (0.2–0.55 ms measured on
    /// 2 shards over 2 cores), not a scheduler tick.
    /// [`ServicePriority::Idle`] gives it only CPU time the shards leave; where the
    /// shards keep every core busy, checkpoints then complete later than `interval` asks,
    /// or not at all while the shards are saturated (an unpaced run).
    pub priority: ServicePriority,
}

impl CheckpointConfig {
    /// Checkpoints in `dir`: every second, the newest 3 kept, abandoned after 60 s, a
    /// changed app refused.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            interval: Duration::from_secs(1),
            retain: 3,
            timeout: Duration::from_secs(60),
            allow_state_drop: false,
            priority: ServicePriority::Normal,
        }
    }

    /// Time from the end of one checkpoint to the start of the next.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Complete checkpoints kept (at least 1 is).
    pub fn retain(mut self, retain: usize) -> Self {
        self.retain = retain;
        self
    }

    /// How long a checkpoint may take before it is abandoned.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether changed apps start from scratch (instead of the checkpoint being refused).
    pub fn allow_state_drop(mut self, allow: bool) -> Self {
        self.allow_state_drop = allow;
        self
    }

    /// The checkpoint thread's priority (see [`CheckpointConfig::priority`]).
    pub fn priority(mut self, priority: ServicePriority) -> Self {
        self.priority = priority;
        self
    }
}

/// What the checkpoints did in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CheckpointStats {
    /// Checkpoints completed.
    pub completed: u64,
    /// Checkpoints abandoned (timed out, or a part could not be archived or written).
    pub abandoned: u64,
    /// The newest complete checkpoint (0: none).
    pub last_complete: CheckpointId,
    /// The checkpoint the run resumed from, if any.
    pub resumed_from: Option<CheckpointId>,
    /// Duration of each completed checkpoint, start to committed manifest (µs).
    pub durations_us: Vec<u64>,
    /// Of each completed checkpoint, start to the moment the last partition reported its
    /// part (barriers' travel and alignment, µs); archiving and writing the parts comes
    /// after, in `durations_us`.
    pub alignments_us: Vec<u64>,
    /// The longest time archiving a partition's state held its shard (µs).
    pub max_shard_hold_us: u64,
    /// Bytes of state in the last completed checkpoint.
    pub bytes_last: u64,
    /// Bytes of state over every completed checkpoint.
    pub bytes_total: u64,
}

/// The checkpoints of a runtime's apps (see the [module docs](self)): a handle, cheap to
/// clone, that apps join with [`AppBuilder::checkpoints`](crate::dataflow::AppBuilder::checkpoints)
/// and a runtime resumes from and starts with
/// [`RuntimeBuilder::checkpoints`](RuntimeCheckpoints::checkpoints); [`finish`](Self::finish)
/// it when the run ends.
#[derive(Clone)]
pub struct Checkpoints {
    shared: Arc<Shared>,
}

/// What every handle of one [`Checkpoints`] shares.
struct Shared {
    config: CheckpointConfig,
    reports: flume::Sender<Report>,
    receiver: flume::Receiver<Report>,
    commands: flume::Sender<Command>,
    command_receiver: flume::Receiver<Command>,
    apps: Mutex<Vec<(App, Arc<CheckpointLink>)>>,
    stats: Arc<Mutex<CheckpointStats>>,
    recovered: Mutex<Option<Recovered>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// What the last [`Checkpoints::recover`] did.
    recovery: Mutex<Option<Recovery>>,
}

/// Where a recovery left the coordinator.
struct Recovered {
    next_id: CheckpointId,
    last_complete: CheckpointId,
    complete: Vec<CheckpointId>,
    committed_len: HashMap<PathBuf, u64>,
}

/// What [`Checkpoints::recover`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The checkpoint the apps resume from; `None`: they start from scratch.
    pub resumed_from: Option<CheckpointId>,
    /// Checkpoints passed over, newest first, each with why (damaged, incomplete).
    pub skipped: Vec<String>,
    /// Apps that start from scratch although the checkpoint held state for them
    /// (changed, with the state allowed to drop).
    pub dropped: Vec<String>,
}

impl Checkpoints {
    /// Checkpoints as `config` says; nothing happens on disk until
    /// [`recover`](Self::recover).
    pub fn new(config: CheckpointConfig) -> Self {
        let (reports, receiver) = flume::bounded(REPORT_QUEUE);
        let (commands, command_receiver) = flume::unbounded();
        let shared = Shared {
            config,
            reports,
            receiver,
            commands,
            command_receiver,
            apps: Mutex::new(Vec::new()),
            stats: Arc::new(Mutex::new(CheckpointStats::default())),
            recovered: Mutex::new(None),
            thread: Mutex::new(None),
            recovery: Mutex::new(None),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CheckpointConfig {
        &self.shared.config
    }

    /// Connects `app` to the checkpoints; call before [`App::install`]. An app built
    /// with [`AppBuilder::checkpoints`] is connected already (connecting it again does
    /// nothing): this is for apps built elsewhere.
    pub fn attach(&self, app: &App) {
        let mut apps = self.shared.apps.lock().unwrap_or_else(|e| e.into_inner());
        if apps.iter().any(|(attached, _)| attached.id() == app.id()) {
            return;
        }
        let link = Arc::new(CheckpointLink::new(app.id(), self.shared.reports.clone()));
        app.attach_checkpoint(link.clone());
        apps.push((app.clone(), link));
    }

    /// Resumes the attached (and installed) apps from the newest valid checkpoint in the
    /// directory, or prepares a fresh start when there is none; call before the runtime
    /// runs the apps. A checkpoint whose apps differ from these (operators or partition
    /// counts) is refused, unless `allow_state_drop`: then the changed apps start from
    /// scratch and the others resume.
    ///
    /// # Errors
    /// An app whose state cannot be checkpointed, a changed app, or a directory or sink
    /// file that cannot be read or written: a sentence saying which.
    pub fn recover(&self, allow_state_drop: bool) -> Result<Recovery, String> {
        let _span =
            tracing::info_span!("recover", dir = %self.shared.config.dir.display()).entered();
        let apps = self
            .shared
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (app, _) in &apps {
            if let Some((operator, why)) = app.not_checkpointable().into_iter().next() {
                return Err(format!(
                    "app `{}` cannot be checkpointed: operator `{operator}`: {why}",
                    app.name()
                ));
            }
        }
        std::fs::create_dir_all(&self.shared.config.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.shared.config.dir.display()))?;
        let dir = &self.shared.config.dir;
        let layouts: Vec<AppLayout> = apps.iter().map(|(app, _)| layout_of(app)).collect();
        let ids = store::checkpoint_ids(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut recovery = Recovery::default();
        let mut chosen = None;
        for &id in &ids {
            let manifest = match store::read_manifest(dir, id) {
                Ok(manifest) => manifest,
                Err(_)
                    if !store::checkpoint_dir(dir, id)
                        .join(store::MANIFEST)
                        .exists() =>
                {
                    // Taken while the last run stopped: it never completed.
                    tracing::info!("checkpoint {id} was not complete (no manifest): passed over");
                    continue;
                }
                Err(why) => {
                    recovery.skipped.push(format!("checkpoint {id}: {why}"));
                    continue;
                }
            };
            let dropped = changed_apps(&manifest.apps, &layouts);
            if !dropped.is_empty() && !allow_state_drop {
                return Err(format!(
                    "checkpoint {id} in {} holds state for other apps than these ({}); \
                     run with --allow-state-drop to start those from scratch, or \
                     --from-scratch to start everything from scratch",
                    dir.display(),
                    dropped.join("; ")
                ));
            }
            match store::load_parts(dir, &manifest) {
                Ok(parts) => {
                    recovery.dropped = dropped;
                    chosen = Some((manifest, parts));
                    break;
                }
                Err(why) => recovery.skipped.push(format!("checkpoint {id}: {why}")),
            }
        }
        for skipped in &recovery.skipped {
            tracing::warn!("{skipped}; trying the one before");
        }
        let next_id = ids.first().copied().unwrap_or(0) + 1;
        let mut committed_len = HashMap::new();
        let recovered = match chosen {
            Some((manifest, mut parts)) => {
                let restored: Vec<dirigo_runtime::AppId> = layouts
                    .iter()
                    .filter(|layout| manifest.apps.contains(layout))
                    .map(|layout| layout.id)
                    .collect();
                for (app, link) in &apps {
                    let sinks = app.sink_operators();
                    if restored.contains(&app.id()) {
                        let parts = parts.remove(&app.id()).unwrap_or_default();
                        let finished = parts
                            .iter()
                            .filter(|((operator, _), part)| {
                                part.inputs.ended && sinks.contains(operator)
                            })
                            .count() as u64;
                        link.set_restored(manifest.id, parts);
                        app.restore_finished_sinks(finished);
                    } else {
                        // Starts from scratch: its first epoch follows the checkpoint.
                        link.set_restored(manifest.id, HashMap::new());
                        for (_, _, path) in app.committed_sinks() {
                            truncate(&path)?;
                            committed_len.insert(path, 0);
                        }
                    }
                }
                let mut commit = manifest.clone();
                commit.sinks.retain(|sink| restored.contains(&sink.app));
                for (path, len) in store::commit_sinks(dir, &commit).map_err(|e| e.to_string())? {
                    committed_len.insert(path, len);
                }
                // Sinks that deliver their output themselves may have died between the
                // manifest and the end of the delivery: they deliver the checkpoint's
                // epochs again (without duplicates, see `CommitTarget`).
                for (app, _) in &apps {
                    if !restored.contains(&app.id()) {
                        continue;
                    }
                    for (operator, partitions, target) in app.commit_targets() {
                        target
                            .commit(
                                dir,
                                app.id(),
                                operator,
                                partitions,
                                manifest.previous + 1..=manifest.id,
                            )
                            .map_err(|e| {
                                format!(
                                    "app `{}`: cannot deliver the output of checkpoint {} again: {e}",
                                    app.name(),
                                    manifest.id
                                )
                            })?;
                    }
                }
                for (app, _) in &apps {
                    for (_, _, path) in app.committed_sinks() {
                        if let std::collections::hash_map::Entry::Vacant(slot) =
                            committed_len.entry(path)
                        {
                            truncate(slot.key())?;
                            slot.insert(0);
                        }
                    }
                }
                let complete: Vec<CheckpointId> = ids
                    .iter()
                    .copied()
                    .filter(|&id| id <= manifest.id && store::read_manifest(dir, id).is_ok())
                    .collect();
                store::prune(
                    dir,
                    &complete,
                    self.shared.config.retain,
                    CheckpointId::MAX,
                    Some(manifest.id),
                )
                .map_err(|e| format!("{}: {e}", dir.display()))?;
                recovery.resumed_from = Some(manifest.id);
                tracing::info!(
                    checkpoint = manifest.id,
                    "resuming from checkpoint {} in {}",
                    manifest.id,
                    dir.display()
                );
                Recovered {
                    next_id,
                    last_complete: manifest.id,
                    complete: complete
                        .into_iter()
                        .take(self.shared.config.retain.max(1))
                        .collect(),
                    committed_len,
                }
            }
            None => {
                for (app, _) in &apps {
                    for (_, _, path) in app.committed_sinks() {
                        truncate(&path)?;
                        committed_len.insert(path, 0);
                    }
                }
                let staged = dir.join(store::STAGED);
                if let Err(e) = std::fs::remove_dir_all(&staged) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(format!("cannot clear {}: {e}", staged.display()));
                    }
                }
                store::prune(
                    dir,
                    &[],
                    self.shared.config.retain,
                    CheckpointId::MAX,
                    Some(0),
                )
                .map_err(|e| format!("{}: {e}", dir.display()))?;
                Recovered {
                    next_id,
                    last_complete: 0,
                    complete: Vec::new(),
                    committed_len,
                }
            }
        };
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .resumed_from = recovery.resumed_from;
        *self
            .shared
            .recovered
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(recovered);
        *self
            .shared
            .recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(recovery.clone());
        Ok(recovery)
    }

    /// Starts the coordinator's thread, which starts a checkpoint every interval; call
    /// after [`recover`](Self::recover), with the runtime's ingress.
    ///
    /// # Panics
    /// When called before `recover`, or twice.
    pub fn start(&self, ingress: Ingress<Msg>) {
        let recovered = self
            .shared
            .recovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("Checkpoints::recover comes before Checkpoints::start, once");
        let shards = ingress.shards();
        let apps = self
            .shared
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(app, link)| RegisteredApp {
                layout: layout_of(app),
                sources: app.source_actors(),
                sinks: app.committed_sinks(),
                commit_targets: app.commit_targets(),
                link: link.clone(),
            })
            .collect();
        let coordinator = Coordinator::new(
            self.shared.config.clone(),
            ingress,
            apps,
            recovered.next_id,
            recovered.last_complete,
            recovered.complete,
            recovered.committed_len,
            self.shared.stats.clone(),
        );
        let cpus = dirigo_runtime::placement::available_cpus().len();
        // Once per process: a bench or a test starts checkpoints many times.
        static SAID: std::sync::Once = std::sync::Once::new();
        if shards >= cpus {
            SAID.call_once(|| tracing::info!(
                shards,
                cpus,
                "checkpoints: every CPU runs a shard, so the checkpoint thread takes its CPU from the shards while it archives and writes, and a latency-critical app's p99 rises (1.6-3.4x in `dirigo bench checkpoint` on 2 shards over 2 CPUs, none on 1 shard); where the tail matters, run one shard fewer than CPUs"
            ));
        }
        let receiver = self.shared.receiver.clone();
        let commands = self.shared.command_receiver.clone();
        let priority = self.shared.config.priority;
        let thread = std::thread::Builder::new()
            .name("dirigo-checkpoints".into())
            .spawn(move || {
                if let Err(e) = priority.apply() {
                    tracing::warn!("the checkpoint thread keeps its normal priority: {e}");
                }
                // Archiving and writing a large state takes long: a shard that wakes on
                // this CPU gets it within `GIVE_WAY_EVERY`, not after a scheduler tick.
                background::give_way_at_points();
                coordinator.run(receiver, commands)
            })
            .expect("the checkpoint thread starts");
        *self.shared.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
    }

    /// Ends the checkpoints when the run ends: with `final_checkpoint` (every app
    /// completed), one last checkpoint commits what the sinks wrote since the one before
    /// (without it, that output stays staged and a resumed run writes it again); then
    /// the thread stops. Returns what the checkpoints did.
    pub fn finish(&self, final_checkpoint: bool) -> CheckpointStats {
        let _ = self
            .shared
            .commands
            .send(Command::Finish { final_checkpoint });
        if let Some(thread) = self
            .shared
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let deadline =
                std::time::Instant::now() + coordinator::FINISH_WAIT + self.shared.config.timeout;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!("the checkpoint thread did not stop in time; leaving it");
            }
        }
        self.stats()
    }

    /// Starts a checkpoint now, instead of at the end of the interval (or as soon as
    /// the one in flight ends): before a planned stop, say.
    pub fn checkpoint_now(&self) {
        let _ = self.shared.commands.send(Command::Now);
    }

    /// Parts of the checkpoint the apps resume from that are not restored yet: 0 once
    /// every partition took its state back (partitions do so when first activated).
    pub fn restoring(&self) -> usize {
        self.shared
            .apps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, link)| link.restoring())
            .sum()
    }

    /// What the recovery did (which checkpoint the apps resume from, which were passed
    /// over and why); `None` before [`recover`](Self::recover) ran.
    pub fn recovery(&self) -> Option<Recovery> {
        self.shared
            .recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the checkpoints did so far.
    pub fn stats(&self) -> CheckpointStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A reader of [`stats`](Self::stats) for a monitor beside the run, such as a metrics
    /// endpoint: it reads in place, without a copy, under a lock that the coordinator
    /// thread takes once per checkpoint and no shard ever takes.
    ///
    /// ```
    /// use dirigo_operators::checkpoint::{CheckpointConfig, Checkpoints};
    ///
    /// let checkpoints = Checkpoints::new(CheckpointConfig::new(std::env::temp_dir().join("watched")));
    /// let watch = checkpoints.watch();
    /// assert_eq!(watch.read(|stats| stats.completed), 0);
    /// ```
    pub fn watch(&self) -> CheckpointWatch {
        CheckpointWatch(self.shared.stats.clone())
    }
}

/// Checkpoints on [`RuntimeBuilder`]: the runtime resumes the apps from the newest
/// valid checkpoint (or prepares a fresh start) and starts the coordinator before
/// [`build`](RuntimeBuilder::build) returns it, so apps started afterwards run from
/// where the checkpoint left them. A checkpoint that cannot be used (an app changed,
/// without [`allow_state_drop`](CheckpointConfig::allow_state_drop); an app that cannot
/// be checkpointed; a directory that cannot be written) fails the build with
/// [`BuildError::Started`](dirigo_runtime::BuildError::Started) saying why. See the
/// [module docs](self) for a whole run.
pub trait RuntimeCheckpoints {
    /// Recovers and starts `checkpoints` once the runtime's shards run (install the apps
    /// that joined them first).
    fn checkpoints(self, checkpoints: &Checkpoints) -> Self;
}

impl RuntimeCheckpoints for RuntimeBuilder<Msg> {
    fn checkpoints(self, checkpoints: &Checkpoints) -> Self {
        let checkpoints = checkpoints.clone();
        self.on_started(move |runtime| {
            checkpoints.recover(checkpoints.config().allow_state_drop)?;
            checkpoints.start(runtime.ingress());
            Ok(())
        })
    }
}

/// Reads the checkpoints' figures while they run (see [`Checkpoints::watch`]).
#[derive(Clone)]
pub struct CheckpointWatch(Arc<Mutex<CheckpointStats>>);

impl CheckpointWatch {
    /// `read` applied to the figures as they are now.
    pub fn read<R>(&self, read: impl FnOnce(&CheckpointStats) -> R) -> R {
        read(&self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// An app's layout as a checkpoint records it.
fn layout_of(app: &App) -> AppLayout {
    AppLayout {
        id: app.id(),
        name: app.name().to_owned(),
        operators: app.operators(),
    }
}

/// The apps a checkpoint's `saved` layouts hold state for that `now` lacks or has
/// changed, each with a word on how.
fn changed_apps(saved: &[AppLayout], now: &[AppLayout]) -> Vec<String> {
    let mut changed = Vec::new();
    for app in saved {
        match now.iter().find(|other| other.id == app.id) {
            None => changed.push(format!("app `{}` is gone", app.name)),
            Some(other) if other != app => changed.push(format!(
                "app `{}` changed (operators and partitions then: {}; now: {})",
                app.name,
                describe(&app.operators),
                describe(&other.operators)
            )),
            Some(_) => {}
        }
    }
    changed
}

fn describe(operators: &[(String, dirigo_runtime::PartitionId)]) -> String {
    operators
        .iter()
        .map(|(name, partitions)| format!("{name}×{partitions}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn truncate(path: &std::path::Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map(drop)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}
