//! The cluster-control endpoint: other processes (the dashboard, a second runner) drive the
//! nodes of a cluster over gRPC: a cluster this process launched ([`LocalBackend`]), or a
//! deployment through its orchestrator ([`Compose`](crate::docker::Compose),
//! [`Kubernetes`](crate::kube::Kubernetes)). Each is a [`Backend`].

use std::future::Future;

use cachew_proto::{names, v1};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::backend::{Backend, SharedBackend};
use crate::cluster::NodeState;
use crate::local_control::LocalBackend;

pub use crate::backend::Targets;
pub use crate::local_control::{SharedCluster, act, node_to_wire, process_state};

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
        ControlService::shared(std::sync::Arc::new(backend))
    }

    /// Cluster control for a backend others hold too.
    pub fn shared(backend: SharedBackend) -> ControlService {
        ControlService { backend }
    }
}

/// At most this many node names in one request.
pub const MAX_NODES_PER_REQUEST: usize = 1024;
/// At most this long a node name (a Kubernetes pod name is at most 253 characters).
pub const MAX_NODE_NAME: usize = 253;
/// At most this many nodes of a role SCALE may ask for.
pub const MAX_SCALE_COUNT: u32 = 10_000;

/// Refuses a request whose fields exceed the bounds above, before anything is done with it.
pub fn check_bounds(req: &v1::ActRequest) -> Result<(), Status> {
    if req.nodes.len() > MAX_NODES_PER_REQUEST {
        return Err(Status::invalid_argument(format!(
            "{} node names: at most {MAX_NODES_PER_REQUEST} in one request",
            req.nodes.len()
        )));
    }
    if req.nodes.iter().any(|n| n.len() > MAX_NODE_NAME) {
        return Err(Status::invalid_argument(format!(
            "a node name is at most {MAX_NODE_NAME} bytes"
        )));
    }
    if req.count > MAX_SCALE_COUNT {
        return Err(Status::invalid_argument(format!(
            "scale to {}: at most {MAX_SCALE_COUNT}",
            req.count
        )));
    }
    Ok(())
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
        check_bounds(&req)?;
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
    cachew_proto::server()?
        .add_service(v1::cluster_control_server::ClusterControlServer::new(
            service,
        ))
        .serve_with_incoming_shutdown(cachew_proto::incoming(listener), shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_beyond_the_bounds_are_refused() {
        let ok = v1::ActRequest {
            nodes: vec!["worker-1".into(); MAX_NODES_PER_REQUEST],
            count: MAX_SCALE_COUNT,
            ..Default::default()
        };
        assert!(check_bounds(&ok).is_ok());
        let many = v1::ActRequest {
            nodes: vec!["w".into(); MAX_NODES_PER_REQUEST + 1],
            ..Default::default()
        };
        assert_eq!(
            check_bounds(&many).map_err(|s| s.code()),
            Err(tonic::Code::InvalidArgument)
        );
        let long = v1::ActRequest {
            nodes: vec!["w".repeat(MAX_NODE_NAME + 1)],
            ..Default::default()
        };
        assert!(check_bounds(&long).is_err());
        let huge = v1::ActRequest {
            count: MAX_SCALE_COUNT + 1,
            ..Default::default()
        };
        assert!(check_bounds(&huge).is_err());
    }
}
