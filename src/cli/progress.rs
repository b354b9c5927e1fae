//! Progress on a terminal: an indicatif bar (or spinner when the total is unknown), nothing when
//! stderr is not a terminal or --quiet is given.

use std::io::IsTerminal;

use super::GlobalArgs;
use crate::progress::{NoProgress, Progress};

/// A progress bar on a terminal, nothing otherwise.
pub fn progress(global: &GlobalArgs) -> Box<dyn Progress> {
    if global.quiet || !std::io::stderr().is_terminal() {
        Box::new(NoProgress)
    } else {
        Box::new(TerminalProgress(indicatif::ProgressBar::hidden()))
    }
}

struct TerminalProgress(indicatif::ProgressBar);

impl Progress for TerminalProgress {
    fn start(&self, label: &str, total: Option<u64>) {
        let template = match total {
            Some(_) => "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            None => "{msg} {spinner} {bytes} {bytes_per_sec} {elapsed}",
        };
        let style = indicatif::ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ");
        self.0.set_style(style);
        self.0.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.0.set_length(total.unwrap_or(0));
        self.0.set_position(0);
        self.0.set_message(label.to_string());
        self.0.enable_steady_tick(std::time::Duration::from_millis(200));
    }
    fn add(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
