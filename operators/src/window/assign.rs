//! Window assignment and firing times: which aligned windows a record belongs to, when a
//! window fires, what event time its outputs carry, and which frontier advances can fire
//! one (the trigger sources use to send such a watermark at once).

use std::sync::Arc;

use super::{Window, WindowSpec, Windows};
use crate::dataflow::{FrontierTrigger, Time};

impl WindowSpec {
    /// How many windows one record is counted into (for sliding windows, `size / slide`
    /// rounded up): the operator's work per record against a plain operator's.
    pub(crate) fn windows_per_record(&self) -> u32 {
        match self.windows {
            Windows::Sliding { size, slide } => {
                u32::try_from(size.max(1).div_ceil(slide.max(1))).unwrap_or(u32::MAX)
            }
            Windows::Tumbling { .. } | Windows::Session { .. } => 1,
        }
    }

    /// Calls `each` with every aligned window `time` belongs to.
    pub(super) fn assign(&self, time: Time, mut each: impl FnMut(Window)) {
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
            // Saturating: a record near the end of the time range (`u64::MAX` is a time
            // like any other) has windows that end there.
            let end = start.saturating_add(size);
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
    pub(super) fn fired(&self, end: Time, frontier: Time) -> bool {
        if self.inclusive_end {
            end < frontier
        } else {
            end <= frontier
        }
    }

    pub(super) fn output_time(&self, end: Time) -> Time {
        if self.inclusive_end {
            end
        } else {
            end - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
