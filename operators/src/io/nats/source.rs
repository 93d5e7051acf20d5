//! The NATS source: one durable pull consumer per source partition, read on the NATS
//! thread, decoded there, and handed to the app in bounded batches (see the
//! [module documentation](super)).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer, DeliverPolicy};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::{self, stream};
use futures_lite::StreamExt;

use super::connect::NatsConnect;
use crate::checkpoint::CompletedCheckpoints;
use crate::dataflow::{check_event_time, AppBuilder, CheckpointId, Data, Stream, Time};
use crate::io::file::{DeadLetterSink, Line, TimeOf};
use crate::io::late::{LateCheck, LateRows};
use crate::io::parse::{Decode, Format};
use crate::io::payload::{KeyedPayloads, PayloadDecoder};
use crate::source::{Pacing, RecordSource, SourceWaker};

/// Batches that wait between the NATS thread and one source partition.
pub const CHANNEL_BATCHES: usize = 64;

/// The most messages one pull asks for, and so the most in one batch handed to the app
/// (default of [`NatsSourceOptions::fetch_batch`]).
pub const DEFAULT_FETCH_BATCH: usize = 256;

/// How often a partition's reader looks whether the source was stopped, and acknowledges
/// what the app has taken, while no message comes.
pub const POLL: Duration = Duration::from_millis(50);

/// `max_ack_pending` of the consumers the source creates: more than a partition ever
/// holds unacknowledged (its channel, one batch being decoded and one pull).
const MAX_ACK_PENDING: i64 = 1 << 20;

/// The first pause before pulling again after the server failed a pull; it doubles up to
/// [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Per partition, the most checkpoint positions kept while their checkpoints are not
/// known complete; past it the oldest is forgotten (its acknowledgement then waits for
/// a later checkpoint, which covers more).
const PENDING_CHECKPOINTS: usize = 4096;

/// The most batches whose last message a partition keeps for a later acknowledgement;
/// past it the oldest is dropped (acknowledging a later one covers it).
const MAX_UNACKED: usize = 1 << 16;

/// With checkpoints, how long a partition's reader stays after its stream ended, to
/// acknowledge what the run's last checkpoint covers.
pub const FINAL_ACK_WAIT: Duration = Duration::from_secs(10);

/// A partition's reader acknowledges once this many messages may be acknowledged, or
/// [`ACK_AFTER`] after the last acknowledgement, or when idle: one acknowledgement per
/// pull would double what the server reads from a consumer at low rates (a pull then
/// brings a message or two). A message stays unacknowledged that much longer; the
/// server's ack wait (30 s) is far beyond.
const ACK_EVERY: u64 = 256;
/// See [`ACK_EVERY`].
const ACK_AFTER: Duration = Duration::from_millis(20);

/// How long a pull request waits on the server for messages before the client renews it.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How often the server says that a waiting pull request is still alive.
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);

/// Where a NATS source partition stands in its stream: the stream sequence of the last
/// message it has taken into the app (records and dead letters alike); `0` before the
/// first. Recovery resumes right after it ([`NatsSourceOptions::start_after`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamPosition(pub u64);

/// Where a NATS record's event time comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EventTime {
    /// From the record (the source's `time_of`).
    #[default]
    Field,
    /// The time the server stored the message, in ms since the Unix epoch.
    Published,
}

/// A NATS source's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsSourceOptions {
    /// The server and how to log in.
    pub connect: NatsConnect,
    /// The JetStream stream to read.
    pub stream: String,
    /// The durable consumer's name; with several partitions, partition `p` reads through
    /// the consumer `CONSUMER-p`.
    pub consumer: String,
    /// The subjects to read (a filter, wildcards allowed); `None`: the whole stream.
    /// With several partitions it must hold `{partition}`, which partition `p` reads as
    /// `p` (`orders.{partition}`: partition 2 reads `orders.2`).
    pub subject: Option<String>,
    /// Source partitions (default 1), one consumer each.
    pub partitions: u32,
    /// How each message's payload is decoded: one record per message.
    pub format: Format,
    /// Where event times come from.
    pub event_time: EventTime,
    /// Create the stream (file storage, its subjects the filter with `*` for
    /// `{partition}`) and the consumers when they do not exist, instead of failing.
    pub create: bool,
    /// End the stream once no message came for this long (and the app took every one
    /// that came); time in which pulls failed (the server unreachable) does not count.
    /// `None` (the default): only a stop ends it.
    pub end_after_idle: Option<Duration>,
    /// The most messages one pull asks for (default [`DEFAULT_FETCH_BATCH`]).
    pub fetch_batch: usize,
    /// Per partition, the position to resume after (from a checkpoint): the consumer is
    /// made to deliver from the next sequence on. Empty (the default): each consumer
    /// resumes where its acknowledgements left it.
    pub start_after: Vec<StreamPosition>,
}

