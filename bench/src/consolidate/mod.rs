//! `dirigo bench consolidate`: what merging a lessee's partial state into its lessor's
//! costs, reading the archive in place (rkyv, zero-copy) against copying it first.
//!
//! Two kinds of rows: the per-key counts of [`KeyCounts`] (below), a layout made for
//! merging, and the operators' own state (`operators`: a `window_count`'s
//! [`WindowState`](dirigo_operators::window::WindowState), merged the way the window
//! operators merge it, against deserializing the partial first; JSON `operators`).
//!
//! The state is a keyed count, [`KeyCounts`]. For each size, the benchmark builds a
//! lessor state and a partial state whose archive takes about that many bytes, archives
//! the partial into a `Snapshot`, and times, in
//! alternating rounds of the same run:
//!
//! | key | what |
//! | --- | --- |
//! | `rkyv_ns` | [`KeyCounts::merge_archived`], reading the snapshot in place |
//! | `copy_ns` | the copy baseline: the same counts kept as a conventional hash map (`FxHashMap<u64, u64>`, lessor and lessee alike); the partial map's rkyv archive deserialized into an owned map, then each of its entries added into the lessor's map (and the copy dropped) |
//! | `copy_same_layout_ns` | the copy baseline on dirigo's own layout: `rkyv::deserialize` of the snapshot into an owned `KeyCounts`, then [`KeyCounts::merge`] (and dropping the copy) |
//! | `deserialize_ns` | that `rkyv::deserialize` into a `KeyCounts` alone (and dropping the copy): the part of `copy_same_layout_ns` that the in-place merge does not pay |
//!
//! `ratio` is `rkyv_ns / copy_ns`, the target's figure: what consolidating in place from
//! a layout made for it costs against the usual way, a hash map copied out of its
//! archive and merged entry by entry. `ratio_same_layout` is `rkyv_ns /
//! copy_same_layout_ns`, what zero-copy alone saves once the layout is a sorted run:
//! both sides merge with the same code (the merge is generic over owned and archived
//! runs), so the difference is the copy itself — the allocation, the deserializing pass,
//! and the cache the copy takes. A sorted run deserializes at about the speed of a
//! memory copy, so that ratio cannot go far below `merge / (copy + merge)`; the layout,
//! not the absence of a copy, is where most of the saving is. Every merge starts from a
//! fresh copy of the
//! lessor state, made before the clock starts with `clone_from` into a state kept from
//! round to round: a lessor's state lives across consolidations, so room it grew for
//! new keys stays (a clone into new memory would make every merge that meets new keys
//! reallocate, on both sides alike). Each round runs the sides in an order that
//! alternates round by round, so that drift in the machine's speed hits both alike; the
//! report gives the median of the rounds. Small sizes run a batch of merges per round
//! (each into its own state) and report the time per merge, so that a sample is long
//! enough for the clock. Before timing, the two merges are checked to give the same
//! state.
//!
//! Key overlap, chosen to look like a keyed count in steady state: keys are 64-bit key
//! hashes (uniform); the lessor holds [`ConsolidateConfig::lessor_keys_per_partial_key`]
//! times as many keys as the partial (default 2: a lessee sees about half of the keys
//! between two barriers), and [`ConsolidateConfig::new_key_percent`] of the partial's
//! keys (default 5 %) are keys the lessor has never seen; the rest are drawn uniformly,
//! without repetition, from the lessor's keys. Counts are small (1 to 1000).

use std::hint::black_box;
use std::time::Instant;

use dirigo_operators::state::{ArchivedKeyCounts, KeyCounts};

mod operators;

use dirigo_runtime::snapshot::Snapshot;
pub use operators::OperatorResult;
use rustc_hash::FxHashMap;
use serde::Serialize;

/// The archive sizes the issue asks for: 1 KiB, 64 KiB, 1 MiB and 16 MiB.
pub const DEFAULT_SIZES: [usize; 4] = [1 << 10, 64 << 10, 1 << 20, 16 << 20];

