//! The dispatcher's real journal path: RPCs change the state, the group-committing writer makes
//! it durable (with snapshots along the way), and a dispatcher reopened from the same directory
//! replays to exactly the state the live one had.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use cachew_dispatcher::durable;
use cachew_dispatcher::{DispatcherConfig, DispatcherService};
use cachew_proto::{Dispatcher, v1};
use tonic::Request;

use common::spec_json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_journal_replays_to_the_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().join("journal");
    // Snapshot every 7 records, so replay = snapshot + tail.
    let (journal, state, _) = durable::open(&journal_dir, 7).unwrap();
    assert_eq!(state, Default::default());
    let svc =
        DispatcherService::with_journal(DispatcherConfig::default(), state, journal, String::new());
    let mut workers = Vec::new();
    for i in 0..3 {
        let r = svc
            .register_worker(Request::new(v1::RegisterWorkerRequest {
                address: format!("127.0.0.1:{}", 7000 + i),
                standby: i == 2,
                threads: 2,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        workers.push(r.worker_id);
    }
    let job = svc
        .get_or_create_job(Request::new(v1::GetOrCreateJobRequest {
            job_name: "j".into(),
            spec_json: spec_json(),
            seed: 5,
            num_epochs: 3,
            num_consumers: 1,
            consumer_index: -1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    // Workers take tasks, the client moves through two epochs and a bit.
    for round in 0..24u32 {
        for &w in &workers[..2] {
            svc.worker_heartbeat(Request::new(v1::WorkerHeartbeatRequest {
                worker_id: w,
                free_slots: 2,
                ..Default::default()
            }))
            .await
            .unwrap();
        }
        svc.client_heartbeat(Request::new(v1::ClientHeartbeatRequest {
            job_id: job.job_id,
            consumer_index: 0,
            consumer_generation: job.consumer_generation,
            cursor: Some(v1::Cursor {
                epoch: u64::from(round / 10),
                ordinal: round % 10,
                index: 0,
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    // Every reply waited for durability, so the journal holds everything the live state has.
    let live = svc.state();
    assert!(
        live.next_lease > 10,
        "tasks were assigned: {}",
        live.next_lease
    );
    let status = svc.status(0);
    let journal_status = status.journal.unwrap();
    assert!(
        journal_status.enabled
            && journal_status.last_seq > 14
            && journal_status.last_snapshot_seq > 0
    );
    drop(svc);
    // The writer holds the store lock until its task ends with the runtime; give it a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reopened = tokio::task::spawn_blocking(move || {
        for _ in 0..50 {
            match durable::open(&journal_dir, 7) {
                Ok(r) => return Ok(r),
                Err(e) if e.contains("lock") || e.contains("Locked") => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(e),
            }
        }
        Err("journal stayed locked".to_string())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(reopened.1, live, "replayed state differs from the live one");
    assert!(reopened.2.contains("snapshot at seq"), "{}", reopened.2);
}
