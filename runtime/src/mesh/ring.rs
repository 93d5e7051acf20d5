//! A bounded single-producer single-consumer ring, one per ordered pair of shards.
//!
//! Each slot carries its own sequence number next to the value (a FastForward-style
//! ring): the consumer learns that a slot is full by reading the slot itself, and the
//! producer learns that it is free the same way. There are no shared head or tail
//! indices, so one message crossing cores moves one slot's cache line and nothing else —
//! the cost of the hardware floor. Slots are padded to their own cache lines so that a
//! producer filling slot `k + 1` never contends with a consumer reading slot `k`.
//!
//! Sequence protocol, for a ring of capacity `cap` (a power of two, at least 2):
//! slot `i` starts with `seq = i`. The producer at position `p` may write slot
//! `p % cap` when `seq == p`, then publishes `seq = p + 1` (release). The consumer at
//! position `c` may read slot `c % cap` when `seq == c + 1` (acquire), then frees it with
//! `seq = c + cap` (release), which is exactly what the producer waits for one lap later.
//!
//! The producer does not read a slot's sequence before every write: that read would be a
//! cache miss on the critical path (the consumer wrote the line when it freed the slot).
//! Instead it probes a slot a stretch ahead: since the consumer frees slots in order, and
//! its release store on the probed slot comes after its frees of all earlier slots, one
//! acquire load there proves the whole stretch free. Writes into a known-free stretch are
//! stores only, which the store buffer absorbs — so a message crossing cores costs what a
//! plain cache-line ping costs.

use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::sync::{Arc, AtomicUsize, Ordering, UnsafeCell};

struct Slot<T> {
    seq: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

struct Ring<T> {
    slots: Box<[CachePadded<Slot<T>>]>,
    mask: usize,
}

// SAFETY: the ring hands each value from exactly one producer thread to exactly one
// consumer thread; a slot's value is only touched by the side that the slot's sequence
// number (acquire/release) currently grants it to. So sharing the ring is sound whenever
// the values themselves may be sent between threads.
unsafe impl<T: Send> Sync for Ring<T> {}
// SAFETY: see the `Sync` impl; the ring owns its values.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        for (index, slot) in self.slots.iter().enumerate() {
            let seq = slot.seq.load(Ordering::Acquire);
            // A slot holds a value iff its sequence is one past a producer position
            // congruent to its index (see the module doc); `cap >= 2` keeps "free" and
            // "full" distinct modulo `cap`.
            if seq.wrapping_sub(index) & self.mask == 1 {
                // SAFETY: we have `&mut self`, so neither handle exists any more, and the
                // sequence says this slot was published and never consumed.
                slot.value
                    .with_mut(|value| unsafe { (*value).assume_init_drop() });
            }
        }
    }
}

/// Creates a ring holding at most `capacity` values (rounded up to a power of two, at
/// least 2) and returns its two ends.
///
/// ```
/// use dirigo_runtime::mesh::ring;
///
/// let (mut tx, mut rx) = ring::<u32>(4);
/// assert!(tx.try_push(7).is_ok());
/// assert_eq!(rx.try_pop(), Some(7));
/// assert_eq!(rx.try_pop(), None);
/// ```
pub fn ring<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity.max(2).next_power_of_two();
    let slots = (0..capacity)
        .map(|index| {
            CachePadded::new(Slot {
                seq: AtomicUsize::new(index),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
        })
        .collect();
    let ring = Arc::new(Ring {
        slots,
        mask: capacity - 1,
    });
    (
        Producer {
            ring: ring.clone(),
            position: 0,
            free_until: 0,
        },
        Consumer {
            ring,
            position: 0,
            released: 0,
        },
    )
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Slots read but not released still look full; the ring's own drop must not drop
        // their (moved-out) values again.
        self.release();
    }
}

/// The sending end of a [`ring`]; owned by exactly one thread at a time.
///
/// Aligned to 128 bytes (two cache lines, for the adjacent-line prefetcher) like the
/// consumer: the handles of all shards are allocated together when the mesh is built, and
/// a producer's position sharing a line with another shard's consumer position made every
/// push and pop on the two shards invalidate each other's line (a round trip went from
/// ~500 to ~800 ns when the allocator packed them together).
#[repr(align(128))]
pub struct Producer<T> {
    ring: Arc<Ring<T>>,
    position: usize,
    /// Every position below this one is known to be free.
    free_until: usize,
}

impl<T> Producer<T> {
    /// How far ahead the producer probes for free slots: a quarter lap.
    #[inline]
    fn stretch(&self) -> usize {
        (self.ring.mask + 1) / 4
    }

