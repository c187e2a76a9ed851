//! Observability shared by every Cachew-rs process: an [`Exporter`] (one Prometheus registry per
//! process, or per dispatcher / worker / client instance in tests) and the HTTP endpoints an
//! operator or an orchestrator polls ([`serve`]):
//!
//! - `GET /metrics`: every registered metric in the Prometheus text exposition format (0.0.4),
//!   encoded by the `prometheus` crate. Gauges that describe state (workers by state, buffer
//!   occupancy, ...) are refreshed by [`Exporter::on_scrape`] hooks just before encoding, so a
//!   scrape always shows the state of that moment and the hot paths only bump counters.
//! - `GET /healthz`: 200 while the process serves (Kubernetes liveness).
//! - `GET /readyz`: 200 once [`Health::set_ready`] was called and until [`Health::set_not_ready`]
//!   (Kubernetes readiness); 503 with the reason otherwise.
//!
//! Naming (checked by `tests/exposition.rs` and the scenario runner on every scrape): every
//! metric starts with `cachew_`; counters end in `_total`; durations are `_seconds`, sizes
//! `_bytes`; labels are of low cardinality (component, job name, worker id, state, kind, op),
//! never split or record ids. This crate owns no domain knowledge: each component registers its
//! own metrics (`dispatcher/src/metrics.rs`, `worker/src/metrics.rs`, `client/src/metrics.rs`).

mod http;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

pub use http::{bind, serve, spawn};
pub use prometheus;

/// Readiness of a process: ready, or not with a reason an operator can act on.
#[derive(Debug, Default)]
pub struct Health {
    not_ready: Mutex<Option<String>>,
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, Option<String>> {
        self.not_ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_ready(&self) {
        *self.lock() = None;
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.lock() = Some(reason.into());
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        match &*self.lock() {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }
}

type Hook = Box<dyn Fn() + Send + Sync>;

struct Inner {
    registry: Registry,
    health: Health,
    hooks: Mutex<Vec<Hook>>,
    component: String,
    timing: AtomicBool,
}

/// One process's (or one instance's) metrics and health; cheap to clone (shared).
///
/// A new exporter is not ready ("starting"): its owner says when it is.
#[derive(Clone)]
pub struct Exporter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("component", &self.inner.component)
            .field("readiness", &self.inner.health.readiness())
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter for `component` (`dispatcher`, `worker`, `client`). It starts with
    /// `cachew_build_info{component, version}` and `process_start_time_seconds`.
    pub fn new(component: &str) -> Exporter {
        let exporter = Exporter {
            inner: Arc::new(Inner {
                registry: Registry::new(),
                health: Health::default(),
                hooks: Mutex::new(Vec::new()),
                component: component.to_string(),
                timing: AtomicBool::new(true),
            }),
        };
        exporter.inner.health.set_not_ready("starting");
        let info = exporter.int_gauge_vec(
            "cachew_build_info",
            "Always 1; its labels name the component and its version.",
            &["component", "version"],
        );
        info.with_label_values(&[component, env!("CARGO_PKG_VERSION")])
            .set(1);
        let started = exporter.gauge(
            "process_start_time_seconds",
            "When this process started, in seconds since the Unix epoch (a change means a restart).",
        );
        started.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
        exporter
    }

    pub fn component(&self) -> &str {
        &self.inner.component
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// Whether components time their per-element steps (a clock read per step per element;
    /// counters are kept either way). On by default; a binary whose metrics nobody can read
    /// (no `--metrics-listen`) turns it off before its components register.
    pub fn timing(&self) -> bool {
        self.inner.timing.load(Ordering::Relaxed)
    }

    pub fn set_timing(&self, on: bool) {
        self.inner.timing.store(on, Ordering::Relaxed);
    }

    /// Runs `hook` before every encoding (to set gauges from the current state). Hooks must not
    /// block for long: a scrape waits for them. Hold a `Weak` to what the hook reads, or the
    /// exporter keeps it alive.
    pub fn on_scrape(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.inner
            .hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(hook));
    }

    /// The exposition: hooks run, then every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        for hook in self
            .inner
            .hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            hook();
        }
        let families = self.inner.registry.gather();
        let mut out = String::new();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
            tracing::error!("cannot encode the metrics: {e}");
        }
        out
    }

    /// Registers `metric`. A clash (the same name twice) is a programming error that the
    /// exposition tests catch; in production it is logged and the metric still counts, unseen.
    fn register<M: Collector + Clone + 'static>(&self, metric: M) -> M {
        if let Err(e) = self.inner.registry.register(Box::new(metric.clone())) {
            tracing::error!(component = %self.inner.component, "cannot register a metric: {e}");
        }
        metric
    }

    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::with_opts(Opts::new(name, help)).unwrap_or_else(|e| bad(name, e)))
    }

    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(
            IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| bad(name, e)),
        )
    }

    pub fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::with_opts(Opts::new(name, help)).unwrap_or_else(|e| bad(name, e)))
    }

    pub fn int_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(
            IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| bad(name, e)),
        )
    }

    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.register(Gauge::with_opts(Opts::new(name, help)).unwrap_or_else(|e| bad(name, e)))
    }

    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.register(GaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| bad(name, e)))
    }

    pub fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        self.register(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .unwrap_or_else(|e| bad(name, e)),
        )
    }

    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> HistogramVec {
        self.register(
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .unwrap_or_else(|e| bad(name, e)),
        )
    }
}

