//! One JSON line per event on stdout, and the same to `LOG_PATH` when set.

use std::io::Write;
use std::sync::Mutex;

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

pub struct Logger {
    format: LogFormat,
    file: Option<Mutex<std::fs::File>>,
}

impl Logger {
    pub fn new(format: LogFormat, path: Option<&std::path::Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        Ok(Self { format, file })
    }

    pub fn event(&self, event: &str, fields: &[(&str, Value)]) {
        let mut m = Map::new();
        m.insert("ts".into(), now_rfc3339().into());
        m.insert("event".into(), event.into());
        for (k, v) in fields {
            m.insert((*k).into(), v.clone());
        }
        self.write(&m);
    }

    fn write(&self, m: &Map<String, Value>) {
        let line = match self.format {
            LogFormat::Json => Value::Object(m.clone()).to_string(),
            LogFormat::Text => text_line(m),
        };
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
        if let Some(f) = &self.file {
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(f, "{}", Value::Object(m.clone()));
        }
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

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let ts = now_rfc3339();
        assert_eq!(ts.len(), "2026-12-06T15:09:13.123Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        let parsed: jiff::Timestamp = ts.parse().unwrap();
        assert!((jiff::Timestamp::now().as_millisecond() - parsed.as_millisecond()).abs() < 60_000);
    }
}
