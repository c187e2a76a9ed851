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
    pub autoscale: AutoscaleFlags,
    #[command(flatten)]
    pub data_root: cachew_proto::limits::DataRootFlags,
    #[command(flatten)]
    pub log: cachew_proto::daemon::LogFlags,
    /// Keepalive pings that notice a silent peer (a cut link).
    #[command(flatten)]
    pub net: cachew_proto::net::NetFlags,
    /// TLS and tokens (see the README's "Security").
    #[command(flatten)]
    pub security: cachew_proto::security::SecurityFlags,
}

/// The autoscaler (see the README's "Autoscaling").
#[derive(clap::Args, Debug, Clone)]
pub struct AutoscaleFlags {
    /// Size the worker fleet so the trainers are not input-bound and no worker idles. Without
    /// it the fleet changes only when an operator pins a count.
    #[arg(long)]
    pub autoscale: bool,
    /// The fewest workers the autoscaler keeps.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub min_workers: u32,
    /// The most workers the autoscaler asks for.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_workers: u32,
    /// How often (ms) the jobs are measured and the policy consulted.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub autoscale_period_ms: u64,
    /// Periods a new fleet size runs before it is measured.
    #[arg(long, default_value_t = 1)]
    pub autoscale_settle_periods: u32,
    /// Periods of a stable fleet before one worker fewer is tried.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    pub autoscale_stable_periods: u32,
    /// A step up is kept when the delivered rate gained more than this fraction.
    #[arg(long, default_value_t = 0.07)]
    pub scale_up_gain: f64,
    /// A step down is kept when the trainer's share of time waiting for data grew by less than
    /// this (0.03: 3 points) since the descent began, and stays under --input-bound.
    #[arg(long, default_value_t = 0.03)]
    pub scale_down_loss: f64,
    /// A trainer waiting for data more than this fraction of its time is input-bound.
    #[arg(long, default_value_t = 0.10)]
    pub input_bound: f64,
    /// Run `sh -c CMD` with `{n}` replaced by the worker replicas wanted whenever that number
    /// changes (e.g. 'kubectl scale deployment/cachew-worker --replicas={n}').
    #[arg(long, value_name = "CMD")]
    pub scale_command: Option<String>,
    /// A scale command running longer (ms) is killed, and retried.
    #[arg(long, default_value_t = 30_000)]
    pub scale_command_timeout_ms: u64,
}

impl AutoscaleFlags {
    /// The settings, or why they are inconsistent.
    pub fn config(&self) -> Result<crate::AutoscaleConfig, String> {
        if self.min_workers > self.max_workers {
            return Err(format!(
                "--min-workers ({}) is larger than --max-workers ({})",
                self.min_workers, self.max_workers
            ));
        }
        for (name, v) in [
            ("--scale-up-gain", self.scale_up_gain),
            ("--scale-down-loss", self.scale_down_loss),
            ("--input-bound", self.input_bound),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("{name} must be a fraction from 0 to 1, got {v}"));
            }
        }
        if let Some(c) = self.scale_command.as_ref().filter(|c| !c.contains("{n}")) {
            return Err(format!(
                "--scale-command must contain {{n}} (the replicas wanted): {c:?}"
            ));
        }
        Ok(crate::AutoscaleConfig {
            enabled: self.autoscale,
            policy: crate::ScalePolicy {
                min_workers: self.min_workers,
                max_workers: self.max_workers,
                up_gain: self.scale_up_gain,
                down_loss: self.scale_down_loss,
                input_bound: self.input_bound,
                settle_periods: self.autoscale_settle_periods,
                stable_periods: self.autoscale_stable_periods,
            },
            period: Duration::from_millis(self.autoscale_period_ms),
            scale_command: self.scale_command.clone(),
            command_timeout: Duration::from_millis(self.scale_command_timeout_ms),
        })
    }
}

/// Entry point of the binary (and of multi-call hosts): parses `args`, runs until SIGINT/SIGTERM.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args: Args = match cachew_proto::daemon::parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    args.log.init();
    args.net.apply();
    if let Err(e) = args.security.apply(cachew_proto::security::Side::Serves) {
        eprintln!("cachew-dispatcher: {e}");
        return ExitCode::from(2);
    }
    cachew_proto::daemon::exit_with_parent();
    if args.worker_timeout_ms <= args.heartbeat_interval_ms {
        eprintln!(
            "cachew-dispatcher: --worker-timeout-ms ({}) must be larger than --heartbeat-interval-ms ({})",
            args.worker_timeout_ms, args.heartbeat_interval_ms
        );
        return ExitCode::from(2);
    }
    let autoscale = match args.autoscale.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cachew-dispatcher: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match cachew_proto::daemon::runtime("cachew-dispatcher", None) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(run(args, autoscale)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cachew-dispatcher: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, autoscale: crate::AutoscaleConfig) -> anyhow::Result<()> {
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
        autoscale,
        data_root: args.data_root.data_root().map_err(anyhow::Error::msg)?,
    };
    tracing::info!(data_root = ?config.data_root.dirs(), "specs may name files under the data root");
    if let Some(dir) = &args.work_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create --work-dir {}: {e}", dir.display()))?;
    }
    let journal = args.work_dir.as_ref().map(|d| d.join("journal"));
    crate::run(config, journal, listener, shutdown_signal()).await?;
    tracing::info!("dispatcher stopped");
    Ok(())
}