/// A metric whose name, help or labels the `prometheus` crate refuses: fixed strings in this
/// code base, so a bug that every exposition test hits at once.
fn bad(name: &str, e: prometheus::Error) -> ! {
    panic!("metric {name} is malformed: {e}")
}

/// Histogram buckets for latencies of disk writes and RPCs: 100 µs to about 6.5 s.
pub fn latency_buckets() -> Vec<f64> {
    exponential(0.0001, 2.0, 17)
}

/// Histogram buckets for per-element processing steps: 10 µs to about 1.3 s.
pub fn op_buckets() -> Vec<f64> {
    exponential(0.00001, 2.0, 18)
}

/// Histogram buckets for long waits and durations (epochs, waits for data): 1 ms to about 1 h.
pub fn duration_buckets() -> Vec<f64> {
    exponential(0.001, 2.0, 23)
}

fn exponential(start: f64, factor: f64, count: usize) -> Vec<f64> {
    std::iter::successors(Some(start), |b| Some(b * factor))
        .take(count)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_parses_and_hooks_run_before_it() {
        let e = Exporter::new("test");
        let c = e.counter("cachew_test_things_total", "Things.");
        let g = e.int_gauge("cachew_test_level", "Level.");
        let h = e.histogram("cachew_test_seconds", "Time.", latency_buckets());
        c.inc_by(3);
        h.observe(0.25);
        let g2 = g.clone();
        e.on_scrape(move || g2.set(7));
        let text = e.encode();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition");
        let value = |name: &str| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name)
                .map(|s| s.value.clone())
        };
        assert!(matches!(
            value("cachew_test_things_total"),
            Some(prometheus_parse::Value::Counter(v)) if v == 3.0
        ));
        assert!(matches!(
            value("cachew_test_level"),
            Some(prometheus_parse::Value::Gauge(v)) if v == 7.0
        ));
        assert!(matches!(
            value("cachew_test_seconds"),
            Some(prometheus_parse::Value::Histogram(_))
        ));
        assert!(
            text.contains("cachew_build_info{component=\"test\""),
            "{text}"
        );
    }

    #[test]
    fn readiness_starts_false_and_follows_its_owner() {
        let e = Exporter::new("test");
        assert_eq!(e.health().readiness(), Err("starting".to_string()));
        e.health().set_ready();
        assert_eq!(e.health().readiness(), Ok(()));
        e.health().set_not_ready("draining");
        assert_eq!(e.health().readiness(), Err("draining".to_string()));
    }

    #[test]
    fn buckets_grow() {
        for b in [latency_buckets(), op_buckets(), duration_buckets()] {
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
