//! Parsing of real `docker inspect` output (Docker Engine 20.10, captured from four containers
//! labelled as Compose labels them: one paused, one killed with SIGKILL, one disconnected from
//! its network, one created and never started).

use super::*;

const INSPECT: &str = include_str!("../tests/data/docker-inspect.json");

fn parsed() -> Vec<(String, Container)> {
    let containers = parse_inspect(INSPECT).expect("the capture parses");
    node_names(&containers)
        .into_iter()
        .zip(containers)
        .collect()
}

fn node(name: &str) -> v1::NodeInfo {
    let all = parsed();
    let (n, c) = all
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no node {name} in {all:?}"));
    container_to_wire(c, n, false, 0)
}

#[test]
fn a_capture_of_docker_inspect_gives_each_containers_state() {
    let names: Vec<String> = parsed().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["worker", "worker-2", "dispatcher", "client"]);

    let paused = node("worker");
    assert_eq!(paused.state, v1::ProcessState::Paused as i32);
    assert_eq!(paused.role, v1::NodeRole::Worker as i32);
    assert!(paused.pid > 0);
    assert!(!paused.disconnected);

    let killed = node("worker-2");
    assert_eq!(killed.state, v1::ProcessState::Killed as i32);
    assert_eq!((killed.exit_code, killed.signal), (Some(137), Some(9)));
    assert_eq!(killed.pid, 0);
    assert_eq!(killed.address, "worker-2:6000", "from cachew.address");
    assert_eq!(
        killed.role,
        v1::NodeRole::Worker as i32,
        "from the service name"
    );

    let cut = node("dispatcher");
    assert_eq!(cut.state, v1::ProcessState::Running as i32);
    assert_eq!(cut.role, v1::NodeRole::Dispatcher as i32);
    assert_eq!(cut.address, "dispatcher:5050", "service and cachew.port");
    assert!(
        cut.disconnected,
        "running on no network although it has one"
    );

    let created = node("client");
    assert_eq!(created.state, v1::ProcessState::NotStarted as i32);
    assert_eq!(created.role, v1::NodeRole::Client as i32);
    assert!(!created.disconnected, "on the default bridge");
}

#[test]
fn the_networks_and_their_aliases_are_read() {
    let all = parsed();
    let (_, worker) = all.iter().find(|(n, _)| n == "worker").expect("worker");
    assert_eq!(worker.networks.len(), 1);
    assert_eq!(worker.networks[0].network, "probe-net");
    assert!(worker.id.starts_with(&worker.networks[0].aliases[0]));
}

#[test]
fn odd_output_is_an_error_or_a_default_never_a_panic() {
    assert!(parse_inspect("Error: No such object").is_err());
    assert!(parse_inspect("{}").is_err());
    assert_eq!(parse_inspect("[]"), Ok(Vec::new()));
    // Entries without an id are skipped; missing fields are defaults.
    let odd = parse_inspect(r#"[1, {"Name": "x"}, {"Id": "abc", "State": {"Status": "frozen", "Pid": -4, "ExitCode": 99999999999}}]"#)
        .expect("parses");
    assert_eq!(odd.len(), 1);
    let wire = container_to_wire(&odd[0], "abc", false, 0);
    assert_eq!(wire.state, v1::ProcessState::Unspecified as i32);
    assert_eq!(wire.role, v1::NodeRole::Unspecified as i32);
    assert_eq!((wire.pid, wire.exit_code), (0, None));
}

#[test]
fn names_follow_the_service_and_the_container_number() {
    let c = |service: &str, number: &str, id: &str| Container {
        id: id.into(),
        labels: [
            (SERVICE_LABEL.to_string(), service.to_string()),
            (NUMBER_LABEL.to_string(), number.to_string()),
        ]
        .into(),
        ..Container::default()
    };
    let mut oneoff = c("client", "1", "0123456789abcdef");
    oneoff.labels.insert(ONEOFF_LABEL.into(), "True".into());
    let names = node_names(&[
        c("dispatcher", "1", "a"),
        c("worker", "1", "b"),
        c("worker", "2", "c"),
        c("client", "1", "d"),
        oneoff,
    ]);
    assert_eq!(
        names,
        [
            "dispatcher",
            "worker-1",
            "worker-2",
            "client",
            "client-run-0123456789ab"
        ]
    );
}

#[test]
fn exit_codes_above_128_are_signals() {
    let exited = |code| Container {
        status: "exited".into(),
        exit_code: Some(code),
        ..Container::default()
    };
    assert_eq!(
        container_state(&exited(143)),
        (v1::ProcessState::Killed, Some(143), Some(15))
    );
    assert_eq!(
        container_state(&exited(1)),
        (v1::ProcessState::Exited, Some(1), None)
    );
    assert_eq!(
        container_state(&exited(255)),
        (v1::ProcessState::Exited, Some(255), None)
    );
}

#[test]
fn the_role_and_address_come_from_the_command_without_labels() {
    let container = |service: &str, command: &[&str]| Container {
        id: "abc".into(),
        status: "running".into(),
        labels: [(SERVICE_LABEL.to_string(), service.to_string())].into(),
        command: command.iter().map(|a| a.to_string()).collect(),
        ..Container::default()
    };
    // As deploy/compose runs a worker: the service name says nothing about the role here.
    let worker = container(
        "node-a",
        &[
            "/usr/bin/tini",
            "--",
            "/usr/local/bin/cachew-worker",
            "--listen=0.0.0.0:5051",
            "--advertise",
            "node-a:5051",
        ],
    );
    let wire = container_to_wire(&worker, "node-a", false, 0);
    assert_eq!(wire.role, v1::NodeRole::Worker as i32);
    assert_eq!(wire.address, "node-a:5051");
    let labelled = Container {
        labels: [
            (SERVICE_LABEL.to_string(), "w".to_string()),
            (ADDRESS_LABEL.to_string(), "10.0.0.9:7000".to_string()),
        ]
        .into(),
        ..worker.clone()
    };
    assert_eq!(
        container_to_wire(&labelled, "w", false, 0).address,
        "10.0.0.9:7000",
        "the label wins"
    );
    let init = container(
        "dataset",
        &["sh", "-c", "cachew-fixtures generate --out /data"],
    );
    assert_eq!(container_role(&init), None, "not a node");
}
