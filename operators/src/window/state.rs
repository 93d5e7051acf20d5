//! The keyed state of one window operator partition ([`WindowState`]): its open windows
//! by end and key, its open sessions, and how that state travels between a lessee and
//! its lessor — archived with rkyv at a barrier, merged by reading the archive in place.
//!
//! # The archived form
//!
//! A partial state is archived as a [`PartialWindows`]: the aligned (tumbling, sliding)
//! windows one group each — the window's start and end once, then its keys and
//! accumulators — and the open sessions as `(end, key, start, accumulator)` entries. The
//! lessor merges it without deserializing it: per window group, one lookup of the
//! window and one check of whether it already fired; per entry, the key and the
//! accumulator are read from the archive as the merge folds them in ([`Unarchiver`]: a
//! load for primitive keys and accumulators, an entry-by-entry conversion for others).
//! No owned copy of the partial state is made.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use dirigo_runtime::background;
use dirigo_runtime::{Snapshot, SnapshotError};
use rustc_hash::FxHashMap;

use super::chunks::Frozen;
use super::keys::WindowKeys;
use super::{Window, WindowSpec, Windows};
use crate::dataflow::Time;
use crate::state::{Key, Portable, Unarchiver};

/// A partial window state as it travels in a [`Snapshot`]: `(aligned windows,
/// sessions)`.
pub type PartialWindows<K, A> = (Vec<PartialWindow<K, A>>, Vec<PartialSession<K, A>>);

/// One aligned window of a [`PartialWindows`]: `(start, end, [(key, accumulator)])`.
pub type PartialWindow<K, A> = (Time, Time, Vec<(K, A)>);

/// One open session of a [`PartialWindows`]: `(end, key, start, accumulator)`.
pub type PartialSession<K, A> = (Time, K, Time, A);

/// An aligned window of a [`FrozenWindows`]: its end, and its key table's chunks (each
/// key's window start and accumulator) as they were.
type FrozenWindow<K, A> = (Time, Frozen<K, (Time, A)>);

/// A window state frozen for a checkpoint ([`WindowState::freeze`]): archived off the
/// shard, in the [archived form](PartialWindows) a lessee hands over.
pub struct FrozenWindows<K, A> {
    aligned: Vec<FrozenWindow<K, A>>,
    sessions: Vec<PartialSession<K, A>>,
}

impl<K: Key, A: Portable + Clone> FrozenWindows<K, A> {
    /// Archives the frozen state as a [`PartialWindows`] (what
    /// [`WindowState::snapshot`] would have made of it, without emptying the state).
    /// Each chunk is let go as soon as its keys are copied out, so the shard writes to it
    /// in place again instead of copying it.
    pub fn archive(self) -> Result<Snapshot, SnapshotError> {
        let aligned: Vec<PartialWindow<K, A>> = self
            .aligned
            .into_iter()
            .filter_map(|(end, chunks)| {
                let mut entries = Vec::with_capacity(chunks.iter().map(|c| c.len()).sum());
                let mut start = None;
                for chunk in chunks {
                    for (key, (window_start, acc)) in chunk.iter() {
                        start = Some(*window_start);
                        entries.push((key.clone(), acc.clone()));
                    }
                    drop(chunk);
                    // Off the shard (the checkpoint thread): a shard waiting for this
                    // CPU gets it between chunks.
                    background::give_way();
                }
                // Every key of an aligned window shares the window's start.
                Some((start?, end, entries))
            })
            .collect();
        let entries: usize = aligned.iter().map(|(_, _, entries)| entries.len()).sum();
        let expected = (entries + self.sessions.len()) * std::mem::size_of::<(K, A, Time)>();
        Snapshot::of_sized(&(aligned, self.sessions), expected + 4096)
    }
}

/// A key's session that has not fired yet.
#[derive(Clone)]
pub(super) struct OpenSession<A> {
    pub(super) start: Time,
    pub(super) end: Time,
    pub(super) acc: A,
    /// The end under which `session_ends` holds this session's entry (at most `end`).
    pub(super) queued_at: Time,
}

