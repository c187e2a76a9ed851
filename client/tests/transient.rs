//! A fetch that fails for any reason but a final one is retried: a torn HTTP/2 stream (which tonic
//! reports as `Internal`), a reset (`Unknown`), a cancelled or aborted call, an overloaded
//! worker. Only the worker's typed `FetchFailure` (a record that fails the pipeline under
//! `on_error = "fail"`) ends the split, and a worker computing a corrupt record sends exactly that.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cachew_client::ClientError;
use cachew_client::fetch::Locations;
use cachew_proto::{Worker, WorkerServer, v1};
use cachew_worker::service::WorkerService;
use common::{engine, location, prepared, spawn_fetch, tf_sample_spec};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// The task the fetches below ask for: lease 3.
fn task(split: u32) -> cachew_worker::engine::TaskSpec {
    common::task(3, split)
}

/// A worker that answers its first calls with the given statuses, then serves for real.
struct Flaky {
    inner: WorkerService,
    failures: Vec<Status>,
    calls: Arc<AtomicU32>,
}

#[tonic::async_trait]
impl Worker for Flaky {
    async fn get_elements(
        &self,
        request: Request<v1::GetElementsRequest>,
    ) -> Result<Response<v1::GetElementsResponse>, Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) as usize;
        if let Some(s) = self.failures.get(n) {
            return Err(Status::with_details(
                s.code(),
                s.message(),
                s.details().to_vec().into(),
            ));
        }
        self.inner.get_elements(request).await
    }
}

/// Serves `service` on a free loopback port; returns its address.
async fn serve(service: impl Worker) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    address
}

/// Fetches split `split` (of length `len`) from `address`; returns what reached the consumer:
/// the element count, and the error that ended the fetch if one did.
async fn fetch_all(address: String, split: u32, len: u32) -> (u32, Option<ClientError>) {
    let (_tx, rx) = watch::channel(Locations {
        by_position: [((0, 0), location(split, 3, address))]
            .into_iter()
            .collect(),
        ..Locations::default()
    });
    let (fetcher, mut out_rx) = spawn_fetch(split, len, rx);
    let mut got = 0;
    let mut error = None;
    while got < len {
        match tokio::time::timeout(Duration::from_secs(20), out_rx.recv()).await {
            Ok(Some(Ok(batch))) => got += batch.len() as u32,
            Ok(Some(Err(e))) => {
                error = Some(e);
                break;
            }
            Ok(None) => break,
            Err(_) => panic!("the fetcher stalled at {got} of {len}"),
        }
    }
    fetcher.abort();
    (got, error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_and_worker_state_failures_are_retried_whatever_their_code() {
    let prepared = prepared(&tf_sample_spec());
    let split = prepared.plan.split_order(42, 0)[0];
    let len = prepared.plan.split_len(split);
    let (engine, _threads) = engine();
    engine.add_task(task(split), prepared.clone());
    // What tonic reports for a torn stream, a reset, a GOAWAY mid-call, an overloaded or
    // restarting peer; an Aborted without the typed failure is not final either.
    let failures = vec![
        Status::internal("h2 protocol error: http2 error"),
        Status::unknown("transport error: connection reset"),
        Status::cancelled("stream cancelled"),
        Status::aborted("aborted without a typed failure"),
        Status::resource_exhausted("overloaded"),
        Status::unavailable("connection refused"),
        Status::data_loss("torn frame"),
    ];
    let expected_calls = failures.len() as u32;
    let calls = Arc::new(AtomicU32::new(0));
    let address = serve(Flaky {
        inner: WorkerService::new(engine.clone(), std::time::Instant::now()),
        failures,
        calls: calls.clone(),
    })
    .await;
    let (got, error) = fetch_all(address, split, len).await;
    assert!(
        error.is_none(),
        "a transient failure ended the fetch: {error:?}"
    );
    assert_eq!(got, len);
    // Every failure was answered, and the fetch went on past them.
    assert!(calls.load(Ordering::SeqCst) > expected_calls);
}

/// Copies the tf-sample spec and data into `dir` and flips one byte inside the payload of the
/// first record, so its CRC fails: a corrupt record, which `on_error = "fail"` makes final.
fn corrupt_copy(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data/tf-sample");
    let data = dir.join("data/tf-sample");
    std::fs::create_dir_all(&data).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), data.join(entry.file_name())).unwrap();
    }
    let first = data.join("train-00000-of-00002");
    let mut bytes = std::fs::read(&first).unwrap();
    // Framing: 8-byte length, 4-byte length CRC, then the payload.
    bytes[40] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    let specs = dir.join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let spec = specs.join("tf-sample.toml");
    std::fs::copy(tf_sample_spec(), &spec).unwrap();
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failing_under_on_error_fail_ends_the_split_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = prepared(&corrupt_copy(dir.path()));
    // Split 0 holds record 0, the corrupt one.
    let len = prepared.plan.split_len(0);
    let (engine, _threads) = engine();
    engine.add_task(task(0), prepared.clone());
    let address = serve(WorkerService::new(
        engine.clone(),
        std::time::Instant::now(),
    ))
    .await;
    let (got, error) = fetch_all(address, 0, len).await;
    assert!(
        got < len,
        "every element arrived despite the corrupt record"
    );
    match error {
        Some(ClientError::Pipeline(reason)) => {
            assert!(reason.contains("corrupt record"), "{reason}");
        }
        other => panic!("expected the typed pipeline failure, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_read_its_data_for_a_while_retries_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let spec = corrupt_copy(dir.path());
    // Undo the corruption: this test is about reading, not content.
    let data = dir.path().join("data/tf-sample");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data/tf-sample");
    let first = data.join("train-00000-of-00002");
    std::fs::copy(src.join("train-00000-of-00002"), &first).unwrap();
    let prepared = prepared(&spec);
    let len = prepared.plan.split_len(0);
    // The file goes away (an unmounted volume, a failing disk) before the task computes.
    let away = data.join("moved-away");
    std::fs::rename(&first, &away).unwrap();
    let (engine, _threads) = engine();
    engine.add_task(task(0), prepared.clone());
    let address = serve(WorkerService::new(
        engine.clone(),
        std::time::Instant::now(),
    ))
    .await;
    let fetch = tokio::spawn(fetch_all(address, 0, len));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !fetch.is_finished(),
        "the fetch ended while the data was unreadable"
    );
    std::fs::rename(&away, &first).unwrap();
    let (got, error) = fetch.await.unwrap();
    assert!(
        error.is_none(),
        "an I/O error on the worker ended the fetch: {error:?}"
    );
    assert_eq!(got, len);
}

