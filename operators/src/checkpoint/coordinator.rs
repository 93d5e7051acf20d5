//! The checkpoint coordinator: a thread outside the shards that starts a checkpoint
//! every interval at every source partition, collects each operator partition's part
//! and each sink's staged output, writes them to disk, commits the manifest once every
//! part is in, commits the sinks' output, and deletes what no kept checkpoint needs.
//!
//! One checkpoint is in flight at a time: the next starts an interval after the last one
//! ended (completed or abandoned), so what waits in memory for the disk is at most one
//! checkpoint's state plus the reports queue ([`REPORT_QUEUE`](super::link)).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dirigo_runtime::background;
use dirigo_runtime::{ActorId, Envelope, Ingress, ShardId};

use super::link::{Part, Report};
use super::store::{self, AppLayout, Manifest, PartEntry, SinkEntry, StateEntry, PART_ALIGN};
use super::{CheckpointConfig, CheckpointStats};
use crate::dataflow::{CheckpointId, Msg};

/// An app as the coordinator sees it.
pub(crate) struct RegisteredApp {
    pub(crate) layout: AppLayout,
    pub(crate) sources: Vec<ActorId>,
    /// Sinks whose output is committed: operator, partitions, file.
    pub(crate) sinks: Vec<(
        dirigo_runtime::OperatorId,
        dirigo_runtime::PartitionId,
        PathBuf,
    )>,
    /// Sinks that deliver committed output themselves (to a broker).
    pub(crate) commit_targets: Vec<crate::dataflow::CommitTargetOf>,
    /// The app's link: told of each complete checkpoint.
    pub(crate) link: Arc<super::link::CheckpointLink>,
}

impl RegisteredApp {
    fn partitions(&self) -> usize {
        self.layout.operators.iter().map(|(_, p)| *p as usize).sum()
    }
}

/// What the coordinator's thread is asked to do besides its reports.
pub(crate) enum Command {
    /// Take one last checkpoint (when `final_checkpoint`), then stop.
    Finish { final_checkpoint: bool },
    /// Start a checkpoint now (or as soon as the one in flight ends).
    Now,
}

/// The checkpoint being taken.
struct InFlight {
    id: CheckpointId,
    started: Instant,
    /// Per shard: its parts file and the bytes in it.
    files: HashMap<ShardId, (File, u64)>,
    parts: Vec<PartEntry>,
    expected: usize,
    /// When the last partition reported its part (not when this thread took it).
    last_part_at: Instant,
    max_hold_ns: u64,
    bytes: u64,
    /// The `checkpoint` span: what is logged about this checkpoint is logged inside it
    /// (with `--log-format json`, every such line carries the checkpoint's id).
    span: tracing::Span,
}

pub(crate) struct Coordinator {
    pub(crate) config: CheckpointConfig,
    pub(crate) ingress: Ingress<Msg>,
    pub(crate) apps: Vec<RegisteredApp>,
    pub(crate) next_id: CheckpointId,
    pub(crate) last_complete: CheckpointId,
    /// Complete checkpoints, newest first.
    pub(crate) complete: Vec<CheckpointId>,
    /// Each committed sink file's committed length.
    pub(crate) committed_len: HashMap<PathBuf, u64>,
    pub(crate) stats: Arc<Mutex<CheckpointStats>>,
    in_flight: Option<InFlight>,
    /// Staged output files open for appending, by sink partition and epoch.
    staged: HashMap<(ActorId, CheckpointId), File>,
    /// The first staging write that failed: no checkpoint can cover that output now.
    broken: Option<String>,
}

