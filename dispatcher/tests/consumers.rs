//! A training client that goes silent (it crashed and nobody resumed it yet) must not pin worker
//! slots forever: its consumer is released and its splits dropped; when it reports again it is
//! attached again and served.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use cachew_dispatcher::{DispatcherConfig, DispatcherService};
use cachew_proto::{Dispatcher, v1};
use tonic::Request;

use common::{client_heartbeat, job_request, register};

#[tokio::test]
async fn a_silent_consumer_is_released_and_comes_back() {
    let config = DispatcherConfig {
        consumer_timeout: Duration::from_millis(100),
        ..DispatcherConfig::default()
    };
    let svc = DispatcherService::new(config, Default::default());
    let w = register(&svc, "127.0.0.1:1", vec![]).await;
    let job = svc
        .get_or_create_job(Request::new(job_request("j")))
        .await
        .unwrap()
        .into_inner();
    let heartbeat = |tasks: Vec<v1::TaskProgress>| v1::WorkerHeartbeatRequest {
        worker_id: w.worker_id,
        incarnation: w.incarnation,
        address: "127.0.0.1:1".into(),
        tasks,
        free_slots: 4,
        ..Default::default()
    };
    let given = svc
        .worker_heartbeat(Request::new(heartbeat(vec![])))
        .await
        .unwrap()
        .into_inner()
        .new_tasks;
    assert_eq!(given.len(), 4);
    let held: Vec<v1::TaskProgress> = given
        .iter()
        .map(|t| v1::TaskProgress {
            key: t.key,
            lease: t.lease,
            split: t.split,
            ..Default::default()
        })
        .collect();
    // The client says nothing for longer than the consumer timeout.
    tokio::time::sleep(Duration::from_millis(150)).await;
    svc.check_liveness();
    let status = svc.status(0);
    assert!(!status.jobs[0].consumers[0].attached);
    assert!(
        status
            .events
            .iter()
            .any(|e| e.kind() == v1::EventKind::ConsumerTimeout)
    );
    // The worker is told to drop the splits; none are handed out while the consumer is away.
    let resp = svc
        .worker_heartbeat(Request::new(heartbeat(held)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.dropped.len(), 4, "{resp:?}");
    assert!(resp.new_tasks.is_empty());
    // The client reports again: attached again, and its splits are assigned again.
    client_heartbeat(&svc, &job).await;
    assert!(svc.status(0).jobs[0].consumers[0].attached);
    let again = svc
        .worker_heartbeat(Request::new(heartbeat(vec![])))
        .await
        .unwrap()
        .into_inner()
        .new_tasks;
    assert_eq!(again.len(), 4);
}

#[tokio::test]
async fn a_late_heartbeat_does_not_attach_a_consumer_that_released_itself() {
    let svc = DispatcherService::new(DispatcherConfig::default(), Default::default());
    let job = svc
        .get_or_create_job(Request::new(job_request("j")))
        .await
        .unwrap()
        .into_inner();
    svc.release_consumer(Request::new(v1::ReleaseConsumerRequest {
        job_id: job.job_id,
        consumer_index: 0,
        consumer_generation: job.consumer_generation,
    }))
    .await
    .unwrap();
    assert!(!svc.status(0).jobs[0].consumers[0].attached);
    // The client's heartbeat task sends one more report after it released the consumer.
    client_heartbeat(&svc, &job).await;
    assert!(
        !svc.status(0).jobs[0].consumers[0].attached,
        "a consumer that released itself stays released"
    );
    // So another client can take it.
    let next = svc
        .get_or_create_job(Request::new(job_request("j")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.consumer_index, 0);
}
