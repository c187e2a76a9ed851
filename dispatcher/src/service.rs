//! The dispatcher service's core: the [`State`], the soft facts and the event log behind one
//! lock, and the one path by which a command changes the state (`DispatcherService::execute`:
//! apply, queue for the journal, publish its events, wake the long polls). It runs the timed
//! decisions of `policy` and serves status snapshots (`status`).
//!
//! Every RPC (`rpc`) takes the core lock for a short, await-free critical section;
//! long polls wait on a version counter that is bumped whenever anything changes. Nothing here
//! replies before the state it reveals is durable ([`DispatcherService::durable`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cachew_proto::v1;
use cachew_proto::v1::EventKind;
use cachew_store::Journal;
use tokio::sync::watch;
use tonic::Status;

use crate::config::DispatcherConfig;
use crate::datasets::DatasetIndex;
use crate::durable::{Batch, Durability, Pending, Take};
use crate::events::{EventLog, unix_ms};
use crate::metrics::DispatcherMetrics;
use crate::policy::liveness::{self, Limits, Verdict};
use crate::policy::retention;
use crate::soft::Soft;
use crate::state::{Command, Outcome, Rejection, State};
use crate::status::StatusView;

/// What the lock guards.
#[derive(Debug)]
pub(crate) struct Core {
    pub state: State,
    pub soft: Soft,
    pub events: EventLog,
    /// Journal records not yet handed to the writer.
    pending: Pending,
}

#[derive(Debug)]
struct Inner {
    core: Mutex<Core>,
    version: watch::Sender<u64>,
    config: DispatcherConfig,
    started_unix_ms: u64,
    durability: Arc<Durability>,
    datasets: DatasetIndex,
    metrics: DispatcherMetrics,
}

/// What [`DispatcherService::footprint`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub jobs: usize,
    pub workers: usize,
    pub datasets: usize,
    pub assignments: usize,
    pub soft_entries: usize,
    pub events: usize,
    pub event_bytes: usize,
    pub indexed_specs: usize,
}

/// The dispatcher service; cheap to clone.
#[derive(Debug, Clone)]
pub struct DispatcherService {
    inner: Arc<Inner>,
}

/// The journal writer's view of the service (held weakly: dropping the dispatcher closes the
/// journal).
struct JournalHost {
    inner: std::sync::Weak<Inner>,
}

impl crate::durable::WriterHost for JournalHost {
    fn take(&mut self, snapshot_due: bool) -> Take {
        let Some(inner) = self.inner.upgrade() else {
            return Take::Stop;
        };
        let mut core = inner.core.lock().unwrap_or_else(|p| p.into_inner());
        if core.pending.records.is_empty() {
            return Take::Idle;
        }
        Take::Batch(Batch {
            records: std::mem::take(&mut core.pending.records),
            last_seq: core.pending.applied,
            snapshot: snapshot_due.then(|| core.state.clone()),
        })
    }

    fn event(&mut self, kind: EventKind, message: String) {
        if let Some(inner) = self.inner.upgrade() {
            // Not ready while changes cannot be acknowledged.
            match kind {
                EventKind::JournalUnavailable => inner
                    .config
                    .metrics
                    .health()
                    .set_not_ready(format!("journal unavailable: {message}")),
                // Ready again, unless it became not ready for another reason (stopping).
                EventKind::JournalRecovered => {
                    let health = inner.config.metrics.health();
                    if health
                        .readiness()
                        .is_err_and(|r| r.starts_with("journal unavailable"))
                    {
                        health.set_ready();
                    }
                }
                _ => {}
            }
            {
                let mut core = inner.core.lock().unwrap_or_else(|p| p.into_inner());
                core.events.push(kind, message, None, None);
            }
            inner.version.send_modify(|v| *v += 1);
        }
    }

    fn alive(&self) -> bool {
        self.inner.strong_count() > 0
    }

    fn written(&mut self, records: u64, took: Duration) {
        if let Some(inner) = self.inner.upgrade() {
            inner.metrics.journal_written(records, took);
        }
    }
}

impl DispatcherService {
    /// A dispatcher without a journal (its state dies with the process).
    pub fn new(config: DispatcherConfig, state: State) -> DispatcherService {
        DispatcherService::build(config, state, Durability::disabled(), 0, None)
    }

