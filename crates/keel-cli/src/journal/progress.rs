//! The progress bar of long journal work (`journal replay`, `verify` and `compact` of a large
//! journal): bytes read of the journal's length, on stderr, for a person at a terminal only.
//!
//! Nothing is drawn when stdout is not a terminal (a pipe, a file, a test) or under `--json`:
//! a program reading the output wants the output alone. indicatif also draws nothing when stderr
//! is not a terminal.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use keel_journal::read::Progress;

/// A journal shorter than this is read before a bar could be seen, so none is drawn.
pub const BAR_BYTES_MIN: u64 = 1 << 20;

/// Redraws per second at most: the fold reports every MiB, far more often on a fast disk.
const REDRAWS_PER_SECOND_MAX: u8 = 10;

/// The bar of one command. It appears on the first report of a large enough journal; dropping it
/// (or [`Bar::done`]) clears it.
pub struct Bar {
    wanted: bool,
    what: &'static str,
    drawn: Option<ProgressBar>,
}

impl Bar {
    /// A bar labelled `what` (what the command is doing: "replaying"), shown only if stdout is a
    /// terminal and the command prints text (`json` false).
    pub fn new(what: &'static str, json: bool) -> Self {
        Self { wanted: !json && std::io::stdout().is_terminal(), what, drawn: None }
    }

    /// The work has come this far.
    pub fn update(&mut self, progress: Progress) {
        if !self.wanted {
            return;
        }
        let bar = match &self.drawn {
            Some(bar) => bar,
            None if progress.total_bytes < BAR_BYTES_MIN => return,
            None => self.drawn.insert(start(self.what, progress.total_bytes)),
        };
        bar.set_length(progress.total_bytes);
        bar.set_position(progress.done_bytes);
    }

    /// The work is over: clear the bar before the command prints its result.
    pub fn done(mut self) {
        self.clear();
    }

    fn clear(&mut self) {
        if let Some(bar) = self.drawn.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // On an error too: the message that follows must not land beside a half-drawn bar.
        self.clear();
    }
}

fn start(what: &'static str, total_bytes: u64) -> ProgressBar {
    // The template is a constant; should indicatif ever reject it, a plain bar still shows progress.
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {binary_bytes}/{binary_total_bytes} ({eta})")
        .map_or_else(|_| ProgressStyle::default_bar(), |style| style.progress_chars("=> "));
    ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr_with_hz(REDRAWS_PER_SECOND_MAX))
        .with_style(style)
        .with_message(what)
}
