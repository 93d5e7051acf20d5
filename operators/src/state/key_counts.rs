//! Per-key counts ([`KeyCounts`]): the mergeable state a lessee archives and its lessor merges.
//!
//! [`KeyCounts`] is the partial state of a keyed count. It is built for the dual-mode
//! actor's consolidation: a lessee adds counts per message, archives its partial state into
//! a [`Snapshot`] at a barrier, and the lessor merges that archive *in place*, reading the
//! archived bytes without deserializing them ([`KeyCounts::merge_archived`]).
//!
//! # Layout
//!
//! The state has two parts:
//!
//! - the **run**: the keys in ascending order, each once, and their counts, as two
//!   parallel vectors (a struct of arrays). This is the form that is archived and merged.
//!   A merge is two passes. The first walks both runs and adds each partial count to the
//!   lessor's count *in place* where the lessor holds the key — the common case once the
//!   lessor has seen the key space — and notes the keys it does not hold. Only if there
//!   are such keys does the second pass run: it opens the lessor's run up from the back,
//!   moving each element once, and writes the new keys into the gaps (no second buffer;
//!   the vectors grow geometrically, and a state that lives across merges keeps the room
//!   it grew).
//! - the **pending buffer**: a hash map that [`KeyCounts::add`] writes to, so that the
//!   per-message cost is one hash-map update, not an insertion into a sorted array.
//!   [`KeyCounts::flush`] sorts the buffer and merges it into the run, the same way a
//!   partial state is merged; [`KeyCounts::snapshot`] flushes before it archives, so a
//!   snapshot normally holds the run alone. (Archived unflushed, the buffer is written
//!   as a second sorted run and merged too: no count is ever lost.)
//!
//! The first pass picks its way by the sizes (see `add_matching` in the source): a
//! partial run much shorter than the lessor's is searched key by key (galloping), so a
//! small partial costs O(m log(n/m)), not O(n); a partial run that covers most of the
//! lessor's keys takes a plain merge, whose branches are well predicted; in between — a
//! lessee that saw a share of the keys, at random places — four slices of the merge run
//! interleaved, without branches on the key comparisons, which measured about three
//! times faster than a plain merge at that overlap (a 1 MiB partial run, a lessor twice
//! its size). Two parallel vectors and a vector of `(key, count)` pairs merged equally
//! fast within the noise of those measurements; the parallel vectors let the merge read
//! keys alone where it only compares.
//!
//! What zero-copy saves: deserializing a run is little more than a copy of its bytes, so
//! merging the archive in place saves that copy (an allocation and a pass over the
//! partial) and no more; the merge itself, which reads every key of the partial run and
//! (unless the partial is sparse) of the lessor's, is most of the cost either way.
//!
//! Counts add modulo 2⁶⁴ (wrapping), so merging never panics.
//!
//! ```
//! use dirigo_operators::state::KeyCounts;
//!
//! // A lessee counts what it saw and archives it at the barrier.
//! let mut partial = KeyCounts::new();
//! for key in [7, 3, 7, 42] {
//!     partial.add(key, 1);
//! }
//! let snapshot = partial.snapshot().unwrap();
//!
//! // The lessor merges the archive in place.
//! let mut lessor = KeyCounts::from_pairs([(3, 10), (5, 1)]);
//! lessor.merge_archived(snapshot.archived::<KeyCounts>().unwrap());
//! assert_eq!(lessor.get(3), 11);
//! assert_eq!(lessor.get(7), 2);
//! assert_eq!(lessor.len(), 4);
//! assert_eq!(
//!     lessor.iter().collect::<Vec<_>>(),
//!     [(3, 11), (5, 1), (7, 2), (42, 1)]
//! );
//! ```

use std::collections::hash_map::Entry;

use dirigo_runtime::snapshot::{Snapshot, SnapshotError};
use rkyv::primitive::ArchivedU64;
use rkyv::rancor::Fallible;
use rkyv::ser::{Allocator, Writer};
use rkyv::tuple::ArchivedTuple2;
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, DeserializeWith, SerializeWith};
use rkyv::{Archive, Archived, Deserialize, Place, Serialize};
use rustc_hash::FxHashMap;

/// Per-key counts: a sorted run of `(key, count)` plus a hash-map buffer for adds. See
/// the [module documentation](self) for the layout and why.
#[derive(Archive, Serialize, Deserialize, Debug, Default)]
pub struct KeyCounts {
    /// The keys of the run, ascending, each once.
    keys: Vec<u64>,
    /// `counts[i]` is the count of `keys[i]`; never shorter or longer than `keys`.
    counts: Vec<u64>,
    /// Adds not yet merged into the run (archived as a sorted run of pairs).
    #[rkyv(with = SortedPairs)]
    pending: FxHashMap<u64, u64>,
}

