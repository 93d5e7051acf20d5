//! Stateful keyed operators: event-time windows (tumbling, sliding, session) with an
//! aggregate, windowed joins, running aggregates, top-k, and `process` operators with
//! state of their own.
//!
//! Windows are half-open, `[start, end)`, aligned to multiples of their slide from time
//! zero (session windows: a record at `t` opens `[t, t + gap)`, and overlapping ones
//! merge). A window fires when the input frontier reaches its end (with
//! [`WindowSpec::inclusive_end`], one millisecond later, and records at exactly `end`
//! belong to it too); its outputs carry the event time `end − 1` (`end` when inclusive).
//! Outputs of one firing leave sorted by window end, then key, unless the spec lets them
//! leave in any order ([`WindowSpec::any_order`]): then no sort is on the latency path.
//!
//! A record is added to each of its windows that has not fired; if one of them already
//! had, the record is counted as late ([`App::late_records`](crate::dataflow::App)).
//!
//! Window state, running aggregates and join buffers are *mergeable*: those operators may
//! get lessees, each folding records into partial windows; at a watermark (a critical
//! message) the lessor merges the partial windows (archived with rkyv, see
//! [`Portable`]) and fires. `process` operators own arbitrary state and are exclusive:
//! they never get lessees.

use std::any::{Any, TypeId};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dirigo_runtime::{Context, PartitionId, Snapshot, SnapshotError, StateKind};
use rkyv::api::high::{HighDeserializer, HighSerializer};
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rustc_hash::FxHashMap;

use crate::dataflow::{
    add_operator, batch_of, set_trigger, stream_of, AppCounters, Data, FrontierTrigger,
    KeyedStream, Logic, Msg, Output, Stream, Time, Wiring,
};
use crate::partition::Partitioning;

/// State that can travel between shards in a snapshot: archived with rkyv on a lessee,
/// read back on the lessor. What `#[derive(rkyv::Archive, rkyv::Serialize,
/// rkyv::Deserialize)]` gives, and std's integers, strings, vectors and tuples.
pub trait Portable:
    Sized
    + 'static
    + rkyv::Archive<Archived: rkyv::Deserialize<Self, HighDeserializer<rancor::Error>>>
    + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

impl<T> Portable for T where
    T: Sized
        + 'static
        + rkyv::Archive<Archived: rkyv::Deserialize<T, HighDeserializer<rancor::Error>>>
        + for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

/// Keys of keyed state.
pub trait Key: Data + Hash + Eq + Ord + Portable {}
impl<T: Data + Hash + Eq + Ord + Portable> Key for T {}

fn snapshot_of<E: Portable>(entries: &Vec<E>) -> Result<Option<Snapshot>, SnapshotError> {
    if entries.is_empty() {
        return Ok(None);
    }
    Snapshot::of(entries).map(Some)
}

fn entries_of<E: Portable>(partial: &Snapshot) -> Result<Vec<E>, SnapshotError> {
    let archived = partial.archived::<Vec<E>>()?;
    rkyv::deserialize::<Vec<E>, rancor::Error>(archived).map_err(SnapshotError::Invalid)
}

/// Which windows a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Windows {
    /// Back-to-back windows of `size` ms.
    Tumbling {
        /// Width, ms.
        size: Time,
    },
    /// Windows of `size` ms starting every `slide` ms (a record is in `size / slide` of
    /// them).
    Sliding {
        /// Width, ms.
        size: Time,
        /// Distance between window starts, ms.
        slide: Time,
    },
    /// Per key, records closer than `gap` ms to each other share a window.
    Session {
        /// Inactivity that ends a session, ms.
        gap: Time,
    },
}

/// Windows, whether their end is inclusive, and whether a firing's rows leave in key
/// order.
///
/// ```
/// use dirigo_operators::window::{WindowSpec, Windows};
///
/// // Rows of a firing in key order (the default).
/// let sorted: WindowSpec = Windows::Tumbling { size: 10 }.into();
/// assert!(!sorted.any_order);
/// // In whatever order the window's state holds them: sooner out.
/// let sooner = Windows::Tumbling { size: 10 }.in_any_order();
/// assert!(sooner.any_order);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    /// The windows.
    pub windows: Windows,
    /// Tumbling and sliding windows only: records at exactly a window's end belong to it
    /// too (besides the window they start), and the window fires one millisecond later.
    pub inclusive_end: bool,
    /// A firing's rows may leave in any order (the order of the window's hash table,
    /// which depends on how its state was built: with lessees, it can differ from run to
    /// run) instead of sorted by window end, then key. Each firing still emits the same
    /// rows; only their order within it is left open. Sorting is on the latency path:
    /// with 3 000 integer keys per window and shard, `dirigo bench peer` put out a
    /// window's rows about 20 µs sooner without it (p50 49–52 µs against 69–72 µs, p99
    /// lower in 4 of 4 alternating pairs, medians 272 µs against 474 µs).
    pub any_order: bool,
}

impl From<Windows> for WindowSpec {
    fn from(windows: Windows) -> Self {
        Self {
            windows,
            inclusive_end: false,
            any_order: false,
        }
    }
}

impl Windows {
    /// These windows, with each firing's rows in any order ([`WindowSpec::any_order`]).
    pub fn in_any_order(self) -> WindowSpec {
        WindowSpec::from(self).in_any_order()
    }
}

