//! Parsing of `kubectl get pods -o json` (a `v1.PodList` as the Kubernetes API reference
//! describes it: a running StatefulSet pod, a crash-looping and a terminated Deployment pod, an
//! unschedulable Job pod, a completed pod on IPv6, and a pod of something else, not listed).

use super::*;

const PODS: &str = include_str!("../tests/data/kubectl-get-pods.json");

fn state(n: &v1::NodeInfo) -> v1::ProcessState {
    v1::ProcessState::try_from(n.state).unwrap_or(v1::ProcessState::Unspecified)
}

#[test]
fn a_pod_list_gives_each_pods_role_address_and_state() {
    let nodes = parse_pods(PODS).expect("parses");
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "cachew-dispatcher-0",
            "cachew-worker-7d9f8b6c5-x2k4q",
            "cachew-worker-7d9f8b6c5-pq8zn",
            "trainer-5b7x",
            "cachew-client-once"
        ]
    );
    let [dispatcher, looping, terminated, trainer, done] = nodes.as_slice() else {
        panic!("five nodes");
    };
    assert_eq!(dispatcher.role, v1::NodeRole::Dispatcher as i32);
    assert_eq!(
        dispatcher.address, "10.244.0.12:5050",
        "the port named grpc"
    );
    assert_eq!(state(dispatcher), v1::ProcessState::Running);
    assert_eq!(dispatcher.restarts, 1);

    assert_eq!(looping.role, v1::NodeRole::Worker as i32);
    assert_eq!(looping.address, "10.244.0.13:5051", "the port named data");
    assert_eq!(state(looping), v1::ProcessState::NotStarted);
    assert_eq!(looping.restarts, 3);

    assert_eq!(state(terminated), v1::ProcessState::Killed);
    assert_eq!(
        (terminated.exit_code, terminated.signal),
        (Some(143), Some(15))
    );

    assert_eq!(
        trainer.role,
        v1::NodeRole::Client as i32,
        "from cachew.role"
    );
    assert_eq!(state(trainer), v1::ProcessState::NotStarted);
    assert_eq!(trainer.address, "", "no IP, no port");

    assert_eq!(done.role, v1::NodeRole::Client as i32);
    assert_eq!(
        done.address, "[fd00::5]:7000",
        "the first port, IPv6 in brackets"
    );
    assert_eq!(state(done), v1::ProcessState::Exited);
    assert_eq!(done.exit_code, Some(0));
}

#[test]
fn odd_output_is_an_error_or_a_default_never_a_panic() {
    assert!(parse_pods("error: the server doesn't have a resource type").is_err());
    assert!(parse_pods(r#"{"items": 3}"#).is_err());
    assert!(parse_pods(r#"{"kind": "Status"}"#).is_err());
    assert_eq!(parse_pods(r#"{"items": []}"#), Ok(Vec::new()));
    let nodes = parse_pods(
        r#"{"items": [{"metadata": {}}, 7, {"metadata": {"name": "worker-p"}, "status": {"phase": "Weird", "containerStatuses": [{"restartCount": -1, "state": {"terminated": {"exitCode": "x"}}}]}}]}"#,
    )
    .expect("parses");
    assert_eq!(nodes.len(), 1);
    assert_eq!(state(&nodes[0]), v1::ProcessState::Exited);
    assert_eq!((nodes[0].exit_code, nodes[0].restarts), (None, 0));
    let single = parse_pods(
        r#"{"kind": "Pod", "metadata": {"name": "cachew-worker-1"}, "status": {"phase": "Unknown"}}"#,
    )
    .expect("parses");
    assert_eq!(state(&single[0]), v1::ProcessState::Unspecified);
}

#[test]
fn only_kill_terminate_and_restart_map_to_pod_deletions() {
    let args = |a| Kubernetes::action_args(a, "p").map(|v| v.join(" "));
    assert_eq!(
        args(v1::Action::Kill),
        Ok("delete pod p --grace-period=0 --force --wait=false".into())
    );
    assert_eq!(
        args(v1::Action::Terminate),
        Ok("delete pod p --wait=false".into())
    );
    assert_eq!(
        args(v1::Action::Restart),
        Ok("delete pod p --wait=false".into())
    );
    for a in [
        v1::Action::Pause,
        v1::Action::Resume,
        v1::Action::Disconnect,
        v1::Action::Connect,
    ] {
        assert!(args(a).is_err_and(|e| e.contains("not supported on Kubernetes")));
    }
}
