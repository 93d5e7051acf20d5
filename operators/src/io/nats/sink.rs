//! The NATS sink: each partition turns records into messages with deterministic ids,
//! and one publisher thread per sink publishes them to JetStream, bounded in flight,
//! retrying with backoff (see the [module documentation](super)).

use std::any::Any;
use std::collections::VecDeque;
use std::future::IntoFuture;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage, stream};
use bytes::Bytes;
use std::ops::RangeInclusive;
use std::path::Path;

use dirigo_runtime::{ActorId, AppId, Context, OperatorId, PartitionId, SnapshotError, StateKind};

use super::connect::NatsConnect;
use crate::checkpoint::link::CommitTarget;
use crate::checkpoint::{store, CheckpointLink, Saved, SavedInputs};
use crate::dataflow::{
    add_operator, AppCounters, Batch, CheckpointId, Data, Logic, Msg, Stream, Time, Wiring,
};
use crate::partition::Partitioning;

/// The default for [`NatsSinkOptions::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
/// The default for [`NatsSinkOptions::publish_timeout`]: 5 s.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// The default for [`NatsSinkOptions::retry_for`]: 60 s.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(60);
/// Batches of messages that wait between the sink partitions and the publisher thread.
pub const CHANNEL_BATCHES: usize = 64;

/// The pause before publishing a message again the second time (the first retry goes at
/// once); it doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The checkpoint epoch a sink partition's outputs belong to: part of every message id,
/// so that outputs sent again after a recovery (the same epoch, the same sequence within
/// it) carry the ids they had before, and the server drops them as duplicates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SinkEpoch(pub u64);

impl SinkEpoch {
    /// An epoch of its own for a run without checkpoints: the milliseconds since the Unix
    /// epoch, so that two runs never share message ids.
    pub fn of_this_run() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(now.as_millis() as u64)
    }
}

/// The ids of one sink partition's messages: `APP/OPERATOR/PARTITION/EPOCH/SEQUENCE`,
/// the sequence counting from 0 within each epoch. Sent as `Nats-Msg-Id`.
///
/// ```
/// use dirigo_operators::io::nats::{MsgIds, SinkEpoch};
///
/// let mut ids = MsgIds::new("orders", "sink", 3, SinkEpoch(7));
/// assert_eq!(ids.next_id(), "orders/sink/3/7/0");
/// assert_eq!(ids.next_id(), "orders/sink/3/7/1");
/// ids.begin_epoch(SinkEpoch(8));
/// assert_eq!(ids.next_id(), "orders/sink/3/8/0");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsgIds {
    prefix: String,
    epoch: SinkEpoch,
    sequence: u64,
}

impl MsgIds {
    /// Ids for partition `partition` of operator `operator` of app `app`, starting in
    /// `epoch`.
    pub fn new(app: &str, operator: &str, partition: u32, epoch: SinkEpoch) -> Self {
        Self {
            prefix: format!("{app}/{operator}/{partition}"),
            epoch,
            sequence: 0,
        }
    }

    /// The next message's id.
    pub fn next_id(&mut self) -> String {
        let id = format!("{}/{}/{}", self.prefix, self.epoch.0, self.sequence);
        self.sequence += 1;
        id
    }

    /// Starts `epoch`: sequences count from 0 again.
    pub fn begin_epoch(&mut self, epoch: SinkEpoch) {
        self.epoch = epoch;
        self.sequence = 0;
    }

    /// The current epoch.
    pub fn epoch(&self) -> SinkEpoch {
        self.epoch
    }
}

/// A subject with `{field}` placeholders, filled from each record's JSON fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectTemplate {
    parts: Vec<SubjectPart>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SubjectPart {
    Text(String),
    Field(String),
}

