//! The `dirigo` command's exit codes: what a script or a service manager can tell from
//! how a run ended, without reading its output. Documented in `configs/README.md`.
//!
//! When several apply, the most telling wins: a stop forced by a second signal (130),
//! then a run that broke down (1) or was misconfigured (2), then an app that failed (4),
//! then lost output (3), then a drain cut short (5). A failed app says more than output
//! lost because of it, and both say more than a drain cut short.

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
        }
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
            Exit::Abandoned => 1,
            Exit::OutputLost => 2,
            Exit::AppFailed => 3,
            Exit::Usage => 4,
            Exit::Failure => 5,
            Exit::Interrupted => 6,
        }
    }
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
    }
}
