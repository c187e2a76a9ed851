//! A whole local cluster in one call: [`LocalCluster::builder`] names the nodes and their flags,
//! [`LocalClusterBuilder::start`] launches the real processes through [`Cluster`] and, when asked,
//! serves cluster control for them (the dispatcher advertises the endpoint, so a dashboard
//! attached to it can drive the nodes). The dashboard's demo, `cachew-scenario up` and the
//! scenario runner all start their clusters here.
//!
//! The handle owns the nodes and the endpoint: [`LocalCluster::stop`], or dropping the handle,
//! stops the endpoint and leaves no process behind. It works for blocking and async owners alike
//! (the endpoint runs on a small runtime of its own), but [`LocalClusterBuilder::start`] and
//! [`LocalCluster::stop`] block: async code calls them from `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use cachew_proto::security::{self, Security, Side};

use crate::cluster::{Cluster, ClusterSpec, NodeInfo};
use crate::control::{ControlService, SharedCluster, serve};
use crate::credentials::Credentials;
use crate::launcher::Launcher;
use crate::scaler::LocalScaler;
use crate::{ClusterError, Result};

/// How long [`LocalCluster::stop`] lets cluster-control requests in flight finish.
const CONTROL_GRACE: Duration = Duration::from_secs(5);

/// A training client (`cachew-client`): one job, its hash log in `{dir}/hash-log` (the client's
/// own directory), and any further flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingClient {
    args: Vec<String>,
}

impl TrainingClient {
    /// Trains on the pipeline spec file `spec` as job `job` for `epochs` epochs (0: until
    /// stopped).
    pub fn new(spec: &Path, job: &str, epochs: u64) -> TrainingClient {
        let args = [
            "--spec",
            &spec.display().to_string(),
            "--job",
            job,
            "--epochs",
            &epochs.to_string(),
            "--hash-log",
            "{dir}/hash-log",
        ];
        TrainingClient {
            args: args.into_iter().map(String::from).collect(),
        }
    }

    /// Adds flags after the ones above.
    pub fn flags<S: Into<String>>(mut self, flags: impl IntoIterator<Item = S>) -> TrainingClient {
        self.args.extend(flags.into_iter().map(Into::into));
        self
    }

    /// The client's command line (it may use the placeholders of [`crate::NodeSpec`]).
    pub fn args(&self) -> &[String] {
        &self.args
    }
}

/// What [`LocalCluster`] starts: a dispatcher in the run directory, workers, standby workers
/// and clients, and optionally the cluster-control endpoint.
#[derive(Debug, Clone)]
#[must_use = "a builder starts nothing until `start` is called"]
pub struct LocalClusterBuilder {
    root: PathBuf,
    launcher: Option<Launcher>,
    workers: u32,
    standby: u32,
    dispatcher_flags: Vec<String>,
    worker_flags: Vec<String>,
    clients: Vec<Vec<String>>,
    control: bool,
    hosts: bool,
    metrics: bool,
    autoscale: bool,
    secure: bool,
}

impl LocalClusterBuilder {
    /// How the nodes are started (default: [`Launcher::locate`], the real binaries).
    pub fn launcher(mut self, launcher: Launcher) -> Self {
        self.launcher = Some(launcher);
        self
    }

    /// Workers that take splits from the start (default 1).
    pub fn workers(mut self, n: u32) -> Self {
        self.workers = n;
        self
    }

    /// Standby workers, promoted when a worker dies (default 0).
    pub fn standby(mut self, n: u32) -> Self {
        self.standby = n;
        self
    }

    /// Adds dispatcher flags (after `--listen`, `--work-dir` and `--control-address`).
    pub fn dispatcher_flags<S: Into<String>>(mut self, flags: impl IntoIterator<Item = S>) -> Self {
        self.dispatcher_flags
            .extend(flags.into_iter().map(Into::into));
        self
    }

    /// The dispatcher's liveness settings: the workers' heartbeat interval and how long a
    /// silent worker lives.
    pub fn liveness(self, heartbeat_interval_ms: u64, worker_timeout_ms: u64) -> Self {
        self.dispatcher_flags([
            "--heartbeat-interval-ms".to_string(),
            heartbeat_interval_ms.to_string(),
            "--worker-timeout-ms".into(),
            worker_timeout_ms.to_string(),
        ])
    }

    /// Adds flags of every worker, standbys started later through cluster control included.
    pub fn worker_flags<S: Into<String>>(mut self, flags: impl IntoIterator<Item = S>) -> Self {
        self.worker_flags.extend(flags.into_iter().map(Into::into));
        self
    }

