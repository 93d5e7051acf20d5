//! Sources: operators that produce records on their own, paced by a load shape, stamping
//! each batch with the *intended* send time of its first record so that latency counts
//! from when a record was due, not from when a stalled pipeline got round to it.
//!
//! A source partition produces on [`Msg::Tick`]: everything that is due, up to a batch
//! limit, then a watermark (bounded out-of-orderness: the frontier is the highest event
//! time seen minus the bound), then it asks for its next turn at the time the next
//! record is due ([`Context::send_at`]), which keeps the shard free in between, but no
//! sooner than 10 µs after this turn: at millions of records per second a turn per
//! record due would send a message of a few records each time, and the cost per message
//! would eat the shard (at 32 M records/s on 2 shards the pipeline fell behind; with the
//! 10 µs floor it kept up). When records come due less than a few µs apart (a heavy
//! load), a turn also waits for `PACED_BATCH` of them to be due, at most
//! `PACED_GATHER_MAX_NS` (40 µs) past the first: batches of a dozen records cost the
//! pipeline a message each, and at half a pipeline's throughput that made a paced run
//! take twice the CPU time of an unpaced one; under a light load nothing waits. A record
//! waits at most those 10 µs (40 µs under a heavy load) past its due time, and latency
//! still counts from when it was due. A finite
//! source ends with [`Msg::End`] (at once, after its last records), never with a time:
//! a record at `Time::MAX` is a record like any other. A partition takes a turn's records from
//! its [`RecordSource`] in one call ([`poll_records`](RecordSource::poll_records)), not
//! one call per record, and a paced one takes the turn's due times from its schedule in
//! one call too: at tens of millions of records per second, two dynamic calls per
//! record were a large share of a paced pipeline's work, and less spare CPU means a
//! slower recovery after a stall (`dirigo bench peer` reports `dirigo_busy_share`).
//!
//! Watermarks go out at most once per 100 µs of a partition's time, since each is a
//! critical message to every downstream partition; except one that closes a window of
//! the app (tumbling or sliding: a fixed grid of event times that the window operators
//! declare), which goes out in the turn whose records crossed the window's end, because
//! the window's output waits for it. When the shard's outgoing rings are full
//! (backpressure), the source waits a little before producing more.
//!
//! A [`RecordSource`] may also have nothing to give *yet* (a network source whose next
//! record has not arrived): its [`poll_record`](RecordSource::poll_record) then answers
//! [`Poll::Pending`], and the source partition sends what it has, keeps its frontier, and
//! looks again after a pause that starts at 100 µs and doubles while nothing comes, up to
//! 4 ms (past the shard's timer-spin window, so an idle source lets its shard park). A
//! record source that wakes its partition when records arrive ([`SourceWaker`]) is looked
//! at again only after [`WOKEN_PENDING_PAUSE_NS`]: the wake-up brings the next records at
//! once, and no tick due within the shard's timer-spin window (2 ms) keeps the shard
//! spinning between two arrivals, taking a CPU from the threads that bring them. Only
//! `Poll::Ready(None)` ends the stream. Iterators are never pending.
//!
//! Stopping ([`App::stop`](crate::App::stop)) is seen within [`STOP_CHECK_EVERY_NS`]
//! (50 ms): a partition takes a turn at least that often however far off its next record
//! is due, and a stopped one ends even while its shard's rings are full.

use std::sync::atomic::AtomicU8;
use std::sync::Arc;
use std::task::Poll;

use dirigo_runtime::{
    ActorId, Context, Envelope, Ingress, Nanos, PartitionId, Snapshot, SnapshotError,
};

use crate::checkpoint::{CompletedCheckpoints, Saved, SavedInputs};
use crate::dataflow::{
    AppBuilder, CheckpointId, Data, FrontierTrigger, Logic, Msg, Output, Stream, Time, Wiring,
};
use crate::io::shape::LoadShape;

/// How fast a source offers its records.
///
/// Paced records have intended send times counted from one instant per app, its pacing
/// epoch ([`App::paced_since`](crate::App::paced_since)): the first turn of any of the
/// app's source partitions. A partition whose first turn comes late (its shard was busy)
/// catches up on what is due instead of shifting its whole schedule, so the schedule
/// stays the one the user asked for, and latency counts from it.
#[derive(Clone, Debug, PartialEq)]
pub enum Pacing {
    /// As fast as the pipeline takes them (for throughput): no intended times, so latency
    /// counts from when a record left the source.
    Unpaced,
    /// This many records per second in total, spread evenly over the source's partitions.
    Rate(f64),
    /// A load shape (rate over time, or Poisson arrivals), in total over the partitions.
    Shape {
        /// The shape.
        shape: LoadShape,
        /// Seed for shapes with randomness.
        seed: u64,
    },
}

impl Pacing {
    /// When each of `partition`'s records is due, in nanoseconds since the source
    /// started: record `i` of the whole source goes to partition `i % partitions`.
    fn schedule(
        &self,
        partition: PartitionId,
        partitions: PartitionId,
    ) -> Option<Box<dyn DueTimes>> {
        let skip = partition as usize;
        let step = partitions.max(1) as usize;
        match self {
            Pacing::Unpaced => None,
            Pacing::Rate(rate) => {
                let spacing = 1e9 / rate.max(1e-9);
                Some(Box::new(
                    (skip..)
                        .step_by(step)
                        .map(move |i| (i as f64 * spacing) as Nanos),
                ))
            }
            Pacing::Shape { shape, seed } => {
                Some(Box::new(shape.schedule(*seed).skip(skip).step_by(step)))
            }
        }
    }
}