impl SubjectTemplate {
    /// Parses `template`: text, with `{name}` for a record's field `name`.
    ///
    /// # Errors
    /// An unclosed `{`, an empty `{}`, or a subject with white space.
    pub fn parse(template: &str) -> Result<Self, String> {
        if template.is_empty() || template.contains(char::is_whitespace) {
            return Err(format!(
                "expected a subject without white space, like `out.{{key}}`, found {template:?}"
            ));
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(SubjectPart::Text(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!(
                    "expected `}}` after `{{` in the subject {template:?}"
                ));
            };
            let field = &rest[open + 1..open + close];
            if field.is_empty() {
                return Err(format!(
                    "expected a field name inside `{{}}` in the subject {template:?}"
                ));
            }
            parts.push(SubjectPart::Field(field.to_owned()));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(SubjectPart::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Whether the subject is the same for every record.
    pub fn is_fixed(&self) -> bool {
        self.parts
            .iter()
            .all(|part| matches!(part, SubjectPart::Text(_)))
    }

    /// The subjects it can make, as a stream's subject filter: `*` for each field.
    pub fn wildcard(&self) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                SubjectPart::Text(text) => text.as_str(),
                SubjectPart::Field(_) => "*",
            })
            .collect()
    }

    /// The subject for `record` (its JSON form).
    fn fill(&self, record: &serde_json::Value) -> Result<String, String> {
        let mut subject = String::new();
        for part in &self.parts {
            match part {
                SubjectPart::Text(text) => subject.push_str(text),
                SubjectPart::Field(field) => {
                    let token = match record.get(field) {
                        Some(serde_json::Value::String(text)) => text.clone(),
                        Some(serde_json::Value::Number(number)) => number.to_string(),
                        Some(serde_json::Value::Bool(flag)) => flag.to_string(),
                        _ => {
                            return Err(format!(
                                "the record has no field {field:?} for the subject"
                            ))
                        }
                    };
                    if token.is_empty()
                        || token
                            .contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
                    {
                        return Err(format!(
                            "the field {field:?} ({token:?}) cannot be a subject token"
                        ));
                    }
                    subject.push_str(&token);
                }
            }
        }
        Ok(subject)
    }
}

/// A NATS sink's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsSinkOptions {
    /// The server and how to log in.
    pub connect: NatsConnect,
    /// The stream that captures the subject: checked at start (or created).
    pub stream: String,
    /// Where each record goes (a fixed subject, or one with `{field}`s).
    pub subject: SubjectTemplate,
    /// Create the stream (file storage, capturing the subject) when it does not exist,
    /// instead of failing.
    pub create: bool,
    /// The most messages published and not yet acknowledged by the server (default
    /// [`DEFAULT_MAX_IN_FLIGHT`]); more wait.
    pub max_in_flight: usize,
    /// How long a publish waits for the server's acknowledgement before it is sent again
    /// (default [`DEFAULT_PUBLISH_TIMEOUT`]).
    pub publish_timeout: Duration,
    /// How long a message is tried before it counts as failed output (default
    /// [`DEFAULT_RETRY_FOR`]).
    pub retry_for: Duration,
    /// The epoch of the first outputs (default: [`SinkEpoch::of_this_run`]).
    pub epoch: SinkEpoch,
}

impl NatsSinkOptions {
    /// Publishing to `subject` (captured by `stream`) on the server `connect`.
    pub fn new(connect: NatsConnect, stream: impl Into<String>, subject: SubjectTemplate) -> Self {
        Self {
            connect,
            stream: stream.into(),
            subject,
            create: false,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            retry_for: DEFAULT_RETRY_FOR,
            epoch: SinkEpoch::of_this_run(),
        }
    }
}

/// One message on its way out.
struct Outgoing {
    subject: String,
    id: String,
    payload: Bytes,
    /// Output a checkpoint committed: delivered again after a recovery, so a duplicate
    /// the server drops is not counted as output again.
    committed: bool,
}