impl NatsSourceOptions {
    /// Reading `stream` through the durable consumer `consumer` on the server `connect`,
    /// one partition, CSV payloads, event times from the records.
    pub fn new(
        connect: NatsConnect,
        stream: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        Self {
            connect,
            stream: stream.into(),
            consumer: consumer.into(),
            subject: None,
            partitions: 1,
            format: Format::Csv,
            event_time: EventTime::Field,
            create: false,
            end_after_idle: None,
            fetch_batch: DEFAULT_FETCH_BATCH,
            start_after: Vec::new(),
        }
    }

    /// Partition `partition`'s consumer name.
    pub fn consumer_of(&self, partition: u32) -> String {
        if self.partitions <= 1 {
            self.consumer.clone()
        } else {
            format!("{}-{partition}", self.consumer)
        }
    }

    /// Partition `partition`'s filter subject (`None`: the whole stream).
    pub fn subject_of(&self, partition: u32) -> Option<String> {
        self.subject
            .as_ref()
            .map(|subject| subject.replace("{partition}", &partition.to_string()))
    }

    /// What the options lack or contradict, as a message.
    fn check(&self) -> Result<(), String> {
        if self.partitions == 0 {
            return Err("a NATS source needs at least one partition".into());
        }
        let templated = self
            .subject
            .as_ref()
            .is_some_and(|subject| subject.contains("{partition}"));
        if self.partitions > 1 && !templated {
            return Err(format!(
                "{} partitions need a subject with {{partition}} in it (like `orders.{{partition}}`), one per partition",
                self.partitions
            ));
        }
        if self.create && self.subject.is_none() {
            return Err("creating the stream needs a subject to capture".into());
        }
        if self.stream.is_empty() || self.consumer.is_empty() {
            return Err("a NATS source needs a stream and a consumer name".into());
        }
        Ok(())
    }
}

/// Records decoded from one pull, on their way to a partition: each with its stream
/// sequence; `through` is the sequence of the last message of the pull (which may be a
/// dead letter, or one skipped as delivered before).
struct NatsBatch<T> {
    /// The reader's generation (see [`Rewind`]): a batch of an older one is dropped.
    generation: u64,
    records: Vec<(Time, T)>,
    sequences: Vec<u64>,
    through: u64,
}

/// What the NATS thread and the app share, per source.
#[derive(Debug)]
struct SourceShared {
    stopping: AtomicBool,
    /// Partitions whose reader has ended.
    ended: AtomicU64,
    partitions: u64,
    /// Records handed to the app.
    records: AtomicU64,
    /// Per partition, the sequence through which the app has taken every message.
    taken: Vec<AtomicU64>,
    /// Per partition, the sequence through which the server was told the messages are
    /// done with.
    acked: Vec<AtomicU64>,
    /// Pulls that failed (the server gone, a request timed out) and were made again.
    pull_errors: AtomicU64,
    /// With checkpoints: which are complete (acknowledgements follow them).
    completed: OnceLock<CompletedCheckpoints>,
    /// Per partition, (checkpoint, position) of checkpoints not yet known complete.
    checkpoints: Vec<Mutex<VecDeque<(CheckpointId, u64)>>>,
    /// Per partition, a rewind the reader is to make.
    rewinds: Vec<Mutex<Option<Rewind>>>,
    /// Per partition, what wakes it when a batch is handed to it.
    wakers: Vec<Mutex<Option<SourceWaker>>>,
}

/// A partition's request to its reader: read again from right after `after` (`None`:
/// after the consumer's acknowledgement floor), handing on batches of `generation`.
#[derive(Clone, Copy, Debug)]
struct Rewind {
    generation: u64,
    after: Option<u64>,
    /// The highest event time the partition had passed on at `after` (for the late
    /// check, see [`crate::io::late`]).
    highest: Time,
}

/// Watches and stops a NATS source.
#[derive(Clone, Debug)]
pub struct NatsSourceHandle {
    shared: Arc<SourceShared>,
}

impl NatsSourceHandle {
    /// Stops reading: each partition's reader ends within [`POLL`], after acknowledging
    /// what the app has taken; the app's source partitions then end.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
    }

    /// Whether every partition's reader has ended.
    pub fn is_finished(&self) -> bool {
        self.shared.ended.load(Ordering::Acquire) >= self.shared.partitions
    }

    /// Waits up to `timeout` for [`is_finished`](Self::is_finished).
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Records handed to the app so far.
    pub fn records(&self) -> u64 {
        self.shared.records.load(Ordering::Acquire)
    }

    /// Where partition `partition` stands: the sequence through which the app took every
    /// message.
    pub fn position(&self, partition: u32) -> StreamPosition {
        StreamPosition(self.shared.taken[partition as usize].load(Ordering::Acquire))
    }

    /// The sequence through which partition `partition` acknowledged its messages.
    pub fn acknowledged(&self, partition: u32) -> StreamPosition {
        StreamPosition(self.shared.acked[partition as usize].load(Ordering::Acquire))
    }

    /// Pulls that failed and were made again (the server was unreachable, say).
    pub fn pull_errors(&self) -> u64 {
        self.shared.pull_errors.load(Ordering::Acquire)
    }
}

