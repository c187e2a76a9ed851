//! The dispatcher's metrics move as its events say: a worker that goes silent is declared dead
//! and its splits fail over; the exposition (parsed by an independent Prometheus text parser)
//! counts one failover per `failover` event, every event by its kind, the workers by state and
//! the attached consumer. Over HTTP, `/readyz` says "replaying the journal" until the dispatcher
//! serves, and `/healthz` answers throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cachew_dispatcher::{DispatcherConfig, DispatcherService};
use cachew_proto::names::Name;
use cachew_proto::{Dispatcher, v1};
use prometheus_parse::{Scrape, Value};
use tonic::Request;

use common::{client_heartbeat, job_request, register};

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("a valid exposition")
}

/// The value of `name` whose labels include every pair of `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == *v))
        })
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"));
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
        Value::Summary(_) => panic!("{name} is a summary"),
    }
}

#[tokio::test]
async fn counters_follow_the_events_of_a_failover() {
    let config = DispatcherConfig {
        heartbeat_interval: Duration::from_millis(50),
        worker_timeout: Duration::from_millis(300),
        window: 4,
        ..DispatcherConfig::default()
    };
    let exporter = config.metrics.clone();
    let svc = DispatcherService::new(config, Default::default());
    let a = register(&svc, "127.0.0.1:1", vec![]).await;
    let b = register(&svc, "127.0.0.1:2", vec![]).await;
    let job = svc
        .get_or_create_job(Request::new(job_request("metrics")))
        .await
        .unwrap()
        .into_inner();
    client_heartbeat(&svc, &job).await;
    // Worker a takes splits; b heartbeats without room, then both keep heartbeating a while.
    for (w, address, slots) in [(&a, "127.0.0.1:1", 2), (&b, "127.0.0.1:2", 0)] {
        svc.worker_heartbeat(Request::new(v1::WorkerHeartbeatRequest {
            worker_id: w.worker_id,
            incarnation: w.incarnation,
            address: address.into(),
            free_slots: slots,
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    let held = svc.state().assignments_of(a.worker_id).len();
    assert_eq!(held, 2, "worker a holds two splits");
    // Only b speaks from now on: a is declared dead and its two splits move to b. Liveness
    // checks run often enough that the dispatcher does not take the gaps for its own stall.
    for round in 0..60 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        svc.check_liveness();
        if round % 3 == 0 {
            svc.worker_heartbeat(Request::new(v1::WorkerHeartbeatRequest {
                worker_id: b.worker_id,
                incarnation: b.incarnation,
                address: "127.0.0.1:2".into(),
                free_slots: 0,
                ..Default::default()
            }))
            .await
            .unwrap();
            client_heartbeat(&svc, &job).await;
        }
    }
    let status = svc.status(0);
    let dead: Vec<_> = status
        .workers
        .iter()
        .filter(|w| w.state() == v1::WorkerState::Dead)
        .collect();
    assert_eq!(dead.len(), 1, "{:?}", status.workers);

    let scrape = parse(&exporter.encode());
    let mut by_kind: BTreeMap<&str, f64> = BTreeMap::new();
    for e in &status.events {
        *by_kind.entry(e.kind().name()).or_default() += 1.0;
    }
    assert_eq!(by_kind.get("failover"), Some(&2.0), "{by_kind:?}");
    for kind in v1::EventKind::ALL {
        let seen = by_kind.get(kind.name()).copied().unwrap_or(0.0);
        assert_eq!(
            value(
                &scrape,
                "cachew_dispatcher_events_total",
                &[("kind", kind.name())]
            ),
            seen,
            "events of kind {}",
            kind.name()
        );
    }
    assert_eq!(
        value(
            &scrape,
            "cachew_dispatcher_splits_failed_over_total",
            &[("reason", "dead")]
        ),
        2.0,
        "each failover counted once"
    );
    assert_eq!(
        value(&scrape, "cachew_dispatcher_workers", &[("state", "dead")]),
        1.0
    );
    assert_eq!(
        value(&scrape, "cachew_dispatcher_workers", &[("state", "alive")]),
        1.0
    );
    assert_eq!(
        value(&scrape, "cachew_dispatcher_consumers_attached", &[]),
        1.0
    );
    assert_eq!(
        value(&scrape, "cachew_dispatcher_jobs", &[("state", "running")]),
        1.0
    );
    // The two first assignments; the released splits wait (b has no free slot).
    assert_eq!(
        value(&scrape, "cachew_dispatcher_splits_assigned_total", &[]),
        2.0
    );
    assert_eq!(value(&scrape, "cachew_dispatcher_assignments", &[]), 0.0);
    assert!(value(&scrape, "cachew_dispatcher_heartbeat_gap_seconds", &[]) >= 10.0);
}

/// A plain HTTP/1.0 GET on 127.0.0.1:`port`: (status code, body).
async fn get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    let code = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

#[tokio::test]
async fn readyz_waits_for_the_journal_and_healthz_answers_throughout() {
    let dir = tempfile::tempdir().unwrap();
    let config = DispatcherConfig::default();
    let exporter = config.metrics.clone();
    let http = cachew_metrics::bind("127.0.0.1:0").await.unwrap();
    let port = http.local_addr().unwrap().port();
    cachew_metrics::spawn(http, exporter.clone());
    let (code, body) = get(port, "/readyz").await;
    assert_eq!((code, body.as_str()), (503, "not ready: starting\n"));
    assert_eq!(get(port, "/healthz").await.0, 200);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cachew_dispatcher::run(
        config,
        Some(dir.path().join("journal")),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let mut ready = false;
    for _ in 0..100 {
        let (code, body) = get(port, "/readyz").await;
        match code {
            200 => {
                ready = true;
                break;
            }
            503 => assert!(
                body == "not ready: replaying the journal\n" || body == "not ready: starting\n",
                "{body}"
            ),
            other => panic!("/readyz answered {other}: {body}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "the dispatcher never became ready");
    let (code, text) = get(port, "/metrics").await;
    assert_eq!(code, 200);
    let scrape = parse(&text);
    assert!(value(&scrape, "cachew_dispatcher_journal_bytes", &[]) > 0.0);
    assert_eq!(
        value(
            &scrape,
            "cachew_dispatcher_events_total",
            &[("kind", "journal_replayed")]
        ),
        1.0
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let (code, body) = get(port, "/readyz").await;
    assert_eq!((code, body.as_str()), (503, "not ready: stopping\n"));
}