impl Clone for KeyCounts {
    fn clone(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            counts: self.counts.clone(),
            pending: self.pending.clone(),
        }
    }

    /// Copies `source` into `self`'s allocations (a state that lives across merges keeps
    /// the room it has grown).
    fn clone_from(&mut self, source: &Self) {
        self.keys.clone_from(&source.keys);
        self.counts.clone_from(&source.counts);
        self.pending.clone_from(&source.pending);
    }
}

impl PartialEq for KeyCounts {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for KeyCounts {}

impl KeyCounts {
    /// Empty counts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts from `(key, count)` pairs in any order; counts of a repeated key add up.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut pairs: Vec<(u64, u64)> = pairs.into_iter().collect();
        pairs.sort_unstable_by_key(|&(key, _)| key);
        let mut keys: Vec<u64> = Vec::with_capacity(pairs.len());
        let mut counts: Vec<u64> = Vec::with_capacity(pairs.len());
        for (key, count) in pairs {
            if keys.last() == Some(&key) {
                let last = counts.len() - 1;
                counts[last] = counts[last].wrapping_add(count);
            } else {
                keys.push(key);
                counts.push(count);
            }
        }
        Self {
            keys,
            counts,
            pending: FxHashMap::default(),
        }
    }

    /// Adds `n` to the count of `key`: one hash-map update, whatever the size of the run.
    pub fn add(&mut self, key: u64, n: u64) {
        match self.pending.entry(key) {
            Entry::Occupied(mut entry) => {
                let count = entry.get_mut();
                *count = count.wrapping_add(n);
            }
            Entry::Vacant(entry) => {
                entry.insert(n);
            }
        }
    }

    /// Merges the pending buffer into the sorted run. Costs a sort of the buffer and one
    /// pass over the run; [`snapshot`](Self::snapshot) calls it.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pairs: Vec<(u64, u64)> = self.pending.drain().collect();
        pairs.sort_unstable_by_key(|&(key, _)| key);
        self.merge_run(&PairRun(&pairs));
    }

    /// Flushes, then archives the state into a [`Snapshot`] (read it back with
    /// `snapshot.archived::<KeyCounts>()` and merge it with
    /// [`merge_archived`](Self::merge_archived)).
    pub fn snapshot(&mut self) -> Result<Snapshot, SnapshotError> {
        self.flush();
        Snapshot::of(self)
    }

    /// Merges a partial state read in place from its archive: no deserialization, no
    /// copy of the partial. The archive must be one written by this type (as every
    /// in-process [`Snapshot`] is); for bytes from outside, validate them with
    /// `access_checked` and then [`ArchivedKeyCounts::is_well_formed`] first — a malformed
    /// archive can make this panic or count wrongly, never read out of bounds.
    pub fn merge_archived(&mut self, partial: &ArchivedKeyCounts) {
        self.merge_run(&ArrayRun::new(&partial.keys, &partial.counts));
        if !partial.pending.is_empty() {
            self.merge_run(&PairRun(&partial.pending));
        }
    }

    /// Merges an owned partial state.
    pub fn merge(&mut self, partial: &KeyCounts) {
        self.merge_run(&ArrayRun::new(&partial.keys, &partial.counts));
        if !partial.pending.is_empty() {
            let mut pairs: Vec<(u64, u64)> =
                partial.pending.iter().map(|(&k, &c)| (k, c)).collect();
            pairs.sort_unstable_by_key(|&(key, _)| key);
            self.merge_run(&PairRun(&pairs));
        }
    }

    /// The count of `key` (0 when never counted).
    pub fn get(&self, key: u64) -> u64 {
        let in_run = match self.keys.binary_search(&key) {
            Ok(index) => self.counts[index],
            Err(_) => 0,
        };
        in_run.wrapping_add(self.pending.get(&key).copied().unwrap_or(0))
    }

    /// How many keys have a count. Costs a lookup per pending key until
    /// [`flush`](Self::flush).
    pub fn len(&self) -> usize {
        self.keys.len()
            + self
                .pending
                .keys()
                .filter(|key| self.keys.binary_search(key).is_err())
                .count()
    }

    /// Whether no key has a count.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.pending.is_empty()
    }

    /// The `(key, count)` pairs in ascending key order. Sorts a copy of the pending
    /// buffer, if any; after [`flush`](Self::flush) it reads the run alone.
    pub fn iter(&self) -> Iter<'_> {
        let mut pending: Vec<(u64, u64)> = self.pending.iter().map(|(&k, &c)| (k, c)).collect();
        pending.sort_unstable_by_key(|&(key, _)| key);
        Iter {
            keys: &self.keys,
            counts: &self.counts,
            at: 0,
            pending,
            pending_at: 0,
        }
    }

    /// Merges a sorted run of distinct keys into `self`'s run.
    fn merge_run<R: Run>(&mut self, partial: &R) {
        let mut fresh: [Vec<Fresh>; LANES] = Default::default();
        add_matching(&self.keys, &mut self.counts, partial, &mut fresh);
        if fresh.iter().any(|lane| !lane.is_empty()) {
            self.insert_fresh(&fresh);
        }
    }

    /// Pass 2: opens up the run from the back and writes the keys it did not have, each
    /// element of the run moving at most once. `fresh` lists the new keys in ascending
    /// order (lane by lane), each with its position in the old run.
    fn insert_fresh(&mut self, fresh: &[Vec<Fresh>]) {
        let old_len = self.keys.len();
        let added: usize = fresh.iter().map(Vec::len).sum();
        // `resize` grows the vectors geometrically, so a run that keeps meeting new keys
        // reallocates rarely.
        self.keys.resize(old_len + added, 0);
        self.counts.resize(old_len + added, 0);
        // The old run's elements at `..end` have not moved yet; everything from
        // `end + gap` on is final.
        let mut end = old_len;
        for (gap, new) in fresh.iter().flatten().rev().enumerate() {
            let gap = added - 1 - gap;
            self.keys.copy_within(new.at..end, new.at + gap + 1);
            self.counts.copy_within(new.at..end, new.at + gap + 1);
            self.keys[new.at + gap] = new.key;
            self.counts[new.at + gap] = new.count;
            end = new.at;
        }
    }
}

