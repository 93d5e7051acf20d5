//! `dirigo bench mesh`: what one hop between shards costs, next to what it could cost.
//!
//! All measurements run in one process, one after another, on the same two CPUs:
//!
//! | key | what |
//! | --- | --- |
//! | `floor_rtt_ns` | atomic ping-pong through two cache lines between two pinned threads |
//! | `ring_rtt_ns` | the same threads through two raw shard-to-shard rings (no runtime) |
//! | `dirigo_rtt_ns` | actor on shard 0 → actor on shard 1 → back; both shards spinning |
//! | `dirigo_lessor_rtt_ns` | the same, both actors lessors without lessees (each has run a critical message) |
//! | `dirigo_parked_rtt_ns` | the same, with the receiving shard parked before each message |
//! | `futex_rtt_ns` | raw thread park/unpark ping-pong, each side parked before it is woken |
//! | `glommio_channel_rtt_ns` | glommio `shared_channel` ping-pong, executors spinning |
//! | `flume_rtt_ns` | flume ping-pong between two pinned threads, spinning |
//! | `dirigo_oneway_msgs_per_s` | actor → actor across shards, with credit-based flow control |
//! | `ring_oneway_msgs_per_s` | the raw shard-to-shard ring alone, same message type |
//!
//! Round trips are timed one by one with the TSC clock into HdrHistogram; the first 10 %
//! of each series is warm-up and not recorded. The dirigo round trips and their baselines
//! (floor, futex) run in five alternating rounds, so that drift in the machine's speed
//! hits both sides of each ratio alike; so do the two one-way throughputs, each reported
//! as the median of its five rounds. In the parked series both sides wait until
//! the peer has announced that it sleeps, plus a settle time, before each message, so
//! every round trip pays two real wake-ups — in dirigo exactly as in the futex baseline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use dirigo_runtime::{
    clock, mesh, Actor, ActorId, Context, Envelope, MessageKind, Runtime, RuntimeBuilder,
    SchedContext,
};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::latency::{new_histogram, record, LatencySummary};
use crate::pin::pin_current;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct MeshBenchConfig {
    /// Round trips per spinning series.
    pub round_trips: usize,
    /// Round trips per parked series (each costs tens of microseconds).
    pub parked_round_trips: usize,
    /// Messages in each one-way throughput run.
    pub oneway_messages: u64,
    /// How long a parked peer is left to settle into the kernel before each message.
    pub settle: Duration,
}

impl Default for MeshBenchConfig {
    fn default() -> Self {
        Self {
            round_trips: 200_000,
            parked_round_trips: 5_000,
            oneway_messages: 4_000_000,
            settle: Duration::from_micros(20),
        }
    }
}

/// Ratios of the run against the targets of the mesh.
#[derive(Clone, Debug, Serialize)]
pub struct MeshRatios {
    /// `dirigo_rtt` p50 / `floor_rtt` p50 (target ≤ 1.6).
    pub dirigo_rtt_over_floor: f64,
    /// `dirigo_parked_rtt` p50 / `futex_rtt` p50 (target ≤ 1.2).
    pub dirigo_parked_over_futex: f64,
    /// `dirigo_oneway` / `ring_oneway` (target ≥ 0.5).
    pub dirigo_oneway_over_ring: f64,
    /// `glommio_channel_rtt` p50 / `dirigo_rtt` p50 (target ≥ 10).
    pub glommio_channel_over_dirigo: f64,
    /// `dirigo_lessor_rtt` p50 / `dirigo_rtt` p50: what a hop costs an actor that has
    /// been a lessor (no target; 1.0 means the fast lane serves it as a plain actor).
    pub lessor_over_plain: f64,
    /// Whether every target above is met.
    pub targets_met: bool,
}

/// The JSON keys of the round-trip latencies, each an object `{p50, p99, p999, mean}`.
pub const LATENCY_KEYS: [&str; 8] = [
    "floor_rtt_ns",
    "ring_rtt_ns",
    "dirigo_rtt_ns",
    "dirigo_lessor_rtt_ns",
    "dirigo_parked_rtt_ns",
    "futex_rtt_ns",
    "glommio_channel_rtt_ns",
    "flume_rtt_ns",
];

/// The JSON keys of the one-way throughputs, in messages per second.
pub const THROUGHPUT_KEYS: [&str; 2] = ["dirigo_oneway_msgs_per_s", "ring_oneway_msgs_per_s"];

