//! A dispatcher whose journal disk fills up: it stops acknowledging changes (state-changing
//! RPCs fail as unavailable, event `journal_unavailable`) instead of pretending or dying, and
//! resumes once space is freed (event `journal_recovered`), with a journal that replays to the
//! live state. Needs root to mount the tmpfs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../core/store/tests/common/tmpfs.rs"]
mod tmpfs;

use std::time::{Duration, Instant};

use cachew_dispatcher::durable;
use cachew_dispatcher::{DispatcherConfig, DispatcherService};
use cachew_proto::{Dispatcher, v1};
use tonic::{Code, Request};

async fn register(svc: &DispatcherService, n: u32) -> Result<u64, tonic::Status> {
    svc.register_worker(Request::new(v1::RegisterWorkerRequest {
        // A long address (the longest the dispatcher takes, 256 bytes) makes each record need
        // fresh pages soon.
        address: format!("127.0.0.1:{}/{}", 9000 + n, "x".repeat(230)),
        threads: 1,
        ..Default::default()
    }))
    .await
    .map(|r| r.into_inner().worker_id)
}

fn events(svc: &DispatcherService, kind: v1::EventKind) -> Vec<v1::Event> {
    svc.status(0)
        .events
        .into_iter()
        .filter(|e| e.kind() == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_disk_stops_acknowledging_and_resumes_once_freed() {
    let fs = tmpfs::Tmpfs::mount(1024);
    let journal_dir = fs.path().join("journal");
    let (journal, state, _) = durable::open(&journal_dir, 0).unwrap();
    let svc =
        DispatcherService::with_journal(DispatcherConfig::default(), state, journal, String::new());
    for n in 0..3 {
        register(&svc, n).await.unwrap();
    }
    let before = svc.state();

    fs.fill();
    let mut n = 3;
    let refused = loop {
        match register(&svc, n).await {
            Ok(_) => n += 1,
            Err(status) => break status,
        }
        assert!(n < 200, "200 registrations fit on a full disk");
    };
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("cannot write its journal")
            && refused.message().contains("not acknowledged"),
        "the refusal says why: {}",
        refused.message()
    );
    let reported = events(&svc, v1::EventKind::JournalUnavailable);
    assert_eq!(reported.len(), 1, "one event per outage");
    assert!(
        reported[0]
            .message
            .contains(&journal_dir.display().to_string()),
        "{}",
        reported[0].message
    );
    // Still refused while the disk is full, and the dispatcher keeps serving its status.
    let again = register(&svc, 1000)
        .await
        .expect_err("the disk is still full");
    assert_eq!(again.code(), Code::Unavailable);
    assert!(svc.status(0).journal.unwrap().enabled);

    fs.free();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match register(&svc, 2000).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable);
                assert!(
                    Instant::now() < deadline,
                    "no recovery after space was freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(events(&svc, v1::EventKind::JournalRecovered).len(), 1);
    let live = svc.state();
    assert!(live.workers.len() > before.workers.len());

    // Everything the live dispatcher holds (including the changes applied while the disk was
    // full, which were refused then and written once space returned) replays from the journal.
    drop(svc);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reopened = tokio::task::spawn_blocking(move || {
        for _ in 0..50 {
            match durable::open(&journal_dir, 0) {
                Ok(r) => return Ok(r),
                Err(e) if e.contains("lock") => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => return Err(e),
            }
        }
        Err("journal stayed locked".to_string())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(reopened.1, live, "replayed state differs from the live one");
}
