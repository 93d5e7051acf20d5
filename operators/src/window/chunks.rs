//! A window's key table in copy-on-write chunks ([`Chunks`]): a hash map split by key
//! hash into chunks of about [`CHUNK_KEYS`] keys, each behind an `Arc`, so that a
//! checkpoint takes the whole table by cloning the `Arc`s (a few µs for a million
//! keys) and archives it off the shard. A chunk the checkpoint still holds is copied
//! the first time the shard writes to it afterwards ([`Arc::make_mut`]): one chunk of
//! about [`CHUNK_KEYS`] keys at a time, not the whole table at the barrier; once the
//! checkpoint's writer has archived a chunk and let go of it, writes touch it in place
//! again.
//!
//! The table grows by linear hashing: once it holds [`CHUNK_KEYS`] keys per chunk, an
//! insert splits one chunk (the next in line) into two, so growing costs each insert a
//! share of one chunk's keys. Splitting every chunk at once when the table doubled held
//! the shard for milliseconds at a million keys (every key rehashed in one handler), and
//! another app's records waited behind it.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use rustc_hash::{FxBuildHasher, FxHashMap};

/// Keys per chunk, on average, before the table splits one more chunk in two. Small enough that
/// copying one chunk after a checkpoint is short (at 1 KiB a key, about 1 MiB), large
/// enough that a window of a few thousand keys stays in a chunk or a few.
pub(super) const CHUNK_KEYS: usize = 1_024;

/// The most chunks a table splits into (tables past `CHUNK_KEYS × MAX_CHUNKS` keys grow
/// their chunks instead). A power of two.
const MAX_CHUNKS: usize = 1 << 14;

/// A hash map in copy-on-write chunks (see the [module docs](self)).
pub(super) struct Chunks<K, V> {
    chunks: Vec<Arc<FxHashMap<K, V>>>,
    /// The round of linear hashing: `2^bits` chunks at its start, `2^(bits + 1)` at its
    /// end.
    bits: u32,
    /// The next chunk to split in this round: chunks below it are split already, and
    /// their keys (and those of their new halves, from `2^bits` on) are found with one
    /// more bit of the hash.
    next_split: usize,
    len: usize,
}

