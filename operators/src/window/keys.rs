//! One window's per-key table ([`WindowKeys`]): each key's window start and accumulator
//! (in copy-on-write chunks, which a checkpoint freezes without copying: see `chunks`),
//! and how firing takes them out in key order ([`KeyOrder`]: radix sort over integer
//! images of primitive integer keys, sorted runs kept as keys arrive for other keys, or
//! no order at all).

use std::any::{Any, TypeId};

use super::chunks::Chunks;
use crate::dataflow::Time;
use crate::state::Key;
use crate::typed::{sort_image, Value};

/// A window's reused key table gives room back once it has this many times what the
/// last window needed ([`WindowKeys::fit`])...
pub(super) const ROOM_KEPT: usize = 4;
/// ...counting at least this many keys (small tables are not worth shrinking).
pub(super) const MIN_ROOM: usize = 1_024;

/// One open window's state: per key, the window's start and the accumulator; firing
/// takes the keys out in key order, on the latency path, so how they get sorted matters.
///
/// Integer keys (the common case: ids) are radix-sorted when the window fires: the hash
/// map is drained in its own order and sorted in a few linear passes. In `bench peer`
/// (3 000 keys per window and partition) a firing, rows handed on included, took 90 µs
/// at the median against 114–130 µs for the runs described next, and adding records
/// keeps no order at all.
///
/// Other keys are kept sorted as they come, so that firing does not sort them all at
/// once. New keys gather unsorted in `recent`; once there are [`RECENT_RUN_MIN`] of them
/// and at least a quarter as many as in `sorted`, they are sorted and merged into
/// `sorted`. The merges move each key about five times in all (each grows `sorted` by a
/// quarter) and happen as records arrive; a firing sorts at most a quarter of the keys.
/// For 3 000 keys over 46 000 records, firing took half as long as sorting everything at
/// once, and adding the records a fifth longer (against a plain hash map).
#[derive(Clone)]
pub(super) struct WindowKeys<K, A> {
    pub(super) entries: Chunks<K, (Time, A)>,
    /// How firing puts the keys in order.
    order: KeyOrder,
    sorted: Vec<K>,
    recent: Vec<K>,
    /// The entries on their way out of a firing, in the order they leave.
    leaving: Vec<(K, Time, A)>,
}

/// Defines [`integer_image`] and [`has_integer_image`] from one list of key types and
/// their order-preserving images in `u64`.
macro_rules! integer_keys {
    ($($key:ty => |$k:ident| $image:expr),* $(,)?) => {
        /// The image of a primitive integer key in `u64`, in the same order; `None` for
        /// other key types. Integer keys (auction, person, item ids) are the common case,
        /// and they sort by radix in a few linear passes where a comparison sort, or runs
        /// kept sorted as keys arrive, cost several times more.
        #[inline]
        fn integer_image<K: 'static>(key: &K) -> Option<u64> {
            let key: &dyn Any = key;
            $(
                if let Some(&$k) = key.downcast_ref::<$key>() {
                    return Some($image);
                }
            )*
            None
        }

        /// Whether [`integer_image`] maps every `K`.
        fn has_integer_image<K: 'static>() -> bool {
            [$(TypeId::of::<$key>()),*].contains(&TypeId::of::<K>())
        }
    };
}

const SIGN: u64 = 1 << 63;

integer_keys! {
    u64 => |k| k,
    u32 => |k| u64::from(k),
    usize => |k| k as u64,
    i64 => |k| k as u64 ^ SIGN,
    i32 => |k| i64::from(k) as u64 ^ SIGN,
    u16 => |k| u64::from(k),
}

/// The order image of a typed one-field key ([`sort_image`]); `None` for other key
/// types and for text.
#[inline]
fn value_image<K: 'static>(key: &K) -> Option<u128> {
    let key: &dyn Any = key;
    key.downcast_ref::<Value>().and_then(sort_image)
}

/// Fewest new keys of a window sorted and merged together.
const RECENT_RUN_MIN: usize = 256;

