//! Which model directory to load: `--model-dir` when given, else the ModelScope id at a revision,
//! from the cache or downloaded into it.

use std::path::PathBuf;

use crate::args::flags::seconds;
use anyhow::{Context, Result};
use clap::Args;
use ofa_hub::{HubConfig, Progress, RepoId, Snapshot, Source};

pub use crate::observe::download::Reporter;

pub const DEFAULT_MODEL_ID: &str = "iic/ofa_visual-entailment_snli-ve_large_en";

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A local ModelScope model directory; when set, the hub and the cache are not used.
    #[arg(long, env = "MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// ModelScope model id to fetch when no --model-dir is given (a local directory works too).
    #[arg(long, env = "MODEL_ID", default_value = DEFAULT_MODEL_ID)]
    pub model_id: String,
    /// Branch, tag or commit of the model repo.
    #[arg(long, alias = "model-revision", env = "MODEL_REVISION", default_value = ofa_hub::DEFAULT_REVISION)]
    pub revision: String,
    #[command(flatten)]
    pub hub: HubArgs,
}

/// How to reach the hub and where to cache; shared by `download`. Every variable the ModelScope
/// Python client reads is read here, once; the hub library takes the typed result.
#[derive(Args, Debug, Clone)]
pub struct HubArgs {
    /// Cache root (default: $MODELSCOPE_CACHE, else ~/.cache/modelscope; shared with the Python client).
    #[arg(long, env = "MODEL_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// The Python client's cache root, used when MODEL_CACHE is unset.
    #[arg(long, env = "MODELSCOPE_CACHE", hide = true)]
    pub modelscope_cache: Option<PathBuf>,
    /// Use the cache only and make no network request (HF_HUB_OFFLINE=1 also works).
    #[arg(long, env = "MODEL_OFFLINE", value_parser = clap::builder::BoolishValueParser::new())]
    pub offline: bool,
    #[arg(long, env = "HF_HUB_OFFLINE", hide = true, value_parser = clap::builder::BoolishValueParser::new())]
    pub hf_hub_offline: bool,
    /// Offline, also re-hash the cached files against the manifest of their download (sizes
    /// are always checked; about 1.3 s for OFA-large).
    #[arg(long, env = "MODEL_VERIFY", value_parser = clap::builder::BoolishValueParser::new())]
    pub verify: bool,
    /// Hub API base URL, for mirrors (default https://modelscope.cn).
    #[arg(long, env = "MODELSCOPE_ENDPOINT")]
    pub endpoint: Option<String>,
    /// The Python client's older name for the endpoint.
    #[arg(long, env = "MODELSCOPE_DOMAIN", hide = true)]
    pub domain: Option<String>,
    /// Access token for private models. Prefer the environment variable: flags show in `ps`.
    #[arg(long, env = "MODELSCOPE_API_TOKEN", hide_env_values = true)]
    pub hub_token: Option<String>,
    /// Transport retries per file, after the first attempt.
    #[arg(
        long,
        env = "MODELSCOPE_DOWNLOAD_MAX_RETRIES",
        hide = true,
        default_value_t = 5
    )]
    pub max_retries: u32,
    /// Cap in seconds on a backoff delay and on an honoured Retry-After.
    #[arg(
        long,
        env = "MODELSCOPE_DOWNLOAD_RETRY_MAX_DELAY_SECONDS",
        hide = true,
        default_value_t = 60.0
    )]
    pub retry_max_delay: f64,
    #[arg(
        long,
        env = "MODELSCOPE_API_CONNECT_TIMEOUT",
        hide = true,
        default_value_t = 10.0
    )]
    pub connect_timeout: f64,
    /// Seconds a read may wait for the next bytes before the download resumes afresh.
    #[arg(
        long,
        env = "MODELSCOPE_DOWNLOAD_TIMEOUT",
        hide = true,
        default_value_t = 60.0
    )]
    pub read_timeout: f64,
    /// Seconds for one file, retries included.
    #[arg(
        long,
        env = "MODELSCOPE_DOWNLOAD_TOTAL_TIMEOUT",
        hide = true,
        default_value_t = 3600.0
    )]
    pub file_timeout: f64,
    /// Seconds to wait on another process's lock while its download makes no progress.
    #[arg(
        long,
        env = "MODELSCOPE_DOWNLOAD_FILE_LOCK_TIMEOUT_SECONDS",
        hide = true,
        default_value_t = 600.0
    )]
    pub lock_timeout: f64,
}