/// How many merges of slices of the two runs [`add_matching`] interleaves.
const LANES: usize = 4;

/// At most this many steps of the lane loop between two reservations of room for new
/// keys (so that a round reserves little more than it may need).
const STEPS_PER_ROUND: usize = 4096;

/// Below this many partial keys per lane, [`add_matching`] merges in one lane.
const MIN_KEYS_PER_LANE: usize = 64;

/// A partial run this many times shorter than the run is merged by searching for each
/// of its keys (galloping), not by walking the run.
const SPARSE: usize = 16;

/// A key the run does not hold yet, with its count, and where it goes: before the run's
/// element `at`.
#[derive(Clone, Copy, Debug)]
struct Fresh {
    at: usize,
    key: u64,
    count: u64,
}

/// Notes a key new to the run; out of line, so that the merge loops keep their
/// registers for the common case.
#[cold]
#[inline(never)]
fn note_fresh(fresh: &mut Vec<Fresh>, at: usize, key: u64, count: u64) {
    fresh.push(Fresh { at, key, count });
}

/// Pass 1 of a merge: adds the count of every `partial` key that `keys` holds to
/// `counts`, in place, and lists the other keys in `fresh`, lane by lane, ascending.
///
/// Three ways, by how the sizes compare:
/// - the partial run is much shorter than the run ([`SPARSE`]): each partial key is
///   found by galloping from the last one, so the merge costs O(m log(n/m)), not O(n);
/// - the partial run covers most of the run (or is short): one plain merge, whose
///   branches are well predicted because nearly every step is a match;
/// - in between (the partial run holds a share of the run's keys, at random places): the
///   merge is split into [`LANES`] slices of the partial run, each with the slice of
///   `keys` its keys fall in, and the lanes step in turn, so that the processor overlaps
///   them. A step has no branch on how the keys compare (that would be a coin flip for
///   hashed keys): both indices advance by the outcome of a compare, and the count is
///   always written, with zero added when the keys differ. Only a key new to the run,
///   the rare case, branches.
fn add_matching<R: Run>(
    keys: &[u64],
    counts: &mut [u64],
    partial: &R,
    fresh: &mut [Vec<Fresh>; LANES],
) {
    let counts = &mut counts[..keys.len()];
    let (n, m) = (keys.len(), partial.len());
    if m.saturating_mul(SPARSE) <= n {
        gallop(keys, counts, partial, &mut fresh[0]);
    } else if m < LANES * MIN_KEYS_PER_LANE || 4 * n <= 5 * m {
        let (i, j) = merge_steps(keys, counts, partial, (0, n), (0, m), &mut fresh[0]);
        finish_lane(partial, i, (j, m), &mut fresh[0]);
    } else {
        merge_in_lanes(keys, counts, partial, fresh);
    }
}

/// The sparse case of [`add_matching`].
fn gallop<R: Run>(keys: &[u64], counts: &mut [u64], partial: &R, fresh: &mut Vec<Fresh>) {
    let mut at = 0;
    for index in 0..partial.len() {
        let key = partial.key(index);
        // Double the stride until it passes `key`, then search the last stride.
        let mut stride = 1;
        while at + stride <= keys.len() && keys[at + stride - 1] < key {
            at += stride;
            stride *= 2;
        }
        let end = (at + stride).min(keys.len());
        at += keys[at..end].partition_point(|&k| k < key);
        if at < keys.len() && keys[at] == key {
            counts[at] = counts[at].wrapping_add(partial.count(index));
            at += 1;
        } else {
            note_fresh(fresh, at, key, partial.count(index));
        }
    }
}