    /// A dispatcher whose state changes are journaled in `journal` (with `state` replayed from
    /// it); spawns the journal writer on the current runtime.
    pub fn with_journal(
        config: DispatcherConfig,
        state: State,
        journal: Journal,
        replay_summary: String,
    ) -> DispatcherService {
        let last = journal.last_seq();
        let dir = journal.db_path().parent().map(std::path::Path::to_path_buf);
        let svc = DispatcherService::build(
            config,
            state,
            Durability::enabled(last, journal.stats()),
            last,
            dir,
        );
        {
            let mut core = svc.lock();
            tracing::info!("{replay_summary}");
            core.events
                .push(EventKind::JournalReplayed, replay_summary, None, None);
        }
        // The writer holds the service weakly, so dropping the dispatcher closes the journal.
        tokio::spawn(crate::durable::writer(
            journal,
            svc.inner.durability.clone(),
            JournalHost {
                inner: Arc::downgrade(&svc.inner),
            },
        ));
        svc
    }

    fn build(
        config: DispatcherConfig,
        state: State,
        durability: Arc<Durability>,
        applied: u64,
        journal_dir: Option<std::path::PathBuf>,
    ) -> DispatcherService {
        let (version, _) = watch::channel(0);
        let soft = Soft::after_start(&state, Instant::now());
        let metrics = DispatcherMetrics::register(&config.metrics, journal_dir);
        let datasets = DatasetIndex::new(config.data_root.clone());
        let svc = DispatcherService {
            inner: Arc::new(Inner {
                core: Mutex::new(Core {
                    state,
                    soft,
                    events: EventLog::counted(metrics.events()),
                    pending: Pending {
                        records: Vec::new(),
                        applied,
                    },
                }),
                version,
                config,
                started_unix_ms: unix_ms(),
                durability,
                datasets,
                metrics,
            }),
        };
        let weak = Arc::downgrade(&svc.inner);
        svc.inner.config.metrics.on_scrape(move || {
            if let Some(inner) = weak.upgrade() {
                DispatcherService { inner }.refresh_metrics();
            }
        });
        svc
    }

    /// Sets the metrics' state gauges (at scrape).
    fn refresh_metrics(&self) {
        let journal = self.journal_status();
        {
            let core = self.lock();
            self.inner
                .metrics
                .refresh(&core.state, &core.soft, Some(&journal));
        }
        self.inner.metrics.refresh_disk();
    }

    pub(crate) fn metrics(&self) -> &DispatcherMetrics {
        &self.inner.metrics
    }

    pub fn config(&self) -> &DispatcherConfig {
        &self.inner.config
    }

