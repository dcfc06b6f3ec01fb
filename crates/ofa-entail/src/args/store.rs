//! The result store's flags (`batch`, `worker`): where results are kept and for how long, and
//! the model identity every key is scoped by.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use ofa_jobs::store::{
    digest_files, ModelIdentity, ResultStore, StoreLocation, StoreMetrics, StoreSettings,
};
use ofa_model::{Device, Entailment};

use crate::args::model::ModelArgs;

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Keep scored results and answer unchanged jobs from them: a file path (one process;
    /// created if missing) or a redis:// URL (shared by worker replicas). Unset: every job is
    /// scored.
    #[arg(long, env = "RESULT_STORE", hide_env_values = true)]
    pub result_store: Option<String>,
    /// How long a stored result is kept after it is scored: `30d`, `12h`, `90m`, or seconds.
    #[arg(long, env = "RESULT_TTL", default_value = "30d")]
    pub result_ttl: String,
}

impl StoreArgs {
    /// The store's setting, when one is configured (an empty value is none, as a ConfigMap
    /// writes it).
    pub fn location(&self) -> Option<&str> {
        self.result_store
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    pub fn ttl(&self) -> Result<Duration> {
        parse_ttl(&self.result_ttl)
    }

    /// The store, opened, when one is configured; keys are scoped by the model loaded from
    /// `dir` (its files hashed: about a second for OFA-large).
    pub async fn open(
        &self,
        model: &ModelArgs,
        dir: &Path,
        pipeline: &Entailment,
        device: &Device,
        metrics: Arc<StoreMetrics>,
    ) -> Result<Option<Arc<ResultStore>>> {
        let Some(setting) = self.location() else {
            return Ok(None);
        };
        let ttl = self.ttl()?;
        let owned = dir.to_owned();
        let files = tokio::task::spawn_blocking(move || -> Result<[u8; 32]> {
            let files = ofa_model::ModelDir::source_files(&owned)?;
            Ok(digest_files(&files)?)
        })
        .await?
        .with_context(|| format!("cannot read the model files in {}", dir.display()))?;
        let identity = ModelIdentity {
            model_id: model.model_id.clone(),
            revision: model.revision.clone(),
            files,
            // The device too: a GPU's sums differ from the CPU's in the last bits.
            precision: format!(
                "{}/{}",
                pipeline.precision().name(),
                crate::args::device::name(device)
            ),
            answers: pipeline.answers().to_vec(),
        };
        let settings = StoreSettings {
            location: StoreLocation::parse(setting),
            ttl,
            model: identity,
        };
        Ok(Some(Arc::new(ResultStore::open(settings, metrics).await?)))
    }
}

/// `30d`, `12h`, `1h30m`, `7 days` (days of 24 hours), or a number of seconds.
fn parse_ttl(s: &str) -> Result<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        anyhow::ensure!(secs > 0, "RESULT_TTL must be longer than 0");
        return Ok(Duration::from_secs(secs));
    }
    let span: jiff::Span = s
        .parse()
        .with_context(|| format!("RESULT_TTL {s:?} is not a duration (30d, 12h, 90m)"))?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .with_context(|| format!("RESULT_TTL {s:?} is not a fixed duration"))?;
    let d = Duration::try_from(d).with_context(|| format!("RESULT_TTL {s:?} is negative"))?;
    anyhow::ensure!(!d.is_zero(), "RESULT_TTL must be longer than 0");
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_as_fixed_durations() {
        let day = 86_400;
        for (s, secs) in [
            ("30d", 30 * day),
            ("12h", 12 * 3600),
            ("1h30m", 5400),
            ("7 days", 7 * day),
            ("3600", 3600),
        ] {
            assert_eq!(parse_ttl(s).unwrap(), Duration::from_secs(secs), "{s}");
        }
        for bad in ["0", "-1d", "soon", "1 month", ""] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