/// The result of `dirigo bench mesh`; JSON keys as named.
#[derive(Clone, Debug, Serialize)]
pub struct MeshReport {
    /// The two CPUs used, when pinned.
    pub cpus: Vec<Option<usize>>,
    /// Whether the sender pays only a compiler barrier (membarrier available).
    pub asymmetric_barriers: bool,
    /// See the module doc.
    pub floor_rtt_ns: LatencySummary,
    /// See the module doc.
    pub ring_rtt_ns: LatencySummary,
    /// See the module doc.
    pub dirigo_rtt_ns: LatencySummary,
    /// See the module doc.
    pub dirigo_lessor_rtt_ns: LatencySummary,
    /// See the module doc.
    pub dirigo_parked_rtt_ns: LatencySummary,
    /// See the module doc.
    pub futex_rtt_ns: LatencySummary,
    /// See the module doc.
    pub glommio_channel_rtt_ns: LatencySummary,
    /// See the module doc.
    pub flume_rtt_ns: LatencySummary,
    /// See the module doc.
    pub dirigo_oneway_msgs_per_s: f64,
    /// See the module doc.
    pub ring_oneway_msgs_per_s: f64,
    /// The targets, as ratios of this run.
    pub ratios: MeshRatios,
    /// Whether the floor is so low (under 150 ns) that the two CPUs most likely share a
    /// physical core (SMT siblings, or a hypervisor placing both vCPUs there): then cache
    /// lines never cross cores, the fixed software cost of a hop dominates every ratio,
    /// and the ratios are not comparable with cross-core runs.
    pub shared_core_suspected: bool,
}

impl MeshReport {
    /// A plain-text table of the run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let cpus: Vec<String> = self
            .cpus
            .iter()
            .map(|cpu| cpu.map_or_else(|| "unpinned".into(), |c| c.to_string()))
            .collect();
        out.push_str(&format!(
            "mesh benchmark on CPUs [{}] (asymmetric barriers: {})\n\n",
            cpus.join(", "),
            self.asymmetric_barriers
        ));
        out.push_str(&format!(
            "{:<24} {:>10} {:>10} {:>10} {:>10}\n",
            "round trip (ns)", "p50", "p99", "p99.9", "mean"
        ));
        for (name, summary) in [
            ("floor (atomics)", &self.floor_rtt_ns),
            ("raw rings", &self.ring_rtt_ns),
            ("dirigo", &self.dirigo_rtt_ns),
            ("dirigo, lessors", &self.dirigo_lessor_rtt_ns),
            ("dirigo, parked", &self.dirigo_parked_rtt_ns),
            ("futex park/unpark", &self.futex_rtt_ns),
            ("glommio shared_channel", &self.glommio_channel_rtt_ns),
            ("flume", &self.flume_rtt_ns),
        ] {
            out.push_str(&format!(
                "{:<24} {:>10} {:>10} {:>10} {:>10.0}\n",
                name, summary.p50, summary.p99, summary.p999, summary.mean
            ));
        }
        out.push_str(&format!(
            "\n{:<24} {:>14.0}\n{:<24} {:>14.0}\n\n",
            "dirigo one-way msg/s",
            self.dirigo_oneway_msgs_per_s,
            "raw ring one-way msg/s",
            self.ring_oneway_msgs_per_s
        ));
        if self.shared_core_suspected {
            out.push_str(&format!(
                "note: the floor is under {SHARED_CORE_FLOOR_NS} ns, so these two CPUs most likely share a \
                 physical core; the ratios below are not comparable with cross-core runs\n\n"
            ));
        }
        let r = &self.ratios;
        let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
        out.push_str(&format!(
            "dirigo rtt / floor          {:>6.2}  (target <= 1.6)  {}\n",
            r.dirigo_rtt_over_floor,
            verdict(r.dirigo_rtt_over_floor <= 1.6)
        ));
        out.push_str(&format!(
            "dirigo parked / futex       {:>6.2}  (target <= 1.2)  {}\n",
            r.dirigo_parked_over_futex,
            verdict(r.dirigo_parked_over_futex <= 1.2)
        ));
        out.push_str(&format!(
            "dirigo one-way / ring       {:>6.2}  (target >= 0.5)  {}\n",
            r.dirigo_oneway_over_ring,
            verdict(r.dirigo_oneway_over_ring >= 0.5)
        ));
        out.push_str(&format!(
            "glommio channel / dirigo    {:>6.2}  (target >= 10)   {}\n",
            r.glommio_channel_over_dirigo,
            verdict(r.glommio_channel_over_dirigo >= 10.0)
        ));
        out.push_str(&format!(
            "dirigo lessors / plain      {:>6.2}\n",
            r.lessor_over_plain
        ));
        out
    }
}