    pub(crate) fn datasets(&self) -> &DatasetIndex {
        &self.inner.datasets
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.inner.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the durable state (for tests and snapshots).
    pub fn state(&self) -> State {
        self.lock().state.clone()
    }

    /// Resolves with the reason when the journal failed for good (the dispatcher must stop); a
    /// journal that cannot be written for now (a full disk) does not end it.
    pub async fn journal_failed(&self) -> String {
        let mut rx = self.inner.durability.durable.subscribe();
        loop {
            if let Some(e) = self.inner.durability.failure() {
                return e;
            }
            if rx.changed().await.is_err() {
                return "the journal writer stopped".into();
            }
        }
    }

    /// The sequence number of the state an RPC is about to reveal.
    pub(crate) fn visible(core: &Core) -> u64 {
        core.pending.applied
    }

    /// Waits until the state an RPC reveals is durable.
    pub(crate) async fn durable(&self, seq: u64) -> Result<(), Status> {
        self.inner
            .durability
            .wait(seq)
            .await
            .map_err(Status::unavailable)
    }

    /// Waits until every change applied so far is durable (the timed decisions, liveness and
    /// retention, are applied without an RPC waiting for them).
    pub async fn flush(&self) -> Result<(), Status> {
        let seq = Self::visible(&self.lock());
        self.durable(seq).await
    }

    /// Applies a command, queues it for the journal, and records what it produced.
    pub(crate) fn execute(&self, core: &mut Core, command: Command) -> Result<Outcome, Rejection> {
        let outcome = core.state.apply(&command)?;
        if !outcome.noop && self.inner.durability.enabled {
            core.pending.records.push(crate::durable::encode(&command));
            core.pending.applied += 1;
            self.inner.durability.wake.notify_one();
        }
        self.inner.metrics.applied(&command, &outcome);
        for e in &outcome.events {
            core.events.push(e.kind, e.message.clone(), e.worker, e.job);
        }
        if !outcome.noop {
            self.inner.version.send_modify(|v| *v += 1);
        }
        Ok(outcome)
    }

    /// Wakes the long polls and status streams (a soft fact or an event changed).
    pub(crate) fn bump(&self) {
        self.inner.version.send_modify(|v| *v += 1);
    }

    /// How many splits ahead of each consumer's cursor are assigned.
    pub(crate) fn window(&self, state: &State) -> u32 {
        match self.inner.config.window {
            0 => (4 * state.active_workers() as u32).max(8),
            w => w,
        }
    }

    /// Waits until the state version moves past `seen` or `deadline` passes.
    pub(crate) async fn wait_change(&self, seen: u64, deadline: tokio::time::Instant) {
        let mut rx = self.inner.version.subscribe();
        if *rx.borrow() != seen {
            return;
        }
        let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
    }

    /// The current state version (bumped on every change).
    pub(crate) fn version(&self) -> u64 {
        *self.inner.version.borrow()
    }

    /// How often [`crate::serve`] runs [`Self::check_liveness`].
    pub fn liveness_tick(&self) -> Duration {
        liveness::tick(self.inner.config.heartbeat_interval)
    }

    /// Applies the liveness policy ([`liveness::check`]) now: declares workers dead whose
    /// heartbeats stopped, marks late ones suspect, releases silent consumers. Heartbeat ages
    /// exclude the dispatcher's own stalls. Called periodically by [`crate::run`].
    /// A dispatcher that hears nobody (its own link cut) excuses the time since the previous
    /// check from every heartbeat clock, as for a stall, and says so once.
    fn check_deafness(
        &self,
        core: &mut Core,
        previous_check: Option<Instant>,
        now: Instant,
        limits: &Limits,
    ) {
        match liveness::deaf(&core.state, &core.soft, now, limits) {
            Some(quiet) => {
                if let Some(prev) = previous_check {
                    core.soft
                        .excuse_stall(now.saturating_duration_since(prev), now);
                }
                if core.soft.deaf_since.is_none() {
                    core.soft.deaf_since = Some(now);
                    let msg = format!(
                        "the dispatcher has heard no worker and no client for {} ms: it suspects its own link and declares nobody dead meanwhile",
                        quiet.as_millis()
                    );
                    tracing::warn!("{msg}");
                    core.events
                        .push(EventKind::DispatcherStalled, msg, None, None);
                    self.bump();
                }
            }
            None => {
                if let Some(since) = core.soft.deaf_since.take() {
                    tracing::info!(
                        "the dispatcher hears its nodes again after {} ms",
                        now.saturating_duration_since(since).as_millis()
                    );
                }
            }
        }
    }

    pub fn check_liveness(&self) {
        let now = Instant::now();
        let limits = Limits::new(&self.inner.config);
        let mut guard = self.lock();
        let core = &mut *guard;
        let tick = self.liveness_tick();
        let previous_check = core.soft.last_check;
        if let Some((gap, lost)) = liveness::stall(core.soft.last_check.replace(now), now, tick) {
            // The dispatcher itself did not run for a while (paused, or starved of CPU): that
            // silence was its own, not the nodes'. Their clocks are moved forward by it, so the
            // heartbeats queued meanwhile are read before any verdict instead of every worker
            // being declared dead at once; silence from before the stall still counts.
            core.soft.excuse_stall(lost, now);
            if gap > limits.worker_timeout / 2 {
                let msg = format!(
                    "the dispatcher did not run for {} ms (paused or starved); heartbeat ages exclude it",
                    gap.as_millis()
                );
                tracing::warn!("{msg}");
                core.events
                    .push(EventKind::DispatcherStalled, msg, None, None);
                self.bump();
            }
        }
        self.check_deafness(core, previous_check, now, &limits);
        // A consumer's silence counts from when the dispatcher first looks for it.
        for (job, consumer, _) in liveness::attached_consumers(&core.state) {
            core.soft
                .consumer_seen
                .entry((job, consumer))
                .or_insert(now);
        }
        for verdict in liveness::check(&core.state, &core.soft, now, &limits) {
            match verdict {
                Verdict::Dead {
                    worker,
                    silent,
                    command,
                } => {
                    let msg = format!(
                        "worker {worker}: no heartbeat for {} ms (timeout {} ms)",
                        silent.as_millis(),
                        limits.worker_timeout.as_millis()
                    );
                    core.events
                        .push(EventKind::HeartbeatTimeout, msg, Some(worker), None);
                    let _ = self.execute(core, command);
                    core.soft.suspect.remove(&worker);
                    // Its reported progress went into the failover; the rest is stale.
                    core.soft.forget_progress_of(worker);
                }
                Verdict::Late { worker, silent } => {
                    core.soft.suspect.insert(worker);
                    let msg = format!(
                        "worker {worker}: heartbeat missed ({} ms since the last)",
                        silent.as_millis()
                    );
                    tracing::warn!("{msg}");
                    core.events
                        .push(EventKind::HeartbeatMissed, msg, Some(worker), None);
                    self.bump();
                }
                Verdict::Silent {
                    job,
                    consumer,
                    command,
                } => {
                    let msg = format!(
                        "job {job} consumer {consumer}: no heartbeat for {} s; its splits are released",
                        limits.consumer_timeout.as_secs()
                    );
                    tracing::warn!("{msg}");
                    core.events
                        .push(EventKind::ConsumerTimeout, msg, None, Some(job));
                    let _ = self.execute(core, command);
                }
            }
        }
    }

    /// How often [`crate::serve`] runs [`Self::check_retention`].
    pub fn retention_tick(&self) -> Duration {
        retention::tick(&retention::Limits::new(&self.inner.config))
    }

    /// Applies the retention policy ([`retention::check`]) now: removes the finished or
    /// abandoned jobs, dead workers and unused datasets that rested past their retention, and
    /// drops the soft facts about whatever the state no longer holds. Called periodically by
    /// [`crate::run`].
    pub fn check_retention(&self) {
        self.check_retention_at(Instant::now());
    }

    /// [`Self::check_retention`] at `now` (tests pass a clock of their own).
    pub fn check_retention_at(&self, now: Instant) {
        let limits = retention::Limits::new(&self.inner.config);
        let mut guard = self.lock();
        let core = &mut *guard;
        retention::observe(&core.state, &mut core.soft.resting, now);
        if let Some(command) = retention::check(&core.state, &core.soft.resting, now, &limits) {
            let _ = self.execute(core, command);
            retention::observe(&core.state, &mut core.soft.resting, now);
        }
        core.soft.retain_known(&core.state);
    }

    /// How much the dispatcher holds in memory: (jobs, workers, datasets, soft entries, events).
    /// For tests and bounds: none of them may grow with history.
    pub fn footprint(&self) -> Footprint {
        let core = self.lock();
        Footprint {
            jobs: core.state.jobs.len(),
            workers: core.state.workers.len(),
            datasets: core.state.datasets.len(),
            assignments: core.state.jobs.values().map(|j| j.assignments.len()).sum(),
            soft_entries: core.soft.entries(),
            events: core.events.len(),
            event_bytes: core.events.bytes(),
            indexed_specs: self.datasets().count(),
        }
    }

    /// The current cluster status.
    pub fn status(&self, events_after: u64) -> v1::ClusterStatus {
        let core = self.lock();
        let now = Instant::now();
        StatusView {
            state: &core.state,
            soft: &core.soft,
            events: &core.events,
            config: &self.inner.config,
            started_unix_ms: self.inner.started_unix_ms,
            journal: self.journal_status(),
        }
        .snapshot(events_after, now)
    }

    fn journal_status(&self) -> v1::JournalStatus {
        let d = &self.inner.durability;
        let stats = *d.stats.lock().unwrap_or_else(|p| p.into_inner());
        match stats {
            Some(s) if d.enabled => v1::JournalStatus {
                enabled: true,
                records: s.records_since_snapshot,
                last_seq: s.last_seq,
                last_snapshot_seq: s.last_snapshot_seq,
                last_snapshot_unix_ms: s.last_snapshot_unix_ms.unwrap_or(0),
            },
            _ => v1::JournalStatus::default(),
        }
    }
}
