//! The window operator ([`WindowLogic`]): adds records to their windows (sessions merge
//! as they overlap), fires the windows the input frontier passed and emits their rows.
//! Its state, and how that state is handed over and merged between lessees and their
//! lessor, is a [`WindowState`] (in `state`).

use std::any::Any;
use std::cmp::Reverse;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dirigo_runtime::snapshot::access_checked;
use dirigo_runtime::{Context, PartitionId, Snapshot, SnapshotError};

use super::keys::{WindowKeys, MIN_ROOM, ROOM_KEPT};
use super::state::{open_window, FrozenWindows, PartialWindows, WindowState};
use super::{Window, WindowSpec, Windows};
use crate::checkpoint::{Saved, SavedInputs};
use crate::dataflow::{
    batch_of, AppCounters, CheckpointId, Data, Logic, Msg, Output, Time, Wiring,
};
use crate::state::{Key, Portable};

/// Folds a record into a window's accumulator: `(accumulator, window, time, record)`.
type FoldFn<A, T> = Arc<dyn Fn(&mut A, Window, Time, &T) + Send + Sync>;
/// Combines two partial accumulators of the same window.
pub(crate) type MergeFn<A> = Arc<dyn Fn(&mut A, A) + Send + Sync>;
/// Turns a fired window into outputs.
type EmitFn<K, A, O> = Arc<dyn Fn(&K, Window, A, &mut Vec<O>) + Send + Sync>;
/// Puts out what a record completes as it arrives: `(key, window, accumulator before the
/// record, record, outputs)`.
pub(super) type EagerFn<T, K, A, O> = Arc<dyn Fn(&K, Window, &A, &T, &mut Vec<O>) + Send + Sync>;

/// Rows sent between two looks at the clock while sending fired rows: a few µs of work,
/// so that a firing turn overruns its shard's turn budget (after which a window partition
/// stops sending the rows of the windows it fired and goes on in a later turn of its own,
/// see `WindowLogic::send_fired`) by little even where the budget is 10 µs.
const ROWS_PER_CLOCK_LOOK: usize = 64;

/// A fired window whose rows are on their way out: its end, and the states of the keys
/// whose rows have not gone yet (each with its window's start).
type FiredWindow<K, A> = (Time, std::vec::IntoIter<(K, Time, A)>);

/// What makes a window operator: its windows, and the functions that key, fold, merge
/// and emit.
pub(super) struct WindowFns<T, K, A, O> {
    pub(super) spec: WindowSpec,
    pub(super) key: Arc<dyn Fn(&T) -> K + Send + Sync>,
    pub(super) init: Arc<dyn Fn() -> A + Send + Sync>,
    pub(super) fold: FoldFn<A, T>,
    pub(super) merge: MergeFn<A>,
    pub(super) emit: EmitFn<K, A, O>,
    /// Outputs put out as records arrive, before their window fires (see
    /// `KeyedStream::window_eager`); `None` for windows that put out only when they fire.
    pub(super) eager: Option<EagerFn<T, K, A, O>>,
}

/// One partition of a window operator: its open windows (or sessions) and their
/// accumulators.
pub(super) struct WindowLogic<T, K, A, O> {
    fns: Arc<WindowFns<T, K, A, O>>,
    /// The open windows or sessions, per key.
    state: WindowState<K, A>,
    frontier: Time,
    counters: Arc<AppCounters>,
    out: Output<O>,
    scratch: Vec<O>,
    /// Windows on a fixed grid that fired and whose rows have not all gone out yet, in
    /// firing order: each window's end and its keys' states, the first of them partly
    /// sent.
    fired: VecDeque<FiredWindow<K, A>>,
    /// The latest frontier to pass on once the fired rows are out (a frontier goes after
    /// the rows it fired).
    held_frontier: Option<Time>,
    /// A turn of this partition's own (a [`Msg::Tick`]) is on its way to send more rows.
    continuing: bool,
    /// Outputs the eager function put out for the batch at hand, with their times.
    eager_out: Vec<(Time, O)>,
    eager_scratch: Vec<O>,
}