/// The open windows of one window operator partition, per window and key: what a lessee
/// hands over at a barrier ([`snapshot`](Self::snapshot)) and its lessor merges in place
/// ([`merge`](Self::merge)). The window operators (`KeyedStream::window`, its
/// `window_count`, `window_top_k` and `window_join`) keep their state in one.
///
/// ```
/// use dirigo_operators::window::{Window, WindowState, Windows};
///
/// let sum = |total: &mut u64, more: u64| *total += more;
/// let window = Window { start: 0, end: 10 };
/// // A lessee's partial counts, handed over at a barrier...
/// let mut lessee = WindowState::<u64, u64>::new(Windows::Tumbling { size: 10 });
/// lessee.add(window, 7, 2, &sum);
/// lessee.add(window, 8, 1, &sum);
/// let partial = lessee.snapshot().unwrap().expect("two keys");
/// assert!(lessee.is_empty());
///
/// // ...merged by its lessor, reading the archive in place.
/// let mut lessor = WindowState::<u64, u64>::new(Windows::Tumbling { size: 10 });
/// lessor.add(window, 7, 5, &sum);
/// let late = lessor.merge(&partial, 0, &sum).unwrap();
/// assert_eq!(late, 0);
/// let mut counts: Vec<(u64, u64)> = lessor.entries().map(|(_, key, n)| (*key, *n)).collect();
/// counts.sort();
/// assert_eq!(counts, [(7, 7), (8, 1)]);
/// ```
pub struct WindowState<K, A> {
    spec: WindowSpec,
    /// Tumbling and sliding windows: by end, then by key (a hash map: every record
    /// touches it, while only firing needs the keys in order).
    pub(super) windows: BTreeMap<Time, WindowKeys<K, A>>,
    /// Session windows: per key, its open sessions.
    pub(super) sessions: FxHashMap<K, Vec<OpenSession<A>>>,
    /// Session ends to look at, earliest first: one entry per session, at the end it
    /// had when queued (a session that grew since is queued again at its new end when
    /// that entry comes up; entries of sessions merged into others are skipped). Queuing
    /// every record's end instead would keep one entry per record of the last gap.
    pub(super) session_ends: BinaryHeap<Reverse<(Time, K)>>,
    /// The last fired window's key state, emptied: the next window to open starts with
    /// its hash map and key runs already grown to a window's size, instead of growing
    /// them again (a dozen rehashes of every key so far) while records arrive.
    pub(super) spare: Option<WindowKeys<K, A>>,
}

impl<K: Clone, A: Clone> Clone for WindowState<K, A> {
    fn clone(&self) -> Self {
        Self {
            spec: self.spec,
            windows: self.windows.clone(),
            sessions: self.sessions.clone(),
            session_ends: self.session_ends.clone(),
            spare: self.spare.clone(),
        }
    }

    /// Copies `source` into `self`'s allocations where it can (a state that lives
    /// across merges keeps the room it has grown).
    fn clone_from(&mut self, source: &Self) {
        self.spec = source.spec;
        self.sessions.clone_from(&source.sessions);
        self.session_ends.clone_from(&source.session_ends);
        self.spare.clone_from(&source.spare);
        if self.windows.len() == source.windows.len()
            && self.windows.keys().eq(source.windows.keys())
        {
            for (mine, theirs) in self.windows.values_mut().zip(source.windows.values()) {
                mine.clone_from(theirs);
            }
        } else {
            self.windows.clone_from(&source.windows);
        }
    }
}

/// The key state of the window ending at `end`, opened with `spare`'s room if it is new.
#[inline]
pub(super) fn open_window<'w, K: Key, A: Clone>(
    windows: &'w mut BTreeMap<Time, WindowKeys<K, A>>,
    spare: &mut Option<WindowKeys<K, A>>,
    end: Time,
    any_order: bool,
) -> &'w mut WindowKeys<K, A> {
    windows
        .entry(end)
        .or_insert_with(|| spare.take().unwrap_or_else(|| WindowKeys::new(any_order)))
}

impl<K: Key, A: Portable + Clone> WindowState<K, A> {
    /// No open window.
    pub fn new(spec: impl Into<WindowSpec>) -> Self {
        Self {
            spec: spec.into(),
            windows: BTreeMap::new(),
            sessions: FxHashMap::default(),
            session_ends: BinaryHeap::new(),
            spare: None,
        }
    }

