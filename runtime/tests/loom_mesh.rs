//! Loom models of the mesh's two lock-free protocols, compiled from the very source files
//! the runtime uses (`src/mesh/ring.rs`, `src/mesh/doorbell.rs`) against loom's atomics,
//! cells and threads:
//!
//! - the ring hands every value over exactly once, in order, without a data race on the
//!   slots, across wrap-around and full/empty boundaries, with the producer's look-ahead
//!   and the consumer's deferred release;
//! - the doorbell never loses a wake-up: a receiver that goes to sleep while a sender
//!   publishes is always woken (loom reports a deadlock otherwise).
//!
//! In these models the asymmetric barrier pair is two sequentially consistent fences;
//! `membarrier` provides at least that ordering (see `src/fence.rs`).

#![allow(dead_code, missing_docs)]

/// The names `crate::sync` provides in the runtime, taken from loom.
mod sync {
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::thread::Thread;

    pub(crate) use loom::cell::UnsafeCell;

    pub(crate) fn light_barrier() {
        loom::sync::atomic::fence(Ordering::SeqCst);
    }

    pub(crate) fn heavy_barrier() {
        loom::sync::atomic::fence(Ordering::SeqCst);
    }

    pub(crate) fn park_timeout(_timeout: std::time::Duration) {
        // An untimed park: if no sender rings, loom sees every thread blocked and fails.
        loom::thread::park();
    }
}

#[path = "../src/mesh/doorbell.rs"]
mod doorbell;
#[path = "../src/mesh/ring.rs"]
mod ring;

use std::time::Duration;

use doorbell::Doorbell;

fn bounded_model(body: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(body);
}

#[test]
fn ring_hands_over_each_value_once_in_order() {
    bounded_model(|| {
        let (mut tx, mut rx) = ring::ring::<u32>(2);
        let producer = loom::thread::spawn(move || {
            let mut next = 0;
            while next < 3 {
                match tx.try_push(next) {
                    Ok(()) => next += 1,
                    Err(_) => loom::thread::yield_now(),
                }
            }
        });
        let mut expected = 0;
        while expected < 3 {
            match rx.try_pop() {
                Some(value) => {
                    assert_eq!(value, expected);
                    expected += 1;
                }
                None => loom::thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(rx.try_pop(), None);
    });
}

#[test]
fn ring_look_ahead_never_overwrites_an_unread_slot() {
    // Capacity 8: the producer probes two slots ahead, so it writes some slots without
    // reading their own sequence. Values carry heap data, so a slot written before the
    // consumer finished with it would show up as a race on the cell or a wrong value.
    bounded_model(|| {
        let (mut tx, mut rx) = ring::ring::<Box<u32>>(8);
        let total = 11;
        let producer = loom::thread::spawn(move || {
            let mut next = 0;
            while next < total {
                match tx.try_push(Box::new(next)) {
                    Ok(()) => next += 1,
                    Err(_) => loom::thread::yield_now(),
                }
            }
        });
        let mut expected = 0;
        while expected < total {
            match rx.try_pop() {
                Some(value) => {
                    assert_eq!(*value, expected);
                    expected += 1;
                    // Hand slots back in pairs, as a shard does once per turn.
                    if expected % 2 == 0 {
                        rx.release();
                    }
                }
                None => {
                    rx.release();
                    loom::thread::yield_now();
                }
            }
        }
        producer.join().unwrap();
    });
}

#[test]
fn ring_drops_what_was_never_taken() {
    bounded_model(|| {
        let (mut tx, rx) = ring::ring::<loom::sync::Arc<()>>(2);
        let value = loom::sync::Arc::new(());
        let producer = {
            let value = value.clone();
            loom::thread::spawn(move || {
                let _ = tx.try_push(value);
            })
        };
        drop(rx);
        producer.join().unwrap();
        assert_eq!(loom::sync::Arc::strong_count(&value), 1);
    });
}

#[test]
fn doorbell_never_loses_a_wake_up() {
    bounded_model(|| {
        let (mut tx, mut rx) = ring::ring::<u32>(2);
        let doorbell = loom::sync::Arc::new(Doorbell::new(loom::thread::current()));
        let sender_bell = doorbell.clone();
        let sender = loom::thread::spawn(move || {
            for value in 0..2 {
                while tx.try_push(value).is_err() {
                    loom::thread::yield_now();
                }
                sender_bell.ring();
            }
        });
        let mut received = 0;
        while received < 2 {
            if rx.try_pop().is_some() {
                received += 1;
                continue;
            }
            doorbell.prepare_sleep();
            if rx.has_pending() {
                doorbell.cancel_sleep();
                continue;
            }
            doorbell.sleep(Duration::from_millis(1));
        }
        // No `join`: a stale unpark (a sender that took the flag just as the receiver
        // cancelled its sleep) trips loom's join bookkeeping, though std's join is not
        // affected; loom runs the sender to completion anyway.
        drop(sender);
    });
}
