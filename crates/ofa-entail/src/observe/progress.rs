//! Progress of a long command on stderr: an `indicatif` bar with rate and ETA on a terminal, a
//! plain line every few seconds otherwise (logs, CI), which a bar library hides.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    done: usize,
    noun: &'static str,
    /// Said after the count (`120 from the result store`).
    note: String,
    started: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(total: usize, noun: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}, {per_sec}, ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("#  ");
            bar.set_style(style);
            bar.set_message(noun);
            bar
        });
        Progress {
            bar,
            total,
            done: 0,
            noun,
            note: String::new(),
            started: Instant::now(),
            last: Instant::now(),
        }
    }

    pub fn tick(&mut self, n: usize) {
        self.done += n;
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        } else if self.last.elapsed() >= Duration::from_secs(10) {
            self.last = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    /// Changes what is said after the count.
    pub fn set_note(&mut self, note: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} ({note})", self.noun));
        }
        self.note = note;
    }

    /// `done/total noun (note), rate/s, ETA s`: what the plain output prints.
    fn line(&self) -> String {
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let eta = self.total.saturating_sub(self.done) as f64 / rate.max(1e-9);
        let (done, total, noun) = (self.done, self.total, self.noun);
        let note = if self.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.note)
        };
        format!("{done}/{total} {noun}{note}, {rate:.1}/s, ETA {eta:.0} s")
    }

    /// The final state of a bar, left on the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_line_counts_rate_and_time_left() {
        let mut p = Progress::new(10, "jobs");
        p.bar = None;
        p.started = Instant::now() - Duration::from_secs(2);
        p.tick(4);
        let line = p.line();
        assert!(line.starts_with("4/10 jobs, "), "{line}");
        assert!(line.ends_with(" s"), "{line}");
        p.set_note("3 from the result store".into());
        assert!(
            p.line()
                .starts_with("4/10 jobs (3 from the result store), "),
            "{}",
            p.line()
        );
    }
}
