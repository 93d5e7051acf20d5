//! Delivery guarantees of the shard runtime: per-pair FIFO, nothing lost or duplicated
//! under full rings (cycles, all-to-all), more shards than cores, deactivation keeping
//! state (also on a shard that never falls idle), and shutdown draining what was accepted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dirigo_runtime::{
    Actor, ActorId, Context, Envelope, Runtime, RuntimeBuilder, SavedState, SendError,
};

/// Runs `body` on its own thread and fails the test if it does not finish in time, so a
/// deadlock shows up as a failure instead of a hung test run.
fn within<T: Send + 'static>(seconds: u64, body: impl FnOnce() -> T + Send + 'static) -> T {
    let body = std::thread::spawn(body);
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    while !body.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "test did not finish in {seconds} s: deadlock or livelock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    body.join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[derive(Debug, Clone)]
enum Msg {
    /// Ask a sender to emit `count` sequenced messages to each of `targets`.
    Burst { count: u64, targets: Vec<ActorId> },
    /// One sequenced message from `from`.
    Seq { from: ActorId, seq: u64 },
    /// A token that travels `hops_left` more hops.
    Token { id: u64, hops_left: u32 },
}

const SENDERS: u16 = 0;
const RECEIVERS: u16 = 1;

/// Per receiver: for each source, the next expected sequence number; any gap or
/// reordering is recorded as a violation.
#[derive(Default)]
struct FifoLog {
    next: Mutex<HashMap<(ActorId, ActorId), u64>>,
    violations: AtomicU64,
    received: AtomicU64,
}

struct Sender;
impl Actor<Msg> for Sender {
    fn receive(&mut self, ctx: &mut Context<'_, Msg>, message: Envelope<Msg>) {
        if let Msg::Burst { count, targets } = message.payload {
            for seq in 0..count {
                for target in &targets {
                    let me = ctx.me();
                    ctx.send(*target, Msg::Seq { from: me, seq }).unwrap();
                }
            }
        }
    }
}

struct Receiver(Arc<FifoLog>);
impl Actor<Msg> for Receiver {
    fn receive(&mut self, ctx: &mut Context<'_, Msg>, message: Envelope<Msg>) {
        if let Msg::Seq { from, seq } = message.payload {
            assert_eq!(message.source, Some(from));
            let mut next = self.0.next.lock().unwrap();
            let expected = next.entry((from, ctx.me())).or_insert(0);
            if *expected != seq {
                self.0.violations.fetch_add(1, Ordering::Relaxed);
            }
            *expected = seq + 1;
            self.0.received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn fifo_run(shards: usize, ring_capacity: usize) {
    let log = Arc::new(FifoLog::default());
    let receiver_log = log.clone();
    let runtime = Runtime::<Msg>::builder()
        .shards(shards)
        .ring_capacity(ring_capacity)
        .spin_budget(Duration::from_micros(20))
        .operator(0, SENDERS, |_, _| Box::new(Sender) as Box<dyn Actor<Msg>>)
        .operator(0, RECEIVERS, move |_, _| {
            Box::new(Receiver(receiver_log.clone())) as Box<dyn Actor<Msg>>
        })
        .build()
        .unwrap();
    let targets: Vec<ActorId> = (0..6).map(|p| ActorId::new(0, RECEIVERS, p)).collect();
    let count = 3_000;
    let ingress = runtime.ingress();
    for sender in 0..8 {
        ingress
            .send_to(
                ActorId::new(0, SENDERS, sender),
                Msg::Burst {
                    count,
                    targets: targets.clone(),
                },
            )
            .unwrap();
    }
    let report = runtime.shutdown();
    assert_eq!(log.violations.load(Ordering::Relaxed), 0);
    assert_eq!(log.received.load(Ordering::Relaxed), 8 * 6 * count);
    assert_eq!(report.handled(), 8 + 8 * 6 * count);
    let sent: u64 = report.shards.iter().map(|s| s.msgs_out).sum();
    assert_eq!(sent, 8 * 6 * count);
}

#[test]
fn per_pair_fifo_across_shards() {
    within(120, || fifo_run(2, 8));
}

#[test]
fn per_pair_fifo_on_one_shard() {
    within(120, || fifo_run(1, 8));
}

/// Forwards tokens: to the other actor of a pair (a cycle A→B→A), or to a pseudo-random
/// actor (all-to-all). Records each token's arrival at its last hop.
struct Forwarder {
    peers: u32,
    /// For the cycle: two partitions whose home shards differ.
    pair: Arc<std::sync::OnceLock<[u32; 2]>>,
    arrivals: Arc<Mutex<HashMap<u64, u32>>>,
    hops: Arc<AtomicU64>,
}

impl Actor<Msg> for Forwarder {
    fn receive(&mut self, ctx: &mut Context<'_, Msg>, message: Envelope<Msg>) {
        let Msg::Token { id, hops_left } = message.payload else {
            return;
        };
        self.hops.fetch_add(1, Ordering::Relaxed);
        if hops_left == 0 {
            *self.arrivals.lock().unwrap().entry(id).or_default() += 1;
            return;
        }
        let me = ctx.me().partition;
        let next = if let Some(pair) = self.pair.get() {
            if me == pair[0] {
                pair[1]
            } else {
                pair[0]
            }
        } else {
            // A different actor each hop, spread over every shard.
            (id.wrapping_mul(31).wrapping_add(u64::from(hops_left) * 17) % u64::from(self.peers))
                as u32
        };
        ctx.send(
            ActorId::new(0, 0, next),
            Msg::Token {
                id,
                hops_left: hops_left - 1,
            },
        )
        .unwrap();
    }
}

/// Starts `builder` with Forwarders of `peers` partitions as operator 0/0; returns the
/// runtime, the log of last-hop arrivals, the hop count, and the cycle's pair (unset).
#[allow(clippy::type_complexity)]
fn with_forwarders(
    builder: RuntimeBuilder<Msg>,
    peers: u32,
) -> (
    Runtime<Msg>,
    Arc<Mutex<HashMap<u64, u32>>>,
    Arc<AtomicU64>,
    Arc<std::sync::OnceLock<[u32; 2]>>,
) {
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    let hops = Arc::new(AtomicU64::new(0));
    let pair = Arc::new(std::sync::OnceLock::new());
    let (factory_arrivals, factory_hops, factory_pair) =
        (arrivals.clone(), hops.clone(), pair.clone());
    let runtime = builder
        .operator(0, 0, move |_, _| {
            Box::new(Forwarder {
                peers,
                pair: factory_pair.clone(),
                arrivals: factory_arrivals.clone(),
                hops: factory_hops.clone(),
            }) as Box<dyn Actor<Msg>>
        })
        .build()
        .unwrap();
    (runtime, arrivals, hops, pair)
}

/// Starts `builder` with `make(counter)` as operator 0/0; returns the runtime and the
/// counter its actors share.
fn with_counter(
    builder: RuntimeBuilder<Msg>,
    make: fn(Arc<AtomicU64>) -> Box<dyn Actor<Msg>>,
) -> (Runtime<Msg>, Arc<AtomicU64>) {
    let counter = Arc::new(AtomicU64::new(0));
    let factory_counter = counter.clone();
    let runtime = builder
        .operator(0, 0, move |_, _| make(factory_counter.clone()))
        .build()
        .unwrap();
    (runtime, counter)
}

fn token_run(shards: usize, peers: u32, tokens: u64, hops: u32, ring_capacity: usize) {
    let (runtime, arrivals, hop_count, pair) = with_forwarders(
        Runtime::builder()
            .shards(shards)
            .ring_capacity(ring_capacity)
            .spin_budget(Duration::from_micros(20)),
        peers,
    );
    let mut starts: Vec<u32> = (0..peers).collect();
    if peers == 2 {
        // The cycle only means something if its two ends are on different shards.
        let home = |partition| runtime.home_shard(ActorId::new(0, 0, partition));
        let other = (1..).find(|&p| home(p) != home(0)).unwrap();
        pair.set([0, other]).unwrap();
        starts = vec![0, other];
    }
    let ingress = runtime.ingress();
    for id in 0..tokens {
        let start = starts[(id % u64::from(peers)) as usize];
        ingress
            .send_to(
                ActorId::new(0, 0, start),
                Msg::Token {
                    id,
                    hops_left: hops,
                },
            )
            .unwrap();
    }
    let report = runtime.shutdown();
    let arrivals = arrivals.lock().unwrap();
    assert_eq!(arrivals.len() as u64, tokens, "every token arrives");
    assert!(arrivals.values().all(|&n| n == 1), "no token arrives twice");
    let expected_hops = tokens * (u64::from(hops) + 1);
    assert_eq!(hop_count.load(Ordering::Relaxed), expected_hops);
    assert_eq!(report.handled(), expected_hops);
    if shards > 1 {
        let full: u64 = report.shards.iter().map(|s| s.ring_full).sum();
        assert!(full > 0, "the test must actually fill rings: {report:?}");
    }
}

#[test]
fn nothing_lost_or_duplicated_in_a_cycle_with_full_rings() {
    within(120, || token_run(2, 2, 20_000, 30, 2));
}

#[test]
fn nothing_lost_or_duplicated_all_to_all_with_full_rings() {
    within(120, || token_run(4, 64, 10_000, 20, 2));
}

#[test]
fn more_shards_than_cores() {
    within(180, || {
        let runtime = Runtime::<Msg>::builder()
            .shards(8)
            .operator(0, 0, |_, _| Box::new(Sender) as Box<dyn Actor<Msg>>)
            .build()
            .unwrap();
        let cores = dirigo_runtime::placement::available_cpus().len();
        assert_eq!(runtime.shards(), 8);
        assert_eq!(runtime.placement().pinned(), cores >= 8);
        drop(runtime);
        token_run(8, 64, 5_000, 20, 4);
    });
}

/// Counts what it is sent; keeps the count across deactivation.
struct Counter {
    count: u64,
    reports: flume::Sender<u64>,
}

impl Actor<Msg> for Counter {
    fn receive(&mut self, _ctx: &mut Context<'_, Msg>, message: Envelope<Msg>) {
        match message.payload {
            Msg::Seq { seq, .. } => self.count += seq,
            _ => self.reports.send(self.count).unwrap(),
        }
    }

    fn deactivate(self: Box<Self>) -> Option<SavedState> {
        Some(Box::new(self.count))
    }
}

#[test]
fn deactivation_and_reactivation_keep_state() {
    within(60, || {
        let (reports_tx, reports_rx) = flume::unbounded();
        let runtime = Runtime::<Msg>::builder()
            .shards(2)
            .idle_deactivation(Some(Duration::from_millis(30)))
            .park_timeout(Duration::from_millis(2))
            .operator(0, 0, move |_, saved: Option<SavedState>| {
                let count = saved.map_or(0, |state| *state.downcast::<u64>().unwrap());
                Box::new(Counter {
                    count,
                    reports: reports_tx.clone(),
                }) as Box<dyn Actor<Msg>>
            })
            .build()
            .unwrap();
        let counter = ActorId::new(0, 0, 5);
        let ingress = runtime.ingress();
        let add = |seq| Msg::Seq { from: counter, seq };
        for value in 1..=4 {
            ingress.send_to(counter, add(value)).unwrap();
        }
        ingress
            .send_to(
                counter,
                Msg::Burst {
                    count: 0,
                    targets: vec![],
                },
            )
            .unwrap();
        assert_eq!(reports_rx.recv().unwrap(), 10);
        let shard = runtime.home_shard(counter);
        while runtime.stats()[shard].deactivations == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        ingress.send_to(counter, add(5)).unwrap();
        ingress
            .send_to(
                counter,
                Msg::Burst {
                    count: 0,
                    targets: vec![],
                },
            )
            .unwrap();
        assert_eq!(reports_rx.recv().unwrap(), 15);
        let report = runtime.shutdown();
        assert_eq!(report.shards[shard].activations, 2);
        assert!(report.shards[shard].deactivations >= 1);
    });
}

#[test]
fn shutdown_with_messages_in_flight_loses_nothing_accepted() {
    within(120, || {
        let (runtime, arrivals, _, _) =
            with_forwarders(Runtime::builder().shards(2).ring_capacity(4), 16);
        let ingress = runtime.ingress();
        // A thread keeps sending while shutdown starts; whatever was accepted must arrive.
        let feeder = std::thread::spawn(move || {
            let mut accepted = 0u64;
            for id in 0.. {
                match ingress.send_to(
                    ActorId::new(0, 0, (id % 16) as u32),
                    Msg::Token { id, hops_left: 50 },
                ) {
                    Ok(()) => accepted += 1,
                    Err(SendError::Closed(_)) => return accepted,
                    Err(error) => panic!("unexpected: {error}"),
                }
            }
            unreachable!()
        });
        std::thread::sleep(Duration::from_millis(50));
        let report = runtime.shutdown();
        let accepted = feeder.join().unwrap();
        assert!(accepted > 0);
        let arrivals = arrivals.lock().unwrap();
        assert_eq!(arrivals.len() as u64, accepted);
        assert!(arrivals.values().all(|&n| n == 1));
        assert_eq!(report.handled(), accepted * 51);
    });
}

#[test]
fn unknown_operators_are_refused_with_the_message() {
    let runtime = Runtime::<Msg>::builder()
        .shards(1)
        .operator(0, 0, |_, _| Box::new(Sender) as Box<dyn Actor<Msg>>)
        .build()
        .unwrap();
    let error = runtime
        .ingress()
        .send_to(
            ActorId::new(9, 9, 0),
            Msg::Token {
                id: 1,
                hops_left: 0,
            },
        )
        .unwrap_err();
    assert!(error.to_string().contains("no operator 9/9"));
    assert!(matches!(
        error.into_envelope().payload,
        Msg::Token { id: 1, .. }
    ));
}

struct Fragile(Arc<AtomicU64>);
impl Actor<Msg> for Fragile {
    fn receive(&mut self, _ctx: &mut Context<'_, Msg>, message: Envelope<Msg>) {
        if let Msg::Token { id: 13, .. } = message.payload {
            panic!("unlucky token");
        }
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A panicking handler does not stop its shard, but it fails its app: the actor is not
/// re-created empty, and every later message of the app is discarded, counted, and
/// counts as handled (shutdown does not wait for it).
#[test]
fn a_panicking_handler_fails_its_app_without_stopping_the_shard() {
    within(60, || {
        let (runtime, seen) =
            with_counter(Runtime::builder().shards(1), |seen| Box::new(Fragile(seen)));
        let ingress = runtime.ingress();
        for id in 0..20 {
            ingress
                .send_to(ActorId::new(0, 0, 0), Msg::Token { id, hops_left: 0 })
                .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while runtime.app_failure(0).is_none() {
            assert!(std::time::Instant::now() < deadline, "the app never failed");
            std::thread::sleep(Duration::from_millis(1));
        }
        let failure = runtime.app_failure(0).unwrap();
        assert_eq!(failure.message, "unlucky token");
        assert_eq!(failure.actor, ActorId::new(0, 0, 0));
        let report = runtime.shutdown();
        // Tokens 0..13 ran; 13 panicked; 14..20 were discarded, not run by a new actor.
        assert_eq!(seen.load(Ordering::Relaxed), 13);
        assert_eq!(report.shards[0].handler_panics, 1);
        assert_eq!(report.shards[0].discarded, 6);
        assert_eq!(report.shards[0].activations, 1, "never re-created");
        assert_eq!(report.handled(), 20);
        assert_eq!(report.abandoned, 0);
    });
}

/// Counts what it handles.
struct Tally(Arc<AtomicU64>);
impl Actor<Msg> for Tally {
    fn receive(&mut self, _ctx: &mut Context<'_, Msg>, _message: Envelope<Msg>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// One app's panic leaves the other apps of the runtime alone, on every shard; the
/// panic hooks hear of it at once, and what is sent to the failed app later is
/// discarded (the discard hooks see each message).
#[test]
fn a_failed_app_leaves_the_other_apps_running() {
    within(60, || {
        let healthy = Arc::new(AtomicU64::new(0));
        let fragile = Arc::new(AtomicU64::new(0));
        let discarded = Arc::new(AtomicU64::new(0));
        let (panicked, panics) = flume::unbounded();
        let runtime = {
            let (healthy, fragile, discarded) =
                (healthy.clone(), fragile.clone(), discarded.clone());
            Runtime::builder()
                .shards(2)
                .operator(0, 0, move |_, _| {
                    Box::new(Fragile(fragile.clone())) as Box<dyn Actor<Msg>>
                })
                .operator(1, 0, move |_, _| {
                    Box::new(Tally(healthy.clone())) as Box<dyn Actor<Msg>>
                })
                .on_handler_panic(move |actor, message| {
                    let _ = panicked.send((actor, message.to_owned()));
                })
                .on_discard(move |envelope| {
                    assert_eq!(envelope.target.app, 0, "only the failed app's messages");
                    discarded.fetch_add(1, Ordering::Relaxed);
                })
                .build()
                .unwrap()
        };
        let ingress = runtime.ingress();
        for id in 0..14 {
            for partition in 0..4 {
                ingress
                    .send_to(
                        ActorId::new(0, 0, partition),
                        Msg::Token { id, hops_left: 0 },
                    )
                    .unwrap();
            }
        }
        let (actor, message) = panics.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(actor.app, 0);
        assert_eq!(message, "unlucky token");
        for id in 0..1000 {
            for partition in 0..4 {
                ingress
                    .send_to(
                        ActorId::new(1, 0, partition),
                        Msg::Token { id, hops_left: 0 },
                    )
                    .unwrap();
                ingress
                    .send_to(
                        ActorId::new(0, 0, partition),
                        Msg::Token { id, hops_left: 0 },
                    )
                    .unwrap();
            }
        }
        let report = runtime.shutdown();
        assert_eq!(
            healthy.load(Ordering::Relaxed),
            4000,
            "the other app ran everything"
        );
        let panicked: u64 = report.shards.iter().map(|s| s.handler_panics).sum();
        let dropped: u64 = report.shards.iter().map(|s| s.discarded).sum();
        assert!((1..=4).contains(&panicked), "{panicked}");
        // Each of the failed app's 4 056 messages ran, panicked, or was discarded.
        assert_eq!(
            fragile.load(Ordering::Relaxed) + panicked + dropped,
            4 * 14 + 4000
        );
        assert!(
            dropped >= 4000,
            "everything sent after the failure: {dropped}"
        );
        assert_eq!(discarded.load(Ordering::Relaxed), dropped);
        assert_eq!(report.abandoned, 0);
    });
}

/// Sleeps in every handler, so that its shard falls behind its intake.
struct Slow(Arc<AtomicU64>);
impl Actor<Msg> for Slow {
    fn receive(&mut self, _ctx: &mut Context<'_, Msg>, _message: Envelope<Msg>) {
        std::thread::sleep(Duration::from_millis(2));
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_full_intake_pushes_back_on_outside_senders_and_loses_nothing() {
    within(60, || {
        let (runtime, handled) =
            with_counter(Runtime::builder().shards(1).intake_capacity(4), |handled| {
                Box::new(Slow(handled))
            });
        let ingress = runtime.ingress();
        let target = ActorId::new(0, 0, 0);
        let token = |id| Msg::Token { id, hops_left: 0 };
        let mut accepted = 0;
        let mut refused = 0;
        for id in 0..40 {
            match ingress.try_send(Envelope::user(target, token(id))) {
                Ok(()) => accepted += 1,
                Err(SendError::Full(envelope)) => {
                    refused += 1;
                    // The refused message comes back whole; a blocking send gets it in.
                    ingress.send(envelope).unwrap();
                    accepted += 1;
                }
                Err(error) => panic!("unexpected: {error}"),
            }
        }
        assert!(
            refused > 0,
            "a 4-deep intake in front of a slow actor must fill up"
        );
        let report = runtime.shutdown();
        assert_eq!(accepted, 40);
        assert_eq!(handled.load(Ordering::Relaxed), 40);
        assert_eq!(report.handled(), 40);
    });
}

#[test]
fn busy_time_counts_handlers_not_idle_spinning() {
    within(60, || {
        let (runtime, handled) = with_counter(
            // Spin for the whole idle stretch: none of it may count as busy.
            Runtime::builder()
                .shards(2)
                .spin_budget(Duration::from_secs(10)),
            |handled| Box::new(Slow(handled)),
        );
        std::thread::sleep(Duration::from_millis(200));
        let idle = runtime.stats();
        assert!(
            idle.iter().all(|shard| shard.busy_ns < 5_000_000),
            "idle spinning counted as busy: {idle:?}"
        );
        let target = ActorId::new(0, 0, 3);
        let shard = runtime.home_shard(target);
        for id in 0..10 {
            runtime
                .ingress()
                .send_to(target, Msg::Token { id, hops_left: 0 })
                .unwrap();
        }
        let report = runtime.shutdown();
        assert_eq!(handled.load(Ordering::Relaxed), 10);
        // Ten handlers of at least 2 ms each ran on that shard (busy time is wall time, so
        // a loaded test machine stretches it; the upper bound only catches nonsense).
        let busy = report.shards[shard].busy_ns;
        assert!(
            (20_000_000..2_000_000_000).contains(&busy),
            "busy {busy} ns for 20 ms of handlers"
        );
    });
}

#[test]
fn parked_shards_are_woken_and_counted() {
    within(60, || {
        let (runtime, arrivals, _, _) = with_forwarders(
            Runtime::builder()
                .shards(2)
                .spin_budget(Duration::ZERO)
                .park_timeout(Duration::from_secs(5)),
            16,
        );
        let ingress = runtime.ingress();
        for id in 0..20 {
            // Let both shards fall asleep before each token.
            std::thread::sleep(Duration::from_millis(5));
            ingress
                .send_to(
                    ActorId::new(0, 0, (id % 16) as u32),
                    Msg::Token { id, hops_left: 6 },
                )
                .unwrap();
        }
        let report = runtime.shutdown();
        assert_eq!(arrivals.lock().unwrap().len(), 20);
        let parks: u64 = report.shards.iter().map(|s| s.parks).sum();
        let wakes: u64 = report.shards.iter().map(|s| s.wakes).sum();
        assert!(parks >= 20, "{report:?}");
        // Hops between shards found the receiver parked and woke it (a 5 s park timeout
        // would otherwise make this test take minutes).
        assert!(wakes > 0, "{report:?}");
    });
}

#[test]
fn missing_cpus_run_unpinned_and_bad_requests_fail() {
    let runtime = Runtime::<Msg>::builder()
        .cpus(vec![0, 4096])
        .operator(0, 0, |_, _| Box::new(Sender) as Box<dyn Actor<Msg>>)
        .build()
        .unwrap();
    assert!(!runtime.placement().pinned());
    assert!(runtime
        .placement()
        .unpinned_reason
        .as_deref()
        .unwrap()
        .contains("4096"));
    drop(runtime);
    let error = Runtime::<Msg>::builder()
        .cpus(vec![0, 0])
        .build()
        .err()
        .expect("a CPU listed twice is refused");
    assert!(error.to_string().contains("listed twice"), "{error}");
    assert!(Runtime::<Msg>::builder().shards(0).build().is_err());
}

/// Sends every message it gets straight back to itself: never quiet.
struct Perpetual;
impl Actor<Msg> for Perpetual {
    fn receive(&mut self, ctx: &mut Context<'_, Msg>, message: Envelope<Msg>) {
        let me = ctx.me();
        ctx.send(me, message.payload).unwrap();
    }
}

#[test]
fn a_pipeline_that_never_falls_quiet_can_still_be_shut_down() {
    within(60, || {
        let runtime = Runtime::<Msg>::builder()
            .shards(2)
            .operator(0, 0, |_, _| Box::new(Perpetual) as Box<dyn Actor<Msg>>)
            .build()
            .unwrap();
        for partition in 0..4 {
            runtime
                .ingress()
                .send_to(
                    ActorId::new(0, 0, partition),
                    Msg::Token {
                        id: 0,
                        hops_left: 0,
                    },
                )
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        let started = std::time::Instant::now();
        let report = runtime.shutdown_within(Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(report.abandoned, 4, "the four circulating messages");
        assert!(report.handled() > 100);
    });
}

#[test]
fn a_runtime_dropped_while_unwinding_does_not_wait_forever() {
    let unwound = within(30, || {
        std::thread::spawn(|| {
            let runtime = Runtime::builder()
                .shards(1)
                .operator(0, 0, |_, _| Box::new(Perpetual) as Box<dyn Actor<Msg>>)
                .build()
                .unwrap();
            runtime
                .ingress()
                .send_to(
                    ActorId::new(0, 0, 0),
                    Msg::Token {
                        id: 0,
                        hops_left: 0,
                    },
                )
                .unwrap();
            // A failing assertion in the caller: the runtime is dropped while unwinding,
            // with work that would never drain.
            panic!("the caller failed");
        })
        .join()
    });
    assert!(unwound.is_err(), "the caller's panic comes through");
}

#[test]
fn shards_run_unpinned_when_asked_and_say_why() {
    let runtime = Runtime::<Msg>::builder()
        .shards(1)
        .pinned(false)
        .build()
        .unwrap();
    let placement = runtime.placement();
    assert!(!placement.pinned());
    assert_eq!(placement.cpus, [None]);
    assert!(placement
        .unpinned_reason
        .as_deref()
        .is_some_and(|reason| reason.contains("unpinned")));
    runtime.shutdown();
    let pinned = Runtime::<Msg>::builder().shards(1).build().unwrap();
    assert!(pinned.placement().pinned());
    pinned.shutdown();
}

/// Keeps its shard busy: each message sends the next one to itself until `stop`.
struct Spinner(Arc<std::sync::atomic::AtomicBool>);
impl Actor<Msg> for Spinner {
    fn receive(&mut self, ctx: &mut Context<'_, Msg>, message: Envelope<Msg>) {
        if let Msg::Token { id, .. } = message.payload {
            if !self.0.load(Ordering::Relaxed) {
                let me = ctx.me();
                ctx.send(me, Msg::Token { id, hops_left: 0 }).unwrap();
            }
        }
    }
}

#[test]
fn a_shard_that_never_falls_idle_still_deactivates_idle_actors() {
    within(60, || {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let for_spinner = stop.clone();
        let runtime = Runtime::<Msg>::builder()
            .shards(1)
            .idle_deactivation(Some(Duration::from_millis(20)))
            .operator(0, 0, |_, _| Box::new(Sender) as Box<dyn Actor<Msg>>)
            .operator(0, 1, move |_, _| {
                Box::new(Spinner(for_spinner.clone())) as Box<dyn Actor<Msg>>
            })
            .build()
            .unwrap();
        let ingress = runtime.ingress();
        ingress
            .send_to(
                ActorId::new(0, 0, 0),
                Msg::Burst {
                    count: 0,
                    targets: vec![],
                },
            )
            .unwrap();
        ingress
            .send_to(
                ActorId::new(0, 1, 0),
                Msg::Token {
                    id: 0,
                    hops_left: 0,
                },
            )
            .unwrap();
        let started = std::time::Instant::now();
        while runtime.stats()[0].deactivations == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the idle actor was never deactivated on a busy shard: {:?}",
                runtime.stats()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // The spinner kept the shard busy all along, and is still active.
        let busy = runtime.stats()[0].handled;
        stop.store(true, Ordering::Relaxed);
        let report = runtime.shutdown();
        assert!(busy > 1_000, "the shard was not kept busy: {report:?}");
        assert!(report.shards[0].deactivations >= 1, "{report:?}");
    });
}
