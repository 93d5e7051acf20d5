//! `dirigo bench nats`: what dirigo adds to a path through a NATS JetStream server, side
//! by side with the broker alone, in one run against a server of its own
//! ([`LocalServer`], on a free loopback port, file storage).
//!
//! Every path starts with the same publisher and ends with the same subscriber, each on
//! a thread of its own with its own single-threaded tokio runtime and its own connection
//! to the server, so neither waits behind the other's work:
//!
//! - the publisher puts JSON records into the input stream `IN` with JetStream publishes
//!   (each waits for the server's acknowledgement; at most [`PUBLISH_IN_FLIGHT`] are
//!   unacknowledged at once), each record carrying its intended send time (ns since the
//!   Unix epoch) as its `value`;
//! - the subscriber reads a stream through a pull consumer without acknowledgements and
//!   takes latency as the time it reads a record minus that intended time (open loop: a
//!   publisher that falls behind its schedule does not hide it).
//!
//! Pacing is precise to tens of microseconds, not to the tokio timer's 1 ms ticks (which
//! would send the records due within a millisecond together, up to 1 ms late, and count
//! that lateness as the path's): the publisher sleeps on the tokio timer only for the
//! part of a wait beyond [`COARSE_MARGIN`], and the rest with a thread sleep (a
//! high-resolution timer, its slack set to 1 ns on the publisher's thread). It does not
//! spin: the server and the paths need the CPUs. Before each wait it gives its runtime
//! one turn, so the client's connection task writes what was published to the socket
//! (and reads the acknowledgements that came); records already due when it wakes go out
//! together, as the client would send them (at 60 000/s a wake-up takes longer than the
//! gap between two records). The report gives,
//! per path and load, the publisher's own lateness (the time a record was written out
//! minus its intended time, p50 and p99): what of the path's latency is the harness's;
//! and the share of a core its thread used: what it takes from the paths.
//!
//! The three paths:
//!
//! - `raw` (the broker path alone): publisher → `IN` → subscriber. One hop through the
//!   server, no relay.
//! - `relay` (two hops, no dirigo): publisher → `IN` → a bare `async-nats` client on a
//!   thread of its own → `OUT` → subscriber. The client does what dirigo's source and
//!   sink do, and nothing else: a durable pull consumer with `ack_policy = all`
//!   (acknowledging every [`RELAY_ACK_EVERY`]th message, and when idle), and a JetStream
//!   publish of each message with a `Nats-Msg-Id`, at most [`RELAY_IN_FLIGHT`]
//!   unacknowledged.
//! - `dirigo`: publisher → `IN` → an app on `shards` shards (default [`SHARDS`]), NATS
//!   source → map → NATS sink, as a configuration would build it, without checkpoints
//!   (so the sink publishes as records come; with checkpoints it would hold each epoch's
//!   output until the checkpoint is complete) → `OUT` → subscriber. One shard by
//!   default: the stream is one partition, so one shard does all the work, and on a
//!   two-core machine the other core is left to the server and the clients; with more,
//!   the source, the map and the sink may sit on different shards, one hop apart each.
//!   Its runtime polls for the runtime's default spin budget before a shard parks, unless
//!   [`NatsBenchConfig::spin_budget`] says otherwise.
//!
//! Throughput: the path is started, then the publisher puts `events` records as fast as
//! its acknowledgements allow while the subscriber reads; the rate is the records over
//! the time from the first publish until the subscriber read the last. Latency: at 25 %,
//! 50 % and 80 % of dirigo's rate of the same round (the same offered rates for every
//! path), the publisher paces records for `seconds` each, the paths in turns, with fresh
//! streams every time. With several rounds, each figure is the median over the rounds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::pull, context::PublishAckFuture, stream};
use dirigo_operators::dataflow::{AppBuilder, Msg};
use dirigo_operators::io::nats::{
    LocalServer, NatsConnect, NatsSinkOptions, NatsSourceOptions, SubjectTemplate,
};
use dirigo_operators::io::{DeadLetterSink, Format, KeyedRecord};
use dirigo_runtime::Runtime;
use futures_lite::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Shards of the dirigo path, by default.
pub const SHARDS: usize = 1;

/// The shares of dirigo's sustainable rate offered in the latency runs.
pub const SHARES: [f64; 3] = [0.25, 0.5, 0.8];

/// The publisher's most unacknowledged publishes.
pub const PUBLISH_IN_FLIGHT: usize = 1024;

