//! Progress of a comparison on stderr: a line redrawn in place on a terminal, and an occasional
//! plain line otherwise, so a CI log gets a heartbeat instead of hundreds of bar frames.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::sample::Sample;

/// Width of the bar in characters.
const BAR: usize = 24;

pub struct Progress {
    total: Duration,
    mode: Mode,
    last_line: Option<Instant>,
}

enum Mode {
    Quiet,
    /// Redraw one line with `\r`.
    Terminal,
    /// A plain line now and then.
    Log {
        every: Duration,
    },
}

impl Progress {
    /// Progress for a run of `total`; nothing at all when `quiet`.
    pub fn new(total: Duration, quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            // About ten lines per run, never more than one every 10 s.
            Mode::Log {
                every: (total / 10).max(Duration::from_secs(10)),
            }
        };
        Progress {
            total,
            mode,
            last_line: None,
        }
    }

    /// Shows the state after a round of samples.
    pub fn update(&mut self, elapsed: Duration, bad: &Sample, optimized: &Sample) {
        let line = line(elapsed, self.total, bad, optimized);
        match self.mode {
            Mode::Quiet => {}
            Mode::Terminal => {
                // \x1b[2K clears what a longer previous line left behind.
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
            }
            Mode::Log { every } => {
                if self.last_line.is_none_or(|t| t.elapsed() >= every) {
                    eprintln!("{line}");
                    self.last_line = Some(Instant::now());
                }
            }
        }
    }

    /// Ends the progress display (the terminal line is kept, followed by a newline).
    pub fn finish(&mut self, message: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Terminal => eprintln!("\r\x1b[2K{message}"),
            Mode::Log { .. } => eprintln!("{message}"),
        }
    }

    /// A message that must not be overwritten by the next redraw.
    pub fn note(&mut self, message: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Terminal => eprintln!("\r\x1b[2K{message}"),
            Mode::Log { .. } => eprintln!("{message}"),
        }
    }
}

/// `[########----------------]  23s/60s  bad: 4600 tasks, 512 live  optimized: 4600 tasks, 14 live`
fn line(elapsed: Duration, total: Duration, bad: &Sample, optimized: &Sample) -> String {
    let fraction = (elapsed.as_secs_f64() / total.as_secs_f64().max(1e-9)).clamp(0.0, 1.0);
    let filled = (fraction * BAR as f64).round() as usize;
    format!(
        "[{}{}] {:>4}s/{}s  bad: {:.0} tasks, {:.0} live  optimized: {:.0} tasks, {:.0} live",
        "#".repeat(filled),
        "-".repeat(BAR - filled),
        elapsed.as_secs(),
        total.as_secs(),
        bad.processed,
        bad.live_tasks,
        optimized.processed,
        optimized.live_tasks,
    )
}
