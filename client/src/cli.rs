//! The `cachew-client` consumer binary: consumes epochs of a job, optionally simulating a
//! training step, writes the hash log, and prints per epoch the example count, images/s and the
//! exactly-once verdict against the dataset.
//!
//! Every way out releases the consumer at the dispatcher ([`JobClient::leave`]). SIGINT or
//! SIGTERM stops the client gracefully: the hash log is synced, the cursor saved (with
//! `--cursor-file` / `--save-cursor`) at the last batch written to it, so a resume starts exactly
//! there, and the process exits with status 130 / 143. A second signal exits at once, and so
//! does a stop that takes longer than [`STOP_GRACE`] (a disk that takes no write); the cursor
//! file is replaced atomically, so either leaves the previous cursor intact.

use std::ffi::OsString;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use cachew_pipeline::hashlog::{
    HashLine, HashLogWriter, check_exactly_once, log_path, read_hash_log,
};
use cachew_pipeline::{Dataset, PipelineError, PipelineSpec};
use cachew_proto::daemon::StopSignal;
use cachew_proto::names::Name;
use cachew_proto::v1;
use clap::Parser;

use crate::cursor::{CursorError, SavedCursor};
use crate::{ClientConfig, ClientEvent, ClientMetrics, DiskReporter, JobClient};

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
    /// Keep only the hash logs of the last N epochs (0: all). Bounds the disk a client running
    /// forever (`--epochs 0`) uses; with --verify each epoch is checked before its log goes.
    #[arg(long, default_value_t = 0)]
    pub hash_log_keep: u64,
    /// Check each finished epoch for exactly-once against the dataset's record hashes.
    #[arg(long)]
    pub verify: bool,
    /// Simulated training step per batch, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub step_time_ms: u64,
    /// A trainer whose step time changes: after this process has taken EXAMPLES examples, each
    /// step takes MS milliseconds (repeatable; the last one reached holds). Simulates a
    /// trainer that slows down or speeds up mid-run (the autoscaler's scenarios).
    #[arg(long, value_name = "EXAMPLES:MS", value_parser = parse_step_change)]
    pub step_time_after: Vec<(u64, u64)>,
    /// How long (ms) to wait for the dispatcher to come up.
    #[arg(long, default_value_t = 60_000)]
    pub connect_timeout_ms: u64,
    /// Splits fetched concurrently.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub prefetch_splits: u64,
    /// Save the cursor (where the next batch starts) to FILE, as a trainer saves it with its
    /// model checkpoint.
    #[arg(long)]
    pub save_cursor: Option<PathBuf>,
    /// Save the cursor every N batches (and at every epoch end).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub save_every: u64,
    /// Resume exactly where a saved cursor says (the hash log is cut back to it).
    #[arg(long)]
    pub resume_from: Option<PathBuf>,
    /// Both: save the cursor to FILE, and resume from it when it exists (restart-safe).
    #[arg(long, conflicts_with_all = ["save_cursor", "resume_from"])]
    pub cursor_file: Option<PathBuf>,
    /// How the job uses the cache of the pipeline's deterministic prefix: `compute` (never),
    /// `put` (compute and write it), `get` (read it) or `auto` (put during the first epoch while
    /// measuring, then get or compute, whichever is cheaper). Workers need --cache-dir.
    #[arg(long, default_value = "compute", value_parser = cache_policy)]
    pub cache_policy: v1::CacheMode,
    /// Serve the client's metrics (`/metrics`, Prometheus text format), `/healthz` and `/readyz`
    /// (ready while attached to the job) on HOST:PORT. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// With --metrics-listen: once the job is done, keep serving the final counters this long
    /// (ms) before exiting, so a scraper reads them (a short job would otherwise end between
    /// two scrapes). Not after a stop signal.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub metrics_linger_ms: u64,
    #[command(flatten)]
    pub log: cachew_proto::daemon::LogFlags,
    /// Keepalive pings that notice a silent peer (a cut link).
    #[command(flatten)]
    pub net: cachew_proto::net::NetFlags,
    /// TLS and tokens (see the README's "Security").
    #[command(flatten)]
    pub security: cachew_proto::security::SecurityFlags,
}