    /// Lets the dispatcher and every worker read dataset files under `dir` (`--data-root`; may
    /// be given several times). Without it they read only under their working directory.
    pub fn data_root(self, dir: &Path) -> Self {
        let flags = ["--data-root".to_string(), dir.display().to_string()];
        self.dispatcher_flags(flags.clone()).worker_flags(flags)
    }

    /// Adds a client (`client-1`, `client-2`, ... in the order added).
    pub fn client(mut self, client: TrainingClient) -> Self {
        self.clients.push(client.args);
        self
    }

    /// Whether to serve cluster control (default: no).
    pub fn control(mut self, serve: bool) -> Self {
        self.control = serve;
        self
    }

    /// Whether every node runs on a host of its own: a network namespace with its own address
    /// (see [`crate::netns`]; needs root). Default: no, every node on loopback.
    pub fn hosts(mut self, hosts: bool) -> Self {
        self.hosts = hosts;
        self
    }

    /// Whether every node serves `/metrics`, `/healthz` and `/readyz` (`--metrics-listen`;
    /// where is in each node's `NodeInfo::metrics`). Default: no.
    pub fn metrics(mut self, metrics: bool) -> Self {
        self.metrics = metrics;
        self
    }

    /// Whether this process starts workers when the dispatcher's autoscaler wants more
    /// ([`LocalScaler`]; the dispatcher needs `--autoscale`, or a pin). Default: no.
    pub fn autoscale(mut self, on: bool) -> Self {
        self.autoscale = on;
        self
    }

    /// Whether every connection is mutual TLS and every call needs its role's token (default:
    /// no). The credentials are made under `ROOT/tls` ([`Credentials`]); this process takes the
    /// launcher's (admin) share for as long as the cluster runs, so one secured cluster per
    /// process at a time.
    pub fn secure(mut self, on: bool) -> Self {
        self.secure = on;
        self
    }

    /// Binds the control endpoint (if asked), launches the cluster (waiting until the
    /// dispatcher accepts connections), then serves control. Blocks.
    pub fn start(self) -> Result<LocalCluster> {
        let listener = if self.control {
            Some(std::net::TcpListener::bind("127.0.0.1:0")?)
        } else {
            None
        };
        let control_address = match &listener {
            Some(l) => Some(l.local_addr()?.to_string()),
            None => None,
        };
        let mut dispatcher_args = Vec::new();
        if let Some(address) = &control_address {
            dispatcher_args.extend(["--control-address".to_string(), address.clone()]);
        }
        dispatcher_args.extend(self.dispatcher_flags);
        let mut worker_flags = self.worker_flags;
        let mut clients = self.clients;
        let mut made = None;
        let security = if self.secure {
            let credentials = Credentials::create(&self.root.join("tls"), self.hosts)?;
            dispatcher_args.extend(credentials.dispatcher().to_args());
            worker_flags.extend(credentials.worker().to_args());
            for client in &mut clients {
                client.extend(credentials.client().to_args());
            }
            let launcher = Security::load(&credentials.launcher(), Side::Serves)
                .map_err(|e| ClusterError::Invalid(format!("cluster credentials: {e}")))?;
            made = Some(credentials);
            Some(SecurityGuard(Some(security::replace(launcher))))
        } else {
            None
        };
        let spec = ClusterSpec {
            root: self.root,
            dispatcher_args,
            workers: self.workers,
            standby: self.standby,
            worker_args: worker_flags.clone(),
            clients,
            hosts: self.hosts,
            metrics: self.metrics,
        };
        let launcher = match self.launcher {
            Some(l) => l,
            None => Launcher::locate()?,
        };
        let cluster: SharedCluster = Arc::new(Mutex::new(Cluster::launch(&spec, launcher)?));
        let dispatcher = lock(&cluster).dispatcher().to_string();
        let control = match listener {
            Some(l) => Some(ControlEndpoint::serve(
                l,
                ControlService::new(cluster.clone(), worker_flags),
            )?),
            None => None,
        };
        let scaler = if self.autoscale {
            Some(LocalScaler::spawn(
                cluster.clone(),
                dispatcher.clone(),
                spec.worker_args.clone(),
            )?)
        } else {
            None
        };
        Ok(LocalCluster {
            cluster,
            dispatcher,
            root: spec.root,
            control,
            scaler,
            credentials: made,
            _security: security,
        })
    }
}

