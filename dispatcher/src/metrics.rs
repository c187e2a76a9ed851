//! The dispatcher's Prometheus metrics ([`DispatcherMetrics`]), registered on the process's
//! `cachew_metrics::Exporter`. Counters move where the change happens: `execute` (splits
//! assigned, completed, failed over), the event log (events by kind), the journal writer
//! (appends, batch write latency) and worker heartbeats (gaps). Gauges that describe the state
//! (workers and jobs by state, consumers, journal size, snapshot age) are read from the core
//! under its lock when scraped ([`DispatcherMetrics::refresh`]).
//!
//! Labels are of low cardinality: worker state, job state, event kind, the reason a split moved.
//! Nothing here changes what the dispatcher decides.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cachew_metrics::Exporter;
use cachew_metrics::prometheus::{
    Gauge, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use cachew_proto::names::Name;
use cachew_proto::v1;

use crate::soft::Soft;
use crate::state::{Command, JobRest, Outcome, State};

/// Why a split moved to another worker (the `reason` label of `splits_failed_over_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MoveReason {
    /// Its worker was declared dead.
    Dead,
    /// Its worker drained.
    Drain,
    /// Its consumer could not reach its worker.
    Unreachable,
}

impl MoveReason {
    fn of(command: &Command) -> Option<MoveReason> {
        match command {
            Command::DeclareDead { .. } => Some(MoveReason::Dead),
            Command::DrainWorker { .. } | Command::Shrink { .. } => Some(MoveReason::Drain),
            Command::ConsumerUnreachable { .. } => Some(MoveReason::Unreachable),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            MoveReason::Dead => "dead",
            MoveReason::Drain => "drain",
            MoveReason::Unreachable => "unreachable",
        }
    }
}

/// Handles to every dispatcher metric.
#[derive(Debug, Clone)]
pub(crate) struct DispatcherMetrics {
    splits_assigned: IntCounter,
    splits_completed: IntCounter,
    splits_failed_over: IntCounterVec,
    events: IntCounterVec,
    commands: IntCounter,
    journal_appends: IntCounter,
    journal_write: Histogram,
    journal_bytes: IntGauge,
    journal_replay_records: IntGauge,
    snapshot_age: Gauge,
    heartbeat_gap: Histogram,
    workers: IntGaugeVec,
    jobs: IntGaugeVec,
    consumers: IntGauge,
    assignments: IntGauge,
    workers_wanted: IntGauge,
    /// Where the journal lives (its size on disk is measured at scrape).
    journal_dir: Option<PathBuf>,
}

/// The worker states, as the status stream names them.
const WORKER_STATES: [v1::WorkerState; 6] = [
    v1::WorkerState::Alive,
    v1::WorkerState::Suspect,
    v1::WorkerState::Standby,
    v1::WorkerState::Draining,
    v1::WorkerState::Left,
    v1::WorkerState::Dead,
];

/// The job states: `running` (a consumer attached, not finished), `finished`, `abandoned`.
const JOB_STATES: [&str; 3] = ["running", "finished", "abandoned"];

impl DispatcherMetrics {
    pub(crate) fn register(exporter: &Exporter, journal_dir: Option<PathBuf>) -> Self {
        let e = exporter;
        let m = DispatcherMetrics {
            splits_assigned: e.counter(
                "cachew_dispatcher_splits_assigned_total",
                "Split assignments made: a split given to a worker under a fresh lease (first assignments and moves).",
            ),
            splits_completed: e.counter(
                "cachew_dispatcher_splits_completed_total",
                "Splits delivered in full: positions the consumers' durable cursors moved past.",
            ),
            splits_failed_over: e.counter_vec(
                "cachew_dispatcher_splits_failed_over_total",
                "Splits moved off their worker (one per `failover` event), by reason: dead (declared dead), drain, unreachable (its client could not reach it).",
                &["reason"],
            ),
            events: e.counter_vec(
                "cachew_dispatcher_events_total",
                "Status-stream events published, by kind (the same kinds as the status stream and the JSON logs).",
                &["kind"],
            ),
            commands: e.counter(
                "cachew_dispatcher_commands_total",
                "State changes applied (commands that changed the state; each is one journal record when the journal is on).",
            ),
            journal_appends: e.counter(
                "cachew_dispatcher_journal_appends_total",
                "Journal records made durable.",
            ),
            journal_write: e.histogram(
                "cachew_dispatcher_journal_fsync_seconds",
                "Time to make one batch of journal records durable (write and fsync; group commit: one per batch).",
                cachew_metrics::latency_buckets(),
            ),
            journal_bytes: e.int_gauge(
                "cachew_dispatcher_journal_bytes",
                "Bytes the journal directory takes on disk (0 without a journal).",
            ),
            journal_replay_records: e.int_gauge(
                "cachew_dispatcher_journal_replay_records",
                "Journal records after the last snapshot: what a restart would replay.",
            ),
            snapshot_age: e.gauge(
                "cachew_dispatcher_snapshot_age_seconds",
                "Seconds since the last journal snapshot (0 without a journal or before the first snapshot).",
            ),
            heartbeat_gap: e.histogram(
                "cachew_dispatcher_heartbeat_gap_seconds",
                "Time between consecutive heartbeats of a worker, as the dispatcher received them (long polls included).",
                cachew_metrics::latency_buckets(),
            ),
            workers: e.int_gauge_vec(
                "cachew_dispatcher_workers",
                "Workers the dispatcher knows, by state (alive, suspect, standby, draining, left, dead).",
                &["state"],
            ),
            jobs: e.int_gauge_vec(
                "cachew_dispatcher_jobs",
                "Jobs the dispatcher holds, by state (running, finished, abandoned: no consumer attached).",
                &["state"],
            ),
            consumers: e.int_gauge(
                "cachew_dispatcher_consumers_attached",
                "Training clients (consumers) attached to a job.",
            ),
            assignments: e.int_gauge(
                "cachew_dispatcher_assignments",
                "Splits assigned to a worker and not yet delivered.",
            ),
            workers_wanted: e.int_gauge(
                "cachew_dispatcher_workers_wanted",
                "Workers the fleet is brought to: an operator's pin, else the autoscaler's target (0: nothing decided).",
            ),
            journal_dir,
        };
        for s in WORKER_STATES {
            m.workers.with_label_values(&[s.name()]).set(0);
        }
        for s in JOB_STATES {
            m.jobs.with_label_values(&[s]).set(0);
        }
        for r in [MoveReason::Dead, MoveReason::Drain, MoveReason::Unreachable] {
            m.splits_failed_over.with_label_values(&[r.label()]);
        }
        for kind in v1::EventKind::ALL {
            m.events.with_label_values(&[kind.name()]);
        }
        m
    }

