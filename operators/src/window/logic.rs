//! The window operator ([`WindowLogic`]): adds records to their windows (sessions merge
//! as they overlap), fires the windows the input frontier passed and emits their rows,
//! and hands over and merges partial windows between lessees and their lessor.
//!
//! Snapshot and merge of window state are together at the end of this file, in the
//! [`Logic`] implementation: [`WindowLogic::snapshot`] archives every open window's and
//! session's entries as `(end, key, start, accumulator)`; [`WindowLogic::merge`] reads
//! such an archive back (deserialized whole by [`entries_of`]) and folds each entry into
//! the lessor's windows and sessions.

use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dirigo_runtime::{Context, PartitionId, Snapshot, SnapshotError};
use rustc_hash::FxHashMap;

use super::keys::{WindowKeys, MIN_ROOM, ROOM_KEPT};
use super::{Window, WindowSpec, Windows};
use crate::dataflow::{batch_of, AppCounters, Data, Logic, Msg, Output, Time, Wiring};
use crate::state::{entries_of, snapshot_of, Key, Portable};

/// Folds a record into a window's accumulator: `(accumulator, window, time, record)`.
type FoldFn<A, T> = Arc<dyn Fn(&mut A, Window, Time, &T) + Send + Sync>;
/// Combines two partial accumulators of the same window.
pub(crate) type MergeFn<A> = Arc<dyn Fn(&mut A, A) + Send + Sync>;
/// Turns a fired window into outputs.
type EmitFn<K, A, O> = Arc<dyn Fn(&K, Window, A, &mut Vec<O>) + Send + Sync>;

/// What makes a window operator: its windows, and the functions that key, fold, merge
/// and emit.
pub(super) struct WindowFns<T, K, A, O> {
    pub(super) spec: WindowSpec,
    pub(super) key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    pub(super) init: Arc<dyn Fn() -> A + Send + Sync>,
    pub(super) fold: FoldFn<A, T>,
    pub(super) merge: MergeFn<A>,
    pub(super) emit: EmitFn<K, A, O>,
}

/// A key's session that has not fired yet.
struct OpenSession<A> {
    start: Time,
    end: Time,
    acc: A,
    /// The end under which `session_ends` holds this session's entry (at most `end`).
    queued_at: Time,
}

/// One partition of a window operator: its open windows (or sessions) and their
/// accumulators.
pub(super) struct WindowLogic<T, K, A, O> {
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
    pub(super) fn new(
        fns: Arc<WindowFns<T, K, A, O>>,
        wiring: &Wiring,
        partition: PartitionId,
    ) -> Self {
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

    pub(super) fn add(&mut self, time: Time, record: &T) {
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
