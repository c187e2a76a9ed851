//! The worker's metrics, registered on its [`Exporter`] (component `worker`) by
//! [`WorkerMetrics::register`], and its readiness ([`Lifecycle`]). Every name is listed here with
//! its type and labels; the help texts say what each counts.
//!
//! Element accounting (see `ledger.rs` for the identity
//! `produced == served + sum(discarded) + buffered_elements`, which holds in every scrape):
//! - `cachew_worker_elements_produced_total`, `_served_total`, `_resent_total` (counters),
//!   `cachew_worker_elements_discarded_total{reason}` (counter; fenced, dropped, rewound,
//!   skipped, stale), `cachew_worker_buffered_elements`, `cachew_worker_buffered_bytes`
//!   (gauges), `cachew_worker_served_bytes_total` (counter), `cachew_worker_tasks{state}`
//!   (gauge; computing, full, idle, sent, failed, every state always present). These are read
//!   from one snapshot of the engine taken under its lock when the registry collects them
//!   ([`EngineCollector`]), so counters and gauges of one scrape are consistent.
//! - `cachew_worker_op_seconds{op}` (histogram): time per record in each pipeline op
//!   (`OpObserver`, see `cachew_pipeline::observe`), plus `read`, `cache_get` and `cache_put`.
//! - `cachew_worker_checkpoint_write_seconds` (histogram), `cachew_worker_checkpoint_age_seconds`
//!   (gauge: since the last successful write, or since the checkpointer started before the
//!   first one; 0 while checkpoints are disabled), `cachew_worker_checkpoint_failures_total`.
//! - Cache: `cachew_worker_cache_hits_total`, `_misses_total`, `_written_bytes_total`,
//!   `_read_bytes_total`, `_repairs_total` (counters).
//! - `cachew_worker_fetch_seconds` (histogram) and `cachew_worker_fetches_total{outcome}`
//!   (counter; ok, wrong_lease, unknown_task, bad_index, failed, bad_request).
//! - `cachew_worker_registered` and `cachew_worker_draining` (gauges, 0 or 1).
//!
//! This module reads the engine only through the snapshot closure it is given; hot paths bump
//! counters and histograms (a few atomic operations per element or per fetch).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachew_metrics::prometheus::core::{Collector, Desc};
use cachew_metrics::prometheus::proto::MetricFamily;
use cachew_metrics::prometheus::{
    Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use cachew_metrics::{Exporter, latency_buckets, op_buckets};
use cachew_pipeline::observe::OpObserver;

use crate::ledger::{Accounts, Discard, TaskState};

/// Every handle the worker bumps, registered on one exporter.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    pub ops: Arc<OpTimes>,
    pub cache: CacheMetrics,
    pub checkpoint: CheckpointMetrics,
    pub fetch: FetchMetrics,
    pub lifecycle: Lifecycle,
}

