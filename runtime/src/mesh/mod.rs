//! The mesh: lock-free links between shards.
//!
//! Every ordered pair of shards `(from, to)` has its own bounded SPSC [`ring`], written
//! only by `from`'s thread and read only by `to`'s, so no two threads ever write the same
//! cache line on the hot path. Every shard also has a [`Doorbell`]: the flag that a sender
//! checks after publishing, to wake the shard only when it sleeps. Traffic from threads
//! outside the runtime arrives through a flume channel per shard (see `crate::runtime`).

mod doorbell;
mod ring;

pub use doorbell::Doorbell;
pub use ring::{ring, Consumer, Producer};

/// One shard's ends of the mesh: a producer towards every other shard and a consumer from
/// every other shard.
pub(crate) struct ShardLinks<T> {
    /// Indexed by destination shard; `None` at the shard's own index.
    pub(crate) outgoing: Vec<Option<Producer<T>>>,
    /// `(source shard, consumer)` for every other shard.
    pub(crate) incoming: Vec<(usize, Consumer<T>)>,
}

/// Builds the N² rings of a mesh of `shards` shards, each holding `capacity` values.
pub(crate) fn build_links<T>(shards: usize, capacity: usize) -> Vec<ShardLinks<T>> {
    let mut links: Vec<ShardLinks<T>> = (0..shards)
        .map(|_| ShardLinks {
            outgoing: (0..shards).map(|_| None).collect(),
            incoming: Vec::with_capacity(shards.saturating_sub(1)),
        })
        .collect();
    for from in 0..shards {
        for to in 0..shards {
            if from == to {
                continue;
            }
            let (producer, consumer) = ring(capacity);
            links[from].outgoing[to] = Some(producer);
            links[to].incoming.push((from, consumer));
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ordered_pair_has_its_own_ring() {
        let mut links = build_links::<(usize, usize)>(3, 4);
        for (from, shard) in links.iter_mut().enumerate() {
            for (to, producer) in shard.outgoing.iter_mut().enumerate() {
                let producer = producer.as_mut();
                assert_eq!(producer.is_some(), from != to);
                if let Some(producer) = producer {
                    producer.try_push((from, to)).unwrap();
                }
            }
        }
        for (to, shard) in links.iter_mut().enumerate() {
            assert_eq!(shard.incoming.len(), 2);
            for (from, consumer) in &mut shard.incoming {
                assert_eq!(consumer.try_pop(), Some((*from, to)));
            }
        }
    }
}

#[cfg(test)]
mod ring_tests {
    use super::*;

    #[test]
    fn fills_then_refuses_then_frees() {
        let (mut tx, mut rx) = ring::<String>(3);
        assert_eq!(tx.capacity(), 4);
        for i in 0..4 {
            tx.try_push(i.to_string()).unwrap();
        }
        assert!(tx.is_full());
        assert_eq!(tx.try_push("x".into()), Err("x".into()));
        assert_eq!(rx.try_pop().as_deref(), Some("0"));
        // Read but not yet released: the producer still sees the slot taken.
        assert!(tx.is_full());
        rx.release();
        tx.try_push("4".into()).unwrap();
        let mut seen = Vec::new();
        assert_eq!(rx.drain(|v| seen.push(v)), 4);
        assert_eq!(seen, ["1", "2", "3", "4"]);
        assert!(!rx.has_pending());
    }

    #[test]
    fn a_drain_takes_at_most_one_lap_while_the_producer_keeps_pace() {
        let (mut tx, mut rx) = ring::<u32>(8);
        for i in 0..8 {
            tx.try_push(i).unwrap();
        }
        let mut next = 8;
        let mut seen = Vec::new();
        let taken = rx.drain(|v| {
            seen.push(v);
            // Slots come back to the producer during the drain; it refills them at once.
            while tx.try_push(next).is_ok() {
                next += 1;
            }
        });
        assert_eq!(taken, 8);
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
        assert!(next > 8, "the drain handed slots back as it went");
        assert!(
            rx.has_pending(),
            "what the producer refilled waits for the next drain"
        );
    }

    #[test]
    fn drops_values_left_in_the_ring() {
        let marker = std::sync::Arc::new(());
        let (mut tx, mut rx) = ring(4);
        for _ in 0..3 {
            tx.try_push(marker.clone()).unwrap();
        }
        drop(rx.try_pop());
        drop((tx, rx));
        assert_eq!(std::sync::Arc::strong_count(&marker), 1);
    }

    #[test]
    fn crosses_threads_in_order() {
        let (mut tx, mut rx) = ring::<u64>(8);
        let total = 100_000u64;
        let producer = std::thread::spawn(move || {
            let mut next = 0;
            while next < total {
                if tx.try_push(next).is_ok() {
                    next += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let mut expected = 0;
        while expected < total {
            if let Some(v) = rx.try_pop() {
                assert_eq!(v, expected);
                expected += 1;
            } else {
                std::thread::yield_now();
            }
        }
        producer.join().unwrap();
    }
}
