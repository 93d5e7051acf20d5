//! The operator rows of `dirigo bench consolidate`: merging the partial state of a real
//! operator into its lessor, the way the operator does it, against the way operators
//! did it before — deserializing the whole archive first.
//!
//! `window_count`: the state is a [`WindowState`] of per-key counts in one open tumbling
//! window (integer keys, `u64` counts), the state every window operator keeps. The
//! lessor holds [`ConsolidateConfig::lessor_keys_per_partial_key`] times as many keys as
//! the partial, and [`ConsolidateConfig::new_key_percent`] of the partial's keys are new
//! to it, as in the `KeyCounts` rows. The partial is built by adding its keys in random
//! order, as a lessee's records would, so its archive lists them in its hash table's
//! order. Timed, in alternating rounds, each merge into a fresh copy of the lessor state
//! (made before the clock starts, into a state kept from round to round):
//!
//! | key | what |
//! | --- | --- |
//! | `in_place_ns` | [`WindowState::merge`], what the window operators run: the archive read in place, window by window, each key and count converted as it is folded in |
//! | `deserialize_first_ns` | how the operators merged before: the partial archived as one vector of `(end, key, start, count)` entries, deserialized whole into an owned vector, then each entry checked against the frontier and folded in with [`WindowState::add`] |
//! | `deserialize_same_layout_ns` | today's archive deserialized whole into an owned [`PartialWindows`], then each entry folded in with [`WindowState::add`]: what reading in place saves on the same layout |
//!
//! `bytes` is the size of the archive the operator sends ([`WindowState::snapshot`]);
//! the previous layout's archive of the same state is `deserialize_first_bytes`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use dirigo_operators::window::{PartialWindows, Window, WindowState, Windows};
use dirigo_operators::Time;
use dirigo_runtime::snapshot::Snapshot;
use serde::Serialize;

use super::{distinct_keys, median, ConsolidateConfig, SplitMix64};

/// One operator at one size; JSON keys as named.
#[derive(Clone, Debug, Serialize)]
pub struct OperatorResult {
    /// The operator whose state is merged (`window_count`).
    pub operator: String,
    /// Bytes of the partial state's archive, as the operator sends it.
    pub bytes: usize,
    /// Bytes of the same state in the previous layout (one vector of entries).
    pub deserialize_first_bytes: usize,
    /// Keys in the partial state.
    pub partial_keys: usize,
    /// Of those, keys the lessor did not hold.
    pub new_keys: usize,
    /// Keys in the lessor state before the merge.
    pub lessor_keys: usize,
    /// Median time of the operator's merge, read in place, in nanoseconds.
    pub in_place_ns: f64,
    /// Median time of the previous merge (deserialize the whole archive, then fold each
    /// entry), in nanoseconds.
    pub deserialize_first_ns: f64,
    /// `in_place_ns / deserialize_first_ns`.
    pub ratio: f64,
    /// Median time of deserializing today's archive whole, then folding each entry, in
    /// nanoseconds.
    pub deserialize_same_layout_ns: f64,
    /// `in_place_ns / deserialize_same_layout_ns`.
    pub ratio_same_layout: f64,
    /// Merges timed together per round (each into its own copy).
    pub batch: usize,
}

/// The window every key's count sits in.
const WINDOW: Window = Window {
    start: 0,
    end: 10_000,
};

/// The counts' merge, as `window_count` declares it (behind the same dynamic call).
type CountMerge = Arc<dyn Fn(&mut u64, u64) + Send + Sync>;

/// The archived bytes of a partial window state with no key, and per key (a key and a
/// count).
const ROOT_BYTES: usize = 48;
const BYTES_PER_KEY: usize = 16;

