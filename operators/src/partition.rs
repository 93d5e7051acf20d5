//! Edge partitioning: which partitions of the downstream operator receive a record.
//!
//! Key hashes are stable (the same in every run and process), so a key always reaches the
//! same partition, and so the same virtual actor and its state.

use std::hash::{Hash, Hasher};

use dirigo_runtime::PartitionId;

/// How an edge spreads records over the partitions of its downstream operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitioning {
    /// Partition `i` upstream sends to partition `i % n` downstream.
    Forward,
    /// A record goes to the partition its key hashes to.
    KeyHash,
    /// Every record goes to every partition.
    Broadcast,
    /// Records go to the partitions in turn.
    RoundRobin,
}

/// A stable 64-bit hash of `key`.
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    key.hash(&mut hasher);
    // FxHash alone leaves low bits poorly mixed for small integers; finish with
    // splitmix64's finalizer.
    let mut x = hasher.finish();
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The partitioning of one edge, with the state round-robin needs.
///
/// ```
/// use dirigo_operators::{Partitioning, Router};
///
/// let mut edge = Router::new(Partitioning::KeyHash, 8);
/// let first: Vec<u32> = edge.targets(0, &"apple").collect();
/// let again: Vec<u32> = edge.targets(0, &"apple").collect();
/// assert_eq!(first, again);
/// assert_eq!(first.len(), 1);
///
/// let mut everyone = Router::new(Partitioning::Broadcast, 3);
/// assert_eq!(everyone.targets(0, &()).collect::<Vec<_>>(), [0, 1, 2]);
/// ```
#[derive(Clone, Debug)]
pub struct Router {
    partitioning: Partitioning,
    partitions: PartitionId,
    next: PartitionId,
}

impl Router {
    /// An edge into an operator with `partitions` partitions (at least one).
    pub fn new(partitioning: Partitioning, partitions: PartitionId) -> Self {
        Self {
            partitioning,
            partitions: partitions.max(1),
            next: 0,
        }
    }

    /// The partitions that receive a record with `key`, sent by upstream partition
    /// `from`.
    pub fn targets<K: Hash + ?Sized>(
        &mut self,
        from: PartitionId,
        key: &K,
    ) -> impl Iterator<Item = PartitionId> {
        let n = self.partitions;
        let (first, count) = match self.partitioning {
            Partitioning::Forward => (from % n, 1),
            Partitioning::KeyHash => (
                ((u128::from(key_hash(key)) * u128::from(n)) >> 64) as PartitionId,
                1,
            ),
            Partitioning::Broadcast => (0, n),
            Partitioning::RoundRobin => {
                let chosen = self.next;
                self.next = (self.next + 1) % n;
                (chosen, 1)
            }
        };
        (first..first + count).map(move |p| p % n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_robin_takes_turns() {
        let mut edge = Router::new(Partitioning::RoundRobin, 3);
        let seen: Vec<u32> = (0..6)
            .flat_map(|_| edge.targets(0, &0).collect::<Vec<_>>())
            .collect();
        assert_eq!(seen, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn forward_keeps_the_partition_index() {
        let mut edge = Router::new(Partitioning::Forward, 4);
        assert_eq!(edge.targets(6, &"x").collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn key_hash_is_pinned() {
        // A change here moves every key to another partition: keep it stable.
        assert_eq!(key_hash(&42u64), key_hash(&42u64));
        assert_ne!(key_hash(&1u64), key_hash(&2u64));
    }

    proptest! {
        #[test]
        fn every_target_is_a_valid_partition(partitions in 1u32..64, key in any::<u64>(), from in any::<u32>()) {
            for partitioning in [Partitioning::Forward, Partitioning::KeyHash, Partitioning::Broadcast, Partitioning::RoundRobin] {
                let mut edge = Router::new(partitioning, partitions);
                let targets: Vec<u32> = edge.targets(from, &key).collect();
                prop_assert!(targets.iter().all(|&p| p < partitions));
                let expected = if partitioning == Partitioning::Broadcast { partitions as usize } else { 1 };
                prop_assert_eq!(targets.len(), expected);
            }
        }
    }
}
