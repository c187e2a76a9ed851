//! The client's metrics ([`ClientMetrics`]) and its input-bound signal ([`WaitClock`]: how much
//! of the trainer's wall time goes to waiting for data).
//!
//! # For a trainer embedding the library
//! Every [`JobClient`](crate::JobClient) counts into a [`ClientMetrics`]: the one passed in
//! [`ClientConfig::metrics`](crate::ClientConfig::metrics), or else one of its own on a private
//! [`Exporter`]. A trainer that serves Prometheus metrics already registers the client's on its
//! own exporter (`ClientMetrics::register(&my_exporter)`, once, shared by all its clients: the
//! `job` label tells them apart); one that does not serves the client's exporter
//! (`cachew_metrics::spawn(cachew_metrics::bind(addr).await?, client.metrics().exporter().clone())`)
//! or encodes it ([`Exporter::encode`]). `cachew-client --metrics-listen ADDR` does the latter.
//! The client sets the exporter's readiness: not ready ("connecting") until it is attached to
//! its job, ready while attached, not ready ("finished", "stopping", "superseded") after.
//!
//! # The metrics (label `job` = the job name on all of them)
//! - `cachew_client_elements_received_total`: elements received from workers (including those
//!   the client then discards), counted as each fetch answer is handed on to the consumer or
//!   dropped (an answer in the hands of a fetcher aborted meanwhile counts nowhere, so the
//!   balance below stays exact).
//! - `cachew_client_elements_discarded_total`: received elements never handed to the trainer:
//!   records the pipeline skipped (`on_error = "skip"`), examples a `drop_remainder` batcher
//!   drops at an epoch's end, and elements still buffered when the client stops, is superseded
//!   or a fetch answer breaks the protocol. A fetcher asks a split's (new) owner for exactly the
//!   next index it lacks, so a retried or failed-over fetch brings no duplicate; one that did
//!   would be a protocol error. Once a client has ended, received == delivered + discarded.
//! - `cachew_client_elements_delivered_total`: examples handed to the trainer in batches.
//! - `cachew_client_batches_total`: batches handed to the trainer.
//! - `cachew_client_wait_seconds` (histogram): per batch, the time the trainer's calls to
//!   [`JobClient::next`](crate::JobClient::next) spent blocked on an empty fetch buffer. Only
//!   the await on the head split's channel counts, not batching or bookkeeping; its `_sum` rate
//!   is the fraction of wall time the trainer waits for data.
//! - `cachew_client_batching_seconds` (histogram): time spent assembling each batch (the batch
//!   op over its examples).
//! - `cachew_client_epoch_seconds` (histogram): wall time of each finished epoch (from the
//!   attach, for an epoch resumed mid-way).
//! - `cachew_client_epochs_total{verdict}`: finished epochs by the trainer's exactly-once
//!   verdict (`exactly_once`, `violated`, or `unverified` when no verified
//!   [`EpochReport`](cachew_proto::v1::EpochReport) came before the next epoch ended or the
//!   client ended).
//! - `cachew_client_fetch_retries_total`: fetches retried (a worker unreachable or silent, a
//!   split moved, a worker not yet holding the lease, ...).
//! - `cachew_client_fetch_seconds` (histogram): duration of one fetch RPC to a worker.
//! - `cachew_client_input_wait_ratio` (gauge): fraction of wall time spent waiting for data
//!   over the last ~10 s ([`WAIT_WINDOW`]); the heartbeat carries it (and the total seconds
//!   waited) to the dispatcher.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use cachew_metrics::prometheus::{
    Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec,
};
use cachew_metrics::{Exporter, duration_buckets, latency_buckets, op_buckets};

/// The span over which [`WaitClock::ratio`] measures the recent share of time waiting.
pub const WAIT_WINDOW: Duration = Duration::from_secs(10);

/// How far apart the clock's samples are (the window's resolution).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The wait clocks of the live clients, by job name.
type Clocks = Mutex<Vec<(String, Weak<WaitClock>)>>;