impl WindowSpec {
    /// This spec, with each firing's rows in any order ([`WindowSpec::any_order`]).
    pub fn in_any_order(self) -> Self {
        Self {
            any_order: true,
            ..self
        }
    }

    /// Calls `each` with every aligned window `time` belongs to.
    fn assign(&self, time: Time, mut each: impl FnMut(Window)) {
        let (size, slide) = match self.windows {
            Windows::Tumbling { size } => (size.max(1), size.max(1)),
            Windows::Sliding { size, slide } => (size.max(1), slide.max(1)),
            Windows::Session { gap } => {
                each(Window {
                    start: time,
                    end: time.saturating_add(gap.max(1)),
                });
                return;
            }
        };
        // Windows start at multiples of `slide`, at or after zero; the last one to
        // contain `time` starts at `time` rounded down.
        let last = time - time % slide;
        let mut start = last;
        loop {
            let end = start + size;
            if end > time || (self.inclusive_end && end == time) {
                each(Window { start, end });
            } else {
                break;
            }
            if start < slide {
                break;
            }
            start -= slide;
        }
    }

    /// Whether some window could fire when the frontier advances from `from` to `to`: for
    /// aligned windows, whether a window end lies between them (data decides nothing);
    /// sessions end where their keys' records say, so always.
    pub(crate) fn may_fire_between(&self, from: Time, to: Time) -> bool {
        let (size, slide) = match self.windows {
            Windows::Tumbling { size } => (size.max(1), size.max(1)),
            Windows::Sliding { size, slide } => (size.max(1), slide.max(1)),
            Windows::Session { .. } => return true,
        };
        if to == Time::MAX {
            return true;
        }
        // A window ending at `end` fires in this advance when it had not fired at `from`
        // and has at `to`: `end` in `(low, high]`.
        let (low, high) = if self.inclusive_end {
            (from.saturating_sub(1), to.saturating_sub(1))
        } else {
            (from, to)
        };
        // Ends are `k * slide + size`, k >= 0: the first one after `low`.
        let next_end = if low < size {
            size
        } else {
            size.saturating_add(
                ((low - size) / slide)
                    .saturating_add(1)
                    .saturating_mul(slide),
            )
        };
        next_end <= high
    }

    /// For windows on a fixed grid (tumbling, sliding): the trigger that tells sources
    /// when a frontier advance fires a window, so that they send that watermark at once.
    /// Sessions end wherever their keys go quiet: none.
    pub(crate) fn trigger(self) -> Option<FrontierTrigger> {
        match self.windows {
            Windows::Session { .. } => None,
            Windows::Tumbling { .. } | Windows::Sliding { .. } => {
                Some(Arc::new(move |from, to| self.may_fire_between(from, to)))
            }
        }
    }

    /// Whether a window ending at `end` has fired once the frontier is `frontier`.
    fn fired(&self, end: Time, frontier: Time) -> bool {
        if self.inclusive_end {
            end < frontier
        } else {
            end <= frontier
        }
    }

    fn output_time(&self, end: Time) -> Time {
        if self.inclusive_end {
            end
        } else {
            end - 1
        }
    }
}

/// One window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// First millisecond in the window.
    pub start: Time,
    /// First millisecond after the window (see [`WindowSpec::inclusive_end`]).
    pub end: Time,
}

/// Folds a record into a window's accumulator: `(accumulator, window, time, record)`.
type FoldFn<A, T> = Arc<dyn Fn(&mut A, Window, Time, &T) + Send + Sync>;
/// Combines two partial accumulators of the same window.
type MergeFn<A> = Arc<dyn Fn(&mut A, A) + Send + Sync>;
/// Turns a fired window into outputs.
type EmitFn<K, A, O> = Arc<dyn Fn(&K, Window, A, &mut Vec<O>) + Send + Sync>;

struct WindowFns<T, K, A, O> {
    spec: WindowSpec,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    init: Arc<dyn Fn() -> A + Send + Sync>,
    fold: FoldFn<A, T>,
    merge: MergeFn<A>,
    emit: EmitFn<K, A, O>,
}

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
/// A window's reused key table gives room back once it has this many times what the
/// last window needed ([`WindowKeys::fit`])...
const ROOM_KEPT: usize = 4;
/// ...counting at least this many keys (small tables are not worth shrinking).
const MIN_ROOM: usize = 1_024;

struct WindowKeys<K, A> {
    entries: FxHashMap<K, (Time, A)>,
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

/// Fewest new keys of a window sorted and merged together.
const RECENT_RUN_MIN: usize = 256;

/// How a window's keys are put in order for firing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyOrder {
    /// `K` is a primitive integer (see [`integer_image`]): no key is kept in order while
    /// records arrive, and firing radix-sorts the entries by key.
    Radix,
    /// Other keys: kept in sorted runs as they come (`sorted`, `recent`).
    Runs,
    /// No order ([`WindowSpec::any_order`]): firing drains the hash table as it is.
    Any,
}

impl<K: 'static, A> WindowKeys<K, A> {
    /// An empty window whose firing leaves in key order, or in any order.
    fn new(any_order: bool) -> Self {
        let order = if any_order {
            KeyOrder::Any
        } else if has_integer_image::<K>() {
            KeyOrder::Radix
        } else {
            KeyOrder::Runs
        };
        Self {
            entries: FxHashMap::default(),
            order,
            sorted: Vec::new(),
            recent: Vec::new(),
            leaving: Vec::new(),
        }
    }
}