/// The size the target applies to (1 MiB).
pub const TARGET_BYTES: usize = 1 << 20;

/// The target for `rkyv_ns / copy_ns` at [`TARGET_BYTES`].
pub const TARGET_RATIO: f64 = 0.5;

/// The goal for `rkyv_ns / copy_ns` at [`TARGET_BYTES`], once the target is met.
pub const GOAL_RATIO: f64 = 0.25;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct ConsolidateConfig {
    /// Sizes of the archived partial state, in bytes (each archive comes within a few
    /// bytes under its size).
    pub sizes: Vec<usize>,
    /// Timed rounds per size (each round times both sides); the median is reported.
    pub repetitions: usize,
    /// How many keys the lessor holds per key of the partial (at least 1).
    pub lessor_keys_per_partial_key: usize,
    /// The share of the partial's keys that the lessor does not hold, in percent.
    pub new_key_percent: u32,
    /// Seed of the key generator (the same seed gives the same states).
    pub seed: u64,
}

impl Default for ConsolidateConfig {
    fn default() -> Self {
        Self {
            sizes: DEFAULT_SIZES.to_vec(),
            repetitions: 25,
            lessor_keys_per_partial_key: 2,
            new_key_percent: 5,
            seed: 0x5EED_D1A1_C0DE,
        }
    }
}

/// One size of the run; JSON keys as named.
#[derive(Clone, Debug, Serialize)]
pub struct SizeResult {
    /// Bytes of the archived partial state.
    pub bytes: usize,
    /// Keys in the partial state.
    pub partial_keys: usize,
    /// Of those, keys the lessor did not hold.
    pub new_keys: usize,
    /// Keys in the lessor state before the merge.
    pub lessor_keys: usize,
    /// Median time of a merge read in place from the archive, in nanoseconds.
    pub rkyv_ns: f64,
    /// Median time of the copy baseline, in nanoseconds: the partial state as a hash map,
    /// deserialized into an owned map and merged entry by entry into the lessor's map.
    pub copy_ns: f64,
    /// `rkyv_ns / copy_ns`.
    pub ratio: f64,
    /// Bytes of the hash map's archive in the copy baseline.
    pub copy_bytes: usize,
    /// Median time of a deserialize into an owned `KeyCounts` and a merge of that, in
    /// nanoseconds: the copy baseline on the same layout as `rkyv_ns`.
    pub copy_same_layout_ns: f64,
    /// `rkyv_ns / copy_same_layout_ns`: what leaving out the copy alone saves.
    pub ratio_same_layout: f64,
    /// Median time of the deserialize into a `KeyCounts` alone (and dropping what it
    /// made), in nanoseconds: the part of `copy_same_layout_ns` that the in-place merge
    /// does not pay.
    pub deserialize_ns: f64,
    /// Merges timed together per round (each into its own clone).
    pub batch: usize,
}

/// The result of `dirigo bench consolidate`; JSON keys as named.
#[derive(Clone, Debug, Serialize)]
pub struct ConsolidateReport {
    /// One entry per size, smallest first.
    pub sizes: Vec<SizeResult>,
    /// Timed rounds per size.
    pub repetitions: usize,
    /// Keys in the lessor per key in the partial.
    pub lessor_keys_per_partial_key: usize,
    /// Share of the partial's keys new to the lessor, in percent.
    pub new_key_percent: u32,
    /// `rkyv_ns / copy_ns` at 1 MiB, when that size ran.
    pub ratio_at_1mib: Option<f64>,
    /// `rkyv_ns / copy_same_layout_ns` at 1 MiB, when that size ran.
    pub ratio_same_layout_at_1mib: Option<f64>,
    /// Whether the ratio at 1 MiB is at most [`TARGET_RATIO`], when that size ran.
    pub target_met: Option<bool>,
    /// The same merge for operators' own state (see the `operators` rows), one entry per
    /// operator and size.
    pub operators: Vec<OperatorResult>,
    /// `window_count`'s `in_place_ns / deserialize_first_ns` at 1 MiB, when that size ran.
    pub window_count_ratio_at_1mib: Option<f64>,
}