impl WorkerMetrics {
    /// Registers the worker's metrics on `exporter` (the engine's, through
    /// [`WorkerMetrics::watch_engine`] once the engine exists).
    pub fn register(exporter: &Exporter) -> WorkerMetrics {
        let op_seconds = exporter.histogram_vec(
            "cachew_worker_op_seconds",
            "Time one record spent in one pipeline op (op = the spec's op name, or read, cache_get, cache_put), in seconds.",
            &["op"],
            op_buckets(),
        );
        let ops = Arc::new(OpTimes {
            by_op: known_ops()
                .map(|op| (op, op_seconds.with_label_values(&[op])))
                .collect(),
            other: op_seconds,
        });
        let cache = CacheMetrics {
            hits: exporter.counter(
                "cachew_worker_cache_hits_total",
                "Records whose prefix output a get task read from the split's cache chunk instead of computing it.",
            ),
            misses: exporter.counter(
                "cachew_worker_cache_misses_total",
                "Records a get task looked up in the cache and had to compute from the source (chunk missing, damaged or lacking them).",
            ),
            written_bytes: exporter.counter(
                "cachew_worker_cache_written_bytes_total",
                "Bytes of cache chunk files committed by this worker.",
            ),
            read_bytes: exporter.counter(
                "cachew_worker_cache_read_bytes_total",
                "Bytes of cache chunk files read by this worker (to serve a get, or to measure the read cost after a put).",
            ),
            repairs: exporter.counter(
                "cachew_worker_cache_repairs_total",
                "Get tasks that found their chunk missing or damaged and computed it again to rewrite it.",
            ),
        };
        let checkpoint = CheckpointMetrics {
            write_seconds: exporter.histogram(
                "cachew_worker_checkpoint_write_seconds",
                "Duration of a successful checkpoint write (fsync'd), in seconds.",
                latency_buckets(),
            ),
            failures: exporter.counter(
                "cachew_worker_checkpoint_failures_total",
                "Checkpoint writes that failed (full or failing disk); the worker keeps serving.",
            ),
            last: Arc::default(),
        };
        let age = exporter.gauge(
            "cachew_worker_checkpoint_age_seconds",
            "Seconds since the last successful checkpoint write (since the checkpointer started, before the first one; 0 while checkpoints are disabled).",
        );
        let last = Arc::downgrade(&checkpoint.last);
        exporter.on_scrape(move || {
            let since = last
                .upgrade()
                .and_then(|l| *l.lock().unwrap_or_else(|p| p.into_inner()));
            age.set(since.map_or(0.0, |t| t.elapsed().as_secs_f64()));
        });
        let fetches = exporter.counter_vec(
            "cachew_worker_fetches_total",
            "GetElements calls by outcome (ok, wrong_lease, unknown_task, bad_index, failed, bad_request).",
            &["outcome"],
        );
        let fetch = FetchMetrics {
            seconds: exporter.histogram(
                "cachew_worker_fetch_seconds",
                "Duration of a GetElements call, including its wait for the first element, in seconds.",
                latency_buckets(),
            ),
            outcomes: Arc::new(
                FetchOutcome::ALL.map(|o| fetches.with_label_values(&[o.label()])),
            ),
        };
        let lifecycle = Lifecycle {
            exporter: exporter.clone(),
            registered: exporter.int_gauge(
                "cachew_worker_registered",
                "1 while this worker is registered with the dispatcher, else 0.",
            ),
            draining: exporter.int_gauge(
                "cachew_worker_draining",
                "1 once this worker drains (handing its splits over before it exits), else 0.",
            ),
        };
        lifecycle.registering();
        WorkerMetrics {
            ops,
            cache,
            checkpoint,
            fetch,
            lifecycle,
        }
    }

    /// Handles on a private exporter nobody serves (tests, and engines started without one).
    pub fn detached() -> WorkerMetrics {
        WorkerMetrics::register(&Exporter::new("worker"))
    }

    /// Exposes the engine's element accounting: `accounts` takes one snapshot under the engine
    /// lock (None once the engine is gone).
    pub fn watch_engine(
        exporter: &Exporter,
        accounts: impl Fn() -> Option<Accounts> + Send + Sync + 'static,
    ) {
        let collector = EngineCollector::new(Box::new(accounts));
        if let Err(e) = exporter.registry().register(Box::new(collector)) {
            tracing::error!("cannot register the engine's metrics: {e}");
        }
    }
}

/// The steps a record goes through on a worker: every per-record op a spec can use, and the
/// steps around them (label values resolved once, so an observation is a lookup in a short list
/// and an atomic add).
fn known_ops() -> impl Iterator<Item = &'static str> {
    use cachew_pipeline::observe::step;
    cachew_pipeline::spec::OpSpec::NAMES
        .iter()
        .copied()
        .filter(|op| !matches!(*op, "cache" | "batch"))
        .chain([step::READ, step::CACHE_GET, step::CACHE_PUT])
}

