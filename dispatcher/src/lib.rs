//! `cachew-dispatcher`: hands out splits of datasets to workers, tells clients where each split
//! is served, detects dead workers and fails their splits over, and streams cluster status.
//!
//! # Layout
//! Dependencies run one way, from the pure modules to the RPC surface:
//! - [`state`]: the pure state machine (workers, datasets, jobs, consumers, assignments, leases);
//!   its `apply` is the only way state changes. [`events`]: the event log and every event kind
//!   and worker state name.
//! - `soft`: soft facts (heartbeat times, reported progress, cache measurements, disks).
//! - `policy`: timed and measured decisions (liveness, the `auto` cache choice, retention) as
//!   pure functions that return commands.
//! - [`service`]: the service core: one lock around state, soft facts and events; `execute`
//!   applies a command, journals it and publishes its events; it runs the liveness and retention
//!   policies.
//!   `status` builds the `WatchStatus` snapshot, `datasets` indexes specs, `wire` converts to
//!   and from the protocol, `reconcile` checks a worker's tasks against its assignments.
//! - `workers` and `clients`: what a worker's registration and heartbeats and a client's job,
//!   heartbeats and release do; `long_poll` is the wait both heartbeats share; `rpc` is the
//!   `cachew_proto::Dispatcher` impl, thin handlers over them.
//! - `autoscale`: the autoscaler's periods (measure, decide through `policy::autoscale`, drain
//!   the workers a smaller fleet leaves over) and the operator's pin; `scale_command` runs
//!   `--scale-command` when the replicas wanted change.
//! - [`durable`]: the journal of commands (group commit, replay, snapshots).
//! - `config`: [`DispatcherConfig`]. [`cli`]: flags and the process entry point used by the
//!   binary.
//!
//! [`run`] serves on an already-bound listener until `shutdown` resolves, so tests can run many
//! dispatchers in one process on port 0.

mod autoscale;
pub mod cli;
mod clients;
mod config;
mod datasets;
mod drain;
pub mod durable;
pub mod events;
mod long_poll;
mod metrics;
mod policy;
mod reconcile;
mod rpc;
mod scale_command;
pub mod service;
mod soft;
pub mod state;
mod status;
mod wire;
mod workers;

use std::future::Future;

use cachew_proto::{DispatcherServer, MAX_MESSAGE_BYTES};
use tokio::net::TcpListener;

pub use autoscale::{Autoscaler, MAX_PINNED_WORKERS};
pub use config::{AutoscaleConfig, DispatcherConfig};
pub use policy::autoscale::{Decision, Sample, ScalePolicy, Scaler};
pub use service::DispatcherService;

/// Errors that stop the dispatcher.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("journal: {0}")]
    Journal(String),
}

/// Serves the dispatcher on `listener` until `shutdown` completes.
/// With `journal_dir`, every state change is journaled there first and the state is replayed
/// from it at start.
pub async fn run(
    config: DispatcherConfig,
    journal_dir: Option<std::path::PathBuf>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DispatcherError> {
    let service = match journal_dir {
        None => DispatcherService::new(config, state::State::default()),
        Some(dir) => {
            config
                .metrics
                .health()
                .set_not_ready("replaying the journal");
            let (journal, state, summary) =
                tokio::task::spawn_blocking(move || durable::open(&dir, durable::SNAPSHOT_EVERY))
                    .await
                    .map_err(|e| DispatcherError::Journal(e.to_string()))?
                    .map_err(DispatcherError::Journal)?;
            DispatcherService::with_journal(config, state, journal, summary)
        }
    };
    serve(service, listener, shutdown).await
}

/// How long calls in flight get to finish once the dispatcher is told to stop.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Serves an existing service (with restored state) on `listener`.
pub async fn serve(
    service: DispatcherService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DispatcherError> {
    let tick = service.liveness_tick();
    let checker = service.clone();
    let liveness = tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            checker.check_liveness();
        }
    });
    let retention_tick = service.retention_tick();
    let keeper = service.clone();
    let retention = tokio::spawn(async move {
        let mut interval = tokio::time::interval(retention_tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            keeper.check_retention();
        }
    });
    let scaling = service.config().autoscale.clone();
    let scaler = service.clone();
    let autoscale = tokio::spawn(async move {
        let mut interval = tokio::time::interval(scaling.period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut auto = Autoscaler::default();
        loop {
            interval.tick().await;
            scaler.autoscale_tick(&mut auto, std::time::Instant::now());
        }
    });
    let command = service
        .config()
        .autoscale
        .scale_command
        .clone()
        .map(|template| {
            let timeout = service.config().autoscale.command_timeout;
            tokio::spawn(service.clone().run_scale_command(template, timeout))
        });
    let watcher = service.clone();
    let health = service.config().metrics.clone();
    health.health().set_ready();
    // Status streams never end and long polls last seconds: a stop lets them finish for
    // SHUTDOWN_GRACE, then closes them. Every acknowledged change is durable already.
    let (stopping, mut stop_seen) = tokio::sync::watch::channel(false);
    let server = cachew_proto::server()?
        .add_service(
            DispatcherServer::new(service)
                .max_decoding_message_size(cachew_proto::limits::MAX_DISPATCHER_REQUEST_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(cachew_proto::incoming(listener), async move {
            let _ = stop_seen.wait_for(|s| *s).await;
        });
    let result = tokio::select! {
        served = server => served.map_err(DispatcherError::from),
        reason = watcher.journal_failed() => Err(DispatcherError::Journal(reason)),
        () = async move {
            shutdown.await;
            health.health().set_not_ready("stopping");
            let _ = stopping.send(true);
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::info!(
                "stopped; calls still open after {} ms (status streams, long polls) were closed",
                SHUTDOWN_GRACE.as_millis()
            );
            Ok(())
        }
    };
    liveness.abort();
    retention.abort();
    autoscale.abort();
    if let Some(c) = command {
        c.abort();
    }
    result
}