impl<K: Key, A> WindowKeys<K, A> {
    /// The state of `key`, made with `init` if the window has none yet.
    #[inline]
    fn entry(&mut self, key: K, init: impl FnOnce() -> (Time, A)) -> &mut (Time, A) {
        use std::collections::hash_map::Entry;
        match self.entries.entry(key) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(slot) => {
                if self.order == KeyOrder::Runs {
                    self.recent.push(slot.key().clone());
                    if self.recent.len() >= RECENT_RUN_MIN.max(self.sorted.len() / 4) {
                        Self::merge_recent(&mut self.sorted, &mut self.recent);
                    }
                }
                slot.insert(init())
            }
        }
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
    /// [`WindowLogic::spare`]).
    fn drain_for_firing(&mut self) -> std::vec::Drain<'_, (K, Time, A)> {
        let leaving = &mut self.leaving;
        leaving.clear();
        match self.order {
            KeyOrder::Radix | KeyOrder::Any => {
                // Out of the hash map in its own order, one linear pass; then a stable LSD
                // radix sort, which skips the bytes every key shares (ids rarely use all 8).
                leaving.extend(
                    self.entries
                        .drain()
                        .map(|(key, (start, acc))| (key, start, acc)),
                );
                if self.order == KeyOrder::Radix {
                    radsort::sort_by_key(leaving, |(key, _, _)| {
                        integer_image(key).expect("radix windows hold integer keys")
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
    fn clear(&mut self) {
        self.entries.clear();
        self.sorted.clear();
        self.recent.clear();
        self.leaving.clear();
    }

    /// After [`clear`](Self::clear): gives back the room past what a window of `keys`
    /// keys needs, once it is more than [`ROOM_KEPT`] times that. A window that once held
    /// a burst of keys keeps its table for the next window (see
    /// [`WindowLogic::spare`]); without this, one burst would keep the largest table, and
    /// its memory, for as long as the pipeline runs.
    fn fit(&mut self, keys: usize) {
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
    fn into_unordered(self) -> impl Iterator<Item = (K, Time, A)> {
        self.entries
            .into_iter()
            .map(|(key, (start, acc))| (key, start, acc))
    }
}

/// A key's session that has not fired yet.
struct OpenSession<A> {
    start: Time,
    end: Time,
    acc: A,
    /// The end under which `session_ends` holds this session's entry (at most `end`).
    queued_at: Time,
}

struct WindowLogic<T, K, A, O> {
    fns: Arc<WindowFns<T, K, A, O>>,
    /// Tumbling and sliding windows: by end, then by key (a hash map: every record
    /// touches it, while only firing needs the keys in order).
    windows: BTreeMap<Time, WindowKeys<K, A>>,
    /// Session windows: per key, its open sessions.
    sessions: FxHashMap<K, Vec<OpenSession<A>>>,
    /// Session ends to look at, earliest first: one entry per session, at the end it
    /// had when queued (a session that grew since is queued again at its new end when
    /// that entry comes up; entries of sessions merged into others are skipped). Queuing
    /// every record's end instead would keep one entry per record of the last gap.
    session_ends: BinaryHeap<Reverse<(Time, K)>>,
    frontier: Time,
    counters: Arc<AppCounters>,
    out: Output<O>,
    scratch: Vec<O>,
    /// The last fired window's key state, emptied: the next window to open starts with
    /// its hash map and key runs already grown to a window's size, instead of growing
    /// them again (a dozen rehashes of every key so far) while records arrive.
    spare: Option<WindowKeys<K, A>>,
}

/// The key state of the window ending at `end`, opened with `spare`'s room if it is new.
#[inline]
fn open_window<'w, K: 'static, A>(
    windows: &'w mut BTreeMap<Time, WindowKeys<K, A>>,
    spare: &mut Option<WindowKeys<K, A>>,
    end: Time,
    any_order: bool,
) -> &'w mut WindowKeys<K, A> {
    windows
        .entry(end)
        .or_insert_with(|| spare.take().unwrap_or_else(|| WindowKeys::new(any_order)))
}

impl<T: Data, K: Key, A: Portable, O: Data> WindowLogic<T, K, A, O> {
    fn new(fns: Arc<WindowFns<T, K, A, O>>, wiring: &Wiring, partition: PartitionId) -> Self {
        Self {
            fns,
            windows: BTreeMap::new(),
            sessions: FxHashMap::default(),
            session_ends: BinaryHeap::new(),
            frontier: 0,
            counters: wiring.counters.clone(),
            out: Output::new(wiring, partition),
            scratch: Vec::new(),
            spare: None,
        }
    }

    fn add(&mut self, time: Time, record: &T) {
        // Borrowed field by field: cloning the `Arc` of the functions per record would
        // bounce its counter between the shards that run this operator's partitions.
        let Self {
            fns,
            windows,
            frontier,
            counters,
            spare,
            ..
        } = self;
        let fns: &WindowFns<T, K, A, O> = fns;
        let key = (fns.key)(record);
        if let Windows::Session { gap } = fns.spec.windows {
            if time < *frontier {
                counters.late.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let end = time.saturating_add(gap.max(1));
            let mut acc = (fns.init)();
            (fns.fold)(&mut acc, Window { start: time, end }, time, record);
            self.insert_session(key, time, end, acc);
            return;
        }
        let mut late = false;
        let spec = fns.spec;
        let frontier = *frontier;
        spec.assign(time, |window| {
            if spec.fired(window.end, frontier) {
                late = true;
                return;
            }
            let (_, acc) = open_window(windows, spare, window.end, spec.any_order)
                .entry(key.clone(), || (window.start, (fns.init)()));
            (fns.fold)(acc, window, time, record);
        });
        if late {
            counters.late.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`add`](Self::add) for a batch, for tumbling windows with the usual half-open
    /// ends: records in a row mostly fall into one window, so the window's key map is
    /// looked up (and the window computed) once per run of them, not once per record.
    fn add_tumbling(&mut self, batch: &[(Time, T)], size: Time) {
        let Self {
            fns,
            windows,
            frontier,
            counters,
            spare,
            ..
        } = self;
        let fns: &WindowFns<T, K, A, O> = fns;
        let frontier = *frontier;
        let mut late = 0u64;
        let mut open: Option<(Window, &mut WindowKeys<K, A>)> = None;
        for (time, record) in batch {
            let time = *time;
            if !matches!(&open, Some((window, _)) if window.start <= time && time < window.end) {
                open = None;
                let start = time - time % size;
                let window = Window {
                    start,
                    end: start.saturating_add(size),
                };
                if fns.spec.fired(window.end, frontier) {
                    late += 1;
                    continue;
                }
                open = Some((
                    window,
                    open_window(windows, spare, window.end, fns.spec.any_order),
                ));
            }
            let (window, keys) = open.as_mut().expect("a window is open");
            let window = *window;
            let (_, acc) = keys.entry((fns.key)(record), || (window.start, (fns.init)()));
            (fns.fold)(acc, window, time, record);
        }
        if late > 0 {
            counters.late.fetch_add(late, Ordering::Relaxed);
        }
    }

    /// Adds session `[start, end)` for `key`, merging every session it overlaps.
    fn insert_session(&mut self, key: K, mut start: Time, mut end: Time, mut acc: A) {
        let merge = &self.fns.merge;
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

    fn fire(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        let fns = self.fns.clone();
        if let Windows::Session { .. } = fns.spec.windows {
            let mut due: Vec<(Time, K, Time, A)> = Vec::new();
            while let Some(Reverse((end, _))) = self.session_ends.peek() {
                if !fns.spec.fired(*end, frontier) {
                    break;
                }
                let Reverse((end, key)) = self.session_ends.pop().expect("peeked");
                let Some(sessions) = self.sessions.get_mut(&key) else {
                    continue;
                };
                // A key's open sessions are disjoint and each is queued within its own
                // span, so at most one is queued at `end`.
                let Some(index) = sessions.iter().position(|s| s.queued_at == end) else {
                    continue;
                };
                let session = &mut sessions[index];
                if session.end != end {
                    session.queued_at = session.end;
                    self.session_ends.push(Reverse((session.end, key)));
                    continue;
                }
                let session = sessions.swap_remove(index);
                if sessions.is_empty() {
                    self.sessions.remove(&key);
                }
                due.push((session.end, key, session.start, session.acc));
            }
            if !fns.spec.any_order {
                due.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
            }
            for (end, key, start, acc) in due {
                self.emit(ctx, &key, Window { start, end }, acc);
            }
            return;
        }
        while let Some(entry) = self.windows.first_entry() {
            if !fns.spec.fired(*entry.key(), frontier) {
                break;
            }
            let (end, mut keys) = entry.remove_entry();
            // Every row of the window first, then all of them out at once: one pass that
            // fills whole batches, rather than routing row by row.
            let emit = &self.fns.emit;
            let held = keys.entries.len();
            for (key, start, acc) in keys.drain_for_firing() {
                emit(&key, Window { start, end }, acc, &mut self.scratch);
            }
            keys.clear();
            keys.fit(held);
            self.spare = Some(keys);
            let time = self.fns.spec.output_time(end);
            let rows = self.scratch.len();
            self.out.give_all(ctx, time, &mut self.scratch);
            if self.scratch.capacity() > ROOM_KEPT * rows.max(MIN_ROOM) {
                self.scratch.shrink_to(2 * rows.max(MIN_ROOM));
            }
        }
    }

    fn emit(&mut self, ctx: &mut Context<'_, Msg>, key: &K, window: Window, acc: A) {
        (self.fns.emit)(key, window, acc, &mut self.scratch);
        let time = self.fns.spec.output_time(window.end);
        for output in self.scratch.drain(..) {
            self.out.give(ctx, time, output);
        }
    }
}

impl<T: Data, K: Key, A: Portable, O: Data> Logic for WindowLogic<T, K, A, O> {
    fn frontier_needs_state(&self, from: Time, to: Time) -> bool {
        self.fns.spec.may_fire_between(from, to)
    }

    fn on_data(&mut self, _ctx: &mut Context<'_, Msg>, _input: usize, data: Box<dyn Any + Send>) {
        let batch = batch_of::<T>(data);
        let spec = self.fns.spec;
        if let (Windows::Tumbling { size }, false) = (spec.windows, spec.inclusive_end) {
            self.add_tumbling(&batch, size.max(1));
            return;
        }
        for (time, record) in batch.iter() {
            self.add(*time, record);
        }
    }

    fn on_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.frontier = frontier;
        self.fire(ctx, frontier);
    }

    fn forward_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.out.frontier(ctx, frontier);
    }

    fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
        let mut entries: Vec<(Time, K, Time, A)> = std::mem::take(&mut self.windows)
            .into_iter()
            .flat_map(|(end, keys)| {
                keys.into_unordered()
                    .map(move |(key, start, acc)| (end, key, start, acc))
            })
            .collect();
        for (key, sessions) in self.sessions.drain() {
            for session in sessions {
                entries.push((session.end, key.clone(), session.start, session.acc));
            }
        }
        self.session_ends.clear();
        snapshot_of(&entries)
    }

    fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
        let merge = self.fns.merge.clone();
        for (end, key, start, acc) in entries_of::<(Time, K, Time, A)>(partial)? {
            if self.fns.spec.fired(end, self.frontier) {
                self.counters.late.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Windows::Session { .. } = self.fns.spec.windows {
                self.insert_session(key, start, end, acc);
            } else {
                let keys = open_window(
                    &mut self.windows,
                    &mut self.spare,
                    end,
                    self.fns.spec.any_order,
                );
                match keys.entries.get_mut(&key) {
                    Some((_, mine)) => merge(mine, acc),
                    None => {
                        keys.entry(key, || (start, acc));
                    }
                }
            }
        }
        Ok(())
    }
}

impl<T: Data, K: Key> KeyedStream<T, K> {
    /// Aggregates each key's records per window: `init` makes a window's accumulator,
    /// `fold(acc, window, time, record)` adds a record, `merge` combines two partial
    /// accumulators of one window (lessees' and session merges), and `emit` turns a fired
    /// window into outputs.
    ///
    /// ```
    /// # use dirigo_operators::dataflow::AppBuilder;
    /// # use dirigo_operators::source::Pacing;
    /// # use dirigo_operators::window::Windows;
    /// let app = AppBuilder::new(0, "doc");
    /// let clicks = app.source_iter("clicks", vec![(5, 1u64), (7, 1), (12, 2)], 0, Pacing::Unpaced);
    /// // Clicks per user per 10 ms: (user, window start, count).
    /// let counts = clicks.key_by(|user| *user).window(
    ///     "per-user",
    ///     Windows::Tumbling { size: 10 },
    ///     || 0u64,
    ///     |count, _, _, _| *count += 1,
    ///     |count, other| *count += other,
    ///     |user, window, count, out| out.push((*user, window.start, count)),
    /// );
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn window<A: Portable, O: Data>(
        &self,
        name: &str,
        spec: impl Into<WindowSpec>,
        init: impl Fn() -> A + Send + Sync + 'static,
        fold: impl Fn(&mut A, Window, Time, &T) + Send + Sync + 'static,
        merge: impl Fn(&mut A, A) + Send + Sync + 'static,
        emit: impl Fn(&K, Window, A, &mut Vec<O>) + Send + Sync + 'static,
    ) -> Stream<O> {
        let spec = spec.into();
        let fns = Arc::new(WindowFns {
            spec,
            key: self.key.clone(),
            init: Arc::new(init),
            fold: Arc::new(fold),
            merge: Arc::new(merge),
            emit: Arc::new(emit),
        });
        let stream = self.stream.then(
            name,
            StateKind::Mergeable,
            Partitioning::KeyHash,
            Some(self.hasher()),
            Arc::new(move |wiring: &Wiring, partition| {
                Box::new(WindowLogic::new(fns.clone(), wiring, partition)) as Box<dyn Logic>
            }),
        );
        if let Some(trigger) = spec.trigger() {
            stream.set_trigger(trigger);
        }
        stream
    }

    /// Counts each key's records per window: outputs `(key, window, count)`.
    pub fn window_count(
        &self,
        name: &str,
        spec: impl Into<WindowSpec>,
    ) -> Stream<(K, Window, u64)> {
        self.window(
            name,
            spec,
            || 0u64,
            |count, _, _, _| *count += 1,
            |count, other| *count += other,
            |key, window, count, out| out.push((key.clone(), window, count)),
        )
    }

    /// Per window and key, the `k` records with the highest `score` (ties broken by the
    /// lower record order), highest first: outputs `(key, window, top)`.
    pub fn window_top_k<S>(
        &self,
        name: &str,
        spec: impl Into<WindowSpec>,
        k: usize,
        score: impl Fn(&T) -> S + Send + Sync + 'static,
    ) -> Stream<(K, Window, Vec<T>)>
    where
        T: Portable + Ord,
        S: Ord + 'static,
    {
        let score = Arc::new(score);
        let trim = {
            let score = score.clone();
            move |top: &mut Vec<T>| {
                top.sort_by(|a, b| score(b).cmp(&score(a)).then_with(|| a.cmp(b)));
                top.truncate(k);
            }
        };
        let trim = Arc::new(trim);
        let trim_fold = trim.clone();
        self.window(
            name,
            spec,
            Vec::new,
            move |top: &mut Vec<T>, _, _, record| {
                top.push(record.clone());
                if top.len() > 2 * k.max(1) {
                    trim_fold(top);
                }
            },
            move |top, other| {
                top.extend(other);
                trim(top);
            },
            move |key, window, mut top, out| {
                top.sort_by(|a, b| score(b).cmp(&score(a)).then_with(|| a.cmp(b)));
                top.truncate(k);
                out.push((key.clone(), window, top));
            },
        )
    }

    /// A running aggregate per key over the whole stream: whenever the input frontier
    /// advances, emits `emit(key, acc)` for every key whose accumulator changed since the
    /// last time (sorted by key). What it emits last for a key is deterministic; when the
    /// intermediate updates come depends on when watermarks arrive.
    pub fn aggregate<A: Portable + Data, O: Data>(
        &self,
        name: &str,
        init: impl Fn() -> A + Send + Sync + 'static,
        fold: impl Fn(&mut A, Time, &T) + Send + Sync + 'static,
        merge: impl Fn(&mut A, A) + Send + Sync + 'static,
        emit: impl Fn(&K, &A) -> O + Send + Sync + 'static,
    ) -> Stream<O> {
        let fns = Arc::new(AggregateFns {
            key: self.key.clone(),
            init: Arc::new(init),
            fold: Arc::new(fold),
            merge: Arc::new(merge),
            emit: Arc::new(emit),
        });
        self.stream.then(
            name,
            StateKind::Mergeable,
            Partitioning::KeyHash,
            Some(self.hasher()),
            Arc::new(move |wiring: &Wiring, partition| {
                Box::new(AggregateLogic {
                    fns: fns.clone(),
                    state: FxHashMap::default(),
                    changed: Vec::new(),
                    out: Output::new(wiring, partition),
                }) as Box<dyn Logic>
            }),
        )
    }
}

type AggregateFold<A, T> = Arc<dyn Fn(&mut A, Time, &T) + Send + Sync>;
type AggregateEmit<K, A, O> = Arc<dyn Fn(&K, &A) -> O + Send + Sync>;
/// A windowed join: a window operator over records of either side, buffering both.
type JoinLogic<L, R, K, O> = WindowLogic<Either<L, R>, K, (Vec<L>, Vec<R>), O>;

struct AggregateFns<T, K, A, O> {
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    init: Arc<dyn Fn() -> A + Send + Sync>,
    fold: AggregateFold<A, T>,
    merge: MergeFn<A>,
    emit: AggregateEmit<K, A, O>,
}

struct AggregateLogic<T, K, A, O> {
    fns: Arc<AggregateFns<T, K, A, O>>,
    /// Per key: accumulator, and whether it changed since it was last emitted.
    state: FxHashMap<K, (A, bool)>,
    /// The keys whose flag is set, so that a watermark costs the keys that changed since
    /// the last one, not every key the aggregate ever saw.
    changed: Vec<K>,
    out: Output<O>,
}

impl<T: Data, K: Key, A: Portable + Data, O: Data> Logic for AggregateLogic<T, K, A, O> {
    fn on_data(&mut self, _ctx: &mut Context<'_, Msg>, _input: usize, data: Box<dyn Any + Send>) {
        let batch = batch_of::<T>(data);
        for (time, record) in batch.iter() {
            let key = (self.fns.key)(record);
            let (acc, changed) = match self.state.entry(key) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    self.changed.push(slot.key().clone());
                    slot.insert(((self.fns.init)(), true))
                }
            };
            (self.fns.fold)(acc, *time, record);
            if !*changed {
                *changed = true;
                self.changed.push((self.fns.key)(record));
            }
        }
    }

    fn on_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        let time = frontier.saturating_sub(1);
        for key in changed.drain(..) {
            let Some((acc, flag)) = self.state.get_mut(&key) else {
                continue;
            };
            *flag = false;
            let output = (self.fns.emit)(&key, acc);
            self.out.give(ctx, time, output);
        }
        // The emptied list keeps its capacity for the next watermark.
        self.changed = changed;
    }

    fn forward_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.out.frontier(ctx, frontier);
    }

    fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
        self.changed.clear();
        let entries: Vec<(K, A)> = self
            .state
            .drain()
            .map(|(key, (acc, _))| (key, acc))
            .collect();
        snapshot_of(&entries)
    }

    fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
        for (key, acc) in entries_of::<(K, A)>(partial)? {
            match self.state.entry(key) {
                std::collections::hash_map::Entry::Occupied(mut entry) => {
                    if !entry.get().1 {
                        self.changed.push(entry.key().clone());
                    }
                    let (mine, changed) = entry.get_mut();
                    (self.fns.merge)(mine, acc);
                    *changed = true;
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    self.changed.push(slot.key().clone());
                    slot.insert((acc, true));
                }
            }
        }
        Ok(())
    }
}

/// Joins two keyed streams per window: `emit(key, window, lefts, rights, out)` runs once
/// per window and key that has records on either side, when the window fires. Left and
/// right records keep their arrival order only within one worker; sort them in `emit`
/// when order matters.
impl<L: Data + Portable, K: Key> KeyedStream<L, K> {
    /// A windowed join with `other` (which must come from a different operator).
    pub fn window_join<R: Data + Portable, O: Data>(
        &self,
        other: &KeyedStream<R, K>,
        name: &str,
        spec: impl Into<WindowSpec>,
        emit: impl Fn(&K, Window, Vec<L>, Vec<R>, &mut Vec<O>) + Send + Sync + 'static,
    ) -> Stream<O> {
        let spec = spec.into();
        let left_key = self.key.clone();
        let right_key = other.key.clone();
        let fns = Arc::new(WindowFns::<Either<L, R>, K, (Vec<L>, Vec<R>), O> {
            spec,
            key: Arc::new(move |record: &Either<L, R>| match record {
                Either::Left(l) => left_key(l),
                Either::Right(r) => right_key(r),
            }),
            init: Arc::new(|| (Vec::new(), Vec::new())),
            fold: Arc::new(|acc, _, _, record| match record {
                Either::Left(l) => acc.0.push(l.clone()),
                Either::Right(r) => acc.1.push(r.clone()),
            }),
            merge: Arc::new(|acc, other| {
                acc.0.extend(other.0);
                acc.1.extend(other.1);
            }),
            emit: Arc::new(move |key, window, (lefts, rights), out| {
                emit(key, window, lefts, rights, out)
            }),
        });
        let node = add_operator(
            self.stream.graph(),
            name,
            StateKind::Mergeable,
            Arc::new(move |wiring: &Wiring, partition| {
                Box::new(TwoInputs {
                    inner: WindowLogic::new(fns.clone(), wiring, partition),
                    _sides: PhantomData::<fn(L, R)>,
                }) as Box<dyn Logic>
            }),
        );
        if let Some(trigger) = spec.trigger() {
            set_trigger(self.stream.graph(), node, trigger);
        }
        self.stream
            .connect(node, Partitioning::KeyHash, Some(self.hasher()));
        other
            .stream
            .connect(node, Partitioning::KeyHash, Some(other.hasher()));
        stream_of(self.stream.graph(), node)
    }
}