/// The lane-interleaved case of [`add_matching`].
fn merge_in_lanes<R: Run>(
    keys: &[u64],
    counts: &mut [u64],
    partial: &R,
    fresh: &mut [Vec<Fresh>; LANES],
) {
    let (n, m) = (keys.len(), partial.len());
    // Lane `k` takes partial keys `j[k]..j_end[k]` and run keys `i[k]..i_end[k]`: the run
    // keys from the first partial key of the lane (inclusive) to that of the next.
    let mut i = [0usize; LANES];
    let mut j = [0usize; LANES];
    for lane in 1..LANES {
        j[lane] = lane * m / LANES;
        let first = partial.key(j[lane]);
        i[lane] = keys.partition_point(|&key| key < first);
    }
    let mut i_end = [n; LANES];
    let mut j_end = [m; LANES];
    i_end[..LANES - 1].copy_from_slice(&i[1..]);
    j_end[..LANES - 1].copy_from_slice(&j[1..]);
    {
        // One local per index, so that they stay in registers.
        let [mut i0, mut i1, mut i2, mut i3] = i;
        let [mut j0, mut j1, mut j2, mut j3] = j;
        let [f0, f1, f2, f3] = fresh;
        loop {
            // No lane can run out within `steps` steps: a step moves each index by one
            // at most.
            let steps = (i_end[0] - i0)
                .min(j_end[0] - j0)
                .min(i_end[1] - i1)
                .min(j_end[1] - j1)
                .min(i_end[2] - i2)
                .min(j_end[2] - j2)
                .min(i_end[3] - i3)
                .min(j_end[3] - j3);
            if steps < 8 {
                break;
            }
            // Room for one new key per step in every lane, so that `step` never
            // grows a vector (no call in the loop).
            let steps = steps.min(STEPS_PER_ROUND);
            for lane in [&mut *f0, &mut *f1, &mut *f2, &mut *f3] {
                lane.reserve(steps);
            }
            for _ in 0..steps {
                // SAFETY: lane `k` runs within `i_end[k] <= keys.len() == counts.len()`
                // and `j_end[k] <= partial.len()`, `steps` is at most the distance of
                // every index to its bound, and a step moves each index by one at most;
                // every lane has room reserved for `steps` new keys, and a step adds one
                // at most.
                unsafe {
                    (i0, j0) = step(keys, counts, partial, i0, j0, f0);
                    (i1, j1) = step(keys, counts, partial, i1, j1, f1);
                    (i2, j2) = step(keys, counts, partial, i2, j2, f2);
                    (i3, j3) = step(keys, counts, partial, i3, j3, f3);
                }
            }
        }
        i = [i0, i1, i2, i3];
        j = [j0, j1, j2, j3];
    }
    for lane in 0..LANES {
        let (a, b) = merge_steps(
            keys,
            counts,
            partial,
            (i[lane], i_end[lane]),
            (j[lane], j_end[lane]),
            &mut fresh[lane],
        );
        finish_lane(partial, a, (b, j_end[lane]), &mut fresh[lane]);
    }
}

/// One branch-free step of a merge of the run (at `i`) with the partial run (at `j`).
///
/// The lane loop calls this four times per iteration with sixteen live indices and
/// bounds, so the step leaves out what would cost registers or a call: bounds checks
/// (the loop bounds every index) and growing `fresh` (the loop reserves room first).
/// Measured on a 1 MiB partial, a lessor twice its size: about a fifth off the merge.
///
/// # Safety
///
/// `i < keys.len() == counts.len()`, `j < partial.len()`, and `fresh` has room for one
/// more element.
#[inline(always)]
unsafe fn step<R: Run>(
    keys: &[u64],
    counts: &mut [u64],
    partial: &R,
    i: usize,
    j: usize,
    fresh: &mut Vec<Fresh>,
) -> (usize, usize) {
    debug_assert!(i < keys.len() && keys.len() == counts.len() && j < partial.len());
    debug_assert!(fresh.len() < fresh.capacity());
    // SAFETY: the caller keeps `i` within `keys` and `counts` (the same length) and `j`
    // within `partial`.
    let (a, b, count, slot) = unsafe {
        (
            *keys.get_unchecked(i),
            partial.key_unchecked(j),
            partial.count_unchecked(j),
            counts.get_unchecked_mut(i),
        )
    };
    *slot = slot.wrapping_add(if a == b { count } else { 0 });
    if b < a {
        let len = fresh.len();
        // SAFETY: the caller reserved room for this element, so the write stays within
        // the allocation, and the element is initialized before `set_len` covers it.
        unsafe {
            fresh.as_mut_ptr().add(len).write(Fresh {
                at: i,
                key: b,
                count,
            });
            fresh.set_len(len + 1);
        }
    }
    (i + usize::from(a <= b), j + usize::from(b <= a))
}

