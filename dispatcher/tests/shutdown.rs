//! A dispatcher told to stop does, even with a status stream open (it never ends by itself) and
//! a worker long-polling: calls in flight get a short grace, then are closed.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cachew_dispatcher::{DispatcherConfig, DispatcherService, serve};
use cachew_proto::{DispatcherClient, v1};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_closes_open_status_streams_and_long_polls() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let service = DispatcherService::new(DispatcherConfig::default(), Default::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(service, listener, async {
        let _ = stopped.await;
    }));
    let channel = cachew_proto::endpoint(&address)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = DispatcherClient::new(channel);
    let mut stream = client
        .watch_status(v1::WatchStatusRequest { events_after: 0 })
        .await
        .unwrap()
        .into_inner();
    // The stream is live: it delivers a first snapshot.
    assert!(stream.message().await.unwrap().is_some());
    stop.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the dispatcher kept serving an open status stream after the stop");
    ended.unwrap().unwrap();
}