    /// Tries to learn that the slot at `position` is free; extends `free_until`.
    #[inline]
    fn find_free(&mut self) -> bool {
        let stretch = self.stretch();
        if stretch > 1 {
            let ahead = self.position.wrapping_add(stretch - 1);
            let slot = &self.ring.slots[ahead & self.ring.mask];
            if slot.seq.load(Ordering::Acquire) == ahead {
                self.free_until = ahead.wrapping_add(1);
                return true;
            }
        }
        let slot = &self.ring.slots[self.position & self.ring.mask];
        if slot.seq.load(Ordering::Acquire) == self.position {
            self.free_until = self.position.wrapping_add(1);
            return true;
        }
        false
    }

    /// Appends `value`, or gives it back when the ring is full.
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<(), T> {
        if self.position == self.free_until && !self.find_free() {
            return Err(value);
        }
        let slot = &self.ring.slots[self.position & self.ring.mask];
        // SAFETY: `position < free_until`, so an acquire load of this slot's sequence, or
        // of a later slot's (the consumer frees in order), saw the consumer's free of this
        // slot: its last read of the old value happened-before this write, and it will
        // not touch the slot again until we publish `position + 1`. We are the only
        // producer.
        slot.value.with_mut(|cell| unsafe {
            (*cell).write(value);
        });
        slot.seq
            .store(self.position.wrapping_add(1), Ordering::Release);
        self.position = self.position.wrapping_add(1);
        Ok(())
    }

    /// Whether the next push would fail right now.
    #[inline]
    pub fn is_full(&self) -> bool {
        if self.position != self.free_until {
            return false;
        }
        let slot = &self.ring.slots[self.position & self.ring.mask];
        slot.seq.load(Ordering::Acquire) != self.position
    }

    /// How many values the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.ring.mask + 1
    }
}

/// The receiving end of a [`ring`]; owned by exactly one thread at a time.
///
/// Aligned to 128 bytes, for the reason given at [`Producer`].
#[repr(align(128))]
pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
    position: usize,
    /// Slots below `position` but at or above this one were read and not yet handed back
    /// to the producer (see [`Consumer::release`]).
    released: usize,
}

impl<T> Consumer<T> {
    /// Takes the oldest value, if any. The slot goes back to the producer at the next
    /// [`release`](Self::release) (or by itself once a quarter of the ring waits).
    #[inline]
    pub fn try_pop(&mut self) -> Option<T> {
        let slot = &self.ring.slots[self.position & self.ring.mask];
        if slot.seq.load(Ordering::Acquire) != self.position.wrapping_add(1) {
            return None;
        }
        // SAFETY: `seq == position + 1` means the producer published this slot (release
        // store happened-before our acquire load) and will not touch it again until we
        // release it; we are the only consumer, and we read each value exactly once
        // (`position` moves past it now).
        let value = slot
            .value
            .with(|cell| unsafe { (*cell).assume_init_read() });
        self.position = self.position.wrapping_add(1);
        if self.position.wrapping_sub(self.released) > (self.ring.mask + 1) / 4 {
            self.release();
        }
        Some(value)
    }

    /// Hands every slot read so far back to the producer.
    ///
    /// Freeing a slot is a store to a line the producer shares, which needs a cross-core
    /// ownership change. On x86 stores leave in program order, so a free issued right
    /// after a read would hold back every store behind it — such as the reply the shard
    /// is about to publish in another ring. Shards therefore release once per turn, after
    /// their own messages are out.
    #[inline]
    pub fn release(&mut self) {
        let capacity = self.ring.mask + 1;
        while self.released != self.position {
            let slot = &self.ring.slots[self.released & self.ring.mask];
            slot.seq
                .store(self.released.wrapping_add(capacity), Ordering::Release);
            self.released = self.released.wrapping_add(1);
        }
    }

    /// Whether a value is ready to be taken.
    #[inline]
    pub fn has_pending(&self) -> bool {
        let slot = &self.ring.slots[self.position & self.ring.mask];
        slot.seq.load(Ordering::Acquire) == self.position.wrapping_add(1)
    }

    /// Takes the values that are ready now, oldest first, handing each to `sink`, but at
    /// most one ring's capacity: slots go back to the producer as the drain goes (see
    /// [`try_pop`](Self::try_pop)), so a producer that keeps pace would otherwise keep
    /// the consumer here without end, and whatever the consumer buffers would grow with
    /// it. Returns how many it took.
    #[inline]
    pub fn drain(&mut self, mut sink: impl FnMut(T)) -> usize {
        let mut taken = 0;
        while taken <= self.ring.mask {
            let Some(value) = self.try_pop() else { break };
            sink(value);
            taken += 1;
        }
        taken
    }
}
