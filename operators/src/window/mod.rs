//! Event-time windows over keyed streams: which windows a record belongs to
//! ([`Windows`], [`WindowSpec`], [`Window`]) and the window operators built on them
//! (`KeyedStream::window`, `window_count`, `window_top_k`, `window_join`).
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
//! Window state and join buffers are *mergeable*: those operators may get lessees, each
//! folding records into partial windows; at a watermark (a critical message) the lessor
//! merges the partial windows, reading their rkyv archive in place ([`WindowState::merge`]),
//! and fires.
//!
//! Where things live: the public API is here; `assign` computes a record's windows and
//! when they fire; `keys` holds one window's per-key state ([`WindowSpec::any_order`] or
//! key order at firing); `state` holds an operator partition's open windows and sessions
//! ([`WindowState`]) and hands them between lessees and their lessor (the archived
//! [`PartialWindows`], merged in place); `logic` is the window operator itself: adding
//! records, firing, emitting; `join` is the windowed join. Running aggregates are in [`aggregate`](crate::aggregate)
//! and `process` operators in [`process`](crate::process).

use std::sync::Arc;

use dirigo_runtime::StateKind;

use crate::dataflow::{Data, KeyedStream, Logic, Stream, Time, Wiring};
use crate::partition::Partitioning;

mod assign;
mod chunks;
mod join;
mod keys;
mod logic;
mod state;

pub use crate::process::Emitted;
pub use crate::state::{Key, Portable};
pub use join::Either;
pub(crate) use logic::MergeFn;
use logic::{WindowFns, WindowLogic};
pub use state::{FrozenWindows, PartialSession, PartialWindow, PartialWindows, WindowState};

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
}

/// One window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// First millisecond in the window.
    pub start: Time,
    /// First millisecond after the window (see [`WindowSpec::inclusive_end`]).
    pub end: Time,
}

impl<T: Data, K: Key + Sync> KeyedStream<T, K> {
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
    pub fn window<A: Portable + Data + Sync, O: Data>(
        &self,
        name: &str,
        spec: impl Into<WindowSpec>,
        init: impl Fn() -> A + Send + Sync + 'static,
        fold: impl Fn(&mut A, Window, Time, &T) + Send + Sync + 'static,
        merge: impl Fn(&mut A, A) + Send + Sync + 'static,
        emit: impl Fn(&K, Window, A, &mut Vec<O>) + Send + Sync + 'static,
    ) -> Stream<O> {
        let spec = spec.into();
        let fns = WindowFns {
            spec,
            key: self.key.clone(),
            init: Arc::new(init),
            fold: Arc::new(fold),
            merge: Arc::new(merge),
            emit: Arc::new(emit),
            eager: None,
        };
        self.window_node(name, fns, StateKind::Mergeable)
    }

    /// The window operator made of `fns`, its state `kind`.
    fn window_node<A: Portable + Data + Sync, O: Data>(
        &self,
        name: &str,
        fns: WindowFns<T, K, A, O>,
        kind: StateKind,
    ) -> Stream<O> {
        let spec = fns.spec;
        let fns = Arc::new(fns);
        let stream = self.stream.then(
            name,
            kind,
            Partitioning::KeyHash,
            Some(self.hasher()),
            Arc::new(move |wiring: &Wiring, partition| {
                Box::new(WindowLogic::new(fns.clone(), wiring, partition)) as Box<dyn Logic>
            }),
        );
        if let Some(trigger) = spec.trigger() {
            stream.set_trigger(trigger);
        }
        stream.set_work_per_record(spec.windows_per_record());
        stream
    }

    /// A window that puts out results as soon as the records that make them are in, not
    /// when it fires: `eager(key, window, acc, record, out)` runs as each record arrives,
    /// with the key's accumulator of that window before the record is folded in, and
    /// puts out what the record completes. `emit` still runs when the window fires, for
    /// what only the whole window decides. Outputs carry the window's output time
    /// (its end − 1 ms), as a fired window's do.
    ///
    /// Its latency is then the record's, not the window's: nothing waits for the
    /// watermark. The price is elasticity: the state is exclusive (never split among
    /// lessees), since a record must meet every earlier record of its key and window
    /// where it arrives. Tumbling and sliding windows only.
    ///
    /// ```
    /// # use dirigo_operators::dataflow::AppBuilder;
    /// # use dirigo_operators::source::Pacing;
    /// # use dirigo_operators::window::Windows;
    /// let app = AppBuilder::new(0, "doc");
    /// let logins = app.source_iter("logins", vec![(1, 7u64), (2, 7), (3, 7), (4, 9)], 0, Pacing::Unpaced);
    /// // A user's third login in a 10 ms window, told at once: (user, window start).
    /// let third = logins.key_by(|user| *user).window_eager(
    ///     "third-login",
    ///     Windows::Tumbling { size: 10 },
    ///     || 0u64,
    ///     |count, _, _, _| *count += 1,
    ///     |count, other| *count += other,
    ///     |user, window, count, _, out| {
    ///         if *count == 2 {
    ///             out.push((*user, window.start));
    ///         }
    ///     },
    ///     |_, _, _, _| {},
    /// );
    /// ```
    ///
    /// # Panics
    /// With session windows.
    #[allow(clippy::too_many_arguments)]
    pub fn window_eager<A: Portable + Data + Sync, O: Data>(
        &self,
        name: &str,
        spec: impl Into<WindowSpec>,
        init: impl Fn() -> A + Send + Sync + 'static,
        fold: impl Fn(&mut A, Window, Time, &T) + Send + Sync + 'static,
        merge: impl Fn(&mut A, A) + Send + Sync + 'static,
        eager: impl Fn(&K, Window, &A, &T, &mut Vec<O>) + Send + Sync + 'static,
        emit: impl Fn(&K, Window, A, &mut Vec<O>) + Send + Sync + 'static,
    ) -> Stream<O> {
        let spec = spec.into();
        assert!(
            !matches!(spec.windows, Windows::Session { .. }),
            "an eager window is tumbling or sliding"
        );
        let fns = WindowFns {
            spec,
            key: self.key.clone(),
            init: Arc::new(init),
            fold: Arc::new(fold),
            merge: Arc::new(merge),
            emit: Arc::new(emit),
            eager: Some(Arc::new(eager)),
        };
        self.window_node(name, fns, StateKind::Exclusive)
    }

    /// Counts each key's records per window: outputs `(key, window, count)`. The count
    /// saturates at `u64::MAX` (it never wraps to a small number).
    pub fn window_count(
        &self,
        name: &str,
        spec: impl Into<WindowSpec>,
    ) -> Stream<(K, Window, u64)> {
        self.window(
            name,
            spec,
            || 0u64,
            |count, _, _, _| *count = count.saturating_add(1),
            |count, other| *count = count.saturating_add(other),
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
        T: Portable + Ord + Sync,
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
}
