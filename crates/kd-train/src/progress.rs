//! Terminal progress bar for training loops.
//!
//! The bar draws to stderr only when stderr is a terminal and the
//! `KD_NO_PROGRESS` environment variable is unset (or empty or `0`);
//! otherwise it is hidden but still tracks its position, so callers never
//! need to branch on it.

use std::borrow::Cow;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Environment variable that disables drawing when set.
pub const NO_PROGRESS_ENV: &str = "KD_NO_PROGRESS";

const TEMPLATE: &str =
    "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta} {msg}";

/// True when progress bars should be drawn (stderr is a terminal and
/// `KD_NO_PROGRESS` is not set to a non-empty value other than `0`).
pub fn progress_enabled() -> bool {
    let disabled = std::env::var_os(NO_PROGRESS_ENV).is_some_and(|v| !v.is_empty() && v != "0");
    !disabled && std::io::stderr().is_terminal()
}

/// A progress bar with position/total, rate, ETA and a message slot.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// Bar over `total` units labelled `label`; hidden unless
    /// [`progress_enabled`].
    pub fn new(total: u64, label: &str) -> Self {
        if progress_enabled() {
            Self::with_target(total, label, ProgressDrawTarget::stderr())
        } else {
            Self::with_target(total, label, ProgressDrawTarget::hidden())
        }
    }

    /// A bar that never draws.
    pub fn hidden(total: u64) -> Self {
        Self::with_target(total, "", ProgressDrawTarget::hidden())
    }

    fn with_target(total: u64, label: &str, target: ProgressDrawTarget) -> Self {
        let style =
            ProgressStyle::with_template(TEMPLATE).unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::with_draw_target(Some(total), target)
            .with_style(style)
            .with_prefix(label.to_string());
        Self { bar }
    }

    /// Whether the bar is hidden.
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Sets the absolute position (e.g. the resumed step).
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    /// Advances the position by `n`.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Current position.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Replaces the message shown after the bar (e.g. the current loss).
    pub fn set_message(&self, msg: impl Into<Cow<'static, str>>) {
        self.bar.set_message(msg);
    }

    /// Prints a line above the bar (or to stderr when hidden).
    pub fn println(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line);
        }
    }

    /// Marks the bar as finished, leaving it on screen.
    pub fn finish(&self) {
        self.bar.finish();
    }
}
