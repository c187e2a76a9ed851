//! The `cachew-worker` command line.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::{ControlConfig, EngineConfig, WorkerConfig};

/// Cachew-rs worker: runs the preprocessing pipeline on assigned splits and serves the results.
#[derive(Parser, Debug)]
#[command(name = "cachew-worker", version)]
pub struct Args {
    /// Address to serve the data service on.
    #[arg(long, default_value = "127.0.0.1:5051")]
    pub listen: SocketAddr,
    /// Address clients should use to reach this worker (default: the bound --listen address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// The dispatcher's HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub dispatcher: String,
    /// Stay idle until the dispatcher promotes this worker to replace a dead one.
    #[arg(long)]
    pub standby: bool,
    /// Compute threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Splits served at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_tasks: u32,
    /// Elements a split may hold past its client's fetch cursor (bounds memory).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub buffer_elements: u32,
    /// Milliseconds a split with a full buffer may go unfetched before it stops counting
    /// against --max-tasks (a stalled or dead trainer's splits then do not block other jobs; at
    /// most --max-tasks such splits are set aside, so memory stays bounded).
    #[arg(long, default_value_t = 1000)]
    pub idle_task_ms: u64,
    /// Compute at most this many elements per second (0: as fast as the cores allow). Makes
    /// this worker as fast as a smaller machine: to share a host fairly, or to emulate a fleet
    /// of separate machines on one host.
    #[arg(long, default_value_t = 0)]
    pub max_elements_per_sec: u32,
    /// Directory for worker state; checkpoints go to `DIR/checkpoints` unless --checkpoint-dir
    /// says otherwise.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Where checkpoints of task positions go (a restarted worker resumes from them).
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Directory of the prefix cache (Cachew put / get); share it between the workers of a
    /// host, or put it on a shared file system for a multi-host cluster.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Compression of cache chunks (see BENCHMARKS.md for the measurement behind the default).
    #[arg(long, default_value = "none", value_parser = ["none", "lz4"])]
    pub cache_compression: String,
    /// Milliseconds between checkpoints (0: no checkpoints).
    #[arg(long, default_value_t = 1000)]
    pub checkpoint_interval_ms: u64,
    /// How long (ms) to keep trying to reach the dispatcher at start-up.
    #[arg(long, default_value_t = 60_000)]
    pub connect_timeout_ms: u64,
    /// On SIGINT or SIGTERM (or when the dispatcher says so) the worker drains: its splits move
    /// to other workers at once and it exits. This bounds the drain in ms, also when the
    /// dispatcher is unreachable. A second signal exits at once.
    #[arg(long, default_value_t = 5_000)]
    pub drain_timeout_ms: u64,
    /// After the dispatcher drained this worker (the autoscaler shrank the fleet), stay up, not
    /// ready, for up to this long (ms) or until SIGINT/SIGTERM, instead of exiting at once:
    /// under an orchestrator that restarts exited containers (a Kubernetes Deployment), the
    /// drained replica is then the one removed when the replica count goes down (not-ready
    /// pods go first), not restarted. Bounded, so a replica the orchestrator kept after all
    /// comes back as a fresh worker. 0: exit at once.
    #[arg(long, default_value_t = 0)]
    pub linger_after_drain_ms: u64,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this HOST:PORT (off by default).
    /// It answers from the start; /readyz is 200 once registered and until the drain.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    #[command(flatten)]
    pub data_root: cachew_proto::limits::DataRootFlags,
    /// Decode budget of one JPEG: width x height x channels of the decoded image (a progressive
    /// JPEG adds 2 bytes per sample of each of its components). A JPEG whose header asks for
    /// more is a bad record (the spec's `on_error`), never allocated.
    #[arg(long, default_value_t = cachew_pipeline::limits::DEFAULT_MAX_DECODE_PIXELS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_decode_pixels: u64,
    #[command(flatten)]
    pub log: cachew_proto::daemon::LogFlags,
    /// Keepalive pings that notice a silent peer (a cut link).
    #[command(flatten)]
    pub net: cachew_proto::net::NetFlags,
    /// TLS and tokens (see the README's "Security").
    #[command(flatten)]
    pub security: cachew_proto::security::SecurityFlags,
}

