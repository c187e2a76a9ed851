//! The Kubernetes backend of cluster control, driven through the ClusterControl gRPC service
//! against a fake `kubectl`: a script in a temp dir that records its argv and prints a canned
//! pod list (tests/data/kubectl-get-pods.json), so the test asserts the exact commands issued.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cachew_cluster::Role;
use cachew_cluster::control::{ControlService, Targets, serve};
use cachew_cluster::kube::{Kubernetes, KubernetesOptions};
use cachew_proto::Channel;
use cachew_proto::v1;
use cachew_proto::v1::cluster_control_client::ClusterControlClient;

const PODS: &str = include_str!("data/kubectl-get-pods.json");
const WORKER: &str = "cachew-worker-7d9f8b6c5-x2k4q";
const OTHER_WORKER: &str = "cachew-worker-7d9f8b6c5-pq8zn";
const DISPATCHER: &str = "cachew-dispatcher-0";

/// Writes the fake `kubectl`: it appends its arguments as one line to `calls`, prints the pod
/// list for `get pods`, fails like kubectl when deleting [`OTHER_WORKER`], and hangs for
/// `scale` to 13.
fn fake_kubectl(dir: &Path) -> (PathBuf, PathBuf) {
    let pods = dir.join("pods.json");
    std::fs::write(&pods, PODS).expect("write pods");
    let calls = dir.join("calls");
    let script = dir.join("kubectl");
    let body = format!(
        r#"#!/bin/sh
echo "$*" >> '{calls}'
case "$*" in
  *" get pods "*) cat '{pods}' ;;
  *" delete pod {other} "*) echo 'Error from server (NotFound): pods "{other}" not found' >&2; exit 1 ;;
  *"--replicas=13"*) exec sleep 30 ;;
esac
"#,
        calls = calls.display(),
        pods = pods.display(),
        other = OTHER_WORKER,
    );
    std::fs::write(&script, body).expect("write the script");
    let mut perms = std::fs::metadata(&script).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).expect("chmod");
    (script, calls)
}