    /// Counts what applying `command` produced.
    pub(crate) fn applied(&self, command: &Command, outcome: &Outcome) {
        if outcome.noop {
            return;
        }
        self.commands.inc();
        self.splits_assigned.inc_by(outcome.assigned.len() as u64);
        self.splits_completed.inc_by(outcome.completed);
        let moved = outcome
            .events
            .iter()
            .filter(|e| e.kind == v1::EventKind::Failover)
            .count() as u64;
        if moved > 0 {
            let reason = MoveReason::of(command).unwrap_or(MoveReason::Dead);
            self.splits_failed_over
                .with_label_values(&[reason.label()])
                .inc_by(moved);
        }
    }

    /// The counter of published events by kind (the event log bumps it).
    pub(crate) fn events(&self) -> IntCounterVec {
        self.events.clone()
    }

    /// Counts a batch of `records` journal records made durable in `took`.
    pub(crate) fn journal_written(&self, records: u64, took: Duration) {
        self.journal_appends.inc_by(records);
        self.journal_write.observe(took.as_secs_f64());
    }

    /// Notes a worker heartbeat that came `gap` after the previous one.
    pub(crate) fn heartbeat_gap(&self, gap: Duration) {
        self.heartbeat_gap.observe(gap.as_secs_f64());
    }

    /// Sets the state gauges (called at scrape, under the core lock).
    pub(crate) fn refresh(&self, state: &State, soft: &Soft, journal: Option<&v1::JournalStatus>) {
        for s in WORKER_STATES {
            let n = state
                .workers
                .values()
                .filter(|w| soft.worker_state(w) == s)
                .count();
            self.workers.with_label_values(&[s.name()]).set(n as i64);
        }
        let mut jobs = [0i64; 3];
        let mut consumers = 0i64;
        let mut assignments = 0i64;
        for job in state.jobs.values() {
            let i = match State::job_rest(job) {
                None => 0,
                Some(JobRest::Finished) => 1,
                Some(JobRest::Abandoned) => 2,
            };
            jobs[i] += 1;
            consumers += job.consumers.iter().filter(|c| c.attached).count() as i64;
            assignments += job.assignments.len() as i64;
        }
        for (s, n) in JOB_STATES.iter().zip(jobs) {
            self.jobs.with_label_values(&[s]).set(n);
        }
        self.consumers.set(consumers);
        self.assignments.set(assignments);
        self.workers_wanted
            .set(i64::from(state.scale.wanted().unwrap_or(0)));
        let journal = journal.filter(|j| j.enabled);
        self.journal_replay_records
            .set(journal.map_or(0, |j| j.records as i64));
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.snapshot_age.set(match journal {
            Some(j) if j.last_snapshot_unix_ms > 0 => {
                now_ms.saturating_sub(j.last_snapshot_unix_ms) as f64 / 1000.0
            }
            _ => 0.0,
        });
    }

    /// Measures the journal's size on disk (called at scrape, outside the core lock).
    pub(crate) fn refresh_disk(&self) {
        let bytes = self.journal_dir.as_deref().map_or(0, disk_bytes);
        self.journal_bytes.set(bytes as i64);
    }
}

/// Bytes allocated to the files under `dir` (fjall preallocates its journal files sparsely, so
/// their length overstates them); a bounded walk: the journal holds a few dozen files.
fn disk_bytes(dir: &Path) -> u64 {
    const MAX_ENTRIES: usize = 10_000;
    let mut total = 0;
    let mut seen = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                return total;
            }
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += std::os::unix::fs::MetadataExt::blocks(&m) * 512,
                Err(_) => {}
            }
        }
    }
    total
}

/// The time since `earlier`, if any (a heartbeat gap).
pub(crate) fn since(earlier: Option<Instant>, now: Instant) -> Option<Duration> {
    earlier.map(|t| now.saturating_duration_since(t))
}