impl Coordinator {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: CheckpointConfig,
        ingress: Ingress<Msg>,
        apps: Vec<RegisteredApp>,
        next_id: CheckpointId,
        last_complete: CheckpointId,
        complete: Vec<CheckpointId>,
        committed_len: HashMap<PathBuf, u64>,
        stats: Arc<Mutex<CheckpointStats>>,
    ) -> Self {
        Self {
            config,
            ingress,
            apps,
            next_id,
            last_complete,
            complete,
            committed_len,
            stats,
            in_flight: None,
            staged: HashMap::new(),
            broken: None,
        }
    }

    /// The thread's loop: reports as they come, a checkpoint every interval, until told
    /// to finish (or every sender is gone).
    pub(crate) fn run(
        mut self,
        reports: flume::Receiver<Report>,
        commands: flume::Receiver<Command>,
    ) {
        let mut next_start = Instant::now() + self.config.interval;
        let mut finishing: Option<bool> = None;
        loop {
            let now = Instant::now();
            let wake = match &self.in_flight {
                Some(flight) => flight.started + self.config.timeout,
                None if finishing.is_some() => now,
                // Commands come on their own channel: look at it at least this often.
                None => next_start.min(now + COMMAND_POLL),
            };
            match reports.recv_deadline(wake.max(now)) {
                Ok(report) => self.handle(report),
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => break,
            }
            // Reports first: drain what is there before deciding anything.
            while let Ok(report) = reports.try_recv() {
                self.handle(report);
            }
            while finishing.is_none() {
                match commands.try_recv() {
                    Ok(Command::Finish { final_checkpoint }) => finishing = Some(final_checkpoint),
                    Ok(Command::Now) => next_start = Instant::now(),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if let Some(flight) = &self.in_flight {
                if now >= flight.started + self.config.timeout {
                    self.abandon(&format!(
                        "not complete within {:?} ({} of {} parts)",
                        self.config.timeout,
                        flight.parts.len(),
                        flight.expected
                    ));
                    next_start = Instant::now() + self.config.interval;
                }
                continue;
            }
            match finishing {
                Some(true) => {
                    // The last checkpoint commits what the apps wrote since the one
                    // before; it completes (or times out) before the thread stops.
                    finishing = Some(false);
                    self.start();
                }
                Some(false) => break,
                None if now >= next_start => {
                    self.start();
                    next_start = now + self.config.interval;
                }
                None => {}
            }
        }
        if self.in_flight.is_some() {
            self.abandon("the run ended first");
        }
        self.flush_staged();
    }

    fn handle(&mut self, report: Report) {
        match report {
            Report::Part(part) => self.take_part(part),
            Report::Output {
                actor,
                epoch,
                bytes,
            } => self.stage(actor, epoch, &bytes),
        }
    }

    /// Starts checkpoint `next_id` at every source partition.
    fn start(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        let dir = store::checkpoint_dir(&self.config.dir, id);
        if let Err(e) = fs::create_dir_all(&dir) {
            tracing::warn!(
                checkpoint = id,
                "cannot create {}: {e}; checkpoint skipped",
                dir.display()
            );
            self.count_abandoned();
            return;
        }
        let expected = self.apps.iter().map(RegisteredApp::partitions).sum();
        let now = Instant::now();
        let span = tracing::info_span!("checkpoint", checkpoint = id);
        let _entered = span.clone().entered();
        self.in_flight = Some(InFlight {
            id,
            started: now,
            files: HashMap::new(),
            parts: Vec::with_capacity(expected),
            expected,
            last_part_at: now,
            max_hold_ns: 0,
            bytes: 0,
            span,
        });
        for app in &self.apps {
            for &source in &app.sources {
                // Fails only while the runtime shuts down: the checkpoint times out.
                let _ = self
                    .ingress
                    .send(Envelope::user(source, Msg::Checkpoint(id)));
            }
        }
        tracing::debug!("checkpoint started");
    }

    fn take_part(&mut self, part: Part) {
        let Some(flight) = &mut self.in_flight else {
            return;
        };
        if part.id != flight.id {
            return; // A part of an abandoned checkpoint.
        }
        let span = flight.span.clone();
        let _span = span.enter();
        // A copy of the state is archived here, off the shard that made it.
        let archived = part.state.and_then(|saved| {
            saved
                .archive()
                .map_err(|e| format!("cannot archive the state of {}: {e}", part.actor))
        });
        let state = match archived {
            Ok(state) => state,
            Err(why) => {
                self.abandon(&why);
                return;
            }
        };
        let Some(flight) = &mut self.in_flight else {
            return;
        };
        let entry = match state {
            None => None,
            Some(snapshot) => {
                let dir = store::checkpoint_dir(&self.config.dir, flight.id);
                let file = match flight.files.entry(part.shard) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        let path = dir.join(format!("shard-{}.parts", part.shard));
                        match File::create(&path) {
                            Ok(file) => slot.insert((file, 0)),
                            Err(e) => {
                                let why = format!("cannot create {}: {e}", path.display());
                                self.abandon(&why);
                                return;
                            }
                        }
                    }
                };
                let bytes = snapshot.as_bytes();
                let padding = (PART_ALIGN - file.1 % PART_ALIGN) % PART_ALIGN;
                let offset = file.1 + padding;
                let written = file
                    .0
                    .write_all(&[0u8; PART_ALIGN as usize][..padding as usize])
                    .and_then(|()| write_giving_way(&mut file.0, bytes));
                let crc32 = match written {
                    Ok(crc32) => crc32,
                    Err(e) => {
                        let why = format!("cannot write shard {}'s parts: {e}", part.shard);
                        self.abandon(&why);
                        return;
                    }
                };
                file.1 = offset + bytes.len() as u64;
                flight.bytes += bytes.len() as u64;
                Some(StateEntry {
                    file: format!("shard-{}.parts", part.shard),
                    offset,
                    len: bytes.len() as u64,
                    crc32,
                })
            }
        };
        flight.max_hold_ns = flight.max_hold_ns.max(part.held_ns);
        flight.last_part_at = flight.last_part_at.max(part.reported_at);
        flight.parts.push(PartEntry {
            app: part.actor.app,
            operator: part.actor.operator,
            partition: part.actor.partition,
            inputs: part.inputs,
            state: entry,
        });
        if flight.parts.len() >= flight.expected {
            if let Err(e) = self.complete() {
                let why = format!("cannot commit: {e}");
                self.abandon(&why);
            }
        }
    }

    /// Every part is in: flush the parts and the staged output it covers, commit the
    /// manifest, then the sinks' output, and prune.
    fn complete(&mut self) -> io::Result<()> {
        if let Some(broken) = &self.broken {
            return Err(io::Error::other(format!(
                "staged sink output was lost earlier ({broken})"
            )));
        }
        let flight = self.in_flight.as_ref().expect("a checkpoint in flight");
        let id = flight.id;
        for (file, _) in flight.files.values() {
            file.sync_all()?;
        }
        let covered: Vec<(ActorId, CheckpointId)> = self
            .staged
            .keys()
            .filter(|(_, epoch)| *epoch <= id)
            .copied()
            .collect();
        for key in covered {
            if let Some(file) = self.staged.remove(&key) {
                file.sync_all()?;
            }
        }
        let staged_dir = self.config.dir.join(store::STAGED);
        if staged_dir.exists() {
            store::sync_dir(&staged_dir)?;
        }
        let sinks = self
            .apps
            .iter()
            .flat_map(|app| {
                app.sinks
                    .iter()
                    .map(|(operator, partitions, path)| SinkEntry {
                        app: app.layout.id,
                        operator: *operator,
                        partitions: *partitions,
                        path: path.clone(),
                        base_len: self.committed_len.get(path).copied().unwrap_or(0),
                    })
            })
            .collect();
        let flight = self.in_flight.take().expect("a checkpoint in flight");
        let _span = flight.span.clone().entered();
        let manifest = Manifest {
            format: store::FORMAT,
            id,
            previous: self.last_complete,
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            apps: self.apps.iter().map(|app| app.layout.clone()).collect(),
            parts: flight.parts,
            sinks,
        };
        store::write_manifest(&self.config.dir, &manifest)?;
        self.last_complete = id;
        self.complete.insert(0, id);
        for (path, len) in store::commit_sinks(&self.config.dir, &manifest)? {
            self.committed_len.insert(path, len);
        }
        // Sinks that deliver their output themselves (brokers) do so now, before the next
        // checkpoint starts: a recovery from this one delivers epochs `previous + 1 ..=
        // id` again, and every earlier epoch was delivered before this one started.
        for app in &self.apps {
            for (operator, partitions, target) in &app.commit_targets {
                if let Err(e) = target.commit(
                    &self.config.dir,
                    app.layout.id,
                    *operator,
                    *partitions,
                    manifest.previous + 1..=id,
                ) {
                    let why = format!(
                        "checkpoint {id} is complete, but its output could not be delivered \
                         ({e}); a restart resumes from it and delivers it again"
                    );
                    tracing::error!("{why}; no later checkpoint completes in this run");
                    self.broken = Some(why);
                }
            }
            app.link.completed().complete(id);
        }
        if let Err(e) = store::prune(
            &self.config.dir,
            &self.complete,
            self.config.retain,
            id + 1,
            None,
        ) {
            tracing::warn!("cannot prune old checkpoints: {e}");
        }
        self.complete.truncate(self.config.retain.max(1));
        let took = flight.started.elapsed();
        let alignment = flight.last_part_at.duration_since(flight.started);
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.completed += 1;
        stats.last_complete = id;
        stats.durations_us.push(took.as_micros() as u64);
        stats.alignments_us.push(alignment.as_micros() as u64);
        stats.max_shard_hold_us = stats.max_shard_hold_us.max(flight.max_hold_ns / 1_000);
        stats.bytes_last = flight.bytes;
        stats.bytes_total += flight.bytes;
        drop(stats);
        tracing::debug!(
            took_ms = took.as_secs_f64() * 1e3,
            alignment_ms = alignment.as_secs_f64() * 1e3,
            bytes = flight.bytes,
            max_shard_hold_us = flight.max_hold_ns / 1_000,
            "checkpoint complete"
        );
        Ok(())
    }

    fn abandon(&mut self, why: &str) {
        let Some(flight) = self.in_flight.take() else {
            return;
        };
        flight.span.in_scope(|| {
            tracing::warn!(checkpoint = flight.id, "checkpoint abandoned: {why}");
        });
        drop(flight.files);
        let dir = store::checkpoint_dir(&self.config.dir, flight.id);
        let _ = fs::remove_dir_all(&dir);
        self.count_abandoned();
    }

    fn count_abandoned(&self) {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abandoned += 1;
    }

    /// Appends a sink partition's output of `epoch` to its staged file.
    fn stage(&mut self, actor: ActorId, epoch: CheckpointId, bytes: &[u8]) {
        if self.broken.is_some() {
            return;
        }
        let dir = &self.config.dir;
        let file = match self.staged.entry((actor, epoch)) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let path = store::staged_path(dir, actor, epoch);
                let opened = fs::create_dir_all(dir.join(store::STAGED))
                    .and_then(|()| OpenOptions::new().create(true).append(true).open(&path));
                match opened {
                    Ok(file) => slot.insert(file),
                    Err(e) => {
                        self.staging_failed(format!("{}: {e}", path.display()));
                        return;
                    }
                }
            }
        };
        if let Err(e) = file.write_all(bytes) {
            let path = store::staged_path(dir, actor, epoch);
            self.staging_failed(format!("{}: {e}", path.display()));
        }
    }

    fn staging_failed(&mut self, why: String) {
        tracing::error!(
            "cannot stage sink output ({why}): no checkpoint can complete from now on; \
             a restart resumes from the last complete one"
        );
        self.broken = Some(why);
    }

    fn flush_staged(&mut self) {
        for (_, file) in self.staged.drain() {
            let _ = file.sync_all();
        }
    }
}

/// How often the coordinator looks for commands while nothing else wakes it.
const COMMAND_POLL: Duration = Duration::from_millis(5);

/// How long the coordinator waits for the last checkpoint when a run ends, at most.
pub(crate) const FINISH_WAIT: Duration = Duration::from_secs(30);

/// Bytes written between two points where the checkpoint thread gives way to the shards.
const WRITE_SLICE: usize = 256 * 1024;

/// Writes `bytes` to `file` a slice at a time, giving way to the shards between slices
/// (a part of a gigabyte is a second of copying into the page cache), and returns their
/// CRC-32.
fn write_giving_way(file: &mut File, bytes: &[u8]) -> io::Result<u32> {
    let mut crc = crc32fast::Hasher::new();
    for slice in bytes.chunks(WRITE_SLICE) {
        file.write_all(slice)?;
        crc.update(slice);
        background::give_way();
    }
    Ok(crc.finalize())
}