/// A record of one of two inputs.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub enum Either<L, R> {
    /// From the first input.
    Left(L),
    /// From the second input.
    Right(R),
}

/// Feeds a window operator over `Either<L, R>` from two inputs of types `L` and `R`.
struct TwoInputs<L, R, K, O> {
    inner: JoinLogic<L, R, K, O>,
    _sides: PhantomData<fn(L, R)>,
}

impl<L: Data + Portable, R: Data + Portable, K: Key, O: Data> Logic for TwoInputs<L, R, K, O> {
    fn on_data(&mut self, _ctx: &mut Context<'_, Msg>, input: usize, data: Box<dyn Any + Send>) {
        if input == 0 {
            let batch = batch_of::<L>(data);
            for (time, record) in batch {
                self.inner.add(time, &Either::Left(record));
            }
        } else {
            let batch = batch_of::<R>(data);
            for (time, record) in batch {
                self.inner.add(time, &Either::Right(record));
            }
        }
    }

    fn on_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.inner.on_frontier(ctx, frontier);
    }

    fn forward_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.inner.forward_frontier(ctx, frontier);
    }

    fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
        self.inner.snapshot()
    }

    fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
        self.inner.merge(partial)
    }
}

/// Outputs of a [`process`](KeyedStream::process) operator, with their event times.
pub type Emitted<O> = Vec<(Time, O)>;