/// Entry point of the binary: parses `args`, runs until SIGINT/SIGTERM has drained the worker
/// (a second signal exits at once) or the dispatcher drained it.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let started = std::time::Instant::now();
    let args: Args = match cachew_proto::daemon::parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    args.log.init();
    args.net.apply();
    if let Err(e) = args.security.apply(cachew_proto::security::Side::Serves) {
        eprintln!("cachew-worker: {e}");
        return ExitCode::from(2);
    }
    cachew_proto::daemon::exit_with_parent();
    if args.threads == Some(0) {
        eprintln!("cachew-worker: --threads must be at least 1");
        return ExitCode::from(2);
    }
    let runtime = match cachew_proto::daemon::runtime("cachew-worker", Some(2)) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(run(args, started)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cachew-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, started: std::time::Instant) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let bound = listener.local_addr()?.to_string();
    if let Some(dir) = &args.work_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create --work-dir {}: {e}", dir.display()))?;
    }
    let metrics = cachew_metrics::Exporter::new("worker");
    metrics.set_timing(args.metrics_listen.is_some());
    if let Some(address) = &args.metrics_listen {
        let listener = cachew_metrics::bind(address).await?;
        tracing::info!(address = %listener.local_addr()?, "metrics endpoint listening");
        cachew_metrics::spawn(listener, metrics.clone());
    }
    let defaults = EngineConfig::default();
    let config = WorkerConfig {
        control: ControlConfig {
            dispatcher: args.dispatcher.clone(),
            advertise: args.advertise.clone().unwrap_or_else(|| bound.clone()),
            standby: args.standby,
            connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        },
        engine: EngineConfig {
            threads: args.threads.unwrap_or(defaults.threads),
            max_tasks: args.max_tasks as usize,
            ahead: args.buffer_elements,
            chunk: defaults.chunk,
            idle_after: Duration::from_millis(args.idle_task_ms),
            max_elements_per_sec: args.max_elements_per_sec,
        },
        checkpoint_dir: if args.checkpoint_interval_ms == 0 {
            None
        } else {
            args.checkpoint_dir
                .clone()
                .or_else(|| args.work_dir.as_ref().map(|d| d.join("checkpoints")))
        },
        checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms.max(10)),
        started,
        cache: args
            .cache_dir
            .as_ref()
            .map(|dir| crate::cache::CacheSettings {
                dir: dir.clone(),
                compression: if args.cache_compression == "lz4" {
                    cachew_pipeline::cache::Compression::Lz4
                } else {
                    cachew_pipeline::cache::Compression::None
                },
            }),
        drain_timeout: Duration::from_millis(args.drain_timeout_ms),
        metrics,
        inputs: crate::prepared::InputBounds {
            data_root: args.data_root.data_root().map_err(anyhow::Error::msg)?,
            max_decode_pixels: args.max_decode_pixels,
        },
    };
    tracing::info!(data_root = ?config.inputs.data_root.dirs(), max_decode_pixels = config.inputs.max_decode_pixels, "tasks may name files under the data root");
    tracing::info!(address = %bound, dispatcher = %args.dispatcher, threads = config.engine.threads, "worker listening");
    let signalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = signalled.clone();
    let stop = async move {
        let signal = cachew_proto::daemon::graceful_stop_signal("cachew-worker").await;
        seen.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(
            "{}: draining (a second signal exits at once)",
            signal.name()
        );
    };
    crate::run(config, listener, stop).await?;
    if args.linger_after_drain_ms > 0 && !signalled.load(std::sync::atomic::Ordering::SeqCst) {
        let linger = Duration::from_millis(args.linger_after_drain_ms);
        tracing::info!(
            "drained by the dispatcher: staying up, not ready, for {} ms or until SIGINT/SIGTERM (--linger-after-drain-ms)",
            linger.as_millis()
        );
        let _ = tokio::time::timeout(linger, cachew_proto::daemon::shutdown_signal()).await;
    }
    tracing::info!("worker stopped");
    Ok(())
}
