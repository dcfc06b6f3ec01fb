//! `ofa-entail collect --out FILE`: results from the results queue into a JSONL file, one line
//! per job id (a second result for an id, after a redelivery, is dropped), each batch written
//! and fsynced before it is acked. Ids already in the file count as collected, so a rerun
//! continues.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use ofa_queue::Collector;

use crate::args::flags::seconds;
use crate::args::jobs::AmqpArgs;
use ofa_jobs::files::results;

#[derive(Args, Debug)]
pub struct CollectArgs {
    /// Results file, appended to.
    #[arg(long)]
    out: PathBuf,
    /// Stop once this many distinct job ids are in the file; exit non-zero if never reached.
    #[arg(long)]
    expect: Option<usize>,
    /// Stop after this many seconds without a new result.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
    #[command(flatten)]
    amqp: AmqpArgs,
}

pub fn run(args: CollectArgs) -> Result<()> {
    let idle = seconds("--idle-timeout", args.idle_timeout)?;
    let mut ids = results::finished(&args.out)?;
    let mut out = results::open_append(&args.out)?;
    let broker = args.amqp.broker("collect")?;
    let runtime = crate::args::model::runtime()?;
    let (mut new, mut duplicates, mut malformed) = (0usize, 0usize, 0usize);
    let done = |n: usize| args.expect.is_some_and(|e| n >= e);
    runtime.block_on(async {
        let mut collector = Collector::open(&broker, 1000).await?;
        let mut last_new = std::time::Instant::now();
        while !done(ids.len()) {
            let left = idle.saturating_sub(last_new.elapsed());
            let Some(batch) = collector
                .next_batch(left.max(Duration::from_millis(1)))
                .await?
            else {
                break;
            };
            for body in &batch.bodies {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
                    malformed += 1;
                    continue;
                };
                let Some(id) = v["id"].as_str() else {
                    malformed += 1;
                    continue;
                };
                if ids.insert(id.to_owned()) {
                    writeln!(out, "{v}")?;
                    new += 1;
                    last_new = std::time::Instant::now();
                } else {
                    duplicates += 1;
                }
            }
            // On disk before the broker forgets them.
            out.flush()?;
            out.sync_data()?;
            batch.ack().await?;
        }
        collector.close().await;
        anyhow::Ok(())
    })?;
    eprintln!(
        "collected {new} new results into {} ({} ids in the file, {duplicates} duplicates dropped, {malformed} malformed)",
        args.out.display(),
        ids.len()
    );
    if let Some(expect) = args.expect {
        anyhow::ensure!(
            ids.len() >= expect,
            "expected {expect} results, have {} after {} s without a new one",
            ids.len(),
            idle.as_secs_f64()
        );
    }
    Ok(())
}