/// A running local cluster (see the module doc). Dropping it kills every node.
#[derive(Debug)]
pub struct LocalCluster {
    cluster: SharedCluster,
    dispatcher: String,
    root: PathBuf,
    control: Option<ControlEndpoint>,
    scaler: Option<LocalScaler>,
    credentials: Option<Credentials>,
    /// A secured cluster's hold on this process's security (dropped last).
    _security: Option<SecurityGuard>,
}

/// Puts back the process's security settings a secured cluster replaced, when dropped.
#[derive(Debug)]
struct SecurityGuard(Option<Arc<Security>>);

impl Drop for SecurityGuard {
    fn drop(&mut self) {
        if let Some(previous) = self.0.take() {
            security::restore(previous);
        }
    }
}

impl LocalCluster {
    /// A cluster whose run directory (logs and one directory per node) is `root`.
    pub fn builder(root: impl Into<PathBuf>) -> LocalClusterBuilder {
        LocalClusterBuilder {
            root: root.into(),
            launcher: None,
            workers: 1,
            standby: 0,
            dispatcher_flags: Vec::new(),
            worker_flags: Vec::new(),
            clients: Vec::new(),
            control: false,
            hosts: false,
            metrics: false,
            autoscale: false,
            secure: false,
        }
    }

    /// One line per node that serves metrics: `NAME http://ADDRESS/metrics`.
    pub fn metrics_endpoints(&self) -> String {
        lock(&self.cluster)
            .nodes()
            .into_iter()
            .filter_map(|n| Some(format!("{} http://{}/metrics\n", n.name, n.metrics?)))
            .collect()
    }

    /// The dispatcher's address.
    pub fn dispatcher(&self) -> &str {
        &self.dispatcher
    }

    /// The cluster-control endpoint's address, if it is served.
    pub fn control_address(&self) -> Option<&str> {
        self.control.as_ref().map(|c| c.address.as_str())
    }

    /// The nodes, shared with the control endpoint.
    pub fn cluster(&self) -> &SharedCluster {
        &self.cluster
    }

    /// A secured cluster's credentials (none unless [`LocalClusterBuilder::secure`]).
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// The run directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What cluster control reports about node `name`.
    pub fn info(&self, name: &str) -> Result<NodeInfo> {
        lock(&self.cluster).info(name)
    }

    /// Stops the control endpoint (requests in flight get a few seconds), then every node
    /// (SIGTERM, SIGKILL after `grace`), and reaps them. Returns the nodes' final states. Blocks.
    pub fn stop(mut self, grace: Duration) -> Vec<NodeInfo> {
        // No worker may be started while the cluster stops.
        drop(self.scaler.take());
        if let Some(control) = &mut self.control {
            control.stop(CONTROL_GRACE);
        }
        let mut cluster = lock(&self.cluster);
        cluster.shutdown(grace);
        cluster.nodes()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        drop(self.scaler.take());
        if let Some(control) = &mut self.control {
            control.stop(Duration::ZERO);
        }
        // The last owner of the cluster kills every node when it drops; make sure that happens
        // even if a control request still holds a clone.
        lock(&self.cluster).kill_all();
    }
}

fn lock(cluster: &SharedCluster) -> std::sync::MutexGuard<'_, Cluster> {
    cluster.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cluster-control endpoint of a [`LocalCluster`], served on a one-thread runtime of its
/// own, so that blocking and async owners can both start and stop it.
#[derive(Debug)]
struct ControlEndpoint {
    address: String,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<oneshot::Sender<()>>,
    stopped: std::sync::mpsc::Receiver<()>,
}

impl ControlEndpoint {
    fn serve(listener: std::net::TcpListener, service: ControlService) -> Result<ControlEndpoint> {
        let address = listener.local_addr()?.to_string();
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cluster-control")
            .enable_all()
            .build()?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (stopped_tx, stopped) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let shutdown = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = serve(service, listener, shutdown).await {
                tracing::warn!("cluster-control endpoint failed: {e}");
            }
            let _ = stopped_tx.send(());
        });
        Ok(ControlEndpoint {
            address,
            runtime: Some(runtime),
            stop: Some(stop),
            stopped,
        })
    }

    /// Stops serving: requests in flight get up to `grace` to finish, then are dropped.
    fn stop(&mut self, grace: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            if !grace.is_zero() {
                let _ = self.stopped.recv_timeout(grace);
            }
        }
        // Never waits, so it may run in an async context too (a drop inside a runtime).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
