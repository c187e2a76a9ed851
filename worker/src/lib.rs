//! `cachew-worker`: runs the preprocessing pipeline on the splits the dispatcher assigns and
//! serves the produced elements to clients.
//!
//! # Layout
//! - [`task`]: the vocabulary of tasks (keys, assignments, reports, fetch results).
//! - [`engine`]: tasks, the bounded compute pool and the element buffers (no sockets).
//! - [`ledger`]: where every produced element went (served, discarded, buffered).
//! - [`metrics`]: the worker's Prometheus metrics and readiness (`--metrics-listen`).
//! - [`schedule`]: how the worker shares compute and task slots between jobs (pure decisions).
//! - [`service`]: the gRPC data service (`GetElements`).
//! - [`control`]: registration and heartbeats with the dispatcher.
//! - [`drain`]: graceful shutdown (SIGTERM, or the dispatcher's `drain`): hand the splits over,
//!   then exit within a bounded time.
//! - [`checkpoint`]: periodic checkpoints of task positions and recovery from them.
//! - [`cache`]: Cachew put / get of a split's prefix output.
//! - [`disk`]: reporting a full or failing checkpoint or cache disk.
//! - [`cli`]: flags and the process entry point used by the binary.
//!
//! [`run`] serves on an already-bound listener until `shutdown` resolves and the worker has
//! drained (or the drain timed out), or until the dispatcher drained it.

pub mod admission;
pub mod cache;
pub mod checkpoint;
pub mod cli;
pub mod control;
pub mod disk;
pub mod drain;
pub mod engine;
pub mod ledger;
pub mod metrics;
pub mod prepared;
pub mod schedule;
pub mod service;
pub mod task;

/// A size-limited tmpfs for tests of a full disk (shared with the store crate's tests).
#[cfg(test)]
#[path = "../../core/store/tests/common/tmpfs.rs"]
mod test_tmpfs;

use std::future::Future;
use std::sync::Arc;

use cachew_proto::{MAX_MESSAGE_BYTES, WorkerServer};
use tokio::net::TcpListener;

pub use control::ControlConfig;
pub use engine::{Engine, EngineConfig};

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("dispatcher refused: {0}")]
    Dispatcher(String),
    #[error("pipeline: {0}")]
    Pipeline(String),
    /// A task this worker will never run as assigned (a spec naming files outside its
    /// `--data-root`, files that differ from the dispatcher's, a pipeline it cannot build):
    /// final, unlike the other errors of preparing a task.
    #[error("{0}")]
    Refused(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<cachew_proto::ConnectError> for WorkerError {
    fn from(e: cachew_proto::ConnectError) -> WorkerError {
        match e {
            cachew_proto::ConnectError::BadAddress(e) => WorkerError::Config(e.to_string()),
            e @ cachew_proto::ConnectError::Unreachable { .. } => {
                WorkerError::Unreachable(e.to_string())
            }
        }
    }
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub control: ControlConfig,
    pub engine: EngineConfig,
    /// Where checkpoints go; None disables them (a restarted worker then starts empty).
    pub checkpoint_dir: Option<std::path::PathBuf>,
    pub checkpoint_interval: std::time::Duration,
    /// When the process started (for start-up latency logs).
    pub started: std::time::Instant,
    /// Where the prefix cache lives (shared by the workers of a host, or on a shared directory).
    pub cache: Option<cache::CacheSettings>,
    /// How long a drain may take before the worker stops anyway (`--drain-timeout-ms`).
    pub drain_timeout: std::time::Duration,
    /// Where the worker's metrics and readiness go (component `worker`); served over HTTP only
    /// if its owner serves it (`--metrics-listen`).
    pub metrics: cachew_metrics::Exporter,
    /// The data root and the decode budget (`--data-root`, `--max-decode-pixels`).
    pub inputs: prepared::InputBounds,
}

/// Runs a worker: serves `listener` and talks to the dispatcher. When `shutdown` completes, or
/// the dispatcher says to drain, the worker drains (see [`drain`]) and returns, within
/// `drain_timeout` even if the dispatcher does not answer. Fails when the dispatcher stays
/// unreachable at start-up.
pub async fn run(
    config: WorkerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let metrics = metrics::WorkerMetrics::register(&config.metrics);
    // Per-op timing only when someone can read it (see `Exporter::timing`).
    let ops: Arc<dyn cachew_pipeline::observe::OpObserver + Send + Sync> =
        match config.metrics.timing() {
            true => metrics.ops.clone(),
            false => Arc::new(cachew_pipeline::observe::NoObserver),
        };
    let (engine, _threads) = Engine::start_observed(
        config.engine,
        config.cache.clone(),
        ops,
        metrics.cache.clone(),
    );
    metrics::WorkerMetrics::watch_engine(&config.metrics, engine.accounts_source());
    let cache = Arc::new(engine::PreparedCache::new(config.inputs.clone()));
    let info: checkpoint::SharedInfo = Arc::default();
    let (restored, _checkpointer) = match &config.checkpoint_dir {
        None => (Vec::new(), None),
        Some(dir) => {
            let (dir, address) = (dir.clone(), config.control.advertise.clone());
            let (store, restored) =
                tokio::task::spawn_blocking(move || checkpoint::open(&dir, &address))
                    .await
                    .map_err(|e| WorkerError::Checkpoint(e.to_string()))??;
            let c = checkpoint::Checkpointer::start(
                store,
                engine.clone(),
                config.control.advertise.clone(),
                config.checkpoint_interval,
                info.clone(),
                metrics.checkpoint.clone(),
            )?;
            (restored, Some(c))
        }
    };
    let drain = drain::Drain::new(config.drain_timeout);
    {
        let drain = drain.clone();
        tokio::spawn(async move {
            shutdown.await;
            drain.request(drain::Origin::Signal);
        });
    }
    // The data service stops once the drain is over (or timed out): in-flight fetches finish.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = cachew_proto::server()?
        .add_service(
            WorkerServer::new(
                service::WorkerService::new(engine.clone(), config.started)
                    .with_metrics(metrics.fetch.clone()),
            )
            .max_decoding_message_size(cachew_proto::limits::MAX_WORKER_REQUEST_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(cachew_proto::incoming(listener), async {
            let _ = stopped.await;
        });
    let disks: Vec<_> = _checkpointer.iter().map(|c| c.alarm()).collect();
    let parts = control::ControlParts {
        engine: engine.clone(),
        cache,
        restored,
        checkpoint: info,
        disks,
        drain: drain.clone(),
        lifecycle: metrics.lifecycle.clone(),
    };
    let control = control::control_loop(config.control, parts);
    tokio::pin!(server);
    let ended = tokio::select! {
        served = &mut server => return served.map_err(WorkerError::from),
        control = control => {
            metrics.lifecycle.left();
            control
        }
        _ = drain.expired() => {
            metrics.lifecycle.left();
            tracing::warn!(
                timeout_ms = drain.timeout().as_millis() as u64,
                "the drain did not finish in time (dispatcher unreachable?); stopping anyway"
            );
            Ok(())
        }
    };
    let _ = stop.send(());
    // Fetches in flight get what is left of the drain's time (at least a moment) to finish.
    let grace = drain.remaining().max(std::time::Duration::from_millis(200));
    match tokio::time::timeout(grace, &mut server).await {
        Ok(served) => served?,
        Err(_) => tracing::warn!("fetches still in flight at exit"),
    }
    ended
}
