//! The dispatcher's journal payloads: records (`durable::decode_record`) and snapshots
//! (`durable::decode_snapshot`), from arbitrary bytes and from real payloads mutated as JSON
//! values; what decodes is applied the way replay applies it (`State::apply`, in order, after the
//! records before it), and a decoded snapshot is served (status, liveness, retention).

use cachew_dispatcher::state::State;
use cachew_dispatcher::{DispatcherConfig, DispatcherService, durable};
use cachew_fuzzing::{bounded, bytes, config, json};
use cachew_proto::{Dispatcher, v1};
use proptest::prelude::*;
use proptest::sample::Index;
use tonic::Request;

use crate::session;

/// The payloads a journaled session wrote: its records (every command kind a session makes) and
/// a snapshot of the state they built.
struct Written {
    records: Vec<Vec<u8>>,
    snapshot: Vec<u8>,
}

fn written() -> &'static Written {
    static W: std::sync::OnceLock<Written> = std::sync::OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let journal_dir = dir.path().join("journal");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (journal, state, _) = durable::open(&journal_dir, 0).unwrap();
            let svc = DispatcherService::with_journal(
                DispatcherConfig::default(),
                state,
                journal,
                String::new(),
            );
            let s = session::build(svc).await;
            let reqs = session::requests(s.workers, &s.job);
            s.svc
                .get_or_create_job(Request::new(reqs.job.clone()))
                .await
                .unwrap();
            s.svc
                .drain_worker(Request::new(reqs.drain.clone()))
                .await
                .unwrap();
            s.svc.pin_workers(Request::new(reqs.pin)).await.unwrap();
            s.svc
                .worker_heartbeat(Request::new(v1::WorkerHeartbeatRequest {
                    worker_id: s.workers[1],
                    address: "10.0.0.2:5051".into(),
                    left: true,
                    ..Default::default()
                }))
                .await
                .unwrap();
            s.svc
                .release_consumer(Request::new(reqs.release))
                .await
                .unwrap();
            s.svc.flush().await.unwrap();
        });
        drop(runtime);
        let (_, recovery) = cachew_store::Journal::open(&journal_dir, Default::default()).unwrap();
        let records: Vec<Vec<u8>> = recovery.records.into_iter().map(|(_, r)| r).collect();
        let (state, _) = replay(&records);
        Written {
            snapshot: durable::encode_snapshot(&state).unwrap(),
            records,
        }
    })
}

/// Replays payloads as `durable::replay` does, but on past a record that does not decode or
/// apply (counted), to reach what follows it.
fn replay(records: &[Vec<u8>]) -> (State, usize) {
    let mut state = State::default();
    let mut refused = 0;
    for (i, bytes) in records.iter().enumerate() {
        let seq = i as u64 + 1;
        match durable::decode_record(seq, bytes) {
            Ok(command) => {
                if let Err(rejection) = state.apply(&command) {
                    assert!(!rejection.to_string().is_empty());
                    refused += 1;
                }
            }
            Err(reason) => {
                assert!(reason.contains(&format!("seq {seq}")), "{reason}");
                refused += 1;
            }
        }
    }
    (state, refused)
}

fn as_json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_records(data in bytes(128)) {
        bounded("durable::decode_record", move || {
            if let Err(reason) = durable::decode_record(7, &data) {
                assert!(reason.contains("seq 7"), "{reason}");
            }
        });
    }

    #[test]
    fn arbitrary_snapshots(data in bytes(128)) {
        bounded("durable::decode_snapshot", move || {
            if let Err(reason) = durable::decode_snapshot(7, &data) {
                assert!(reason.contains("seq 7"), "{reason}");
            }
        });
    }

    #[test]
    fn mutated_records_replayed(
        which in any::<Index>(),
        edits in proptest::collection::vec(json::edit(), 1..=3),
    ) {
        let mut records = written().records.clone();
        let at = which.index(records.len());
        let mut value = as_json(&records[at]);
        for edit in &edits {
            json::apply(&mut value, edit);
        }
        records[at] = value.to_string().into_bytes();
        bounded("replay of a mutated record", move || {
            let (state, _) = replay(&records);
            // Whatever replay built can be snapshotted and read back.
            let snapshot = durable::encode_snapshot(&state).unwrap();
            assert_eq!(durable::decode_snapshot(1, &snapshot).unwrap(), state);
        });
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn mutated_snapshots_served(value in json::mutated(as_json(&written().snapshot))) {
        let data = value.to_string().into_bytes();
        bounded("a mutated snapshot, served", move || {
            let Ok(state) = durable::decode_snapshot(3, &data) else {
                return;
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let svc = DispatcherService::new(DispatcherConfig::default(), state);
                let _ = svc.status(0);
                svc.check_liveness();
                svc.check_retention();
                let _ = svc
                    .worker_heartbeat(Request::new(v1::WorkerHeartbeatRequest {
                        worker_id: 1,
                        address: "10.0.0.1:5051".into(),
                        free_slots: 4,
                        ..Default::default()
                    }))
                    .await;
                let _ = svc.status(0);
            });
        });
    }
}

#[test]
fn the_written_journal_replays_whole() {
    let w = written();
    assert!(w.records.len() >= 8, "{} records", w.records.len());
    let (state, refused) = replay(&w.records);
    assert_eq!(refused, 0);
    assert_eq!(durable::decode_snapshot(1, &w.snapshot).unwrap(), state);
}