/// Runs every measurement of the mesh benchmark.
pub fn run(config: &MeshBenchConfig) -> Result<MeshReport, String> {
    dirigo_runtime::fence::init();
    let available = dirigo_runtime::placement::available_cpus();
    let cpus: [Option<usize>; 2] = if available.len() >= 2 {
        [Some(available[0]), Some(available[1])]
    } else {
        tracing::warn!("fewer than two CPUs available: the mesh benchmark runs unpinned");
        [None, None]
    };
    // The machine's speed drifts (other tenants, vCPU placement): measure each figure
    // and its baseline in alternating rounds, so that a ratio compares like with like.
    let mut floor = new_histogram();
    let mut ring = new_histogram();
    let mut dirigo = new_histogram();
    let mut dirigo_lessor = new_histogram();
    let mut futex = new_histogram();
    let mut dirigo_parked = new_histogram();
    let per_round = (config.round_trips / ROUNDS).max(10);
    let parked_per_round = (config.parked_round_trips / ROUNDS).max(10);
    for _ in 0..ROUNDS {
        add(&mut floor, &floor_rtt(cpus, per_round));
        add(&mut ring, &ring_histogram(cpus, per_round));
        add(&mut dirigo, &dirigo_rtt(cpus, per_round, None, false)?);
        add(
            &mut dirigo_lessor,
            &dirigo_rtt(cpus, per_round, None, true)?,
        );
        add(
            &mut futex,
            &futex_rtt(cpus, parked_per_round, config.settle),
        );
        add(
            &mut dirigo_parked,
            &dirigo_rtt(cpus, parked_per_round, Some(config.settle), false)?,
        );
    }
    let (floor, ring, dirigo, dirigo_lessor) = (
        LatencySummary::of(&floor),
        LatencySummary::of(&ring),
        LatencySummary::of(&dirigo),
        LatencySummary::of(&dirigo_lessor),
    );
    let (futex, dirigo_parked) = (
        LatencySummary::of(&futex),
        LatencySummary::of(&dirigo_parked),
    );
    let glommio_channel = glommio_rtt(cpus, config.round_trips / 4)?;
    let flume = flume_rtt(cpus, config.round_trips);
    let mut dirigo_rates = Vec::with_capacity(ROUNDS);
    let mut ring_rates = Vec::with_capacity(ROUNDS);
    let per_round_messages = (config.oneway_messages / ROUNDS as u64).max(1000);
    for _ in 0..ROUNDS {
        dirigo_rates.push(dirigo_oneway(cpus, per_round_messages)?);
        ring_rates.push(ring_oneway(cpus, per_round_messages));
    }
    let (dirigo_oneway, ring_oneway) = (median(dirigo_rates), median(ring_rates));

    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    let mut ratios = MeshRatios {
        dirigo_rtt_over_floor: ratio(dirigo.p50 as f64, floor.p50 as f64),
        dirigo_parked_over_futex: ratio(dirigo_parked.p50 as f64, futex.p50 as f64),
        dirigo_oneway_over_ring: ratio(dirigo_oneway, ring_oneway),
        glommio_channel_over_dirigo: ratio(glommio_channel.p50 as f64, dirigo.p50 as f64),
        lessor_over_plain: ratio(dirigo_lessor.p50 as f64, dirigo.p50 as f64),
        targets_met: false,
    };
    ratios.targets_met = ratios.dirigo_rtt_over_floor <= 1.6
        && ratios.dirigo_parked_over_futex <= 1.2
        && ratios.dirigo_oneway_over_ring >= 0.5
        && ratios.glommio_channel_over_dirigo >= 10.0;
    Ok(MeshReport {
        cpus: cpus.to_vec(),
        asymmetric_barriers: dirigo_runtime::fence::asymmetric(),
        floor_rtt_ns: floor,
        ring_rtt_ns: ring,
        dirigo_rtt_ns: dirigo,
        dirigo_lessor_rtt_ns: dirigo_lessor,
        dirigo_parked_rtt_ns: dirigo_parked,
        futex_rtt_ns: futex,
        glommio_channel_rtt_ns: glommio_channel,
        flume_rtt_ns: flume,
        dirigo_oneway_msgs_per_s: dirigo_oneway,
        ring_oneway_msgs_per_s: ring_oneway,
        shared_core_suspected: floor.p50 < SHARED_CORE_FLOOR_NS,
        ratios,
    })
}