/// The relay's most unacknowledged publishes (the NATS sink's default
/// `max_in_flight`).
pub const RELAY_IN_FLIGHT: usize = dirigo_operators::io::nats::sink::DEFAULT_MAX_IN_FLIGHT;

/// The relay acknowledges its consumer after this many messages (and when idle).
pub const RELAY_ACK_EVERY: u64 = 256;

/// The paced publisher waits on the tokio timer (1 ms ticks, and it may wake a tick
/// late) only until this long before a record is due, then with a thread sleep: its
/// runtime is blocked at most this long, while no record of its own is due.
pub const COARSE_MARGIN: Duration = Duration::from_millis(2);

/// What each path is, as the report states it.
pub const PATHS: [(&str, &str); 3] = [
    (
        "raw",
        "publisher -> JetStream stream IN -> subscriber (one hop through the server, no relay)",
    ),
    (
        "relay",
        "publisher -> IN -> bare async-nats client (durable pull consumer, ack all; JetStream publish with Nats-Msg-Id, acks awaited, bounded in flight) -> OUT -> subscriber",
    ),
    (
        "dirigo",
        "publisher -> IN -> dirigo on N shards (NATS source -> map -> NATS sink; no checkpoints, so the sink publishes at once) -> OUT -> subscriber",
    ),
];

/// Settings of `dirigo bench nats`.
#[derive(Clone, Debug)]
pub struct NatsBenchConfig {
    /// Records per throughput run.
    pub events: u64,
    /// Seconds of offered load per latency run.
    pub seconds: f64,
    /// Rounds (each: every path's throughput, then every load on every path in turns);
    /// figures are medians over them.
    pub rounds: usize,
    /// Shards of the dirigo path.
    pub shards: usize,
    /// The paced publisher's tick: zero sends each record at its own time; a tick sends
    /// the records due within it together at its end (each up to a tick late, which the
    /// lateness figures show), as a publisher that batches would. Fewer, larger writes
    /// cost the server and the paths less CPU per record.
    pub pace_tick: Duration,
    /// The dirigo path's spin budget (how long an idle shard polls before it parks;
    /// `None`: the runtime's default, as `spin_budget_us` in a configuration).
    pub spin_budget: Option<Duration>,
}

impl Default for NatsBenchConfig {
    fn default() -> Self {
        Self {
            events: 200_000,
            seconds: 3.0,
            rounds: 1,
            shards: SHARDS,
            pace_tick: Duration::ZERO,
            spin_budget: None,
        }
    }
}

/// Latency at one offered load.
#[derive(Clone, Debug, Serialize)]
pub struct LoadFigures {
    /// The share of dirigo's sustainable rate.
    pub share: f64,
    /// Records per second offered.
    pub offered_per_s: f64,
    /// Records read by the subscriber.
    pub received: u64,
    /// Median end-to-end latency, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// The publisher's median lateness: the time a record was written out minus its
    /// intended time, ns. Part of every latency above; a harness that paces well keeps
    /// it far below them.
    pub publisher_late_p50_ns: u64,
    /// The publisher's 99th percentile lateness, ns.
    pub publisher_late_p99_ns: u64,
    /// The CPU time of the publisher's thread (its client's connection task included)
    /// over the time it published: what the harness takes from the paths on this
    /// machine's cores (1.0 would be a whole core).
    pub publisher_cpu_share: f64,
}

/// One path's figures.
#[derive(Clone, Debug, Serialize)]
pub struct PathFigures {
    /// What the path is.
    pub path: String,
    /// Sustainable throughput, records per second.
    pub events_per_s: f64,
    /// Latency per offered load.
    pub loads: Vec<LoadFigures>,
}

/// What `dirigo bench nats` reports.
#[derive(Clone, Debug, Serialize)]
pub struct NatsBenchReport {
    /// The server's version line.
    pub server: String,
    /// Records per throughput run.
    pub events: u64,
    /// Seconds per latency run.
    pub seconds: f64,
    /// Rounds; each figure is the median over them.
    pub rounds: usize,
    /// Shards of the dirigo path.
    pub shards: usize,
    /// The paced publisher's tick, ns (0: each record at its own time).
    pub pace_tick_ns: u64,
    /// The dirigo path's spin budget, ns (absent: the runtime's default).
    pub spin_budget_ns: Option<u64>,
    /// The broker path alone: publisher → stream → subscriber.
    pub raw: PathFigures,
    /// Two hops through the server, relayed by a bare client.
    pub relay: PathFigures,
    /// Two hops through the server, relayed by dirigo.
    pub dirigo: PathFigures,
    /// Each round's figures, in order.
    pub per_round: Vec<[PathFigures; 3]>,
    /// The machine's own stalls, measured for 1 s just before the runs.
    pub machine_noise: Vec<crate::noise::CpuNoise>,
    /// The 1-minute load average when the runs started (`/proc/loadavg`; -1 where it
    /// cannot be read): other work on the machine shows here.
    pub load_average: f64,
}

