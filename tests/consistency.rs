//! The runtime and the operators' partitioning together: for any input, any shard count
//! (including more shards than cores), any ring size and with deactivations mid-run, the
//! keyed state equals a sequential run — every record applied exactly once, and each
//! key's records in their input order.

use std::time::Duration;

use dirigo_tests::{run_pipeline, sequential, PipelineRun};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sharded_keyed_state_equals_a_sequential_run(
        records in prop::collection::vec((0u64..40, -1000i64..1000), 0..3000),
        shards in 1usize..=6,
        partitions in 1u32..=12,
        ring_capacity in prop::sample::select(vec![2usize, 8, 1024]),
        deactivate in any::<bool>(),
    ) {
        let run = PipelineRun {
            shards,
            partitions,
            ring_capacity,
            idle_deactivation: deactivate.then(|| Duration::from_millis(1)),
        };
        prop_assert_eq!(run_pipeline(&records, &run), sequential(&records));
    }
}

#[test]
fn a_large_run_on_more_shards_than_cores() {
    let records: Vec<(u64, i64)> = (0..200_000u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) % 5_000, (i % 97) as i64 - 48))
        .collect();
    let run = PipelineRun {
        shards: 8,
        partitions: 64,
        ring_capacity: 16,
        idle_deactivation: None,
    };
    assert_eq!(run_pipeline(&records, &run), sequential(&records));
}