/// A floor round trip below this means the two CPUs share caches below the last level.
const SHARED_CORE_FLOOR_NS: u64 = 150;

/// Runs `body` on a fresh thread, so that pinning inside it leaves the caller alone.
fn on_own_thread<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(body)
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Rounds of alternating measurements (see `run`).
const ROUNDS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn add(total: &mut Histogram<u64>, round: &Histogram<u64>) {
    total.add(round).expect("histograms share their bounds");
}

fn warmup_of(round_trips: usize) -> usize {
    round_trips / 10
}

fn spin_for(duration: Duration) {
    let until = clock::now() + duration.as_nanos() as u64;
    while clock::now() < until {
        std::hint::spin_loop();
    }
}

/// Atomic ping-pong through two cache lines.
fn floor_rtt(cpus: [Option<usize>; 2], round_trips: usize) -> Histogram<u64> {
    // Never pin the calling thread: later runtimes take their CPUs from its mask.
    on_own_thread(move || {
        let ping = Arc::new(CachePadded::new(AtomicU64::new(0)));
        let pong = Arc::new(CachePadded::new(AtomicU64::new(0)));
        let total = (round_trips + warmup_of(round_trips)) as u64;
        let echo = {
            let (ping, pong) = (ping.clone(), pong.clone());
            std::thread::spawn(move || {
                pin_current(cpus[1]);
                for i in 1..=total {
                    while ping.load(Ordering::Acquire) != i {
                        std::hint::spin_loop();
                    }
                    pong.store(i, Ordering::Release);
                }
            })
        };
        pin_current(cpus[0]);
        let mut histogram = new_histogram();
        for i in 1..=total {
            let start = clock::raw();
            ping.store(i, Ordering::Release);
            while pong.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            if i > warmup_of(round_trips) as u64 {
                record(&mut histogram, clock::raw_delta_ns(start, clock::raw()));
            }
        }
        echo.join().expect("echo thread");
        histogram
    })
}

/// Raw park/unpark ping-pong: each side announces it sleeps, parks, and is unparked by
/// the other; the pinger waits until the echo sleeps (plus `settle`) before each ping.
fn futex_rtt(cpus: [Option<usize>; 2], round_trips: usize, settle: Duration) -> Histogram<u64> {
    // Never pin the calling thread: later runtimes take their CPUs from its mask.
    on_own_thread(move || {
        struct Side {
            value: CachePadded<AtomicU64>,
            sleeping: CachePadded<AtomicBool>,
        }
        fn wait_for(side: &Side, expected: u64) {
            loop {
                if side.value.load(Ordering::Acquire) >= expected {
                    return;
                }
                side.sleeping.store(true, Ordering::SeqCst);
                std::sync::atomic::fence(Ordering::SeqCst);
                if side.value.load(Ordering::Acquire) >= expected {
                    side.sleeping.store(false, Ordering::Relaxed);
                    return;
                }
                std::thread::park();
                side.sleeping.store(false, Ordering::Relaxed);
            }
        }
        fn post(side: &Side, value: u64, thread: &std::thread::Thread) {
            side.value.store(value, Ordering::Release);
            std::sync::atomic::fence(Ordering::SeqCst);
            if side.sleeping.load(Ordering::Relaxed) && side.sleeping.swap(false, Ordering::AcqRel)
            {
                thread.unpark();
            }
        }
        let side = || {
            Arc::new(Side {
                value: CachePadded::new(AtomicU64::new(0)),
                sleeping: CachePadded::new(AtomicBool::new(false)),
            })
        };
        let (to_echo, to_pinger) = (side(), side());
        let total = (round_trips + warmup_of(round_trips)) as u64;
        let pinger_thread = std::thread::current();
        let echo = {
            let (to_echo, to_pinger) = (to_echo.clone(), to_pinger.clone());
            std::thread::spawn(move || {
                pin_current(cpus[1]);
                for i in 1..=total {
                    wait_for(&to_echo, i);
                    post(&to_pinger, i, &pinger_thread);
                }
            })
        };
        let echo_thread = echo.thread().clone();
        pin_current(cpus[0]);
        let mut histogram = new_histogram();
        for i in 1..=total {
            while !to_echo.sleeping.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            spin_for(settle);
            let start = clock::raw();
            post(&to_echo, i, &echo_thread);
            wait_for(&to_pinger, i);
            if i > warmup_of(round_trips) as u64 {
                record(&mut histogram, clock::raw_delta_ns(start, clock::raw()));
            }
        }
        echo.join().expect("echo thread");
        histogram
    })
}

