//! The turn budget: how much handler time a shard runs before it looks at its timers and
//! inbound rings again, and so how long a latency-critical message waits behind other
//! work that is already running.
//!
//! A handler is never interrupted. What bounds the wait of a message that arrives while
//! another app's work runs is the length of that work's pieces: the shard ends a turn
//! once its handlers took the budget, the dataflow layer cuts batches to what the
//! receiving operator handles in about the budget (`Context::turn_budget_ns`), and a
//! window sends the rows of a firing in pieces of the budget. Each piece also costs a
//! message (about a microsecond) and a pass through the scheduler, so shorter pieces
//! mean less throughput: 15 µs pieces took NEXMark q5 to 0.57–0.89× of its throughput
//! with 50 µs pieces.
//!
//! So the budget follows the tightest latency target among apps that share the runtime:
//! one that hosts several apps, one of them with an SLO below [`SLO_SHARE`] × 50 µs
//! (3.2 ms), gets that SLO ÷ [`SLO_SHARE`], never below [`LEAST`] (10 µs). A record of
//! that app then waits about one piece of the other apps' work per hop, a few percent of
//! its SLO over a pipeline of a few hops. A runtime of one app keeps [`DEFAULT`] (50 µs)
//! whatever its SLO: its records wait behind its own earlier records whatever the pieces
//! are cut to, so shorter pieces would cost it throughput for nothing. So does a runtime
//! whose apps have no SLO, or only loose ones. An explicit
//! [`RuntimeBuilder::turn_budget`](crate::RuntimeBuilder::turn_budget) wins over both.

use std::time::Duration;

/// The budget of a runtime without a tight latency target.
pub const DEFAULT: Duration = Duration::from_micros(50);

/// The least budget derived from an SLO: below it a turn's fixed costs (a message, a
/// scheduling pass) would be more than a tenth of its work.
pub const LEAST: Duration = Duration::from_micros(10);

/// The most an explicit budget may be: a turn longer than this keeps timers late by as
/// much.
pub const MOST: Duration = Duration::from_millis(10);

/// The tightest SLO divided by this is the derived budget.
pub const SLO_SHARE: u32 = 64;

/// The budget for a runtime whose apps have the latency targets `app_slos`, one per app
/// (zero: none), unless one is set explicitly.
///
/// ```
/// use std::time::Duration;
/// use dirigo_runtime::turn;
///
/// let (none, one_ms) = (Duration::ZERO, Duration::from_millis(1));
/// // One app alone: its own SLO does not shorten its turns.
/// assert_eq!(turn::budget_for([one_ms]), turn::DEFAULT);
/// assert_eq!(turn::budget_for([none, Duration::from_millis(500)]), turn::DEFAULT);
/// let shared = turn::budget_for([Duration::from_millis(500), one_ms]);
/// assert_eq!(shared, Duration::from_nanos(15_625));
/// assert_eq!(turn::budget_for([none, Duration::from_micros(100)]), turn::LEAST);
/// ```
pub fn budget_for(app_slos: impl IntoIterator<Item = Duration>) -> Duration {
    let (apps, tightest) =
        app_slos
            .into_iter()
            .fold((0usize, None::<Duration>), |(apps, tightest), slo| {
                let tightest = match (tightest, slo.is_zero()) {
                    (_, true) => tightest,
                    (None, false) => Some(slo),
                    (Some(least), false) => Some(least.min(slo)),
                };
                (apps + 1, tightest)
            });
    match tightest {
        Some(tightest) if apps >= 2 => (tightest / SLO_SHARE).clamp(LEAST, DEFAULT),
        _ => DEFAULT,
    }
}

/// An explicit budget, within `1 µs..=`[`MOST`].
pub fn bounded(budget: Duration) -> Duration {
    budget.clamp(Duration::from_micros(1), MOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_slo_sets_the_budget_within_its_bounds() {
        let none = Duration::ZERO;
        assert_eq!(budget_for([]), DEFAULT);
        assert_eq!(budget_for([none, none]), DEFAULT);
        assert_eq!(budget_for([none, Duration::from_secs(1)]), DEFAULT);
        assert_eq!(budget_for([Duration::from_nanos(1)]), DEFAULT);
        // Exactly where the SLO share reaches the default.
        assert_eq!(budget_for([none, DEFAULT * SLO_SHARE]), DEFAULT);
        assert_eq!(
            budget_for([none, DEFAULT * SLO_SHARE - Duration::from_micros(64)]),
            DEFAULT - Duration::from_micros(1)
        );
        assert_eq!(
            budget_for([Duration::from_millis(2), none, Duration::from_millis(3)]),
            Duration::from_nanos(31_250)
        );
        assert_eq!(budget_for([none, Duration::from_nanos(1)]), LEAST);
        assert_eq!(bounded(Duration::ZERO), Duration::from_micros(1));
        assert_eq!(bounded(Duration::from_secs(1)), MOST);
        assert_eq!(
            bounded(Duration::from_micros(20)),
            Duration::from_micros(20)
        );
    }
}
