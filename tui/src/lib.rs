//! `cachew-tui`: the live cluster dashboard, and the launcher of the local demo cluster.
//!
//! # Layout
//! - [`model`]: the dashboard's state, changed only by updates from the feeds, clock ticks and
//!   key presses; no I/O, no clock reads. Keys become [`model::Effect`]s for the caller.
//! - [`view`]: a pure function of the model into a ratatui buffer, one `render_*` per panel
//!   (nodes, job and epochs, splits, checkpoints, journal, events), one file per panel group
//!   under `view/`, snapshot-tested.
//! - [`keys`]: the key table (footer, help screen, README) and key-press mapping.
//! - [`feed`]: background tasks that follow the dispatcher's `WatchStatus` stream (reconnecting
//!   with backoff) and poll cluster control's `ListNodes`, and the `Act` call behind the keys.
//! - [`app`]: the loop: a frame tick, terminal events and feed updates, `select!`ed; performs
//!   effects.
//! - [`demo`]: `cachew-tui demo`: dataset, local cluster and cluster-control endpoint.
//! - [`cli`]: flags and the process entry point; the hidden `node ROLE ARGS` multi-call
//!   subcommand runs a dispatcher, worker or client so one binary can start a whole cluster.
//! - [`fmt`]: short renderings of numbers, sizes and times.

pub mod app;
pub mod cli;
pub mod demo;
pub mod feed;
pub mod fmt;
pub mod health;
pub mod keys;
pub mod model;
pub mod view;

pub use model::{Model, Update};

/// Errors of the dashboard and the demo launcher.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("terminal: {0}")]
    Terminal(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Cluster(#[from] cachew_cluster::ClusterError),
    #[error("{0}")]
    Dataset(String),
    #[error("{0}")]
    Invalid(String),
}
