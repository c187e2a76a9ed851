//! A real worker with its metrics endpoint: an in-process dispatcher, the worker started before
//! the dispatcher exists (so `/readyz` is first 503), a training client reading a whole epoch of
//! the tf-sample dataset through it, and `/metrics` scraped over HTTP during and after the epoch.
//! Every scrape must balance: produced == served + sum(discarded) + buffered_elements.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cachew_client::{ClientConfig, ClientEvent, JobClient};
use cachew_dispatcher::DispatcherConfig;
use cachew_metrics::Exporter;
use cachew_pipeline::PipelineSpec;
use cachew_worker::{ControlConfig, EngineConfig, WorkerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One HTTP/1.0 GET: the status code and the body.
async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// The values of one scrape, by metric name (labels: `name{label=value}`).
struct Scrape(Vec<(String, f64)>);

impl Scrape {
    async fn take(address: SocketAddr) -> Scrape {
        let (status, body) = get(address, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
            .expect("a valid exposition");
        let mut values = Vec::new();
        for s in parsed.samples {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let name = if labels.is_empty() {
                s.metric.clone()
            } else {
                format!("{}{{{}}}", s.metric, labels.join(","))
            };
            values.push((name, v));
        }
        Scrape(values)
    }

    fn get(&self, name: &str) -> f64 {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{name} missing from the scrape"))
    }

    /// Sum over every label value of `name`.
    fn sum(&self, name: &str) -> f64 {
        let prefix = format!("{name}{{");
        self.0
            .iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(_, v)| v)
            .sum()
    }

    fn assert_balanced(&self) {
        let produced = self.get("cachew_worker_elements_produced_total");
        let served = self.get("cachew_worker_elements_served_total");
        let discarded = self.sum("cachew_worker_elements_discarded_total");
        let buffered = self.get("cachew_worker_buffered_elements");
        assert_eq!(
            produced,
            served + discarded + buffered,
            "produced {produced} != served {served} + discarded {discarded} + buffered {buffered}"
        );
    }
}

async fn wait_for(address: SocketAddr, path: &str, want: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(address, path).await;
        if want(status, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path}: still {status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_exposes_balanced_element_accounts_and_its_readiness() {
    // The dispatcher's port, chosen now and served later.
    let dispatcher_address = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let exporter = Exporter::new("worker");
    let metrics_listener = cachew_metrics::bind("127.0.0.1:0").await.unwrap();
    let metrics = metrics_listener.local_addr().unwrap();
    cachew_metrics::spawn(metrics_listener, exporter.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let advertise = listener.local_addr().unwrap().to_string();
    let config = WorkerConfig {
        control: ControlConfig {
            dispatcher: dispatcher_address.to_string(),
            advertise,
            standby: false,
            connect_timeout: Duration::from_secs(60),
        },
        engine: EngineConfig {
            threads: 2,
            max_tasks: 4,
            ahead: 32,
            chunk: 8,
            idle_after: Duration::from_secs(1),
            max_elements_per_sec: 0,
        },
        checkpoint_dir: None,
        checkpoint_interval: Duration::from_secs(1),
        started: Instant::now(),
        cache: None,
        drain_timeout: Duration::from_secs(5),
        metrics: exporter,
        inputs: Default::default(),
    };
    let (stop_worker, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(cachew_worker::run(config, listener, async {
        let _ = stopped.await;
    }));
    // Alive at once, not ready while there is no dispatcher.
    assert_eq!(get(metrics, "/healthz").await.0, 200);
    let why = wait_for(metrics, "/readyz", |status, _| status == 503).await;
    assert!(why.contains("registering"), "{why}");
    wait_for(metrics, "/readyz", |status, why| {
        status == 503 && why.contains("dispatcher unreachable")
    })
    .await;
    let unregistered = Scrape::take(metrics).await;
    unregistered.assert_balanced();
    assert_eq!(unregistered.get("cachew_worker_registered"), 0.0);

    let dispatcher_listener = TcpListener::bind(dispatcher_address).await.unwrap();
    let (stop_dispatcher, dispatcher_stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatcher = tokio::spawn(cachew_dispatcher::run(
        DispatcherConfig {
            heartbeat_interval: Duration::from_millis(100),
            ..DispatcherConfig::default()
        },
        None,
        dispatcher_listener,
        async {
            let _ = dispatcher_stopped.await;
        },
    ));
    wait_for(metrics, "/readyz", |status, _| status == 200).await;
    let registered = Scrape::take(metrics).await;
    assert_eq!(registered.get("cachew_worker_registered"), 1.0);
    assert_eq!(registered.get("cachew_worker_draining"), 0.0);

    // A training client reads one epoch through the worker, scraping as it goes.
    let spec_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/specs/tf-sample.toml");
    let spec = PipelineSpec::load(&spec_path).unwrap();
    let mut client_config = ClientConfig::new(dispatcher_address.to_string(), "metrics", spec);
    client_config.num_epochs = 1;
    let mut client = JobClient::connect(client_config).await.unwrap();
    let mut examples = 0u64;
    let mut mid_run = 0;
    while let Some(event) = client.next().await.unwrap() {
        if let ClientEvent::Batch(batch) = event {
            examples += batch.examples.len() as u64;
            let scrape = Scrape::take(metrics).await;
            scrape.assert_balanced();
            assert!(scrape.get("cachew_worker_elements_produced_total") > 0.0);
            mid_run += 1;
        }
    }
    assert_eq!(examples, 500, "tf-sample has 500 records");
    assert!(mid_run > 1);
    let end = Scrape::take(metrics).await;
    end.assert_balanced();
    assert!(end.get("cachew_worker_elements_served_total") >= 500.0);
    assert!(end.get("cachew_worker_served_bytes_total") > 0.0);
    assert!(end.get("cachew_worker_fetches_total{outcome=ok}") > 0.0);
    for op in [
        "parse_example",
        "decode_jpeg",
        "random_crop",
        "random_flip",
        "resize",
        "normalize",
        "read",
    ] {
        let count = end.get(&format!("cachew_worker_op_seconds_count{{op={op}}}"));
        assert!(count >= 500.0, "{op}: {count}");
    }
    for state in ["computing", "full", "idle", "sent", "failed"] {
        end.get(&format!("cachew_worker_tasks{{state={state}}}"));
    }

    // Draining: not ready from then on, and the accounts still balance.
    stop_worker.send(()).unwrap();
    let why = wait_for(metrics, "/readyz", |status, _| status == 503).await;
    assert!(why.contains("draining") || why.contains("left"), "{why}");
    tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .expect("the worker drains in time")
        .unwrap()
        .unwrap();
    let (status, why) = get(metrics, "/readyz").await;
    assert_eq!(status, 503);
    assert!(why.trim().ends_with("left"), "{why}");
    let after = Scrape::take(metrics).await;
    after.assert_balanced();
    assert_eq!(after.get("cachew_worker_draining"), 1.0);
    assert_eq!(after.get("cachew_worker_registered"), 0.0);
    stop_dispatcher.send(()).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), dispatcher).await;
}
