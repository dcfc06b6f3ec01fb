//! The event log: one line per event on stdout (JSON, or `key=value` text), and the same as
//! JSON lines in `LOG_PATH` when set, written by background threads so no request or job
//! waits on a write.
//!
//! Events are `tracing` events. The message is the event's name and the fields are its fields:
//! `tracing::info!(listen = %addr, "starting")` is written `{"ts":…,"event":"starting",
//! "listen":"…"}`. A field named `json.NAME` holds JSON text and is written as that JSON value
//! under `NAME` (`json.checks = %json!(…)`). Levels are filtered with `RUST_LOG`-style
//! directives (`info`, `warn,ofa_server=debug`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// How the process logs: set once, by the binary, from `LOG_FORMAT`, `LOG_PATH` and `RUST_LOG`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub path: Option<PathBuf>,
    /// `RUST_LOG`-style directives; `info` when empty.
    pub filter: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "RUST_LOG {0:?} is not a list of log directives (such as info or warn,ofa_server=debug)"
    )]
    Filter(String),
    #[error("cannot open LOG_PATH {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the event log is already set up")]
    AlreadySet,
}

/// Keeps the background writers; dropping it writes out what is still queued.
#[must_use = "events queued when it is dropped are written, later ones are lost"]
pub struct LogGuard {
    _writers: Vec<WorkerGuard>,
}

/// Sets the process's event log. Writers block rather than drop a line when they fall behind:
/// a lost log line is worse than a slower request.
pub fn init(settings: &LogSettings) -> Result<LogGuard, LogError> {
    let filter = if settings.filter.trim().is_empty() {
        "info"
    } else {
        settings.filter.trim()
    };
    let targets: Targets = filter
        .parse()
        .map_err(|_| LogError::Filter(settings.filter.clone()))?;
    let mut guards = Vec::new();
    let (stdout, g) = NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    guards.push(g);
    let file = match &settings.path {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| LogError::File {
                    path: path.clone(),
                    source,
                })?;
            let (w, g) = NonBlockingBuilder::default().lossy(false).finish(f);
            guards.push(g);
            Some(Box::new(w) as Box<dyn Write + Send>)
        }
        None => None,
    };
    let lines = Lines::new(settings.format, Box::new(stdout), file);
    let subscriber = tracing_subscriber::registry().with(lines.with_filter(targets));
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LogError::AlreadySet)?;
    Ok(LogGuard { _writers: guards })
}

/// The layer that writes each event as one line.
pub struct Lines {
    format: LogFormat,
    out: Mutex<Box<dyn Write + Send>>,
    file: Option<Mutex<Box<dyn Write + Send>>>,
}

impl Lines {
    pub fn new(
        format: LogFormat,
        out: Box<dyn Write + Send>,
        file: Option<Box<dyn Write + Send>>,
    ) -> Self {
        Lines {
            format,
            out: Mutex::new(out),
            file: file.map(Mutex::new),
        }
    }
}

impl<S: Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut m = Map::new();
        m.insert("ts".into(), now_rfc3339().into());
        m.insert("event".into(), fields.message.unwrap_or_default().into());
        m.extend(fields.values);
        let json = Value::Object(m.clone()).to_string();
        let line = match self.format {
            LogFormat::Json => json.clone(),
            LogFormat::Text => text_line(&m),
        };
        write_line(&self.out, &line);
        if let Some(f) = &self.file {
            write_line(f, &json);
        }
    }
}

/// One write per line, so a line is never split between writers.
fn write_line(w: &Mutex<Box<dyn Write + Send>>, line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
    let _ = w.write_all(buf.as_bytes());
}

/// An event's message and fields, as JSON values.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    values: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, text: String) {
        match field.name() {
            "message" => self.message = Some(text),
            name => match name.strip_prefix("json.") {
                Some(name) => {
                    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    self.values.insert(name.into(), v);
                }
                None => {
                    self.values.insert(name.into(), text.into());
                }
            },
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.values.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.values.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.values.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.values.insert(field.name().into(), value.into());
    }
}

