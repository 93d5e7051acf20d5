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

/// The partition among `partitions` that a key hash goes to: the hash scaled onto
/// `0..partitions` (its high bits decide, so no division).
#[inline]
pub(crate) fn partition_of_hash(hash: u64, partitions: PartitionId) -> PartitionId {
    ((u128::from(hash) * u128::from(partitions)) >> 64) as PartitionId
}

/// The routing rule of one edge for one upstream partition: which downstream partition
/// receives the next record. Both [`Partitioner`] and the operators' output batching use
/// it; it is small and copied into each edge, so routing a record costs a match and, for
/// key-hash edges, one hash.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route {
    partitioning: Partitioning,
    partitions: PartitionId,
    /// The partition round-robin sends to next.
    next: PartitionId,
}

impl Route {
    /// An edge into an operator with `partitions` partitions (at least one); round-robin
    /// starts at `first_turn`.
    pub(crate) fn new(
        partitioning: Partitioning,
        partitions: PartitionId,
        first_turn: PartitionId,
    ) -> Self {
        let partitions = partitions.max(1);
        Self {
            partitioning,
            partitions,
            next: first_turn % partitions,
        }
    }

    /// How the edge spreads records.
    #[inline]
    pub(crate) fn partitioning(&self) -> Partitioning {
        self.partitioning
    }

    /// How many partitions the downstream operator has.
    #[inline]
    pub(crate) fn partitions(&self) -> PartitionId {
        self.partitions
    }

    /// The partition that receives the next record: `forward` on a forward edge (the
    /// sender's index modulo [`partitions`](Self::partitions), which the caller computes
    /// once), the partition `hash()` scales to on a key-hash edge, the next in turn on a
    /// round-robin edge. A broadcast edge sends to every partition; this gives the first.
    #[inline]
    pub(crate) fn target(
        &mut self,
        forward: PartitionId,
        hash: impl FnOnce() -> u64,
    ) -> PartitionId {
        match self.partitioning {
            Partitioning::Forward => forward,
            Partitioning::KeyHash => partition_of_hash(hash(), self.partitions),
            Partitioning::Broadcast => 0,
            Partitioning::RoundRobin => {
                let partition = self.next;
                self.next = if self.next + 1 == self.partitions {
                    0
                } else {
                    self.next + 1
                };
                partition
            }
        }
    }
}

/// The partitioning of one edge, with the state round-robin needs.
///
/// ```
/// use dirigo_operators::{Partitioner, Partitioning};
///
/// let mut edge = Partitioner::new(Partitioning::KeyHash, 8);
/// let first: Vec<u32> = edge.targets(0, &"apple").collect();
/// let again: Vec<u32> = edge.targets(0, &"apple").collect();
/// assert_eq!(first, again);
/// assert_eq!(first.len(), 1);
///
/// let mut everyone = Partitioner::new(Partitioning::Broadcast, 3);
/// assert_eq!(everyone.targets(0, &()).collect::<Vec<_>>(), [0, 1, 2]);
/// ```
#[derive(Clone, Debug)]
pub struct Partitioner {
    route: Route,
}

impl Partitioner {
    /// An edge into an operator with `partitions` partitions (at least one).
    pub fn new(partitioning: Partitioning, partitions: PartitionId) -> Self {
        Self {
            route: Route::new(partitioning, partitions, 0),
        }
    }

    /// The partitions that receive a record with `key`, sent by upstream partition
    /// `from`.
    pub fn targets<K: Hash + ?Sized>(
        &mut self,
        from: PartitionId,
        key: &K,
    ) -> impl Iterator<Item = PartitionId> {
        let n = self.route.partitions();
        let count = if self.route.partitioning() == Partitioning::Broadcast {
            n
        } else {
            1
        };
        let first = self.route.target(from % n, || key_hash(key));
        (first..first + count).map(move |p| p % n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_robin_takes_turns() {
        let mut edge = Partitioner::new(Partitioning::RoundRobin, 3);
        let seen: Vec<u32> = (0..6)
            .flat_map(|_| edge.targets(0, &0).collect::<Vec<_>>())
            .collect();
        assert_eq!(seen, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn forward_keeps_the_partition_index() {
        let mut edge = Partitioner::new(Partitioning::Forward, 4);
        assert_eq!(edge.targets(6, &"x").collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn key_hash_is_pinned() {
        // A change here moves every key to another partition: keep it stable.
        assert_eq!(key_hash(&0u64), 0);
        assert_eq!(key_hash(&1u64), 0x26bc_ca20_5f50_4d18);
        assert_eq!(key_hash(&42u64), 0x89b0_273a_b050_c15f);
        assert_eq!(key_hash(&7u32), 0x72ca_03d2_02af_0032);
        assert_eq!(key_hash(&-1i64), 0x9bfa_6879_e927_a93d);
        assert_eq!(key_hash("apple"), 0x01ae_fb18_4d44_2057);
        assert_eq!(key_hash(&(3u64, "x")), 0xb87c_01f1_0ae1_594b);
        // And so are the partitions keys go to.
        let mut edge = Partitioner::new(Partitioning::KeyHash, 8);
        let targets: Vec<u32> = [&1u64, &42]
            .into_iter()
            .flat_map(|key| edge.targets(0, key).collect::<Vec<_>>())
            .collect();
        assert_eq!(targets, [1, 4]);
        assert_eq!(edge.targets(0, "apple").collect::<Vec<_>>(), [0]);
    }

    proptest! {
        #[test]
        fn every_target_is_a_valid_partition(partitions in 1u32..64, key in any::<u64>(), from in any::<u32>()) {
            for partitioning in [Partitioning::Forward, Partitioning::KeyHash, Partitioning::Broadcast, Partitioning::RoundRobin] {
                let mut edge = Partitioner::new(partitioning, partitions);
                let targets: Vec<u32> = edge.targets(from, &key).collect();
                prop_assert!(targets.iter().all(|&p| p < partitions));
                let expected = if partitioning == Partitioning::Broadcast { partitions as usize } else { 1 };
                prop_assert_eq!(targets.len(), expected);
            }
        }
    }
}
