//! NATS JetStream sources and sinks: records read from a stream through durable pull
//! consumers, and records published to a stream with de-duplication ids.
//!
//! # Where the network I/O runs
//!
//! Each NATS source, and each NATS sink, runs its client (`async-nats`, the official
//! Rust client) on a thread of its own with a single-threaded tokio runtime, outside the
//! shards, and hands records over through bounded channels, as the TCP source does. The
//! client is built on tokio's I/O and timers and cannot run on glommio's reactor; a
//! client of our own on glommio would have to reimplement the protocol, JetStream's API,
//! reconnection and TLS. The thread costs one hop per batch, not per record: `dirigo
//! bench nats` measures that path against the broker alone.
//!
//! # The source
//!
//! [`AppBuilder::source_nats`] connects, looks up the stream and one durable pull
//! consumer per source partition (or creates them with `create`; a missing one is an
//! error at start, naming it). Partition `p` reads the subject filter with `{partition}`
//! replaced by `p` (`orders.{partition}`: partition 2 reads `orders.2`) through the
//! consumer `CONSUMER-p`; a source of one partition reads its filter (or the whole
//! stream) through `CONSUMER`. Each message's payload is one record, CSV or JSON, decoded
//! by the same parsers as files (or one typed row, by the typed file source's decoder:
//! [`crate::typed::connector`]). A malformed one goes to the dead letters with
//! `stream sequence N` as its position, and the pipeline goes on. Event times come from
//! the record (`time_of`) or from the time the server stored the message
//! ([`EventTime::Published`]); watermarks trail the highest seen, as for other sources.
//!
//! Flow control: a partition's reader pulls at most [`NatsSourceOptions::fetch_batch`]
//! messages at a time and hands each pull's records to the app as one batch over a
//! channel of [`CHANNEL_BATCHES`] batches. When the app falls behind, the channel fills,
//! the reader waits, and pulls no more: what is buffered per partition is bounded by
//! `(CHANNEL_BATCHES + 2) × fetch_batch` messages.
//!
//! Positions and acknowledgements: each partition knows the stream sequence through
//! which the app has taken every message ([`StreamPosition`],
//! [`NatsSourceHandle::position`]). Without checkpoints the reader acknowledges up to
//! there (the consumers use `ack_policy = all`: one acknowledgement covers every message
//! before it), so a message is acknowledged only once it is inside the app (at least
//! once). It acknowledges once 256 messages have gathered, 20 ms after its last
//! acknowledgement, or when idle, not after every pull: at low rates a pull brings a
//! message or two, and an acknowledgement each would double what the server reads. A redelivered message (at or before the last sequence handed on) is skipped.
//! After a restart the consumer delivers from its acknowledgement floor on, or, given
//! [`NatsSourceOptions::start_after`], from right after that position.
//!
//! With checkpoints ([`crate::checkpoint`]) the source is exactly once. Each checkpoint
//! records every partition's position: the sequence through which the records the
//! source partition sent on stand (one it took and holds unsent is not covered), with
//! the highest event time among them, where a restored late check resumes
//! ([`crate::io::late`]). The
//! reader acknowledges only through the position of the newest checkpoint known
//! complete: the coordinator announces each complete checkpoint
//! ([`CompletedCheckpoints`](crate::checkpoint::CompletedCheckpoints), one atomic the
//! reader loads before each pull and every [`POLL`] while idle), so the server is never
//! told to forget a message a restore could need. A restored partition asks its reader to
//! make the consumer anew, delivering from right after the checkpoint's position; batches
//! already on their way are dropped by their generation. A run from scratch makes each
//! consumer anew from its acknowledgement floor, so what a killed run had been delivered
//! and never acknowledged comes at once, not after the server's ack wait.
//!
//! Waking: a partition that found no batch parks (with a fallback timer 20 ms ahead,
//! [`WOKEN_PENDING_PAUSE_NS`](crate::source::WOKEN_PENDING_PAUSE_NS), far enough that its
//! shard parks too instead of spinning for it); the reader wakes it through the runtime's
//! intake as soon as it hands it a batch ([`SourceWaker`](crate::source::SourceWaker)), so
//! a record waits for the shard's next turn, not for a timer.
//!
//! The stream ends when the source is stopped ([`NatsSourceHandle::stop`]) or, with
//! [`NatsSourceOptions::end_after_idle`], once no message came for that long and the app
//! has taken every one.
//!
//! # The sink
//!
//! [`Stream::sink_nats`] connects and checks that the stream exists (or creates it,
//! capturing the subject). Each sink partition turns every record into one JSON message
//! to a fixed subject or one built from the record's fields ([`SubjectTemplate`]), with
//! a `Nats-Msg-Id` of `APP/OPERATOR/PARTITION/EPOCH/SEQUENCE` ([`MsgIds`],
//! [`SinkEpoch`]), and hands each batch to the sink's publisher thread over a channel of
//! [`sink::CHANNEL_BATCHES`] batches (a full channel holds the sink's shard, which is the
//! backpressure). The publisher keeps at most [`NatsSinkOptions::max_in_flight`]
//! publishes unacknowledged; a publish that is not acknowledged within
//! `publish_timeout` is sent again with the same id, with backoff, for up to `retry_for`,
//! then counted as failed output. When its input ends, a partition waits until all its
//! messages are acknowledged.
//!
//! Exactly once: the server drops a message whose id it has seen within the stream's
//! duplicate window (`duplicate_window`, 2 minutes by default). Without checkpoints the
//! epoch is the run's start time ([`SinkEpoch::of_this_run`]), so a retry within a run
//! is never written twice, and two runs never drop each other's outputs. With
//! checkpoints, a sink partition does not publish as records come: it stages each
//! epoch's messages (the output between barriers `n - 1` and `n`) through the
//! checkpoints, flushed to disk before the manifest; once checkpoint `n` is complete the
//! coordinator has the publisher thread publish the epochs it covers, with the ids
//! `APP/OPERATOR/PARTITION/n/N` (`N` counting the epoch's messages), and waits for their
//! acknowledgements before it starts the next checkpoint. A recovery from checkpoint `n`
//! publishes `n`'s epochs again with the same ids, and the server drops what it already
//! stored, provided the restart comes within the duplicate window of the crash. Epoch
//! ids alone would not do: a replayed epoch need not hold the same outputs as before the
//! crash (barriers fall elsewhere in the replayed input), so only committed, staged
//! epochs are ever published.
//!
//! # Faults
//!
//! The client reconnects on its own, with backoff from [`FIRST_RECONNECT_DELAY`] up to
//! [`MAX_RECONNECT_DELAY`], for ever; a failed pull is made again with backoff, and a
//! publish without acknowledgement is sent again. So a server that restarts mid-run
//! loses nothing. Credentials (a token, a user and password, or a `.creds` file) and TLS
//! settings are in [`NatsConnect`]; they are never logged, and URLs are logged without
//! their user part.
//!
//! [`LocalServer`] starts a `nats-server` of its own on a free loopback port (for tests
//! and `dirigo bench nats`).

mod connect;
mod server;
pub mod sink;
mod source;

pub use connect::{
    redacted_url, Credentials, NatsConnect, Secret, TlsOptions, CONNECT_TIMEOUT,
    FIRST_RECONNECT_DELAY, MAX_RECONNECT_DELAY, REQUEST_TIMEOUT,
};
pub use server::{find_program, LocalServer, START_TIMEOUT, STOP_TIMEOUT};
pub use sink::{MsgIds, NatsSinkOptions, SinkEpoch, SubjectTemplate};
pub use source::{
    EventTime, NatsSourceHandle, NatsSourceOptions, StreamPosition, CHANNEL_BATCHES,
    DEFAULT_FETCH_BATCH, FINAL_ACK_WAIT, POLL,
};

#[allow(unused_imports)] // what the documentation above links to
use crate::dataflow::{AppBuilder, Stream};
