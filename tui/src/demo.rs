//! `cachew-tui demo`: the built-in dataset on a local cluster this process supervises (a
//! dispatcher with short heartbeats so failures show quickly, workers, standby workers and a
//! training client that loops over epochs and verifies each one), plus the cluster-control
//! endpoint the dashboard's keys go through.
//!
//! It owns the nodes: [`Demo::stop`] (or dropping the [`Demo`]) leaves no process behind, and
//! every node exits by itself if this process dies (cluster control starts them with
//! `CACHEW_PARENT_PID`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use cachew_cluster::{Launcher, LocalCluster, LocalClusterBuilder, TrainingClient};
use cachew_fixtures::GenerateParams;

use crate::TuiError;

/// What `demo` launches.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// Where the built-in dataset is generated (once).
    #[arg(long, default_value = ".cachew/data")]
    pub data_dir: PathBuf,
    /// Where run directories (logs, node state, hash logs) go.
    #[arg(long, default_value = ".cachew/runs")]
    pub runs_dir: PathBuf,
    /// Workers that take splits from the start.
    #[arg(long, default_value_t = 3)]
    pub workers: u32,
    /// Standby workers, promoted when a worker dies.
    #[arg(long, default_value_t = 1)]
    pub standby: u32,
    /// Records in the built-in dataset.
    #[arg(long, default_value_t = GenerateParams::default().records)]
    pub records: u32,
    /// Simulated training step per batch, in milliseconds (keeps epochs watchable).
    #[arg(long, default_value_t = 50)]
    pub step_time_ms: u64,
    /// Compute threads per worker (default: all cores).
    #[arg(long)]
    pub worker_threads: Option<u32>,
    /// Worker heartbeat interval of the dispatcher, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub heartbeat_interval_ms: u64,
    /// A worker silent this long (ms) is declared dead and its splits fail over.
    #[arg(long, default_value_t = 2000)]
    pub worker_timeout_ms: u64,
    /// The dispatcher autoscales the workers (up to N; 0: off) and the demo starts the ones it
    /// wants; `+` / `-` pin a count, `a` gives it back to the autoscaler.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub autoscale: u32,
    /// Computed elements per second per worker (0: as fast as the cores allow): paced workers
    /// behave like a fleet of small machines, so autoscaling has something to find.
    #[arg(long, default_value_t = 0)]
    pub max_elements_per_sec: u32,
}

impl DemoOptions {
    /// Checks the options before anything starts.
    pub fn validate(&self) -> Result<(), TuiError> {
        let shards = GenerateParams::default().shards;
        if self.workers == 0 {
            return Err(TuiError::Invalid("--workers must be at least 1".into()));
        }
        if self.records < shards {
            return Err(TuiError::Invalid(format!(
                "--records must be at least {shards} (one per shard)"
            )));
        }
        if self.worker_threads == Some(0) {
            return Err(TuiError::Invalid(
                "--worker-threads must be at least 1".into(),
            ));
        }
        if self.worker_timeout_ms <= self.heartbeat_interval_ms {
            return Err(TuiError::Invalid(format!(
                "--worker-timeout-ms ({}) must be larger than --heartbeat-interval-ms ({})",
                self.worker_timeout_ms, self.heartbeat_interval_ms
            )));
        }
        Ok(())
    }

    fn worker_args(&self) -> Vec<String> {
        let mut args = match self.worker_threads {
            Some(n) => vec!["--threads".into(), n.to_string()],
            None => Vec::new(),
        };
        if self.max_elements_per_sec > 0 {
            args.extend([
                "--max-elements-per-sec".into(),
                self.max_elements_per_sec.to_string(),
            ]);
        }
        args
    }
}

/// A running demo cluster and its control endpoint.
#[derive(Debug)]
pub struct Demo {
    local: LocalCluster,
    control_address: String,
}