/// Merges one lane until either of its runs is used up; returns where it stopped. A
/// plain merge: nearly every step is a match when the partial run covers the run.
fn merge_steps<R: Run>(
    keys: &[u64],
    counts: &mut [u64],
    partial: &R,
    (mut i, i_end): (usize, usize),
    (mut j, j_end): (usize, usize),
    fresh: &mut Vec<Fresh>,
) -> (usize, usize) {
    while j < j_end {
        let key = partial.key(j);
        while i < i_end && keys[i] < key {
            i += 1;
        }
        if i == i_end {
            break;
        }
        if keys[i] == key {
            counts[i] = counts[i].wrapping_add(partial.count(j));
            i += 1;
        } else {
            note_fresh(fresh, i, key, partial.count(j));
        }
        j += 1;
    }
    (i, j)
}

/// Once a lane's run keys are used up (at `at`, the lane's end), its remaining partial
/// keys are all new, and go there.
fn finish_lane<R: Run>(partial: &R, at: usize, (j, j_end): (usize, usize), fresh: &mut Vec<Fresh>) {
    fresh.extend((j..j_end).map(|index| Fresh {
        at,
        key: partial.key(index),
        count: partial.count(index),
    }));
}

impl<'a> IntoIterator for &'a KeyCounts {
    type Item = (u64, u64);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl FromIterator<(u64, u64)> for KeyCounts {
    fn from_iter<I: IntoIterator<Item = (u64, u64)>>(pairs: I) -> Self {
        Self::from_pairs(pairs)
    }
}

/// The `(key, count)` pairs of a [`KeyCounts`], ascending by key.
#[derive(Debug)]
pub struct Iter<'a> {
    keys: &'a [u64],
    counts: &'a [u64],
    at: usize,
    pending: Vec<(u64, u64)>,
    pending_at: usize,
}

impl Iterator for Iter<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let run = self
            .keys
            .get(self.at)
            .map(|&key| (key, self.counts[self.at]));
        let pending = self.pending.get(self.pending_at).copied();
        match (run, pending) {
            (None, None) => None,
            (Some(pair), None) => {
                self.at += 1;
                Some(pair)
            }
            (None, Some(pair)) => {
                self.pending_at += 1;
                Some(pair)
            }
            (Some(run), Some(pending)) => {
                if run.0 < pending.0 {
                    self.at += 1;
                    Some(run)
                } else if pending.0 < run.0 {
                    self.pending_at += 1;
                    Some(pending)
                } else {
                    self.at += 1;
                    self.pending_at += 1;
                    Some((run.0, run.1.wrapping_add(pending.1)))
                }
            }
        }
    }
}

impl ArchivedKeyCounts {
    /// Whether the archive keeps the invariants [`KeyCounts::merge_archived`] relies on:
    /// keys strictly ascending in both runs, and as many counts as keys. Every archive
    /// written by [`KeyCounts`] does; check archives from outside the process (after
    /// validating their bytes with `access_checked`).
    pub fn is_well_formed(&self) -> bool {
        fn ascending(mut keys: impl Iterator<Item = u64>) -> bool {
            let mut previous: Option<u64> = None;
            keys.all(|key| {
                let ok = previous.is_none_or(|p| p < key);
                previous = Some(key);
                ok
            })
        }
        self.keys.len() == self.counts.len()
            && ascending(self.keys.iter().map(|k| k.to_native()))
            && ascending(self.pending.iter().map(|pair| pair.0.to_native()))
    }

    /// How many keys the archived run holds (plus any archived pending keys, which may
    /// repeat run keys).
    pub fn len(&self) -> usize {
        self.keys.len() + self.pending.len()
    }

    /// Whether the archive holds no counts.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.pending.is_empty()
    }

    /// The archived count of `key`, read in place.
    pub fn get(&self, key: u64) -> u64 {
        let in_run = match self.keys.binary_search_by(|k| k.to_native().cmp(&key)) {
            Ok(index) => self.counts.get(index).map_or(0, |c| c.to_native()),
            Err(_) => 0,
        };
        let pending = match self
            .pending
            .binary_search_by(|pair| pair.0.to_native().cmp(&key))
        {
            Ok(index) => self.pending[index].1.to_native(),
            Err(_) => 0,
        };
        in_run.wrapping_add(pending)
    }
}

/// A sorted run of distinct keys with their counts, as the merge reads it.
trait Run {
    fn len(&self) -> usize;
    fn key(&self, index: usize) -> u64;
    fn count(&self, index: usize) -> u64;

