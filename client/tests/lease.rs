//! A fetch refused because the worker still holds an *older* lease than the client's (it has not
//! received its new assignment yet) is retried until the worker catches up; it must not be taken
//! as the client's lease being stale (which would wait forever for a newer location).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use cachew_client::fetch::Locations;
use cachew_proto::WorkerServer;
use cachew_worker::service::WorkerService;
use common::{engine, location, prepared, spawn_fetch, task, tf_sample_spec};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_behind_the_clients_lease_is_retried_until_it_catches_up() {
    let prepared = prepared(&tf_sample_spec());
    let split = prepared.plan.split_order(42, 0)[0];
    let len = prepared.plan.split_len(split);
    let (engine, _threads) = engine();
    // The worker still serves the split under the old lease 5.
    engine.add_task(task(5, split), prepared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let service = WorkerService::new(engine.clone(), std::time::Instant::now());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // The client already knows the new assignment: lease 7 on this worker.
    let location = location(split, 7, address);
    let (_tx, rx) = watch::channel(Locations {
        by_position: [((0, 0), location)].into_iter().collect(),
        ..Locations::default()
    });
    let (fetcher, mut out_rx) = spawn_fetch(split, len, rx);
    // The worker catches up a little later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.add_task(task(7, split), prepared.clone());
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
