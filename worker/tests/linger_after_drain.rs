//! `cachew-worker --linger-after-drain-ms`: a worker the dispatcher drained (the autoscaler
//! shrank the fleet) stays up and not ready instead of exiting, so an orchestrator that restarts
//! exited containers removes it rather than restarting it; SIGTERM, or the end of the linger,
//! ends it with status 0. Without the flag, the drained worker exits by itself at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cachew_dispatcher::{DispatcherConfig, DispatcherService};
use cachew_proto::{Dispatcher, v1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Request;

fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The HTTP status of GET `path`, or None while nothing answers.
async fn status_of(address: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// A worker process, killed on drop.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_worker(dispatcher: SocketAddr, metrics: SocketAddr, linger_ms: u64) -> (Worker, String) {
    let listen = free_address().to_string();
    let mut c = Command::new(env!("CARGO_BIN_EXE_cachew-worker"));
    c.args(["--listen", &listen, "--dispatcher", &dispatcher.to_string()])
        .args(["--metrics-listen", &metrics.to_string()])
        .args(["--drain-timeout-ms", "2000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.args(["--linger-after-drain-ms", &linger_ms.to_string()]);
    (Worker(c.spawn().unwrap()), listen)
}

async fn drain_when_registered(svc: &DispatcherService, address: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let drained = svc
            .drain_worker(Request::new(v1::DrainWorkerRequest {
                worker_id: 0,
                address: address.to_string(),
            }))
            .await;
        if drained.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "the worker never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn exit_within(worker: &mut Worker, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = worker.0.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_stays_not_ready_until_sigterm() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dispatcher = listener.local_addr().unwrap();
    let config = DispatcherConfig {
        heartbeat_interval: Duration::from_millis(100),
        worker_timeout: Duration::from_secs(10),
        ..DispatcherConfig::default()
    };
    let svc = DispatcherService::new(config, Default::default());
    let serving = svc.clone();
    tokio::spawn(cachew_dispatcher::serve(
        serving,
        listener,
        std::future::pending(),
    ));

    // With a long linger: drained, still running, /readyz 503, /healthz 200; SIGTERM ends it
    // with 0.
    let metrics = free_address();
    let (mut worker, address) = start_worker(dispatcher, metrics, 60_000);
    drain_when_registered(&svc, &address).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while svc
        .state()
        .worker_by_address(&address)
        .is_none_or(|w| w.life != cachew_dispatcher::state::WorkerLife::Left)
    {
        assert!(Instant::now() < deadline, "the drain did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        exit_within(&mut worker, Duration::from_secs(3)),
        None,
        "a drained worker with --linger-after-drain-ms exited"
    );
    assert_eq!(status_of(metrics, "/readyz").await, Some(503));
    assert_eq!(status_of(metrics, "/healthz").await, Some(200));
    let sent = Command::new("kill")
        .args(["-TERM", &worker.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = exit_within(&mut worker, Duration::from_secs(10)).expect("SIGTERM ends it");
    assert_eq!(status.code(), Some(0));

    // A short linger ends by itself, with 0.
    let (mut worker, address) = start_worker(dispatcher, free_address(), 1_500);
    drain_when_registered(&svc, &address).await;
    let status = exit_within(&mut worker, Duration::from_secs(15)).expect("it exits");
    assert_eq!(status.code(), Some(0));

    // Without it: the drained worker exits by itself, with 0.
    let (mut worker, address) = start_worker(dispatcher, free_address(), 0);
    drain_when_registered(&svc, &address).await;
    let status = exit_within(&mut worker, Duration::from_secs(15)).expect("it exits");
    assert_eq!(status.code(), Some(0));
}
