//! Fencing: a worker declared dead that comes back (a pause or partition, not a crash) cannot
//! keep, report or reclaim a split that was reassigned; clients are told the new owner.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use cachew_dispatcher::{DispatcherConfig, DispatcherService};
use cachew_proto::{Dispatcher, v1};
use tonic::Request;

use common::{client_heartbeat, register, spec_json};

async fn heartbeat(
    svc: &DispatcherService,
    worker: u64,
    incarnation: u64,
    tasks: Vec<v1::TaskProgress>,
    free: u32,
) -> v1::WorkerHeartbeatResponse {
    svc.worker_heartbeat(Request::new(v1::WorkerHeartbeatRequest {
        worker_id: worker,
        incarnation,
        tasks,
        free_slots: free,
        ..Default::default()
    }))
    .await
    .unwrap()
    .into_inner()
}

fn held(defs: &[v1::TaskDef]) -> Vec<v1::TaskProgress> {
    defs.iter()
        .map(|d| v1::TaskProgress {
            key: d.key,
            lease: d.lease,
            split: d.split,
            ..Default::default()
        })
        .collect()
}

#[tokio::test]
async fn a_returning_dead_worker_is_fenced_everywhere() {
    let config = DispatcherConfig {
        heartbeat_interval: Duration::from_millis(10),
        worker_timeout: Duration::from_millis(60),
        ..DispatcherConfig::default()
    };
    let svc = DispatcherService::new(config, Default::default());
    let a = register(&svc, "127.0.0.1:1", vec![]).await;
    let b = register(&svc, "127.0.0.1:2", vec![]).await;
    let job = svc
        .get_or_create_job(Request::new(v1::GetOrCreateJobRequest {
            job_name: "j".into(),
            spec_json: spec_json(),
            seed: 3,
            num_epochs: 1,
            num_consumers: 1,
            consumer_index: -1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let a_tasks = heartbeat(&svc, a.worker_id, a.incarnation, vec![], 2)
        .await
        .new_tasks;
    assert_eq!(a_tasks.len(), 2);
    // A goes silent (paused); B keeps heartbeating; the timeout passes.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        heartbeat(&svc, b.worker_id, b.incarnation, vec![], 0).await;
        svc.check_liveness();
    }
    let status = svc.status(0);
    assert!(
        status
            .workers
            .iter()
            .any(|w| w.worker_id == a.worker_id && w.state() == v1::WorkerState::Dead)
    );
    // B takes A's splits under new leases.
    let b_tasks = heartbeat(&svc, b.worker_id, b.incarnation, vec![], 4)
        .await
        .new_tasks;
    for t in &a_tasks {
        let moved = b_tasks
            .iter()
            .find(|x| x.key == t.key)
            .expect("A's split moved to B");
        assert!(moved.lease > t.lease);
    }
    // A comes back and reports its old tasks: told to register again, and the report is fenced.
    let back = heartbeat(&svc, a.worker_id, a.incarnation, held(&a_tasks), 0).await;
    assert!(back.reregister && back.new_tasks.is_empty());
    // Re-registering with the stale leases keeps none of them.
    let again = register(&svc, "127.0.0.1:1", held(&a_tasks)).await;
    assert!(again.kept.is_empty());
    let kinds: Vec<v1::EventKind> = svc.status(0).events.iter().map(|e| e.kind()).collect();
    assert!(
        kinds
            .iter()
            .filter(|k| **k == v1::EventKind::Fenced)
            .count()
            >= 2,
        "{kinds:?}"
    );
    // Clients are sent to B's leases only.
    let locations = client_heartbeat(&svc, &job).await.locations;
    for t in &a_tasks {
        let key = t.key.unwrap();
        let l = locations
            .iter()
            .find(|l| (l.epoch, l.position) == (key.epoch, key.position))
            .unwrap();
        assert_eq!(l.worker_id, b.worker_id);
        assert!(l.lease > t.lease);
    }
    // And B, reporting the new leases, keeps them.
    let b_again = heartbeat(&svc, b.worker_id, b.incarnation, held(&b_tasks), 0).await;
    assert!(b_again.dropped.is_empty(), "{:?}", b_again.dropped);
}

#[tokio::test]
async fn a_worker_id_reused_by_a_restarted_dispatcher_is_not_taken_over() {
    // A dispatcher without a journal restarts and hands worker id 1 to another worker; the old
    // holder's heartbeat (same id, same incarnation) must not pass for the new one.
    let first = DispatcherService::new(DispatcherConfig::default(), Default::default());
    let a = register(&first, "127.0.0.1:11", vec![]).await;
    let restarted = DispatcherService::new(DispatcherConfig::default(), Default::default());
    let b = register(&restarted, "127.0.0.1:12", vec![]).await;
    assert_eq!((a.worker_id, a.incarnation), (b.worker_id, b.incarnation));
    let resp = restarted
        .worker_heartbeat(Request::new(v1::WorkerHeartbeatRequest {
            worker_id: a.worker_id,
            incarnation: a.incarnation,
            address: "127.0.0.1:11".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.reregister);
}
