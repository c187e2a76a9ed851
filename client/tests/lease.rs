//! A fetch refused because the worker still holds an *older* lease than the client's (it has not
//! received its new assignment yet) is retried until the worker catches up; it must not be taken
//! as the client's lease being stale (which would wait forever for a newer location).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use cachew_client::fetch::{Locations, SplitJob, WorkerPool, fetch_split};
use cachew_proto::{WorkerServer, v1};
use cachew_worker::cache::CacheMode;
use cachew_worker::engine::{Engine, EngineConfig, Prepared, TaskKey, TaskSpec};
use cachew_worker::service::WorkerService;
use tokio::sync::{Notify, mpsc, watch};

fn prepared() -> Arc<Prepared> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/specs/tf-sample.toml");
    let spec = cachew_pipeline::PipelineSpec::load(&path).unwrap();
    let dataset = cachew_pipeline::Dataset::for_spec(&spec).unwrap();
    let pipeline = cachew_pipeline::Pipeline::new(spec).unwrap();
    let plan = cachew_pipeline::exec::plan_for(&pipeline, &dataset);
    Arc::new(Prepared {
        pipeline,
        dataset,
        plan,
    })
}

fn spec(lease: u64, split: u32) -> TaskSpec {
    TaskSpec {
        key: TaskKey {
            job: 1,
            epoch: 0,
            position: 0,
        },
        lease,
        split,
        seed: 42,
        dataset_id: "d".into(),
        start_index: 0,
        cache_mode: CacheMode::Compute,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_behind_the_clients_lease_is_retried_until_it_catches_up() {
    let prepared = prepared();
    let split = prepared.plan.split_order(42, 0)[0];
    let len = prepared.plan.split_len(split);
    let (engine, _threads) = Engine::start(EngineConfig {
        threads: 1,
        max_tasks: 2,
        ahead: 64,
        chunk: 8,
    });
    // The worker still serves the split under the old lease 5.
    engine.add_task(spec(5, split), prepared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let service = WorkerService::new(engine.clone(), std::time::Instant::now());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // The client already knows the new assignment: lease 7 on this worker.
    let location = v1::SplitLocation {
        epoch: 0,
        position: 0,
        split,
        lease: 7,
        worker_address: address,
        worker_id: 1,
        start_index: 0,
    };
    let (_tx, rx) = watch::channel(Locations {
        by_position: [((0, 0), location)].into_iter().collect(),
        ..Locations::default()
    });
    let (out_tx, mut out_rx) = mpsc::channel(64);
    let job = SplitJob {
        job_id: 1,
        epoch: 0,
        position: 0,
        split,
        len,
        start: 0,
        max_elements: 16,
    };
    let fetcher = tokio::spawn(fetch_split(
        job,
        WorkerPool::default(),
        rx,
        Arc::new(Notify::new()),
        out_tx,
    ));
    // The worker catches up a little later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.add_task(spec(7, split), prepared.clone());
    let mut got = 0;
    while got < len {
        let batch = tokio::time::timeout(Duration::from_secs(10), out_rx.recv())
            .await
            .expect("the fetcher stalled on a worker behind its lease")
            .unwrap()
            .unwrap();
        got += batch.len() as u32;
    }
    assert_eq!(got, len);
    fetcher.await.unwrap();
}
