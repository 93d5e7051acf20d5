//! `dirigo bench nats`: what dirigo adds to a path through a NATS JetStream server, side
//! by side with the broker path alone, in one run against a server of its own
//! ([`LocalServer`], on a free loopback port).
//!
//! Both paths carry the same records through the same two streams' hops: a publisher
//! puts JSON records into an input stream, something relays each to an output stream,
//! and a subscriber reads the output stream. The relay is either
//!
//! - `raw`: a bare `async-nats` client that pulls from the input stream and publishes
//!   every message to the output stream, on a thread of its own (the broker path with
//!   nothing in between); or
//! - `dirigo`: an app on [`SHARDS`] shards, NATS source → map → NATS sink, as a
//!   configuration would build it.
//!
//! Each record carries its intended send time (ns since the Unix epoch) as its `value`;
//! the subscriber takes latency as the time it reads the output minus that (open loop:
//! a publisher that falls behind its schedule does not hide it).
//!
//! Throughput: `events` records are put into the input stream first, then the relay
//! starts, and the rate is the records over the time from its start until the subscriber
//! has read the last one. Latency: at 25 %, 50 % and 80 % of dirigo's sustainable rate
//! (the same offered rates for both paths), the publisher paces records for `seconds`
//! each, raw and dirigo in turns, with fresh streams every time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::pull, stream};
use dirigo_operators::dataflow::{AppBuilder, Msg};
use dirigo_operators::io::nats::{
    LocalServer, NatsConnect, NatsSinkOptions, NatsSourceOptions, SubjectTemplate,
};
use dirigo_operators::io::{DeadLetterSink, Format, KeyedRecord};
use dirigo_runtime::Runtime;
use futures_lite::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Shards of the dirigo path.
pub const SHARDS: usize = 2;

/// The shares of dirigo's sustainable rate offered in the latency runs.
pub const SHARES: [f64; 3] = [0.25, 0.5, 0.8];

/// Settings of `dirigo bench nats`.
#[derive(Clone, Debug)]
pub struct NatsBenchConfig {
    /// Records per throughput run.
    pub events: u64,
    /// Seconds of offered load per latency run.
    pub seconds: f64,
}

impl Default for NatsBenchConfig {
    fn default() -> Self {
        Self {
            events: 200_000,
            seconds: 3.0,
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
    /// The broker path alone.
    pub raw: PathFigures,
    /// Through dirigo.
    pub dirigo: PathFigures,
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
            "nats: {} ({} records per throughput run, {:.1} s per load)\n{:<8} {:>13} {:>7} {:>13} {:>10} {:>11} {:>11}\n",
            self.server, self.events, self.seconds, "path", "events/s", "share", "offered/s", "received", "p50 µs", "p99 µs"
        );
        for (name, path) in [("raw", &self.raw), ("dirigo", &self.dirigo)] {
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
        if let (Some(raw), Some(dirigo)) = (
            self.raw.loads.iter().find(|l| l.share == 0.5),
            self.dirigo.loads.iter().find(|l| l.share == 0.5),
        ) {
            out += &format!(
                "at 50 %: dirigo adds {:.1} µs at p50; its p99 is {:.2}x the raw path's. Throughput: {:.2}x the raw path's\n",
                (dirigo.p50_ns as f64 - raw.p50_ns as f64) / 1e3,
                dirigo.p99_ns as f64 / raw.p99_ns.max(1) as f64,
                self.dirigo.events_per_s / self.raw.events_per_s.max(1e-9)
            );
        }
        out
    }
}

/// Which relay a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Raw,
    Dirigo,
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

/// Publishes `count` records to `subject`, paced at `rate` per second (`None`: as fast
/// as the client takes them), each carrying its intended send time.
async fn publish(
    client: &async_nats::Client,
    subject: String,
    count: u64,
    rate: Option<f64>,
) -> Result<(), String> {
    let started = Instant::now();
    let epoch_ns = unix_ns();
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
        client
            .publish(subject.clone(), record.into())
            .await
            .map_err(|e| format!("cannot publish: {e}"))?;
    }
    client
        .flush()
        .await
        .map_err(|e| format!("cannot publish: {e}"))
}