/// `key=value` pairs; a string value that could be read as more than one value (spaces, `=`,
/// quotes, line breaks or other control characters, or nothing) is quoted and escaped as a JSON
/// string, so a client's header cannot forge a field or start a line.
fn text_line(m: &Map<String, Value>) -> String {
    m.iter()
        .map(|(k, v)| match v {
            Value::String(s) if plain(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn plain(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '=' || c == '"' || c == '\\')
}

/// UTC timestamp, RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    format!("{:.3}", jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_cannot_forge_fields_or_lines() {
        let mut m = Map::new();
        m.insert("event".into(), "request".into());
        m.insert("request_id".into(), "abc consumer=admin status=200".into());
        m.insert("id".into(), "a\nevent=forged".into());
        m.insert("status".into(), 200.into());
        let line = text_line(&m);
        assert_eq!(
            line,
            r#"event=request request_id="abc consumer=admin status=200" id="a\nevent=forged" status=200"#
        );
        assert!(!line.contains('\n'));
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn lines(&self) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(str::to_owned).collect()
        }
    }

    fn logged(format: LogFormat, filter: &str, emit: impl FnOnce()) -> (Vec<String>, Vec<String>) {
        let (out, file) = (Buffer::default(), Buffer::default());
        let lines = Lines::new(format, Box::new(out.clone()), Some(Box::new(file.clone())));
        let targets: Targets = filter.parse().unwrap();
        let subscriber = tracing_subscriber::registry().with(lines.with_filter(targets));
        tracing::subscriber::with_default(subscriber, emit);
        (out.lines(), file.lines())
    }

    #[test]
    fn events_are_lines_of_their_name_and_fields() {
        let (out, file) = logged(LogFormat::Json, "info", || {
            let missing: Option<&str> = None;
            tracing::info!(
                listen = %"127.0.0.1:8000",
                seconds = 1.5,
                count = 3u64,
                ok = true,
                consumer = missing,
                json.checks = %serde_json::json!({"batch": [1, 2]}),
                "starting"
            );
            tracing::warn!(id = "a b", "{}", "job_retry");
            tracing::debug!("too_detailed");
        });
        assert_eq!(out, file, "the file gets the same JSON lines");
        assert_eq!(out.len(), 2, "{out:?}");
        let first: Value = serde_json::from_str(&out[0]).unwrap();
        let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["ts", "event", "listen", "seconds", "count", "ok", "checks"]
        );
        assert_eq!(first["event"], "starting");
        assert_eq!(first["listen"], "127.0.0.1:8000");
        assert_eq!(first["seconds"], 1.5);
        assert_eq!(first["checks"]["batch"][1], 2);
        let second: Value = serde_json::from_str(&out[1]).unwrap();
        assert_eq!(
            (second["event"].as_str(), second["id"].as_str()),
            (Some("job_retry"), Some("a b"))
        );
    }

    #[test]
    fn text_goes_to_stdout_json_to_the_file_and_levels_filter() {
        let (out, file) = logged(LogFormat::Text, "warn", || {
            tracing::info!("quiet");
            tracing::warn!(error = "a\nb", "breaker_opened");
        });
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].contains(" event=breaker_opened error="),
            "{}",
            out[0]
        );
        let v: Value = serde_json::from_str(&file[0]).unwrap();
        assert_eq!(v["event"], "breaker_opened");
    }

    #[test]
    fn a_bad_filter_is_named() {
        let e = init(&LogSettings {
            format: LogFormat::Json,
            path: None,
            filter: "info,=[".into(),
        });
        assert!(matches!(e, Err(LogError::Filter(_))));
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let ts = now_rfc3339();
        assert_eq!(ts.len(), "2026-12-06T15:09:13.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        let parsed: jiff::Timestamp = ts.parse().unwrap();
        assert!((jiff::Timestamp::now().as_millisecond() - parsed.as_millisecond()).abs() < 60_000);
    }
}