impl HubArgs {
    pub fn config(&self) -> Result<HubConfig> {
        let cache_dir = self
            .cache_dir
            .clone()
            .or_else(|| self.modelscope_cache.clone())
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| {
                std::env::home_dir()
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".cache/modelscope")
            });
        let mut cfg = HubConfig::new(cache_dir);
        let endpoint = [&self.endpoint, &self.domain]
            .into_iter()
            .flatten()
            .find(|e| !e.trim().is_empty());
        if let Some(e) = endpoint {
            cfg.endpoint = ofa_hub::config::normalize_endpoint(e);
        }
        cfg.token = self
            .hub_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        cfg.offline = self.offline || self.hf_hub_offline;
        cfg.verify = self.verify;
        cfg.max_retries = self.max_retries;
        cfg.retry_max_delay = seconds(
            "MODELSCOPE_DOWNLOAD_RETRY_MAX_DELAY_SECONDS",
            self.retry_max_delay,
        )?;
        cfg.connect_timeout = seconds("MODELSCOPE_API_CONNECT_TIMEOUT", self.connect_timeout)?;
        cfg.read_timeout = seconds("MODELSCOPE_DOWNLOAD_TIMEOUT", self.read_timeout)?;
        cfg.file_timeout = seconds("MODELSCOPE_DOWNLOAD_TOTAL_TIMEOUT", self.file_timeout)?;
        cfg.lock_timeout = seconds(
            "MODELSCOPE_DOWNLOAD_FILE_LOCK_TIMEOUT_SECONDS",
            self.lock_timeout,
        )?;
        Ok(cfg)
    }
}

impl ModelArgs {
    /// A local model directory to load as it is: `--model-dir`, or a `MODEL_ID` naming an
    /// existing directory (as text-embeddings-inference takes a path for its model id).
    pub fn local_dir(&self) -> Option<PathBuf> {
        self.model_dir.clone().or_else(|| {
            let p = PathBuf::from(&self.model_id);
            p.is_dir().then_some(p)
        })
    }

    /// What will be loaded, for logs: the directory, or `id@revision`.
    pub fn describe(&self) -> String {
        match self.local_dir() {
            Some(d) => d.display().to_string(),
            None => format!("{}@{}", self.model_id, self.revision),
        }
    }

    /// The model directory, downloading into the cache if needed.
    pub fn resolve_blocking(&self) -> Result<PathBuf> {
        if let Some(dir) = self.local_dir() {
            return Ok(dir);
        }
        fetch_blocking(&self.model_id, &self.revision, &self.hub)
    }
}

/// [`fetch`] for the synchronous commands, reporting on stderr; the model directory.
pub fn fetch_blocking(id: &str, revision: &str, hub: &HubArgs) -> Result<PathBuf> {
    let progress = Reporter::stderr();
    Ok(runtime()?
        .block_on(fetch(id, revision, hub, &progress))?
        .dir)
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub async fn fetch(
    id: &str,
    revision: &str,
    hub: &HubArgs,
    progress: &dyn Progress,
) -> Result<Snapshot> {
    let repo: RepoId = id.parse()?;
    let cfg = hub.config()?;
    ofa_hub::fetch(&cfg, &repo, revision, progress)
        .await
        .with_context(|| format!("cannot get model {id}@{revision}"))
}

pub fn describe_source(s: &Source) -> String {
    match s {
        Source::Offline => "offline, from the cache".into(),
        Source::Cached => "cached, verified against the hub's listing".into(),
        Source::Downloaded { files, bytes } => {
            format!("downloaded {files} file(s), {:.1} MB", *bytes as f64 / 1e6)
        }
        Source::CacheFallback => "hub unreachable; using the cached copy".into(),
    }
}
