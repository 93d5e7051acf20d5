//! Micro benchmarks of the mesh's hot path: ring push/pop on one thread, and dispatching
//! a message from one actor to another on the same shard.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dirigo_runtime::{mesh, Actor, ActorId, Context, Envelope, Runtime};

fn ring_push_pop(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));
    group.bench_function("push_pop_u64", |b| {
        let (mut tx, mut rx) = mesh::ring::<u64>(1024);
        let mut i = 0u64;
        b.iter(|| {
            i = i.wrapping_add(1);
            tx.try_push(std::hint::black_box(i)).unwrap();
            std::hint::black_box(rx.try_pop().unwrap());
        });
    });
    group.bench_function("push_pop_envelope", |b| {
        let (mut tx, mut rx) = mesh::ring::<Envelope<[u64; 4]>>(1024);
        let envelope = Envelope::user(ActorId::new(0, 0, 0), [1, 2, 3, 4]);
        b.iter(|| {
            tx.try_push(std::hint::black_box(envelope.clone())).unwrap();
            std::hint::black_box(rx.try_pop().unwrap());
        });
    });
    group.throughput(Throughput::Elements(256));
    group.bench_function("push_256_drain_envelope", |b| {
        let (mut tx, mut rx) = mesh::ring::<Envelope<[u64; 4]>>(1024);
        let envelope = Envelope::user(ActorId::new(0, 0, 0), [1, 2, 3, 4]);
        b.iter_batched(
            || envelope.clone(),
            |envelope| {
                for _ in 0..256 {
                    tx.try_push(envelope.clone()).unwrap();
                }
                rx.drain(|value| {
                    std::hint::black_box(value);
                })
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

enum Bounce {
    Start { rounds: u64, peer: ActorId },
    Ball { left: u64 },
}

struct Player {
    done: flume::Sender<()>,
}

impl Actor<Bounce> for Player {
    fn receive(&mut self, ctx: &mut Context<'_, Bounce>, message: Envelope<Bounce>) {
        match message.payload {
            Bounce::Start { rounds, peer } => {
                ctx.send(peer, Bounce::Ball { left: rounds }).unwrap();
            }
            Bounce::Ball { left: 0 } => self.done.send(()).unwrap(),
            Bounce::Ball { left } => {
                let peer = message.source.expect("balls come from players");
                ctx.send(peer, Bounce::Ball { left: left - 1 }).unwrap();
            }
        }
    }
}

fn same_shard_dispatch(c: &mut Criterion) {
    let (done_tx, done_rx) = flume::unbounded();
    let runtime = Runtime::<Bounce>::builder()
        .shards(1)
        .spin_budget(Duration::from_secs(5))
        .operator(0, 0, move |_, _| {
            Box::new(Player {
                done: done_tx.clone(),
            }) as Box<dyn Actor<Bounce>>
        })
        .build()
        .expect("runtime starts");
    let ingress = runtime.ingress();
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(1));
    group.bench_function("same_shard_actor_to_actor", |b| {
        b.iter_custom(|messages| {
            let start = Instant::now();
            ingress
                .send_to(
                    ActorId::new(0, 0, 0),
                    Bounce::Start {
                        rounds: messages,
                        peer: ActorId::new(0, 0, 1),
                    },
                )
                .unwrap();
            done_rx.recv().unwrap();
            start.elapsed()
        });
    });
    group.finish();
    drop(ingress);
    runtime.shutdown();
}

criterion_group!(benches, ring_push_pop, same_shard_dispatch);
criterion_main!(benches);