/// One incarnation of a NATS source partition: takes batches from the NATS thread.
struct NatsRecords<T> {
    batches: flume::Receiver<NatsBatch<T>>,
    records: std::vec::IntoIter<(Time, T)>,
    sequences: std::vec::IntoIter<u64>,
    through: u64,
    /// The sequence of the last record taken.
    position: StreamPosition,
    /// Where it stood before the last record was taken (a checkpoint while the source
    /// partition holds that record unsent stands there).
    before_last: StreamPosition,
    /// The highest event time of the records taken, and before the last one: a
    /// checkpoint keeps it with the position, for the reader's late check on a rewind.
    highest: Time,
    highest_before_last: Time,
    /// Records taken.
    given: u64,
    /// Batches of other generations are dropped (sent before a rewind).
    generation: u64,
    partition: usize,
    shared: Arc<SourceShared>,
}

impl<T> NatsRecords<T> {
    /// Asks the reader to read again from right after `after` (`None`: after the
    /// consumer's acknowledgement floor); batches already on their way are dropped.
    fn request_rewind(&mut self, after: Option<u64>, highest: Time) {
        self.generation += 1;
        *self.shared.rewinds[self.partition]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Rewind {
            generation: self.generation,
            after,
            highest,
        });
        self.records = Vec::new().into_iter();
        self.sequences = Vec::new().into_iter();
        self.through = 0;
    }

    fn start(&mut self, batch: NatsBatch<T>) {
        if batch.generation != self.generation {
            return;
        }
        self.records = batch.records.into_iter();
        self.sequences = batch.sequences.into_iter();
        self.through = batch.through;
        self.finish_batch_if_taken();
    }

    /// Once the current batch is all taken, the partition stands at its `through`.
    fn finish_batch_if_taken(&mut self) {
        if self.records.len() == 0 && self.through > 0 {
            self.position = self.position.max(StreamPosition(self.through));
            self.shared.taken[self.partition].store(self.position.0, Ordering::Release);
            self.through = 0;
        }
    }

    fn take(&mut self) -> Option<(Time, T)> {
        let record = self.records.next()?;
        self.before_last = self.position;
        self.highest_before_last = self.highest;
        self.highest = self.highest.max(record.0);
        self.given += 1;
        if let Some(sequence) = self.sequences.next() {
            self.position = StreamPosition(sequence);
        }
        self.finish_batch_if_taken();
        Some(record)
    }
}

impl<T: Data> RecordSource<T> for NatsRecords<T> {
    /// Blocks until a record comes (the source partition uses `poll_record` instead).
    fn next_record(&mut self) -> Option<(Time, T)> {
        loop {
            if let Some(record) = self.take() {
                return Some(record);
            }
            let batch = self.batches.recv().ok()?;
            self.start(batch);
        }
    }

    fn poll_record(&mut self) -> Poll<Option<(Time, T)>> {
        loop {
            if let Some(record) = self.take() {
                return Poll::Ready(Some(record));
            }
            match self.batches.try_recv() {
                Ok(batch) => self.start(batch),
                Err(flume::TryRecvError::Empty) => return Poll::Pending,
                Err(flume::TryRecvError::Disconnected) => return Poll::Ready(None),
            }
        }
    }

    /// The stream sequence through which the records handed on stand (the source
    /// partition may hold one taken record unsent), noted for acknowledging once
    /// checkpoint `id` is complete.
    fn checkpoint(&mut self, id: CheckpointId, handed_out: u64) -> Vec<u8> {
        let (position, highest) = if self.given > handed_out {
            (self.before_last, self.highest_before_last)
        } else {
            (self.position, self.highest)
        };
        if self.shared.completed.get().is_some() {
            let mut pending = self.shared.checkpoints[self.partition]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if pending.len() >= PENDING_CHECKPOINTS {
                pending.pop_front();
            }
            pending.push_back((id, position.0));
        }
        let mut extra = position.0.to_le_bytes().to_vec();
        extra.extend_from_slice(&highest.to_le_bytes());
        extra
    }

    /// Acknowledgements follow complete checkpoints from now on; a run from scratch
    /// reads from the consumer's acknowledgement floor on (what an earlier run delivered
    /// and never acknowledged comes again at once, not after the server's ack wait).
    fn follow_checkpoints(&mut self, completed: CompletedCheckpoints, resumed_from: CheckpointId) {
        let _ = self.shared.completed.set(completed);
        if resumed_from == 0 {
            self.request_rewind(None, 0);
        }
    }

    /// The reader wakes the partition when it hands it a batch (instead of the partition
    /// looking again after a pause).
    fn wake_with(&mut self, waker: SourceWaker) -> bool {
        *self.shared.wakers[self.partition]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(waker);
        true
    }

    /// Reads again from right after the checkpoint's position: the reader makes the
    /// partition's consumer anew, delivering from the next sequence on, its late check
    /// where it stood there. (A checkpoint of 8 bytes holds the position alone: the
    /// highest event time is then taken as 0.)
    fn rewind(&mut self, handed_out: u64, extra: &[u8]) -> Result<(), String> {
        let word = |at: usize| {
            extra
                .get(at..at + 8)
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map(u64::from_le_bytes)
        };
        let (after, highest) = match extra.len() {
            8 => (word(0), Some(0)),
            16 => (word(0), word(8)),
            _ => (None, None),
        };
        let (Some(after), Some(highest)) = (after, highest) else {
            return Err(format!(
                "the checkpoint holds no NATS stream position for partition {} ({} bytes)",
                self.partition,
                extra.len()
            ));
        };
        self.request_rewind(Some(after), highest);
        self.position = StreamPosition(after);
        self.before_last = self.position;
        self.highest = highest;
        self.highest_before_last = highest;
        self.given = handed_out;
        self.shared.taken[self.partition].store(after, Ordering::Release);
        self.shared.checkpoints[self.partition]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }
}