    /// [`key`](Self::key) without the bounds check.
    ///
    /// # Safety
    ///
    /// `index < self.len()`.
    unsafe fn key_unchecked(&self, index: usize) -> u64;

    /// [`count`](Self::count) without the bounds check.
    ///
    /// # Safety
    ///
    /// `index < self.len()`.
    unsafe fn count_unchecked(&self, index: usize) -> u64;
}

/// A `u64`, native or archived.
trait Word: Copy {
    fn get(self) -> u64;
}

impl Word for u64 {
    #[inline(always)]
    fn get(self) -> u64 {
        self
    }
}

impl Word for ArchivedU64 {
    #[inline(always)]
    fn get(self) -> u64 {
        self.to_native()
    }
}

/// Keys and counts in two parallel arrays (the run of a [`KeyCounts`], owned or archived).
struct ArrayRun<'a, W> {
    keys: &'a [W],
    counts: &'a [W],
}

impl<'a, W> ArrayRun<'a, W> {
    fn new(keys: &'a [W], counts: &'a [W]) -> Self {
        assert_eq!(
            keys.len(),
            counts.len(),
            "a run of counts needs one count per key"
        );
        Self { keys, counts }
    }
}

impl<W: Word> Run for ArrayRun<'_, W> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.keys.len()
    }

    #[inline(always)]
    fn key(&self, index: usize) -> u64 {
        self.keys[index].get()
    }

    #[inline(always)]
    fn count(&self, index: usize) -> u64 {
        self.counts[index].get()
    }

    #[inline(always)]
    unsafe fn key_unchecked(&self, index: usize) -> u64 {
        // SAFETY: the caller keeps `index < self.len() == self.keys.len()`.
        unsafe { self.keys.get_unchecked(index) }.get()
    }

    #[inline(always)]
    unsafe fn count_unchecked(&self, index: usize) -> u64 {
        // SAFETY: `new` checked that there are as many counts as keys, and the caller
        // keeps `index < self.keys.len()`.
        unsafe { self.counts.get_unchecked(index) }.get()
    }
}

/// `(key, count)` pairs (a sorted pending buffer, owned or archived).
struct PairRun<'a, P>(&'a [P]);

/// A `(key, count)` pair, native or archived.
trait Pair {
    fn key(&self) -> u64;
    fn count(&self) -> u64;
}

impl Pair for (u64, u64) {
    #[inline(always)]
    fn key(&self) -> u64 {
        self.0
    }

    #[inline(always)]
    fn count(&self) -> u64 {
        self.1
    }
}

impl Pair for ArchivedTuple2<ArchivedU64, ArchivedU64> {
    #[inline(always)]
    fn key(&self) -> u64 {
        self.0.to_native()
    }

    #[inline(always)]
    fn count(&self) -> u64 {
        self.1.to_native()
    }
}

impl<P: Pair> Run for PairRun<'_, P> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len()
    }

    #[inline(always)]
    fn key(&self, index: usize) -> u64 {
        self.0[index].key()
    }

    #[inline(always)]
    fn count(&self, index: usize) -> u64 {
        self.0[index].count()
    }

    #[inline(always)]
    unsafe fn key_unchecked(&self, index: usize) -> u64 {
        // SAFETY: the caller keeps `index < self.len() == self.0.len()`.
        unsafe { self.0.get_unchecked(index) }.key()
    }

    #[inline(always)]
    unsafe fn count_unchecked(&self, index: usize) -> u64 {
        // SAFETY: as in `key_unchecked`.
        unsafe { self.0.get_unchecked(index) }.count()
    }
}

/// Archives the pending buffer as a run of `(key, count)` pairs sorted by key.
struct SortedPairs;

impl ArchiveWith<FxHashMap<u64, u64>> for SortedPairs {
    type Archived = ArchivedVec<Archived<(u64, u64)>>;
    type Resolver = VecResolver;

    fn resolve_with(
        field: &FxHashMap<u64, u64>,
        resolver: Self::Resolver,
        out: Place<Self::Archived>,
    ) {
        ArchivedVec::resolve_from_len(field.len(), resolver, out);
    }
}

impl<S> SerializeWith<FxHashMap<u64, u64>, S> for SortedPairs
where
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize_with(
        field: &FxHashMap<u64, u64>,
        serializer: &mut S,
    ) -> Result<Self::Resolver, S::Error> {
        let mut pairs: Vec<(u64, u64)> = field.iter().map(|(&k, &c)| (k, c)).collect();
        pairs.sort_unstable_by_key(|&(key, _)| key);
        ArchivedVec::serialize_from_slice(&pairs, serializer)
    }
}

