//! The autoscaler at the service level and through the binary: an input-bound trainer's
//! heartbeats make the dispatcher journal a `scale_up` to the estimate; a trainer that stops
//! waiting makes it probe one worker fewer, which drains a worker (its splits move, no timeout);
//! an operator's pin overrides the policy, is refused out of bounds and survives in the state;
//! `--scale-command` runs with the replicas wanted and reports its failures as events.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use cachew_dispatcher::state::{Command, State, WorkerLife};
use cachew_dispatcher::{
    AutoscaleConfig, Autoscaler, DispatcherConfig, DispatcherService, ScalePolicy,
};
use cachew_proto::{Dispatcher, v1};
use tonic::Request;

use common::{job_request, register};

fn config(enabled: bool) -> DispatcherConfig {
    DispatcherConfig {
        window: 4,
        autoscale: AutoscaleConfig {
            enabled,
            policy: ScalePolicy {
                min_workers: 1,
                max_workers: 8,
                settle_periods: 1,
                stable_periods: 2,
                ..ScalePolicy::default()
            },
            ..AutoscaleConfig::default()
        },
        ..DispatcherConfig::default()
    }
}

/// Consumer 0 of `job` says it has taken `delivered` examples and waited `waited` seconds.
async fn report(
    svc: &DispatcherService,
    job: &v1::GetOrCreateJobResponse,
    delivered: u64,
    waited: f64,
) {
    svc.client_heartbeat(Request::new(v1::ClientHeartbeatRequest {
        job_id: job.job_id,
        consumer_index: 0,
        consumer_generation: job.consumer_generation,
        cursor: Some(v1::Cursor::default()),
        delivered_examples: delivered,
        wait_seconds_total: waited,
        ..Default::default()
    }))
    .await
    .unwrap();
}

fn kinds(svc: &DispatcherService) -> Vec<v1::EventKind> {
    svc.status(0).events.iter().map(|e| e.kind()).collect()
}

#[tokio::test]
async fn an_input_bound_trainer_gets_the_estimate_and_an_idle_one_loses_a_worker() {
    let svc = DispatcherService::new(config(true), State::default());
    register(&svc, "127.0.0.1:1", vec![]).await;
    let job = svc
        .get_or_create_job(Request::new(job_request("scaled")))
        .await
        .unwrap()
        .into_inner();
    let mut auto = Autoscaler::default();
    // The autoscaler divides by the time between heartbeats: the trainer reports in real time,
    // 100 examples a second, 75% of each second waiting for data. It could take 4x.
    let mut reported = Instant::now();
    let (mut delivered, mut waited) = (0.0, 0.0);
    let mut tick = async |svc: &DispatcherService, auto: &mut Autoscaler, rate: f64, wait: f64| {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let dt = reported.elapsed().as_secs_f64();
        reported = Instant::now();
        delivered += rate * dt;
        waited += wait * dt;
        report(svc, &job, delivered as u64, waited).await;
        svc.autoscale_tick(auto, Instant::now());
    };
    for _ in 0..4 {
        tick(&svc, &mut auto, 100.0, 0.75).await;
    }
    let status = svc.status(0);
    let scale = status.autoscale.unwrap();
    // 1 / (1 - 0.75) = 4 (a few ms of RPC time in the 250 ms between reports may make it 5).
    assert!((4..=5).contains(&scale.target), "{scale:?}");
    assert_eq!(scale.active, 1, "{scale:?}");
    let up = status
        .events
        .iter()
        .find(|e| e.kind() == v1::EventKind::ScaleUp)
        .expect("a scale_up event");
    assert!(up.message.contains("1 -> "), "{}", up.message);
    assert!(up.message.contains("input-bound"), "{}", up.message);
    let target = scale.target;
    assert_eq!(svc.state().scale.target, Some(target));

    // The actuator brings the rest; the trainer now takes 400/s and never waits.
    for port in 2..=target {
        register(&svc, &format!("127.0.0.1:{port}"), vec![]).await;
    }
    for _ in 0..12 {
        tick(&svc, &mut auto, 400.0, 0.0).await;
        if svc.state().scale.target == Some(target - 1) {
            break;
        }
    }
    assert_eq!(
        svc.state().scale.target,
        Some(target - 1),
        "{:?}",
        kinds(&svc)
    );
    let state = svc.state();
    let draining: Vec<_> = state
        .workers
        .values()
        .filter(|w| w.life == WorkerLife::Draining)
        .collect();
    assert_eq!(draining.len(), 1, "one worker drains: {:?}", state.workers);
    assert_eq!(state.active_workers() as u32, target - 1);
    // A shrinking drain keeps its replica until it has left (the scale command's count).
    assert_eq!(state.shrinking(), 1);
    let events = kinds(&svc);
    assert!(events.contains(&v1::EventKind::ScaleDown), "{events:?}");
    assert!(
        events.contains(&v1::EventKind::WorkerDraining),
        "{events:?}"
    );
    assert!(!events.contains(&v1::EventKind::DeclaredDead), "{events:?}");
}