impl NatsBenchReport {
    /// The figures as a table, with the ratios the targets are about.
    pub fn table(&self) -> String {
        let pacing = match self.pace_tick_ns {
            0 => "each record at its own time".to_owned(),
            tick => format!("records sent in ticks of {:.0} µs", tick as f64 / 1e3),
        };
        let mut out = format!(
            "nats: {} ({} records per throughput run, {:.1} s per load, {} round(s), medians; {pacing})\n",
            self.server, self.events, self.seconds, self.rounds
        );
        if let Some(budget) = self.spin_budget_ns {
            out += &format!("  dirigo's spin budget: {:.0} µs\n", budget as f64 / 1e3);
        }
        for (name, what) in PATHS {
            out += &format!(
                "  {name}: {}\n",
                what.replace("N shards", &format!("{} shard(s)", self.shards))
            );
        }
        out += &format!(
            "{:<8} {:>13} {:>7} {:>13} {:>10} {:>11} {:>11} {:>14} {:>14} {:>8}\n",
            "path",
            "events/s",
            "share",
            "offered/s",
            "received",
            "p50 µs",
            "p99 µs",
            "pub late p50",
            "pub late p99",
            "pub CPU"
        );
        for (name, path) in [
            ("raw", &self.raw),
            ("relay", &self.relay),
            ("dirigo", &self.dirigo),
        ] {
            out += &format!("{name:<8} {:>13.0}\n", path.events_per_s);
            for load in &path.loads {
                out += &format!(
                    "{:<8} {:>13} {:>7.2} {:>13.0} {:>10} {:>11.1} {:>11.1} {:>14.1} {:>14.1} {:>7.0}%\n",
                    "",
                    "",
                    load.share,
                    load.offered_per_s,
                    load.received,
                    load.p50_ns as f64 / 1e3,
                    load.p99_ns as f64 / 1e3,
                    load.publisher_late_p50_ns as f64 / 1e3,
                    load.publisher_late_p99_ns as f64 / 1e3,
                    load.publisher_cpu_share * 100.0
                );
            }
        }
        out += "  pub late: the publisher's own lateness (written out minus intended time), µs, part of p50/p99; pub CPU: its thread's CPU time over its run\n";
        out += &format!("  load average at start: {:.2}\n", self.load_average);
        out += &crate::noise::describe(&self.machine_noise);
        let half = |path: &PathFigures| path.loads.iter().find(|l| l.share == 0.5).cloned();
        if let Some(dirigo) = half(&self.dirigo) {
            for (name, base) in [("raw", &self.raw), ("relay", &self.relay)] {
                if let Some(base_load) = half(base) {
                    out += &format!(
                        "against {name}: at 50 % dirigo adds {:.1} µs at p50 (target <= 50); its p99 is {:.2}x (target <= 2x); throughput {:.2}x (target >= 0.8x)\n",
                        (dirigo.p50_ns as f64 - base_load.p50_ns as f64) / 1e3,
                        dirigo.p99_ns as f64 / base_load.p99_ns.max(1) as f64,
                        self.dirigo.events_per_s / base.events_per_s.max(1e-9)
                    );
                }
            }
        }
        out
    }
}

/// Which path a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Raw,
    Relay,
    Dirigo,
}

impl Path {
    const ALL: [Path; 3] = [Path::Raw, Path::Relay, Path::Dirigo];

    fn describe(self, shards: usize) -> String {
        PATHS[self as usize]
            .1
            .replace("N shards", &format!("{shards} shard(s)"))
    }