/// Flume ping-pong between two pinned, spinning threads.
fn flume_rtt(cpus: [Option<usize>; 2], round_trips: usize) -> LatencySummary {
    LatencySummary::of(&flume_histogram(cpus, round_trips))
}

fn flume_histogram(cpus: [Option<usize>; 2], round_trips: usize) -> Histogram<u64> {
    // Never pin the calling thread: later runtimes take their CPUs from its mask.
    on_own_thread(move || {
        let (ping_tx, ping_rx) = flume::bounded::<u64>(1);
        let (pong_tx, pong_rx) = flume::bounded::<u64>(1);
        let total = (round_trips + warmup_of(round_trips)) as u64;
        let echo = std::thread::spawn(move || {
            pin_current(cpus[1]);
            for _ in 0..total {
                let value = loop {
                    match ping_rx.try_recv() {
                        Ok(value) => break value,
                        Err(_) => std::hint::spin_loop(),
                    }
                };
                pong_tx.send(value).expect("pinger alive");
            }
        });
        pin_current(cpus[0]);
        let mut histogram = new_histogram();
        for i in 0..total {
            let start = clock::raw();
            ping_tx.send(i).expect("echo alive");
            loop {
                match pong_rx.try_recv() {
                    Ok(_) => break,
                    Err(_) => std::hint::spin_loop(),
                }
            }
            if i >= warmup_of(round_trips) as u64 {
                record(&mut histogram, clock::raw_delta_ns(start, clock::raw()));
            }
        }
        echo.join().expect("echo thread");
        histogram
    })
}

/// Ping-pong through two raw shard-to-shard rings carrying the benchmark's envelopes,
/// each side releasing slots after replying, as shards do: the mesh without the runtime.
fn ring_histogram(cpus: [Option<usize>; 2], round_trips: usize) -> Histogram<u64> {
    fn envelope(seq: u32) -> Envelope<BenchMsg> {
        let target = ActorId::new(0, ECHO, 0);
        Envelope {
            target,
            source: Some(target),
            kind: MessageKind::User,
            ctx: SchedContext::at(0),
            payload: BenchMsg::Data { seq, total: 0 },
        }
    }
    fn receive(ring: &mut mesh::Consumer<Envelope<BenchMsg>>) -> Envelope<BenchMsg> {
        loop {
            if let Some(envelope) = ring.try_pop() {
                return envelope;
            }
            std::hint::spin_loop();
        }
    }
    on_own_thread(move || {
        let (mut ping_tx, mut ping_rx) = mesh::ring::<Envelope<BenchMsg>>(1024);
        let (mut pong_tx, mut pong_rx) = mesh::ring::<Envelope<BenchMsg>>(1024);
        let total = round_trips + warmup_of(round_trips);
        let echo = std::thread::spawn(move || {
            pin_current(cpus[1]);
            for _ in 0..total {
                let ping = receive(&mut ping_rx);
                assert!(pong_tx.try_push(ping).is_ok(), "one message in flight");
                ping_rx.release();
            }
        });
        pin_current(cpus[0]);
        let mut histogram = new_histogram();
        for i in 0..total {
            let start = clock::raw();
            assert!(
                ping_tx.try_push(envelope(i as u32)).is_ok(),
                "one message in flight"
            );
            receive(&mut pong_rx);
            if i >= warmup_of(round_trips) {
                record(&mut histogram, clock::raw_delta_ns(start, clock::raw()));
            }
            pong_rx.release();
        }
        echo.join().expect("echo thread");
        histogram
    })
}

