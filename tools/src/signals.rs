//! How `dirigo run` reacts to SIGINT (Ctrl-C) and SIGTERM, through `signal-hook`.
//!
//! - The first signal asks for a stop: the run loop sees it within 50 ms, the sources
//!   stop producing (each within 50 ms, see `dirigo_operators::source`), the pipelines
//!   get `[run] drain_timeout_s` (10 s by default) to drain, and what is still in flight
//!   then is abandoned and counted in the report (exit code 5).
//! - A second signal stops at once: the drain is cut short, the report is written with
//!   what came out (exit code 130). Should writing it take longer than
//!   [`FORCED_EXIT_GRACE`], the process exits with 130 all the same.
//!
//! The handlers only count (`signal-hook` runs them on a thread of its own, outside the
//! signal handler's restrictions); the run loop polls [`received`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Once a second signal came, the longest the process takes to write its report before
/// it exits with code 130 anyway.
pub const FORCED_EXIT_GRACE: Duration = Duration::from_secs(2);

/// Stop signals received so far.
static RECEIVED: AtomicU32 = AtomicU32::new(0);

/// Routes SIGINT and SIGTERM to [`received`] for the rest of the process (idempotent).
/// Until then the signals keep their default action (the process ends).
pub fn install() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let mut signals = Signals::new([SIGINT, SIGTERM])
                .map_err(|error| format!("cannot catch SIGINT and SIGTERM: {error}"))?;
            std::thread::Builder::new()
                .name("dirigo-signals".into())
                .spawn(move || {
                    for signal in signals.forever() {
                        on_signal(signal);
                    }
                })
                .map(|_| ())
                .map_err(|error| format!("cannot start the signal thread: {error}"))
        })
        .clone()
}

/// Counts one signal; on the second, makes sure the process ends within
/// [`FORCED_EXIT_GRACE`].
fn on_signal(signal: i32) {
    let count = RECEIVED.fetch_add(1, Ordering::SeqCst) + 1;
    let name = if signal == SIGTERM {
        "SIGTERM"
    } else {
        "SIGINT"
    };
    if count == 1 {
        tracing::info!("{name}: stopping the sources and draining; a second signal stops at once");
    } else if count == 2 {
        tracing::warn!("{name} again: stopping at once, writing what report there is");
        std::thread::spawn(|| {
            std::thread::sleep(FORCED_EXIT_GRACE);
            eprintln!(
                "dirigo: the report took longer than {FORCED_EXIT_GRACE:?} after the second signal; exiting"
            );
            std::process::exit(i32::from(crate::exit::Exit::Interrupted.code()));
        });
    }
}

/// Stop signals received so far: 0 none, 1 a stop asked for, 2 or more a forced stop.
pub fn received() -> u32 {
    RECEIVED.load(Ordering::SeqCst)
}

/// Whether a stop was asked for.
pub fn stop_requested() -> bool {
    received() >= 1
}

/// Whether a second signal asked to stop at once.
pub fn forced() -> bool {
    received() >= 2
}