    /// The stream the subscriber reads.
    fn output(self, run: u32) -> String {
        match self {
            Path::Raw => format!("IN{run}"),
            Path::Relay | Path::Dirigo => format!("OUT{run}"),
        }
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Fresh input and output streams for run `run`: `IN{run}` on `in{run}`, `OUT{run}` on
/// `out{run}`.
async fn fresh_streams(context: &jetstream::Context, run: u32) -> Result<(), String> {
    for (name, subject) in [
        (format!("IN{run}"), format!("in{run}")),
        (format!("OUT{run}"), format!("out{run}")),
    ] {
        context
            .create_stream(stream::Config {
                name,
                subjects: vec![subject],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create a stream: {e}"))?;
    }
    Ok(())
}

/// A consumer that reads a whole stream without acknowledgements.
async fn reader(context: &jetstream::Context, stream: &str) -> Result<pull::Stream, String> {
    let stream = context
        .get_stream(stream)
        .await
        .map_err(|e| format!("cannot find {stream}: {e}"))?;
    stream
        .create_consumer(pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .map_err(|e| e.to_string())
}

/// Waits for the oldest of `acks` while more than `most` are outstanding.
async fn settle(acks: &mut VecDeque<PublishAckFuture>, most: usize) -> Result<(), String> {
    while acks.len() > most {
        if let Some(ack) = acks.pop_front() {
            ack.await
                .map_err(|e| format!("a publish was not acknowledged: {e}"))?;
        }
    }
    Ok(())
}

/// A histogram of nanoseconds, from 1 ns to an hour, 3 significant digits.
fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).map_err(|e| e.to_string())
}

/// Lets the calling thread's timers fire at their time: Linux delays a sleeping
/// thread's wake-up by up to its timer slack (50 µs by default) to batch wake-ups, which
/// the paced publisher would count as lateness. Returns whether the slack is now 1 ns.
fn tighten_timer_slack() -> bool {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and changes only the calling thread's
    // timer slack; no memory is passed.
    let set = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    // SAFETY: PR_GET_TIMERSLACK takes no argument and returns the calling thread's slack.
    set == 0 && unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) } == 1
}

/// The CPU time the calling thread has used (zero where it cannot be read).
fn thread_cpu_time() -> Duration {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec for the call's duration; the clock id
    // is a constant the kernel knows.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        time.tv_sec.max(0) as u64,
        time.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Waits until `deadline` without spinning: on the tokio timer until [`COARSE_MARGIN`]
/// before it (so the runtime goes on serving the connection meanwhile), then a thread
/// sleep for the rest (a high-resolution timer; the runtime is blocked during it).
async fn wait_until(deadline: Instant) {
    let now = Instant::now();
    if deadline <= now {
        return;
    }
    if deadline - now > COARSE_MARGIN {
        tokio::time::sleep_until((deadline - COARSE_MARGIN).into()).await;
    }
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// Gives the runtime one turn, so the client's connection task writes the `unwritten`
/// records to the socket (and reads the acknowledgements that came), then records each
/// one's lateness: now minus its intended time (as offsets from `started`).
async fn write_out(unwritten: &mut Vec<Duration>, started: Instant, lateness: &mut Histogram<u64>) {
    if unwritten.is_empty() {
        return;
    }
    tokio::task::yield_now().await;
    let now = started.elapsed();
    for due in unwritten.drain(..) {
        let _ = lateness.record((now.saturating_sub(due).as_nanos() as u64).max(1));
    }
}

/// When a record due `due` after the start goes out: at once (zero `tick`), or at the end
/// of the tick it falls in.
fn tick_end(due: Duration, tick: Duration) -> Duration {
    if tick.is_zero() {
        return due;
    }
    let ticks = due.as_nanos().div_ceil(tick.as_nanos());
    Duration::from_nanos((ticks * tick.as_nanos()).min(u64::MAX as u128) as u64)
}

/// What the publisher did.
struct Published {
    /// When its first record was due (the schedule's start).
    started: Instant,
    /// Per paced record, the time it was written out minus its intended time, ns (empty
    /// when not paced).
    lateness: Histogram<u64>,
    /// The thread's CPU time over the time from `started` until the last acknowledgement.
    cpu_share: f64,
}

/// Publishes `count` records to `subject` with JetStream publishes, paced at `rate` per
/// second (`None`: as fast as the acknowledgements allow), each carrying its intended
/// send time.
async fn publish(
    context: &jetstream::Context,
    subject: String,
    count: u64,
    (rate, tick): (Option<f64>, Duration),
) -> Result<Published, String> {
    let mut lateness = histogram()?;
    let cpu_at_start = thread_cpu_time();
    let started = Instant::now();
    let epoch_ns = unix_ns();
    let mut acks = VecDeque::new();
    // The intended times of the records published but not yet given to the connection
    // task: a record is written out when the publisher next waits, not after each
    // publish, so the records already due when it wakes (it woke late, or they are due
    // closer together than a wake-up takes) go out together, as a client would send them.
    let mut unwritten: Vec<Duration> = Vec::new();
    for i in 0..count {
        let due = rate.map(|rate| Duration::from_secs_f64(i as f64 / rate));
        if let Some(due) = due {
            let send_at = started + tick_end(due, tick);
            if send_at > Instant::now() {
                write_out(&mut unwritten, started, &mut lateness).await;
                wait_until(send_at).await;
            }
        }
        let intended = epoch_ns + due.unwrap_or_else(|| started.elapsed()).as_nanos() as u64;
        let record = format!(
            "{{\"key\":{},\"value\":{intended},\"time\":{}}}",
            i % 1000,
            i
        );
        acks.push_back(
            context
                .publish(subject.clone(), record.into())
                .await
                .map_err(|e| format!("cannot publish: {e}"))?,
        );
        unwritten.extend(due);
        settle(&mut acks, PUBLISH_IN_FLIGHT).await?;
    }
    write_out(&mut unwritten, started, &mut lateness).await;
    settle(&mut acks, 0).await?;
    let cpu_share = thread_cpu_time().saturating_sub(cpu_at_start).as_secs_f64()
        / started.elapsed().as_secs_f64().max(1e-9);
    Ok(Published {
        started,
        lateness,
        cpu_share,
    })
}

/// The publisher on a thread of its own, with its own runtime and connection: connects,
/// then publishes as [`publish`] does.
fn start_publisher(
    url: String,
    subject: String,
    count: u64,
    pacing: (Option<f64>, Duration),
) -> std::thread::JoinHandle<Result<Published, String>> {
    std::thread::spawn(move || {
        tighten_timer_slack();
        tokio_runtime()?.block_on(async move {
            let client = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
            let context = jetstream::new(client);
            publish(&context, subject, count, pacing).await
        })
    })
}

/// What the subscriber read.
struct Received {
    /// Read time minus intended time per record, ns.
    latency: Histogram<u64>,
    /// When the last record came.
    last: Instant,
    /// Records read.
    received: u64,
}

/// Reads `count` records from `messages` (or stops `idle` after the last), recording
/// latencies.
async fn subscribe(
    mut messages: pull::Stream,
    count: u64,
    idle: Duration,
) -> Result<Received, String> {
    let mut latency = histogram()?;
    let mut received = 0;
    let mut last = Instant::now();
    while received < count {
        let next = match tokio::time::timeout(idle, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(format!("reading the output failed: {e}")),
            Ok(None) | Err(_) => break,
        };
        let now = unix_ns();
        last = Instant::now();
        received += 1;
        if let Ok(record) = serde_json::from_slice::<KeyedRecord>(&next.payload) {
            let _ = latency.record(now.saturating_sub(record.value).max(1));
        }
    }
    Ok(Received {
        latency,
        last,
        received,
    })
}

/// The subscriber on a thread of its own, with its own runtime and connection: creates
/// its consumer on `stream`, says so on `ready`, then reads as [`subscribe`] does.
fn start_subscriber(
    url: String,
    stream: String,
    count: u64,
    ready: flume::Sender<()>,
) -> std::thread::JoinHandle<Result<Received, String>> {
    std::thread::spawn(move || {
        tokio_runtime()?.block_on(async move {
            let client = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
            let context = jetstream::new(client);
            let messages = reader(&context, &stream).await?;
            let _ = ready.send(());
            subscribe(messages, count, Duration::from_secs(10)).await
        })
    })
}

/// The bare relay: reads `IN{run}` through a durable pull consumer (ack policy all) and
/// publishes each message to `out{run}` with a JetStream publish and a `Nats-Msg-Id`,
/// until `stop`. Says on `ready` once its consumer exists.
fn start_bare_relay(
    url: String,
    run: u32,
    stop: Arc<AtomicBool>,
    ready: flume::Sender<()>,
) -> std::thread::JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        tokio_runtime()?.block_on(async move {
            let client = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
            let context = jetstream::new(client);
            let stream = context
                .get_stream(format!("IN{run}"))
                .await
                .map_err(|e| e.to_string())?;
            let mut messages = stream
                .create_consumer(pull::Config {
                    durable_name: Some("relay".into()),
                    ack_policy: jetstream::consumer::AckPolicy::All,
                    max_ack_pending: 1 << 20,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?
                .stream()
                .max_messages_per_batch(dirigo_operators::io::nats::DEFAULT_FETCH_BATCH)
                .expires(Duration::from_secs(5))
                .heartbeat(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            let _ = ready.send(());
            let subject = format!("out{run}");
            let mut acks = VecDeque::new();
            let mut unacked: Option<jetstream::Message> = None;
            let mut relayed = 0u64;
            while !stop.load(Ordering::Acquire) {
                match tokio::time::timeout(Duration::from_millis(50), messages.next()).await {
                    Ok(Some(Ok(message))) => {
                        let sequence = message.info().map_err(|e| e.to_string())?.stream_sequence;
                        let publication = jetstream::message::PublishMessage::build()
                            .message_id(format!("relay/{sequence}"))
                            .payload(message.payload.clone());
                        acks.push_back(
                            context
                                .send_publish(subject.clone(), publication)
                                .await
                                .map_err(|e| e.to_string())?,
                        );
                        settle(&mut acks, RELAY_IN_FLIGHT).await?;
                        relayed += 1;
                        if relayed.is_multiple_of(RELAY_ACK_EVERY) {
                            message.ack().await.map_err(|e| e.to_string())?;
                            unacked = None;
                        } else {
                            unacked = Some(message);
                        }
                    }
                    Ok(Some(Err(e))) => return Err(e.to_string()),
                    Ok(None) => break,
                    Err(_) => {
                        if let Some(message) = unacked.take() {
                            message.ack().await.map_err(|e| e.to_string())?;
                        }
                    }
                }
            }
            settle(&mut acks, 0).await
        })
    })
}

/// A running path.
enum Relay {
    None,
    Bare {
        stop: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<Result<(), String>>,
    },
    Dirigo {
        runtime: dirigo_runtime::Runtime<Msg>,
        app: dirigo_operators::dataflow::App,
        source: dirigo_operators::io::nats::NatsSourceHandle,
    },
}

fn start_relay(
    path: Path,
    url: &str,
    run: u32,
    (shards, spin_budget): (usize, Option<Duration>),
) -> Result<Relay, String> {
    match path {
        Path::Raw => Ok(Relay::None),
        Path::Relay => {
            let stop = Arc::new(AtomicBool::new(false));
            let (ready_tx, ready_rx) = flume::bounded(1);
            let thread = start_bare_relay(url.to_owned(), run, stop.clone(), ready_tx);
            if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
                stop.store(true, Ordering::Release);
                return Err(match thread.join() {
                    Ok(Err(e)) => format!("the relay did not start: {e}"),
                    _ => "the relay did not start".to_owned(),
                });
            }
            Ok(Relay::Bare { stop, thread })
        }
        Path::Dirigo => {
            let builder = AppBuilder::new(0, "relay");
            let mut options =
                NatsSourceOptions::new(NatsConnect::new(url), format!("IN{run}"), "dirigo");
            options.format = Format::Json;
            options.create = true;
            options.subject = Some(format!("in{run}"));
            let (records, source) = builder
                .source_nats(
                    "source",
                    options,
                    0,
                    |r: &KeyedRecord| r.time,
                    DeadLetterSink::in_memory(),
                )
                .map_err(|e| e.to_string())?;
            let subject = SubjectTemplate::parse(&format!("out{run}"))?;
            records
                .map("map", |r: KeyedRecord| r)
                .sink_nats(
                    "sink",
                    NatsSinkOptions::new(NatsConnect::new(url), format!("OUT{run}"), subject),
                )
                .map_err(|e| e.to_string())?;
            let app = builder.build();
            let mut runtime = Runtime::<Msg>::builder().shards(shards);
            if let Some(budget) = spin_budget {
                runtime = runtime.spin_budget(budget);
            }
            let runtime = app
                .install(runtime)
                .build()
                .map_err(|e| format!("the runtime did not start: {e}"))?;
            app.start(&runtime.ingress());
            Ok(Relay::Dirigo {
                runtime,
                app,
                source,
            })
        }
    }
}

fn stop_relay(relay: Relay) -> Result<(), String> {
    match relay {
        Relay::None => Ok(()),
        Relay::Bare { stop, thread } => {
            stop.store(true, Ordering::Release);
            thread
                .join()
                .map_err(|_| "the bare relay panicked".to_owned())?
        }
        Relay::Dirigo {
            runtime,
            app,
            source,
        } => {
            source.stop();
            app.stop();
            app.wait(Duration::from_secs(10));
            runtime.shutdown();
            Ok(())
        }
    }
}

/// What one run measured.
struct RunFigures {
    /// End-to-end latency per record, ns.
    latency: Histogram<u64>,
    /// The publisher's lateness per record, ns (empty when not paced).
    lateness: Histogram<u64>,
    /// The publisher thread's CPU time over its run's time.
    publisher_cpu_share: f64,
    /// Records read by the subscriber.
    received: u64,
    /// From the first publish until the last record was read.
    took: Duration,
}

/// Joins a harness thread, naming it in the error.
fn join<T>(thread: std::thread::JoinHandle<Result<T, String>>, name: &str) -> Result<T, String> {
    thread.join().map_err(|_| format!("the {name} panicked"))?
}

/// One run of `count` records through `path`, paced at `rate` (`None`: as fast as they
/// go) in ticks of `tick`, with fresh streams.
fn one_run(
    path: Path,
    url: &str,
    (run, shards): (u32, (usize, Option<Duration>)),
    count: u64,
    pacing: (Option<f64>, Duration),
) -> Result<RunFigures, String> {
    tokio_runtime()?.block_on(async {
        let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
        fresh_streams(&jetstream::new(client), run).await
    })?;
    let relay = start_relay(path, url, run, shards)?;
    // The subscriber's consumer exists before the first record is published.
    let (ready_tx, ready_rx) = flume::bounded(1);
    let subscriber = start_subscriber(url.to_owned(), path.output(run), count, ready_tx);
    if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
        let stopped = stop_relay(relay);
        join(subscriber, "subscriber")?;
        stopped?;
        return Err(format!("{path:?}: the subscriber did not start"));
    }
    let publisher = start_publisher(url.to_owned(), format!("in{run}"), count, pacing);
    let sent = join(publisher, "publisher");
    let received = join(subscriber, "subscriber");
    let stopped = stop_relay(relay);
    let sent = sent?;
    let received = received?;
    stopped?;
    if received.received < count {
        return Err(format!(
            "{path:?}: {} of {count} records came through",
            received.received
        ));
    }
    Ok(RunFigures {
        latency: received.latency,
        lateness: sent.lateness,
        publisher_cpu_share: sent.cpu_share,
        received: received.received,
        took: received.last.duration_since(sent.started),
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Each figure of `rounds` (one path's), the median over the rounds.
fn medians(rounds: &[PathFigures]) -> PathFigures {
    let first = &rounds[0];
    PathFigures {
        path: first.path.clone(),
        events_per_s: median(rounds.iter().map(|r| r.events_per_s).collect()),
        loads: (0..first.loads.len())
            .map(|i| {
                let of = |f: &dyn Fn(&LoadFigures) -> f64| {
                    median(rounds.iter().map(|r| f(&r.loads[i])).collect())
                };
                LoadFigures {
                    share: first.loads[i].share,
                    offered_per_s: of(&|l| l.offered_per_s),
                    received: of(&|l| l.received as f64) as u64,
                    p50_ns: of(&|l| l.p50_ns as f64) as u64,
                    p99_ns: of(&|l| l.p99_ns as f64) as u64,
                    publisher_late_p50_ns: of(&|l| l.publisher_late_p50_ns as f64) as u64,
                    publisher_late_p99_ns: of(&|l| l.publisher_late_p99_ns as f64) as u64,
                    publisher_cpu_share: of(&|l| l.publisher_cpu_share),
                }
            })
            .collect(),
    }
}

/// Runs the scenario.
///
/// # Errors
/// When no `nats-server` starts, or a path loses records.
pub fn run(config: &NatsBenchConfig) -> Result<NatsBenchReport, String> {
    let server = LocalServer::start().map_err(|e| format!("cannot start nats-server: {e}"))?;
    let version =
        std::process::Command::new(dirigo_operators::io::nats::find_program().unwrap_or_default())
            .arg("--version")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .unwrap_or_default();
    let url = server.url();
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1.0);
    let available = dirigo_runtime::placement::available_cpus();
    let noise_cpus: Vec<Option<usize>> = match available.as_slice() {
        [first, second, ..] => vec![Some(*first), Some(*second)],
        _ => vec![None; 2],
    };
    let machine_noise = crate::noise::measure(&noise_cpus, Duration::from_secs(1));
    let mut run = 0u32;
    let mut per_round = Vec::new();
    for _ in 0..config.rounds.max(1) {
        let mut figures = Path::ALL.map(|path| PathFigures {
            path: path.describe(config.shards),
            events_per_s: 0.0,
            loads: Vec::new(),
        });
        for path in Path::ALL {
            run += 1;
            let figures_of_run = one_run(
                path,
                &url,
                (run, (config.shards, config.spin_budget)),
                config.events,
                (None, config.pace_tick),
            )?;
            figures[path as usize].events_per_s =
                figures_of_run.received as f64 / figures_of_run.took.as_secs_f64().max(1e-9);
        }
        let dirigo_rate = figures[Path::Dirigo as usize].events_per_s;
        for share in SHARES {
            let rate = share * dirigo_rate;
            let count = (rate * config.seconds).max(1.0) as u64;
            for path in Path::ALL {
                run += 1;
                let measured = one_run(
                    path,
                    &url,
                    (run, (config.shards, config.spin_budget)),
                    count,
                    (Some(rate), config.pace_tick),
                )?;
                figures[path as usize].loads.push(LoadFigures {
                    share,
                    offered_per_s: rate,
                    received: measured.received,
                    p50_ns: measured.latency.value_at_quantile(0.5),
                    p99_ns: measured.latency.value_at_quantile(0.99),
                    publisher_late_p50_ns: measured.lateness.value_at_quantile(0.5),
                    publisher_late_p99_ns: measured.lateness.value_at_quantile(0.99),
                    publisher_cpu_share: measured.publisher_cpu_share,
                });
            }
        }
        per_round.push(figures);
    }
    let of = |path: Path| {
        medians(
            &per_round
                .iter()
                .map(|round| round[path as usize].clone())
                .collect::<Vec<_>>(),
        )
    };
    Ok(NatsBenchReport {
        server: version,
        events: config.events,
        seconds: config.seconds,
        rounds: per_round.len(),
        shards: config.shards,
        pace_tick_ns: config.pace_tick.as_nanos() as u64,
        spin_budget_ns: config.spin_budget.map(|budget| budget.as_nanos() as u64),
        raw: of(Path::Raw),
        relay: of(Path::Relay),
        dirigo: of(Path::Dirigo),
        per_round,
        machine_noise,
        load_average,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publisher_thread_gets_a_timer_slack_of_one_nanosecond() {
        let slack = std::thread::spawn(|| {
            let tightened = tighten_timer_slack();
            // SAFETY: PR_GET_TIMERSLACK takes no argument and returns this thread's slack.
            (tightened, unsafe {
                libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0)
            })
        })
        .join()
        .unwrap();
        assert_eq!(slack, (true, 1));
    }

    #[test]
    fn a_tick_sends_the_records_due_within_it_at_its_end() {
        let us = Duration::from_micros;
        assert_eq!(tick_end(us(130), Duration::ZERO), us(130));
        assert_eq!(tick_end(us(0), us(250)), us(0));
        assert_eq!(tick_end(us(1), us(250)), us(250));
        assert_eq!(tick_end(us(250), us(250)), us(250));
        assert_eq!(tick_end(us(251), us(250)), us(500));
    }

    #[test]
    fn a_paced_wait_never_ends_before_its_deadline() {
        tokio_runtime().unwrap().block_on(async {
            for wait in [0, 30, 700, 1_500, 2_300, 4_100] {
                let deadline = Instant::now() + Duration::from_micros(wait);
                wait_until(deadline).await;
                assert!(
                    Instant::now() >= deadline,
                    "a wait of {wait} µs ended early"
                );
            }
            // A deadline already past returns at once, without sleeping.
            wait_until(Instant::now() - Duration::from_millis(5)).await;
        });
    }

    #[test]
    fn every_path_carries_every_record_and_reports_the_publishers_lateness() {
        let report = run(&NatsBenchConfig {
            events: 2_000,
            seconds: 0.3,
            rounds: 1,
            shards: 1,
            pace_tick: Duration::ZERO,
            spin_budget: None,
        })
        .expect("nats-server must start and every path must carry every record");
        for path in [&report.raw, &report.relay, &report.dirigo] {
            assert!(path.events_per_s > 0.0, "{}", path.path);
            let shares: Vec<f64> = path.loads.iter().map(|l| l.share).collect();
            assert_eq!(shares, SHARES);
            for load in &path.loads {
                assert_eq!(
                    load.received,
                    (load.offered_per_s * 0.3).max(1.0) as u64,
                    "{}",
                    path.path
                );
                assert!(load.p50_ns > 0 && load.p50_ns <= load.p99_ns);
                assert!(load.publisher_late_p50_ns > 0);
                assert!(load.publisher_late_p50_ns <= load.publisher_late_p99_ns);
                assert!(load.publisher_cpu_share > 0.0 && load.publisher_cpu_share < 1.5);
            }
        }
        let json = serde_json::to_value(&report).unwrap();
        for path in ["raw", "relay", "dirigo"] {
            let load = &json[path]["loads"][1];
            for key in [
                "share",
                "offered_per_s",
                "p50_ns",
                "p99_ns",
                "publisher_late_p50_ns",
                "publisher_late_p99_ns",
                "publisher_cpu_share",
            ] {
                assert!(load.get(key).is_some(), "{path}: no {key}");
            }
            assert!(json[path]["events_per_s"].is_number());
        }
        assert!(report.table().contains("pub late p50"));
    }
}
