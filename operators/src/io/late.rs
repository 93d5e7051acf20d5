//! Late records: what a source does with a record whose event time is further behind
//! the highest event time before it than the source's out-of-orderness bound
//! ([`LateRows`]), and the check that decides it (`LateCheck`, used by the sources).
//!
//! Watermarks trail the highest event time a source passed on by its bound, so a record
//! further behind than that may find its window already fired. By default
//! ([`LateRows::Pass`]) the source passes it on like any record, and each window, top or
//! join drops it only if its own watermark has passed the record's windows (counted as
//! `late`). With [`LateRows::DeadLetter`] the source decides: a record whose time is
//! below the highest event time it passed on before it, less the bound, is a dead
//! letter with that reason, and no operator sees it. The decision is made in the source
//! because only there is it the same in every run: it depends on the order in which the
//! source reads its input alone, while whether a window has fired when a late record
//! reaches it depends on when watermarks went out and on how records were batched and
//! scaled. And every record the source passes on is then on time for every operator
//! downstream: their watermarks never run ahead of the source partition's, which is
//! computed from the same highest time and bound.

use crate::dataflow::Time;

/// What a source does with a late record: one whose event time is below the highest
/// event time it passed on before it less the out-of-orderness bound (see the
/// [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LateRows {
    /// Passed on: a windowed operator whose watermark passed the record's windows drops
    /// it and counts it as late.
    #[default]
    Pass,
    /// A dead letter, with its reason; the records after it go on.
    DeadLetter,
}

/// Decides, record by record in the order a source partition passes them on, which are
/// late dead letters (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LateCheck {
    late: LateRows,
    /// The out-of-orderness bound, ms.
    bound: Time,
    /// The highest event time of a record passed on so far.
    highest: Time,
}

impl LateCheck {
    /// A check doing `late` with records further behind than `bound` ms.
    pub(crate) fn new(late: LateRows, bound: Time) -> Self {
        Self {
            late,
            bound,
            highest: 0,
        }
    }

    /// Whether a record at `time` goes on: `Err` with the reason when it is late and
    /// late records are dead letters; otherwise its time counts towards the highest.
    pub(crate) fn admit(&mut self, time: Time) -> Result<(), String> {
        let watermark = self.highest.saturating_sub(self.bound);
        if self.late == LateRows::DeadLetter && time < watermark {
            return Err(format!(
                "late: event time {time} ms is behind the watermark, {watermark} ms (the \
                 highest event time before it, {} ms, less out_of_orderness_ms, {})",
                self.highest, self.bound
            ));
        }
        self.highest = self.highest.max(time);
        Ok(())
    }

    /// Goes on from a checkpoint at which the highest event time passed on was
    /// `highest`.
    pub(crate) fn resume_at(&mut self, highest: Time) {
        self.highest = highest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_records_behind_the_highest_less_the_bound_are_late() {
        let mut check = LateCheck::new(LateRows::DeadLetter, 10);
        let admitted: Vec<bool> = [5, 30, 15, 20, 19, 40]
            .into_iter()
            .map(|time| check.admit(time).is_ok())
            .collect();
        assert_eq!(admitted, [true, true, false, true, false, true]);
        let mut passing = LateCheck::new(LateRows::Pass, 10);
        assert!([5, 30, 15, 0].into_iter().all(|t| passing.admit(t).is_ok()));
        let mut resumed = LateCheck::new(LateRows::DeadLetter, 10);
        resumed.resume_at(30);
        assert!(resumed.admit(19).is_err());
        assert!(resumed.admit(20).is_ok());
    }
}