impl<T: Data, K: Key, A: Portable + Data, O: Data> WindowLogic<T, K, A, O> {
    pub(super) fn new(
        fns: Arc<WindowFns<T, K, A, O>>,
        wiring: &Wiring,
        partition: PartitionId,
    ) -> Self {
        Self {
            state: WindowState::new(fns.spec),
            fns,
            frontier: 0,
            counters: wiring.counters.clone(),
            out: Output::new(wiring, partition),
            scratch: Vec::new(),
            fired: VecDeque::new(),
            held_frontier: None,
            continuing: false,
            eager_out: Vec::new(),
            eager_scratch: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, time: Time, record: &T) {
        // Borrowed field by field: cloning the `Arc` of the functions per record would
        // bounce its counter between the shards that run this operator's partitions.
        let Self {
            fns,
            state,
            frontier,
            counters,
            eager_out,
            eager_scratch,
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
            state.insert_session(key, time, end, acc, &*fns.merge);
            return;
        }
        let WindowState { windows, spare, .. } = state;
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
            if let Some(eager) = &fns.eager {
                eager(&key, window, acc, record, eager_scratch);
                let at = spec.output_time(window.end);
                eager_out.extend(eager_scratch.drain(..).map(|output| (at, output)));
            }
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
            state,
            frontier,
            counters,
            eager_out,
            eager_scratch,
            ..
        } = self;
        let WindowState { windows, spare, .. } = state;
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
            let key = (fns.key)(record);
            if let Some(eager) = &fns.eager {
                let (_, acc) = keys.entry(key.clone(), || (window.start, (fns.init)()));
                eager(&key, window, acc, record, eager_scratch);
                let at = fns.spec.output_time(window.end);
                eager_out.extend(eager_scratch.drain(..).map(|output| (at, output)));
                (fns.fold)(acc, window, time, record);
                continue;
            }
            let (_, acc) = keys.entry(key, || (window.start, (fns.init)()));
            (fns.fold)(acc, window, time, record);
        }
        if late > 0 {
            counters.late.fetch_add(late, Ordering::Relaxed);
        }
    }

    /// Fires the windows (sessions) that `frontier` has passed; with `all`, every one
    /// (the input has ended), and then every row goes out in this turn.
    fn fire(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time, all: bool) {
        let fns = self.fns.clone();
        if let Windows::Session { .. } = fns.spec.windows {
            let mut due: Vec<(Time, K, Time, A)> = Vec::new();
            while let Some(Reverse((end, _))) = self.state.session_ends.peek() {
                if !(all || fns.spec.fired(*end, frontier)) {
                    break;
                }
                let Reverse((end, key)) = self.state.session_ends.pop().expect("peeked");
                let Some(sessions) = self.state.sessions.get_mut(&key) else {
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
                    self.state.session_ends.push(Reverse((session.end, key)));
                    continue;
                }
                let session = sessions.swap_remove(index);
                if sessions.is_empty() {
                    self.state.sessions.remove(&key);
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
        while let Some(entry) = self.state.windows.first_entry() {
            if !(all || fns.spec.fired(*entry.key(), frontier)) {
                break;
            }
            let (end, mut keys) = entry.remove_entry();
            let held = keys.entries.len();
            let states: Vec<(K, Time, A)> = keys.drain_for_firing().collect();
            keys.clear();
            keys.fit(held);
            self.state.spare = Some(keys);
            self.fired.push_back((end, states.into_iter()));
        }
        self.send_fired(ctx, !all);
    }

    /// Sends the rows of the fired windows, in firing order, then the frontier held back
    /// behind them. With `bounded`, stops once the turn has taken the shard's turn budget
    /// (`Context::turn_budget_ns`: other work of the shard, another app's
    /// latency-critical records among it, should not wait for a whole window's rows) and
    /// goes on in a turn of its own: a critical message to itself, which always runs on
    /// this partition (never on a lessee) and after what arrived before it, and which
    /// carries the context of the message that fired the windows, so the rows keep the
    /// deadline and the latency they would have had.
    fn send_fired(&mut self, ctx: &mut Context<'_, Msg>, bounded: bool) {
        let started = if bounded { ctx.now() } else { 0 };
        let emit = self.fns.emit.clone();
        let spec = self.fns.spec;
        while let Some((end, states)) = self.fired.front_mut() {
            let end = *end;
            let time = spec.output_time(end);
            let mut sent = 0;
            // Every row of a chunk first, then all of them out at once: one pass that
            // fills whole batches, rather than routing row by row.
            for (key, start, acc) in states.by_ref().take(ROWS_PER_CLOCK_LOOK) {
                emit(&key, Window { start, end }, acc, &mut self.scratch);
                sent += 1;
            }
            let rows = self.scratch.len();
            self.out.give_all(ctx, time, &mut self.scratch);
            if self.scratch.capacity() > ROOM_KEPT * rows.max(MIN_ROOM) {
                self.scratch.shrink_to(2 * rows.max(MIN_ROOM));
            }
            if sent < ROWS_PER_CLOCK_LOOK {
                self.fired.pop_front();
            }
            if bounded
                && !self.fired.is_empty()
                && ctx.now().saturating_sub(started) >= ctx.turn_budget_ns()
            {
                self.out.flush(ctx);
                if !self.continuing {
                    self.continuing = ctx.send_critical(ctx.me(), Msg::Tick).is_ok();
                }
                return;
            }
        }
        if let Some(frontier) = self.held_frontier.take() {
            self.out.frontier(ctx, frontier);
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

impl<T: Data, K: Key + Sync, A: Portable + Data + Sync, O: Data> Logic for WindowLogic<T, K, A, O> {
    fn frontier_needs_state(&self, from: Time, to: Time) -> bool {
        self.fns.spec.may_fire_between(from, to)
    }

    fn on_data(&mut self, ctx: &mut Context<'_, Msg>, _input: usize, data: Box<dyn Any + Send>) {
        let batch = batch_of::<T>(data);
        let spec = self.fns.spec;
        if let (Windows::Tumbling { size }, false) = (spec.windows, spec.inclusive_end) {
            self.add_tumbling(&batch, size.max(1));
        } else {
            for (time, record) in batch.iter() {
                self.add(*time, record);
            }
        }
        if !self.eager_out.is_empty() {
            for (time, output) in self.eager_out.drain(..) {
                self.out.give(ctx, time, output);
            }
            self.out.flush(ctx);
        }
    }

    fn on_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        self.frontier = frontier;
        self.fire(ctx, frontier, false);
    }

    fn forward_frontier(&mut self, ctx: &mut Context<'_, Msg>, frontier: Time) {
        if self.fired.is_empty() {
            self.out.frontier(ctx, frontier);
        } else {
            self.held_frontier = Some(frontier);
        }
    }

    /// The turn of its own a partition sends itself to go on sending fired rows.
    fn on_tick(&mut self, ctx: &mut Context<'_, Msg>) {
        self.continuing = false;
        self.send_fired(ctx, true);
    }

    /// Every input has ended: every window and session fires, whatever its end (a
    /// window that ends at `Time::MAX` included), and every row goes out before the end.
    fn on_end(&mut self, ctx: &mut Context<'_, Msg>) {
        self.fire(ctx, self.frontier, true);
    }

    fn forward_end(&mut self, ctx: &mut Context<'_, Msg>) {
        self.out.end(ctx);
    }

    fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
        self.state.snapshot()
    }

    fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
        let late = self.state.merge(partial, self.frontier, &*self.fns.merge)?;
        if late > 0 {
            self.counters.late.fetch_add(late, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The open windows, frozen (their key tables' chunks shared, copied later only as
    /// the shard writes to them) and archived off the shard; the state stays as it is.
    fn save(&mut self, _: CheckpointId) -> Result<Saved, SnapshotError> {
        Ok(match self.state.freeze() {
            Some(frozen) => Saved::copy(frozen, FrozenWindows::archive),
            None => Saved::Nothing,
        })
    }

    /// Merges the archive straight from the checkpoint's mapped bytes, validated in
    /// place (open windows never count as late: the frontier had fired every window it
    /// passed).
    fn restore(&mut self, inputs: &SavedInputs, saved: Option<&[u8]>) -> Result<(), SnapshotError> {
        self.frontier = inputs.frontier;
        if let Some(bytes) = saved {
            let archived = access_checked::<PartialWindows<K, A>>(bytes)?;
            self.state
                .merge_archived(archived, self.frontier, &*self.fns.merge)?;
        }
        Ok(())
    }

    /// The rows of windows fired before the barrier go out before it: the state saved
    /// for the barrier no longer holds those windows.
    fn forward_barrier(&mut self, ctx: &mut Context<'_, Msg>, id: CheckpointId) {
        self.send_fired(ctx, false);
        self.out.barrier(ctx, id);
    }
}