/// A `--cache-policy` value: a cache mode's name, unknown names refused with the valid ones.
fn cache_policy(name: &str) -> Result<v1::CacheMode, String> {
    v1::CacheMode::parse(name).map_err(|e| e.to_string())
}

/// Entry point of the binary.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args: Args = match cachew_proto::daemon::parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    args.log.init();
    args.net.apply();
    if let Err(e) = args.security.apply(cachew_proto::security::Side::CallsOnly) {
        eprintln!("cachew-client: {e}");
        return ExitCode::from(2);
    }
    cachew_proto::daemon::exit_with_parent();
    let runtime = match cachew_proto::daemon::runtime("cachew-client", Some(2)) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let linger = match args.metrics_listen {
        Some(_) => Duration::from_millis(args.metrics_linger_ms),
        None => Duration::ZERO,
    };
    let ending = runtime.block_on(async move {
        let ending = run(args).await;
        if matches!(ending, Ok(Ending::Done(_))) && !linger.is_zero() {
            tracing::info!("serving the final metrics for {} ms", linger.as_millis());
            tokio::time::sleep(linger).await;
        }
        ending
    });
    match ending {
        Ok(Ending::Done(true)) => ExitCode::SUCCESS,
        Ok(Ending::Done(false)) => ExitCode::from(3),
        Ok(Ending::Stopped(signal)) => ExitCode::from(signal.exit_code()),
        Err(e) => {
            eprintln!("cachew-client: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How the consumer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Every epoch consumed; false if an epoch failed its exactly-once check.
    Done(bool),
    /// Stopped by a signal: the cursor saved (when configured), the consumer released.
    Stopped(StopSignal),
}

/// How long a graceful stop may take before the process exits anyway.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Watches for SIGINT / SIGTERM: the first is published on the returned receiver (and exits
/// the process if the stop takes longer than [`STOP_GRACE`]); a second exits at once.
fn watch_stop() -> tokio::sync::watch::Receiver<Option<StopSignal>> {
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let signal = cachew_proto::daemon::graceful_stop_signal("cachew-client").await;
        tracing::info!(
            "{}: saving the cursor and releasing the consumer (a second signal exits at once)",
            signal.name()
        );
        let _ = tx.send(Some(signal));
        tokio::time::sleep(STOP_GRACE).await;
        eprintln!(
            "cachew-client: the stop took over {} s; exiting",
            STOP_GRACE.as_secs()
        );
        std::process::exit(i32::from(signal.exit_code()));
    });
    rx
}

/// Resolves once a stop signal arrived.
async fn stopped(rx: &mut tokio::sync::watch::Receiver<Option<StopSignal>>) -> StopSignal {
    match rx.wait_for(Option::is_some).await {
        Ok(s) => s.unwrap_or(StopSignal::Terminate),
        Err(_) => std::future::pending().await,
    }
}