/// What one partition's reader needs.
struct Reader<T, D> {
    partition: usize,
    /// The source as dead letters name it: `nats:STREAM`.
    source: String,
    consumer: Consumer<pull::Config>,
    /// The stream, its consumer's name and filter: to make the consumer anew on a rewind.
    stream: stream::Stream,
    durable: String,
    filter: String,
    /// Which rewind the batches answer (see [`Rewind`]).
    generation: u64,
    /// With checkpoints: the sequence through which a complete checkpoint covers the
    /// partition.
    covered: u64,
    /// Turns each message's payload into a timed record.
    decoder: D,
    event_time: EventTime,
    /// Which records are late dead letters, in the order they are handed on.
    late: LateCheck,
    letters: DeadLetterSink,
    fetch_batch: usize,
    end_after_idle: Option<Duration>,
    /// Where batches go; `None` once the reader ended the partition's stream.
    records: Option<flume::Sender<NatsBatch<T>>>,
    shared: Arc<SourceShared>,
    /// The last sequence handed on: a message at or before it is a redelivery.
    handed: u64,
    /// The last message of each batch handed on and not acknowledged yet (with its
    /// sequence): acknowledging one acknowledges every message before it.
    unacked: VecDeque<(u64, jetstream::Message)>,
    /// When the reader last acknowledged (see [`ACK_EVERY`]).
    last_ack: Instant,
}

