//! The dispatcher tells a silent worker from its own silence: after the dispatcher itself was
//! stopped (SIGSTOP, a VM pause, CPU starvation) for longer than the worker timeout, it does not
//! declare every worker dead on waking up; a worker that stays silent afterwards still is.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use cachew_dispatcher::{DispatcherConfig, DispatcherService};
use cachew_proto::{Dispatcher, v1};
use tonic::Request;

use common::register;

fn worker_state(svc: &DispatcherService) -> v1::WorkerState {
    svc.status(0).workers[0].state()
}

#[tokio::test]
async fn a_stalled_dispatcher_does_not_declare_its_workers_dead() {
    let config = DispatcherConfig {
        heartbeat_interval: Duration::from_millis(50),
        worker_timeout: Duration::from_millis(300),
        ..DispatcherConfig::default()
    };
    let svc = DispatcherService::new(config, Default::default());
    let w = register(&svc, "127.0.0.1:1", vec![]).await;
    svc.worker_heartbeat(Request::new(v1::WorkerHeartbeatRequest {
        worker_id: w.worker_id,
        incarnation: w.incarnation,
        address: "127.0.0.1:1".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    svc.check_liveness();
    assert_eq!(worker_state(&svc), v1::WorkerState::Alive);

    // The dispatcher does not run for longer than the worker timeout: no checks happen.
    std::thread::sleep(Duration::from_millis(500));
    svc.check_liveness();
    assert_eq!(
        worker_state(&svc),
        v1::WorkerState::Alive,
        "the dispatcher's own stall is not the worker's silence"
    );
    assert!(
        svc.status(0)
            .events
            .iter()
            .any(|e| e.kind() == v1::EventKind::DispatcherStalled)
    );

    // Running normally again, a worker that stays silent is declared dead after its timeout.
    let started = Instant::now();
    while worker_state(&svc) != v1::WorkerState::Dead {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a silent worker must still be declared dead"
        );
        std::thread::sleep(Duration::from_millis(20));
        svc.check_liveness();
    }
    // The stall did not count as the worker's silence (only its silence around it did).
    assert!(started.elapsed() >= Duration::from_millis(200));
}