impl ConsolidateReport {
    /// A plain-text table of the run.
    pub fn table(&self) -> String {
        let mut out = format!(
            "consolidate benchmark: merge a partial KeyCounts into its lessor, median of {} rounds\n\
             (lessor holds {}x the partial's keys; {} % of the partial's keys are new to it)\n\n",
            self.repetitions, self.lessor_keys_per_partial_key, self.new_key_percent
        );
        out.push_str(&format!(
            "{:>10} {:>9} {:>9} {:>12} {:>12} {:>9} {:>14} {:>9} {:>12}\n",
            "archive",
            "keys",
            "new keys",
            "rkyv (ns)",
            "copy (ns)",
            "rkyv/copy",
            "same layout",
            "rkyv/it",
            "its deser."
        ));
        for size in &self.sizes {
            out.push_str(&format!(
                "{:>10} {:>9} {:>9} {:>12.0} {:>12.0} {:>9.3} {:>14.0} {:>9.3} {:>12.0}\n",
                human_bytes(size.bytes),
                size.partial_keys,
                size.new_keys,
                size.rkyv_ns,
                size.copy_ns,
                size.ratio,
                size.copy_same_layout_ns,
                size.ratio_same_layout,
                size.deserialize_ns
            ));
        }
        out.push_str(&format!(
            "\n{:<14} {:>10} {:>9} {:>14} {:>16} {:>9} {:>14} {:>9}\n",
            "operator",
            "archive",
            "keys",
            "in place (ns)",
            "deser. 1st (ns)",
            "ratio",
            "same layout",
            "ratio"
        ));
        for row in &self.operators {
            out.push_str(&format!(
                "{:<14} {:>10} {:>9} {:>14.0} {:>16.0} {:>9.3} {:>14.0} {:>9.3}\n",
                row.operator,
                human_bytes(row.bytes),
                row.partial_keys,
                row.in_place_ns,
                row.deserialize_first_ns,
                row.ratio,
                row.deserialize_same_layout_ns,
                row.ratio_same_layout
            ));
        }
        out.push_str(
            "\ncopy: the counts as a hash map, deserialized from its archive, merged entry by entry;\n\
             same layout: the sorted run deserialized into an owned KeyCounts, then merged;\n\
             operators: in place is what the operator runs; deser. 1st, the whole archive of\n\
             entries deserialized first, then folded in (how operators merged before)\n",
        );
        if let Some(ratio) = self.ratio_at_1mib {
            let verdict = if ratio <= GOAL_RATIO {
                "ok (goal met too)"
            } else if ratio <= TARGET_RATIO {
                "ok"
            } else {
                "MISSED"
            };
            out.push_str(&format!(
                "\nrkyv / copy at 1 MiB     {ratio:>6.3}  (target <= {TARGET_RATIO}, goal <= {GOAL_RATIO})  {verdict}\n"
            ));
        }
        if let Some(ratio) = self.ratio_same_layout_at_1mib {
            out.push_str(&format!(
                "rkyv / same layout copy  {ratio:>6.3}  (zero-copy alone, no target)\n"
            ));
        }
        if let Some(ratio) = self.window_count_ratio_at_1mib {
            let verdict = if ratio <= TARGET_RATIO {
                "ok"
            } else {
                "MISSED"
            };
            out.push_str(&format!(
                "window_count in place / deserialize first at 1 MiB  {ratio:>6.3}  (target <= {TARGET_RATIO})  {verdict}\n"
            ));
        }
        out
    }
}

fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / f64::from(1 << 10))
    } else {
        format!("{bytes} B")
    }
}