impl<D> DeserializeWith<ArchivedVec<Archived<(u64, u64)>>, FxHashMap<u64, u64>, D> for SortedPairs
where
    D: Fallible + ?Sized,
{
    fn deserialize_with(
        field: &ArchivedVec<Archived<(u64, u64)>>,
        _: &mut D,
    ) -> Result<FxHashMap<u64, u64>, D::Error> {
        Ok(field
            .iter()
            .map(|pair| (pair.0.to_native(), pair.1.to_native()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn naive(maps: &[&[(u64, u64)]]) -> Vec<(u64, u64)> {
        let mut sums: BTreeMap<u64, u64> = BTreeMap::new();
        for pairs in maps {
            for &(key, count) in *pairs {
                let sum = sums.entry(key).or_insert(0);
                *sum = sum.wrapping_add(count);
            }
        }
        sums.into_iter().collect()
    }

    fn added(pairs: &[(u64, u64)]) -> KeyCounts {
        let mut counts = KeyCounts::new();
        for &(key, n) in pairs {
            counts.add(key, n);
        }
        counts
    }

    #[test]
    fn adds_merge_into_the_run() {
        let mut counts = added(&[(5, 1), (1, 2), (5, 3)]);
        assert_eq!(counts.get(5), 4);
        assert_eq!(counts.len(), 2);
        counts.flush();
        assert_eq!(counts.keys, [1, 5]);
        assert_eq!(counts.counts, [2, 4]);
        counts.add(3, 1);
        counts.add(5, 1);
        assert_eq!(counts.len(), 3);
        assert_eq!(counts.iter().collect::<Vec<_>>(), [(1, 2), (3, 1), (5, 5)]);
        counts.flush();
        assert_eq!(counts.keys, [1, 3, 5]);
        assert!(counts.pending.is_empty());
    }

    #[test]
    fn merging_matching_keys_adds_in_place() {
        let mut lessor = KeyCounts::from_pairs([(1, 1), (2, 2), (3, 3)]);
        let keys = lessor.keys.as_ptr();
        let mut partial = KeyCounts::from_pairs([(1, 10), (3, 30)]);
        lessor.merge_archived(partial.snapshot().unwrap().archived::<KeyCounts>().unwrap());
        assert_eq!(lessor.keys.as_ptr(), keys, "no new key, no reallocation");
        assert_eq!(
            lessor.iter().collect::<Vec<_>>(),
            [(1, 11), (2, 2), (3, 33)]
        );
    }

    #[test]
    fn new_keys_go_everywhere() {
        let mut lessor = KeyCounts::from_pairs([(10, 1), (20, 1), (30, 1)]);
        let partial = KeyCounts::from_pairs([(5, 1), (10, 1), (15, 1), (25, 1), (35, 1)]);
        lessor.merge(&partial);
        assert_eq!(lessor.keys, [5, 10, 15, 20, 25, 30, 35]);
        assert_eq!(lessor.counts, [1, 2, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn unflushed_archives_lose_nothing() {
        let mut partial = KeyCounts::from_pairs([(1, 1), (4, 4)]);
        partial.add(4, 1);
        partial.add(9, 9);
        // Archived without flushing: the buffer travels as a second sorted run.
        let snapshot = Snapshot::of(&partial).unwrap();
        let archived = snapshot.archived::<KeyCounts>().unwrap();
        assert!(archived.is_well_formed());
        assert_eq!(archived.get(4), 5);
        let mut lessor = KeyCounts::from_pairs([(4, 100)]);
        lessor.merge_archived(archived);
        assert_eq!(
            lessor.iter().collect::<Vec<_>>(),
            [(1, 1), (4, 105), (9, 9)]
        );
        let copy: KeyCounts = rkyv::deserialize::<_, rkyv::rancor::Error>(archived).unwrap();
        assert_eq!(copy, partial);
    }

    #[test]
    fn validated_bytes_merge_too() {
        let mut partial = KeyCounts::from_pairs([(2, 2), (8, 8)]);
        let snapshot = partial.snapshot().unwrap();
        let archived =
            dirigo_runtime::snapshot::access_checked::<KeyCounts>(snapshot.as_bytes()).unwrap();
        assert!(archived.is_well_formed());
        let mut lessor = KeyCounts::new();
        lessor.merge_archived(archived);
        assert_eq!(lessor, partial);
    }

    #[test]
    fn counts_wrap_instead_of_panicking() {
        let mut lessor = KeyCounts::from_pairs([(1, u64::MAX)]);
        lessor.merge(&KeyCounts::from_pairs([(1, 2)]));
        assert_eq!(lessor.get(1), 1);
    }

    /// `len` distinct-ish keys below `space`, with counts, from a seed (splitmix64).
    fn random_pairs(seed: u64, len: usize, space: u64) -> Vec<(u64, u64)> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        (0..len).map(|_| (next() % space, next() % 100)).collect()
    }

    /// Merges `b` into `a` owned, archived and flushed-in, and checks all three against
    /// the naive sum.
    fn check_merge(a: &[(u64, u64)], b: &[(u64, u64)]) {
        let expected = naive(&[a, b]);
        let lessor = KeyCounts::from_pairs(a.iter().copied());
        let mut partial = KeyCounts::from_pairs(b.iter().copied());
        let mut owned = lessor.clone();
        owned.merge(&partial);
        let snapshot = partial.snapshot().unwrap();
        let mut in_place = lessor.clone();
        in_place.merge_archived(snapshot.archived::<KeyCounts>().unwrap());
        let mut added = lessor.clone();
        for &(key, n) in b {
            added.add(key, n);
        }
        added.flush();
        for state in [&owned, &in_place, &added] {
            assert!(state.pending.is_empty());
            assert!(state.keys.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(state.keys.len(), state.counts.len());
            assert_eq!(state.iter().collect::<Vec<_>>(), expected);
        }
    }

    #[test]
    fn every_way_of_merging_agrees() {
        // (lessor keys, partial keys, key space): sparse (partial far smaller), dense
        // (partial covers the run), interleaved lanes (a share of the keys), and lanes
        // whose slices run out early (keys bunched at one end).
        for (seed, (a_len, b_len, space)) in [
            (20_000, 100, 1 << 40),
            (20_000, 600, 30_000),
            (3_000, 3_000, 3_200),
            (600, 1_000, 2_000),
            (10_000, 4_000, 14_000),
            (10_000, 4_000, 1 << 50),
            (4_000, 1_000, 5_000),
            (1_000, 300, 1_500),
            // Lanes long enough for several rounds of the lane loop.
            (60_000, 40_000, 1 << 40),
        ]
        .into_iter()
        .enumerate()
        {
            let a = random_pairs(seed as u64, a_len, space);
            let b = random_pairs(1000 + seed as u64, b_len, space);
            check_merge(&a, &b);
            check_merge(&b, &a);
            // Partial keys bunched below and above every lessor key.
            let low: Vec<(u64, u64)> = b.iter().map(|&(k, c)| (k / 1000, c)).collect();
            let high: Vec<(u64, u64)> = b.iter().map(|&(k, c)| (k + (1 << 60), c)).collect();
            check_merge(&a, &low);
            check_merge(&a, &high);
        }
    }

    fn pairs() -> impl Strategy<Value = Vec<(u64, u64)>> {
        // Small key spaces make keys collide; some large keys and counts exercise the
        // full range.
        prop::collection::vec(
            (
                prop_oneof![0u64..64, any::<u64>()],
                prop_oneof![0u64..1000, any::<u64>()],
            ),
            0..200,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn merges_of_any_size_equal_the_naive_sum(
            seed in any::<u64>(),
            a_len in 0usize..5_000,
            b_len in 0usize..3_000,
            space in prop_oneof![1u64..10_000, Just(u64::MAX)],
        ) {
            let a = random_pairs(seed, a_len, space);
            let b = random_pairs(seed ^ 0xABCD, b_len, space);
            check_merge(&a, &b);
        }
    }

    proptest! {
        #[test]
        fn every_merge_equals_the_naive_sum(
            a in pairs(),
            b in pairs(),
            b_unflushed in pairs(),
            a_unflushed in pairs(),
        ) {
            let expected = naive(&[&a, &a_unflushed, &b, &b_unflushed]);

            let mut lessor = KeyCounts::from_pairs(a.iter().copied());
            for &(key, n) in &a_unflushed {
                lessor.add(key, n);
            }
            let mut partial = added(&b);
            partial.flush();
            for &(key, n) in &b_unflushed {
                partial.add(key, n);
            }

            let mut owned = lessor.clone();
            owned.merge(&partial);

            let snapshot = Snapshot::of(&partial).unwrap();
            let mut in_place = lessor.clone();
            in_place.merge_archived(snapshot.archived::<KeyCounts>().unwrap());

            let mut flushed_first = lessor.clone();
            flushed_first.merge_archived(
                partial.snapshot().unwrap().archived::<KeyCounts>().unwrap(),
            );

            for state in [&mut owned, &mut in_place, &mut flushed_first] {
                prop_assert_eq!(state.iter().collect::<Vec<_>>(), expected.clone());
                prop_assert_eq!(state.len(), expected.len());
                for &(key, count) in &expected {
                    prop_assert_eq!(state.get(key), count);
                }
                state.flush();
                prop_assert!(state.keys.windows(2).all(|w| w[0] < w[1]));
                prop_assert_eq!(state.keys.len(), state.counts.len());
                prop_assert_eq!(state.iter().collect::<Vec<_>>(), expected.clone());
            }
        }
    }
}