type OnRecord<S, T, O> = Arc<dyn Fn(&mut S, Time, T, &mut Emitted<O>) + Send + Sync>;
type OnFrontier<S, O> = Arc<dyn Fn(&mut S, Time, &mut Emitted<O>) + Send + Sync>;

struct ProcessLogic<S, L, R, O> {
    state: S,
    on_left: OnRecord<S, L, O>,
    on_right: Option<OnRecord<S, R, O>>,
    on_frontier: OnFrontier<S, O>,
    out: Output<O>,
    emitted: Emitted<O>,
}

impl<S: 'static, L: Data, R: Data, O: Data> ProcessLogic<S, L, R, O> {
    fn drain(&mut self, ctx: &mut Context<'_, Msg>) {
        for (time, output) in self.emitted.drain(..) {
            self.out.give(ctx, time, output);
        }
    }
}

impl<S: 'static, L: Data, R: Data, O: Data> Logic for ProcessLogic<S, L, R, O> {
    fn on_data(&mut self, ctx: &mut Context<'_, Msg>, input: usize, data: Box<dyn Any + Send>) {
        if input == 0 {
            let batch = batch_of::<L>(data);
            for (time, record) in batch {
                (self.on_left)(&mut self.state, time, record, &mut self.emitted);
            }
        } else if let Some(on_right) = &self.on_right {
            let batch = batch_of::<R>(data);
            for (time, record) in batch {
                on_right(&mut self.state, time, record, &mut self.emitted);
            }
        }
        self.drain(ctx);
        self.out.flush(ctx);
    }

    fn on_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        (self.on_frontier)(&mut self.state, frontier, &mut self.emitted);
        self.drain(ctx);
    }

    fn forward_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.out.frontier(ctx, frontier);
    }
}

