//! The progress bar of an import: bytes read and records sent, on standard error when it is a
//! terminal.

use std::io::{self, IsTerminal};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The progress bar on standard error (hidden unless it is a terminal), cleared when the
/// import ends, however it ends.
pub(crate) struct Progress(pub(crate) ProgressBar);

impl Progress {
    pub(crate) fn new() -> Self {
        if !io::stderr().is_terminal() {
            return Self(ProgressBar::hidden());
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(200));
        Self(bar)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// Shows bytes read out of `size`, or just bytes read when the size is unknown.
pub(crate) fn show_size(bar: &ProgressBar, size: Option<u64>) {
    let template = match size {
        Some(size) => {
            bar.set_length(size);
            "{spinner} {elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {msg}"
        }
        None => "{spinner} {elapsed_precise} {binary_bytes} read {msg}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
}

/// Shows how many records went into the request stream.
pub(crate) fn show_sent(bar: &ProgressBar, sent: u64) {
    bar.set_message(format!("{sent} records sent"));
}