/// The client metrics registered on one exporter; cheap to clone (shared).
#[derive(Clone)]
pub struct ClientMetrics {
    exporter: Exporter,
    received: IntCounterVec,
    discarded: IntCounterVec,
    delivered: IntCounterVec,
    batches: IntCounterVec,
    wait: HistogramVec,
    batching: HistogramVec,
    epoch: HistogramVec,
    epochs: IntCounterVec,
    fetch_retries: IntCounterVec,
    fetch: HistogramVec,
    ratio: GaugeVec,
    /// The wait clocks of the live clients, read by the scrape hook.
    clocks: Arc<Clocks>,
}

impl std::fmt::Debug for ClientMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientMetrics")
            .field("exporter", &self.exporter)
            .finish_non_exhaustive()
    }
}

impl ClientMetrics {
    /// Registers the client metrics on `exporter`. Once per exporter: a second registration
    /// clashes (logged) and its counts stay unseen; share the returned value instead.
    pub fn register(exporter: &Exporter) -> ClientMetrics {
        let e = exporter;
        let job = &["job_name"];
        let ratio = e.gauge_vec(
            "cachew_client_input_wait_ratio",
            "Fraction of wall time the trainer spent waiting for data over the last ~10 seconds (0 to 1).",
            job,
        );
        let metrics = ClientMetrics {
            exporter: exporter.clone(),
            received: e.counter_vec(
                "cachew_client_elements_received_total",
                "Elements received from workers, including those the client then discarded.",
                job,
            ),
            discarded: e.counter_vec(
                "cachew_client_elements_discarded_total",
                "Received elements the client did not hand to the trainer (skipped records, dropped remainders, buffers of a stopped client).",
                job,
            ),
            delivered: e.counter_vec(
                "cachew_client_elements_delivered_total",
                "Examples handed to the trainer.",
                job,
            ),
            batches: e.counter_vec(
                "cachew_client_batches_total",
                "Batches handed to the trainer.",
                job,
            ),
            wait: e.histogram_vec(
                "cachew_client_wait_seconds",
                "Per batch, the seconds the trainer's calls for the next batch spent blocked waiting for fetched data.",
                job,
                duration_buckets(),
            ),
            batching: e.histogram_vec(
                "cachew_client_batching_seconds",
                "Seconds spent assembling each batch from its examples.",
                job,
                op_buckets(),
            ),
            epoch: e.histogram_vec(
                "cachew_client_epoch_seconds",
                "Wall-clock seconds of each finished epoch.",
                job,
                duration_buckets(),
            ),
            epochs: e.counter_vec(
                "cachew_client_epochs_total",
                "Finished epochs, by exactly-once verdict (exactly_once, violated, unverified).",
                &["job_name", "verdict"],
            ),
            fetch_retries: e.counter_vec(
                "cachew_client_fetch_retries_total",
                "Fetches retried because a worker was unreachable or silent, a split moved, or a worker did not hold the lease yet.",
                job,
            ),
            fetch: e.histogram_vec(
                "cachew_client_fetch_seconds",
                "Seconds one fetch RPC to a worker took.",
                job,
                latency_buckets(),
            ),
            ratio: ratio.clone(),
            clocks: Arc::default(),
        };
        let clocks = Arc::downgrade(&metrics.clocks);
        exporter.on_scrape(move || {
            let Some(clocks) = clocks.upgrade() else {
                return;
            };
            let mut clocks = clocks.lock().unwrap_or_else(|p| p.into_inner());
            clocks.retain(|(_, clock)| clock.strong_count() > 0);
            for (job, clock) in clocks.iter() {
                if let Some(clock) = clock.upgrade() {
                    ratio.with_label_values(&[job]).set(clock.ratio());
                }
            }
        });
        metrics
    }

    /// The exporter the metrics are registered on (its readiness follows the client).
    pub fn exporter(&self) -> &Exporter {
        &self.exporter
    }