/// What the sink partitions (and the checkpoints' commits) send the publisher thread.
enum ToPublisher {
    Messages(Vec<Outgoing>),
    /// Answer once every message sent before is settled (acknowledged or failed).
    Flush(flume::Sender<()>),
    /// Publish these committed messages and answer once all are settled: with how many
    /// failed.
    Commit(Vec<Outgoing>, flume::Sender<u64>),
}

/// The most bytes of a subject in a staged message.
const MAX_STAGED_SUBJECT: usize = 64 * 1024;
/// The most bytes of a payload in a staged message (NATS's own limit is 1 MiB by
/// default, 64 MiB at most).
const MAX_STAGED_PAYLOAD: usize = 64 * 1024 * 1024;

/// Appends `subject` and `payload` to `staged` as one staged message: the subject's
/// length (4 bytes, little-endian), the subject, the payload's length, the payload.
fn stage_message(staged: &mut Vec<u8>, subject: &str, payload: &[u8]) {
    staged.extend_from_slice(&(subject.len() as u32).to_le_bytes());
    staged.extend_from_slice(subject.as_bytes());
    staged.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    staged.extend_from_slice(payload);
}

/// The staged messages in `bytes` (as [`stage_message`] wrote them), in order.
fn staged_messages(bytes: &[u8]) -> Result<Vec<(String, Bytes)>, String> {
    fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(len)?;
        *bytes = rest;
        Some(head)
    }
    fn length(bytes: &mut &[u8], most: usize) -> Option<usize> {
        let len = u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?) as usize;
        (len <= most).then_some(len)
    }
    let mut rest = bytes;
    let mut messages = Vec::new();
    while !rest.is_empty() {
        let at = bytes.len() - rest.len();
        let damaged = || format!("a damaged staged message at byte {at}");
        let len = length(&mut rest, MAX_STAGED_SUBJECT).ok_or_else(damaged)?;
        let subject = take(&mut rest, len).ok_or_else(damaged)?;
        let subject = std::str::from_utf8(subject)
            .map_err(|_| damaged())?
            .to_owned();
        let len = length(&mut rest, MAX_STAGED_PAYLOAD).ok_or_else(damaged)?;
        let payload = take(&mut rest, len).ok_or_else(damaged)?;
        messages.push((subject, Bytes::copy_from_slice(payload)));
    }
    Ok(messages)
}

/// What a sink's partitions share, and how the checkpoints deliver its committed output.
struct SinkShared {
    to_publisher: flume::Sender<ToPublisher>,
    app: String,
    operator: String,
    epoch: SinkEpoch,
    /// How long a partition waits for room on the way to the publisher, and for a flush.
    wait: Duration,
}

