//! Scheduling policies order ready work; SLOs give messages deadlines that subtract the
//! measured cost of the pipeline ahead of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dirigo_runtime::scheduling::{Edf, Fifo, SchedulingPolicy};
use dirigo_runtime::{Actor, ActorId, Context, Envelope, Runtime, RuntimeBuilder, SchedContext};

fn spin_for(duration: Duration) {
    let started = Instant::now();
    while started.elapsed() < duration {
        std::hint::spin_loop();
    }
}

/// Records the order in which actors ran; the first message any actor of operator
/// `BLOCKER` gets keeps the shard busy long enough for a backlog to build up.
struct Recorder {
    id: ActorId,
    order: Arc<Mutex<Vec<ActorId>>>,
}

const BLOCKER: u16 = 0;

impl Actor<u64> for Recorder {
    fn receive(&mut self, _ctx: &mut Context<'_, u64>, _message: Envelope<u64>) {
        if self.id.app == 1 && self.id.operator == BLOCKER {
            spin_for(Duration::from_millis(30));
        } else {
            self.order.lock().unwrap().push(self.id);
        }
    }
}

/// Runs: a blocker, then 50 messages for 50 actors of a loose app (SLO 1 s) and, last, one
/// for an actor of a tight app (SLO 1 ms), all queued behind the blocker on one shard.
fn order_under(
    builder: RuntimeBuilder<u64>,
    stamp: impl Fn(usize, &mut Envelope<u64>),
) -> Vec<ActorId> {
    let order = Arc::new(Mutex::new(Vec::new()));
    let for_factory = order.clone();
    let factory = move |id: ActorId, _saved| {
        Box::new(Recorder {
            id,
            order: for_factory.clone(),
        }) as Box<dyn Actor<u64>>
    };
    let runtime = builder
        .shards(1)
        .app_slo(1, Duration::from_secs(1))
        .app_slo(2, Duration::from_millis(1))
        .operator(1, BLOCKER, factory.clone())
        .operator(1, 1, factory.clone())
        .operator(2, 0, factory)
        .build()
        .unwrap();
    let ingress = runtime.ingress();
    ingress.send_to(ActorId::new(1, BLOCKER, 0), 0).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let mut messages: Vec<Envelope<u64>> = (0..50)
        .map(|partition| Envelope::user(ActorId::new(1, 1, partition), 0))
        .collect();
    messages.push(Envelope::user(ActorId::new(2, 0, 0), 0));
    for (position, mut envelope) in messages.into_iter().enumerate() {
        stamp(position, &mut envelope);
        ingress.send(envelope).unwrap();
    }
    runtime.shutdown();
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 51);
    order
}

#[test]
fn edf_runs_the_tightest_deadline_first_and_fifo_runs_arrival_order() {
    let tight = ActorId::new(2, 0, 0);
    let edf = order_under(Runtime::builder().policy(Edf), |_, _| {});
    assert_eq!(edf[0], tight, "EDF ran {:?} first", edf[0]);
    let fifo = order_under(Runtime::builder().policy(Fifo), |_, _| {});
    assert_eq!(fifo[50], tight, "FIFO keeps arrival order");
    assert_eq!(fifo[0], ActorId::new(1, 1, 0));
}

/// A user policy: the newest event first.
struct NewestFirst;

impl SchedulingPolicy for NewestFirst {
    fn name(&self) -> &str {
        "newest-first"
    }
    fn by_priority(&self) -> bool {
        true
    }
    fn priority(&self, message: &SchedContext) -> u64 {
        u64::MAX - message.ingress
    }
}

#[test]
fn a_user_policy_orders_ready_actors() {
    let order = order_under(
        Runtime::builder().policy(NewestFirst),
        |position, envelope| {
            envelope.ctx.ingress = 1_000 + position as u64;
        },
    );
    assert_eq!(order[0], ActorId::new(2, 0, 0));
    assert_eq!(order[1], ActorId::new(1, 1, 49));
    assert_eq!(order[50], ActorId::new(1, 1, 0));
}

/// Operator 0 forwards to operator 1, which costs about 300 µs, and remembers the slack
/// (`ingress + SLO − deadline`) of the last message it handled.
struct Stage {
    id: ActorId,
    slack: Arc<AtomicU64>,
}

const SLO: Duration = Duration::from_millis(50);

impl Actor<u64> for Stage {
    fn receive(&mut self, ctx: &mut Context<'_, u64>, message: Envelope<u64>) {
        if self.id.operator == 0 {
            let current = ctx.current();
            let slack = (current.ingress + SLO.as_nanos() as u64).saturating_sub(current.deadline);
            self.slack.store(slack, Ordering::Relaxed);
            ctx.send(
                ActorId::new(self.id.app, 1, self.id.partition),
                message.payload,
            )
            .unwrap();
        } else {
            spin_for(Duration::from_micros(300));
        }
    }
}

#[test]
fn deadlines_subtract_the_measured_cost_of_the_path_ahead() {
    let slack = Arc::new(AtomicU64::new(0));
    let for_factory = slack.clone();
    let runtime = Runtime::<u64>::builder()
        .shards(2)
        .policy(Edf)
        .app_slo(1, SLO)
        .operator(1, 0, move |id: ActorId, _saved| {
            Box::new(Stage {
                id,
                slack: for_factory.clone(),
            }) as Box<dyn Actor<u64>>
        })
        .operator(1, 1, {
            let slack = slack.clone();
            move |id: ActorId, _saved| {
                Box::new(Stage {
                    id,
                    slack: slack.clone(),
                }) as Box<dyn Actor<u64>>
            }
        })
        .build()
        .unwrap();
    let ingress = runtime.ingress();
    for round in 0..300 {
        ingress
            .send_to(ActorId::new(1, 0, round % 4), u64::from(round))
            .unwrap();
        std::thread::sleep(Duration::from_micros(400));
    }
    let costs = runtime.operator_costs();
    runtime.shutdown();
    let stage_1 = costs.iter().find(|c| c.operator == 1).unwrap();
    let stage_0 = costs.iter().find(|c| c.operator == 0).unwrap();
    assert!(
        (250_000..5_000_000).contains(&stage_1.own_ns),
        "operator 1's cost: {costs:?}"
    );
    assert!(
        stage_0.path_ns >= stage_0.own_ns + stage_1.own_ns * 9 / 10,
        "C(0) includes the path through operator 1: {costs:?}"
    );
    let slack = slack.load(Ordering::Relaxed);
    assert!(
        (200_000..10_000_000).contains(&slack),
        "the deadline leaves room for the path ahead: slack {slack} ns, {costs:?}"
    );
}