/// `cachew_worker_op_seconds{op}`: the pipeline's [`OpObserver`].
#[derive(Debug)]
pub struct OpTimes {
    by_op: Vec<(&'static str, Histogram)>,
    other: cachew_metrics::prometheus::HistogramVec,
}

impl OpObserver for OpTimes {
    fn op_done(&self, op: &'static str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        match self.by_op.iter().find(|(name, _)| *name == op) {
            Some((_, h)) => h.observe(seconds),
            None => self.other.with_label_values(&[op]).observe(seconds),
        }
    }
}

/// Cache (Cachew put / get) counters, bumped by `cache.rs`.
#[derive(Debug, Clone)]
pub struct CacheMetrics {
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub written_bytes: IntCounter,
    pub read_bytes: IntCounter,
    pub repairs: IntCounter,
}

impl Default for CacheMetrics {
    /// Handles registered nowhere.
    fn default() -> CacheMetrics {
        WorkerMetrics::detached().cache
    }
}

/// Checkpoint write timings and failures, fed by `checkpoint.rs`.
#[derive(Debug, Clone)]
pub struct CheckpointMetrics {
    pub write_seconds: Histogram,
    pub failures: IntCounter,
    /// When the last checkpoint was written (or the checkpointer started); None: disabled.
    last: Arc<Mutex<Option<Instant>>>,
}

impl CheckpointMetrics {
    fn set_last(&self, at: Instant) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
    }

    /// The checkpointer started: the age counts from now until the first write.
    pub fn started(&self) {
        self.set_last(Instant::now());
    }

    pub fn written(&self, took: Duration) {
        self.write_seconds.observe(took.as_secs_f64());
        self.set_last(Instant::now());
    }

    pub fn failed(&self) {
        self.failures.inc();
    }
}

/// How a GetElements call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    Ok,
    WrongLease,
    UnknownTask,
    BadIndex,
    /// The pipeline failed on a record of the split (final).
    Failed,
    /// A request without a task key, or naming another split than the task's.
    BadRequest,
}

impl FetchOutcome {
    pub const ALL: [FetchOutcome; 6] = [
        FetchOutcome::Ok,
        FetchOutcome::WrongLease,
        FetchOutcome::UnknownTask,
        FetchOutcome::BadIndex,
        FetchOutcome::Failed,
        FetchOutcome::BadRequest,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FetchOutcome::Ok => "ok",
            FetchOutcome::WrongLease => "wrong_lease",
            FetchOutcome::UnknownTask => "unknown_task",
            FetchOutcome::BadIndex => "bad_index",
            FetchOutcome::Failed => "failed",
            FetchOutcome::BadRequest => "bad_request",
        }
    }
}

/// GetElements timings and outcomes, fed by `service.rs`.
#[derive(Debug, Clone)]
pub struct FetchMetrics {
    seconds: Histogram,
    outcomes: Arc<[IntCounter; 6]>,
}

impl FetchMetrics {
    pub fn done(&self, outcome: FetchOutcome, took: Duration) {
        self.seconds.observe(took.as_secs_f64());
        if let Some(c) = self.outcomes.get(outcome as usize) {
            c.inc();
        }
    }
}

/// The worker's place in its lifecycle, as `/readyz` and the `registered` / `draining` gauges
/// show it: ready once registered with the dispatcher and not draining; else not ready with the
/// reason (`registering`, `dispatcher unreachable`, `draining`, `left`).
#[derive(Debug, Clone)]
pub struct Lifecycle {
    exporter: Exporter,
    registered: IntGauge,
    draining: IntGauge,
}

impl Lifecycle {
    fn not_ready(&self, reason: &str) {
        self.exporter.health().set_not_ready(reason);
    }

    fn is_draining(&self) -> bool {
        self.draining.get() == 1
    }

    /// Connecting to the dispatcher, or registering (again).
    pub fn registering(&self) {
        self.registered.set(0);
        if !self.is_draining() {
            self.not_ready("registering");
        }
    }