impl<K: Clone, V: Clone> Clone for Chunks<K, V> {
    fn clone(&self) -> Self {
        Self {
            chunks: self
                .chunks
                .iter()
                .map(|chunk| Arc::new(FxHashMap::clone(chunk)))
                .collect(),
            bits: self.bits,
            next_split: self.next_split,
            len: self.len,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Default for Chunks<K, V> {
    fn default() -> Self {
        Self::with_chunks(1)
    }
}

/// A frozen view of a [`Chunks`] table, as a checkpoint holds it: its chunks, shared with
/// the table until the table writes to them.
pub(super) type Frozen<K, V> = Vec<Arc<FxHashMap<K, V>>>;

impl<K: Hash + Eq + Clone, V: Clone> Chunks<K, V> {
    fn with_chunks(chunks: usize) -> Self {
        let chunks = chunks.next_power_of_two().clamp(1, MAX_CHUNKS);
        Self {
            chunks: (0..chunks).map(|_| Arc::default()).collect(),
            bits: chunks.trailing_zeros(),
            next_split: 0,
            len: 0,
        }
    }

    /// The chunk of `key`: bits from the middle of its hash, which the chunk's own hash
    /// map uses for neither its bucket index (the low bits) nor its tags (the top 7);
    /// one bit more for the chunks already split in this round.
    #[inline]
    fn chunk_of(&self, key: &K) -> usize {
        if self.chunks.len() == 1 {
            return 0;
        }
        Self::index(FxBuildHasher.hash_one(key), self.bits, self.next_split)
    }

    #[inline]
    fn index(hash: u64, bits: u32, next_split: usize) -> usize {
        let middle = (hash >> 32) as usize;
        let index = middle & ((1 << bits) - 1);
        if index < next_split {
            middle & ((1 << (bits + 1)) - 1)
        } else {
            index
        }
    }

    /// Whether holding `keys` keys calls for one more chunk.
    #[inline]
    fn needs_split(&self, keys: usize) -> bool {
        keys > CHUNK_KEYS * self.chunks.len() && self.chunks.len() < MAX_CHUNKS
    }

    /// How many keys the table holds.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no key.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys the table holds room for.
    pub(super) fn capacity(&self) -> usize {
        self.chunks.iter().map(|chunk| chunk.capacity()).sum()
    }

    /// The value of `key`, made with `init` (shown the key) if the table has none, and
    /// whether it was made; copies the key's chunk first if a checkpoint still holds it.
    #[inline]
    pub(super) fn entry_with(&mut self, key: K, init: impl FnOnce(&K) -> V) -> (&mut V, bool) {
        if self.needs_split(self.len + 1) {
            self.split_one();
        }
        let index = self.chunk_of(&key);
        let chunk = Arc::make_mut(&mut self.chunks[index]);
        use std::collections::hash_map::Entry;
        match chunk.entry(key) {
            Entry::Occupied(entry) => (entry.into_mut(), false),
            Entry::Vacant(slot) => {
                self.len += 1;
                let value = init(slot.key());
                (slot.insert(value), true)
            }
        }
    }

    /// The value of `key`, if the table has it (its chunk copied first if a checkpoint
    /// still holds it).
    #[inline]
    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let index = self.chunk_of(key);
        if !self.chunks[index].contains_key(key) {
            return None;
        }
        Arc::make_mut(&mut self.chunks[index]).get_mut(key)
    }

    /// Takes `key` out.
    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let index = self.chunk_of(key);
        if !self.chunks[index].contains_key(key) {
            return None;
        }
        let value = Arc::make_mut(&mut self.chunks[index]).remove(key);
        self.len -= usize::from(value.is_some());
        value
    }

    /// Room for `more` keys beyond those held: split into as many chunks as they need,
    /// each with its share of room.
    pub(super) fn reserve(&mut self, more: usize) {
        let wanted = self.len + more;
        while self.needs_split(wanted) {
            self.split_one();
        }
        let share = wanted.div_ceil(self.chunks.len());
        for chunk in &mut self.chunks {
            let held = chunk.len();
            if share > held {
                Arc::make_mut(chunk).reserve(share - held);
            }
        }
    }

    /// One more chunk: the next in line splits in two, its keys that the next bit of
    /// their hash sends to the new chunk moving there (a chunk a checkpoint still holds
    /// is left to it, its keys copied).
    fn split_one(&mut self) {
        let splitting = self.next_split;
        let old = std::mem::take(&mut self.chunks[splitting]);
        let entries = Arc::try_unwrap(old).unwrap_or_else(|shared| (*shared).clone());
        let share = entries.len() / 2 + 1;
        let (mut stay, mut moved) = (
            FxHashMap::with_capacity_and_hasher(share + share / 8, FxBuildHasher),
            FxHashMap::with_capacity_and_hasher(share + share / 8, FxBuildHasher),
        );
        let (bits, next) = (self.bits, self.next_split + 1);
        for (key, value) in entries {
            if Self::index(FxBuildHasher.hash_one(&key), bits, next) == splitting {
                stay.insert(key, value);
            } else {
                moved.insert(key, value);
            }
        }
        self.chunks[splitting] = Arc::new(stay);
        self.chunks.push(Arc::new(moved));
        self.next_split = next;
        if self.next_split == 1 << self.bits {
            self.bits += 1;
            self.next_split = 0;
        }
    }

    /// Every key and value, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    /// Moves every key and value into `out`, in no particular order, leaving the table
    /// empty with its room (a chunk a checkpoint still holds is copied out and left to
    /// it, and replaced by an empty one).
    pub(super) fn drain_into<T>(&mut self, out: &mut Vec<T>, mut make: impl FnMut(K, V) -> T) {
        out.reserve(self.len);
        for chunk in &mut self.chunks {
            match Arc::get_mut(chunk) {
                Some(mine) => out.extend(mine.drain().map(|(key, value)| make(key, value))),
                None => {
                    out.extend(
                        chunk
                            .iter()
                            .map(|(key, value)| make(key.clone(), value.clone())),
                    );
                    *chunk = Arc::default();
                }
            }
        }
        self.len = 0;
    }

    /// Forgets every key, keeping the room (a chunk a checkpoint still holds is left to
    /// it and replaced by an empty one).
    pub(super) fn clear(&mut self) {
        for chunk in &mut self.chunks {
            match Arc::get_mut(chunk) {
                Some(mine) => mine.clear(),
                None => *chunk = Arc::default(),
            }
        }
        self.len = 0;
    }

    /// Gives back room past `keys` keys (of an empty table): fewer chunks, each
    /// shrunk to its share.
    pub(super) fn shrink_to(&mut self, keys: usize) {
        if self.len == 0 {
            let chunks = keys.div_ceil(CHUNK_KEYS).max(1);
            if chunks < self.chunks.len() {
                *self = Self::with_chunks(chunks);
            }
        }
        let share = keys.div_ceil(self.chunks.len());
        for chunk in &mut self.chunks {
            if let Some(mine) = Arc::get_mut(chunk) {
                mine.shrink_to(share);
            }
        }
    }

    /// Every key and value, taken out, in no particular order.
    pub(super) fn into_unordered(self) -> impl Iterator<Item = (K, V)> {
        self.chunks.into_iter().flat_map(|chunk| {
            Arc::try_unwrap(chunk)
                .unwrap_or_else(|shared| (*shared).clone())
                .into_iter()
        })
    }

    /// Chunks a frozen view still shares with the table (each is copied on the table's
    /// next write to it).
    #[cfg(test)]
    pub(super) fn shared_chunks(&self) -> usize {
        self.chunks
            .iter()
            .filter(|chunk| Arc::strong_count(chunk) > 1)
            .count()
    }

    /// The table as it is now, for a checkpoint: its chunks, shared (`O(chunks)`); the
    /// table copies a chunk the first time it writes to it while the checkpoint holds it.
    pub(super) fn freeze(&self) -> Frozen<K, V> {
        self.chunks.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A frozen view, and what the table held when it was frozen.
    type FrozenThen = (Frozen<u64, u64>, Vec<(u64, u64)>);

    proptest! {
        /// A chunked table holds what a plain map holds through inserts, updates,
        /// removals, drains and clears, across splits; and a frozen view keeps the table
        /// as it was when frozen, however the table changes afterwards.
        #[test]
        fn chunks_behave_as_one_map_and_frozen_views_stay_put(
            steps in proptest::collection::vec((0u64..6_000, 0u8..10), 0..8_000),
        ) {
            let mut table: Chunks<u64, u64> = Chunks::default();
            let mut model: std::collections::HashMap<u64, u64> = Default::default();
            let mut frozen: Option<FrozenThen> = None;
            for (i, &(key, op)) in steps.iter().enumerate() {
                match op {
                    0 => {
                        prop_assert_eq!(table.remove(&key), model.remove(&key));
                    }
                    1 if i % 97 == 0 => {
                        let mut model_now: Vec<(u64, u64)> =
                            model.iter().map(|(k, v)| (*k, *v)).collect();
                        model_now.sort_unstable();
                        frozen = Some((table.freeze(), model_now));
                    }
                    2 if i % 1_999 == 0 => {
                        let mut out = Vec::new();
                        table.drain_into(&mut out, |k, v| (k, v));
                        out.sort_unstable();
                        let mut want: Vec<(u64, u64)> = model.drain().collect();
                        want.sort_unstable();
                        prop_assert_eq!(out, want);
                    }
                    3 => {
                        if let Some(value) = table.get_mut(&key) {
                            *value += 3;
                        }
                        if let Some(value) = model.get_mut(&key) {
                            *value += 3;
                        }
                    }
                    _ => {
                        let (value, _) = table.entry_with(key, |_| 0);
                        *value += 1;
                        *model.entry(key).or_insert(0) += 1;
                    }
                }
                prop_assert_eq!(table.len(), model.len());
            }
            let mut got: Vec<(u64, u64)> = table.iter().map(|(k, v)| (*k, *v)).collect();
            got.sort_unstable();
            let mut want: Vec<(u64, u64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            want.sort_unstable();
            prop_assert_eq!(got, want);
            if let Some((view, then)) = frozen {
                let mut held: Vec<(u64, u64)> = view
                    .iter()
                    .flat_map(|chunk| chunk.iter().map(|(k, v)| (*k, *v)))
                    .collect();
                held.sort_unstable();
                prop_assert_eq!(held, then);
            }
            table.clear();
            prop_assert!(table.is_empty());
            prop_assert_eq!(table.iter().count(), 0);
        }
    }

    #[test]
    fn growing_splits_one_chunk_at_a_time() {
        let mut table: Chunks<u64, u64> = Chunks::default();
        let mut key = 0;
        while table.chunks.len() < 64 {
            let view = table.freeze();
            table.entry_with(key, |_| key);
            key += 1;
            // At most one chunk split (its two halves) and the key's own chunk changed;
            // every other chunk is the one it was.
            let changed = view
                .iter()
                .zip(&table.chunks)
                .filter(|(a, b)| !Arc::ptr_eq(a, b))
                .count();
            assert!(changed <= 2, "{changed} chunks changed at key {key}");
            assert!(table.chunks.len() <= view.len() + 1);
        }
        assert_eq!(table.len(), key as usize);
        assert!(table.iter().all(|(k, v)| k == v));
    }

    #[test]
    fn a_large_table_splits_into_chunks_and_freezing_copies_nothing() {
        let mut table: Chunks<u64, [u64; 4]> = Chunks::default();
        for key in 0..200_000u64 {
            table.entry_with(key, |_| [key; 4]);
        }
        assert!(table.chunks.len() >= 200_000 / CHUNK_KEYS);
        assert!(table
            .chunks
            .iter()
            .all(|chunk| chunk.len() <= 3 * CHUNK_KEYS));
        let mut all: Vec<u64> = table.iter().map(|(key, _)| *key).collect();
        all.sort_unstable();
        assert_eq!(all, (0..200_000).collect::<Vec<_>>());
        let view = table.freeze();
        // The view shares every chunk: nothing was copied.
        assert!(view
            .iter()
            .zip(&table.chunks)
            .all(|(a, b)| Arc::ptr_eq(a, b)));
        // One write copies one chunk, not the table.
        table.entry_with(7, |_| [0; 4]).0[0] = 99;
        let copied = view
            .iter()
            .zip(&table.chunks)
            .filter(|(a, b)| !Arc::ptr_eq(a, b))
            .count();
        assert_eq!(copied, 1);
        assert_eq!(view.iter().find_map(|chunk| chunk.get(&7)), Some(&[7; 4]));
    }
}