    /// The windows this state holds.
    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// How many `(window, key)` accumulators are open.
    pub fn len(&self) -> usize {
        let aligned: usize = self.windows.values().map(|keys| keys.entries.len()).sum();
        aligned + self.sessions.values().map(Vec::len).sum::<usize>()
    }

    /// Whether no accumulator is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every open `(window, key, accumulator)`, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (Window, &K, &A)> {
        let aligned = self.windows.iter().flat_map(|(&end, keys)| {
            keys.entries
                .iter()
                .map(move |(key, (start, acc))| (Window { start: *start, end }, key, acc))
        });
        let sessions = self.sessions.iter().flat_map(|(key, sessions)| {
            sessions.iter().map(move |session| {
                let window = Window {
                    start: session.start,
                    end: session.end,
                };
                (window, key, &session.acc)
            })
        });
        aligned.chain(sessions)
    }

    /// Folds `acc`, an accumulator of `key` in `window`, into the state: combined with
    /// `merge` into the one already open, or opened with it. For sessions, every open
    /// session of `key` that `window` overlaps merges into one.
    pub fn add(&mut self, window: Window, key: K, acc: A, merge: &dyn Fn(&mut A, A)) {
        if let Windows::Session { .. } = self.spec.windows {
            self.insert_session(key, window.start, window.end, acc, merge);
            return;
        }
        let keys = open_window(
            &mut self.windows,
            &mut self.spare,
            window.end,
            self.spec.any_order,
        );
        match keys.entries.get_mut(&key) {
            Some((_, mine)) => merge(mine, acc),
            None => {
                keys.entry(key, || (window.start, acc));
            }
        }
    }

    /// Adds session `[start, end)` for `key`, merging every session it overlaps.
    pub(super) fn insert_session(
        &mut self,
        key: K,
        mut start: Time,
        mut end: Time,
        mut acc: A,
        merge: &dyn Fn(&mut A, A),
    ) {
        let sessions = self.sessions.entry(key.clone()).or_default();
        // The earliest entry among the sessions this one absorbs stands for it.
        let mut queued_at: Option<Time> = None;
        let mut index = 0;
        while index < sessions.len() {
            let session = &sessions[index];
            if session.start < end && start < session.end {
                let other = sessions.swap_remove(index);
                start = start.min(other.start);
                end = end.max(other.end);
                queued_at = Some(queued_at.map_or(other.queued_at, |at| at.min(other.queued_at)));
                merge(&mut acc, other.acc);
            } else {
                index += 1;
            }
        }
        let queued_at = queued_at.unwrap_or_else(|| {
            self.session_ends.push(Reverse((end, key)));
            end
        });
        sessions.push(OpenSession {
            start,
            end,
            acc,
            queued_at,
        });
    }

    /// Hands the whole state over, archived as a [`PartialWindows`], and leaves it empty;
    /// `None` when nothing is open.
    pub fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
        let aligned: Vec<PartialWindow<K, A>> = std::mem::take(&mut self.windows)
            .into_iter()
            .filter_map(|(end, keys)| {
                let mut start = None;
                let entries: Vec<(K, A)> = keys
                    .into_unordered()
                    .map(|(key, window_start, acc)| {
                        start = Some(window_start);
                        (key, acc)
                    })
                    .collect();
                // Every key of an aligned window shares the window's start.
                Some((start?, end, entries))
            })
            .collect();
        let mut sessions = Vec::new();
        for (key, open) in self.sessions.drain() {
            for session in open {
                sessions.push((session.end, key.clone(), session.start, session.acc));
            }
        }
        self.session_ends.clear();
        if aligned.is_empty() && sessions.is_empty() {
            return Ok(None);
        }
        Snapshot::of(&(aligned, sessions)).map(Some)
    }

    /// The whole state as it is now, for a checkpoint, leaving it as it is (`None` when
    /// nothing is open): the aligned windows' key tables frozen (their copy-on-write
    /// chunks shared, nothing copied), the open sessions copied (sessions are few next
    /// to keyed windows' keys). [`FrozenWindows::archive`] archives it, off the shard.
    pub fn freeze(&self) -> Option<FrozenWindows<K, A>> {
        let aligned: Vec<FrozenWindow<K, A>> = self
            .windows
            .iter()
            .filter(|(_, keys)| !keys.entries.is_empty())
            .map(|(&end, keys)| (end, keys.entries.freeze()))
            .collect();
        let sessions: Vec<PartialSession<K, A>> = self
            .sessions
            .iter()
            .flat_map(|(key, open)| {
                open.iter()
                    .map(|session| (session.end, key.clone(), session.start, session.acc.clone()))
            })
            .collect();
        if aligned.is_empty() && sessions.is_empty() {
            return None;
        }
        Some(FrozenWindows { aligned, sessions })
    }

    /// Merges a lessee's partial state (a [`snapshot`](Self::snapshot)) into this one,
    /// reading the archive in place (see the [archived form](crate::window::PartialWindows)); `merge`
    /// combines two accumulators of one window and key. Windows that already fired at
    /// `frontier` take nothing: their entries are returned as the count of late ones.
    pub fn merge(
        &mut self,
        partial: &Snapshot,
        frontier: Time,
        merge: &dyn Fn(&mut A, A),
    ) -> Result<u64, SnapshotError> {
        let archived = partial.archived::<PartialWindows<K, A>>()?;
        self.merge_archived(archived, frontier, merge)
    }

    /// [`merge`](Self::merge) from the archived form wherever it lies: a snapshot, or
    /// bytes mapped from a checkpoint file and validated in place (no copy).
    pub(crate) fn merge_archived(
        &mut self,
        archived: &rkyv::Archived<PartialWindows<K, A>>,
        frontier: Time,
        merge: &dyn Fn(&mut A, A),
    ) -> Result<u64, SnapshotError> {
        let (aligned, sessions) = (&archived.0, &archived.1);
        let mut unarchiver = Unarchiver::new();
        let mut late = 0u64;
        for window in aligned.iter() {
            let (start, end) = (window.0.to_native(), window.1.to_native());
            if self.spec.fired(end, frontier) {
                late += window.2.len() as u64;
                continue;
            }
            let keys = open_window(&mut self.windows, &mut self.spare, end, self.spec.any_order);
            // Room at once for the keys the window surely lacks (all of them when it is
            // empty: a restore, a fresh lessor), not a dozen rehashes. Not for every key
            // of the partial: most are usually held already, and room for them would
            // split chunks the merge never fills (keys that turn out new split chunks
            // one at a time as they come).
            let held = keys.entries.len();
            keys.entries.reserve(window.2.len().saturating_sub(held));
            for entry in window.2.iter() {
                let key: K = unarchiver.owned(&entry.0)?;
                // One lookup: the accumulator opens the key's entry, or is merged into
                // the one there.
                let mut acc = Some(unarchiver.owned::<A>(&entry.1)?);
                let (_, mine) = keys.entry(key, || (start, acc.take().expect("taken once")));
                if let Some(acc) = acc {
                    merge(mine, acc);
                }
            }
        }
        for session in sessions.iter() {
            let end = session.0.to_native();
            if self.spec.fired(end, frontier) {
                late += 1;
                continue;
            }
            let key: K = unarchiver.owned(&session.1)?;
            let acc: A = unarchiver.owned(&session.3)?;
            self.insert_session(key, session.2.to_native(), end, acc, merge);
        }
        Ok(late)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Each record's windows, folded in as a count and a list of the record's times.
    fn fold_in<K: Key>(state: &mut WindowState<K, (u64, Vec<u32>)>, key: K, time: Time) {
        let merge = |acc: &mut (u64, Vec<u32>), other: (u64, Vec<u32>)| {
            acc.0 += other.0;
            acc.1.extend(other.1);
        };
        let mut windows = Vec::new();
        state.spec.assign(time, |window| windows.push(window));
        for window in windows {
            state.add(window, key.clone(), (1, vec![time as u32]), &merge);
        }
    }

    /// The state's entries, sorted, with each list of times sorted.
    fn contents<K: Key>(
        state: &WindowState<K, (u64, Vec<u32>)>,
    ) -> Vec<(Window, K, u64, Vec<u32>)> {
        let mut out: Vec<_> = state
            .entries()
            .map(|(window, key, (count, times))| {
                let mut times = times.clone();
                times.sort_unstable();
                (window, key.clone(), *count, times)
            })
            .collect();
        out.sort();
        out
    }

    fn check<K: Key + std::fmt::Debug>(
        spec: Windows,
        records: &[(u8, u16, bool)],
        frontier: Time,
        key_of: impl Fn(u8) -> K,
    ) -> Result<(), TestCaseError> {
        let merge = |acc: &mut (u64, Vec<u32>), other: (u64, Vec<u32>)| {
            acc.0 += other.0;
            acc.1.extend(other.1);
        };
        let mut alone = WindowState::new(spec);
        let mut lessor = WindowState::new(spec);
        let mut lessee = WindowState::new(spec);
        for &(key, time, on_lessee) in records {
            fold_in(&mut alone, key_of(key), Time::from(time));
            let worker = if on_lessee { &mut lessee } else { &mut lessor };
            fold_in(worker, key_of(key), Time::from(time));
        }
        let lessee_entries = lessee.len();
        let late_expected = lessee
            .entries()
            .filter(|(window, _, _)| lessee.spec.fired(window.end, frontier))
            .count() as u64;
        let Some(partial) = lessee.snapshot().unwrap() else {
            prop_assert_eq!(lessee_entries, 0);
            prop_assert_eq!(contents(&lessor), contents(&alone));
            return Ok(());
        };
        prop_assert!(lessee.is_empty());
        let late = lessor.merge(&partial, frontier, &merge).unwrap();
        prop_assert_eq!(late, late_expected);
        if late == 0 {
            // Merged in place, the state is what one worker folding every record makes.
            prop_assert_eq!(contents(&lessor), contents(&alone));
        }
        Ok(())
    }

    proptest! {
        /// A lessee's partial windows merged in place from their archive give the state
        /// a single worker builds from every record: tumbling, sliding and session
        /// windows, integer and string keys, accumulators with vectors in them. Windows
        /// that already fired take nothing and are counted late.
        #[test]
        fn merged_in_place_equals_one_worker(
            records in proptest::collection::vec((0u8..12, 0u16..400, any::<bool>()), 0..300),
            fired in prop_oneof![Just(0u64), 0u64..400],
        ) {
            for spec in [
                Windows::Tumbling { size: 50 },
                Windows::Sliding { size: 60, slide: 20 },
                Windows::Session { gap: 15 },
            ] {
                check(spec, &records, fired, u64::from)?;
                check(spec, &records, fired, |key| format!("k{key}"))?;
            }
        }
    }

    #[test]
    fn archiving_a_frozen_state_lets_go_of_its_chunks() {
        let sum = |total: &mut u64, more: u64| *total += more;
        let window = Window { start: 0, end: 10 };
        let mut state = WindowState::<u64, u64>::new(Windows::Tumbling { size: 10 });
        for key in 0..20_000 {
            state.add(window, key, 1, &sum);
        }
        let shared = |state: &WindowState<u64, u64>| -> usize {
            state
                .windows
                .values()
                .map(|keys| keys.entries.shared_chunks())
                .sum()
        };
        assert_eq!(shared(&state), 0);
        let frozen = state.freeze().expect("keys are open");
        assert!(shared(&state) > 1, "a frozen state shares every chunk");
        let archive = frozen.archive().unwrap();
        assert_eq!(shared(&state), 0, "the archive let go of every chunk");
        let partial = archive.archived::<PartialWindows<u64, u64>>().unwrap();
        assert_eq!(
            partial.0.iter().map(|window| window.2.len()).sum::<usize>(),
            20_000
        );
    }

    #[test]
    fn a_corrupt_archive_is_an_error_not_a_panic() {
        let mut state = WindowState::<u64, u64>::new(Windows::Tumbling { size: 10 });
        let other_type = Snapshot::of(&vec![1u32, 2, 3]).unwrap();
        assert!(state.merge(&other_type, 0, &|a, b| *a += b).is_err());
        assert!(state.is_empty());
    }
}