/// A paced source partition's schedule: when each of its records is due, in nanoseconds
/// since the pacing epoch, in order. A turn takes every due time that has come in one
/// call ([`take_due`](Self::take_due)), so a turn of a few hundred records costs one
/// dynamic call, not one per record. Every iterator of nanoseconds is one.
trait DueTimes: Send {
    /// Consumes the due times at or before `until`, at most `max` of them, starting with
    /// `peeked` (a due time taken before and not yet used); leaves the first later one in
    /// `peeked` (`Nanos::MAX` once the schedule has ended). Returns how many it consumed
    /// and the first of them.
    fn take_due(&mut self, peeked: &mut Option<Nanos>, until: Nanos, max: usize) -> (usize, Nanos);
}

impl<I: Iterator<Item = Nanos> + Send> DueTimes for I {
    fn take_due(&mut self, peeked: &mut Option<Nanos>, until: Nanos, max: usize) -> (usize, Nanos) {
        let (mut taken, mut first) = (0, Nanos::MAX);
        while taken < max {
            let due = match peeked.take() {
                Some(due) => due,
                None => self.next().unwrap_or(Nanos::MAX),
            };
            if due > until {
                *peeked = Some(due);
                break;
            }
            if taken == 0 {
                first = due;
            }
            taken += 1;
        }
        (taken, first)
    }
}

/// What a paced source partition still owes after a turn, and since when. It owed
/// `owed` due times, the earliest due at `since`; the turn wanted `wanted` records: the
/// oldest `taken` of the owed due times, then its own new ones (the first due at
/// `first_new`); the record source gave `produced` of them (fewer when it was pending),
/// which filled the earliest. While an old owed due time is left, the earliest still
/// owed counts from `since`, else from `first_new`: both are no later than the true due
/// time, so latency is overstated, never understated.
fn still_owed(
    (owed, since): (usize, Nanos),
    taken: usize,
    wanted: usize,
    produced: usize,
    first_new: Nanos,
) -> (usize, Nanos) {
    let left_over = owed - taken;
    let still = left_over + (wanted - produced);
    if still == 0 {
        (0, 0)
    } else if left_over > 0 || produced < taken {
        (still, since)
    } else {
        (still, first_new)
    }
}

/// Most records one source partition produces in one turn.
const TURN_LIMIT: usize = 4 * crate::dataflow::MAX_BATCH;
/// Least time between two watermarks from one source partition, unless a watermark
/// closes a window.
const WATERMARK_EVERY_NS: Nanos = 100_000;
/// Least time between two turns of a paced source partition while records keep coming
/// due (see the module doc).
const PACED_TURN_EVERY_NS: Nanos = 10_000;
/// Records a paced turn gathers, when they come due close together, before it sends
/// them as one batch (see the module doc)...
const PACED_BATCH: u64 = 64;
/// ...waiting at most this long past the due time of the first of them.
const PACED_GATHER_MAX_NS: Nanos = 40_000;
/// How long a backpressured source waits before it looks again.
const BACKPRESSURE_PAUSE_NS: Nanos = 20_000;
/// How long a source with nothing available waits before it looks again, at first...
const PENDING_PAUSE_MIN_NS: Nanos = 100_000;
/// ...and at most, after doubling while nothing comes.
const PENDING_PAUSE_MAX_NS: Nanos = 4_000_000;
/// How long a source whose record source wakes it ([`SourceWaker`]) waits before it looks
/// again when nothing is available: only a fallback (a wake-up that found the shard's
/// intake full is dropped), so well past the shard's timer-spin window.
pub const WOKEN_PENDING_PAUSE_NS: Nanos = 20_000_000;
/// The longest a source partition goes without a turn, so that it sees a stop within
/// this long however far off its next record is due (see [`App::stop`](crate::App::stop)).
pub const STOP_CHECK_EVERY_NS: Nanos = 50_000_000;

