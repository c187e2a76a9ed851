//! The local cluster as a cluster-control backend: [`LocalBackend`] drives a [`Cluster`] this
//! process launched (signals to its processes, cuts on its [`Network`](crate::netns::Network)),
//! and the conversions of its nodes to the wire.

use std::sync::{Arc, Mutex};

use cachew_proto::v1;

use crate::backend::{Backend, Targets};
use crate::cluster::{Cluster, NodeInfo, NodeState, Signal};
use crate::netns::{Cut, Direction};
use crate::role::Role;

/// A cluster shared between its owner and the control endpoint.
pub type SharedCluster = Arc<Mutex<Cluster>>;

pub fn node_to_wire(n: &NodeInfo) -> v1::NodeInfo {
    v1::NodeInfo {
        name: n.name.clone(),
        role: n.role.to_wire().into(),
        address: n.listen.clone().unwrap_or_default(),
        pid: n.pid.unwrap_or(0),
        state: process_state(n.state).into(),
        exit_code: match n.state {
            NodeState::Exited { code, .. } => code,
            _ => None,
        },
        signal: match n.state {
            NodeState::Exited { signal, .. } => signal,
            _ => None,
        },
        restarts: n.restarts,
        standby: n.standby,
        log_path: n.log.display().to_string(),
        disconnected: false,
    }
}

/// The wire name of a node's process state.
pub fn process_state(state: NodeState) -> v1::ProcessState {
    match state {
        NodeState::NotStarted => v1::ProcessState::NotStarted,
        NodeState::Running => v1::ProcessState::Running,
        NodeState::Paused => v1::ProcessState::Paused,
        NodeState::Exited {
            signal: Some(_), ..
        } => v1::ProcessState::Killed,
        NodeState::Exited { .. } => v1::ProcessState::Exited,
    }
}

/// Applies one action to its targets; returns errors per node.
pub fn act(
    cluster: &mut Cluster,
    action: v1::Action,
    targets: &Targets,
    standby_args: &[String],
) -> Vec<String> {
    let targets = targets.names(cluster);
    let mut errors = Vec::new();
    if action == v1::Action::StartStandby {
        if let Err(e) = cluster.add_standby(standby_args) {
            errors.push(e.to_string());
        }
        return errors;
    }
    // Restart the dispatcher first and kill it last, so workers and clients see a consistent
    // order when a whole role set is acted upon.
    let mut ordered = targets;
    ordered.sort_by_key(|name| {
        let is_dispatcher = cluster.info(name).is_ok_and(|n| n.role == Role::Dispatcher);
        match action {
            v1::Action::Restart => !is_dispatcher,
            _ => is_dispatcher,
        }
    });
    for name in ordered {
        let result = match action {
            v1::Action::Kill => cluster.kill(&name, Signal::Kill),
            v1::Action::Terminate => cluster.kill(&name, Signal::Term),
            v1::Action::Pause => cluster.pause(&name),
            v1::Action::Resume => cluster.resume(&name),
            v1::Action::Restart => cluster.restart(&name),
            v1::Action::Disconnect | v1::Action::Connect => link(cluster, action, &name),
            v1::Action::Scale => Err(crate::ClusterError::Invalid(
                "a local cluster does not scale by count".into(),
            )),
            v1::Action::StartStandby | v1::Action::Unspecified => {
                Err(crate::ClusterError::Invalid("no action given".into()))
            }
        };
        if let Err(e) = result {
            errors.push(format!("{name}: {e}"));
        }
    }
    errors
}

/// DISCONNECT cuts a node's whole link on the cluster's network (both ways); CONNECT lifts every
/// cut of the node. A cluster on loopback has no network to cut.
fn link(cluster: &mut Cluster, action: v1::Action, name: &str) -> crate::Result<()> {
    cluster.info(name)?;
    let net = cluster.network_mut().ok_or_else(|| {
        crate::ClusterError::Invalid(
            "the cluster runs on loopback: network actions need every node on a host of its own"
                .into(),
        )
    })?;
    if action == v1::Action::Disconnect {
        net.cut(Cut::Node {
            node: name.to_string(),
            direction: Direction::Both,
        })
    } else {
        net.heal(Some(name))
    }
}

/// The nodes of a [`Cluster`](crate::Cluster) this process launched, shared with its owner.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    cluster: SharedCluster,
    /// Extra worker flags for standby workers started through the endpoint.
    standby_args: Vec<String>,
}

impl LocalBackend {
    pub fn new(cluster: SharedCluster, standby_args: Vec<String>) -> LocalBackend {
        LocalBackend {
            cluster,
            standby_args,
        }
    }
}

/// The wire form of the local cluster's nodes (a node is disconnected while its whole link is
/// cut on the cluster's [`Network`](crate::netns::Network)).
fn local_nodes(cluster: &mut crate::Cluster) -> Vec<v1::NodeInfo> {
    let cut: Vec<String> = cluster
        .network_mut()
        .map(|net| {
            net.cuts()
                .iter()
                .filter_map(|c| match c {
                    Cut::Node {
                        node,
                        direction: Direction::Both,
                    } => Some(node.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    cluster
        .nodes()
        .iter()
        .map(|n| {
            let mut wire = node_to_wire(n);
            wire.disconnected = cut.contains(&n.name) && n.state != NodeState::NotStarted;
            wire
        })
        .collect()
}

#[tonic::async_trait]
impl Backend for LocalBackend {
    async fn list(&self) -> Result<Vec<v1::NodeInfo>, String> {
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = cluster.lock().unwrap_or_else(|p| p.into_inner());
            local_nodes(&mut c)
        })
        .await
        .map_err(|e| e.to_string())
    }

    async fn act(&self, action: v1::Action, targets: &Targets, _count: u32) -> Vec<String> {
        if action == v1::Action::Scale {
            return vec![
                "scale: a local cluster does not scale by count (start a standby, or drain a \
                 worker)"
                    .into(),
            ];
        }
        let cluster = self.cluster.clone();
        let standby_args = self.standby_args.clone();
        let targets = targets.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = cluster.lock().unwrap_or_else(|p| p.into_inner());
            act(&mut c, action, &targets, &standby_args)
        })
        .await
        .unwrap_or_else(|e| vec![e.to_string()])
    }
}
