//! The cluster-control endpoint: other processes (the dashboard, a second runner) drive the
//! nodes of a cluster over gRPC: a cluster this process launched ([`LocalBackend`]), or a
//! deployment through its orchestrator ([`Compose`](crate::docker::Compose),
//! [`Kubernetes`](crate::kube::Kubernetes)). Each is a [`Backend`].

use std::future::Future;
use std::sync::{Arc, Mutex};

use cachew_proto::{names, v1};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::backend::{Backend, LocalBackend, SharedBackend};
use crate::cluster::{Cluster, NodeInfo, NodeState, Signal};
use crate::netns::{Cut, Direction};
use crate::role::Role;

/// Drains a worker through the dispatcher's admin `DrainWorker` RPC (by id, or by its address
/// when the id is 0): its splits move at once and its next heartbeat tells it to drain and
/// exit. It needs no cluster control, so it also works on a cluster this process did not
/// launch (the dashboard's drain key, the scenario step `drain`).
pub async fn drain_worker(
    dispatcher: &str,
    request: v1::DrainWorkerRequest,
    timeout: std::time::Duration,
) -> Result<v1::DrainWorkerResponse, String> {
    let endpoint = cachew_proto::endpoint(dispatcher).map_err(|e| e.to_string())?;
    let mut client = cachew_proto::DispatcherClient::new(endpoint.connect_lazy());
    match tokio::time::timeout(timeout, client.drain_worker(request)).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(crate::follow::status_reason(&status)),
        Err(_) => Err(format!(
            "the dispatcher did not answer in {} s",
            timeout.as_secs()
        )),
    }
}

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

/// A node's process state as cluster control reported it; `None` for a value this build does
/// not know.
pub fn node_state_from_wire(n: &v1::NodeInfo) -> Option<NodeState> {
    match names::known::<v1::ProcessState>(n.state).ok()? {
        v1::ProcessState::NotStarted => Some(NodeState::NotStarted),
        v1::ProcessState::Running => Some(NodeState::Running),
        v1::ProcessState::Paused => Some(NodeState::Paused),
        v1::ProcessState::Exited | v1::ProcessState::Killed => Some(NodeState::Exited {
            code: n.exit_code,
            signal: n.signal,
        }),
        v1::ProcessState::Unspecified => None,
    }
}

/// Serves [`cachew_proto::v1::cluster_control_server::ClusterControl`] for a [`Backend`].
#[derive(Debug, Clone)]
pub struct ControlService {
    backend: SharedBackend,
}

impl ControlService {
    /// Control of a cluster this process launched (`standby_args`: extra worker flags for
    /// standby workers started through the endpoint).
    pub fn new(cluster: SharedCluster, standby_args: Vec<String>) -> ControlService {
        ControlService::with_backend(LocalBackend::new(cluster, standby_args))
    }

    /// Control of any backend (a deployment's orchestrator).
    pub fn with_backend(backend: impl Backend) -> ControlService {
        ControlService {
            backend: std::sync::Arc::new(backend),
        }
    }
}

/// Which nodes an action is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    Named(Vec<String>),
    /// Every node of a role.
    Role(Role),
    /// Every node.
    All,
}

impl Targets {
    /// The targets of a request; `None` if it names none (only START_STANDBY may).
    pub fn of_request(req: &v1::ActRequest) -> Option<Targets> {
        if !req.nodes.is_empty() {
            Some(Targets::Named(req.nodes.clone()))
        } else if req.every_role {
            Some(Targets::All)
        } else {
            Role::from_wire(req.role).map(Targets::Role)
        }
    }

    /// A request for `action` on these targets.
    pub fn request(&self, action: v1::Action) -> v1::ActRequest {
        let mut req = v1::ActRequest {
            action: action.into(),
            ..Default::default()
        };
        match self {
            Targets::Named(nodes) => req.nodes = nodes.clone(),
            Targets::Role(role) => req.role = role.to_wire().into(),
            Targets::All => req.every_role = true,
        }
        req
    }

    /// The names of the nodes these targets select now.
    pub fn names(&self, cluster: &mut Cluster) -> Vec<String> {
        match self {
            Targets::Named(nodes) => nodes.clone(),
            Targets::Role(role) => cluster
                .nodes()
                .into_iter()
                .filter(|n| n.role == *role)
                .map(|n| n.name)
                .collect(),
            Targets::All => cluster.nodes().into_iter().map(|n| n.name).collect(),
        }
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

#[tonic::async_trait]
impl v1::cluster_control_server::ClusterControl for ControlService {
    async fn list_nodes(
        &self,
        _: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        let nodes = self.backend.list().await.map_err(Status::unavailable)?;
        Ok(Response::new(v1::ListNodesResponse { nodes }))
    }

    async fn act(
        &self,
        request: Request<v1::ActRequest>,
    ) -> Result<Response<v1::ActResponse>, Status> {
        let req = request.into_inner();
        let action = v1::Action::try_from(req.action)
            .map_err(|_| Status::invalid_argument("unknown action"))?;
        if action == v1::Action::Unspecified {
            return Err(Status::invalid_argument("no action given"));
        }
        let targets = match Targets::of_request(&req) {
            Some(Targets::Role(role)) if action == v1::Action::Scale => Targets::Role(role),
            _ if action == v1::Action::Scale => {
                return Err(Status::invalid_argument(
                    "scale takes a role (and a count), not node names",
                ));
            }
            Some(t) => t,
            None if action == v1::Action::StartStandby => Targets::Named(Vec::new()),
            None => {
                return Err(Status::invalid_argument(
                    "name nodes, or a role (dispatcher, worker, client), or every role",
                ));
            }
        };
        let mut errors = self.backend.act(action, &targets, req.count).await;
        let nodes = match self.backend.list().await {
            Ok(nodes) => nodes,
            Err(e) => {
                errors.push(format!("cannot list the nodes after the action: {e}"));
                Vec::new()
            }
        };
        Ok(Response::new(v1::ActResponse { nodes, errors }))
    }
}

/// Serves the control endpoint on `listener` until `shutdown` completes.
pub async fn serve(
    service: ControlService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    cachew_proto::server()
        .add_service(v1::cluster_control_server::ClusterControlServer::new(
            service,
        ))
        .serve_with_incoming_shutdown(cachew_proto::incoming(listener), shutdown)
        .await
}