struct Fake {
    client: ClusterControlClient<Channel>,
    calls: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Fake {
    async fn start(selector: &str) -> Fake {
        let dir = tempfile::tempdir().expect("temp dir");
        let (kubectl, calls) = fake_kubectl(dir.path());
        let backend = Kubernetes::new(KubernetesOptions {
            namespace: "cachew".into(),
            kubectl,
            selector: selector.into(),
            worker_deployment: "cachew-worker".into(),
            timeout: Duration::from_secs(1),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            ControlService::with_backend(backend),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        let endpoint = cachew_proto::endpoint(&address).expect("endpoint");
        Fake {
            client: ClusterControlClient::new(endpoint.connect_lazy()),
            calls,
            stop: Some(stop),
            _dir: dir,
        }
    }

    /// The commands issued since the last call, one argv line each.
    fn take_calls(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.calls).unwrap_or_default();
        let _ = std::fs::remove_file(&self.calls);
        text.lines().map(str::to_string).collect()
    }

    async fn act(&mut self, request: v1::ActRequest) -> v1::ActResponse {
        self.client.act(request).await.expect("act").into_inner()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

const LIST: &str = "--namespace cachew get pods -o json";

fn named(action: v1::Action, nodes: &[&str]) -> v1::ActRequest {
    Targets::Named(nodes.iter().map(|n| n.to_string()).collect()).request(action)
}

fn scale(role: v1::NodeRole, count: u32) -> v1::ActRequest {
    v1::ActRequest {
        action: v1::Action::Scale.into(),
        role: role.into(),
        count,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_listed_deleted_and_the_workers_scaled_with_the_exact_kubectl_commands() {
    let mut fake = Fake::start("").await;

    let nodes = fake
        .client
        .list_nodes(v1::ListNodesRequest {})
        .await
        .expect("list")
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 5);
    let worker = nodes.iter().find(|n| n.name == WORKER).expect("worker");
    assert_eq!(worker.address, "10.244.0.13:5051");
    assert_eq!(worker.role, v1::NodeRole::Worker as i32);
    assert_eq!(fake.take_calls(), [LIST]);

    // KILL: a forced deletion, after the listing that resolves the names.
    let answer = fake.act(named(v1::Action::Kill, &[WORKER])).await;
    assert!(answer.errors.is_empty(), "{answer:?}");
    assert_eq!(answer.nodes.len(), 5, "the nodes after the action");
    assert_eq!(
        fake.take_calls(),
        [
            LIST.to_string(),
            format!("--namespace cachew delete pod {WORKER} --grace-period=0 --force --wait=false"),
            LIST.to_string(),
        ]
    );

    // TERMINATE every node: the dispatcher last (the fake fails one deletion: the others go on).
    let answer = fake.act(Targets::All.request(v1::Action::Terminate)).await;
    assert_eq!(answer.errors.len(), 1, "{answer:?}");
    assert!(answer.errors[0].starts_with(OTHER_WORKER), "{answer:?}");
    let deleted: Vec<String> = fake
        .take_calls()
        .into_iter()
        .filter(|c| c.contains(" delete pod "))
        .collect();
    assert_eq!(deleted.len(), 5);
    assert_eq!(
        deleted.last().map(String::as_str),
        Some(format!("--namespace cachew delete pod {DISPATCHER} --wait=false").as_str())
    );
    // RESTART a role: a deletion, the controller recreates the pod.
    let answer = fake
        .act(Targets::Role(Role::Dispatcher).request(v1::Action::Restart))
        .await;
    assert!(answer.errors.is_empty(), "{answer:?}");
    assert_eq!(
        fake.take_calls(),
        [
            LIST.to_string(),
            format!("--namespace cachew delete pod {DISPATCHER} --wait=false"),
            LIST.to_string(),
        ]
    );

    // SCALE the workers' Deployment.
    let answer = fake.act(scale(v1::NodeRole::Worker, 5)).await;
    assert!(answer.errors.is_empty(), "{answer:?}");
    assert_eq!(
        fake.take_calls(),
        [
            "--namespace cachew scale deployment/cachew-worker --replicas=5",
            LIST
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_kubernetes_cannot_do_is_refused_per_node_and_kubectl_failures_carry_its_stderr() {
    let mut fake = Fake::start("app.kubernetes.io/part-of=cachew").await;
    let list = "--namespace cachew get pods -l app.kubernetes.io/part-of=cachew -o json";

    // No pause or network cut on Kubernetes: one error per node, and no kubectl call but the
    // listings.
    for action in [v1::Action::Pause, v1::Action::Disconnect] {
        let answer = fake.act(named(action, &[WORKER, OTHER_WORKER])).await;
        assert_eq!(answer.errors.len(), 2, "{answer:?}");
        assert!(answer.errors[0].starts_with(WORKER), "{answer:?}");
        assert!(
            answer.errors[1].contains("not supported on Kubernetes"),
            "{answer:?}"
        );
        assert_eq!(fake.take_calls(), [list, list]);
    }

    // Only the workers scale; SCALE needs a role.
    let answer = fake.act(scale(v1::NodeRole::Dispatcher, 2)).await;
    assert!(
        answer.errors[0].contains("only the workers scale"),
        "{answer:?}"
    );
    assert_eq!(fake.take_calls(), [list]);
    let refused = fake
        .client
        .act(named(v1::Action::Scale, &[WORKER]))
        .await
        .expect_err("scale by name is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // A pod that is not listed is an error of its own; kubectl's stderr is in the error of a
    // command that failed, and the other pods are still acted on.
    let answer = fake
        .act(named(
            v1::Action::Terminate,
            &["gone", OTHER_WORKER, WORKER],
        ))
        .await;
    assert_eq!(answer.errors.len(), 2, "{answer:?}");
    assert!(answer.errors[0].starts_with("gone: no pod named `gone` in namespace cachew"));
    assert!(answer.errors[1].starts_with(OTHER_WORKER), "{answer:?}");
    assert!(
        answer.errors[1].contains("(exit 1): Error from server (NotFound)"),
        "{answer:?}"
    );
    let calls = fake.take_calls();
    assert_eq!(
        calls.get(2).map(String::as_str),
        Some(format!("--namespace cachew delete pod {WORKER} --wait=false").as_str())
    );

    // A kubectl that does not answer is killed at the timeout (1 s here).
    let started = Instant::now();
    let answer = fake.act(scale(v1::NodeRole::Worker, 13)).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        answer.errors[0].contains("no answer in 1.0 s"),
        "{answer:?}"
    );
}
