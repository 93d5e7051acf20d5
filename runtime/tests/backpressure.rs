//! Backpressure inside the runtime: a producer faster than its consumer's shard fills the
//! consumer's mailboxes up to their high-water mark and no further; the rings towards
//! that shard then fill, and the producer sees `Context::backpressured` and waits. Nothing
//! is lost, and the consumer's mailboxes stay bounded whether it runs on the producer's
//! shard or another one, and whether or not it is blocked by critical messages (what it
//! holds back meanwhile counts).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dirigo_runtime::{clock, Actor, ActorId, Context, Envelope, Runtime};

const PRODUCER: u16 = 0;
const CONSUMER: u16 = 1;
/// Messages a producer sends per turn.
const PER_TURN: u64 = 64;
/// Larger than the batch a shard runs per turn, so that draining whole rings would outrun it.
const RING_CAPACITY: usize = 256;
const MAILBOX_HIGH_WATER: usize = 512;

#[derive(Clone, Debug)]
enum Msg {
    /// To the producer: send `total` messages to `to`, in turns; with `critical_every`,
    /// every that many messages one is critical.
    Start {
        to: ActorId,
        total: u64,
        critical_every: Option<u64>,
    },
    /// The producer's next turn.
    Turn,
    /// To the consumer: one unit of work.
    Work,
}

struct Producer {
    to: Option<ActorId>,
    left: u64,
    critical_every: Option<u64>,
    /// Turns that found the shard backpressured.
    waited: Arc<AtomicU64>,
}

impl Actor<Msg> for Producer {
    fn receive(&mut self, ctx: &mut Context<'_, Msg>, message: Envelope<Msg>) {
        match message.payload {
            Msg::Start {
                to,
                total,
                critical_every,
            } => {
                self.to = Some(to);
                self.left = total;
                self.critical_every = critical_every;
            }
            Msg::Turn => {}
            Msg::Work => return,
        }
        let Some(to) = self.to else { return };
        let me = ctx.me();
        if ctx.backpressured() {
            self.waited.fetch_add(1, Ordering::Relaxed);
            ctx.send_at(ctx.now() + 20_000, Envelope::user(me, Msg::Turn))
                .unwrap();
            return;
        }
        for _ in 0..PER_TURN.min(self.left) {
            match self.critical_every {
                // A critical message blocks the consumer until its mailbox has run
                // down; what arrives meanwhile is held back.
                Some(every) if self.left.is_multiple_of(every) => {
                    ctx.send_critical(to, Msg::Work).unwrap();
                }
                _ => ctx.send(to, Msg::Work).unwrap(),
            }
            self.left -= 1;
        }
        if self.left > 0 {
            ctx.send(me, Msg::Turn).unwrap();
        }
    }
}

/// Spins about 2 µs per message: a tenth of what the producer can send.
struct Consumer(Arc<AtomicU64>);

impl Actor<Msg> for Consumer {
    fn receive(&mut self, _ctx: &mut Context<'_, Msg>, _message: Envelope<Msg>) {
        let until = clock::now() + 2_000;
        while clock::now() < until {
            std::hint::spin_loop();
        }
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs one producer on shard 0 against a consumer on `consumer_shard`; returns the
/// consumer shard's peak of mailboxes and held messages, the messages consumed, and the
/// producer's waits.
fn overload(consumer_shard: usize, total: u64, critical_every: Option<u64>) -> (u64, u64, u64) {
    let consumed = Arc::new(AtomicU64::new(0));
    let waited = Arc::new(AtomicU64::new(0));
    let (for_consumer, for_producer) = (consumed.clone(), waited.clone());
    let runtime = Runtime::builder()
        .shards(2)
        .ring_capacity(RING_CAPACITY)
        .mailbox_high_water(MAILBOX_HIGH_WATER)
        .operator(0, PRODUCER, move |_, _| {
            Box::new(Producer {
                to: None,
                left: 0,
                critical_every: None,
                waited: for_producer.clone(),
            }) as Box<dyn Actor<Msg>>
        })
        .operator(0, CONSUMER, move |_, _| {
            Box::new(Consumer(for_consumer.clone())) as Box<dyn Actor<Msg>>
        })
        .build()
        .unwrap();
    let on = |operator: u16, shard: usize| {
        (0..)
            .map(|partition| ActorId::new(0, operator, partition))
            .find(|&actor| runtime.home_shard(actor) == shard)
            .unwrap()
    };
    let producer = on(PRODUCER, 0);
    let consumer = on(CONSUMER, consumer_shard);
    runtime
        .ingress()
        .send(Envelope::user(
            producer,
            Msg::Start {
                to: consumer,
                total,
                critical_every,
            },
        ))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while consumed.load(Ordering::Relaxed) < total {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {total} consumed in 60 s",
            consumed.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = runtime.shutdown();
    (
        report.shards[consumer_shard].queued_peak,
        consumed.load(Ordering::Relaxed),
        waited.load(Ordering::Relaxed),
    )
}

#[test]
fn a_consumer_on_another_shard_pushes_back_through_the_rings() {
    let total = 50_000;
    let (peak, consumed, waited) = overload(1, total, None);
    assert_eq!(consumed, total);
    // The mark, plus one drain of the ring from shard 0.
    let bound = (MAILBOX_HIGH_WATER + RING_CAPACITY) as u64;
    assert!(peak <= bound, "mailbox peak {peak} past {bound}");
    assert!(waited > 0, "the producer never saw backpressure");
}

#[test]
fn a_consumer_on_the_producers_shard_pushes_back_through_its_mailboxes() {
    let total = 50_000;
    let (peak, consumed, waited) = overload(0, total, None);
    assert_eq!(consumed, total);
    // The mark, plus what one producer turn sends before it looks again.
    let bound = MAILBOX_HIGH_WATER as u64 + 2 * PER_TURN;
    assert!(peak <= bound, "mailbox peak {peak} past {bound}");
    assert!(waited > 0, "the producer never saw backpressure");
}

#[test]
fn a_blocked_consumer_counts_what_it_holds_back() {
    let total = 50_000;
    let (peak, consumed, waited) = overload(1, total, Some(500));
    assert_eq!(consumed, total);
    let bound = (MAILBOX_HIGH_WATER + RING_CAPACITY) as u64;
    assert!(
        peak <= bound,
        "mailboxes and held messages peaked at {peak}, past {bound}"
    );
    assert!(waited > 0, "the producer never saw backpressure");
}