/// Where a source partition's records come from: the next record with its event time,
/// `None` at the end, or (with [`poll_record`](Self::poll_record)) nothing available yet.
pub trait RecordSource<T>: Send + 'static {
    /// The next record and its event time; `None` when the source is exhausted.
    fn next_record(&mut self) -> Option<(Time, T)>;

    /// The next record if one is available now (`Ready(Some)`), `Ready(None)` when the
    /// source is exhausted, or `Pending` when a record may still come but none is there
    /// yet. The source partition calls only this; the default never is pending and asks
    /// [`next_record`](Self::next_record). A source whose `next_record` would block
    /// should answer `Pending` here instead.
    fn poll_record(&mut self) -> Poll<Option<(Time, T)>> {
        Poll::Ready(self.next_record())
    }

    /// Appends to `out` up to `max` records that are available now, and says what comes
    /// after them: `Ready(true)`, maybe more at once (it stopped at `max`); `Ready(false)`,
    /// the source is exhausted; `Pending`, nothing more yet. An unpaced source partition
    /// takes its records this way, a turn's worth per call. The default asks
    /// [`poll_record`](Self::poll_record) for each.
    ///
    /// ```
    /// use std::task::Poll;
    /// use dirigo_operators::source::RecordSource;
    ///
    /// // Iterators are record sources: (event time, record) pairs.
    /// let mut records = (0..5u64).map(|i| (i, i * 10));
    /// let mut turn = Vec::new();
    /// assert_eq!(records.poll_records(&mut turn, 3), Poll::Ready(true));
    /// assert_eq!(records.poll_records(&mut turn, 3), Poll::Ready(false));
    /// assert_eq!(turn.len(), 5);
    /// ```
    fn poll_records(&mut self, out: &mut Vec<(Time, T)>, max: usize) -> Poll<bool> {
        for _ in 0..max {
            match self.poll_record() {
                Poll::Ready(Some(record)) => out.push(record),
                Poll::Ready(None) => return Poll::Ready(false),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(true)
    }

    /// Checkpoints ([`crate::checkpoint`]): what the source must remember beyond how
    /// many records it handed out, to be rewound to this point (a dead-letter file's
    /// length, say). The default: nothing.
    fn checkpoint_extra(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Checkpoint `id` is being taken while `handed_out` records of this source have
    /// gone on (the partition may hold one more that it took and has not sent yet):
    /// what to remember, as [`rewind`](Self::rewind) gets it back. The default is
    /// [`checkpoint_extra`](Self::checkpoint_extra); a source that tells its broker what
    /// a complete checkpoint covers notes `id` here (see
    /// [`follow_checkpoints`](Self::follow_checkpoints)).
    fn checkpoint(&mut self, id: CheckpointId, handed_out: u64) -> Vec<u8> {
        let _ = (id, handed_out);
        self.checkpoint_extra()
    }

    /// The app runs with checkpoints, resumed from `resumed_from` (0: from scratch):
    /// `completed` tells which checkpoints are complete as they complete. Called once,
    /// when the partition is made, before any record is asked for. The default ignores
    /// it.
    fn follow_checkpoints(&mut self, completed: CompletedCheckpoints, resumed_from: CheckpointId) {
        let _ = (completed, resumed_from);
    }

    /// Takes `waker`, to wake the partition when records arrive after it found none
    /// (`Pending`); returns whether it will. Called once, on the partition's first turn.
    /// Without it (the default) a pending partition looks again after a pause that grows
    /// to 4 ms.
    fn wake_with(&mut self, waker: SourceWaker) -> bool {
        let _ = waker;
        false
    }

    /// Rewinds a fresh source to a checkpoint at which it had handed out `handed_out`
    /// records (and said `extra` from [`checkpoint_extra`](Self::checkpoint_extra)):
    /// the next record it gives is the one after them. The default takes and drops that
    /// many records, which suits deterministic sources (generators, iterators, files);
    /// a source that cannot be replayed says so with an error.
    ///
    /// ```
    /// use dirigo_operators::source::RecordSource;
    ///
    /// let mut records = (0..10u64).map(|i| (i, i * 10));
    /// records.rewind(4, &[]).unwrap();
    /// assert_eq!(records.next_record(), Some((4, 40)));
    /// ```
    ///
    /// # Errors
    /// When the source ends before `handed_out` records, or cannot be replayed.
    fn rewind(&mut self, handed_out: u64, extra: &[u8]) -> Result<(), String> {
        let _ = extra;
        let mut skipped = 0u64;
        let mut scratch = Vec::new();
        while skipped < handed_out {
            let want = usize::try_from((handed_out - skipped).min(4096)).unwrap_or(4096);
            scratch.clear();
            let more = self.poll_records(&mut scratch, want);
            skipped += scratch.len() as u64;
            match more {
                Poll::Ready(true) => {}
                Poll::Ready(false) if skipped >= handed_out => {}
                Poll::Ready(false) => {
                    return Err(format!(
                        "the source ended after {skipped} records; the checkpoint had {handed_out}"
                    ))
                }
                Poll::Pending => {
                    return Err(format!(
                        "the source cannot be replayed: it had {skipped} of the checkpoint's \
                         {handed_out} records ready"
                    ))
                }
            }
        }
        Ok(())
    }
}

impl<T, I> RecordSource<T> for I
where
    I: Iterator<Item = (Time, T)> + Send + 'static,
{
    fn next_record(&mut self) -> Option<(Time, T)> {
        self.next()
    }

    fn poll_records(&mut self, out: &mut Vec<(Time, T)>, max: usize) -> Poll<bool> {
        let before = out.len();
        out.extend(self.by_ref().take(max));
        Poll::Ready(out.len() - before == max)
    }
}

/// What a source partition knows about its next record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    /// It is peeked.
    Ready,
    /// None is available yet.
    Pending,
    /// The source is exhausted.
    End,
}

struct SourceLogic<T> {
    records: Box<dyn RecordSource<T>>,
    peeked: Option<(Time, T)>,
    /// An unpaced turn's records, between the record source and the output (kept for
    /// its allocation).
    scratch: Vec<(Time, T)>,
    /// The record source said it is exhausted: it is not asked again.
    ended: bool,
    /// How long to wait before looking again when nothing is available.
    pending_pause: Nanos,
    schedule: Option<Box<dyn DueTimes>>,
    /// The next due time, taken from the schedule and not used yet.
    next_due: Option<Nanos>,
    /// Due times that came while the record source had nothing to give (it was
    /// pending): the records it gives next go out at once, as due since `owed_since`
    /// (the earliest of them, so their latency is not understated).
    owed: usize,
    owed_since: Nanos,
    /// Time between two of this partition's due times, as its recent turns saw it
    /// (nanoseconds; 0 until a turn has seen some): how long gathering a batch takes.
    due_gap_ns: Nanos,
    /// Where the previous paced turn's due times ended (ns since the pacing epoch).
    paced_until: Nanos,
    started: Option<Nanos>,
    bound: Time,
    max_time: Time,
    sent_frontier: Time,
    frontier_sent_at: Nanos,
    finished: bool,
    /// Records this partition sent on, for checkpoints: a restored partition rewinds its
    /// record source past them.
    handed_out: u64,
    counters: Arc<crate::dataflow::AppCounters>,
    /// The app's window grids: a frontier that crosses one goes out at once.
    triggers: Arc<[FrontierTrigger]>,
    out: Output<T>,
    /// Its timer ticks in flight.
    timers: Timers,
    /// Whether the record source was offered a waker, and the state shared with it if it
    /// took one.
    waker_offered: bool,
    wake_state: Option<Arc<AtomicU8>>,
}

impl<T: Data> SourceLogic<T> {
    /// Ends the stream if the app was stopped. Once per turn: the flag shares a cache line
    /// with counters that every shard updates.
    fn check_stopped(&mut self) {
        if !self.ended
            && self
                .counters
                .stop
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            // Stopped: what was peeked is never emitted, so it was never counted.
            self.peeked = None;
            self.ended = true;
        }
    }

    /// An unpaced turn: every record available now, up to the turn's limit, taken from
    /// the record source in one call and sent at once (one dynamic call per turn, not
    /// one per record). Returns how many were sent.
    fn take_available(&mut self, ctx: &mut Context<'_, Msg>, now: Nanos) -> usize {
        if self.ended && self.peeked.is_none() {
            return 0;
        }
        let batch = self.take_records(TURN_LIMIT);
        self.send_records(ctx, batch, now)
    }

    /// Up to `wanted` records available now, in the kept buffer: the peeked one first,
    /// then from the record source in one call.
    fn take_records(&mut self, wanted: usize) -> Vec<(Time, T)> {
        let mut batch = std::mem::take(&mut self.scratch);
        batch.extend(self.peeked.take());
        let missing = wanted.saturating_sub(batch.len());
        if missing > 0 && !self.ended {
            if let Poll::Ready(false) = self.records.poll_records(&mut batch, missing) {
                self.ended = true;
            }
        }
        batch
    }

    /// Sends `batch`, stamped with `ingress` (the intended send time of its first
    /// record), and keeps its buffer for the next turn. Returns how many went.
    fn send_records(
        &mut self,
        ctx: &mut Context<'_, Msg>,
        mut batch: Vec<(Time, T)>,
        ingress: Nanos,
    ) -> usize {
        let produced = batch.len();
        if produced > 0 {
            self.out.ingress = Some(ingress);
        }
        self.handed_out += produced as u64;
        for (time, record) in batch.drain(..) {
            self.max_time = self.max_time.max(time);
            self.out.give(ctx, time, record);
        }
        self.scratch = batch;
        produced
    }

    /// A paced turn: the records whose due times have come, up to the turn's limit, taken
    /// from the schedule and from the record source in one call each. The batch is
    /// stamped with the due time of its first record. Returns how many were sent.
    fn take_paced(&mut self, ctx: &mut Context<'_, Msg>, now: Nanos, started: Nanos) -> usize {
        let Some(schedule) = self.schedule.as_mut() else {
            return 0;
        };
        let owed = self.owed.min(TURN_LIMIT);
        let until = now.saturating_sub(started);
        let (due, first_new) = schedule.take_due(&mut self.next_due, until, TURN_LIMIT - owed);
        if due > 0 && self.paced_until > 0 {
            let gap = until.saturating_sub(self.paced_until) / due as Nanos;
            self.due_gap_ns = if self.due_gap_ns == 0 {
                gap
            } else {
                (self.due_gap_ns * 3 + gap) / 4
            };
        }
        self.paced_until = until;
        let wanted = owed + due;
        if wanted == 0 {
            return 0;
        }
        let first_new = started.saturating_add(first_new);
        let first_due = if owed > 0 { self.owed_since } else { first_new };
        let batch = self.take_records(wanted);
        let produced = batch.len();
        (self.owed, self.owed_since) = if self.ended {
            // An exhausted source owes nothing: its stream ends.
            (0, 0)
        } else {
            still_owed(
                (self.owed, self.owed_since),
                owed,
                wanted,
                produced,
                first_new,
            )
        };
        self.send_records(ctx, batch, first_due)
    }

    fn peek(&mut self) -> Next {
        if self.peeked.is_some() {
            return Next::Ready;
        }
        if self.ended {
            return Next::End;
        }
        match self.records.poll_record() {
            Poll::Ready(Some(record)) => {
                self.peeked = Some(record);
                Next::Ready
            }
            Poll::Ready(None) => {
                self.ended = true;
                Next::End
            }
            Poll::Pending => Next::Pending,
        }
    }
}

