//! The `dirigo` command's exit codes: what a script or a service manager can tell from
//! how a run ended, without reading its output. Documented in `configs/README.md`.
//!
//! When several apply, the most telling wins: a stop forced by a second signal (130),
//! then a run that broke down (1) or was misconfigured (2), then an app that failed (4),
//! then lost output (3), then a drain cut short (5), then an SLO missed under
//! `--fail-on-slo` (6). A failed app says more than output lost because of it, and both
//! say more than a drain cut short.

use std::process::ExitCode;

/// How a `dirigo` invocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything ran and every output was written.
    Success,
    /// The run could not start or broke down (an error message says why).
    Failure,
    /// A configuration file or a command-line argument is wrong; the message names
    /// `FILE:LINE:COL` and what was expected.
    Usage,
    /// Output was lost: a sink, dead-letter or report write failed. The report (when it
    /// could be written) says where and how much (`outputs_failed`).
    OutputLost,
    /// An app failed (a handler panicked); the other apps ran to their end. The report
    /// lists it under `failed_apps`.
    AppFailed,
    /// Shutdown gave up draining after its deadline; the report counts what it abandoned.
    Abandoned,
    /// A second SIGINT or SIGTERM stopped the run at once, after writing what report it
    /// could.
    Interrupted,
    /// With `--fail-on-slo`: an app delivered fewer of its outputs within its SLO than
    /// asked (or none at all).
    SloMissed,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::OutputLost => 3,
            Exit::AppFailed => 4,
            Exit::Abandoned => 5,
            Exit::Interrupted => 130,
            Exit::SloMissed => 6,
        }
    }

    /// What the exit means, in a few words (the report's `meta.exit_reason`).
    pub fn reason(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => "the run broke down",
            Exit::Usage => "bad configuration or arguments",
            Exit::OutputLost => "output lost",
            Exit::AppFailed => "an app failed",
            Exit::Abandoned => "the drain was cut short",
            Exit::Interrupted => "stopped by a second signal",
            Exit::SloMissed => "an app missed its SLO",
        }
    }

    /// The exit a finished run's report calls for: a second signal, a failed app, lost
    /// output, a drain cut short, an SLO missed under `--fail-on-slo` (see the module
    /// doc for which wins).
    pub fn of_report(report: &crate::report::Report) -> Exit {
        let mut exit = Exit::Success;
        if !report.failed_apps.is_empty() {
            exit = exit.and(Exit::AppFailed);
        }
        if !report.output_errors.is_empty() {
            exit = exit.and(Exit::OutputLost);
        }
        if report.signals >= 2 {
            exit = exit.and(Exit::Interrupted);
        } else if !report.drained || report.abandoned > 0 {
            exit = exit.and(Exit::Abandoned);
        }
        if !slo_misses(report).is_empty() {
            exit = exit.and(Exit::SloMissed);
        }
        exit
    }

    /// The exit of a run where both `self` and `other` happened (see the module doc).
    pub fn and(self, other: Exit) -> Exit {
        if other.telling() > self.telling() {
            other
        } else {
            self
        }
    }

    /// How much an exit says about the run (higher wins).
    fn telling(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::SloMissed => 1,
            Exit::Abandoned => 2,
            Exit::OutputLost => 3,
            Exit::AppFailed => 4,
            Exit::Usage => 5,
            Exit::Failure => 6,
            Exit::Interrupted => 7,
        }
    }
}

/// Under `--fail-on-slo` (the report's `meta.fail_on_slo_percent`), each app with an SLO
/// whose share of outputs within it is below the asked share, with that share (an app
/// with an SLO and no output misses it); empty without the flag.
pub fn slo_misses(report: &crate::report::Report) -> Vec<(String, f64)> {
    let Some(percent) = report
        .meta
        .as_ref()
        .and_then(|meta| meta.fail_on_slo_percent)
    else {
        return Vec::new();
    };
    report
        .apps
        .iter()
        .filter(|app| app.slo_ms.is_some())
        .map(|app| (app.name.clone(), app.satisfaction.unwrap_or(0.0) * 100.0))
        .filter(|(_, share)| *share < percent)
        .collect()
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_telling_exit_wins() {
        assert_eq!(Exit::Success.and(Exit::OutputLost).code(), 3);
        assert_eq!(Exit::Abandoned.and(Exit::AppFailed).code(), 4);
        assert_eq!(Exit::AppFailed.and(Exit::OutputLost).code(), 4);
        assert_eq!(Exit::OutputLost.and(Exit::Abandoned).code(), 3);
        assert_eq!(Exit::OutputLost.and(Exit::Interrupted).code(), 130);
        assert_eq!(Exit::Success.and(Exit::Success).code(), 0);
        assert_eq!(Exit::Success.and(Exit::SloMissed).code(), 6);
        assert_eq!(Exit::SloMissed.and(Exit::Abandoned).code(), 5);
    }
}