impl<T: Data, D: PayloadDecoder<T>> Reader<T, D> {
    fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Acquire)
    }

    /// Through which sequence the server may be told the messages are done with: what
    /// the app has taken, or with checkpoints, what a complete checkpoint covers.
    fn acknowledgeable(&mut self) -> u64 {
        let Some(completed) = self.shared.completed.get() else {
            return self.shared.taken[self.partition].load(Ordering::Acquire);
        };
        let last = completed.last();
        let mut pending = self.shared.checkpoints[self.partition]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while let Some(&(id, position)) = pending.front() {
            if id > last {
                break;
            }
            self.covered = self.covered.max(position);
            pending.pop_front();
        }
        self.covered
    }

    /// Wakes the partition if it waits for a batch.
    fn wake_partition(&self) {
        if let Some(waker) = self.shared.wakers[self.partition]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            waker.wake();
        }
    }

    /// Whether the partition asked for a rewind not made yet.
    fn rewind_requested(&self) -> bool {
        self.shared.rewinds[self.partition]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|rewind| rewind.generation != self.generation)
    }

    /// Makes a rewind the partition asked for: the consumer anew, delivering from right
    /// after the position (retried with backoff while the server fails it, until the
    /// source stops). Returns whether it made one.
    async fn rewind_if_asked(&mut self) -> bool {
        let Some(rewind) = *self.shared.rewinds[self.partition]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        else {
            return false;
        };
        if rewind.generation == self.generation {
            return false;
        }
        let mut pause = FIRST_RETRY_PAUSE;
        let mut failing = false;
        while !self.stopping() {
            let after = match rewind.after {
                Some(after) => Ok(after),
                None => self
                    .consumer
                    .get_info()
                    .await
                    .map(|info| info.ack_floor.stream_sequence)
                    .map_err(|e| e.to_string()),
            };
            let remade = match after {
                Ok(after) => remake_consumer(&self.stream, &self.durable, &self.filter, after)
                    .await
                    .map(|consumer| (after, consumer)),
                Err(e) => Err(e),
            };
            match remade {
                Ok((after, consumer)) => {
                    tracing::debug!(source = %self.source, partition = self.partition, after, "NATS source: reading from right after a position");
                    self.consumer = consumer;
                    self.generation = rewind.generation;
                    // Rows read before the rewind (their batches are dropped) count no
                    // more: the late check stands where the checkpoint did.
                    self.late.resume_at(rewind.highest);
                    self.handed = after;
                    self.covered = after;
                    self.unacked.clear();
                    return true;
                }
                Err(e) => {
                    self.pull_failed(&mut failing, &e);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
        }
        false
    }

    /// Tells the server that every message through what may be acknowledged is done
    /// with (see [`acknowledgeable`](Self::acknowledgeable)); unless `now`, only once
    /// [`ACK_EVERY`] messages or [`ACK_AFTER`] have gathered.
    async fn acknowledge_taken(&mut self, now: bool) {
        let taken = self.acknowledgeable();
        if !now
            && taken.saturating_sub(self.shared.acked[self.partition].load(Ordering::Acquire))
                < ACK_EVERY
            && self.last_ack.elapsed() < ACK_AFTER
        {
            return;
        }
        self.last_ack = Instant::now();
        let mut newest = None;
        while self
            .unacked
            .front()
            .is_some_and(|(sequence, _)| *sequence <= taken)
        {
            newest = self.unacked.pop_front();
        }
        let Some((sequence, message)) = newest else {
            return;
        };
        match message.ack().await {
            Ok(()) => self.shared.acked[self.partition].store(sequence, Ordering::Release),
            Err(e) => {
                // Not acknowledged: try again with the next batch (acknowledgements
                // are cumulative), or the server delivers it again after a restart.
                tracing::debug!(source = %self.source, error = %e, "NATS source: acknowledgement failed");
                self.unacked.push_front((sequence, message));
            }
        }
    }

    /// Decodes `messages` into a batch; malformed ones become dead letters.
    fn decode(&mut self, messages: Vec<jetstream::Message>) -> NatsBatch<T> {
        let mut batch = NatsBatch {
            generation: self.generation,
            records: Vec::with_capacity(messages.len()),
            sequences: Vec::with_capacity(messages.len()),
            through: self.handed,
        };
        let mut last = None;
        for message in messages {
            let (sequence, published_ms) = match message.info() {
                Ok(info) => (
                    info.stream_sequence,
                    (info.published.unix_timestamp_nanos() / 1_000_000).max(0) as u64,
                ),
                Err(e) => {
                    tracing::warn!(source = %self.source, error = %e, "NATS source: a message without JetStream metadata; skipped");
                    continue;
                }
            };
            if sequence <= self.handed {
                continue; // delivered before (the server redelivers unacknowledged ones)
            }
            self.handed = sequence;
            batch.through = sequence;
            let decoded = match self.decoder.decode(&message.payload) {
                Line::Record((time, record)) => match self.event_time {
                    EventTime::Field => Ok((time, record)),
                    EventTime::Published => {
                        check_event_time(published_ms).map(|time| (time, record))
                    }
                },
                Line::Skipped => Err("expected a record, found an empty message".to_owned()),
                Line::Bad(reason) => Err(reason),
            };
            let decoded =
                decoded.and_then(|(time, record)| self.late.admit(time).map(|()| (time, record)));
            match decoded {
                Ok(timed) => {
                    batch.records.push(timed);
                    batch.sequences.push(sequence);
                }
                Err(reason) => self.letters.record(
                    &self.source,
                    &format!("stream sequence {sequence}"),
                    &reason,
                    &message.payload,
                ),
            }
            last = Some((sequence, message));
        }
        if let Some(last) = last {
            if self.unacked.len() >= MAX_UNACKED {
                self.unacked.pop_front();
            }
            self.unacked.push_back(last);
        }
        batch
    }

    /// Hands `batch` to the app, waiting for room; `false` when the app is gone or the
    /// source was stopped first. A batch the partition no longer wants (it asked for a
    /// rewind meanwhile) is dropped.
    async fn hand_over(&mut self, batch: NatsBatch<T>) -> bool {
        let count = batch.records.len() as u64;
        let Some(records) = self.records.clone() else {
            return false;
        };
        let sending = records.send_async(batch);
        tokio::pin!(sending);
        loop {
            tokio::select! {
                sent = &mut sending => {
                    if sent.is_err() {
                        return false;
                    }
                    self.shared.records.fetch_add(count, Ordering::AcqRel);
                    self.wake_partition();
                    return true;
                }
                () = tokio::time::sleep(POLL) => {
                    if self.stopping() {
                        return false;
                    }
                    if self.rewind_requested() {
                        return true;
                    }
                    // The app is behind: acknowledge what it took meanwhile.
                    self.acknowledge_taken(true).await;
                }
            }
        }
    }

    /// Waits (while not stopped) until the app has taken everything handed on, then
    /// ends the partition's stream; with checkpoints, stays up to [`FINAL_ACK_WAIT`] to
    /// acknowledge what the run's last checkpoint covers.
    async fn wait_taken(&mut self) {
        while !self.stopping()
            && self.shared.taken[self.partition].load(Ordering::Acquire) < self.handed
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.acknowledge_taken(true).await;
        self.records = None;
        // The end of the stream is news too.
        self.wake_partition();
        if self.shared.completed.get().is_some() {
            let deadline = Instant::now() + FINAL_ACK_WAIT;
            while self.acknowledgeable() < self.handed && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.acknowledge_taken(true).await;
        }
    }

    /// Reads the partition until the source stops, the app is gone, or it was idle for
    /// `end_after_idle`.
    async fn run(mut self) {
        let mut pause = FIRST_RETRY_PAUSE;
        let mut last_message = Instant::now();
        let mut messages: Option<pull::Stream> = None;
        let mut failing = false;
        'reading: while !self.stopping() {
            if self.rewind_if_asked().await {
                messages = None;
                last_message = Instant::now();
            }
            self.acknowledge_taken(false).await;
            if messages.is_none() {
                let opened = self
                    .consumer
                    .stream()
                    .max_messages_per_batch(self.fetch_batch)
                    .expires(PULL_EXPIRES)
                    .heartbeat(PULL_HEARTBEAT)
                    .messages()
                    .await;
                match opened {
                    Ok(stream) => messages = Some(stream),
                    Err(e) => {
                        self.pull_failed(&mut failing, &e.to_string());
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MAX_RETRY_PAUSE);
                        // Idle is time the server had nothing, not time it was away.
                        last_message = Instant::now();
                        continue;
                    }
                }
            }
            let Some(stream) = messages.as_mut() else {
                continue;
            };
            let first = match tokio::time::timeout(POLL, stream.next()).await {
                Err(_) => {
                    // Idle: acknowledge what is left.
                    self.acknowledge_taken(true).await;
                    if self
                        .end_after_idle
                        .is_some_and(|idle| last_message.elapsed() >= idle)
                    {
                        break 'reading;
                    }
                    continue;
                }
                Ok(None) => {
                    messages = None;
                    continue;
                }
                Ok(Some(Err(e))) => {
                    self.pull_failed(&mut failing, &e.to_string());
                    messages = None;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                    last_message = Instant::now();
                    continue;
                }
                Ok(Some(Ok(message))) => message,
            };
            if failing {
                tracing::info!(source = %self.source, partition = self.partition, "NATS source: reading again");
                failing = false;
            }
            pause = FIRST_RETRY_PAUSE;
            last_message = Instant::now();
            let mut pulled = vec![first];
            // Whatever else has arrived already goes into the same batch.
            while pulled.len() < self.fetch_batch {
                match futures_lite::future::poll_once(stream.next()).await {
                    Some(Some(Ok(message))) => pulled.push(message),
                    Some(Some(Err(e))) => {
                        self.pull_failed(&mut failing, &e.to_string());
                        messages = None;
                        break;
                    }
                    Some(None) => {
                        messages = None;
                        break;
                    }
                    None => break,
                }
            }
            let batch = self.decode(pulled);
            if !self.hand_over(batch).await {
                break 'reading;
            }
        }
        self.wait_taken().await;
        self.shared.ended.fetch_add(1, Ordering::AcqRel);
    }

    fn pull_failed(&self, failing: &mut bool, error: &str) {
        self.shared.pull_errors.fetch_add(1, Ordering::AcqRel);
        if !*failing {
            tracing::warn!(source = %self.source, partition = self.partition, error = %error, "NATS source: pulling failed; retrying with backoff");
            *failing = true;
        }
    }
}