/// Reads `count` records from `OUT{run}` (or stops `idle` after the last), recording
/// latencies; returns the histogram and when the last came.
async fn subscribe(
    context: &jetstream::Context,
    run: u32,
    count: u64,
    idle: Duration,
) -> Result<(Histogram<u64>, Instant, u64), String> {
    let mut messages = reader(context, &format!("OUT{run}")).await?;
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

/// The raw relay: pulls from `IN{run}` and publishes each message to `out{run}` until
/// `stop`.
fn start_raw_relay(
    url: String,
    run: u32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        tokio_runtime()?.block_on(async move {
            let client = async_nats::connect(&url).await.map_err(|e| e.to_string())?;
            let context = jetstream::new(client.clone());
            let mut messages = reader(&context, &format!("IN{run}")).await?;
            let subject = format!("out{run}");
            while !stop.load(Ordering::Acquire) {
                match tokio::time::timeout(Duration::from_millis(50), messages.next()).await {
                    Ok(Some(Ok(message))) => client
                        .publish(subject.clone(), message.payload.clone())
                        .await
                        .map_err(|e| e.to_string())?,
                    Ok(Some(Err(e))) => return Err(e.to_string()),
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
            client.flush().await.map_err(|e| e.to_string())
        })
    })
}

/// A running relay of either kind.
enum Relay {
    Raw {
        stop: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<Result<(), String>>,
    },
    Dirigo {
        runtime: dirigo_runtime::Runtime<Msg>,
        app: dirigo_operators::dataflow::App,
        source: dirigo_operators::io::nats::NatsSourceHandle,
    },
}

fn start_relay(path: Path, url: &str, run: u32) -> Result<Relay, String> {
    match path {
        Path::Raw => {
            let stop = Arc::new(AtomicBool::new(false));
            let thread = start_raw_relay(url.to_owned(), run, stop.clone());
            Ok(Relay::Raw { stop, thread })
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
                .install(Runtime::<Msg>::builder().shards(SHARDS))
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
        Relay::Raw { stop, thread } => {
            stop.store(true, Ordering::Release);
            thread
                .join()
                .map_err(|_| "the raw relay panicked".to_owned())?
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

/// One throughput run: returns records per second.
fn throughput(path: Path, url: &str, run: u32, events: u64) -> Result<f64, String> {
    let rt = tokio_runtime()?;
    rt.block_on(async {
        let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
        let context = jetstream::new(client.clone());
        fresh_streams(&context, run).await?;
        publish(&client, format!("in{run}"), events, None).await?;
        // Every record is in the input stream before the relay starts.
        let mut info = context
            .get_stream(format!("IN{run}"))
            .await
            .map_err(|e| e.to_string())?;
        while info.info().await.map_err(|e| e.to_string())?.state.messages < events {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        let relay = start_relay(path, url, run)?;
        let (_, last, received) = subscribe(&context, run, events, Duration::from_secs(10)).await?;
        stop_relay(relay)?;
        if received < events {
            return Err(format!(
                "{path:?}: {received} of {events} records came through"
            ));
        }
        Ok(events as f64 / last.duration_since(started).as_secs_f64().max(1e-9))
    })
}

/// One latency run at `rate` records per second for `seconds`.
fn latency(
    path: Path,
    url: &str,
    run: u32,
    rate: f64,
    seconds: f64,
    share: f64,
) -> Result<LoadFigures, String> {
    let rt = tokio_runtime()?;
    let count = (rate * seconds).max(1.0) as u64;
    rt.block_on(async {
        let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
        let context = jetstream::new(client.clone());
        fresh_streams(&context, run).await?;
        let relay = start_relay(path, url, run)?;
        let publisher_client = client.clone();
        let subject = format!("in{run}");
        let (sent, received) = futures_lite::future::zip(
            publish(&publisher_client, subject, count, Some(rate)),
            subscribe(&context, run, count, Duration::from_secs(5)),
        )
        .await;
        sent?;
        let (histogram, ..) = received?;
        stop_relay(relay)?;
        Ok(LoadFigures {
            share,
            offered_per_s: rate,
            received: histogram.len(),
            p50_ns: histogram.value_at_quantile(0.5),
            p99_ns: histogram.value_at_quantile(0.99),
        })
    })
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
        _ => vec![None; SHARDS],
    };
    let machine_noise = crate::noise::measure(&noise_cpus, Duration::from_secs(1));
    let mut run = 0u32;
    let mut next_run = || {
        run += 1;
        run
    };
    let raw_rate = throughput(Path::Raw, &url, next_run(), config.events)?;
    let dirigo_rate = throughput(Path::Dirigo, &url, next_run(), config.events)?;
    let mut raw = PathFigures {
        events_per_s: raw_rate,
        loads: Vec::new(),
    };
    let mut dirigo = PathFigures {
        events_per_s: dirigo_rate,
        loads: Vec::new(),
    };
    for share in SHARES {
        let rate = share * dirigo_rate;
        raw.loads.push(latency(
            Path::Raw,
            &url,
            next_run(),
            rate,
            config.seconds,
            share,
        )?);
        dirigo.loads.push(latency(
            Path::Dirigo,
            &url,
            next_run(),
            rate,
            config.seconds,
            share,
        )?);
    }
    Ok(NatsBenchReport {
        server: version,
        events: config.events,
        seconds: config.seconds,
        raw,
        dirigo,
        machine_noise,
        load_average,
    })
}