    /// The handles of one client of job `job`, whose wait `clock` the scrape reads (a
    /// [`JobClient`](crate::JobClient) makes its own; public for tests of the fetcher).
    pub fn for_job(&self, job: &str, clock: &Arc<WaitClock>) -> JobMetrics {
        let mut clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded by the live clients even when nobody scrapes.
        clocks.retain(|(_, c)| c.strong_count() > 0);
        clocks.push((job.to_string(), Arc::downgrade(clock)));
        drop(clocks);
        let l = &[job];
        // Shown from the start; a client that ends sets its last value.
        let ratio = self.ratio.with_label_values(l);
        ratio.set(0.0);
        // Every verdict from zero, so a rate over a first epoch is seen.
        for verdict in VERDICTS {
            self.epochs.with_label_values(&[job, verdict]);
        }
        JobMetrics {
            job: job.to_string(),
            received: self.received.with_label_values(l),
            discarded: self.discarded.with_label_values(l),
            delivered: self.delivered.with_label_values(l),
            batches: self.batches.with_label_values(l),
            wait: self.wait.with_label_values(l),
            batching: self.batching.with_label_values(l),
            epoch: self.epoch.with_label_values(l),
            fetch_retries: self.fetch_retries.with_label_values(l),
            fetch: self.fetch.with_label_values(l),
            ratio,
            epochs: self.epochs.clone(),
            unreported: Arc::default(),
        }
    }
}

/// One client's metric handles, resolved for its job (hot paths bump these without a lookup).
#[derive(Debug, Clone)]
pub struct JobMetrics {
    job: String,
    pub(crate) received: IntCounter,
    pub(crate) discarded: IntCounter,
    pub(crate) delivered: IntCounter,
    pub(crate) batches: IntCounter,
    pub(crate) wait: Histogram,
    pub(crate) batching: Histogram,
    pub(crate) epoch: Histogram,
    pub(crate) fetch_retries: IntCounter,
    pub(crate) fetch: Histogram,
    /// The wait ratio (set by the scrape hook while the client lives, and once as it ends).
    pub(crate) ratio: Gauge,
    epochs: IntCounterVec,
    /// The finished epoch whose verdict the trainer has not reported yet.
    unreported: Arc<Mutex<Option<u64>>>,
}

/// The values of the `verdict` label.
const VERDICTS: [&str; 3] = ["exactly_once", "violated", "unverified"];

/// The `verdict` label of an epoch report.
pub(crate) fn verdict_of(report: &cachew_proto::v1::EpochReport) -> &'static str {
    match (report.verified, report.exactly_once) {
        (true, true) => "exactly_once",
        (true, false) => "violated",
        (false, _) => "unverified",
    }
}

impl JobMetrics {
    fn unreported(&self) -> MutexGuard<'_, Option<u64>> {
        self.unreported.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count_epoch(&self, verdict: &str) {
        self.epochs.with_label_values(&[&self.job, verdict]).inc();
    }

    /// Epoch `epoch` ended after `elapsed`; its verdict is counted when the trainer reports
    /// it, or as unverified when it does not before the next epoch ends or the client ends.
    pub(crate) fn epoch_ended(&self, epoch: u64, elapsed: Duration) {
        self.epoch.observe(elapsed.as_secs_f64());
        let previous = self.unreported().replace(epoch);
        if previous.is_some() {
            self.count_epoch("unverified");
        }
    }

    /// The trainer's report of a finished epoch.
    pub(crate) fn epoch_reported(&self, report: &cachew_proto::v1::EpochReport) {
        let mut unreported = self.unreported();
        if *unreported == Some(report.epoch) {
            *unreported = None;
            drop(unreported);
            self.count_epoch(verdict_of(report));
        }
    }

    /// The client ends: an epoch still without a report is unverified.
    pub(crate) fn client_ended(&self) {
        if self.unreported().take().is_some() {
            self.count_epoch("unverified");
        }
    }
}

/// How long the trainer has waited for data: in total, and as a share of the recent wall time.
/// Waits are bracketed by [`WaitClock::begin`] and [`WaitClock::end`]; a wait in progress
/// counts up to the moment it is read, so a trainer stalled on one long fetch shows as waiting.
#[derive(Debug)]
pub struct WaitClock {
    state: Mutex<WaitState>,
}

