//! `cachew-worker`: runs the preprocessing pipeline on the splits the dispatcher assigns and
//! serves the produced elements to clients.
//!
//! # Layout
//! - [`engine`]: tasks, the bounded compute pool and the element buffers (no sockets).
//! - [`schedule`]: how the worker shares compute and task slots between jobs (pure decisions).
//! - [`service`]: the gRPC data service (`GetElements`).
//! - [`control`]: registration and heartbeats with the dispatcher.
//! - [`checkpoint`]: periodic checkpoints of task positions and recovery from them.
//! - [`cache`]: Cachew put / get of a split's prefix output.
//! - [`disk`]: reporting a full or failing checkpoint or cache disk.
//! - [`cli`]: flags and the process entry point used by the binary.
//!
//! [`run`] serves on an already-bound listener until `shutdown` resolves.

pub mod cache;
pub mod checkpoint;
pub mod cli;
pub mod control;
pub mod disk;
pub mod engine;
pub mod prepared;
pub mod schedule;
pub mod service;

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
}

/// Runs a worker: serves `listener` and talks to the dispatcher until `shutdown` completes or
/// the dispatcher stays unreachable at start-up.
pub async fn run(
    config: WorkerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let (engine, _threads) = Engine::start_with_cache(config.engine, config.cache.clone());
    let cache = Arc::new(engine::PreparedCache::default());
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
            )?;
            (restored, Some(c))
        }
    };
    let server = cachew_proto::server()
        .add_service(
            WorkerServer::new(service::WorkerService::new(engine.clone(), config.started))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(cachew_proto::incoming(listener), shutdown);
    let disks: Vec<_> = _checkpointer.iter().map(|c| c.alarm()).collect();
    tokio::select! {
        served = server => served.map_err(WorkerError::from),
        control = control::control_loop(config.control, engine.clone(), cache, restored, info, disks) => control,
    }
}
