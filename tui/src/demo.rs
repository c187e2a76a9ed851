//! `cachew-tui demo`: the built-in dataset on a local cluster this process supervises (a
//! dispatcher with short heartbeats so failures show quickly, workers, standby workers and a
//! training client that loops over epochs and verifies each one), plus the cluster-control
//! endpoint the dashboard's keys go through.
//!
//! It owns the nodes: [`Demo::stop`] (or dropping the [`Demo`]) leaves no process behind, and
//! every node exits by itself if this process dies (cluster control starts them with
//! `CACHEW_PARENT_PID`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachew_cluster::control::{ControlService, SharedCluster, serve};
use cachew_cluster::{Cluster, ClusterSpec, Launcher};
use cachew_fixtures::GenerateParams;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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
        match self.worker_threads {
            Some(n) => vec!["--threads".into(), n.to_string()],
            None => Vec::new(),
        }
    }
}

/// A running demo cluster and its control endpoint.
#[derive(Debug)]
pub struct Demo {
    cluster: SharedCluster,
    dispatcher: String,
    control_address: String,
    run_dir: PathBuf,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Demo {
    /// Generates the dataset if needed (progress on stderr), binds the control endpoint, launches
    /// the cluster (waiting until the dispatcher listens) and serves control.
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let control_address = listener.local_addr()?.to_string();
        let spec = cluster_spec(options, &spec, &run_dir, &control_address);
        let cluster = tokio::task::spawn_blocking(move || Cluster::launch(&spec, launcher))
            .await
            .map_err(|e| TuiError::Invalid(e.to_string()))??;
        let dispatcher = cluster.dispatcher().to_string();
        let cluster: SharedCluster = Arc::new(Mutex::new(cluster));
        let service = ControlService::new(cluster.clone(), options.worker_args());
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = serve(service, listener, shutdown).await {
                tracing::warn!("cluster-control endpoint failed: {e}");
            }
        });
        Ok(Demo {
            cluster,
            dispatcher,
            control_address,
            run_dir,
            stop_server: Some(stop_server),
            server: Some(server),
        })
    }

    pub fn dispatcher(&self) -> &str {
        &self.dispatcher
    }

    pub fn control_address(&self) -> &str {
        &self.control_address
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// (address, checkpoint directory) of every worker the demo runs, standbys started later
    /// included (each worker's `--work-dir` is `<run dir>/<name>`).
    pub fn checkpoint_dirs(&self) -> crate::feed::CheckpointDirs {
        let (cluster, run_dir) = (self.cluster.clone(), self.run_dir.clone());
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
    /// them. Returns the nodes' final states.
    pub async fn stop(mut self, grace: Duration) -> Vec<String> {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = cluster.lock().unwrap_or_else(|p| p.into_inner());
            c.shutdown(grace);
            c.nodes()
                .iter()
                .map(|n| format!("{} {}", n.name, n.state.label()))
                .collect()
        })
        .await
        .unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        // The last owner of the cluster kills every node when it drops; make sure that happens
        // even if the control server still holds a clone.
        let mut c = self.cluster.lock().unwrap_or_else(|p| p.into_inner());
        c.kill_all();
    }
}

/// The cluster a demo runs.
pub fn cluster_spec(
    options: &DemoOptions,
    pipeline: &Path,
    run_dir: &Path,
    control_address: &str,
) -> ClusterSpec {
    let client = vec![
        "--spec".to_string(),
        pipeline.display().to_string(),
        "--job".into(),
        "demo".into(),
        "--epochs".into(),
        "0".into(),
        "--hash-log".into(),
        "{dir}/hash-log".into(),
        // The demo runs until stopped: the last 16 epochs' logs are kept, each checked first.
        "--hash-log-keep".into(),
        "16".into(),
        "--verify".into(),
        "--step-time-ms".into(),
        options.step_time_ms.to_string(),
    ];
    ClusterSpec {
        root: run_dir.to_path_buf(),
        dispatcher_args: vec![
            "--control-address".into(),
            control_address.to_string(),
            "--heartbeat-interval-ms".into(),
            options.heartbeat_interval_ms.to_string(),
            "--worker-timeout-ms".into(),
            options.worker_timeout_ms.to_string(),
        ],
        workers: options.workers,
        standby: options.standby,
        worker_args: options.worker_args(),
        clients: vec![client],
    }
}