/// Runs the benchmark for every size of `config`.
pub fn run(config: &ConsolidateConfig) -> Result<ConsolidateReport, String> {
    if config.sizes.is_empty() {
        return Err("no sizes to measure".into());
    }
    if config.new_key_percent > 100 {
        return Err(format!(
            "new_key_percent is {}; at most 100",
            config.new_key_percent
        ));
    }
    let repetitions = config.repetitions.max(1);
    let mut sizes = config.sizes.clone();
    sizes.sort_unstable();
    let mut rng = SplitMix64(config.seed);
    let mut results = Vec::with_capacity(sizes.len());
    let mut operators = Vec::with_capacity(sizes.len());
    for bytes in sizes {
        results.push(measure(config, repetitions, bytes, &mut rng)?);
        operators.push(operators::window_count(
            config,
            repetitions,
            bytes,
            &mut rng,
        )?);
    }
    let window_count_ratio_at_1mib = operators
        .iter()
        .find(|row| row.bytes <= TARGET_BYTES && row.bytes > TARGET_BYTES - TARGET_BYTES / 64)
        .map(|row| row.ratio);
    let at_1mib = results
        .iter()
        .find(|size| size.bytes <= TARGET_BYTES && size.bytes > TARGET_BYTES - TARGET_BYTES / 64);
    let ratio_at_1mib = at_1mib.map(|size| size.ratio);
    let ratio_same_layout_at_1mib = at_1mib.map(|size| size.ratio_same_layout);
    Ok(ConsolidateReport {
        sizes: results,
        repetitions,
        lessor_keys_per_partial_key: config.lessor_keys_per_partial_key.max(1),
        new_key_percent: config.new_key_percent,
        ratio_at_1mib,
        ratio_same_layout_at_1mib,
        target_met: ratio_at_1mib.map(|ratio| ratio <= TARGET_RATIO),
        operators,
        window_count_ratio_at_1mib,
    })
}

/// Archived bytes of an empty `KeyCounts` (the root: three relative pointers with
/// lengths), and per key of its run (a key and a count).
const ROOT_BYTES: usize = 24;
const BYTES_PER_KEY: usize = 16;

