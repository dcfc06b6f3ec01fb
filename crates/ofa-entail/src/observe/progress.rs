//! Progress of a long command on stderr: a bar with rate and ETA on a terminal, a plain line
//! every few seconds otherwise (logs, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: bool,
    total: usize,
    done: usize,
    noun: &'static str,
    started: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(total: usize, noun: &'static str) -> Self {
        Progress {
            bar: std::io::stderr().is_terminal(),
            total,
            done: 0,
            noun,
            started: Instant::now(),
            last: Instant::now(),
        }
    }

    pub fn tick(&mut self, n: usize) {
        self.done += n;
        let every = if self.bar {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(10)
        };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.show();
        }
    }

    fn show(&self) {
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let eta = self.total.saturating_sub(self.done) as f64 / rate.max(1e-9);
        let (done, total, noun) = (self.done, self.total, self.noun);
        if self.bar {
            let width = 30;
            let filled = (width * done / total.max(1)).min(width);
            eprint!(
                "\r[{}{}] {done}/{total} {noun}, {rate:.1}/s, ETA {eta:.0} s ",
                "#".repeat(filled),
                " ".repeat(width - filled),
            );
        } else {
            eprintln!("{done}/{total} {noun}, {rate:.1}/s, ETA {eta:.0} s");
        }
    }

    /// The final state, and a line break after a bar.
    pub fn finish(&self) {
        if self.bar {
            self.show();
            eprintln!();
        }
    }
}