    /// Registered with the dispatcher, and heartbeats get through.
    pub fn registered(&self) {
        self.registered.set(1);
        if !self.is_draining() {
            self.exporter.health().set_ready();
        }
    }

    /// Registration or heartbeats fail: the dispatcher does not answer.
    pub fn unreachable(&self) {
        if !self.is_draining() {
            self.not_ready("dispatcher unreachable");
        }
    }

    /// The worker drains (for good).
    pub fn draining(&self) {
        self.draining.set(1);
        self.not_ready("draining");
    }

    /// The worker drained: the dispatcher knows it left (or it held nothing).
    pub fn left(&self) {
        self.registered.set(0);
        self.draining.set(1);
        self.not_ready("left");
    }
}

/// The element accounting of the engine, collected from one snapshot per scrape.
struct EngineCollector {
    accounts: Box<dyn Fn() -> Option<Accounts> + Send + Sync>,
    /// Held while the handles are set and collected, so concurrent scrapes do not interleave.
    collecting: Mutex<()>,
    produced: IntCounter,
    served: IntCounter,
    resent: IntCounter,
    served_bytes: IntCounter,
    discarded: IntCounterVec,
    buffered_elements: IntGauge,
    buffered_bytes: IntGauge,
    tasks: IntGaugeVec,
}

/// A metric the `prometheus` crate refuses: fixed strings here, so a bug every test hits.
fn malformed(e: cachew_metrics::prometheus::Error) -> ! {
    panic!("a worker metric is malformed: {e}")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help)).unwrap_or_else(|e| malformed(e))
}

impl EngineCollector {
    fn new(accounts: Box<dyn Fn() -> Option<Accounts> + Send + Sync>) -> EngineCollector {
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help)).unwrap_or_else(|e| malformed(e))
        };
        EngineCollector {
            accounts,
            collecting: Mutex::new(()),
            produced: counter(
                "cachew_worker_elements_produced_total",
                "Elements the pipeline produced on this worker (computed or from the cache), counting each computation.",
            ),
            served: counter(
                "cachew_worker_elements_served_total",
                "Produced elements sent to a client for the first time.",
            ),
            resent: counter(
                "cachew_worker_elements_resent_total",
                "Further sends of elements already sent (a client fetching again after a broken stream).",
            ),
            served_bytes: counter(
                "cachew_worker_served_bytes_total",
                "Bytes of elements sent to clients (first sends and resends).",
            ),
            discarded: IntCounterVec::new(
                Opts::new(
                    "cachew_worker_elements_discarded_total",
                    "Produced elements removed without ever being sent, by reason (fenced, dropped, rewound, skipped, stale).",
                ),
                &["reason"],
            )
            .unwrap_or_else(|e| malformed(e)),
            buffered_elements: gauge(
                "cachew_worker_buffered_elements",
                "Produced elements held in task buffers and not sent yet.",
            ),
            buffered_bytes: gauge(
                "cachew_worker_buffered_bytes",
                "Bytes of all elements held in task buffers (sent or not).",
            ),
            tasks: IntGaugeVec::new(
                Opts::new(
                    "cachew_worker_tasks",
                    "Tasks held by state (computing, full, idle, sent, failed).",
                ),
                &["state"],
            )
            .unwrap_or_else(|e| malformed(e)),
        }
    }
}

/// Moves a counter up to `value` (the ledger's counts only grow).
fn raise(counter: &IntCounter, value: u64) {
    counter.inc_by(value.saturating_sub(counter.get()));
}