impl Demo {
    /// Generates the dataset if needed (progress on stderr), then launches the cluster (waiting
    /// until the dispatcher listens) and serves control.
    pub async fn launch(options: &DemoOptions, launcher: Launcher) -> Result<Demo, TuiError> {
        options.validate()?;
        let params = GenerateParams {
            records: options.records,
            ..GenerateParams::default()
        };
        let data_dir = options.data_dir.clone();
        let spec = tokio::task::spawn_blocking(move || {
            cachew_fixtures::local::builtin_dataset(&data_dir, &params)
        })
        .await
        .map_err(|e| TuiError::Invalid(e.to_string()))?
        .map_err(|e| TuiError::Dataset(format!("{e:#}")))?;
        let run_dir = cachew_fixtures::local::new_run_dir(&options.runs_dir, "demo")
            .map_err(|e| TuiError::Invalid(format!("{e:#}")))?;
        let builder = cluster(options, &spec, &run_dir).launcher(launcher);
        let local = tokio::task::spawn_blocking(move || builder.start())
            .await
            .map_err(|e| TuiError::Invalid(e.to_string()))??;
        // Where each node serves /metrics, /healthz and /readyz (the dashboard owns the terminal).
        let _ = std::fs::write(
            local.root().join("metrics-endpoints.txt"),
            local.metrics_endpoints(),
        );
        let control_address = local
            .control_address()
            .ok_or_else(|| TuiError::Invalid("the demo serves no cluster control".into()))?
            .to_string();
        Ok(Demo {
            local,
            control_address,
        })
    }

    pub fn dispatcher(&self) -> &str {
        self.local.dispatcher()
    }

    pub fn control_address(&self) -> &str {
        &self.control_address
    }

    pub fn run_dir(&self) -> &Path {
        self.local.root()
    }

    /// (address, checkpoint directory) of every worker the demo runs, standbys started later
    /// included (each worker's `--work-dir` is `<run dir>/<name>`).
    pub fn checkpoint_dirs(&self) -> crate::feed::CheckpointDirs {
        let (cluster, run_dir) = (self.local.cluster().clone(), self.run_dir().to_path_buf());
        std::sync::Arc::new(move || {
            let nodes = cluster.lock().unwrap_or_else(|p| p.into_inner()).nodes();
            nodes
                .into_iter()
                .filter(|n| n.role == cachew_cluster::Role::Worker)
                .filter_map(|n| Some((n.listen?, run_dir.join(&n.name).join("checkpoints"))))
                .collect()
        })
    }

    /// Stops the control endpoint, then every node (SIGTERM, SIGKILL after `grace`), and reaps
    /// them. Returns the nodes' final states. Dropping the demo instead kills every node.
    pub async fn stop(self, grace: Duration) -> Vec<String> {
        tokio::task::spawn_blocking(move || {
            self.local
                .stop(grace)
                .iter()
                .map(|n| format!("{} {}", n.name, n.state.label()))
                .collect()
        })
        .await
        .unwrap_or_default()
    }
}

/// The cluster a demo runs: short heartbeats, its workers and standbys, one endless verifying
/// client, and cluster control.
pub fn cluster(options: &DemoOptions, pipeline: &Path, run_dir: &Path) -> LocalClusterBuilder {
    // The demo runs until stopped: the last 16 epochs' logs are kept, each checked first.
    let client = TrainingClient::new(pipeline, "demo", 0).flags([
        "--hash-log-keep".to_string(),
        "16".into(),
        "--verify".into(),
        "--step-time-ms".into(),
        options.step_time_ms.to_string(),
    ]);
    let autoscale = (options.autoscale > 0).then(|| {
        [
            "--autoscale",
            "--max-workers",
            &options.autoscale.to_string(),
            "--autoscale-period-ms",
            "2000",
            "--autoscale-stable-periods",
            "10",
        ]
        .map(String::from)
    });
    LocalCluster::builder(run_dir)
        .data_root(pipeline.parent().unwrap_or(pipeline))
        .liveness(options.heartbeat_interval_ms, options.worker_timeout_ms)
        .workers(options.workers)
        .standby(options.standby)
        .worker_flags(options.worker_args())
        .dispatcher_flags(autoscale.into_iter().flatten())
        .autoscale(options.autoscale > 0)
        .client(client)
        .control(true)
        .metrics(true)
}
