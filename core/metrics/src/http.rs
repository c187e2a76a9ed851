//! The HTTP side of an [`Exporter`]: `/metrics`, `/healthz` and `/readyz` on their own listener
//! (`--metrics-listen`), apart from the gRPC port, so a scraper or a probe never competes with
//! the data path and the port can be firewalled separately.

use std::future::Future;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::Exporter;

/// The content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds the metrics listener, saying which flag failed when it cannot.
pub async fn bind(address: &str) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(address).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on --metrics-listen {address}: {e}"),
        )
    })?;
    if let Ok(bound) = listener.local_addr()
        && !bound.ip().is_loopback()
    {
        // Plain HTTP without authentication, by design (Prometheus scrapes it): it tells job
        // names, worker addresses and progress, never data or credentials.
        tracing::warn!(
            "the metrics endpoint listens on {bound}, reachable beyond this host, over plain \
             HTTP without authentication: anyone who reaches it reads job names, worker \
             addresses and progress (no data, no credentials). Firewall it to the scraper."
        );
    }
    Ok(listener)
}

/// Serves the endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    exporter: Exporter,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(exporter);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves the endpoints in the background for the rest of the process (a failure is logged).
pub fn spawn(listener: TcpListener, exporter: Exporter) -> tokio::task::JoinHandle<()> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, component = exporter.component(), "metrics listening");
    }
    tokio::spawn(async move {
        if let Err(e) = serve(listener, exporter, std::future::pending()).await {
            tracing::error!("the metrics endpoint stopped: {e}");
        }
    })
}

async fn metrics(
    axum::extract::State(exporter): axum::extract::State<Exporter>,
) -> impl IntoResponse {
    // Hooks take the component's locks: keep them off the runtime's async threads.
    let text = tokio::task::spawn_blocking(move || exporter.encode()).await;
    match text {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(
    axum::extract::State(exporter): axum::extract::State<Exporter>,
) -> (StatusCode, String) {
    match exporter.health().readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}
