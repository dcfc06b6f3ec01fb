//! A model download's progress on stderr: an `indicatif` bar per file on a terminal, plain
//! lines every few seconds otherwise (logs, CI, pods); the hub client's other events as lines.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ofa_hub::{Event, Progress};

pub struct Reporter {
    terminal: bool,
    state: Mutex<FileState>,
}

/// The file being downloaded.
struct FileState {
    path: String,
    size: Option<u64>,
    done: u64,
    /// Where this attempt started (resumed bytes do not count towards the rate).
    from: u64,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

impl Reporter {
    pub fn stderr() -> Reporter {
        Reporter {
            terminal: std::io::stderr().is_terminal(),
            state: Mutex::new(FileState {
                path: String::new(),
                size: None,
                done: 0,
                from: 0,
                started: Instant::now(),
                last_line: Instant::now(),
                bar: None,
            }),
        }
    }
}

/// One line, above a bar when there is one.
fn line(s: &FileState, msg: &str) {
    match &s.bar {
        Some(bar) => bar.println(msg),
        None => eprintln!("{msg}"),
    }
}

/// A size in the unit that reads best.
fn mb(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

fn bar(path: &str, size: Option<u64>, from: u64) -> ProgressBar {
    let template = if size.is_some() {
        "{msg}: {percent:>3}% {bytes} / {total_bytes}, {bytes_per_sec}, {eta} left"
    } else {
        "{msg}: {bytes}, {bytes_per_sec}"
    };
    let bar = ProgressBar::with_draw_target(size, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(path.to_owned());
    bar.set_position(from);
    bar.reset_eta();
    bar
}

impl Progress for Reporter {
    fn event(&self, event: Event<'_>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Listed { files, bytes } => {
                line(&s, &format!("listing: {files} file(s), {}", mb(bytes)))
            }
            Event::Cached { path, hashed } => line(
                &s,
                &format!(
                    "{path}: cached, {}",
                    if hashed {
                        "sha256 verified"
                    } else {
                        "unchanged since its verified download"
                    }
                ),
            ),
            Event::Waiting { path } => line(
                &s,
                &format!("{path}: another process is downloading it; waiting for its lock"),
            ),
            Event::Start { path, size, from } => {
                if let Some(old) = s.bar.take() {
                    old.finish_and_clear();
                }
                *s = FileState {
                    path: path.to_string(),
                    size,
                    done: from,
                    from,
                    started: Instant::now(),
                    last_line: Instant::now(),
                    bar: None,
                };
                let total = size.map(mb).unwrap_or_else(|| "unknown size".into());
                if from > 0 {
                    line(&s, &format!("{path}: resuming at {} of {total}", mb(from)));
                } else {
                    line(&s, &format!("{path}: downloading {total}"));
                }
                if self.terminal {
                    s.bar = Some(bar(path, size, from));
                }
            }
            Event::Bytes { n, .. } => {
                s.done += n;
                if let Some(bar) = &s.bar {
                    bar.inc(n);
                } else if s.last_line.elapsed() >= Duration::from_secs(5) {
                    s.last_line = Instant::now();
                    let secs = s.started.elapsed().as_secs_f64().max(1e-3);
                    let rate = (s.done - s.from) as f64 / secs;
                    let detail = match s.size.filter(|t| *t > 0) {
                        Some(t) => {
                            let eta = t.saturating_sub(s.done) as f64 / rate.max(1.0);
                            format!(
                                "{:5.1}% {} / {}, {}/s, {eta:.0} s left",
                                100.0 * s.done as f64 / t as f64,
                                mb(s.done),
                                mb(t),
                                mb(rate as u64)
                            )
                        }
                        None => format!("{}, {}/s", mb(s.done), mb(rate as u64)),
                    };
                    line(&s, &format!("{}: {detail}", s.path));
                }
            }
            Event::Done { path, bytes } => {
                if let Some(bar) = s.bar.take() {
                    bar.finish_and_clear();
                }
                line(&s, &format!("{path}: {} done, sha256 verified", mb(bytes)))
            }
            // The error names the file already.
            Event::Retry { error, delay, .. } => line(
                &s,
                &format!("{error}; retrying in {:.1} s", delay.as_secs_f64()),
            ),
            Event::UsingCache { error } => line(
                &s,
                &format!("hub unreachable ({error}); using the cached copy"),
            ),
        }
    }
}