/// How a window's keys are put in order for firing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyOrder {
    /// `K` is a primitive integer (see [`integer_image`]): no key is kept in order while
    /// records arrive, and firing radix-sorts the entries by key.
    Radix,
    /// Typed rows' one-field keys ([`Value`]): radix-sorted by a 128-bit image of their
    /// order ([`sort_image`]) while every key has one; a text key turns the window to
    /// `Runs`.
    ValueRadix,
    /// Other keys: kept in sorted runs as they come (`sorted`, `recent`).
    Runs,
    /// No order ([`WindowSpec::any_order`]): firing drains the hash table as it is.
    Any,
}

impl<K: Key, A: Clone> WindowKeys<K, A> {
    /// An empty window whose firing leaves in key order, or in any order.
    pub(super) fn new(any_order: bool) -> Self {
        let order = if any_order {
            KeyOrder::Any
        } else if has_integer_image::<K>() {
            KeyOrder::Radix
        } else if TypeId::of::<K>() == TypeId::of::<Value>() {
            KeyOrder::ValueRadix
        } else {
            KeyOrder::Runs
        };
        Self {
            entries: Chunks::default(),
            order,
            sorted: Vec::new(),
            recent: Vec::new(),
            leaving: Vec::new(),
        }
    }
}

impl<K: Key, A: Clone> WindowKeys<K, A> {
    /// The state of `key`, made with `init` if the window has none yet.
    #[inline]
    pub(super) fn entry(&mut self, key: K, init: impl FnOnce() -> (Time, A)) -> &mut (Time, A) {
        if self.order == KeyOrder::ValueRadix && value_image(&key).is_none() {
            // From now on in sorted runs, which start with every key held.
            self.recent
                .extend(self.entries.iter().map(|(key, _)| key.clone()));
            self.order = KeyOrder::Runs;
        }
        let Self {
            entries,
            order,
            sorted,
            recent,
            ..
        } = self;
        let runs = *order == KeyOrder::Runs;
        let (value, inserted) = entries.entry_with(key, |key| {
            if runs {
                recent.push(key.clone());
            }
            init()
        });
        if inserted && runs && recent.len() >= RECENT_RUN_MIN.max(sorted.len() / 4) {
            Self::merge_recent(sorted, recent);
        }
        value
    }

    fn merge_recent(sorted: &mut Vec<K>, recent: &mut Vec<K>) {
        recent.sort_unstable();
        sorted.append(recent);
        // Two sorted runs back to back: the standard library's stable sort finds them and
        // merges them in one linear pass.
        sorted.sort();
    }