fn measure(
    config: &ConsolidateConfig,
    repetitions: usize,
    bytes: usize,
    rng: &mut SplitMix64,
) -> Result<SizeResult, String> {
    let partial_keys = bytes.saturating_sub(ROOT_BYTES) / BYTES_PER_KEY;
    if partial_keys == 0 {
        return Err(format!(
            "{bytes} bytes is too small for a partial state (at least {} bytes)",
            ROOT_BYTES + BYTES_PER_KEY
        ));
    }
    let (lessor, mut partial, new_keys) = states(config, partial_keys, rng);
    let snapshot = partial.snapshot().map_err(|error| error.to_string())?;
    let archived = snapshot
        .archived::<KeyCounts>()
        .map_err(|error| error.to_string())?;

    // The copy baseline's layout: the same counts in hash maps.
    let lessor_map: CountMap = lessor.iter().collect();
    let partial_map: CountMap = partial.iter().collect();
    let map_snapshot = Snapshot::of(&partial_map).map_err(|error| error.to_string())?;
    let archived_map = map_snapshot
        .archived::<CountMap>()
        .map_err(|error| error.to_string())?;

    // Every side must agree before any is timed.
    let mut in_place = lessor.clone();
    in_place.merge_archived(archived);
    let mut copied = lessor.clone();
    copied.merge(&copy(archived)?);
    let mut conventional = lessor_map.clone();
    merge_copied_map(&mut conventional, archived_map)?;
    let mut conventional: Vec<(u64, u64)> = conventional.into_iter().collect();
    conventional.sort_unstable();
    if in_place != copied
        || in_place.len() != lessor.len() + new_keys
        || !in_place.iter().eq(conventional.iter().copied())
    {
        return Err(format!(
            "the merges disagree at {bytes} bytes; not timing them"
        ));
    }
    drop((in_place, copied, conventional));

    // Enough merges per sample to be well above the clock's resolution.
    let batch = ((256 << 10) / bytes).clamp(1, 256);
    // The lessor states merged into: long-lived, as a lessor's state is, so a state that
    // grew to take new keys keeps its room from round to round.
    let mut states: Vec<KeyCounts> = (0..batch).map(|_| lessor.clone()).collect();
    let mut maps: Vec<CountMap> = (0..batch).map(|_| lessor_map.clone()).collect();
    let mut rkyv_ns = Vec::with_capacity(repetitions);
    let mut copy_ns = Vec::with_capacity(repetitions);
    let mut same_layout_ns = Vec::with_capacity(repetitions);
    let mut deserialize_ns = Vec::with_capacity(repetitions);
    // One untimed round first, to warm caches and the allocator.
    for round in 0..=repetitions {
        let order = if round % 2 == 0 {
            [Side::Rkyv, Side::Copy, Side::SameLayout, Side::Deserialize]
        } else {
            [Side::SameLayout, Side::Copy, Side::Rkyv, Side::Deserialize]
        };
        for side in order {
            if side == Side::Copy {
                for map in &mut maps {
                    map.clone_from(&lessor_map);
                }
            } else {
                for state in &mut states {
                    state.clone_from(&lessor);
                }
            }
            let start = Instant::now();
            match side {
                Side::Rkyv => {
                    for state in &mut states {
                        state.merge_archived(black_box(archived));
                    }
                }
                Side::Copy => {
                    for map in &mut maps {
                        merge_copied_map(map, black_box(archived_map))?;
                    }
                }
                Side::SameLayout => {
                    for state in &mut states {
                        let owned = copy(black_box(archived))?;
                        state.merge(&owned);
                    }
                }
                Side::Deserialize => {
                    for _ in 0..batch {
                        black_box(copy(black_box(archived))?);
                    }
                }
            }
            let ns = start.elapsed().as_nanos() as f64 / batch as f64;
            black_box((&states, &maps));
            if round > 0 {
                match side {
                    Side::Rkyv => rkyv_ns.push(ns),
                    Side::Copy => copy_ns.push(ns),
                    Side::SameLayout => same_layout_ns.push(ns),
                    Side::Deserialize => deserialize_ns.push(ns),
                }
            }
        }
    }
    let rkyv_ns = median(&mut rkyv_ns);
    let copy_ns = median(&mut copy_ns);
    let copy_same_layout_ns = median(&mut same_layout_ns);
    let deserialize_ns = median(&mut deserialize_ns);
    Ok(SizeResult {
        bytes: snapshot.len(),
        partial_keys: partial.len(),
        new_keys,
        lessor_keys: lessor.len(),
        rkyv_ns,
        copy_ns,
        ratio: rkyv_ns / copy_ns,
        copy_bytes: map_snapshot.len(),
        copy_same_layout_ns,
        ratio_same_layout: rkyv_ns / copy_same_layout_ns,
        deserialize_ns,
        batch,
    })
}

/// What a timed sample runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `merge_archived`, in place.
    Rkyv,
    /// The hash-map baseline: deserialize the map, then add its entries.
    Copy,
    /// Deserialize into a `KeyCounts`, then merge the copy.
    SameLayout,
    /// The deserialize alone, for the breakdown.
    Deserialize,
}

/// A per-key count as a conventional hash map (the copy baseline's layout).
type CountMap = FxHashMap<u64, u64>;

/// The copy baseline: the partial map deserialized into an owned map, then each of its
/// entries added into `lessor` (and the copy dropped).
fn merge_copied_map(
    lessor: &mut CountMap,
    archived: &rkyv::Archived<CountMap>,
) -> Result<(), String> {
    let owned: CountMap = rkyv::deserialize::<CountMap, rkyv::rancor::Error>(archived)
        .map_err(|error| error.to_string())?;
    for (key, count) in owned {
        let slot = lessor.entry(key).or_insert(0);
        *slot = slot.wrapping_add(count);
    }
    Ok(())
}