/// Makes the durable consumer `durable` of `stream` anew (deleting it if it exists),
/// reading `filter` (empty: the whole stream) from right after the sequence `after`.
async fn remake_consumer(
    stream: &stream::Stream,
    durable: &str,
    filter: &str,
    after: u64,
) -> Result<Consumer<pull::Config>, String> {
    let name = &stream.cached_info().config.name;
    match stream.delete_consumer(durable).await {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                jetstream::stream::ConsumerErrorKind::JetStream(e)
                    if e.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
            ) => {}
        Err(e) => {
            return Err(format!(
                "cannot reset the consumer {durable:?} of the NATS stream {name:?}: {e}"
            ))
        }
    }
    let deliver_policy = if after > 0 {
        DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        }
    } else {
        DeliverPolicy::All
    };
    stream
        .create_consumer(pull::Config {
            durable_name: Some(durable.to_owned()),
            filter_subject: filter.to_owned(),
            ack_policy: AckPolicy::All,
            deliver_policy,
            max_ack_pending: MAX_ACK_PENDING,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            format!("cannot create the consumer {durable:?} of the NATS stream {name:?}: {e}")
        })
}

/// Looks up (or creates) the stream and each partition's consumer.
async fn open_consumers(
    context: &jetstream::Context,
    options: &NatsSourceOptions,
) -> Result<(stream::Stream, Vec<Consumer<pull::Config>>), String> {
    let name = &options.stream;
    let stream = match context.get_stream(name).await {
        Ok(stream) => stream,
        Err(e) => {
            let missing = matches!(
                e.kind(),
                GetStreamErrorKind::JetStream(e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            );
            if !missing {
                return Err(format!("cannot look up the NATS stream {name:?}: {e}"));
            }
            if !options.create {
                return Err(format!(
                    "the NATS stream {name:?} does not exist (create it, or set create = true)"
                ));
            }
            let subject = options
                .subject
                .as_ref()
                .map(|subject| subject.replace("{partition}", "*"))
                .unwrap_or_default();
            context
                .create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![subject],
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create the NATS stream {name:?}: {e}"))?
        }
    };
    let mut consumers = Vec::new();
    for partition in 0..options.partitions {
        let durable = options.consumer_of(partition);
        let filter = options.subject_of(partition).unwrap_or_default();
        let resume = options
            .start_after
            .get(partition as usize)
            .copied()
            .filter(|position| position.0 > 0);
        let found = match stream.consumer_info(&durable).await {
            Ok(_) => Some(
                stream
                    .get_consumer::<pull::Config>(&durable)
                    .await
                    .map_err(|e| {
                        format!(
                            "cannot use the consumer {durable:?} of the NATS stream {name:?}: {e}"
                        )
                    })?,
            ),
            Err(e) => {
                let missing = match e.kind() {
                    ConsumerInfoErrorKind::NotFound => true,
                    ConsumerInfoErrorKind::JetStream(e) => {
                        e.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
                    }
                    _ => false,
                };
                if !missing {
                    return Err(format!(
                        "cannot look up the consumer {durable:?} of the NATS stream {name:?}: {e}"
                    ));
                }
                None
            }
        };
        let consumer = match (found, resume) {
            (Some(consumer), None) => {
                let config = &consumer.cached_info().config;
                if !matches!(config.ack_policy, AckPolicy::All | AckPolicy::None) {
                    return Err(format!(
                        "the consumer {durable:?} of the NATS stream {name:?} acknowledges each message explicitly; the source acknowledges in bulk and needs ack_policy all"
                    ));
                }
                if config.filter_subject != filter {
                    return Err(format!(
                        "the consumer {durable:?} of the NATS stream {name:?} reads {:?}, not the source's subject {filter:?}",
                        config.filter_subject
                    ));
                }
                consumer
            }
            (None, None) if !options.create => {
                return Err(format!(
                    "the NATS stream {name:?} has no consumer {durable:?} (create it, or set create = true)"
                ))
            }
            (_, resume) => {
                // Created, or made again to deliver from right after a checkpoint.
                remake_consumer(&stream, &durable, &filter, resume.map_or(0, |after| after.0))
                    .await?
            }
        };
        consumers.push(consumer);
    }
    Ok((stream, consumers))
}

impl AppBuilder {
    /// A source of the records in a NATS JetStream stream, read per `options` by
    /// `options.partitions` partitions, each through a durable pull consumer of its own
    /// (see the [module docs](crate::io::nats)). Malformed messages go to `dead_letters`
    /// with their stream sequence as position; `time_of` gives each record's event time
    /// (unless [`EventTime::Published`]), and watermarks trail the highest one seen by
    /// `out_of_orderness` ms.
    ///
    /// Connects, and looks up (or creates) the stream and its consumers, before it
    /// returns, so that a wrong URL, credential, stream or consumer is an error here.
    ///
    /// # Errors
    /// When the options contradict each other, the server cannot be reached, or the
    /// stream or a consumer does not exist (and `create` is off) or is not fit.
    pub fn source_nats<T: Decode + Data>(
        &self,
        name: &str,
        options: NatsSourceOptions,
        out_of_orderness: Time,
        time_of: impl Fn(&T) -> Time + Send + Sync + 'static,
        dead_letters: DeadLetterSink,
    ) -> io::Result<(Stream<T>, NatsSourceHandle)> {
        // The server's time replaces the record's: a record's own time is not read.
        let time_of: TimeOf<T> = match options.event_time {
            EventTime::Field => Arc::new(time_of),
            EventTime::Published => Arc::new(|_: &T| 0),
        };
        // Each message is one record: no CSV header.
        let decoder = KeyedPayloads::new(options.format, time_of, false);
        let late = LateCheck::new(LateRows::Pass, out_of_orderness);
        self.source_nats_decoded(
            name,
            options,
            out_of_orderness,
            (decoder, late),
            dead_letters,
        )
    }

    /// [`source_nats`](Self::source_nats) with its decode step: each partition's reader
    /// clones `decoding`'s decoder and late check.
    pub(crate) fn source_nats_decoded<T: Data, D: PayloadDecoder<T>>(
        &self,
        name: &str,
        options: NatsSourceOptions,
        out_of_orderness: Time,
        (decoder, late): (D, LateCheck),
        dead_letters: DeadLetterSink,
    ) -> io::Result<(Stream<T>, NatsSourceHandle)> {
        options.check().map_err(io::Error::other)?;
        let partitions = options.partitions;
        let shared = Arc::new(SourceShared {
            stopping: AtomicBool::new(false),
            ended: AtomicU64::new(0),
            partitions: u64::from(partitions),
            records: AtomicU64::new(0),
            taken: (0..partitions)
                .map(|p| AtomicU64::new(options.start_after.get(p as usize).map_or(0, |s| s.0)))
                .collect(),
            acked: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            pull_errors: AtomicU64::new(0),
            completed: OnceLock::new(),
            checkpoints: (0..partitions).map(|_| Mutex::default()).collect(),
            rewinds: (0..partitions).map(|_| Mutex::default()).collect(),
            wakers: (0..partitions).map(|_| Mutex::default()).collect(),
        });
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..partitions {
            let (tx, rx) = flume::bounded::<NatsBatch<T>>(CHANNEL_BATCHES);
            senders.push(tx);
            receivers.push(rx);
        }
        let thread_shared = shared.clone();
        let connect = options.connect.clone();
        connect
            .start_thread(
                format!("dirigo-nats-{name}"),
                format!("source {name}"),
                move |client, ready_tx| async move {
                    let context = jetstream::new(client);
                    let (stream, consumers) = match open_consumers(&context, &options).await {
                        Ok(opened) => opened,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let mut readers = Vec::new();
                    for ((partition, consumer), records) in
                        consumers.into_iter().enumerate().zip(senders)
                    {
                        let reader = Reader {
                            partition,
                            source: format!("nats:{}", options.stream),
                            consumer,
                            stream: stream.clone(),
                            durable: options.consumer_of(partition as u32),
                            filter: options.subject_of(partition as u32).unwrap_or_default(),
                            generation: 0,
                            covered: 0,
                            decoder: decoder.clone(),
                            event_time: options.event_time,
                            late,
                            letters: dead_letters.clone(),
                            fetch_batch: options.fetch_batch.max(1),
                            end_after_idle: options.end_after_idle,
                            records: Some(records),
                            shared: thread_shared.clone(),
                            handed: options.start_after.get(partition).map_or(0, |s| s.0),
                            unacked: VecDeque::new(),
                            last_ack: Instant::now(),
                        };
                        readers.push(tokio::spawn(reader.run()));
                    }
                    for reader in readers {
                        let _ = reader.await;
                    }
                },
            )
            .map_err(|e| io::Error::other(format!("NATS source {name}: {e}")))?;
        let app_shared = shared.clone();
        let stream = self
            .source(
                name,
                out_of_orderness,
                Pacing::Unpaced,
                move |partition, _| NatsRecords {
                    batches: receivers[partition as usize].clone(),
                    records: Vec::new().into_iter(),
                    sequences: Vec::new().into_iter(),
                    through: 0,
                    position: StreamPosition(
                        app_shared.taken[partition as usize].load(Ordering::Acquire),
                    ),
                    before_last: StreamPosition(
                        app_shared.taken[partition as usize].load(Ordering::Acquire),
                    ),
                    highest: 0,
                    highest_before_last: 0,
                    given: 0,
                    generation: 0,
                    partition: partition as usize,
                    shared: app_shared.clone(),
                },
            )
            .set_parallelism(partitions);
        Ok((stream, NatsSourceHandle { shared }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition of one source, fed through `batches`.
    fn partition(batches: flume::Receiver<NatsBatch<u64>>) -> NatsRecords<u64> {
        let shared = Arc::new(SourceShared {
            stopping: AtomicBool::new(false),
            ended: AtomicU64::new(0),
            partitions: 1,
            records: AtomicU64::new(0),
            taken: vec![AtomicU64::new(0)],
            acked: vec![AtomicU64::new(0)],
            pull_errors: AtomicU64::new(0),
            completed: OnceLock::new(),
            checkpoints: vec![Mutex::default()],
            rewinds: vec![Mutex::default()],
            wakers: vec![Mutex::default()],
        });
        NatsRecords {
            batches,
            records: Vec::new().into_iter(),
            sequences: Vec::new().into_iter(),
            through: 0,
            position: StreamPosition(0),
            before_last: StreamPosition(0),
            highest: 0,
            highest_before_last: 0,
            given: 0,
            generation: 0,
            partition: 0,
            shared,
        }
    }

    fn rewind_asked(records: &NatsRecords<u64>) -> Rewind {
        records.shared.rewinds[0]
            .lock()
            .unwrap()
            .expect("a rewind was asked for")
    }

    #[test]
    fn a_checkpoint_keeps_the_highest_event_time_with_the_position() {
        let (tx, rx) = flume::bounded(4);
        let mut records = partition(rx);
        tx.send(NatsBatch {
            generation: 0,
            records: vec![(5, 1), (30, 2), (20, 3)],
            sequences: vec![4, 6, 7],
            through: 8,
        })
        .unwrap();
        assert_eq!(records.next_record(), Some((5, 1)));
        assert_eq!(records.next_record(), Some((30, 2)));
        // The partition holds the second record unsent: the checkpoint stands before it.
        let held = records.checkpoint(1, 1);
        assert_eq!(held, [4u64.to_le_bytes(), 5u64.to_le_bytes()].concat());
        let sent = records.checkpoint(2, 2);
        assert_eq!(sent, [6u64.to_le_bytes(), 30u64.to_le_bytes()].concat());
        assert_eq!(records.next_record(), Some((20, 3)));
        // Taken to the end of the batch: at its last message, the highest still 30.
        assert_eq!(
            records.checkpoint(3, 3),
            [8u64.to_le_bytes(), 30u64.to_le_bytes()].concat()
        );

        // A restored partition asks its reader to go on after 6 with 30 as the highest.
        let (_tx, rx) = flume::bounded(4);
        let mut restored = partition(rx);
        restored.rewind(2, &sent).unwrap();
        let rewind = rewind_asked(&restored);
        assert_eq!((rewind.after, rewind.highest), (Some(6), 30));
        assert_eq!(restored.checkpoint(4, 2), sent);
        // A checkpoint of the position alone: the highest is taken as 0.
        let (_tx, rx) = flume::bounded(4);
        let mut older = partition(rx);
        older.rewind(2, &6u64.to_le_bytes()).unwrap();
        let rewind = rewind_asked(&older);
        assert_eq!((rewind.after, rewind.highest), (Some(6), 0));
        let (_tx, rx) = flume::bounded(4);
        assert!(partition(rx).rewind(2, &[1, 2, 3]).is_err());
    }
}
