//! The sleep/wake handshake of one shard: a "sleeping" flag that senders check after
//! publishing, and the thread to unpark when it is set.
//!
//! Sender fast path: one compiler barrier and one load of a flag that only changes when
//! the receiver falls asleep, so the line stays shared in the sender's cache. The receiver
//! pays the ordering cost on its way to sleep (see `crate::fence`):
//!
//! 1. receiver: `prepare_sleep()` — set the flag, heavy barrier;
//! 2. receiver: look at every input once more; if anything is there, `cancel_sleep()`;
//!    otherwise `sleep(timeout)`;
//! 3. sender: publish, then `ring()` — light barrier, read the flag, and if it is set,
//!    take it (so that only one sender pays for the unpark) and unpark the receiver.
//!
//! Either the receiver's second look sees the message, or the sender sees the flag: a
//! wake-up is never lost. Thread parking keeps a token, so an unpark that lands before
//! the receiver actually parks makes the park return at once.

use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::sync::{heavy_barrier, light_barrier, park_timeout, AtomicBool, Ordering, Thread};

/// The sleep flag and thread handle of one shard.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use dirigo_runtime::mesh::{ring, Doorbell};
///
/// let (mut tx, mut rx) = ring::<u32>(8);
/// let bell = Arc::new(Doorbell::new(std::thread::current()));
/// let sender_bell = bell.clone();
/// let sender = std::thread::spawn(move || {
///     tx.try_push(7).unwrap();
///     sender_bell.ring(); // wakes the receiver only if it announced that it sleeps
/// });
/// let value = loop {
///     if let Some(value) = rx.try_pop() {
///         break value;
///     }
///     bell.prepare_sleep();
///     if rx.has_pending() {
///         bell.cancel_sleep();
///     } else {
///         bell.sleep(Duration::from_secs(1));
///     }
/// };
/// assert_eq!(value, 7);
/// sender.join().unwrap();
/// ```
pub struct Doorbell {
    sleeping: CachePadded<AtomicBool>,
    thread: Thread,
}

impl Doorbell {
    /// A doorbell that wakes `thread`, the only thread that may call the receiver-side
    /// methods.
    pub fn new(thread: Thread) -> Self {
        Self {
            sleeping: CachePadded::new(AtomicBool::new(false)),
            thread,
        }
    }

    /// Receiver: announces that it is about to sleep. Check every input once more after
    /// this, then call [`sleep`](Self::sleep) or [`cancel_sleep`](Self::cancel_sleep).
    pub fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::Relaxed);
        heavy_barrier();
    }

    /// Receiver: found work on its last look; stays awake.
    pub fn cancel_sleep(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Receiver: parks until a sender rings or `timeout` passes.
    pub fn sleep(&self, timeout: Duration) {
        park_timeout(timeout);
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Sender: call after publishing a message; wakes the receiver if it sleeps. Returns
    /// whether this call woke it.
    #[inline]
    pub fn ring(&self) -> bool {
        light_barrier();
        if !self.sleeping.load(Ordering::Relaxed) {
            return false;
        }
        self.wake()
    }

    #[cold]
    fn wake(&self) -> bool {
        if self.sleeping.swap(false, Ordering::AcqRel) {
            self.thread.unpark();
            true
        } else {
            false
        }
    }

    /// Whether the receiver has announced that it sleeps (a hint: it may wake any time).
    #[inline]
    pub fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::Relaxed)
    }
}