/// glommio `shared_channel` ping-pong between two executors that spin before parking.
fn glommio_rtt(cpus: [Option<usize>; 2], round_trips: usize) -> Result<LatencySummary, String> {
    use glommio::channels::shared_channel;
    let placement = |cpu: Option<usize>| match cpu {
        Some(cpu) => glommio::Placement::Fixed(cpu),
        None => glommio::Placement::Unbound,
    };
    let builder = |cpu| {
        glommio::LocalExecutorBuilder::new(placement(cpu))
            .spin_before_park(Duration::from_secs(1))
            .io_memory(1 << 20)
    };
    let (ping_tx, ping_rx) = shared_channel::new_bounded::<u64>(16);
    let (pong_tx, pong_rx) = shared_channel::new_bounded::<u64>(16);
    let total = round_trips + warmup_of(round_trips);
    let echo = builder(cpus[1])
        .name("bench-glommio-echo")
        .spawn(move || async move {
            let pings = ping_rx.connect().await;
            let pongs = pong_tx.connect().await;
            while let Some(value) = pings.recv().await {
                if pongs.send(value).await.is_err() {
                    break;
                }
            }
        })
        .map_err(|error| format!("glommio executor: {error}"))?;
    let pinger = builder(cpus[0])
        .name("bench-glommio-ping")
        .spawn(move || async move {
            let pings = ping_tx.connect().await;
            let pongs = pong_rx.connect().await;
            let mut histogram = new_histogram();
            for i in 0..total {
                let start = clock::raw();
                pings.send(i as u64).await.expect("echo alive");
                pongs.recv().await.expect("echo alive");
                if i >= warmup_of(round_trips) {
                    record(&mut histogram, clock::raw_delta_ns(start, clock::raw()));
                }
            }
            histogram
        })
        .map_err(|error| format!("glommio executor: {error}"))?;
    let histogram = pinger
        .join()
        .map_err(|error| format!("glommio pinger: {error}"))?;
    echo.join()
        .map_err(|error| format!("glommio echo: {error}"))?;
    Ok(LatencySummary::of(&histogram))
}

/// What the dirigo scenarios send: 16 bytes, so that an envelope fills one cache line.
#[derive(Clone, Debug)]
enum BenchMsg {
    Start(Box<PingStart>),
    Ping,
    Pong,
    Go(Box<Go>),
    Data { seq: u32, total: u32 },
    Ack(u32),
}

#[derive(Clone, Debug)]
struct PingStart {
    round_trips: usize,
    peer: ActorId,
    settle: Option<Duration>,
}

#[derive(Clone, Debug)]
struct Go {
    total: u32,
    peer: ActorId,
}

const PINGER: u16 = 0;
const ECHO: u16 = 1;
const PRODUCER: u16 = 2;
const CONSUMER: u16 = 3;

struct Pinger {
    results: flume::Sender<Histogram<u64>>,
    histogram: Histogram<u64>,
    peer: ActorId,
    settle: Option<Duration>,
    sent: usize,
    total: usize,
    warmup: usize,
    started: u64,
}

impl Pinger {
    fn ping(&mut self, ctx: &mut Context<'_, BenchMsg>) {
        if let Some(settle) = self.settle {
            let peer_shard = ctx.home_shard(self.peer);
            while !ctx.shard_sleeping(peer_shard) {
                std::hint::spin_loop();
            }
            spin_for(settle);
        }
        self.sent += 1;
        self.started = clock::raw();
        ctx.send(self.peer, BenchMsg::Ping)
            .expect("echo registered");
    }
}

impl Actor<BenchMsg> for Pinger {
    fn receive(&mut self, ctx: &mut Context<'_, BenchMsg>, message: Envelope<BenchMsg>) {
        match message.payload {
            BenchMsg::Start(start) => {
                let PingStart {
                    round_trips,
                    peer,
                    settle,
                } = *start;
                self.peer = peer;
                self.settle = settle;
                self.warmup = warmup_of(round_trips);
                self.total = round_trips + self.warmup;
                self.ping(ctx);
            }
            BenchMsg::Pong => {
                let elapsed = clock::raw_delta_ns(self.started, clock::raw());
                if self.sent > self.warmup {
                    record(&mut self.histogram, elapsed);
                }
                if self.sent < self.total {
                    self.ping(ctx);
                } else {
                    let _ = self.results.send(self.histogram.clone());
                }
            }
            _ => {}
        }
    }
}

struct Echo;

impl Actor<BenchMsg> for Echo {
    fn receive(&mut self, ctx: &mut Context<'_, BenchMsg>, message: Envelope<BenchMsg>) {
        if let (BenchMsg::Ping, Some(source)) = (message.payload, message.source) {
            ctx.send(source, BenchMsg::Pong).expect("pinger registered");
        }
    }
}

/// Credits a producer may have outstanding, and how often the consumer returns them.
const WINDOW: u32 = 4096;
const ACK_EVERY: u32 = 512;

struct Producer {
    peer: ActorId,
    next: u32,
    total: u32,
    in_flight: u32,
}

impl Producer {
    fn pump(&mut self, ctx: &mut Context<'_, BenchMsg>) {
        while self.in_flight < WINDOW && self.next < self.total {
            ctx.send(
                self.peer,
                BenchMsg::Data {
                    seq: self.next,
                    total: self.total,
                },
            )
            .expect("consumer registered");
            self.next += 1;
            self.in_flight += 1;
        }
    }
}

