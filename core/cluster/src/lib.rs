//! Cluster control: the one mechanism that starts, kills, pauses, resumes and restarts the real
//! processes of a local Cachew-rs cluster, and follows its dispatcher's status stream. The
//! scenario runner and the dashboard both use it.
//!
//! # Layout
//! - [`Launcher`]: how to start each role (the real binaries, or a multi-call host).
//! - [`Cluster`]: the running nodes: launch from a [`ClusterSpec`], signal, restart with the
//!   same identity (address and directories), add nodes, report state.
//! - [`LocalCluster`]: a whole local cluster from a builder: the nodes, their run directory and
//!   the control endpoint, in one handle.
//! - [`credentials`]: a secured local cluster's CA, certificates and role tokens, made at launch.
//! - [`free_port`]: loopback ports for nodes.
//! - [`netns`]: every node on a host of its own (a network namespace) and silent link cuts.
//! - [`control`]: the gRPC cluster-control endpoint other processes use to drive the nodes,
//!   through a [`backend::Backend`]: the local cluster ([`local_control::LocalBackend`]), or a
//!   deployment's orchestrator ([`docker::Compose`], [`kube::Kubernetes`]).
//! - [`follow`]: [`StatusFollower`], the dispatcher's status stream across restarts.
//!
//! It never leaves orphans: dropping a [`Cluster`] kills every node, and every node is started
//! with `CACHEW_PARENT_PID` so it exits by itself if its supervisor dies without cleaning up
//! (see `cachew_proto::daemon::exit_with_parent`).

pub mod backend;
mod cluster;
pub mod control;
pub mod credentials;
pub mod docker;
pub mod follow;
pub mod kube;
mod launcher;
mod local;
pub mod local_control;
pub mod netns;
mod role;
mod scaler;

pub use cluster::{Cluster, ClusterSpec, NodeInfo, NodeSpec, NodeState, Signal, free_port};
pub use follow::{FollowOptions, Followed, StatusFollower};
pub use launcher::Launcher;
pub use local::{LocalCluster, LocalClusterBuilder, TrainingClient};
pub use role::Role;
pub use scaler::{LocalScaler, pin_workers};

/// Errors of cluster control.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no node named `{0}`")]
    NoSuchNode(String),
    #[error(
        "cannot find the `{program}` binary (looked in {looked}); build it with `cargo build --workspace`"
    )]
    MissingBinary { program: String, looked: String },
    #[error("cannot start {node}: {source}")]
    Spawn {
        node: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot signal {node}: {reason}")]
    Signal { node: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// Environment variable a supervised node reads to know its supervisor's pid.
pub const PARENT_PID_ENV: &str = "CACHEW_PARENT_PID";
