//! Every example, built and run here with smaller inputs, and what it prints checked.

#[allow(dead_code)] // `main`: the example's own entry point
#[path = "../keyed_count.rs"]
mod keyed_count;

#[allow(dead_code)]
#[path = "../mergeable_lessees.rs"]
mod mergeable_lessees;

#[allow(dead_code)]
#[path = "../custom_policy.rs"]
mod custom_policy;

#[allow(dead_code)]
#[path = "../nexmark_latency.rs"]
mod nexmark_latency;

#[test]
fn the_keyed_count_counts_every_word_once() {
    let events = 100_000;
    let totals = keyed_count::run(events, 2);
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..events {
        *expected
            .entry(keyed_count::WORDS[keyed_count::word_of(i) as usize])
            .or_insert(0) += 1;
    }
    assert_eq!(totals, expected);
}

#[test]
fn a_lessee_leaves_the_totals_as_they_are() {
    let (records, keys) = (100_000, 8);
    let outcome = mergeable_lessees::run(records, keys);
    for key in 0..keys {
        let values: Vec<u64> = (0..records).filter(|i| i % keys == key).collect();
        let expected = (values.len() as u64, values.iter().sum());
        assert_eq!(outcome.totals.get(&key), Some(&expected), "key {key}");
    }
    assert_eq!(outcome.lessees, 1, "the lessee stays until retired");
    assert!(outcome.consolidations > 0, "its partial states were merged");
}

#[test]
fn the_custom_policy_sees_both_apps_and_both_finish() {
    let records = 20_000;
    let outcome = custom_policy::run(records);
    for (app, &(outputs, p99, seen)) in outcome.apps.iter().enumerate() {
        assert_eq!(outputs, records, "app {app}");
        assert!(p99 > 0, "app {app}");
        assert!(seen > 0, "app {app}: the policy saw its messages");
    }
}

#[test]
fn the_nexmark_example_reports_its_latency() {
    let report = nexmark_latency::run(20_000, 50_000.0);
    assert!(report.outputs > 0);
    let values: Vec<u64> = report.percentiles.iter().map(|&(_, ns)| ns).collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
    assert!(values[0] > 0);
}