impl<T: Data> Logic for SourceLogic<T> {
    fn on_data(&mut self, _: &mut Context<'_, Msg>, _: usize, _: Box<dyn std::any::Any + Send>) {}

    fn forward_frontier(&mut self, _: &mut Context<'_, Msg>, _: Time) {}

    /// A source has no inputs: its end comes from its record source (see `on_tick`).
    fn on_end(&mut self, _: &mut Context<'_, Msg>) {}

    fn forward_end(&mut self, _: &mut Context<'_, Msg>) {}

    /// Where the partition stands: records handed out, the highest event time, the
    /// frontier sent, whether it ended, and its record source's own extra.
    fn save(&mut self, id: CheckpointId) -> Result<Saved, SnapshotError> {
        let saved = SavedSource {
            handed_out: self.handed_out,
            max_time: self.max_time,
            sent_frontier: self.sent_frontier,
            finished: self.finished,
            extra: self.records.checkpoint(id, self.handed_out),
        };
        Snapshot::of(&saved).map(Saved::Archived)
    }

    fn restore(&mut self, _: &SavedInputs, saved: Option<&[u8]>) -> Result<(), SnapshotError> {
        let Some(bytes) = saved else {
            return Ok(());
        };
        let saved = Snapshot::from_checked::<SavedSource>(bytes)?;
        let saved = saved.archived::<SavedSource>()?;
        self.handed_out = saved.handed_out.to_native();
        self.max_time = saved.max_time.to_native();
        self.sent_frontier = saved.sent_frontier.to_native();
        self.finished = saved.finished;
        self.ended = saved.finished;
        if !self.finished {
            self.records
                .rewind(self.handed_out, saved.extra.as_slice())
                .map_err(SnapshotError::Restore)?;
            // A paced partition resumes its schedule where it stopped.
            if let Some(schedule) = self.schedule.as_mut() {
                let mut peeked = None;
                let mut left = self.handed_out;
                while left > 0 {
                    let take = usize::try_from(left.min(1 << 20)).unwrap_or(1 << 20);
                    let (taken, _) = schedule.take_due(&mut peeked, Nanos::MAX - 1, take);
                    if taken == 0 {
                        break;
                    }
                    left -= taken as u64;
                }
                self.next_due = peeked;
            }
        }
        Ok(())
    }

    fn forward_barrier(&mut self, ctx: &mut Context<'_, Msg>, id: CheckpointId) {
        self.out.barrier(ctx, id);
    }

    fn on_tick(&mut self, ctx: &mut Context<'_, Msg>) {
        let now = ctx.now();
        self.timers.arrived(now);
        if self.finished {
            return;
        }
        if let Some(state) = &self.wake_state {
            state.store(RUNNING, std::sync::atomic::Ordering::SeqCst);
        } else if !self.waker_offered {
            self.waker_offered = true;
            let state = Arc::new(AtomicU8::new(RUNNING));
            let waker = SourceWaker {
                ingress: ctx.ingress(),
                actor: ctx.me(),
                state: state.clone(),
            };
            if self.records.wake_with(waker) {
                self.wake_state = Some(state);
            }
        }
        let counters = &self.counters;
        let started = *self
            .started
            .get_or_insert_with(|| counters.pacing_epoch(now));
        // A stopped source ends even under backpressure: what it still sends is its last
        // watermark, a critical message, and the drain waits for it.
        self.check_stopped();
        if ctx.backpressured() && !self.ended {
            self.timers.schedule(ctx, now + BACKPRESSURE_PAUSE_NS);
            return;
        }
        let mut produced = 0;
        self.out.ingress = None;
        if self.schedule.is_none() {
            produced = self.take_available(ctx, now);
        }
        if self.schedule.is_some() {
            produced = self.take_paced(ctx, now, started);
        } else {
            while produced < TURN_LIMIT && self.peek() == Next::Ready {
                let (time, record) = self.peeked.take().expect("peeked above");
                self.max_time = self.max_time.max(time);
                self.out.give(ctx, time, record);
                produced += 1;
                self.handed_out += 1;
            }
        }
        self.out.flush(ctx);
        self.counters
            .emitted
            .fetch_add(produced as u64, std::sync::atomic::Ordering::Relaxed);
        let next = self.peek();
        if next == Next::End {
            // The end of the stream is a message of its own, at once: no time (not even
            // `Time::MAX`, which a record may carry) says it.
            self.out.end(ctx);
            self.out.ingress = None;
            self.finished = true;
            return;
        }
        let frontier = self.max_time.saturating_sub(self.bound);
        if frontier_goes_now(
            frontier,
            (self.sent_frontier, self.frontier_sent_at),
            now,
            &self.triggers,
        ) {
            self.sent_frontier = frontier;
            self.frontier_sent_at = now;
            self.out.frontier(ctx, frontier);
        }
        let frontier_waits = frontier > self.sent_frontier;
        self.out.ingress = None;
        if produced > 0 {
            self.pending_pause = PENDING_PAUSE_MIN_NS;
        }
        let mut next = next;
        if next == Next::Pending {
            if let Some(state) = self.wake_state.clone() {
                // Parked: a batch that arrives from now on wakes the partition. One that
                // arrived between the look above and this is seen by the look below (the
                // reader stores its batch, then looks at the state; this stores the
                // state, then looks at the batches).
                state.store(PARKED, std::sync::atomic::Ordering::SeqCst);
                next = self.peek();
                if next != Next::Pending {
                    state.store(RUNNING, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
        let at = match (next, &self.schedule, self.next_due) {
            (Next::End, _, _) => now,
            (Next::Pending, _, _) if self.wake_state.is_some() => now + WOKEN_PENDING_PAUSE_NS,
            (Next::Pending, _, _) => {
                let pause = self.pending_pause;
                self.pending_pause = (pause * 2).min(PENDING_PAUSE_MAX_NS);
                now + pause
            }
            (_, Some(_), Some(offset)) if produced < TURN_LIMIT && self.owed == 0 => started
                .saturating_add(offset)
                .saturating_add(gather_ns(self.due_gap_ns))
                .max(now + PACED_TURN_EVERY_NS),
            _ => now,
        };
        let at = if frontier_waits {
            at.min(self.frontier_sent_at + WATERMARK_EVERY_NS)
        } else {
            at
        };
        // A slow source's next record may be due long after the run ends: it looks at the
        // stop flag at least this often all the same.
        let at = at.min(now + STOP_CHECK_EVERY_NS);
        self.timers.schedule(ctx, at);
    }
}

/// A source partition's own timer ticks in flight (when each is due): a tick that comes
/// while one due no later is already on its way is not sent again, so that a wake-up
/// ([`SourceWaker`]) between two timer ticks does not start a second chain of turns.
#[derive(Default)]
struct Timers {
    due: Vec<Nanos>,
}

impl Timers {
    /// Most timer ticks in flight (a wake-up adds at most one while one is on its way).
    const MOST: usize = 8;
    /// A tick overdue by this much is forgotten (it may have been lost with a shutdown).
    const OVERDUE_NS: Nanos = 1_000_000_000;

    /// How early a tick may seem to come by the clock and still count as its timer's
    /// (taking a wake-up for a timer costs one extra turn; the reverse would leave a
    /// timer listed that never comes).
    const EARLY_NS: Nanos = 200_000;

    /// A tick came at `now`: the earliest timer due by then is the one (or it was a
    /// wake-up, which finds none).
    fn arrived(&mut self, now: Nanos) {
        self.due
            .retain(|&due| due.saturating_add(Self::OVERDUE_NS) >= now);
        if let Some(index) = (0..self.due.len())
            .filter(|&i| self.due[i] <= now + Self::EARLY_NS)
            .min_by_key(|&i| self.due[i])
        {
            self.due.swap_remove(index);
        }
    }

    /// Asks for a tick at `at`, unless one due no later is on its way.
    fn schedule(&mut self, ctx: &mut Context<'_, Msg>, at: Nanos) {
        if self.due.iter().any(|&due| due <= at) {
            return;
        }
        if self.due.len() >= Self::MOST {
            self.due.clear();
        }
        let me = ctx.me();
        if ctx.send_at(at, Envelope::user(me, Msg::Tick)).is_ok() {
            self.due.push(at);
        }
    }
}

/// The partition is taking a turn (or will, its tick is on its way).
const RUNNING: u8 = 0;
/// The partition's record source had nothing: a batch that arrives should wake it.
const PARKED: u8 = 1;
/// A wake-up was sent.
const WOKEN: u8 = 2;

/// Wakes a source partition whose record source had nothing when records arrive for it:
/// given to a record source that can tell ([`RecordSource::wake_with`]), and called by
/// whatever thread hands it records (a network source's reader) after it handed them.
/// Only a parked partition is woken, once, through the runtime's intake; it costs one
/// atomic read otherwise.
#[derive(Clone)]
pub struct SourceWaker {
    ingress: Ingress<Msg>,
    actor: ActorId,
    state: Arc<AtomicU8>,
}

impl std::fmt::Debug for SourceWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceWaker")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl SourceWaker {
    /// Records were handed to the partition: wake it if it is parked.
    pub fn wake(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.state.load(SeqCst) == PARKED
            && self
                .state
                .compare_exchange(PARKED, WOKEN, SeqCst, SeqCst)
                .is_ok()
        {
            // A full intake means a busy shard: the partition's own tick comes soon.
            let _ = self.ingress.try_send(Envelope::user(self.actor, Msg::Tick));
        }
    }
}

/// What a source partition's part of a checkpoint holds.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SavedSource {
    handed_out: u64,
    max_time: Time,
    sent_frontier: Time,
    finished: bool,
    extra: Vec<u8>,
}

/// Whether a source partition sends `frontier` now, having sent `sent` at `sent_at`.
/// Watermarks are critical messages to every downstream partition: at most one per
/// [`WATERMARK_EVERY_NS`], so that a fast source's batches do not each carry one; except
/// one that fires a window (crosses one of `triggers`), which goes at once, since the
/// window's output waits for it. (The end of the stream is no watermark: it goes at once,
/// as [`Msg::End`].)
/// How long a paced turn waits past the next record's due time to gather a batch, when
/// records come due `gap` ns apart: long enough for [`PACED_BATCH`] records, at most
/// [`PACED_GATHER_MAX_NS`]; and not at all when fewer than an eighth of that many would
/// come in that time (a light load: batching would only add latency).
fn gather_ns(gap: Nanos) -> Nanos {
    if gap == 0 || gap.saturating_mul(PACED_BATCH / 8) > PACED_GATHER_MAX_NS {
        return 0;
    }
    gap.saturating_mul(PACED_BATCH - 1).min(PACED_GATHER_MAX_NS)
}

fn frontier_goes_now(
    frontier: Time,
    (sent, sent_at): (Time, Nanos),
    now: Nanos,
    triggers: &[FrontierTrigger],
) -> bool {
    frontier > sent
        && (now >= sent_at + WATERMARK_EVERY_NS
            || triggers.iter().any(|fires| fires(sent, frontier)))
}

impl AppBuilder {
    /// A source whose partitions produce from `make(partition, partitions)`, paced by
    /// `pacing`, with watermarks `out_of_orderness` ms behind the highest event time
    /// seen.
    pub fn source<T, S>(
        &self,
        name: &str,
        out_of_orderness: Time,
        pacing: Pacing,
        make: impl Fn(PartitionId, PartitionId) -> S + Send + Sync + 'static,
    ) -> Stream<T>
    where
        T: Data,
        S: RecordSource<T>,
    {
        let make = Arc::new(make);
        self.add_source(
            name,
            Arc::new(move |wiring: &Wiring, partition| {
                let me = crate::dataflow::partitions_of_self(wiring, partition);
                let mut records = make(partition, me);
                if let Some(link) = &wiring.checkpoint {
                    records.follow_checkpoints(link.completed().clone(), link.resumed_from());
                }
                Box::new(SourceLogic {
                    records: Box::new(records),
                    peeked: None,
                    scratch: Vec::new(),
                    ended: false,
                    pending_pause: PENDING_PAUSE_MIN_NS,
                    schedule: pacing.schedule(partition, me),
                    next_due: None,
                    owed: 0,
                    owed_since: 0,
                    due_gap_ns: 0,
                    paced_until: 0,
                    started: None,
                    bound: out_of_orderness,
                    max_time: 0,
                    sent_frontier: 0,
                    frontier_sent_at: 0,
                    finished: false,
                    handed_out: 0,
                    counters: wiring.counters.clone(),
                    triggers: wiring.triggers.clone(),
                    out: Output::new(wiring, partition),
                    timers: Timers::default(),
                    waker_offered: false,
                    wake_state: None,
                }) as Box<dyn Logic>
            }),
        )
    }

    /// A source over records in memory (with their event times): partition `p` of `n`
    /// produces records `p, p + n, p + 2n, …`, so each partition keeps the records' order.
    pub fn source_iter<T: Data + Sync>(
        &self,
        name: &str,
        records: impl Into<Arc<Vec<(Time, T)>>>,
        out_of_orderness: Time,
        pacing: Pacing,
    ) -> Stream<T> {
        let records: Arc<Vec<(Time, T)>> = records.into();
        self.source(
            name,
            out_of_orderness,
            pacing,
            move |partition, partitions| {
                let records = records.clone();
                (partition as usize..records.len())
                    .step_by(partitions.max(1) as usize)
                    .map(move |i| records[i].clone())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{WindowSpec, Windows};

    #[test]
    fn a_paced_turn_gathers_a_batch_only_when_records_come_due_close_together() {
        // Nothing seen yet, or a light load (records 200 µs apart): no wait.
        assert_eq!(gather_ns(0), 0);
        assert_eq!(gather_ns(200_000), 0);
        // Just light enough: fewer than an eighth of a batch would come in the wait.
        assert_eq!(gather_ns(PACED_GATHER_MAX_NS / (PACED_BATCH / 8) + 1), 0);
        // A heavy load: long enough for a batch...
        assert_eq!(gather_ns(100), 100 * (PACED_BATCH - 1));
        // ...but never past the bound.
        assert_eq!(gather_ns(2_000), PACED_GATHER_MAX_NS);
    }

    #[test]
    fn a_watermark_that_closes_a_window_goes_at_once_others_wait_their_turn() {
        let tumbling = WindowSpec::from(Windows::Tumbling { size: 10 });
        let triggers: Vec<FrontierTrigger> = tumbling.trigger().into_iter().collect();
        let sent = (4, 1_000_000);
        let soon = 1_000_000 + WATERMARK_EVERY_NS / 10;
        let later = 1_000_000 + WATERMARK_EVERY_NS;
        // Crossing the end of [0, 10): at once.
        assert!(frontier_goes_now(10, sent, soon, &triggers));
        assert!(frontier_goes_now(25, sent, soon, &triggers));
        // Within the window: waits for the cadence.
        assert!(!frontier_goes_now(9, sent, soon, &triggers));
        assert!(frontier_goes_now(9, sent, later, &triggers));
        // Without windows on a grid, only the cadence counts.
        assert!(!frontier_goes_now(25, sent, soon, &[]));
        // The largest time is only a frontier: it waits for the cadence like any other.
        assert!(!frontier_goes_now(Time::MAX, sent, soon, &[]));
        assert!(frontier_goes_now(Time::MAX, sent, later, &[]));
        // No advance, nothing to send.
        assert!(!frontier_goes_now(4, sent, later, &triggers));
    }

    /// A record source that has `ready` records, then nothing yet, then ends.
    struct Trickle {
        ready: u64,
        polls: u64,
    }

    impl RecordSource<u64> for Trickle {
        fn next_record(&mut self) -> Option<(Time, u64)> {
            unreachable!("polled only")
        }
        fn poll_record(&mut self) -> Poll<Option<(Time, u64)>> {
            self.polls += 1;
            match self.polls {
                n if n <= self.ready => Poll::Ready(Some((n, n))),
                n if n == self.ready + 1 => Poll::Pending,
                _ => Poll::Ready(None),
            }
        }
    }

    #[test]
    fn records_come_a_turn_at_a_time_and_say_what_follows() {
        // Iterators: stopped at the limit, or exhausted.
        let mut iter = (0..10u64).map(|i| (i, i));
        let mut out = Vec::new();
        assert_eq!(iter.poll_records(&mut out, 4), Poll::Ready(true));
        assert_eq!(iter.poll_records(&mut out, 4), Poll::Ready(true));
        assert_eq!(iter.poll_records(&mut out, 4), Poll::Ready(false));
        assert_eq!(
            out.iter().map(|r| r.1).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        // The default, over `poll_record`: what is there, then pending, then the end.
        let mut trickle = Trickle { ready: 3, polls: 0 };
        let mut out = Vec::new();
        assert_eq!(trickle.poll_records(&mut out, 10), Poll::Pending);
        assert_eq!(out, [(1, 1), (2, 2), (3, 3)]);
        assert_eq!(trickle.poll_records(&mut out, 10), Poll::Ready(false));
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn a_turn_takes_every_due_time_that_has_come_and_keeps_the_next() {
        let mut schedule = [10u64, 20, 30, 40].into_iter();
        let mut peeked = None;
        assert_eq!(schedule.take_due(&mut peeked, 25, 10), (2, 10));
        assert_eq!(peeked, Some(30));
        // Nothing new has come: the peeked time stays.
        assert_eq!(schedule.take_due(&mut peeked, 25, 10), (0, Nanos::MAX));
        assert_eq!(peeked, Some(30));
        // At most `max`, the peeked one first.
        assert_eq!(schedule.take_due(&mut peeked, 100, 1), (1, 30));
        assert_eq!(peeked, None);
        // The schedule ends: what follows is never due.
        assert_eq!(schedule.take_due(&mut peeked, 100, 10), (1, 40));
        assert_eq!(peeked, Some(Nanos::MAX));
        assert_eq!(schedule.take_due(&mut peeked, Nanos::MAX - 1, 10).0, 0);
    }

    #[test]
    fn owed_due_times_are_kept_to_the_last_and_dated_no_later_than_due() {
        // Nothing owed, everything filled.
        assert_eq!(still_owed((0, 0), 0, 10, 10, 500), (0, 0));
        // Pending mid-turn: the rest of the turn is owed, since its first new due time
        // (no later than the first unfilled one).
        assert_eq!(still_owed((0, 0), 0, 10, 4, 500), (6, 500));
        // Old owed ones unfilled again: still since the old date.
        assert_eq!(still_owed((6, 100), 6, 16, 3, 500), (13, 100));
        // Old owed ones all filled, some new ones not: since the turn's first new.
        assert_eq!(still_owed((6, 100), 6, 16, 10, 500), (6, 500));
        // More owed than a turn takes: the rest stays owed, with its date, even when the
        // turn filled everything it took.
        assert_eq!(still_owed((5_000, 100), 4_096, 4_096, 4_096, 0), (904, 100));
    }

    #[test]
    fn sessions_declare_no_trigger_grids_do() {
        assert!(WindowSpec::from(Windows::Session { gap: 5 })
            .trigger()
            .is_none());
        let sliding = WindowSpec::from(Windows::Sliding { size: 10, slide: 5 })
            .trigger()
            .expect("a grid");
        // Ends at 10, 15, 20...: from 11 to 14 closes none, to 15 closes one.
        assert!(!sliding(11, 14));
        assert!(sliding(11, 15));
    }

    #[test]
    fn a_slow_source_sees_a_stop_within_its_check_interval() {
        use crate::dataflow::{AppBuilder, Msg};
        use dirigo_runtime::Runtime;
        use std::time::{Duration, Instant};

        // One record every 100 s: without a bounded turn, the second turn, and so the
        // stop, would come 100 s after the first.
        let app = AppBuilder::new(0, "slow");
        let ticks: Vec<(u64, u64)> = (0..1_000u64).map(|i| (i, i)).collect();
        app.source_iter("ticks", ticks, 0, Pacing::Rate(0.01))
            .count("out");
        let app = app.build();
        let runtime = app
            .install(Runtime::<Msg>::builder().shards(1))
            .build()
            .unwrap();
        app.start(&runtime.ingress());
        std::thread::sleep(Duration::from_millis(20));
        let asked = Instant::now();
        app.stop();
        assert!(app.wait(Duration::from_secs(5)), "the source never ended");
        let took = asked.elapsed();
        assert!(
            took < Duration::from_nanos(STOP_CHECK_EVERY_NS) * 4,
            "stopped after {took:?}"
        );
        runtime.shutdown();
    }
}