/// A fetch from an owner that went silent (frozen, or its link cut: the connection stays open
/// and nothing comes back) follows the split as soon as the dispatcher moves it, instead of
/// waiting out the fetch deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_from_a_silent_owner_follows_the_split_when_it_moves() {
    // A "worker" that accepts connections and never says a word (not even HTTP/2's preface).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_address = silent.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let prepared = prepared(&tf_sample_spec());
    let split = prepared.plan.split_order(42, 0)[0];
    let len = prepared.plan.split_len(split);
    let (engine, _threads) = engine();
    engine.add_task(common::task(4, split), prepared.clone());
    let live_address = serve(WorkerService::new(
        engine.clone(),
        std::time::Instant::now(),
    ))
    .await;
    let (tx, rx) = watch::channel(Locations {
        by_position: [((0, 0), location(split, 3, silent_address))]
            .into_iter()
            .collect(),
        ..Locations::default()
    });
    let started = std::time::Instant::now();
    let (fetcher, mut out_rx) = spawn_fetch(split, len, rx);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The dispatcher fails the split over to the live worker under a new lease.
    tx.send_modify(|l| {
        l.by_position
            .insert((0, 0), location(split, 4, live_address.clone()));
    });
    let mut got = 0;
    while got < len {
        let batch = tokio::time::timeout(Duration::from_secs(20), out_rx.recv())
            .await
            .expect("the fetcher stalled")
            .unwrap()
            .unwrap();
        got += batch.len() as u32;
    }
    // Well before the 5 s fetch deadline that a call to the silent owner would have waited out.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the fetch waited {:?} for the silent owner",
        started.elapsed()
    );
    fetcher.await.unwrap();
    held.abort();
}