impl Actor<BenchMsg> for Producer {
    fn receive(&mut self, ctx: &mut Context<'_, BenchMsg>, message: Envelope<BenchMsg>) {
        match message.payload {
            BenchMsg::Go(go) => {
                self.peer = go.peer;
                self.total = go.total;
                self.next = 0;
                self.in_flight = 0;
                self.pump(ctx);
            }
            BenchMsg::Ack(credits) => {
                self.in_flight -= credits;
                self.pump(ctx);
            }
            _ => {}
        }
    }
}

struct Consumer {
    received: u32,
    done: flume::Sender<u64>,
}

impl Actor<BenchMsg> for Consumer {
    fn receive(&mut self, ctx: &mut Context<'_, BenchMsg>, message: Envelope<BenchMsg>) {
        if let BenchMsg::Data { seq, total } = message.payload {
            if seq == 0 {
                self.received = 0;
            }
            debug_assert_eq!(seq, self.received);
            self.received += 1;
            if self.received.is_multiple_of(ACK_EVERY) {
                if let Some(source) = message.source {
                    ctx.send(source, BenchMsg::Ack(ACK_EVERY))
                        .expect("producer registered");
                }
            }
            if self.received == total {
                let _ = self.done.send(clock::now());
            }
        }
    }
}

/// A two-shard runtime on `cpus` with every bench actor registered.
fn bench_runtime(
    cpus: [Option<usize>; 2],
    spin: Duration,
    histograms: flume::Sender<Histogram<u64>>,
    done: flume::Sender<u64>,
) -> Result<Runtime<BenchMsg>, String> {
    let builder: RuntimeBuilder<BenchMsg> = match cpus {
        [Some(a), Some(b)] => Runtime::builder().cpus(vec![a, b]),
        _ => Runtime::builder().shards(2),
    };
    builder
        .spin_budget(spin)
        .park_timeout(Duration::from_secs(1))
        .operator(0, PINGER, move |_, _| {
            Box::new(Pinger {
                results: histograms.clone(),
                histogram: new_histogram(),
                peer: ActorId::default(),
                settle: None,
                sent: 0,
                total: 0,
                warmup: 0,
                started: 0,
            }) as Box<dyn Actor<BenchMsg>>
        })
        .operator(0, ECHO, |_, _| Box::new(Echo) as Box<dyn Actor<BenchMsg>>)
        .operator(0, PRODUCER, |_, _| {
            Box::new(Producer {
                peer: ActorId::default(),
                next: 0,
                total: 0,
                in_flight: 0,
            }) as Box<dyn Actor<BenchMsg>>
        })
        .operator(0, CONSUMER, move |_, _| {
            Box::new(Consumer {
                received: 0,
                done: done.clone(),
            }) as Box<dyn Actor<BenchMsg>>
        })
        .build()
        .map_err(|error| error.to_string())
}

/// The first partition of `operator` whose home is `shard`.
fn partition_on(runtime: &Runtime<BenchMsg>, operator: u16, shard: usize) -> ActorId {
    (0..)
        .map(|partition| ActorId::new(0, operator, partition))
        .find(|actor| runtime.home_shard(*actor) == shard)
        .expect("some partition lands on every shard")
}

/// Actor-to-actor round trips across two shards: spinning when `settle` is `None`,
/// otherwise with the receiving shard parked before each message. With `lessors`, each
/// actor first runs a critical message, which makes it a lessor (with no lessees), as
/// the first watermark does to a dataflow operator.
fn dirigo_rtt(
    cpus: [Option<usize>; 2],
    round_trips: usize,
    settle: Option<Duration>,
    lessors: bool,
) -> Result<Histogram<u64>, String> {
    let (histograms_tx, histograms_rx) = flume::unbounded();
    let (done_tx, _done_rx) = flume::unbounded();
    let spin = if settle.is_some() {
        Duration::ZERO
    } else {
        Duration::from_secs(3600)
    };
    let runtime = bench_runtime(cpus, spin, histograms_tx, done_tx)?;
    let pinger = partition_on(&runtime, PINGER, 0);
    let echo = partition_on(&runtime, ECHO, 1);
    if lessors {
        for actor in [pinger, echo] {
            runtime
                .ingress()
                .send(Envelope::critical(actor, BenchMsg::Ack(0)))
                .map_err(|error| error.to_string())?;
        }
    }
    runtime
        .ingress()
        .send_to(
            pinger,
            BenchMsg::Start(Box::new(PingStart {
                round_trips,
                peer: echo,
                settle,
            })),
        )
        .map_err(|error| error.to_string())?;
    let histogram = histograms_rx
        .recv()
        .map_err(|_| "the pinger stopped".to_string())?;
    runtime.shutdown();
    Ok(histogram)
}