#[derive(Debug)]
struct WaitState {
    total: Duration,
    waiting_since: Option<Instant>,
    /// (when, total waited by then), about [`SAMPLE_EVERY`] apart; the first is the oldest
    /// still needed to cover [`WAIT_WINDOW`].
    samples: VecDeque<(Instant, Duration)>,
}

/// A wait in progress ([`WaitClock::waiting`]).
#[derive(Debug)]
pub struct Waiting<'a>(&'a WaitClock);

impl Waiting<'_> {
    /// Ends the wait; returns how long it took.
    pub fn end(self) -> Duration {
        self.0.end()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl Default for WaitClock {
    fn default() -> WaitClock {
        WaitClock::starting_at(Instant::now())
    }
}

impl WaitClock {
    fn starting_at(now: Instant) -> WaitClock {
        WaitClock {
            state: Mutex::new(WaitState {
                total: Duration::ZERO,
                waiting_since: None,
                samples: VecDeque::from([(now, Duration::ZERO)]),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WaitState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The trainer starts waiting for data (a wait already in progress goes on).
    pub fn begin(&self) {
        self.begin_at(Instant::now());
    }

    /// The wait ends; returns how long it took (zero if none was in progress).
    pub fn end(&self) -> Duration {
        self.end_at(Instant::now())
    }

    /// Begins a wait that ends when the returned guard is ended or dropped: a trainer that
    /// cancels its call for the next batch (a `select!`, a timeout) does not leave the clock
    /// counting its compute time as waiting.
    pub fn waiting(&self) -> Waiting<'_> {
        self.begin();
        Waiting(self)
    }

    /// Seconds waited since the client started.
    pub fn total_seconds(&self) -> f64 {
        let now = Instant::now();
        self.lock().total_at(now).as_secs_f64()
    }

    /// The share of wall time spent waiting over the last [`WAIT_WINDOW`] (or since the start,
    /// if shorter), from 0 to 1.
    pub fn ratio(&self) -> f64 {
        self.ratio_at(Instant::now())
    }

    fn begin_at(&self, now: Instant) {
        let mut s = self.lock();
        if s.waiting_since.is_none() {
            s.waiting_since = Some(now);
        }
        s.sample(now);
    }

    fn end_at(&self, now: Instant) -> Duration {
        let mut s = self.lock();
        let Some(since) = s.waiting_since.take() else {
            return Duration::ZERO;
        };
        let waited = now.saturating_duration_since(since);
        s.total += waited;
        s.sample(now);
        waited
    }

    fn ratio_at(&self, now: Instant) -> f64 {
        let mut s = self.lock();
        s.sample(now);
        let Some(&(then, waited_then)) = s.samples.front() else {
            return 0.0;
        };
        let span = now.saturating_duration_since(then);
        if span.is_zero() {
            return 0.0;
        }
        let waited = s.total_at(now).saturating_sub(waited_then);
        (waited.as_secs_f64() / span.as_secs_f64()).clamp(0.0, 1.0)
    }
}

impl WaitState {
    fn total_at(&self, now: Instant) -> Duration {
        self.total
            + self
                .waiting_since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }

    /// Records a sample if the last is [`SAMPLE_EVERY`] old, and forgets those no longer
    /// needed (keeping the newest one at least [`WAIT_WINDOW`] old as the window's start).
    fn sample(&mut self, now: Instant) {
        let due = self
            .samples
            .back()
            .is_none_or(|&(t, _)| now.saturating_duration_since(t) >= SAMPLE_EVERY);
        if due {
            let total = self.total_at(now);
            self.samples.push_back((now, total));
        }
        while self
            .samples
            .get(1)
            .is_some_and(|&(t, _)| now.saturating_duration_since(t) >= WAIT_WINDOW)
        {
            self.samples.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_cancelled_wait_stops_counting() {
        let clock = WaitClock::default();
        {
            let _waiting = clock.waiting();
            std::thread::sleep(Duration::from_millis(5));
            // Dropped here, as when the trainer's call for the next batch is cancelled.
        }
        assert!(clock.total_seconds() >= 0.005);
        let after = clock.total_seconds();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            clock.total_seconds(),
            after,
            "no wait is in progress any more"
        );
        assert_eq!(clock.end(), Duration::ZERO);
    }

    /// Runs `batches` trainer steps on a clock: each waits `wait` for data, then trains `step`.
    fn run(clock: &WaitClock, start: Instant, batches: u32, wait: Duration, step: Duration) {
        let mut now = start;
        for _ in 0..batches {
            clock.begin_at(now);
            now += wait;
            clock.end_at(now);
            now += step;
        }
    }

    #[test]
    fn a_slow_source_shows_as_a_high_wait_share() {
        let start = Instant::now();
        let clock = WaitClock::starting_at(start);
        // 90 ms waiting for every 10 ms of training, for 30 s.
        run(
            &clock,
            start,
            300,
            Duration::from_millis(90),
            Duration::from_millis(10),
        );
        let ratio = clock.ratio_at(start + Duration::from_secs(30));
        assert!((ratio - 0.9).abs() < 0.02, "{ratio}");
        let total = clock.lock().total;
        assert_eq!(total, Duration::from_millis(90 * 300));
    }

    #[test]
    fn a_fast_source_shows_as_almost_no_wait() {
        let start = Instant::now();
        let clock = WaitClock::starting_at(start);
        run(
            &clock,
            start,
            3000,
            Duration::from_micros(20),
            Duration::from_millis(10),
        );
        let ratio = clock.ratio_at(start + Duration::from_secs(30));
        assert!(ratio < 0.01, "{ratio}");
    }

    #[test]
    fn the_ratio_follows_the_last_window_not_the_whole_run() {
        let start = Instant::now();
        let clock = WaitClock::starting_at(start);
        // Starved for 60 s, then fed for 20 s: the recent share is near zero.
        run(
            &clock,
            start,
            600,
            Duration::from_millis(99),
            Duration::from_millis(1),
        );
        let fed = start + Duration::from_secs(60);
        run(&clock, fed, 2000, Duration::ZERO, Duration::from_millis(10));
        let ratio = clock.ratio_at(fed + Duration::from_secs(20));
        assert!(ratio < 0.01, "{ratio}");
        assert!(clock.lock().samples.len() <= 12);
    }

    #[test]
    fn a_wait_in_progress_counts_until_it_is_read() {
        let start = Instant::now();
        let clock = WaitClock::starting_at(start);
        clock.begin_at(start + Duration::from_secs(5));
        let ratio = clock.ratio_at(start + Duration::from_secs(15));
        assert!((ratio - 1.0).abs() < 0.01, "{ratio}");
        assert_eq!(
            clock.end_at(start + Duration::from_secs(16)),
            Duration::from_secs(11)
        );
        assert_eq!(
            clock.end_at(start + Duration::from_secs(17)),
            Duration::ZERO
        );
    }

    #[test]
    fn verdicts_come_from_the_report_or_default_to_unverified() {
        let exporter = Exporter::new("client");
        let metrics = ClientMetrics::register(&exporter);
        let clock = Arc::new(WaitClock::default());
        let job = metrics.for_job("j", &clock);
        let count = |verdict: &str| metrics.epochs.with_label_values(&["j", verdict]).get();
        job.epoch_ended(0, Duration::from_secs(1));
        job.epoch_reported(&cachew_proto::v1::EpochReport {
            epoch: 0,
            verified: true,
            exactly_once: true,
            ..Default::default()
        });
        job.epoch_ended(1, Duration::from_secs(1));
        job.epoch_reported(&cachew_proto::v1::EpochReport {
            epoch: 1,
            verified: true,
            ..Default::default()
        });
        // Epoch 2 is never reported before epoch 3 ends; epoch 3 not before the client ends.
        job.epoch_ended(2, Duration::from_secs(1));
        job.epoch_ended(3, Duration::from_secs(1));
        job.client_ended();
        assert_eq!(
            (
                count("exactly_once"),
                count("violated"),
                count("unverified")
            ),
            (1, 1, 2)
        );
        assert!(
            exporter
                .encode()
                .contains("cachew_client_input_wait_ratio{job_name=\"j\"} 0")
        );
    }
}
