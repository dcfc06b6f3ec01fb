//! Flags shared by the job commands: where images may come from and how large they may be
//! (`batch`, `worker`), the broker and its queues (`worker`, `submit`, `collect`), and the
//! engine every job runs through.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use ofa_engine::EngineConfig;
use ofa_fetch::AllowList;
use ofa_jobs::{Fetcher, ImageSettings};
use ofa_model::DEFAULT_MAX_PIXELS;
use ofa_queue::{Address, AmqpConfig, QueueNames, RabbitMq};

#[derive(Args, Debug)]
pub struct ImageArgs {
    /// Directory that `image_path` is relative to; unset, paths are refused.
    #[arg(long, env = "IMAGE_ROOT")]
    pub image_root: Option<PathBuf>,
    /// Comma-separated `host[:port]`, `*.domain[:port]` or CIDR entries `image_url` must match
    /// (a port-less entry admits 80 and 443); empty: any URL whose addresses are all public.
    /// Internal addresses are fetched only when an entry re-admits them (README).
    #[arg(long, env = "IMAGE_URL_ALLOW", default_value = "")]
    pub image_url_allow: String,
    /// Largest image in bytes, from any source (suffixes KB, MB).
    #[arg(long, env = "PAYLOAD_LIMIT", default_value = "10MB")]
    pub payload_limit: String,
    /// Seconds one image fetch may take: a URL with its redirects and download, or a file.
    #[arg(long, env = "IMAGE_URL_TIMEOUT", default_value_t = 30.0)]
    pub image_url_timeout: f64,
    #[arg(long, env = "MAX_IMAGE_PIXELS", default_value_t = DEFAULT_MAX_PIXELS)]
    pub max_image_pixels: u64,
    #[arg(long, env = "MAX_TEXT_CHARS", default_value_t = 2000)]
    pub max_text_chars: usize,
}

impl ImageArgs {
    pub fn fetcher(&self) -> Result<Fetcher> {
        Ok(Fetcher::new(ImageSettings {
            root: self.image_root.clone(),
            url_allow: AllowList::parse(&self.image_url_allow)?,
            max_bytes: crate::args::flags::parse_bytes("PAYLOAD_LIMIT", &self.payload_limit)?,
            timeout: crate::args::flags::seconds("IMAGE_URL_TIMEOUT", self.image_url_timeout)?,
            max_redirects: 5,
        })?)
    }

    /// The engine's settings for jobs: `queue` pairs may wait (the most a caller hands it at
    /// once), batches of `max_batch_size`, and the breaker as in `serve`.
    pub fn engine_config(
        &self,
        max_batch_size: usize,
        queue: usize,
        breaker_cooldown: Duration,
    ) -> EngineConfig {
        EngineConfig {
            max_batch_size: max_batch_size.max(1),
            max_batch_wait: Duration::ZERO,
            max_queue: queue.max(1),
            breaker_failures: 3,
            breaker_cooldown,
            breaker_give_up: 3,
            max_image_pixels: self.max_image_pixels,
            max_text_chars: self.max_text_chars,
            preprocess_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            preprocess_memory: 768 << 20,
            fault_injection: false,
        }
    }
}

/// The longest job line or message (`batch`, `submit`, `worker`).
#[derive(Args, Debug)]
pub struct JobSizeArgs {
    /// Longest job, in bytes (suffixes KB, MB): a longer line is reported by number and
    /// skipped without being held whole; a longer message is dead-lettered. Room for an inline
    /// image at PAYLOAD_LIMIT in base64.
    #[arg(long, env = "MAX_JOB_BYTES", default_value = "16MB")]
    pub max_job_bytes: String,
}

impl JobSizeArgs {
    pub fn bytes(&self) -> Result<usize> {
        let n = crate::args::flags::parse_bytes("MAX_JOB_BYTES", &self.max_job_bytes)?;
        anyhow::ensure!(n > 0, "MAX_JOB_BYTES must be at least 1 byte");
        Ok(n)
    }
}

#[derive(Args, Debug)]
pub struct AmqpArgs {
    /// The RabbitMQ broker; its credentials never appear in logs or errors.
    #[arg(
        long,
        env = "AMQP_URL",
        hide_env_values = true,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    #[arg(long, env = "JOBS_QUEUE", default_value = "ofa.jobs")]
    pub jobs_queue: String,
    #[arg(long, env = "RESULTS_QUEUE", default_value = "ofa.results")]
    pub results_queue: String,
    #[arg(long, env = "DEAD_LETTER_QUEUE", default_value = "ofa.jobs.dead")]
    pub dead_letter_queue: String,
    /// Deliveries of one job before the broker moves it to the dead-letter queue.
    #[arg(long, env = "DELIVERY_LIMIT", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub delivery_limit: u32,
}

impl AmqpArgs {
    pub fn broker(&self, command: &str) -> Result<RabbitMq> {
        Ok(RabbitMq::new(AmqpConfig {
            address: Address::parse(&self.amqp_url)?,
            queues: QueueNames {
                jobs: self.jobs_queue.clone(),
                results: self.results_queue.clone(),
                dead_letter: self.dead_letter_queue.clone(),
            },
            delivery_limit: self.delivery_limit,
            connection_name: format!("ofa-entail {command}"),
        }))
    }
}
