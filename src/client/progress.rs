//! What the user sees while a request waits: an `indicatif` spinner with the elapsed time on a
//! terminal, plain `tracing` log lines otherwise (pipes, cron, systemd). Both only report
//! changes, so a long wait does not flood a log.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives the stages of a request.
pub trait Reporter {
    /// The request was accepted under `id`; `via` says where (`https://…`, `spool …`).
    fn submitted(&mut self, id: &str, via: &str);
    /// The latest known state (`pending`, `held`), called on every poll.
    fn waiting(&mut self, state: &str, message: &str);
    /// A transient problem; the wait goes on.
    fn retrying(&mut self, problem: &str);
    /// The wait is over (whatever the outcome); clears the spinner.
    fn finish(&mut self);
}

/// The reporter for stderr: a spinner on a terminal, log lines otherwise.
pub fn for_stderr() -> Box<dyn Reporter> {
    if std::io::stderr().is_terminal() {
        Box::new(Spinner::new())
    } else {
        Box::new(LogLines::default())
    }
}

/// A spinner with elapsed time, on stderr.
#[derive(Debug)]
pub struct Spinner {
    bar: ProgressBar,
    id: String,
}

impl Spinner {
    /// Starts the spinner.
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
            .expect("the spinner template is valid");
        bar.set_style(style);
        bar.set_message("submitting the request…");
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            id: String::new(),
        }
    }
}

impl Default for Spinner {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for Spinner {
    fn submitted(&mut self, id: &str, via: &str) {
        self.id = id.to_owned();
        self.bar.println(format!("request {id} submitted to {via}"));
        self.bar.set_message(format!("waiting for request {id}"));
    }

    fn waiting(&mut self, state: &str, message: &str) {
        let msg = if message.is_empty() {
            format!("request {}: {state}", self.id)
        } else {
            format!("request {}: {state} ({message})", self.id)
        };
        self.bar.set_message(msg);
    }

    fn retrying(&mut self, problem: &str) {
        self.bar
            .set_message(format!("request {}: {problem}; retrying", self.id));
    }

    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// One log line per change.
#[derive(Debug, Default)]
pub struct LogLines {
    last: String,
}

impl Reporter for LogLines {
    fn submitted(&mut self, id: &str, via: &str) {
        tracing::info!(request_id = %id, "request submitted to {via}");
    }

    fn waiting(&mut self, state: &str, message: &str) {
        let now = format!("{state}\u{0}{message}");
        if now != self.last {
            tracing::info!(state, "{message}");
            self.last = now;
        }
    }

    fn retrying(&mut self, problem: &str) {
        if problem != self.last {
            tracing::warn!("{problem}; retrying");
            self.last = problem.to_owned();
        }
    }

    fn finish(&mut self) {}
}