/// Runs the consumer until the job ends, an error, or a stop signal.
async fn run(args: Args) -> anyhow::Result<Ending> {
    let mut stop = watch_stop();
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
    config.cache_policy = args.cache_policy;
    if let Some(address) = &args.metrics_listen {
        let exporter = cachew_metrics::Exporter::new("client");
        config.metrics = Some(ClientMetrics::register(&exporter));
        exporter.health().set_not_ready("connecting");
        cachew_metrics::spawn(cachew_metrics::bind(address).await?, exporter);
    }
    let save_path = args
        .save_cursor
        .clone()
        .or_else(|| args.cursor_file.clone());
    let resume_path = args
        .resume_from
        .clone()
        .or_else(|| args.cursor_file.clone().filter(|p| p.exists()));
    // The hash log of the resumed epoch keeps exactly the lines before the cursor.
    let mut keep_lines: Option<(u64, u64)> = None;
    if let Some(path) = &resume_path {
        let saved = SavedCursor::load(path)?;
        let mismatch = [
            (saved.job != args.job, "job"),
            (saved.seed != config.seed, "seed"),
            (saved.num_epochs != config.num_epochs, "epochs"),
            (
                saved.num_consumers != config.num_consumers,
                "number of consumers",
            ),
        ];
        if let Some((_, what)) = mismatch.iter().find(|(bad, _)| *bad) {
            anyhow::bail!(
                "{}: the saved cursor belongs to a job with another {what}",
                path.display()
            );
        }
        tracing::info!(
            "resuming from {}: epoch {} split #{} index {} ({} examples in)",
            path.display(),
            saved.cursor.at.epoch,
            saved.cursor.at.ordinal,
            saved.cursor.at.index,
            saved.cursor.examples
        );
        keep_lines = Some((saved.cursor.at.epoch, saved.cursor.examples));
        config.resume = Some(saved.cursor);
    }
    let (seed, num_epochs, num_consumers) = (config.seed, config.num_epochs, config.num_consumers);
    let mut client = tokio::select! {
        c = JobClient::connect(config) => c?,
        // Nothing to save or release yet.
        signal = stopped(&mut stop) => return Ok(Ending::Stopped(signal)),
    };
    let disks = client.disks();
    let cursor_of = |client: &JobClient| SavedCursor {
        job: args.job.clone(),
        seed,
        num_epochs,
        num_consumers,
        cursor: client.cursor(),
    };
    let mut since_save = 0u64;
    let mut step = Duration::from_millis(args.step_time_ms);
    let mut taken = 0u64;
    let mut all_ok = true;
    let mut log: Option<HashLogWriter> = None;
    let consumed = async {
    loop {
        let next = tokio::select! {
            biased;
            signal = stopped(&mut stop) => {
                // Every batch handed out is in the hash log: the cursor saved after it (and
                // the log synced first) resumes exactly at the next one. One attempt: the
                // client is stopping.
                if let Some(path) = &save_path {
                    match save_cursor_once(path, &cursor_of(&client), log.as_mut()) {
                        Ok(()) => tracing::info!(
                            "{}: cursor saved to {} ({} examples in); a resume starts exactly there",
                            signal.name(),
                            path.display(),
                            client.cursor().examples
                        ),
                        Err(e) => tracing::error!(
                            "{}: the cursor could not be saved to {}: {e:#}",
                            signal.name(),
                            path.display()
                        ),
                    }
                }
                return Ok(Ending::Stopped(signal));
            }
            next = client.next() => next,
        };
        let event = match next {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(e) => {
                // Only a cause a person must act on ends the client (see `ClientError`): say
                // which, and leave the cursor where the next run resumes exactly.
                // One attempt, without waiting for space: the client is ending anyway, and
                // the message says whether the cursor is there.
                let saved = match &save_path {
                    Some(path) => save_cursor_once(path, &cursor_of(&client), log.as_mut()),
                    None => Ok(()),
                };
                let resume = match (&save_path, saved) {
                    (Some(path), Ok(())) => format!(
                        "; the cursor in {} resumes exactly here (--cursor-file or --resume-from)",
                        path.display()
                    ),
                    (Some(path), Err(se)) => {
                        format!(
                            "; the cursor could not be saved to {}: {se:#}",
                            path.display()
                        )
                    }
                    (None, _) => String::new(),
                };
                anyhow::bail!("{e}{resume}");
            }
        };
        match event {
            ClientEvent::Batch(batch) => {
                if let Some(dir) = &args.hash_log {
                    let writer = match &mut log {
                        Some(w) => w,
                        None => {
                            let keep = match keep_lines.take() {
                                Some((epoch, lines)) if epoch == batch.epoch => lines,
                                _ => 0,
                            };
                            let path = log_path(dir, batch.epoch);
                            let opened = until_written(
                                &disks,
                                "hash log",
                                &path,
                                PipelineError::is_io,
                                || HashLogWriter::open(dir, batch.epoch, keep),
                            )
                            .await?;
                            log.insert(opened)
                        }
                    };
                    for (i, meta) in batch.examples.iter().enumerate() {
                        let appended = writer.append(&HashLine {
                            record: meta.record_sha256,
                            example: batch.example_sha256(i),
                        });
                        match appended {
                            Ok(()) => {}
                            // The line is held: wait until the held lines are written.
                            Err(e) if e.is_io() => {
                                let path = writer.path().to_path_buf();
                                until_written(
                                    &disks,
                                    "hash log",
                                    &path,
                                    PipelineError::is_io,
                                    || writer.flush(),
                                )
                                .await?;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                taken += batch.examples.len() as u64;
                if let Some(&(_, ms)) = args
                    .step_time_after
                    .iter()
                    .filter(|(after, _)| taken >= *after)
                    .max_by_key(|(after, _)| *after)
                {
                    step = Duration::from_millis(ms);
                }
                if !step.is_zero() {
                    tokio::time::sleep(step).await;
                }
                since_save += 1;
                if since_save >= args.save_every {
                    if let Some(path) = &save_path {
                        save_cursor(&disks, path, &cursor_of(&client), log.as_mut()).await?;
                    }
                    since_save = 0;
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
                    let path = w.path().to_path_buf();
                    until_written(&disks, "hash log", &path, PipelineError::is_io, || w.sync())
                        .await?;
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
                    if args.hash_log_keep > 0
                        && let Some(last_old) = summary.epoch.checked_sub(args.hash_log_keep)
                    {
                        prune_hash_logs(dir, last_old);
                    }
                } else if args.hash_log.is_none() && reference.is_some() {
                    verdict = ", exactly-once check needs --hash-log".to_string();
                }
                client.report_epoch(report);
                if let Some(path) = &save_path {
                    save_cursor(&disks, path, &cursor_of(&client), None).await?;
                }
                since_save = 0;
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
    Ok(Ending::Done(all_ok))
    }
    .await;
    // Every way out (an error, a signal, the end) releases the consumer at once; after a normal
    // end it was released already.
    client.leave().await;
    consumed
}

/// Saves the cursor durably, after the hash log (which must never lag behind a saved cursor).
async fn save_cursor(
    disks: &DiskReporter,
    path: &Path,
    saved: &SavedCursor,
    log: Option<&mut HashLogWriter>,
) -> anyhow::Result<()> {
    if let Some(w) = log {
        let log_path = w.path().to_path_buf();
        until_written(disks, "hash log", &log_path, PipelineError::is_io, || {
            w.sync()
        })
        .await?;
    }
    until_written(disks, "cursor file", path, CursorError::is_io, || {
        saved.save(path)
    })
    .await?;
    Ok(())
}

/// Saves the cursor (after the hash log) with one attempt each, as a client that is ending does.
fn save_cursor_once(
    path: &Path,
    saved: &SavedCursor,
    log: Option<&mut HashLogWriter>,
) -> anyhow::Result<()> {
    if let Some(w) = log {
        w.sync()?;
    }
    saved.save(path)?;
    Ok(())
}

/// Whether an error (or one of its sources) is a disk out of space or quota.
fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The first wait before trying a write again on a full or failing disk, doubled up to
/// [`DISK_RETRY_MAX`]; the warning is repeated every [`DISK_WARN_EVERY`].
const DISK_RETRY_MIN: Duration = Duration::from_millis(100);
const DISK_RETRY_MAX: Duration = Duration::from_secs(2);
const DISK_WARN_EVERY: Duration = Duration::from_secs(30);

/// Runs `write` until it succeeds, waiting while it fails with an I/O error (`retry`): a full
/// disk (or a failing write or fsync) is a condition that passes once space is freed, so the
/// client waits, holding delivery (no example is taken from the stream meanwhile), rather than
/// exiting. Every write it retries is safe to repeat: the hash log rewrites held lines at their
/// own offsets, the cursor file is replaced atomically. Another error is returned at once.
async fn until_written<T, E: std::error::Error + 'static>(
    disks: &DiskReporter,
    what: &str,
    path: &Path,
    retry: impl Fn(&E) -> bool,
    mut write: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut since: Option<Instant> = None;
    let mut warned: Option<Instant> = None;
    let mut delay = DISK_RETRY_MIN;
    loop {
        match write() {
            Ok(value) => {
                if let Some(since) = since {
                    disks.recovered(what);
                    tracing::warn!(
                        path = %path.display(),
                        "the {what} is written again after {:.1} s; delivery resumes",
                        since.elapsed().as_secs_f64()
                    );
                }
                return Ok(value);
            }
            Err(e) if retry(&e) => {
                disks.failing(
                    what,
                    &path.display().to_string(),
                    &e.to_string(),
                    is_disk_full(&e),
                    "holds delivery until the write goes through",
                );
                let now = Instant::now();
                let started = *since.get_or_insert(now);
                if warned.is_none_or(|t| now - t >= DISK_WARN_EVERY) {
                    warned = Some(now);
                    tracing::warn!(
                        path = %path.display(),
                        waiting_s = (now - started).as_secs(),
                        "cannot write the {what}: {e}. Delivery waits and the write is retried \
                         until the disk has room again (nothing is lost or counted twice); \
                         stopping the client meanwhile is safe: --cursor-file resumes exactly at \
                         the last cursor saved"
                    );
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(DISK_RETRY_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Removes the hash logs of epochs up to `last_old` (also ones an earlier run left behind).
fn prune_hash_logs(dir: &std::path::Path, last_old: u64) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("cannot list the hash logs in {}: {e}", dir.display());
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let epoch = name
            .to_str()
            .and_then(|n| n.strip_prefix("epoch-"))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(epoch) = epoch
            && epoch <= last_old
            && let Err(e) = std::fs::remove_file(entry.path())
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove the hash log of epoch {epoch}: {e}");
        }
    }
}

/// `EXAMPLES:MS` of `--step-time-after`.
fn parse_step_change(s: &str) -> Result<(u64, u64), String> {
    let (examples, ms) = s
        .split_once(':')
        .ok_or_else(|| format!("expected EXAMPLES:MS, got {s:?}"))?;
    let examples = examples
        .trim()
        .parse()
        .map_err(|e| format!("EXAMPLES in {s:?}: {e}"))?;
    let ms = ms.trim().parse().map_err(|e| format!("MS in {s:?}: {e}"))?;
    Ok((examples, ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::StorageFull)
    }

    /// A full disk is waited out (each failed attempt changes nothing, the one that succeeds
    /// counts once); any other error ends the wait at once.
    #[tokio::test]
    async fn a_full_disk_is_waited_out_and_other_errors_are_not() {
        let disks = crate::DiskReporter::default();
        let mut attempts = 0;
        let value = until_written(
            &disks,
            "hash log",
            Path::new("/x"),
            |e: &std::io::Error| e.kind() == std::io::ErrorKind::StorageFull,
            || {
                attempts += 1;
                if attempts < 4 {
                    Err(full())
                } else {
                    // The dispatcher hears of the condition while it lasts.
                    let now = disks.conditions();
                    assert!(now.len() == 1 && now[0].disk_full && now[0].failures == 3);
                    Ok(attempts)
                }
            },
        )
        .await
        .unwrap();
        assert_eq!((value, attempts), (4, 4));
        // Reported while it lasted, and over once the write went through.
        assert!(disks.conditions().is_empty());

        let mut attempts = 0;
        let err = until_written(
            &disks,
            "hash log",
            Path::new("/x"),
            |e: &std::io::Error| e.kind() == std::io::ErrorKind::StorageFull,
            || -> Result<(), std::io::Error> {
                attempts += 1;
                Err(std::io::Error::from(std::io::ErrorKind::InvalidData))
            },
        )
        .await
        .unwrap_err();
        assert_eq!((err.kind(), attempts), (std::io::ErrorKind::InvalidData, 1));
    }
}