/// Measures `window_count` at `bytes`.
pub(super) fn window_count(
    config: &ConsolidateConfig,
    repetitions: usize,
    bytes: usize,
    rng: &mut SplitMix64,
) -> Result<OperatorResult, String> {
    let partial_keys = bytes.saturating_sub(ROOT_BYTES) / BYTES_PER_KEY;
    if partial_keys == 0 {
        return Err(format!("{bytes} bytes is too small for a partial window"));
    }
    let merge: CountMerge = Arc::new(|count, more| *count += more);
    let new_keys = (partial_keys * config.new_key_percent as usize / 100).min(partial_keys);
    let shared = partial_keys - new_keys;
    let lessor_keys = (partial_keys * config.lessor_keys_per_partial_key.max(1)).max(shared);
    let mut keys = distinct_keys(lessor_keys + new_keys, rng, &[]);
    let fresh = keys.split_off(lessor_keys);
    let spec = Windows::Tumbling { size: WINDOW.end };
    let mut lessor = WindowState::<u64, u64>::new(spec);
    for &key in &keys {
        lessor.add(WINDOW, key, rng.below(1000) as u64 + 1, &*merge);
    }
    // The partial: a random sample of the lessor's keys and the fresh ones, added in
    // random order.
    for i in 0..shared {
        let j = i + rng.below(keys.len() - i);
        keys.swap(i, j);
    }
    let mut partial = WindowState::<u64, u64>::new(spec);
    for &key in keys[..shared].iter().chain(&fresh) {
        partial.add(WINDOW, key, rng.below(1000) as u64 + 1, &*merge);
    }
    // The previous layout of the same state, in the same order.
    let entries: Vec<(Time, u64, Time, u64)> = partial
        .entries()
        .map(|(window, key, count)| (window.end, *key, window.start, *count))
        .collect();
    let flat = Snapshot::of(&entries).map_err(|error| error.to_string())?;
    let snapshot = partial
        .snapshot()
        .map_err(|error| error.to_string())?
        .ok_or("the partial state is empty")?;

    // Every side must agree before any is timed.
    let mut in_place = lessor.clone();
    in_place
        .merge(&snapshot, 0, &*merge)
        .map_err(|error| error.to_string())?;
    let mut first = lessor.clone();
    deserialize_first(&mut first, &flat, &merge)?;
    let mut same = lessor.clone();
    deserialize_same_layout(&mut same, &snapshot, &merge)?;
    if sorted(&in_place) != sorted(&first)
        || sorted(&in_place) != sorted(&same)
        || in_place.len() != lessor_keys + new_keys
    {
        return Err(format!(
            "the window merges disagree at {bytes} bytes; not timing them"
        ));
    }
    drop((in_place, first, same));

    let batch = ((256 << 10) / bytes).clamp(1, 256);
    let mut states: Vec<WindowState<u64, u64>> = (0..batch).map(|_| lessor.clone()).collect();
    let mut in_place_ns = Vec::with_capacity(repetitions);
    let mut first_ns = Vec::with_capacity(repetitions);
    let mut same_ns = Vec::with_capacity(repetitions);
    for round in 0..=repetitions {
        let order = if round % 2 == 0 {
            [Side::InPlace, Side::First, Side::SameLayout]
        } else {
            [Side::SameLayout, Side::First, Side::InPlace]
        };
        for side in order {
            for state in &mut states {
                state.clone_from(&lessor);
            }
            let start = Instant::now();
            for state in &mut states {
                match side {
                    Side::InPlace => {
                        state
                            .merge(black_box(&snapshot), 0, &*merge)
                            .map_err(|error| error.to_string())?;
                    }
                    Side::First => deserialize_first(state, black_box(&flat), &merge)?,
                    Side::SameLayout => {
                        deserialize_same_layout(state, black_box(&snapshot), &merge)?
                    }
                }
            }
            let ns = start.elapsed().as_nanos() as f64 / batch as f64;
            black_box(&states);
            if round > 0 {
                match side {
                    Side::InPlace => in_place_ns.push(ns),
                    Side::First => first_ns.push(ns),
                    Side::SameLayout => same_ns.push(ns),
                }
            }
        }
    }
    let in_place_ns = median(&mut in_place_ns);
    let deserialize_first_ns = median(&mut first_ns);
    let deserialize_same_layout_ns = median(&mut same_ns);
    Ok(OperatorResult {
        operator: "window_count".into(),
        bytes: snapshot.len(),
        deserialize_first_bytes: flat.len(),
        partial_keys,
        new_keys,
        lessor_keys,
        in_place_ns,
        deserialize_first_ns,
        ratio: in_place_ns / deserialize_first_ns,
        deserialize_same_layout_ns,
        ratio_same_layout: in_place_ns / deserialize_same_layout_ns,
        batch,
    })
}

/// What a timed sample runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    InPlace,
    First,
    SameLayout,
}

/// The previous merge: the whole vector of entries deserialized, then each entry checked
/// against the frontier (0 here: nothing has fired) and folded in.
fn deserialize_first(
    state: &mut WindowState<u64, u64>,
    flat: &Snapshot,
    merge: &CountMerge,
) -> Result<(), String> {
    let archived = flat
        .archived::<Vec<(Time, u64, Time, u64)>>()
        .map_err(|error| error.to_string())?;
    let entries = rkyv::deserialize::<Vec<(Time, u64, Time, u64)>, rkyv::rancor::Error>(archived)
        .map_err(|error| error.to_string())?;
    let frontier: Time = black_box(0);
    for (end, key, start, count) in entries {
        if end <= frontier {
            continue;
        }
        state.add(Window { start, end }, key, count, &**merge);
    }
    Ok(())
}

/// Today's archive deserialized whole, then each entry folded in.
fn deserialize_same_layout(
    state: &mut WindowState<u64, u64>,
    snapshot: &Snapshot,
    merge: &CountMerge,
) -> Result<(), String> {
    let archived = snapshot
        .archived::<PartialWindows<u64, u64>>()
        .map_err(|error| error.to_string())?;
    let (windows, _sessions) =
        rkyv::deserialize::<PartialWindows<u64, u64>, rkyv::rancor::Error>(archived)
            .map_err(|error| error.to_string())?;
    for (start, end, entries) in windows {
        for (key, count) in entries {
            state.add(Window { start, end }, key, count, &**merge);
        }
    }
    Ok(())
}

fn sorted(state: &WindowState<u64, u64>) -> Vec<(Window, u64, u64)> {
    let mut entries: Vec<(Window, u64, u64)> = state
        .entries()
        .map(|(window, key, count)| (window, *key, *count))
        .collect();
    entries.sort_unstable();
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_come_within_the_size() {
        let mut rng = SplitMix64(3);
        let config = ConsolidateConfig {
            repetitions: 1,
            ..Default::default()
        };
        for bytes in [1 << 10, 64 << 10] {
            let row = window_count(&config, 1, bytes, &mut rng).unwrap();
            assert!(
                row.bytes <= bytes && row.bytes + BYTES_PER_KEY > bytes,
                "{} for {bytes}",
                row.bytes
            );
            assert_eq!(row.lessor_keys, 2 * row.partial_keys);
            assert!(row.in_place_ns > 0.0 && row.deserialize_first_ns > 0.0);
        }
    }
}
