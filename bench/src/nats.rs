//! `dirigo bench nats`: what dirigo adds to a path through a NATS JetStream server, side
//! by side with the broker alone, in one run against a server of its own
//! ([`LocalServer`], on a free loopback port, file storage).
//!
//! Every path starts with the same publisher and ends with the same subscriber:
//!
//! - the publisher puts JSON records into the input stream `IN` with JetStream publishes
//!   (each waits for the server's acknowledgement; at most [`PUBLISH_IN_FLIGHT`] are
//!   unacknowledged at once), each record carrying its intended send time (ns since the
//!   Unix epoch) as its `value`;
//! - the subscriber reads a stream through a pull consumer without acknowledgements and
//!   takes latency as the time it reads a record minus that intended time (open loop: a
//!   publisher that falls behind its schedule does not hide it).
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
}

impl Default for NatsBenchConfig {
    fn default() -> Self {
        Self {
            events: 200_000,
            seconds: 3.0,
            rounds: 1,
            shards: SHARDS,
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
        let mut out = format!(
            "nats: {} ({} records per throughput run, {:.1} s per load, {} round(s), medians)\n",
            self.server, self.events, self.seconds, self.rounds
        );
        for (name, what) in PATHS {
            out += &format!(
                "  {name}: {}\n",
                what.replace("N shards", &format!("{} shard(s)", self.shards))
            );
        }
        out += &format!(
            "{:<8} {:>13} {:>7} {:>13} {:>10} {:>11} {:>11}\n",
            "path", "events/s", "share", "offered/s", "received", "p50 µs", "p99 µs"
        );
        for (name, path) in [
            ("raw", &self.raw),
            ("relay", &self.relay),
            ("dirigo", &self.dirigo),
        ] {
            out += &format!("{name:<8} {:>13.0}\n", path.events_per_s);
            for load in &path.loads {
                out += &format!(
                    "{:<8} {:>13} {:>7.2} {:>13.0} {:>10} {:>11.1} {:>11.1}\n",
                    "",
                    "",
                    load.share,
                    load.offered_per_s,
                    load.received,
                    load.p50_ns as f64 / 1e3,
                    load.p99_ns as f64 / 1e3
                );
            }
        }
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

/// Publishes `count` records to `subject` with JetStream publishes, paced at `rate` per
/// second (`None`: as fast as the acknowledgements allow), each carrying its intended
/// send time; returns when the first was published.
async fn publish(
    context: &jetstream::Context,
    subject: String,
    count: u64,
    rate: Option<f64>,
) -> Result<Instant, String> {
    let started = Instant::now();
    let epoch_ns = unix_ns();
    let mut acks = VecDeque::new();
    for i in 0..count {
        let due = rate.map(|rate| Duration::from_secs_f64(i as f64 / rate));
        if let Some(due) = due {
            let now = started.elapsed();
            if due > now {
                tokio::time::sleep(due - now).await;
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
        settle(&mut acks, PUBLISH_IN_FLIGHT).await?;
    }
    settle(&mut acks, 0).await?;
    Ok(started)
}

/// Reads `count` records from `messages` (or stops `idle` after the last), recording
/// latencies; returns the histogram, when the last came and how many came.
async fn subscribe(
    mut messages: pull::Stream,
    count: u64,
    idle: Duration,
) -> Result<(Histogram<u64>, Instant, u64), String> {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).map_err(|e| e.to_string())?;
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
            let _ = histogram.record(now.saturating_sub(record.value).max(1));
        }
    }
    Ok((histogram, last, received))
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

fn start_relay(path: Path, url: &str, run: u32, shards: usize) -> Result<Relay, String> {
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
            let runtime = app
                .install(Runtime::<Msg>::builder().shards(shards))
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

/// One run of `count` records through `path`, paced at `rate` (`None`: as fast as they
/// go): the latencies, the records read, and the time from the first publish until the
/// last record was read.
fn one_run(
    path: Path,
    url: &str,
    (run, shards): (u32, usize),
    count: u64,
    rate: Option<f64>,
) -> Result<(Histogram<u64>, u64, Duration), String> {
    tokio_runtime()?.block_on(async {
        let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
        let context = jetstream::new(client);
        fresh_streams(&context, run).await?;
        let relay = start_relay(path, url, run, shards)?;
        // The subscriber's consumer exists before the first record is published.
        let messages = reader(&context, &path.output(run)).await?;
        let (sent, received) = futures_lite::future::zip(
            publish(&context, format!("in{run}"), count, rate),
            subscribe(messages, count, Duration::from_secs(10)),
        )
        .await;
        let stopped = stop_relay(relay);
        let started = sent?;
        let (histogram, last, received) = received?;
        stopped?;
        if received < count {
            return Err(format!(
                "{path:?}: {received} of {count} records came through"
            ));
        }
        Ok((histogram, received, last.duration_since(started)))
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
            let (_, received, took) =
                one_run(path, &url, (run, config.shards), config.events, None)?;
            figures[path as usize].events_per_s = received as f64 / took.as_secs_f64().max(1e-9);
        }
        let dirigo_rate = figures[Path::Dirigo as usize].events_per_s;
        for share in SHARES {
            let rate = share * dirigo_rate;
            let count = (rate * config.seconds).max(1.0) as u64;
            for path in Path::ALL {
                run += 1;
                let (histogram, received, _) =
                    one_run(path, &url, (run, config.shards), count, Some(rate))?;
                figures[path as usize].loads.push(LoadFigures {
                    share,
                    offered_per_s: rate,
                    received,
                    p50_ns: histogram.value_at_quantile(0.5),
                    p99_ns: histogram.value_at_quantile(0.99),
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
        raw: of(Path::Raw),
        relay: of(Path::Relay),
        dirigo: of(Path::Dirigo),
        per_round,
        machine_noise,
        load_average,
    })
}
