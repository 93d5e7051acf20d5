//! How many records one batch to an operator holds.
//!
//! A batch is one handler turn of the operator partition that receives it, and no other
//! message of its shard — another app's latency-critical record among them — runs until
//! that turn ends. So a batch holds what the receiving operator handles in about the
//! shard's turn budget (`Context::turn_budget_ns`: 50 µs, shorter on a runtime that hosts
//! an app with a tight SLO; see `dirigo_runtime::turn`), within
//! [`least_batch`]`..=`[`MAX_BATCH`] records:
//! - before it has run, from the work per record its builder declared (a record counted
//!   into 20 sliding windows costs 20 units; see [`declared_limit`]), sized for the
//!   default budget;
//! - once it runs, from what its partitions measure: each partition times the batches it
//!   handles ([`BatchMeter`]) and publishes the size that fits its shard's budget in
//!   [`BatchSizes`], one slot per operator of the app, which every upstream partition
//!   reads each time it sends a batch.
//!
//! Cheap operators (a map, a filter, a sink that formats rows) measure far below the
//! budget per record, so their batches stay at [`MAX_BATCH`]; only costly ones get
//! shorter batches, and their shards' other work waits a shorter turn. The least size
//! keeps a message's fixed cost (about a microsecond) a small share of a batch however
//! costly each record is: [`MIN_BATCH`] records at the default budget, proportionally
//! fewer at a shorter one (a shorter budget is asked for latency, and pays for it), never
//! fewer than [`LEAST_BATCH_FLOOR`]. A handler that costs more than the budget per record
//! still holds its shard for that record.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dirigo_runtime::{Nanos, OperatorId};

/// Most records a partition buffers for one downstream partition before it sends them.
pub const MAX_BATCH: usize = 1024;

/// Least records a batch to a costly operator is cut to at the default turn budget:
/// below this the fixed cost of a message per batch would dominate.
pub(crate) const MIN_BATCH: usize = 32;

/// Least records a batch to a costly operator is cut to at any budget.
pub(crate) const LEAST_BATCH_FLOOR: usize = 4;

/// The default turn budget, which the declared sizes fit.
const DEFAULT_TURN_NS: u64 = dirigo_runtime::turn::DEFAULT.as_nanos() as u64;

/// Units of declared work (see [`declared_limit`]) one batch may cost before anything is
/// measured; a unit is about what a cheap record costs.
const DECLARED_WORK: usize = 4 * MAX_BATCH;

/// How much of each new measurement the running cost per record takes in (1/8).
const SMOOTHING_SHIFT: u32 = 3;

/// The most records one batch to an operator whose records each cost `work` declared
/// units holds, before any is measured.
pub(crate) fn declared_limit(work: u32) -> usize {
    (DECLARED_WORK / work.max(1) as usize).clamp(MIN_BATCH, MAX_BATCH)
}

/// The least records a batch is cut to under a turn budget of `budget_ns`: [`MIN_BATCH`]
/// at the default budget, in proportion below it, at least [`LEAST_BATCH_FLOOR`]. Smaller
/// batches are not timed either: a message's fixed cost dominates them, and under light
/// load (a record or two per batch) the two clock reads would cost a share of each hop.
pub(crate) fn least_batch(budget_ns: u64) -> usize {
    let scaled = MIN_BATCH as u64 * budget_ns / DEFAULT_TURN_NS;
    (scaled as usize).clamp(LEAST_BATCH_FLOOR, MIN_BATCH)
}

/// The batch size that makes a turn of records costing `ns_per_record` each take about
/// `budget_ns`.
fn measured_limit(ns_per_record: f64, budget_ns: u64) -> usize {
    if ns_per_record <= 0.0 {
        return MAX_BATCH;
    }
    let fits = budget_ns as f64 / ns_per_record;
    (fits as usize).clamp(least_batch(budget_ns), MAX_BATCH)
}

/// One slot per operator, alone on its cache lines: written by the operator's
/// partitions when their measured size changes, read by the partitions upstream of it.
#[repr(align(128))]
struct Slot(AtomicUsize);

/// The current batch size of each operator of an app.
pub(crate) struct BatchSizes {
    slots: Box<[Slot]>,
}

impl BatchSizes {
    /// The declared sizes: one per operator, from the work per record of each.
    pub(crate) fn declared(work_per_record: impl IntoIterator<Item = u32>) -> Arc<Self> {
        Arc::new(Self {
            slots: work_per_record
                .into_iter()
                .map(|work| Slot(AtomicUsize::new(declared_limit(work))))
                .collect(),
        })
    }

    /// The most records one batch to `operator` holds now.
    pub(crate) fn limit(&self, operator: OperatorId) -> usize {
        self.slots
            .get(usize::from(operator))
            .map_or(MAX_BATCH, |slot| slot.0.load(Ordering::Relaxed))
    }

    /// A meter for one partition of `operator`.
    pub(crate) fn meter(self: &Arc<Self>, operator: OperatorId) -> BatchMeter {
        BatchMeter {
            published: self.limit(operator),
            sizes: self.clone(),
            operator,
            ns_per_record: None,
            least: (DEFAULT_TURN_NS, MIN_BATCH),
        }
    }
}

/// What one operator partition measures of the batches it handles: its running cost per
/// record, and the batch size it last published for its operator.
pub(crate) struct BatchMeter {
    sizes: Arc<BatchSizes>,
    operator: OperatorId,
    ns_per_record: Option<f64>,
    published: usize,
    /// The turn budget last seen and its [`least_batch`], so that a message costs a
    /// comparison rather than a division.
    least: (u64, usize),
}

