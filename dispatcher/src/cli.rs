//! The `cachew-dispatcher` command line.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use cachew_proto::daemon::shutdown_signal;

use crate::DispatcherConfig;

/// Cachew-rs dispatcher: assigns dataset splits to workers and tells clients where to read them.
#[derive(Parser, Debug)]
#[command(name = "cachew-dispatcher", version)]
pub struct Args {
    /// Address to serve gRPC on.
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,
    /// Directory for the journal and its snapshots (`DIR/journal`). Without it the state lives
    /// only in memory and a restarted dispatcher forgets every job.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Worker heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
    pub heartbeat_interval_ms: u64,
    /// A worker silent this long (ms) is declared dead and its splits fail over.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(50..))]
    pub worker_timeout_ms: u64,
    /// A training client silent this long (ms) is released and its splits stop occupying
    /// workers until it reports again.
    /// At least 2 s: clients long-poll for 500 ms between reports.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(2000..))]
    pub consumer_timeout_ms: u64,
    /// Splits assigned ahead of each consumer (0: 4 per active worker, at least 8).
    #[arg(long, default_value_t = 0)]
    pub window: u32,
    /// Cluster-control endpoint of the launcher of this cluster, advertised in the status stream
    /// so dashboards attached to this dispatcher can kill and restart nodes.
    #[arg(long, default_value = "")]
    pub control_address: String,
    /// A finished job is removed from the state (and its snapshots and status) this long (ms)
    /// after it finished. A client that attaches by the same name later gets a fresh job.
    #[arg(long, default_value_t = 600_000)]
    pub job_retention_ms: u64,
    /// An unfinished job with no consumer attached (its clients left or went silent) is removed
    /// after this long (ms). Clients resuming from a saved cursor continue exactly where they
    /// stopped on a fresh job; clients without one would start the job over.
    #[arg(long, default_value_t = 86_400_000)]
    pub abandoned_job_retention_ms: u64,
    /// A dead worker is removed from the state this long (ms) after it was declared dead; if it
    /// comes back later it registers as a new worker.
    #[arg(long, default_value_t = 600_000)]
    pub worker_retention_ms: u64,
    /// A dataset no job uses is removed this long (ms) after its last job was removed.
    #[arg(long, default_value_t = 600_000)]
    pub dataset_retention_ms: u64,
    /// Serve Prometheus `/metrics`, `/healthz` and `/readyz` over HTTP on this address (off
    /// without it). `/readyz` answers 200 once the journal is replayed and the dispatcher accepts
    /// changes.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    #[command(flatten)]
    pub log: cachew_proto::daemon::LogFlags,
    /// Keepalive pings that notice a silent peer (a cut link).
    #[command(flatten)]
    pub net: cachew_proto::net::NetFlags,
}

/// Entry point of the binary (and of multi-call hosts): parses `args`, runs until SIGINT/SIGTERM.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args: Args = match cachew_proto::daemon::parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    args.log.init();
    args.net.apply();
    cachew_proto::daemon::exit_with_parent();
    if args.worker_timeout_ms <= args.heartbeat_interval_ms {
        eprintln!(
            "cachew-dispatcher: --worker-timeout-ms ({}) must be larger than --heartbeat-interval-ms ({})",
            args.worker_timeout_ms, args.heartbeat_interval_ms
        );
        return ExitCode::from(2);
    }
    let runtime = match cachew_proto::daemon::runtime("cachew-dispatcher", None) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cachew-dispatcher: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Metrics first: a probe hears the process (and why it is not ready) during a long replay.
    let metrics = cachew_metrics::Exporter::new("dispatcher");
    if let Some(address) = &args.metrics_listen {
        cachew_metrics::spawn(cachew_metrics::bind(address).await?, metrics.clone());
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let address = listener.local_addr()?.to_string();
    tracing::info!(%address, "dispatcher listening");
    let config = DispatcherConfig {
        heartbeat_interval: Duration::from_millis(args.heartbeat_interval_ms),
        worker_timeout: Duration::from_millis(args.worker_timeout_ms),
        consumer_timeout: Duration::from_millis(args.consumer_timeout_ms),
        window: args.window,
        address,
        control_address: args.control_address.clone(),
        job_retention: Duration::from_millis(args.job_retention_ms),
        abandoned_job_retention: Duration::from_millis(args.abandoned_job_retention_ms),
        worker_retention: Duration::from_millis(args.worker_retention_ms),
        dataset_retention: Duration::from_millis(args.dataset_retention_ms),
        metrics,
    };
    if let Some(dir) = &args.work_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create --work-dir {}: {e}", dir.display()))?;
    }
    let journal = args.work_dir.as_ref().map(|d| d.join("journal"));
    crate::run(config, journal, listener, shutdown_signal()).await?;
    tracing::info!("dispatcher stopped");
    Ok(())
}