impl Collector for EngineCollector {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.produced.desc(),
            self.served.desc(),
            self.resent.desc(),
            self.served_bytes.desc(),
            self.discarded.desc(),
            self.buffered_elements.desc(),
            self.buffered_bytes.desc(),
            self.tasks.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one = self.collecting.lock().unwrap_or_else(|p| p.into_inner());
        let a = (self.accounts)().unwrap_or_default();
        raise(&self.produced, a.ledger.produced);
        raise(&self.served, a.ledger.served);
        raise(&self.resent, a.ledger.resent);
        raise(&self.served_bytes, a.ledger.served_bytes);
        for reason in Discard::ALL {
            raise(
                &self.discarded.with_label_values(&[reason.label()]),
                a.ledger.discarded(reason),
            );
        }
        self.buffered_elements.set(a.buffered_elements as i64);
        self.buffered_bytes.set(a.buffered_bytes as i64);
        for state in TaskState::ALL {
            self.tasks
                .with_label_values(&[state.label()])
                .set(a.tasks_in(state) as i64);
        }
        [
            self.produced.collect(),
            self.served.collect(),
            self.resent.collect(),
            self.served_bytes.collect(),
            self.discarded.collect(),
            self.buffered_elements.collect(),
            self.buffered_bytes.collect(),
            self.tasks.collect(),
        ]
        .concat()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn scrape(exporter: &Exporter) -> prometheus_parse::Scrape {
        let text = exporter.encode();
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("a valid exposition")
    }

    fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{name} {label:?} missing"));
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a number"),
        }
    }

    #[test]
    fn the_engine_snapshot_is_exposed_with_every_reason_and_state() {
        let exporter = Exporter::new("worker");
        let _metrics = WorkerMetrics::register(&exporter);
        let snapshot = Arc::new(Mutex::new(Accounts::default()));
        let shared = snapshot.clone();
        WorkerMetrics::watch_engine(&exporter, move || Some(*shared.lock().unwrap()));
        let s = scrape(&exporter);
        for reason in Discard::ALL {
            let v = value(
                &s,
                "cachew_worker_elements_discarded_total",
                Some(("reason", reason.label())),
            );
            assert_eq!(v, 0.0);
        }
        for state in TaskState::ALL {
            let v = value(&s, "cachew_worker_tasks", Some(("state", state.label())));
            assert_eq!(v, 0.0);
        }
        {
            let mut a = snapshot.lock().unwrap();
            a.ledger.produced = 10;
            a.ledger.served = 4;
            a.ledger.resent = 2;
            a.ledger.served_bytes = 600;
            a.ledger.discard(Discard::Rewound, 3);
            a.buffered_elements = 3;
            a.buffered_bytes = 700;
            a.count_task(TaskState::Full);
            assert!(a.balanced());
        }
        let s = scrape(&exporter);
        assert_eq!(
            value(&s, "cachew_worker_elements_produced_total", None),
            10.0
        );
        assert_eq!(value(&s, "cachew_worker_elements_served_total", None), 4.0);
        assert_eq!(value(&s, "cachew_worker_elements_resent_total", None), 2.0);
        assert_eq!(value(&s, "cachew_worker_served_bytes_total", None), 600.0);
        let rewound = ("reason", "rewound");
        assert_eq!(
            value(&s, "cachew_worker_elements_discarded_total", Some(rewound)),
            3.0
        );
        assert_eq!(value(&s, "cachew_worker_buffered_elements", None), 3.0);
        assert_eq!(value(&s, "cachew_worker_buffered_bytes", None), 700.0);
        assert_eq!(
            value(&s, "cachew_worker_tasks", Some(("state", "full"))),
            1.0
        );
        assert_eq!(
            value(&s, "cachew_worker_tasks", Some(("state", "idle"))),
            0.0
        );
        // Every worker metric follows the naming rules and has a help text.
        let text = exporter.encode();
        for line in text
            .lines()
            .filter(|l| l.starts_with("# HELP cachew_worker_"))
        {
            assert!(line.ends_with('.'), "{line}");
        }
        for name in [
            "cachew_worker_op_seconds",
            "cachew_worker_checkpoint_write_seconds",
            "cachew_worker_checkpoint_age_seconds",
            "cachew_worker_checkpoint_failures_total",
            "cachew_worker_cache_hits_total",
            "cachew_worker_cache_misses_total",
            "cachew_worker_cache_written_bytes_total",
            "cachew_worker_cache_read_bytes_total",
            "cachew_worker_cache_repairs_total",
            "cachew_worker_fetch_seconds",
            "cachew_worker_fetches_total",
            "cachew_worker_registered",
            "cachew_worker_draining",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
    }

    #[test]
    fn op_times_and_fetch_outcomes_count_under_their_labels() {
        let exporter = Exporter::new("worker");
        let metrics = WorkerMetrics::register(&exporter);
        metrics.ops.op_done("decode_jpeg", Duration::from_millis(2));
        metrics.ops.op_done("read", Duration::from_micros(50));
        metrics
            .fetch
            .done(FetchOutcome::WrongLease, Duration::from_millis(1));
        metrics
            .fetch
            .done(FetchOutcome::Ok, Duration::from_millis(1));
        metrics
            .fetch
            .done(FetchOutcome::Ok, Duration::from_millis(1));
        let s = scrape(&exporter);
        // Observations per op: the histogram's +Inf bucket.
        let observed = |op: &str| {
            let sample = s
                .samples
                .iter()
                .find(|x| x.metric == "cachew_worker_op_seconds" && x.labels.get("op") == Some(op))
                .unwrap_or_else(|| panic!("no histogram for {op}"));
            match &sample.value {
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                _ => panic!("op_seconds is not a histogram"),
            }
        };
        assert_eq!(observed("decode_jpeg"), 1.0);
        assert_eq!(observed("read"), 1.0);
        assert_eq!(observed("resize"), 0.0);
        assert_eq!(
            value(&s, "cachew_worker_fetches_total", Some(("outcome", "ok"))),
            2.0
        );
        assert_eq!(
            value(
                &s,
                "cachew_worker_fetches_total",
                Some(("outcome", "wrong_lease"))
            ),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "cachew_worker_fetches_total",
                Some(("outcome", "bad_index"))
            ),
            0.0
        );
    }

    #[test]
    fn readiness_follows_the_lifecycle() {
        let exporter = Exporter::new("worker");
        let metrics = WorkerMetrics::register(&exporter);
        let l = &metrics.lifecycle;
        let ready = || exporter.health().readiness();
        assert_eq!(ready(), Err("registering".to_string()));
        l.unreachable();
        assert_eq!(ready(), Err("dispatcher unreachable".to_string()));
        l.registered();
        assert_eq!(ready(), Ok(()));
        assert_eq!(l.registered.get(), 1);
        l.draining();
        assert_eq!(ready(), Err("draining".to_string()));
        // Draining is for good: a heartbeat that gets through does not make it ready again.
        l.registered();
        l.unreachable();
        assert_eq!(ready(), Err("draining".to_string()));
        l.left();
        assert_eq!(ready(), Err("left".to_string()));
        assert_eq!((l.registered.get(), l.draining.get()), (0, 1));
    }

    #[test]
    fn checkpoint_age_counts_from_the_start_then_from_the_last_write() {
        let exporter = Exporter::new("worker");
        let metrics = WorkerMetrics::register(&exporter);
        let age = |e: &Exporter| value(&scrape(e), "cachew_worker_checkpoint_age_seconds", None);
        assert_eq!(age(&exporter), 0.0, "disabled: 0");
        metrics.checkpoint.started();
        std::thread::sleep(Duration::from_millis(30));
        let waited = age(&exporter);
        assert!(waited >= 0.03, "{waited}");
        metrics.checkpoint.written(Duration::from_millis(3));
        assert!(age(&exporter) < waited);
        metrics.checkpoint.failed();
        let s = scrape(&exporter);
        assert_eq!(
            value(&s, "cachew_worker_checkpoint_failures_total", None),
            1.0
        );
    }
}