impl BatchMeter {
    /// Whether a batch of `records` is worth timing on a shard whose turn budget is
    /// `budget_ns`.
    pub(crate) fn times(&mut self, records: u32, budget_ns: u64) -> bool {
        records as usize >= self.least_batch(budget_ns)
    }

    /// [`least_batch`] of `budget_ns`, worked out again only when the budget changes.
    fn least_batch(&mut self, budget_ns: u64) -> usize {
        if self.least.0 != budget_ns {
            self.least = (budget_ns, least_batch(budget_ns));
        }
        self.least.1
    }

    /// A batch of `records` took `cost` to handle on a shard whose turn budget is
    /// `budget_ns`: folds it into the running cost per record and publishes the size that
    /// fits the budget when it moved by more than an eighth, or reached a bound (so that
    /// the slot's cache line is written rarely).
    pub(crate) fn observe(&mut self, records: u32, cost: Nanos, budget_ns: u64) {
        if records == 0 {
            return;
        }
        let sample = cost as f64 / f64::from(records);
        let smoothed = match self.ns_per_record {
            None => sample,
            Some(running) => running + (sample - running) / f64::from(1u32 << SMOOTHING_SHIFT),
        };
        self.ns_per_record = Some(smoothed);
        let wanted = measured_limit(smoothed, budget_ns);
        let at_bound = wanted == self.least_batch(budget_ns) || wanted == MAX_BATCH;
        if wanted.abs_diff(self.published) > self.published / 8
            || (at_bound && wanted != self.published)
        {
            self.published = wanted;
            if let Some(slot) = self.sizes.slots.get(usize::from(self.operator)) {
                slot.0.store(wanted, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_batches_to_costly_operators_are_cut_shorter_within_bounds() {
        assert_eq!(declared_limit(1), MAX_BATCH);
        assert_eq!(declared_limit(0), MAX_BATCH);
        assert_eq!(declared_limit(4), MAX_BATCH);
        assert_eq!(declared_limit(20), DECLARED_WORK / 20);
        assert_eq!(declared_limit(u32::MAX), MIN_BATCH);
    }

    #[test]
    fn measured_costs_set_the_size_that_fits_the_turn_target() {
        let sizes = BatchSizes::declared([1, 20]);
        assert_eq!(sizes.limit(0), MAX_BATCH);
        assert_eq!(sizes.limit(1), DECLARED_WORK / 20);
        // Records of 1 µs each: 50 fit the target.
        let mut costly = sizes.meter(1);
        costly.observe(200, 200_000, DEFAULT_TURN_NS);
        assert_eq!(sizes.limit(1), 50);
        // The other operator's slot is untouched, and an unknown operator gets the most.
        assert_eq!(sizes.limit(0), MAX_BATCH);
        assert_eq!(sizes.limit(7), MAX_BATCH);
        // Cheap records: back to the most, however many measurements it takes to get
        // there (each moves the running cost an eighth of the way).
        for _ in 0..64 {
            costly.observe(1024, 10_000, DEFAULT_TURN_NS);
        }
        assert_eq!(sizes.limit(1), MAX_BATCH);
        // Records dearer than the whole target: the least size, never fewer.
        for _ in 0..64 {
            costly.observe(32, 32 * 200_000, DEFAULT_TURN_NS);
        }
        assert_eq!(sizes.limit(1), MIN_BATCH);
    }

    #[test]
    fn small_moves_are_not_published_and_small_batches_are_not_timed() {
        let sizes = BatchSizes::declared([1]);
        let mut meter = sizes.meter(0);
        meter.observe(100, 100 * 100, DEFAULT_TURN_NS);
        assert_eq!(sizes.limit(0), 500);
        // 480 is within an eighth of 500: the slot keeps 500.
        for _ in 0..64 {
            meter.observe(100, 100 * 104, DEFAULT_TURN_NS);
        }
        assert_eq!(sizes.limit(0), 500);
        assert!(!meter.times(MIN_BATCH as u32 - 1, DEFAULT_TURN_NS));
        assert!(meter.times(MIN_BATCH as u32, DEFAULT_TURN_NS));
        // An empty batch teaches nothing.
        meter.observe(0, 1_000_000, DEFAULT_TURN_NS);
        assert_eq!(sizes.limit(0), 500);
    }

    #[test]
    fn a_shorter_turn_budget_cuts_costly_batches_shorter_and_times_smaller_ones() {
        let (default, short) = (DEFAULT_TURN_NS, 15_625);
        assert_eq!(least_batch(default), MIN_BATCH);
        assert_eq!(least_batch(short), 10);
        assert_eq!(least_batch(1_000), LEAST_BATCH_FLOOR);
        assert_eq!(least_batch(10 * default), MIN_BATCH);
        let sizes = BatchSizes::declared([20]);
        let mut meter = sizes.meter(0);
        // Records of 1.2 µs (the isolation bench's sliding-window count): 41 fit 50 µs,
        // 13 fit 15.6 µs.
        meter.observe(64, 64 * 1_200, short);
        assert_eq!(sizes.limit(0), 13);
        // Dearer than the short budget each: its least size, not the default's.
        for _ in 0..64 {
            meter.observe(16, 16 * 100_000, short);
        }
        assert_eq!(sizes.limit(0), 10);
        assert!(meter.times(10, short) && !meter.times(9, short));
        assert!(!meter.times(10, default));
        // The least size follows the budget back.
        assert!(meter.times(10, short));
    }
}
