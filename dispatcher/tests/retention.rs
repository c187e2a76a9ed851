//! A dispatcher that runs for months: thousands of jobs come and finish (or are abandoned by
//! their clients), workers come and go, datasets change, all through the real service and the
//! real journal, and the retention policy removes what rested past its retention. What the
//! dispatcher holds (jobs, workers, datasets, soft facts, events) and what a restart reads back
//! from the journal stay under bounds that do not grow with the number of jobs; the journal
//! replays to exactly the live state.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use cachew_dispatcher::durable;
use cachew_dispatcher::events::{EVENT_LOG_CAPACITY, EVENT_MESSAGE_MAX_BYTES};
use cachew_dispatcher::{DispatcherConfig, DispatcherService};
use cachew_pipeline::PipelineSpec;
use cachew_proto::{Dispatcher, v1};
use tonic::Request;

/// Jobs run one after another.
const JOBS: u64 = 2_000;
/// Workers heartbeating at any time; every `CHURN` jobs one leaves and a new one joins.
const ACTIVE: usize = 3;
const CHURN: u64 = 10;
/// Dataset variants (spec with different split sizes), used in turn.
const DATASETS: u64 = 4;
/// Records between snapshots.
const SNAPSHOT_EVERY: u64 = 200;

/// The tf-sample spec with splits of `split_records`: a dataset of its own.
fn spec_json(split_records: u32) -> String {
    let path = format!(
        "{}/../fixtures/specs/tf-sample.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut spec = PipelineSpec::load(Path::new(&path)).unwrap();
    spec.source.split_records = split_records;
    spec.to_canonical_json()
}

/// Bytes the files under `dir` occupy on disk (allocated blocks: fjall preallocates its journal
/// files sparsely). Files fjall deletes while this walks are skipped; `dir` itself must exist.
fn disk_bytes(dir: &Path) -> u64 {
    assert!(dir.is_dir(), "{} is not a directory", dir.display());
    walk(dir)
}

fn walk(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        total += if meta.is_dir() {
            walk(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

async fn worker_round(svc: &DispatcherService, address: &str, id: &mut u64) {
    let reply = svc
        .worker_heartbeat(Request::new(v1::WorkerHeartbeatRequest {
            worker_id: *id,
            address: address.into(),
            free_slots: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    if reply.reregister {
        *id = common::register(svc, address, vec![]).await.worker_id;
    }
}

async fn client_report(
    svc: &DispatcherService,
    job: &v1::GetOrCreateJobResponse,
    consumer: u32,
    cursor: v1::Cursor,
) {
    svc.client_heartbeat(Request::new(v1::ClientHeartbeatRequest {
        job_id: job.job_id,
        consumer_index: consumer,
        consumer_generation: job.consumer_generation,
        cursor: Some(cursor),
        ..Default::default()
    }))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_jobs_leave_the_state_and_journal_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().join("journal");
    let (journal, state, _) = durable::open(&journal_dir, SNAPSHOT_EVERY).unwrap();
    // Everything that rests goes at the next check; silence counts at once.
    let config = DispatcherConfig {
        worker_timeout: Duration::from_millis(1),
        consumer_timeout: Duration::from_millis(1),
        job_retention: Duration::ZERO,
        abandoned_job_retention: Duration::ZERO,
        worker_retention: Duration::ZERO,
        dataset_retention: Duration::ZERO,
        ..DispatcherConfig::default()
    };
    let svc = DispatcherService::with_journal(config, state, journal, String::new());
    let specs: Vec<String> = (0..DATASETS).map(|i| spec_json(40 + i as u32)).collect();

    let mut next_worker = 0u32;
    let mut workers: Vec<(String, u64)> = Vec::new();
    let mut samples = Vec::new();
    let mut expired_jobs = 0usize;
    for n in 0..JOBS {
        // Workers come and go: the oldest stops heartbeating (it is declared dead and removed),
        // a new one joins.
        if n % CHURN == 0 {
            if workers.len() >= ACTIVE {
                workers.remove(0);
            }
            next_worker += 1;
            let address = format!("10.0.0.{}:{next_worker}", next_worker % 250);
            let id = common::register(&svc, &address, vec![]).await.worker_id;
            workers.push((address, id));
        }
        let two = n % 3 == 0;
        let job = svc
            .get_or_create_job(Request::new(v1::GetOrCreateJobRequest {
                job_name: format!("job-{n}"),
                spec_json: specs[(n / 50 % DATASETS) as usize].clone(),
                seed: n,
                num_epochs: 1,
                num_consumers: if two { 2 } else { 1 },
                consumer_index: 0,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        for (address, id) in &mut workers {
            worker_round(&svc, address, id).await;
        }
        client_report(
            &svc,
            &job,
            0,
            v1::Cursor {
                epoch: 0,
                ordinal: 1,
                index: 0,
            },
        )
        .await;
        if n % 5 == 4 {
            // The client vanishes without a word: its consumer times out, the job is abandoned.
        } else if two {
            // The second consumer never attached: the first one leaves, the job is abandoned.
            svc.release_consumer(Request::new(v1::ReleaseConsumerRequest {
                job_id: job.job_id,
                consumer_index: 0,
                consumer_generation: job.consumer_generation,
            }))
            .await
            .unwrap();
        } else {
            // Reads to the end: the job finishes; then it releases its consumer.
            client_report(
                &svc,
                &job,
                0,
                v1::Cursor {
                    epoch: 1,
                    ordinal: 0,
                    index: 0,
                },
            )
            .await;
            svc.release_consumer(Request::new(v1::ReleaseConsumerRequest {
                job_id: job.job_id,
                consumer_index: 0,
                consumer_generation: job.consumer_generation,
            }))
            .await
            .unwrap();
        }
        // Past the timeouts: the silent client and the worker that left are gone; the others
        // report just before the check.
        tokio::time::sleep(Duration::from_millis(2)).await;
        for (address, id) in &mut workers {
            worker_round(&svc, address, id).await;
        }
        svc.check_liveness();
        svc.check_retention();
        if n % 250 == 249 {
            let status = svc.status(0);
            expired_jobs += status
                .events
                .iter()
                .filter(|e| e.kind == v1::EventKind::Expired as i32)
                .count();
            let journal = status.journal.unwrap();
            let tables = disk_bytes(&journal_dir.join("db").join("keyspaces"));
            samples.push((n + 1, svc.footprint(), journal, tables));
        }
    }
    // A last round once nothing is attached: what rests goes.
    tokio::time::sleep(Duration::from_millis(2)).await;
    svc.check_liveness();
    svc.check_retention();
    let end = svc.footprint();
    assert!(expired_jobs > 0, "no expiry event was seen");

    for (jobs, footprint, journal, tables) in &samples {
        eprintln!("after {jobs} jobs: {footprint:?}, journal {journal:?}, tables {tables} bytes");
        // Jobs: the current one at most, plus none left behind.
        assert!(footprint.jobs <= 1, "after {jobs} jobs: {footprint:?}");
        assert!(
            footprint.workers <= ACTIVE + 1,
            "after {jobs}: {footprint:?}"
        );
        assert!(footprint.datasets <= 1, "after {jobs}: {footprint:?}");
        assert!(footprint.assignments <= 2 * ACTIVE, "{footprint:?}");
        assert!(
            footprint.indexed_specs <= DATASETS as usize,
            "{footprint:?}"
        );
        assert!(footprint.soft_entries <= 64, "after {jobs}: {footprint:?}");
        assert!(footprint.events <= EVENT_LOG_CAPACITY, "{footprint:?}");
        assert!(
            footprint.event_bytes <= EVENT_LOG_CAPACITY * EVENT_MESSAGE_MAX_BYTES,
            "{footprint:?}"
        );
        // A restart replays at most a snapshot's worth of records after a snapshot.
        assert!(journal.records <= SNAPSHOT_EVERY + 64, "{journal:?}");
        // The journal's tables hold the live state only: their size does not follow the number
        // of jobs (fjall's write-ahead log is bounded separately, by its rotation; see the
        // store's `journal_bounded` test).
        assert!(
            *tables < 1 << 20,
            "after {jobs} jobs: tables of {tables} bytes"
        );
    }
    assert_eq!(end.jobs, 0, "{end:?}");
    assert_eq!(end.datasets, 0, "{end:?}");
    assert!(end.workers <= ACTIVE, "{end:?}");

    // And the state a restart rebuilds is the live one, small.
    let live = svc.state();
    let snapshot = durable::encode_snapshot(&live).unwrap();
    assert!(snapshot.len() < 16 << 10, "{} bytes", snapshot.len());
    svc.flush().await.unwrap();
    drop(svc);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reopened = tokio::task::spawn_blocking(move || {
        for _ in 0..50 {
            match durable::open(&journal_dir, SNAPSHOT_EVERY) {
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
    assert!(live.next_job_id >= JOBS, "{}", live.next_job_id);
}