#[tokio::test]
async fn a_pin_overrides_the_policy_drains_the_excess_and_is_bounded() {
    let svc = DispatcherService::new(config(false), State::default());
    for port in 1..=3 {
        register(&svc, &format!("127.0.0.1:{port}"), vec![]).await;
    }
    let refused = svc
        .pin_workers(Request::new(v1::PinWorkersRequest { workers: Some(0) }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("workers"),
        "{}",
        refused.message()
    );
    assert!(refused.message().contains("got 0"), "{}", refused.message());
    let refused = svc
        .pin_workers(Request::new(v1::PinWorkersRequest {
            workers: Some(cachew_dispatcher::MAX_PINNED_WORKERS + 1),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let pinned = svc
        .pin_workers(Request::new(v1::PinWorkersRequest { workers: Some(2) }))
        .await
        .unwrap()
        .into_inner()
        .autoscale
        .unwrap();
    assert_eq!(
        (pinned.target, pinned.pinned, pinned.active),
        (2, Some(2), 2)
    );
    assert_eq!(pinned.draining, 1);
    assert!(kinds(&svc).contains(&v1::EventKind::ScalePinned));
    // Unpinned, with no autoscaler decision: nothing is wanted, nothing more drains.
    let unpinned = svc
        .pin_workers(Request::new(v1::PinWorkersRequest { workers: None }))
        .await
        .unwrap()
        .into_inner()
        .autoscale
        .unwrap();
    assert_eq!((unpinned.target, unpinned.pinned), (0, None));
    assert_eq!(svc.state().active_workers(), 2);
}

/// The fleet size is durable state: it replays, and a snapshot written before autoscaling
/// existed (no `scale`) still loads.
#[test]
fn the_wanted_size_replays_and_old_snapshots_load() {
    let mut s = State::default();
    let up = s
        .apply(&Command::Scale {
            from: 1,
            target: 4,
            why: "input-bound".into(),
        })
        .unwrap();
    assert_eq!(up.events[0].kind, v1::EventKind::ScaleUp);
    assert!(
        s.apply(&Command::Scale {
            from: 1,
            target: 4,
            why: String::new()
        })
        .unwrap()
        .noop
    );
    let down = s
        .apply(&Command::Scale {
            from: 4,
            target: 3,
            why: "idle".into(),
        })
        .unwrap();
    assert_eq!(down.events[0].kind, v1::EventKind::ScaleDown);
    s.apply(&Command::PinWorkers { pinned: Some(6) }).unwrap();
    assert_eq!(s.scale.wanted(), Some(6));
    let json = serde_json::to_vec(&s).unwrap();
    let back: State = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, s);
    let mut old = serde_json::to_value(State::default()).unwrap();
    old.as_object_mut().unwrap().remove("scale");
    let old: State = serde_json::from_value(old).unwrap();
    assert_eq!(old.scale.wanted(), None);
}

/// The autoscaler's drain (`Shrink`) moves the splits like any drain but promotes no standby:
/// the fleet is meant to get smaller. An operator's drain still promotes one.
#[test]
fn a_shrinking_drain_promotes_no_standby() {
    let mut s = State::default();
    let register = |s: &mut State, address: &str, standby: bool| {
        s.apply(&Command::RegisterWorker {
            address: address.into(),
            standby,
            threads: 1,
            claims: vec![],
        })
        .unwrap()
        .worker
        .unwrap()
    };
    let a = register(&mut s, "a:1", false);
    let b = register(&mut s, "b:1", false);
    let standby = register(&mut s, "s:1", true);
    let out = s
        .apply(&Command::Shrink {
            worker: a,
            resume_at: vec![],
        })
        .unwrap();
    assert!(
        out.events
            .iter()
            .all(|e| e.kind != v1::EventKind::StandbyPromoted)
    );
    assert!(s.workers[&standby].standby, "the standby stays a standby");
    assert_eq!(s.active_workers(), 1);
    assert_eq!(s.shrinking(), 1);
    let out = s.apply(&Command::DrainWorker {
        worker: b,
        resume_at: vec![],
    });
    assert!(
        out.unwrap()
            .events
            .iter()
            .any(|e| e.kind == v1::EventKind::StandbyPromoted)
    );
    // Left: no longer shrinking.
    s.apply(&Command::WorkerLeft { worker: a }).unwrap();
    assert_eq!(s.shrinking(), 0);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A dispatcher binary with `--scale-command`; killed on drop.
struct Daemon(std::process::Child, String);

impl Daemon {
    fn start(command: &str) -> Daemon {
        let address = format!("127.0.0.1:{}", free_port());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_cachew-dispatcher"))
            .args(["--listen", &address, "--scale-command", command])
            .args(["--scale-command-timeout-ms", "5000"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Daemon(child, address)
    }

    async fn client(&self) -> cachew_proto::DispatcherClient<cachew_proto::Channel> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let endpoint = cachew_proto::endpoint(&self.1).unwrap();
            if let Ok(c) = endpoint.connect().await {
                return cachew_proto::DispatcherClient::new(c);
            }
            assert!(Instant::now() < deadline, "the dispatcher did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_scale_command_runs_with_the_replicas_wanted_and_its_failures_are_events() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("replicas");
    let daemon = Daemon::start(&format!("echo {{n}} >> {}", out.display()));
    let mut client = daemon.client().await;
    client
        .pin_workers(v1::PinWorkersRequest { workers: Some(3) })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&out).unwrap_or_default().trim() != "3" {
        assert!(Instant::now() < deadline, "the command did not run with 3");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
        .pin_workers(v1::PinWorkersRequest { workers: Some(5) })
        .await
        .unwrap();
    while std::fs::read_to_string(&out).unwrap_or_default() != "3\n5\n" {
        assert!(
            Instant::now() < deadline,
            "the command did not run again with 5"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(daemon);

    let failing = Daemon::start("echo no such deployment >&2; exit 3 # {n}");
    let mut client = failing.client().await;
    client
        .pin_workers(v1::PinWorkersRequest { workers: Some(2) })
        .await
        .unwrap();
    let mut stream = client
        .watch_status(v1::WatchStatusRequest { events_after: 0 })
        .await
        .unwrap()
        .into_inner();
    let failed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let status = stream.message().await.unwrap().unwrap();
            if let Some(e) = status
                .events
                .iter()
                .find(|e| e.kind() == v1::EventKind::ScaleCommandFailed)
            {
                return e.message.clone();
            }
        }
    })
    .await
    .expect("a scale_command_failed event");
    assert!(failed.contains("no such deployment"), "{failed}");
    assert!(failed.contains("scale to 2 replica(s)"), "{failed}");
}