/// The same-layout baseline's first half: the archive deserialized into an owned state.
fn copy(archived: &ArchivedKeyCounts) -> Result<KeyCounts, String> {
    rkyv::deserialize::<KeyCounts, rkyv::rancor::Error>(archived).map_err(|error| error.to_string())
}

/// A lessor state and a partial state of `partial_keys` keys, overlapping as the module
/// documentation says; and how many of the partial's keys the lessor lacks.
fn states(
    config: &ConsolidateConfig,
    partial_keys: usize,
    rng: &mut SplitMix64,
) -> (KeyCounts, KeyCounts, usize) {
    let new_keys = (partial_keys * config.new_key_percent as usize / 100).min(partial_keys);
    let shared = partial_keys - new_keys;
    let lessor_keys = (partial_keys * config.lessor_keys_per_partial_key.max(1)).max(shared);
    let mut keys = distinct_keys(lessor_keys, rng, &[]);
    let lessor = KeyCounts::from_pairs(keys.iter().map(|&key| (key, rng.count())));
    // A uniform sample of `shared` lessor keys: a partial Fisher-Yates shuffle.
    for i in 0..shared {
        let j = i + rng.below(keys.len() - i);
        keys.swap(i, j);
    }
    let mut lessor_sorted: Vec<u64> = lessor.iter().map(|(key, _)| key).collect();
    lessor_sorted.sort_unstable();
    let fresh = distinct_keys(new_keys, rng, &lessor_sorted);
    let partial = KeyCounts::from_pairs(
        keys[..shared]
            .iter()
            .chain(&fresh)
            .map(|&key| (key, rng.count())),
    );
    (lessor, partial, new_keys)
}

/// `n` distinct random keys, none of them in `avoid` (sorted).
fn distinct_keys(n: usize, rng: &mut SplitMix64, avoid: &[u64]) -> Vec<u64> {
    let mut keys: Vec<u64> = Vec::with_capacity(n);
    while keys.len() < n {
        keys.extend(
            (keys.len()..n)
                .map(|_| rng.next())
                .filter(|key| avoid.binary_search(key).is_err()),
        );
        keys.sort_unstable();
        keys.dedup();
    }
    // Sorting above left them ordered; the caller samples them, so shuffle.
    for i in (1..keys.len()).rev() {
        let j = rng.below(i + 1);
        keys.swap(i, j);
    }
    keys
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_unstable_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    }
}

/// splitmix64: a small, fast, seedable generator (no dependency needed).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    /// A count between 1 and 1000.
    fn count(&mut self) -> u64 {
        1 + self.below(1000) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_reports_every_size() {
        let report = run(&ConsolidateConfig {
            sizes: vec![1 << 10, 8 << 10],
            repetitions: 3,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(report.sizes.len(), 2);
        for size in &report.sizes {
            assert!(size.bytes <= 8 << 10 && size.bytes > 900, "{size:?}");
            assert!(size.rkyv_ns > 0.0 && size.copy_ns > 0.0, "{size:?}");
            assert_eq!(size.lessor_keys, 2 * size.partial_keys, "{size:?}");
        }
        assert!(report.ratio_at_1mib.is_none());
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "bytes",
            "rkyv_ns",
            "copy_ns",
            "ratio",
            "copy_same_layout_ns",
            "ratio_same_layout",
        ] {
            assert!(json["sizes"][0][key].is_number(), "{key}");
        }
        assert!(report.table().contains("rkyv/copy"));
    }

    #[test]
    fn archives_come_within_the_size() {
        let mut rng = SplitMix64(1);
        let config = ConsolidateConfig::default();
        for bytes in [1 << 10, 64 << 10] {
            let keys = (bytes - ROOT_BYTES) / BYTES_PER_KEY;
            let (_, mut partial, _) = states(&config, keys, &mut rng);
            let len = partial.snapshot().unwrap().len();
            assert!(
                len <= bytes && len + BYTES_PER_KEY > bytes,
                "{len} for {bytes}"
            );
        }
    }
}
