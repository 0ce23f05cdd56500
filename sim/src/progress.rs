//! Progress on long work (issue 20 point 4): one line on stderr, rewritten in place, shown only
//! when stderr is a terminal. CI logs and pipes get nothing, so their output stays as it was.
//!
//! The wall clock read here paces the display and never feeds a run.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// Work that has gone on this long gets a progress line.
const AFTER: Duration = Duration::from_secs(2);
/// The line is rewritten at most this often.
const EVERY: Duration = Duration::from_millis(200);

/// A progress line on stderr.
#[derive(Debug)]
pub struct Progress {
    on: bool,
    after: Duration,
    started: Instant,
    last: Option<Instant>,
    width: usize,
}

impl Progress {
    /// Progress for work that shows it from the start (a sweep: seeds done).
    pub fn now() -> Self {
        Self::with_delay(Duration::ZERO)
    }

    /// Progress for work that shows it once it has gone on for a few seconds (a run).
    pub fn delayed() -> Self {
        Self::with_delay(AFTER)
    }

    fn with_delay(after: Duration) -> Self {
        #[allow(clippy::disallowed_methods)] // paces the display only
        let started = Instant::now();
        Self { on: std::io::stderr().is_terminal(), after, started, last: None, width: 0 }
    }

    /// Shows `line()` if it is time to (`line` is not called otherwise).
    pub fn show(&mut self, line: impl FnOnce() -> String) {
        if !self.on {
            return;
        }
        #[allow(clippy::disallowed_methods)] // paces the display only
        let now = Instant::now();
        if now.duration_since(self.started) < self.after
            || self.last.is_some_and(|l| now.duration_since(l) < EVERY)
        {
            return;
        }
        self.last = Some(now);
        let text = line();
        let pad = self.width.saturating_sub(text.chars().count());
        self.width = text.chars().count();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{text}{:pad$}", "");
        let _ = err.flush();
    }

    /// Clears the line, if one was shown.
    pub fn done(&mut self) {
        if self.width > 0 {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{:w$}\r", "", w = self.width);
            let _ = err.flush();
            self.width = 0;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done();
    }
}