impl CommitTarget for SinkShared {
    /// Publishes each partition's staged messages of each epoch, in order, with the ids
    /// `APP/OPERATOR/PARTITION/EPOCH/N` (`N` counting the epoch's messages from 0): the
    /// same messages get the same ids however often they are delivered, so the server
    /// stores each once (within its duplicate window).
    fn commit(
        &self,
        dir: &Path,
        app: AppId,
        operator: OperatorId,
        partitions: PartitionId,
        epochs: RangeInclusive<CheckpointId>,
    ) -> Result<(), String> {
        for epoch in epochs {
            for partition in 0..partitions {
                let path = store::staged_path(dir, ActorId::new(app, operator, partition), epoch);
                let bytes = match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                };
                let staged =
                    staged_messages(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
                let mut ids = MsgIds::new(&self.app, &self.operator, partition, SinkEpoch(epoch));
                let messages = staged
                    .into_iter()
                    .map(|(subject, payload)| Outgoing {
                        subject,
                        id: ids.next_id(),
                        payload,
                        committed: true,
                    })
                    .collect();
                let (done_tx, done_rx) = flume::bounded(1);
                self.to_publisher
                    .send_timeout(ToPublisher::Commit(messages, done_tx), self.wait)
                    .map_err(|_| "the NATS sink's publisher took nothing".to_owned())?;
                match done_rx.recv_timeout(self.wait) {
                    Ok(0) => {}
                    Ok(failed) => {
                        return Err(format!(
                            "{failed} messages of {} were not acknowledged",
                            path.display()
                        ))
                    }
                    Err(_) => {
                        return Err(format!(
                            "the messages of {} were not acknowledged within {:?}",
                            path.display(),
                            self.wait
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

/// The publisher thread's state.
struct Publisher {
    context: jetstream::Context,
    /// Each message published and not settled, with its acknowledgement (`None`: the
    /// client could not send it) and when it was sent.
    in_flight: VecDeque<(Outgoing, Option<PublishAckFuture>, Instant)>,
    max_in_flight: usize,
    retry_for: Duration,
    publish_timeout: Duration,
    /// The app's counters, once the first sink partition is made.
    counters: Option<Arc<AppCounters>>,
    counters_from: flume::Receiver<Arc<AppCounters>>,
    /// Whether the last publish failed (so that a recovery is logged once).
    failing: bool,
    /// Committed messages given up on since the last commit began.
    commit_failures: u64,
}

impl Publisher {
    /// Counts `written` outputs and `failed` failed ones (once the app's counters came).
    fn count(&mut self, written: u64, failed: u64, why: impl FnOnce() -> String) {
        if self.counters.is_none() {
            self.counters = self.counters_from.try_recv().ok();
        }
        if let Some(counters) = &self.counters {
            counters.outputs(written, failed, why);
        }
    }

    /// Publishes `message` without waiting for its acknowledgement.
    async fn start(&mut self, message: Outgoing) {
        while self.in_flight.len() >= self.max_in_flight {
            self.settle_oldest().await;
        }
        let publishing = self
            .context
            .send_publish(message.subject.clone(), self.publication(&message))
            .await;
        // A publish the client could not even send is settled like a missing
        // acknowledgement: sent again until it is acknowledged or times out.
        self.in_flight
            .push_back((message, publishing.ok(), Instant::now()));
    }

    fn publication(&self, message: &Outgoing) -> PublishMessage {
        PublishMessage::build()
            .message_id(&message.id)
            .payload(message.payload.clone())
    }

    /// Waits for the oldest message's acknowledgement, publishing it again until it is
    /// acknowledged or [`retry_for`](NatsSinkOptions::retry_for) has passed: at once the
    /// first time, then with backoff.
    ///
    /// The wait counts from when the message was sent, so that messages lost together
    /// (the server went away with them) time out together, not one `publish_timeout`
    /// after another; and the first retry goes at once, so that after a reconnect each
    /// lost message costs a round trip, not a pause.
    async fn settle_oldest(&mut self) {
        let Some((message, mut ack, sent_at)) = self.in_flight.pop_front() else {
            return;
        };
        let started = Instant::now();
        let mut deadline = sent_at + self.publish_timeout;
        let mut pause = Duration::ZERO;
        loop {
            let waiting = deadline.saturating_duration_since(Instant::now());
            let error = match ack.take() {
                Some(ack) => match tokio::time::timeout(waiting, ack.into_future()).await {
                    Ok(Ok(ack)) => {
                        if self.failing {
                            tracing::info!("NATS sink: publishing again");
                            self.failing = false;
                        }
                        if !(message.committed && ack.duplicate) {
                            self.count(1, 0, String::new);
                        }
                        return;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no acknowledgement within {:?}", self.publish_timeout),
                },
                None => "the client could not send it".to_owned(),
            };
            if started.elapsed() >= self.retry_for {
                tracing::warn!(id = %message.id, error = %error, "NATS sink: gave up on a message");
                if message.committed {
                    self.commit_failures += 1;
                }
                let retry_for = self.retry_for;
                self.count(0, 1, || {
                    format!("NATS sink: no acknowledgement within {retry_for:?}: {error}")
                });
                return;
            }
            if !self.failing {
                tracing::warn!(error = %error, "NATS sink: a publish was not acknowledged; retrying with backoff");
                self.failing = true;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).clamp(FIRST_RETRY_PAUSE, MAX_RETRY_PAUSE);
            deadline = Instant::now() + self.publish_timeout;
            // The same id: if the first try did reach the stream, the server drops this one.
            ack = self
                .context
                .send_publish(message.subject.clone(), self.publication(&message))
                .await
                .ok();
        }
    }

    async fn run(mut self, requests: flume::Receiver<ToPublisher>) {
        while let Ok(request) = requests.recv_async().await {
            match request {
                ToPublisher::Messages(messages) => {
                    for message in messages {
                        self.start(message).await;
                    }
                }
                ToPublisher::Flush(done) => {
                    while !self.in_flight.is_empty() {
                        self.settle_oldest().await;
                    }
                    let _ = done.send(());
                }
                ToPublisher::Commit(messages, done) => {
                    self.commit_failures = 0;
                    for message in messages {
                        self.start(message).await;
                    }
                    while !self.in_flight.is_empty() {
                        self.settle_oldest().await;
                    }
                    let _ = done.send(self.commit_failures);
                }
            }
        }
        while !self.in_flight.is_empty() {
            self.settle_oldest().await;
        }
    }
}

/// Looks up (or creates) the stream that captures the sink's subject.
async fn open_stream(
    context: &jetstream::Context,
    options: &NatsSinkOptions,
) -> Result<(), String> {
    let name = &options.stream;
    match context.get_stream(name).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let missing = matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(e)
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
            context
                .create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![options.subject.wildcard()],
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| format!("cannot create the NATS stream {name:?}: {e}"))
        }
    }
}

/// One NATS sink partition.
struct NatsSinkLogic<T> {
    shared: Arc<SinkShared>,
    subject: SubjectTemplate,
    ids: MsgIds,
    counters: Arc<AppCounters>,
    /// With checkpoints: the messages are staged per epoch, and published once a
    /// checkpoint covers them (by [`SinkShared`]'s commit).
    staging: Option<Staging>,
    _records: PhantomData<fn(T)>,
}

/// Where a staging NATS sink partition stages its messages, and which epoch it writes
/// (the one after barrier `epoch - 1`).
struct Staging {
    link: Arc<CheckpointLink>,
    actor: ActorId,
    epoch: CheckpointId,
}

impl<T: Data + serde::Serialize> NatsSinkLogic<T> {
    fn subject_and_payload(&self, record: &T) -> Result<(String, Vec<u8>), String> {
        let subject = if self.subject.is_fixed() {
            self.subject.fill(&serde_json::Value::Null)?
        } else {
            let value = serde_json::to_value(record).map_err(|e| e.to_string())?;
            self.subject.fill(&value)?
        };
        let payload = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        Ok((subject, payload))
    }

    fn message(&mut self, record: &T) -> Result<Outgoing, String> {
        let (subject, payload) = self.subject_and_payload(record)?;
        Ok(Outgoing {
            subject,
            id: self.ids.next_id(),
            payload: Bytes::from(payload),
            committed: false,
        })
    }

    fn send(&self, request: ToPublisher, records: u64) {
        if let Err(e) = self
            .shared
            .to_publisher
            .send_timeout(request, self.shared.wait)
        {
            let why = match e {
                flume::SendTimeoutError::Timeout(_) => format!(
                    "NATS sink: the publisher took nothing for {:?}",
                    self.shared.wait
                ),
                flume::SendTimeoutError::Disconnected(_) => {
                    "NATS sink: the publisher thread is gone".to_owned()
                }
            };
            tracing::warn!("{why}");
            self.counters.outputs(0, records, || why);
        }
    }
}

impl<T: Data + serde::Serialize> Logic for NatsSinkLogic<T> {
    fn on_data(&mut self, _: &mut Context<'_, Msg>, _input: usize, data: Box<dyn Any + Send>) {
        let batch = data
            .downcast::<Batch<T>>()
            .expect("an edge carries its upstream operator's record type");
        if let Some(staging) = &self.staging {
            let mut staged = Vec::new();
            for (_, record) in batch.iter() {
                match self.subject_and_payload(record) {
                    Ok((subject, payload)) => stage_message(&mut staged, &subject, &payload),
                    Err(why) => self.counters.outputs(0, 1, || format!("NATS sink: {why}")),
                }
            }
            staging
                .link
                .stage_output(staging.actor, staging.epoch, staged);
            return;
        }
        let mut messages = Vec::with_capacity(batch.len());
        for (_, record) in batch.iter() {
            match self.message(record) {
                Ok(message) => messages.push(message),
                Err(why) => self.counters.outputs(0, 1, || format!("NATS sink: {why}")),
            }
        }
        if !messages.is_empty() {
            let count = messages.len() as u64;
            self.send(ToPublisher::Messages(messages), count);
        }
    }

    fn on_frontier(&mut self, _: &mut Context<'_, Msg>, _: Time) {}

    fn forward_frontier(&mut self, _: &mut Context<'_, Msg>, _: Time) {}

    /// Waits (at most the sink's wait) until everything this sink sent is acknowledged,
    /// so that the app is done only once its outputs are in the stream.
    fn on_end(&mut self, _: &mut Context<'_, Msg>) {
        if self.staging.is_some() {
            // The run's last checkpoint commits (publishes) what is staged.
            self.counters.sink_finished();
            return;
        }
        let (done_tx, done_rx) = flume::bounded(1);
        self.send(ToPublisher::Flush(done_tx), 0);
        if done_rx.recv_timeout(self.shared.wait).is_err() {
            tracing::warn!(
                "NATS sink: outputs still unacknowledged after {:?} at the end",
                self.shared.wait
            );
        }
        self.counters.sink_finished();
    }

    fn forward_end(&mut self, _: &mut Context<'_, Msg>) {}

    /// Keeps no state: what it staged is the checkpoint's to publish; what comes next
    /// belongs to the next epoch.
    fn save(&mut self, id: CheckpointId) -> Result<Saved, SnapshotError> {
        if let Some(staging) = &mut self.staging {
            staging.epoch = id + 1;
        }
        Ok(Saved::Nothing)
    }

    fn restore(&mut self, _: &SavedInputs, _: Option<&[u8]>) -> Result<(), SnapshotError> {
        Ok(())
    }

    fn forward_barrier(&mut self, _: &mut Context<'_, Msg>, _: CheckpointId) {}
}

impl<T: Data + serde::Serialize> Stream<T> {
    /// Publishes every record as one JSON message to a NATS JetStream stream, per
    /// `options` (see the [module docs](crate::io::nats)): each with a deterministic
    /// `Nats-Msg-Id` ([`MsgIds`]), at most `max_in_flight` unacknowledged, retried with
    /// backoff.
    ///
    /// Connects and looks up (or creates) the stream before it returns, so that a wrong
    /// URL, credential or stream is an error here.
    ///
    /// # Errors
    /// When the server cannot be reached or the stream does not exist (and `create` is
    /// off).
    pub fn sink_nats(&self, name: &str, options: NatsSinkOptions) -> io::Result<()> {
        let (requests_tx, requests_rx) = flume::bounded::<ToPublisher>(CHANNEL_BATCHES);
        let (counters_tx, counters_rx) = flume::bounded::<Arc<AppCounters>>(1);
        let thread_options = options.clone();
        options
            .connect
            .start_thread(
                format!("dirigo-nats-{name}"),
                format!("sink {name}"),
                move |client, ready_tx| async move {
                    let options = thread_options;
                    let context = jetstream::ContextBuilder::new()
                        .timeout(options.publish_timeout)
                        .max_ack_inflight(options.max_in_flight.max(1) * 2)
                        .backpressure_on_inflight(true)
                        .build(client);
                    if let Err(e) = open_stream(&context, &options).await {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                    let _ = ready_tx.send(Ok(()));
                    Publisher {
                        context,
                        in_flight: VecDeque::new(),
                        max_in_flight: options.max_in_flight.max(1),
                        retry_for: options.retry_for,
                        publish_timeout: options.publish_timeout,
                        // The app's counters come with the first partition that is made
                        // (a recovery may publish before).
                        counters: None,
                        counters_from: counters_rx,
                        failing: false,
                        commit_failures: 0,
                    }
                    .run(requests_rx)
                    .await;
                },
            )
            .map_err(|e| io::Error::other(format!("NATS sink {name}: {e}")))?;
        let shared = Arc::new(SinkShared {
            to_publisher: requests_tx,
            app: self.app_name(),
            operator: name.to_owned(),
            epoch: options.epoch,
            wait: options.retry_for + options.publish_timeout,
        });
        let subject = options.subject.clone();
        let commit: Arc<dyn CommitTarget> = shared.clone();
        let node = add_operator(
            self.graph(),
            name,
            StateKind::Exclusive,
            Arc::new(move |wiring: &Wiring, partition| {
                let _ = counters_tx.try_send(wiring.counters.clone());
                let staging = wiring.checkpoint.as_ref().map(|link| Staging {
                    link: link.clone(),
                    actor: ActorId::new(wiring.app, wiring.operator, partition),
                    epoch: link.resumed_from() + 1,
                });
                Box::new(NatsSinkLogic::<T> {
                    shared: shared.clone(),
                    subject: subject.clone(),
                    ids: MsgIds::new(&shared.app, &shared.operator, partition, shared.epoch),
                    counters: wiring.counters.clone(),
                    staging,
                    _records: PhantomData,
                }) as Box<dyn Logic>
            }),
        );
        self.connect(node, Partitioning::Forward, None);
        self.mark_sink(node);
        self.mark_commit_target(node, commit);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_messages_read_back_in_order_and_damage_is_caught() {
        let mut staged = Vec::new();
        stage_message(&mut staged, "out.1", b"{\"key\":1}");
        stage_message(&mut staged, "out.2", b"");
        let read = staged_messages(&staged).unwrap();
        assert_eq!(
            read,
            vec![
                ("out.1".to_owned(), Bytes::from_static(b"{\"key\":1}")),
                ("out.2".to_owned(), Bytes::new()),
            ]
        );
        for cut in 1..staged.len() {
            if cut == 4 + 5 + 4 + 9 {
                continue; // a whole first message
            }
            assert!(
                staged_messages(&staged[..cut]).is_err(),
                "cut at {cut} passed"
            );
        }
        let mut huge = Vec::new();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(staged_messages(&huge).unwrap_err().contains("byte 0"));
    }

    #[test]
    fn subjects_fill_from_fields() {
        let template = SubjectTemplate::parse("out.{key}.x").unwrap();
        assert!(!template.is_fixed());
        assert_eq!(template.wildcard(), "out.*.x");
        let record = serde_json::json!({"key": 42, "name": "a b"});
        assert_eq!(template.fill(&record).unwrap(), "out.42.x");
        let bad = SubjectTemplate::parse("out.{name}").unwrap();
        assert!(bad
            .fill(&record)
            .unwrap_err()
            .contains("cannot be a subject token"));
        let missing = SubjectTemplate::parse("out.{nope}").unwrap();
        assert!(missing.fill(&record).unwrap_err().contains("no field"));
        assert!(SubjectTemplate::parse("out.{key").is_err());
        assert!(SubjectTemplate::parse("out.{}").is_err());
        assert!(SubjectTemplate::parse("a b").is_err());
        let fixed = SubjectTemplate::parse("out").unwrap();
        assert!(fixed.is_fixed());
        assert_eq!(fixed.fill(&serde_json::Value::Null).unwrap(), "out");
    }
}
