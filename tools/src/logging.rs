//! The command's logs and its progress line, which share standard error.
//!
//! Logs go through `tracing-subscriber`: as text (the default) or, with
//! `--log-format json`, one JSON object per line with the current span and its parents
//! (the run, each app's start and drain). The progress line is drawn through the same
//! writer: a log line first erases the progress line, then it is drawn again below the
//! log, so a warning never lands in the middle of it. The progress line is shown only
//! on a terminal, and never with JSON logs (a log collector reads standard error).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How logs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON), with spans.
    Json,
}

/// The progress line drawn now, if any.
static PROGRESS: Mutex<Option<String>> = Mutex::new(None);

/// Whether logs are JSON (no progress line then).
static JSON: AtomicBool = AtomicBool::new(false);

/// Erases the line the cursor is on.
const ERASE_LINE: &str = "\r\x1b[2K";

/// Installs the logger (level from `RUST_LOG`, `info` by default; the NATS client's own
/// lines only from `warn`: it logs every connection, and dirigo's NATS connectors log
/// what matters, a connection lost and found again, themselves).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(AroundProgress)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .init();
        }
    }
}

/// Whether `dirigo run` should draw a progress line: standard error is a terminal and
/// logs are text.
pub fn progress_enabled() -> bool {
    !JSON.load(Ordering::Relaxed) && std::io::stderr().is_terminal()
}

fn progress() -> std::sync::MutexGuard<'static, Option<String>> {
    PROGRESS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Draws `line` in place of the current progress line.
pub fn show_progress(line: &str) {
    let mut shown = progress();
    let mut stderr = std::io::stderr().lock();
    // Standard error may be gone (a closed terminal): the run goes on without it.
    let _ = write!(stderr, "{ERASE_LINE}{line}");
    let _ = stderr.flush();
    *shown = Some(line.to_owned());
}

/// Ends the progress line: the cursor moves below it, and logs no longer redraw it.
pub fn end_progress() {
    let mut shown = progress();
    if shown.take().is_some() {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr);
        let _ = stderr.flush();
    }
}

/// Standard error, written so that the progress line stays below the logs.
struct AroundProgress;

impl<'a> MakeWriter<'a> for AroundProgress {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            buffer: Vec::with_capacity(256),
        }
    }
}

/// One log event, written out whole when dropped.
struct EventWriter {
    buffer: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let shown = progress();
        let mut stderr = std::io::stderr().lock();
        let _ = write_event(&mut stderr, &self.buffer, shown.as_deref());
    }
}

/// Writes one log event (a whole line) to `out` where a progress line may be drawn:
/// erases it first, and draws it again below the event.
fn write_event(out: &mut impl Write, event: &[u8], progress: Option<&str>) -> std::io::Result<()> {
    if let Some(line) = progress {
        out.write_all(ERASE_LINE.as_bytes())?;
        out.write_all(event)?;
        out.write_all(line.as_bytes())?;
    } else {
        out.write_all(event)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_lands_above_the_progress_line() {
        let mut terminal = Vec::new();
        let progress = "  3.0 s (2 s left)  1,000 events/s";
        terminal.extend_from_slice(progress.as_bytes());
        write_event(&mut terminal, b"WARN something happened\n", Some(progress)).unwrap();
        let text = String::from_utf8(terminal).unwrap();
        // What a terminal shows: the progress line erased, the warning on a line of its
        // own, the progress line drawn again below it.
        let shown: Vec<&str> = text
            .split('\n')
            .map(|line| line.rsplit(ERASE_LINE).next().unwrap())
            .collect();
        assert_eq!(shown, ["WARN something happened", progress], "{text:?}");
        let mut plain = Vec::new();
        write_event(&mut plain, b"INFO quiet\n", None).unwrap();
        assert_eq!(plain, b"INFO quiet\n");
    }
}