    /// Takes every key's state out, in key order (in the hash table's order for
    /// [`KeyOrder::Any`]). The window is empty afterwards but keeps its room (see
    /// `WindowLogic::spare`).
    pub(super) fn drain_for_firing(&mut self) -> std::vec::Drain<'_, (K, Time, A)> {
        let leaving = &mut self.leaving;
        leaving.clear();
        match self.order {
            KeyOrder::Radix | KeyOrder::ValueRadix | KeyOrder::Any => {
                // Out of the hash map in its own order, one linear pass; then a stable LSD
                // radix sort, which skips the bytes every key shares (ids rarely use all 8).
                self.entries
                    .drain_into(leaving, |key, (start, acc)| (key, start, acc));
                if self.order == KeyOrder::Radix {
                    radsort::sort_by_key(leaving, |(key, _, _)| {
                        integer_image(key).expect("radix windows hold integer keys")
                    });
                } else if self.order == KeyOrder::ValueRadix {
                    radsort::sort_by_key(leaving, |(key, _, _)| {
                        value_image(key).expect("value radix windows hold keys with an image")
                    });
                }
            }
            KeyOrder::Runs => {
                Self::merge_recent(&mut self.sorted, &mut self.recent);
                let entries = &mut self.entries;
                leaving.extend(self.sorted.drain(..).filter_map(|key| {
                    let (start, acc) = entries.remove(&key)?;
                    Some((key, start, acc))
                }));
            }
        }
        self.leaving.drain(..)
    }

    /// Forgets every key, keeping the room the window grew (removals can leave
    /// tombstones in the hash map; clearing resets it to a fresh table of the same size).
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.sorted.clear();
        self.recent.clear();
        self.leaving.clear();
    }

    /// After [`clear`](Self::clear): gives back the room past what a window of `keys`
    /// keys needs, once it is more than [`ROOM_KEPT`] times that. A window that once held
    /// a burst of keys keeps its table for the next window (see
    /// `WindowLogic::spare`); without this, one burst would keep the largest table, and
    /// its memory, for as long as the pipeline runs.
    pub(super) fn fit(&mut self, keys: usize) {
        let wanted = keys.max(MIN_ROOM);
        if self.entries.capacity() > ROOM_KEPT * wanted {
            self.entries.shrink_to(2 * wanted);
        }
        for room in [&mut self.sorted, &mut self.recent] {
            if room.capacity() > ROOM_KEPT * wanted {
                room.shrink_to(2 * wanted);
            }
        }
        if self.leaving.capacity() > ROOM_KEPT * wanted {
            self.leaving.shrink_to(2 * wanted);
        }
    }

    /// Every key's state, in no particular order.
    pub(super) fn into_unordered(self) -> impl Iterator<Item = (K, Time, A)> {
        self.entries
            .into_unordered()
            .map(|(key, (start, acc))| (key, start, acc))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// However keys arrive (repeats, runs merged early or at the end), a window's keys
        /// leave in key order, each once, with everything folded into it; and a window
        /// emptied that way and reused as the next one (as firing does) starts clean. For
        /// integer keys, sorted by radix (negative ones included), and for others.
        #[test]
        fn window_keys_leave_in_key_order_with_their_folds(
            rounds in proptest::collection::vec(
                proptest::collection::vec(-3_000i64..3_000, 0..4_000),
                1..3,
            ),
        ) {
            for any_order in [false, true] {
                check_window_keys(&rounds, any_order, |key| key as u32)?;
                check_window_keys(&rounds, any_order, |key| key)?;
                check_window_keys(&rounds, any_order, |key| (key * 1_000_003) as u64)?;
                check_window_keys(&rounds, any_order, |key| format!("{key}"))?;
            }
        }
    }

    /// Ordered windows: exactly the expected entries, in key order. Windows in any order:
    /// the same entries, each once, in whatever order.
    fn check_window_keys<K: Key + std::fmt::Debug>(
        rounds: &[Vec<i64>],
        any_order: bool,
        key_of: impl Fn(i64) -> K,
    ) -> Result<(), TestCaseError> {
        let mut window: WindowKeys<K, u64> = WindowKeys::new(any_order);
        for keys in rounds {
            let mut expected: BTreeMap<K, u64> = BTreeMap::new();
            for (i, key) in keys.iter().enumerate() {
                let (_, acc) = window.entry(key_of(*key), || (7, 0));
                *acc += i as u64;
                *expected.entry(key_of(*key)).or_insert(0) += i as u64;
            }
            let mut out: Vec<(K, Time, u64)> = window.drain_for_firing().collect();
            if any_order {
                prop_assert!(window.sorted.is_empty() && window.recent.is_empty());
                out.sort_by(|a, b| a.0.cmp(&b.0));
            }
            let expected: Vec<(K, Time, u64)> = expected
                .into_iter()
                .map(|(key, sum)| (key, 7, sum))
                .collect();
            prop_assert_eq!(out, expected);
            window.clear();
            prop_assert!(window.entries.is_empty());
        }
        Ok(())
    }

    #[test]
    fn a_reused_window_gives_back_the_room_of_a_burst() {
        let mut window: WindowKeys<u64, u64> = WindowKeys::new(false);
        let fill = |window: &mut WindowKeys<u64, u64>, keys: u64| {
            for key in 0..keys {
                window.entry(key, || (0, 0)).1 += 1;
            }
            let held = window.entries.len();
            assert_eq!(window.drain_for_firing().count() as u64, keys);
            window.clear();
            window.fit(held);
        };
        // A burst of 200 000 keys: the table keeps its room for the next window alike.
        fill(&mut window, 200_000);
        let burst_room = window.entries.capacity();
        assert!(burst_room >= 200_000);
        fill(&mut window, 150_000);
        assert_eq!(
            window.entries.capacity(),
            burst_room,
            "no shrink for a like window"
        );
        // Back to 100 keys: the room goes back down to a small table.
        fill(&mut window, 100);
        assert!(
            window.entries.capacity() <= 4 * MIN_ROOM,
            "{}",
            window.entries.capacity()
        );
        assert!(window.leaving.capacity() <= 4 * MIN_ROOM);
        // And it still works.
        fill(&mut window, 5_000);
        assert!(window.entries.capacity() >= 5_000);
    }
}
