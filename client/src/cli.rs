//! The `cachew-client` consumer binary: consumes epochs of a job, optionally simulating a
//! training step, writes the hash log, and prints per epoch the example count, images/s and the
//! exactly-once verdict against the dataset.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cachew_pipeline::hashlog::{
    HashLine, HashLogWriter, check_exactly_once, log_path, read_hash_log,
};
use cachew_pipeline::{Dataset, PipelineSpec};
use clap::Parser;

use crate::{ClientConfig, ClientEvent, JobClient};

/// Cachew-rs training client: streams a job's epochs from the cluster.
#[derive(Parser, Debug)]
#[command(name = "cachew-client", version)]
pub struct Args {
    /// The dispatcher's HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub dispatcher: String,
    /// Pipeline spec (TOML).
    #[arg(long)]
    pub spec: PathBuf,
    /// Job name; clients with the same name share the job.
    #[arg(long, default_value = "default")]
    pub job: String,
    /// Seed of the job (default: the spec's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Epochs to consume (0: forever).
    #[arg(long, default_value_t = 1)]
    pub epochs: u64,
    /// Consumers sharing the job; each gets every n-th split.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub num_consumers: u32,
    /// This client's consumer index (default: the lowest free one).
    #[arg(long)]
    pub consumer_index: Option<u32>,
    /// Write `DIR/epoch-<e>.log`, one line per example (see DESIGN.md).
    #[arg(long)]
    pub hash_log: Option<PathBuf>,
    /// Check each finished epoch for exactly-once against the dataset's record hashes.
    #[arg(long)]
    pub verify: bool,
    /// Simulated training step per batch, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub step_time_ms: u64,
    /// How long (ms) to wait for the dispatcher to come up.
    #[arg(long, default_value_t = 60_000)]
    pub connect_timeout_ms: u64,
    /// Splits fetched concurrently.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub prefetch_splits: u64,
    /// Log filter (tracing env-filter syntax).
    #[arg(long, default_value = "info")]
    pub log: String,
}

/// Entry point of the binary.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    cachew_proto::daemon::init_tracing(&args.log);
    cachew_proto::daemon::exit_with_parent();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cachew-client: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("cachew-client: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the consumer; `Ok(false)` if an epoch failed its exactly-once check.
async fn run(args: Args) -> anyhow::Result<bool> {
    let spec = PipelineSpec::load(&args.spec)
        .with_context(|| format!("loading {}", args.spec.display()))?;
    let reference = if args.verify {
        let spec = spec.clone();
        Some(
            tokio::task::spawn_blocking(move || {
                Dataset::for_spec(&spec).and_then(|d| d.record_hashes())
            })
            .await?
            .context("reading the dataset to verify against")?,
        )
    } else {
        None
    };
    let mut config = ClientConfig::new(args.dispatcher.clone(), args.job.clone(), spec);
    config.seed = args.seed.unwrap_or(config.seed);
    config.num_epochs = args.epochs;
    config.num_consumers = args.num_consumers;
    config.consumer_index = args.consumer_index;
    config.connect_timeout = Duration::from_millis(args.connect_timeout_ms);
    config.prefetch_splits = args.prefetch_splits as usize;
    let mut client = JobClient::connect(config).await?;
    let step = Duration::from_millis(args.step_time_ms);
    let mut all_ok = true;
    let mut log: Option<HashLogWriter> = None;
    while let Some(event) = client.next().await? {
        match event {
            ClientEvent::Batch(batch) => {
                if let Some(dir) = &args.hash_log {
                    let writer = match &mut log {
                        Some(w) => w,
                        None => log.insert(HashLogWriter::open(dir, batch.epoch, 0)?),
                    };
                    for (i, meta) in batch.examples.iter().enumerate() {
                        writer.append(&HashLine {
                            record: meta.record_sha256,
                            example: batch.example_sha256(i),
                        })?;
                    }
                }
                if !step.is_zero() {
                    tokio::time::sleep(step).await;
                }
            }
            ClientEvent::EpochEnd(summary) => {
                let mut verdict = String::new();
                let secs = summary.elapsed.as_secs_f64().max(1e-9);
                let mut report = cachew_proto::v1::EpochReport {
                    epoch: summary.epoch,
                    examples: summary.examples,
                    skipped: summary.skipped,
                    images_per_sec: summary.examples as f64 / secs,
                    ..Default::default()
                };
                if let (Some(dir), Some(mut w)) = (&args.hash_log, log.take()) {
                    w.sync()?;
                    if let Some(reference) = &reference {
                        let lines = read_hash_log(&log_path(dir, summary.epoch))?;
                        let records: Vec<[u8; 32]> = lines.iter().map(|l| l.record).collect();
                        let v = check_exactly_once(&records, reference);
                        all_ok &= v.is_exactly_once() || client.num_consumers() > 1;
                        verdict = format!(", {v}");
                        if client.num_consumers() == 1 {
                            report.verified = true;
                            report.exactly_once = v.is_exactly_once();
                            report.verdict = v.to_string();
                        }
                    }
                } else if args.hash_log.is_none() && reference.is_some() {
                    verdict = ", exactly-once check needs --hash-log".to_string();
                }
                client.report_epoch(report);
                println!(
                    "epoch {}: {} examples in {} batches, {:.2} s, {:.0} images/s{}{}",
                    summary.epoch,
                    summary.examples,
                    summary.batches,
                    secs,
                    summary.examples as f64 / secs,
                    if summary.skipped > 0 {
                        format!(", {} skipped", summary.skipped)
                    } else {
                        String::new()
                    },
                    verdict
                );
            }
        }
    }
    Ok(all_ok)
}