/// Messages per second from an actor on shard 0 to an actor on shard 1.
fn dirigo_oneway(cpus: [Option<usize>; 2], total: u64) -> Result<f64, String> {
    let total =
        u32::try_from(total).map_err(|_| "at most 2^32 - 1 one-way messages".to_string())?;
    let (histograms_tx, _histograms_rx) = flume::unbounded();
    let (done_tx, done_rx) = flume::unbounded();
    let runtime = bench_runtime(cpus, Duration::from_secs(3600), histograms_tx, done_tx)?;
    let producer = partition_on(&runtime, PRODUCER, 0);
    let consumer = partition_on(&runtime, CONSUMER, 1);
    let ingress = runtime.ingress();
    let mut rate = 0.0;
    // A first, shorter run activates both actors and warms caches and allocations.
    for total in [(WINDOW * 8).min(total), total] {
        let started = clock::now();
        ingress
            .send_to(
                producer,
                BenchMsg::Go(Box::new(Go {
                    total,
                    peer: consumer,
                })),
            )
            .map_err(|error| error.to_string())?;
        let finished = done_rx
            .recv()
            .map_err(|_| "the consumer stopped".to_string())?;
        rate = f64::from(total) / ((finished - started) as f64 / 1e9);
    }
    runtime.shutdown();
    Ok(rate)
}

/// Messages per second through one raw ring between two pinned threads.
fn ring_oneway(cpus: [Option<usize>; 2], total: u64) -> f64 {
    // Never pin the calling thread: later runtimes take their CPUs from its mask.
    on_own_thread(move || {
        let (mut producer, mut consumer) = mesh::ring::<Envelope<BenchMsg>>(1024);
        let target = ActorId::new(0, CONSUMER, 0);
        let go = Arc::new(AtomicBool::new(false));
        let sender = {
            let go = go.clone();
            std::thread::spawn(move || {
                pin_current(cpus[0]);
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                let started = clock::now();
                for seq in 0..total {
                    let mut envelope = Envelope {
                        target,
                        source: Some(target),
                        kind: MessageKind::User,
                        ctx: SchedContext::at(started),
                        payload: BenchMsg::Data {
                            seq: seq as u32,
                            total: total as u32,
                        },
                    };
                    loop {
                        match producer.try_push(envelope) {
                            Ok(()) => break,
                            Err(back) => {
                                envelope = back;
                                std::hint::spin_loop();
                            }
                        }
                    }
                }
                started
            })
        };
        pin_current(cpus[1]);
        go.store(true, Ordering::Release);
        let mut received = 0u64;
        let mut checksum = 0u64;
        while received < total {
            received += consumer.drain(|envelope| {
                if let BenchMsg::Data { seq, .. } = envelope.payload {
                    checksum = checksum.wrapping_add(u64::from(seq));
                }
            }) as u64;
            // As a shard does after each turn.
            consumer.release();
        }
        let finished = clock::now();
        let started = sender.join().expect("ring producer");
        assert_eq!(checksum, total * (total - 1) / 2, "ring lost messages");
        total as f64 / ((finished - started) as f64 / 1e9)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_produces_every_figure() {
        let report = run(&MeshBenchConfig {
            round_trips: 2_000,
            parked_round_trips: 100,
            oneway_messages: 50_000,
            settle: Duration::from_micros(5),
        })
        .unwrap();
        for summary in [
            report.floor_rtt_ns,
            report.ring_rtt_ns,
            report.dirigo_rtt_ns,
            report.dirigo_lessor_rtt_ns,
            report.dirigo_parked_rtt_ns,
            report.futex_rtt_ns,
            report.glommio_channel_rtt_ns,
            report.flume_rtt_ns,
        ] {
            assert!(summary.p50 > 0 && summary.p50 <= summary.p99 && summary.p99 <= summary.p999);
        }
        assert!(report.dirigo_oneway_msgs_per_s > 0.0);
        assert!(report.ring_oneway_msgs_per_s > 0.0);
        let json = serde_json::to_value(&report).unwrap();
        for key in LATENCY_KEYS {
            for field in ["p50", "p99", "p999", "mean"] {
                assert!(json[key][field].is_number(), "{key}.{field}");
            }
        }
        for key in THROUGHPUT_KEYS {
            assert!(json[key].is_number(), "{key}");
        }
        assert!(report.table().contains("dirigo rtt / floor"));
    }
}