impl<T: Data, K: Hash + 'static> KeyedStream<T, K> {
    /// A keyed operator with state of its own (exclusive: it never gets lessees). Each
    /// partition's state starts as `init(partition)`; `on_record(state, time, record,
    /// out)` runs per record and `on_frontier(state, frontier, out)` when the input
    /// frontier advances. Outputs go into `out` with their event times.
    pub fn process<S: 'static, O: Data>(
        &self,
        name: &str,
        init: impl Fn(PartitionId) -> S + Send + Sync + 'static,
        on_record: impl Fn(&mut S, Time, T, &mut Emitted<O>) + Send + Sync + 'static,
        on_frontier: impl Fn(&mut S, Time, &mut Emitted<O>) + Send + Sync + 'static,
    ) -> Stream<O> {
        let init = Arc::new(init);
        let on_record: OnRecord<S, T, O> = Arc::new(on_record);
        let on_frontier: OnFrontier<S, O> = Arc::new(on_frontier);
        self.stream.then(
            name,
            StateKind::Exclusive,
            Partitioning::KeyHash,
            Some(self.hasher()),
            Arc::new(move |wiring: &Wiring, partition| {
                Box::new(ProcessLogic::<S, T, T, O> {
                    state: init(partition),
                    on_left: on_record.clone(),
                    on_right: None,
                    on_frontier: on_frontier.clone(),
                    out: Output::new(wiring, partition),
                    emitted: Vec::new(),
                }) as Box<dyn Logic>
            }),
        )
    }

    /// Like [`process`](Self::process), over two keyed inputs (`other` must come from a
    /// different operator): `on_left` runs for this stream's records, `on_right` for
    /// `other`'s.
    #[allow(clippy::too_many_arguments)]
    pub fn process2<R: Data, S: 'static, O: Data>(
        &self,
        other: &KeyedStream<R, K>,
        name: &str,
        init: impl Fn(PartitionId) -> S + Send + Sync + 'static,
        on_left: impl Fn(&mut S, Time, T, &mut Emitted<O>) + Send + Sync + 'static,
        on_right: impl Fn(&mut S, Time, R, &mut Emitted<O>) + Send + Sync + 'static,
        on_frontier: impl Fn(&mut S, Time, &mut Emitted<O>) + Send + Sync + 'static,
    ) -> Stream<O> {
        let init = Arc::new(init);
        let on_left: OnRecord<S, T, O> = Arc::new(on_left);
        let on_right: OnRecord<S, R, O> = Arc::new(on_right);
        let on_frontier: OnFrontier<S, O> = Arc::new(on_frontier);
        let node = add_operator(
            self.stream.graph(),
            name,
            StateKind::Exclusive,
            Arc::new(move |wiring: &Wiring, partition| {
                Box::new(ProcessLogic::<S, T, R, O> {
                    state: init(partition),
                    on_left: on_left.clone(),
                    on_right: Some(on_right.clone()),
                    on_frontier: on_frontier.clone(),
                    out: Output::new(wiring, partition),
                    emitted: Vec::new(),
                }) as Box<dyn Logic>
            }),
        );
        self.stream
            .connect(node, Partitioning::KeyHash, Some(self.hasher()));
        other
            .stream
            .connect(node, Partitioning::KeyHash, Some(other.hasher()));
        stream_of(self.stream.graph(), node)
    }
}

