//! How long an idle shard polls before it parks: the configured spin budget
//! ([`RuntimeBuilder::spin_budget`](crate::RuntimeBuilder::spin_budget)) where polling
//! pays, less where it does not — grown and shrunk from how long the shard's parks last,
//! as KVM adapts how long an idle vCPU polls before it halts.
//!
//! Polling catches a message that comes within the budget without the sleep and the
//! wake-up (tens of microseconds, and a system call for the sender). But where messages
//! come further apart than the budget, every idle spell polls the whole budget for
//! nothing, and on a machine the shards share with other processes (a broker on the same
//! host, say) that CPU is taken from them: a NATS relay on 2 CPUs spent most of its
//! shard's CPU time polling, about 85 µs for each 7 µs of work. So:
//!
//! - a park that ends in work sooner than the configured budget would have waited means
//!   polling longer would have caught it: the budget doubles, up to the configured one
//!   (from zero, it starts again at an eighth of it);
//! - a park that lasts longer than the configured budget, or ends without work, means
//!   polling was spent for nothing: the budget halves, and under a thirty-second of the
//!   configured one it is zero (the shard parks at once).
//!
//! Input found while polling leaves the budget as it is. A configured budget of zero
//! stays zero.

use crate::envelope::Nanos;

/// The spin budget of one shard (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SpinBudget {
    configured_ns: Nanos,
    current_ns: Nanos,
}

impl SpinBudget {
    /// Starts at the configured budget.
    pub(crate) fn new(configured_ns: Nanos) -> Self {
        Self {
            configured_ns,
            current_ns: configured_ns,
        }
    }

    /// How long to poll now before parking.
    #[inline]
    pub(crate) fn current_ns(&self) -> Nanos {
        self.current_ns
    }

    /// The shard parked, slept `slept_ns`, and woke with work (`found_work`) or without.
    pub(crate) fn parked(&mut self, slept_ns: Nanos, found_work: bool) {
        if found_work && slept_ns < self.configured_ns {
            self.current_ns = self
                .current_ns
                .saturating_mul(2)
                .max(self.configured_ns / 8)
                .min(self.configured_ns);
        } else {
            self.current_ns /= 2;
            if self.current_ns < self.configured_ns / 32 {
                self.current_ns = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Nanos = 100_000;

    #[test]
    fn long_parks_shrink_the_budget_to_zero_and_short_ones_bring_it_back() {
        let mut spin = SpinBudget::new(BUDGET);
        assert_eq!(spin.current_ns(), BUDGET);
        spin.parked(300_000, true);
        assert_eq!(spin.current_ns(), BUDGET / 2, "work came after the budget");
        for _ in 0..4 {
            spin.parked(1_000_000, true);
        }
        assert_eq!(spin.current_ns(), BUDGET / 32, "halved four more times");
        spin.parked(1_000_000, true);
        assert_eq!(
            spin.current_ns(),
            0,
            "under a thirty-second it stops polling"
        );
        spin.parked(40_000, true);
        assert_eq!(
            spin.current_ns(),
            BUDGET / 8,
            "from zero it starts at an eighth"
        );
        spin.parked(40_000, true);
        spin.parked(40_000, true);
        spin.parked(40_000, true);
        assert_eq!(
            spin.current_ns(),
            BUDGET,
            "and grows back to the configured one"
        );
        spin.parked(40_000, true);
        assert_eq!(spin.current_ns(), BUDGET, "never past it");
    }

    #[test]
    fn a_wake_up_without_work_counts_as_polling_for_nothing() {
        let mut spin = SpinBudget::new(BUDGET);
        spin.parked(10_000, false);
        assert_eq!(spin.current_ns(), BUDGET / 2);
    }

    #[test]
    fn a_configured_zero_stays_zero() {
        let mut spin = SpinBudget::new(0);
        spin.parked(1_000, true);
        assert_eq!(spin.current_ns(), 0);
        spin.parked(1_000_000, false);
        assert_eq!(spin.current_ns(), 0);
    }
}
