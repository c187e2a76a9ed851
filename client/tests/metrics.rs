//! The client's metrics end to end: an in-process dispatcher and worker serve a two-epoch job,
//! the client counts into an exporter served over HTTP, and the scrape must agree with what the
//! test itself received (examples, batches), balance (received == delivered + discarded), and
//! count the epochs by the verdicts the test reported. `/readyz` follows the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use cachew_client::{ClientConfig, ClientEvent, ClientMetrics, JobClient};
use cachew_metrics::Exporter;
use cachew_pipeline::PipelineSpec;
use cachew_proto::v1;
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `GET path` over HTTP/1.0: (status code, body).
async fn get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("{name} {labels:?} missing"));
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name} is not a single value: {other:?}"),
    }
}

/// How many observations histogram `name` of the test's job holds (its `_count` line).
fn count(body: &str, name: &str) -> f64 {
    let prefix = format!("{name}_count{{job_name=\"metrics-e2e\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} missing from:\n{body}"))
        .parse()
        .unwrap()
}

/// Starts an in-process dispatcher and one worker; returns the dispatcher's address.
async fn start_cluster() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dispatcher = listener.local_addr().unwrap().to_string();
    let config = cachew_dispatcher::DispatcherConfig {
        address: dispatcher.clone(),
        ..Default::default()
    };
    tokio::spawn(cachew_dispatcher::run(
        config,
        None,
        listener,
        std::future::pending(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let worker = listener.local_addr().unwrap().to_string();
    let config = cachew_worker::WorkerConfig {
        control: cachew_worker::ControlConfig {
            dispatcher: dispatcher.clone(),
            advertise: worker,
            standby: false,
            connect_timeout: Duration::from_secs(20),
        },
        engine: cachew_worker::engine::EngineConfig::default(),
        checkpoint_dir: None,
        checkpoint_interval: Duration::from_secs(1),
        started: Instant::now(),
        cache: None,
        drain_timeout: Duration::from_secs(2),
        metrics: cachew_metrics::Exporter::new("worker"),
        inputs: Default::default(),
    };
    tokio::spawn(cachew_worker::run(config, listener, std::future::pending()));
    dispatcher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrape_counts_what_the_trainer_received() {
    let dispatcher = start_cluster().await;

    let exporter = Exporter::new("client");
    let metrics = ClientMetrics::register(&exporter);
    let listener = cachew_metrics::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    cachew_metrics::spawn(listener, exporter.clone());
    assert_eq!(get(&address, "/readyz").await.0, 503);

    let spec = PipelineSpec::load(&common::tf_sample_spec()).unwrap();
    let dispatcher_address = dispatcher.clone();
    let mut config = ClientConfig::new(dispatcher, "metrics-e2e", spec);
    config.num_epochs = 2;
    config.connect_timeout = Duration::from_secs(20);
    config.metrics = Some(metrics);
    let mut client = JobClient::connect(config).await.unwrap();
    assert_eq!(get(&address, "/readyz").await.0, 200);

    let (mut examples, mut batches, mut epochs) = (0u64, 0u64, 0u64);
    let run = async {
        while let Some(event) = client.next().await.unwrap() {
            match event {
                ClientEvent::Batch(b) => {
                    examples += b.examples.len() as u64;
                    batches += 1;
                }
                ClientEvent::EpochEnd(summary) => {
                    epochs += 1;
                    // Epoch 0 is reported exactly once; epoch 1 goes unreported (unverified).
                    if summary.epoch == 0 {
                        client.report_epoch(v1::EpochReport {
                            epoch: 0,
                            examples: summary.examples,
                            verified: true,
                            exactly_once: true,
                            ..Default::default()
                        });
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the job ends within 2 minutes");
    let (code, reason) = get(&address, "/readyz").await;
    assert_eq!(code, 503);
    assert!(reason.contains("finished"), "{reason}");
    drop(client);

    // The dispatcher keeps the client's time waiting for data and the status stream shows it.
    let mut dispatcher_client = cachew_proto::connect_dispatcher(
        &dispatcher_address,
        Duration::from_secs(5),
        cachew_proto::backoff::Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let status = dispatcher_client
        .watch_status(v1::WatchStatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let job = status
        .jobs
        .iter()
        .find(|j| j.name == "metrics-e2e")
        .unwrap();
    let consumer = &job.consumers[0];
    assert!(consumer.wait_seconds_total > 0.0, "{consumer:?}");
    assert!(
        (0.0..=1.0).contains(&consumer.input_wait_ratio),
        "{consumer:?}"
    );

    let (code, body) = get(&address, "/metrics").await;
    assert_eq!(code, 200);
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let job = [("job_name", "metrics-e2e")];
    let received = value(&scrape, "cachew_client_elements_received_total", &job);
    let delivered = value(&scrape, "cachew_client_elements_delivered_total", &job);
    let discarded = value(&scrape, "cachew_client_elements_discarded_total", &job);
    assert_eq!(epochs, 2);
    assert!(examples > 0);
    assert_eq!(delivered, examples as f64);
    assert_eq!(received, delivered + discarded, "{body}");
    assert_eq!(
        value(&scrape, "cachew_client_batches_total", &job),
        batches as f64
    );
    // One wait and one batching observation per batch, one duration per epoch.
    assert_eq!(count(&body, "cachew_client_wait_seconds"), batches as f64);
    assert_eq!(
        count(&body, "cachew_client_batching_seconds"),
        batches as f64
    );
    assert_eq!(count(&body, "cachew_client_epoch_seconds"), 2.0);
    let verdict = |v: &str| {
        value(
            &scrape,
            "cachew_client_epochs_total",
            &[("job_name", "metrics-e2e"), ("verdict", v)],
        )
    };
    assert_eq!(verdict("exactly_once"), 1.0);
    assert_eq!(verdict("unverified"), 1.0);
    assert!(count(&body, "cachew_client_fetch_seconds") >= 1.0);
    let ratio = value(&scrape, "cachew_client_input_wait_ratio", &job);
    assert!((0.0..=1.0).contains(&ratio), "{ratio}");
    assert_eq!(verdict("violated"), 0.0);
}

/// Every metric of the contract, as the binary serves it with `--metrics-listen`.
const NAMES: [&str; 11] = [
    "cachew_client_elements_received_total",
    "cachew_client_elements_discarded_total",
    "cachew_client_elements_delivered_total",
    "cachew_client_batches_total",
    "cachew_client_wait_seconds",
    "cachew_client_batching_seconds",
    "cachew_client_epoch_seconds",
    "cachew_client_epochs_total",
    "cachew_client_fetch_retries_total",
    "cachew_client_fetch_seconds",
    "cachew_client_input_wait_ratio",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_its_metrics_while_it_runs() {
    let dispatcher = start_cluster().await;
    let address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let logs = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cachew-client"))
        .args(["--dispatcher", &dispatcher, "--job", "bin-metrics"])
        .args(["--epochs", "0", "--step-time-ms", "20"])
        .args(["--metrics-listen", &address])
        .arg("--spec")
        .arg(common::tf_sample_spec())
        .arg("--hash-log")
        .arg(logs.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        assert!(
            Instant::now() < deadline,
            "no delivery seen within a minute"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(mut stream) = TcpStream::connect(&address).await else {
            continue;
        };
        drop(stream.shutdown().await);
        let (code, body) = get(&address, "/metrics").await;
        assert_eq!(code, 200);
        if body.contains("cachew_client_batches_total{job_name=\"bin-metrics\"} ")
            && !body.contains("cachew_client_batches_total{job_name=\"bin-metrics\"} 0\n")
        {
            break body;
        }
    };
    let (ready, _) = get(&address, "/readyz").await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ready, 200);
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    for name in NAMES {
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{body}"
        );
    }
    let job = [("job_name", "bin-metrics")];
    assert!(value(&scrape, "cachew_client_elements_delivered_total", &job) > 0.0);
    assert!(
        body.contains("cachew_build_info{component=\"client\""),
        "{body}"
    );
}