#[cfg(test)]
mod tests {
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

    proptest! {}

    /// `may_fire_between` agrees with brute force: some window of some time below `to`
    /// had not fired at `from` and has at `to`.
    #[test]
    fn a_frontier_advance_may_fire_exactly_when_it_crosses_a_window_end() {
        for inclusive_end in [false, true] {
            for (size, slide) in [(1, 1), (5, 5), (10, 3), (7, 7), (9, 2)] {
                let windows = if size == slide {
                    Windows::Tumbling { size }
                } else {
                    Windows::Sliding { size, slide }
                };
                let spec = WindowSpec {
                    windows,
                    inclusive_end,
                    any_order: false,
                };
                for from in 0..40 {
                    for to in from + 1..60 {
                        let brute = (0..to + 1).any(|time| {
                            windows_of(spec, time)
                                .iter()
                                .any(|&(_, end)| !spec.fired(end, from) && spec.fired(end, to))
                        });
                        assert_eq!(
                            spec.may_fire_between(from, to),
                            brute,
                            "{spec:?} from {from} to {to}"
                        );
                    }
                }
            }
        }
        let sessions = WindowSpec::from(Windows::Session { gap: 5 });
        assert!(sessions.may_fire_between(1, 2));
    }

    fn windows_of(spec: WindowSpec, time: Time) -> Vec<(Time, Time)> {
        let mut all = Vec::new();
        spec.assign(time, |w| all.push((w.start, w.end)));
        all.sort();
        all
    }

    #[test]
    fn assignment_follows_aligned_half_open_windows() {
        let tumbling = WindowSpec::from(Windows::Tumbling { size: 10 });
        assert_eq!(windows_of(tumbling, 0), [(0, 10)]);
        assert_eq!(windows_of(tumbling, 9), [(0, 10)]);
        assert_eq!(windows_of(tumbling, 10), [(10, 20)]);
        let inclusive = WindowSpec {
            inclusive_end: true,
            ..tumbling
        };
        assert_eq!(windows_of(inclusive, 10), [(0, 10), (10, 20)]);
        assert_eq!(windows_of(inclusive, 0), [(0, 10)]);
        let sliding = WindowSpec::from(Windows::Sliding { size: 10, slide: 2 });
        assert_eq!(
            windows_of(sliding, 11),
            [(2, 12), (4, 14), (6, 16), (8, 18), (10, 20)]
        );
        // No windows start before zero.
        assert_eq!(windows_of(sliding, 3), [(0, 10), (2, 12)]);
        let session = WindowSpec::from(Windows::Session { gap: 5 });
        assert_eq!(windows_of(session, 7), [(7, 12)]);
    }

    #[test]
    fn firing_waits_for_the_end_or_one_past_it_when_inclusive() {
        let tumbling = WindowSpec::from(Windows::Tumbling { size: 10 });
        assert!(!tumbling.fired(10, 9));
        assert!(tumbling.fired(10, 10));
        let inclusive = WindowSpec {
            inclusive_end: true,
            ..tumbling
        };
        assert!(!inclusive.fired(10, 10));
        assert!(inclusive.fired(10, 11));
    }
}
