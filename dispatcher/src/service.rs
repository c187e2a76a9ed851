//! The dispatcher's gRPC service: turns RPCs into [`Command`]s for the state machine, keeps the
//! soft facts (heartbeat times, reported progress), detects dead workers, serves the status
//! stream.
//!
//! Every RPC takes the core lock for a short, await-free critical section; long polls wait on a
//! version counter that is bumped whenever anything changes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cachew_pipeline::{Dataset, PipelineSpec};
use cachew_proto::names::Name;
use cachew_proto::v1;
use cachew_proto::v1::EventKind;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use cachew_store::Journal;

use crate::durable::{Batch, Durability, Pending, Take};
use crate::state::{
    Assignment, CacheDecision, CachePolicy, Command, Cursor, DatasetEntry, Job, JobId, Outcome,
    Rejection, State, TaskClaim, WorkerId, WorkerLife,
};

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// How often workers heartbeat (also their long-poll budget).
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is declared dead and its splits fail over.
    pub worker_timeout: Duration,
    /// A consumer (training client) silent for this long is released: its splits stop
    /// occupying workers until it reports again.
    pub consumer_timeout: Duration,
    /// Splits assigned ahead of each consumer's cursor; 0 picks 4 per active worker (at least 8).
    pub window: u32,
    /// The address this dispatcher was started on (shown in the status stream).
    pub address: String,
    /// The cluster-control endpoint of whoever launched this cluster (shown in the status stream).
    pub control_address: String,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            heartbeat_interval: Duration::from_millis(500),
            worker_timeout: Duration::from_secs(5),
            consumer_timeout: Duration::from_secs(30),
            window: 0,
            address: String::new(),
            control_address: String::new(),
        }
    }
}

const EVENT_LOG_CAPACITY: usize = 1000;

/// What a worker last reported about one task.
#[derive(Debug, Clone, Copy)]
struct Reported {
    worker: WorkerId,
    lease: u64,
    produced: u32,
    acked: u32,
    len: u32,
}

/// What workers reported about a job's cache.
#[derive(Debug, Default)]
struct CacheSoft {
    prefix_us: u64,
    prefix_count: u64,
    read_us: u64,
    read_count: u64,
    committed: std::collections::BTreeSet<u32>,
    repaired: u64,
    complete_announced: bool,
}

/// Enough measurements for `auto` to decide.
const AUTO_MIN_PREFIX_SAMPLES: u64 = 64;
const AUTO_MIN_READ_SAMPLES: u64 = 8;

/// Facts that need no durability.
#[derive(Debug, Default)]
struct Soft {
    last_seen: HashMap<WorkerId, Instant>,
    suspect: HashSet<WorkerId>,
    progress: HashMap<(JobId, u64, u32), Reported>,
    checkpoint: HashMap<WorkerId, v1::CheckpointInfo>,
    produced: HashMap<WorkerId, u64>,
    /// Cache measurements and commits reported by workers, per job.
    cache: HashMap<JobId, CacheSoft>,
    delivered_examples: HashMap<(JobId, u32), u64>,
    /// When each consumer last reported.
    consumer_seen: HashMap<(JobId, u32), Instant>,
    /// When the liveness check last ran (a long gap means the dispatcher itself stalled).
    last_check: Option<Instant>,
    /// Epoch verdicts clients reported, per (job, consumer), by epoch.
    reports: HashMap<(JobId, u32), BTreeMap<u64, v1::EpochReport>>,
    /// Datasets already indexed: canonical spec -> (id, records).
    indexed: HashMap<String, (String, u64)>,
    /// Disks that do not take writes, as each node's latest heartbeat said.
    disks: HashMap<DiskOwner, Vec<v1::DiskCondition>>,
}

/// A node that reports its disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DiskOwner {
    Worker(WorkerId),
    Consumer(JobId, u32),
}

impl std::fmt::Display for DiskOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskOwner::Worker(w) => write!(f, "worker {w}"),
            DiskOwner::Consumer(j, c) => write!(f, "job {j} consumer {c}"),
        }
    }
}

/// Records the disks `owner` reports as failing; each condition's start and end become
/// `disk_failing` and `disk_recovered` events (a condition is one store of one node).
fn record_disks(core: &mut Core, owner: DiskOwner, now: &[v1::DiskCondition]) {
    let before = core.soft.disks.remove(&owner).unwrap_or_default();
    let (worker, job) = match owner {
        DiskOwner::Worker(w) => (Some(w), None),
        DiskOwner::Consumer(j, _) => (None, Some(j)),
    };
    for c in now {
        if !before.iter().any(|b| b.store == c.store) {
            let message = format!(
                "{owner}: {} at {} does not take writes ({}: {}); it {}",
                c.store,
                c.path,
                if c.disk_full {
                    "disk full"
                } else {
                    "write failed"
                },
                c.error,
                c.fallback
            );
            push_event(core, EventKind::DiskFailing, message, worker, job);
        }
    }
    for b in &before {
        if !now.iter().any(|c| c.store == b.store) {
            let message = format!(
                "{owner}: {} at {} takes writes again (after {} failed)",
                b.store, b.path, b.failures
            );
            push_event(core, EventKind::DiskRecovered, message, worker, job);
        }
    }
    if !now.is_empty() {
        core.soft.disks.insert(owner, now.to_vec());
    }
}

#[derive(Debug)]
struct Core {
    state: State,
    soft: Soft,
    events: VecDeque<v1::Event>,
    next_event: u64,
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
}

/// The dispatcher service; cheap to clone.
#[derive(Debug, Clone)]
pub struct DispatcherService {
    inner: Arc<Inner>,
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn rejection_status(r: Rejection) -> Status {
    match r {
        Rejection::UnknownWorker(_) | Rejection::UnknownJob(_) | Rejection::UnknownDataset(_) => {
            Status::not_found(r.to_string())
        }
        Rejection::DeadWorker(_) | Rejection::Superseded { .. } => {
            Status::failed_precondition(r.to_string())
        }
        Rejection::JobMismatch { .. } | Rejection::NoFreeConsumer { .. } => {
            Status::already_exists(r.to_string())
        }
        Rejection::BadConsumer { .. } | Rejection::BadCursor(_) => {
            Status::invalid_argument(r.to_string())
        }
    }
}

fn cursor_to_wire(c: Cursor) -> v1::Cursor {
    v1::Cursor {
        epoch: c.epoch,
        ordinal: c.ordinal,
        index: c.index,
    }
}

fn cursor_from_wire(c: Option<v1::Cursor>) -> Cursor {
    c.map_or_else(Cursor::default, |c| Cursor {
        epoch: c.epoch,
        ordinal: c.ordinal,
        index: c.index,
    })
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
            {
                let mut core = inner.core.lock().unwrap_or_else(|p| p.into_inner());
                push_event(&mut core, kind, message, None, None);
            }
            inner.version.send_modify(|v| *v += 1);
        }
    }

    fn alive(&self) -> bool {
        self.inner.strong_count() > 0
    }
}

impl DispatcherService {
    /// A dispatcher without a journal (its state dies with the process).
    pub fn new(config: DispatcherConfig, state: State) -> DispatcherService {
        DispatcherService::build(config, state, Durability::disabled(), 0)
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
        let svc = DispatcherService::build(
            config,
            state,
            Durability::enabled(last, journal.stats()),
            last,
        );
        {
            let mut core = svc.lock();
            tracing::info!("{replay_summary}");
            push_event(
                &mut core,
                EventKind::JournalReplayed,
                replay_summary,
                None,
                None,
            );
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
    ) -> DispatcherService {
        let (version, _) = watch::channel(0);
        let now = Instant::now();
        let mut soft = Soft::default();
        // After a restart every known live worker gets a full timeout to check in again.
        for (id, w) in &state.workers {
            if w.life == WorkerLife::Alive {
                soft.last_seen.insert(*id, now);
            }
        }
        DispatcherService {
            inner: Arc::new(Inner {
                core: Mutex::new(Core {
                    state,
                    soft,
                    events: VecDeque::new(),
                    next_event: 0,
                    pending: Pending {
                        records: Vec::new(),
                        applied,
                    },
                }),
                version,
                config,
                started_unix_ms: unix_ms(),
                durability,
            }),
        }
    }

    pub fn config(&self) -> &DispatcherConfig {
        &self.inner.config
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
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
    fn visible(core: &Core) -> u64 {
        core.pending.applied
    }

    /// Waits until the state an RPC reveals is durable.
    async fn durable(&self, seq: u64) -> Result<(), Status> {
        self.inner
            .durability
            .wait(seq)
            .await
            .map_err(Status::unavailable)
    }

    /// Applies a command, queues it for the journal, and records what it produced.
    fn execute(&self, core: &mut Core, command: Command) -> Result<Outcome, Rejection> {
        let outcome = core.state.apply(&command)?;
        if !outcome.noop && self.inner.durability.enabled {
            core.pending.records.push(crate::durable::encode(&command));
            core.pending.applied += 1;
            self.inner.durability.wake.notify_one();
        }
        for e in &outcome.events {
            tracing::info!(kind = e.kind.name(), "{}", e.message);
            push_event(core, e.kind, e.message.clone(), e.worker, e.job);
        }
        if !outcome.noop {
            self.inner.version.send_modify(|v| *v += 1);
        }
        Ok(outcome)
    }

    fn bump(&self) {
        self.inner.version.send_modify(|v| *v += 1);
    }

    fn window(&self, state: &State) -> u32 {
        match self.inner.config.window {
            0 => (4 * state.active_workers() as u32).max(8),
            w => w,
        }
    }

    /// Waits until the state version moves past `seen` or `deadline` passes.
    async fn wait_change(&self, seen: u64, deadline: tokio::time::Instant) {
        let mut rx = self.inner.version.subscribe();
        if *rx.borrow() != seen {
            return;
        }
        let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
    }

    fn version(&self) -> u64 {
        *self.inner.version.borrow()
    }

    /// How often [`crate::serve`] runs [`Self::check_liveness`].
    pub fn liveness_tick(&self) -> Duration {
        (self.inner.config.heartbeat_interval / 4)
            .clamp(Duration::from_millis(20), Duration::from_millis(250))
    }

    /// Declares workers dead whose heartbeats stopped; marks late ones suspect. Called
    /// periodically by [`crate::run`].
    pub fn check_liveness(&self) {
        let now = Instant::now();
        let timeout = self.inner.config.worker_timeout;
        let late = self.inner.config.heartbeat_interval * 2;
        let mut core = self.lock();
        let tick = self.liveness_tick();
        if let Some(prev) = core.soft.last_check.replace(now) {
            let gap = now.duration_since(prev);
            if gap > tick * 2 {
                // The dispatcher itself did not run for a while (paused, or starved of CPU): that
                // silence was its own, not the nodes'. Their clocks are moved forward by it, so the
                // heartbeats queued meanwhile are read before any verdict instead of every worker
                // being declared dead at once; silence from before the stall still counts.
                let lost = gap - tick;
                let soft = &mut core.soft;
                for seen in soft
                    .last_seen
                    .values_mut()
                    .chain(soft.consumer_seen.values_mut())
                {
                    *seen = (*seen + lost).min(now);
                }
                if gap > timeout / 2 {
                    let msg = format!(
                        "the dispatcher did not run for {} ms (paused or starved); heartbeat ages exclude it",
                        gap.as_millis()
                    );
                    tracing::warn!("{msg}");
                    push_event(&mut core, EventKind::DispatcherStalled, msg, None, None);
                    self.bump();
                }
            }
        }
        let alive: Vec<WorkerId> = core
            .state
            .workers
            .values()
            .filter(|w| w.life == WorkerLife::Alive)
            .map(|w| w.id)
            .collect();
        for id in alive {
            let age = core
                .soft
                .last_seen
                .get(&id)
                .map_or(timeout + late, |t| now.duration_since(*t));
            if age > timeout {
                let resume_at: Vec<((JobId, u64, u32), u32)> = core
                    .soft
                    .progress
                    .iter()
                    .filter(|(_, r)| r.worker == id)
                    .map(|(k, r)| (*k, r.acked))
                    .collect();
                let msg = format!(
                    "worker {id}: no heartbeat for {} ms (timeout {} ms)",
                    age.as_millis(),
                    timeout.as_millis()
                );
                push_event(&mut core, EventKind::HeartbeatTimeout, msg, Some(id), None);
                let _ = self.execute(
                    &mut core,
                    Command::DeclareDead {
                        worker: id,
                        resume_at,
                    },
                );
                core.soft.suspect.remove(&id);
                // Its reported progress went into the failover; the rest is stale.
                core.soft.progress.retain(|_, r| r.worker != id);
            } else if age > late && core.soft.suspect.insert(id) {
                let msg = format!(
                    "worker {id}: heartbeat missed ({} ms since the last)",
                    age.as_millis()
                );
                tracing::warn!("{msg}");
                push_event(&mut core, EventKind::HeartbeatMissed, msg, Some(id), None);
                self.bump();
            }
        }
        // Consumers that went silent (a crashed trainer) release their splits.
        let consumer_timeout = self.inner.config.consumer_timeout;
        let attached: Vec<(JobId, u32, u64)> = core
            .state
            .jobs
            .values()
            .filter(|j| !j.finished)
            .flat_map(|j| {
                j.consumers
                    .iter()
                    .filter(|c| c.attached)
                    .map(move |c| (j.id, c.index, c.generation))
            })
            .collect();
        for (job, consumer, generation) in attached {
            let seen = *core
                .soft
                .consumer_seen
                .entry((job, consumer))
                .or_insert(now);
            if now.duration_since(seen) > consumer_timeout {
                let msg = format!(
                    "job {job} consumer {consumer}: no heartbeat for {} s; its splits are released",
                    consumer_timeout.as_secs()
                );
                tracing::warn!("{msg}");
                push_event(&mut core, EventKind::ConsumerTimeout, msg, None, Some(job));
                let _ = self.execute(
                    &mut core,
                    Command::ReleaseConsumer {
                        job,
                        consumer,
                        generation,
                        timed_out: true,
                    },
                );
            }
        }
    }

    fn touch(core: &mut Core, worker: WorkerId) -> bool {
        core.soft.last_seen.insert(worker, Instant::now());
        core.soft.suspect.remove(&worker)
    }

    fn record_progress(core: &mut Core, worker: WorkerId, tasks: &[v1::TaskProgress]) {
        for t in tasks {
            let Some(key) = &t.key else { continue };
            core.soft.progress.insert(
                (key.job_id, key.epoch, key.position),
                Reported {
                    worker,
                    lease: t.lease,
                    produced: t.produced,
                    acked: t.acked,
                    len: t.len,
                },
            );
        }
    }

    /// Folds a worker's cache reports in; announces completed and repaired caches, and lets
    /// `auto` decide once it has enough measurements.
    fn record_cache(&self, core: &mut Core, worker: WorkerId, reports: &[v1::CacheReport]) {
        // Only a real change wakes the long polls (measurements alone do not).
        let mut changed = false;
        for r in reports {
            let Some(job) = core.state.jobs.get(&r.job_id) else {
                continue;
            };
            let (policy, decided, splits) = (
                job.cache_policy,
                job.cache_decision.is_some(),
                job.num_splits,
            );
            let c = core.soft.cache.entry(r.job_id).or_default();
            c.prefix_us += r.prefix_us;
            c.prefix_count += r.prefix_count;
            c.read_us += r.read_us;
            c.read_count += r.read_count;
            c.repaired += r.repaired;
            let before = c.committed.len();
            c.committed.extend(r.committed.iter().copied());
            changed |= c.committed.len() != before || r.repaired > 0;
            let newly_complete = !c.complete_announced && c.committed.len() as u32 >= splits;
            c.complete_announced |= newly_complete;
            let decide = (policy == CachePolicy::Auto
                && !decided
                && c.prefix_count >= AUTO_MIN_PREFIX_SAMPLES
                && c.read_count >= AUTO_MIN_READ_SAMPLES)
                .then(|| {
                    let compute = c.prefix_us * 1000 / c.prefix_count.max(1);
                    let read = c.read_us * 1000 / c.read_count.max(1);
                    CacheDecision {
                        get: read < compute,
                        compute_ns_per_element: compute,
                        read_ns_per_element: read,
                    }
                });
            if r.repaired > 0 {
                let msg = format!(
                    "job {}: worker {worker} found {} cache chunk(s) missing or corrupt and recomputed them from the source",
                    r.job_id, r.repaired
                );
                tracing::warn!("{msg}");
                push_event(
                    core,
                    EventKind::CacheRepaired,
                    msg,
                    Some(worker),
                    Some(r.job_id),
                );
            }
            if newly_complete {
                let msg = format!(
                    "job {}: cache complete, {splits} of {splits} chunks committed",
                    r.job_id
                );
                push_event(core, EventKind::CacheComplete, msg, None, Some(r.job_id));
            }
            if let Some(decision) = decide {
                let _ = self.execute(
                    core,
                    Command::DecideCache {
                        job: r.job_id,
                        decision,
                    },
                );
            }
        }
        if changed {
            self.bump();
        }
    }

    /// Builds a worker's heartbeat answer: tasks to drop (with reasons) and tasks it should
    /// hold but did not report.
    fn reconcile(
        &self,
        core: &mut Core,
        worker: WorkerId,
        reported: &[v1::TaskProgress],
    ) -> (Vec<v1::TaskDef>, Vec<v1::DroppedTask>) {
        let mut dropped = Vec::new();
        let mut held = HashSet::new();
        for t in reported {
            let Some(key) = &t.key else { continue };
            let job = core.state.jobs.get(&key.job_id);
            let current = job.and_then(|j| j.assignments.get(&(key.epoch, key.position)));
            match current {
                Some(a) if a.worker == worker && a.lease == t.lease => {
                    held.insert((key.job_id, key.epoch, key.position));
                }
                other => {
                    let reason = match (job, other) {
                        (None, _) => v1::DropReason::UnknownJob,
                        (Some(j), _) if j.finished => v1::DropReason::JobFinished,
                        (Some(j), None) if j.is_delivered(key.epoch, key.position) => {
                            v1::DropReason::Delivered
                        }
                        (Some(_), None) => v1::DropReason::Unassigned,
                        (Some(_), Some(a)) => {
                            let msg = format!(
                                "worker {worker} reported {key} under stale lease {} (now worker {} lease {}): fenced",
                                t.lease, a.worker, a.lease
                            );
                            tracing::warn!("{msg}");
                            push_event(
                                core,
                                EventKind::Fenced,
                                msg,
                                Some(worker),
                                Some(key.job_id),
                            );
                            v1::DropReason::Fenced
                        }
                    };
                    core.soft
                        .progress
                        .remove(&(key.job_id, key.epoch, key.position));
                    dropped.push(v1::DroppedTask {
                        key: Some(*key),
                        lease: t.lease,
                        reason: reason.into(),
                    });
                }
            }
        }
        let mut new_tasks = Vec::new();
        for (job_id, epoch, position, a) in core.state.assignments_of(worker) {
            if held.contains(&(job_id, epoch, position)) {
                continue;
            }
            let Some(job) = core.state.jobs.get(&job_id) else {
                continue;
            };
            new_tasks.push(task_def(job, epoch, position, &a));
        }
        (new_tasks, dropped)
    }

    /// Indexes the dataset of a canonical spec (once per spec) and returns its entry.
    async fn dataset_for(&self, spec_json: &str) -> Result<DatasetEntry, Status> {
        if let Some((id, records)) = self.lock().soft.indexed.get(spec_json).cloned() {
            let spec = PipelineSpec::from_json(spec_json)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            return Ok(DatasetEntry {
                id,
                spec_json: spec_json.to_string(),
                num_records: records,
                split_records: spec.source.split_records,
                shuffle: spec.shuffle,
            });
        }
        let json = spec_json.to_string();
        let entry = tokio::task::spawn_blocking(move || -> Result<DatasetEntry, String> {
            let spec = PipelineSpec::from_json(&json).map_err(|e| e.to_string())?;
            let dataset = Dataset::for_spec(&spec).map_err(|e| e.to_string())?;
            Ok(DatasetEntry {
                id: hex::encode(dataset.fingerprint(&spec)),
                spec_json: json,
                num_records: dataset.num_records(),
                split_records: spec.source.split_records,
                shuffle: spec.shuffle,
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::invalid_argument)?;
        self.lock()
            .soft
            .indexed
            .insert(spec_json.to_string(), (entry.id.clone(), entry.num_records));
        Ok(entry)
    }

    /// The current cluster status.
    pub fn status(&self, events_after: u64) -> v1::ClusterStatus {
        let core = self.lock();
        let now = Instant::now();
        let workers = core
            .state
            .workers
            .values()
            .map(|w| {
                let age = core
                    .soft
                    .last_seen
                    .get(&w.id)
                    .map_or(0, |t| now.duration_since(*t).as_millis() as u64);
                let state = match w.life {
                    WorkerLife::Dead => v1::WorkerState::Dead,
                    WorkerLife::Alive if core.soft.suspect.contains(&w.id) => {
                        v1::WorkerState::Suspect
                    }
                    WorkerLife::Alive if w.standby => v1::WorkerState::Standby,
                    WorkerLife::Alive => v1::WorkerState::Alive,
                };
                let tasks = core
                    .state
                    .assignments_of(w.id)
                    .into_iter()
                    .map(|(j, e, p, a)| {
                        let r = core
                            .soft
                            .progress
                            .get(&(j, e, p))
                            .filter(|r| r.lease == a.lease);
                        v1::TaskProgress {
                            key: Some(v1::TaskKey::new(j, e, p)),
                            lease: a.lease,
                            split: a.split,
                            produced: r.map_or(0, |r| r.produced),
                            acked: r.map_or(a.start_index, |r| r.acked),
                            len: r.map_or(0, |r| r.len),
                        }
                    })
                    .collect();
                v1::WorkerStatus {
                    worker_id: w.id,
                    address: w.address.clone(),
                    state: state.into(),
                    heartbeat_age_ms: if w.life == WorkerLife::Dead { 0 } else { age },
                    standby: w.standby,
                    incarnation: w.incarnation,
                    tasks,
                    checkpoint: core.soft.checkpoint.get(&w.id).copied(),
                    threads: w.threads,
                    elements_produced: core.soft.produced.get(&w.id).copied().unwrap_or(0),
                    disks: core
                        .soft
                        .disks
                        .get(&DiskOwner::Worker(w.id))
                        .cloned()
                        .unwrap_or_default(),
                }
            })
            .collect();
        let mut assignments = Vec::new();
        let jobs = core
            .state
            .jobs
            .values()
            .map(|j| {
                for (&(e, p), a) in &j.assignments {
                    let r = core
                        .soft
                        .progress
                        .get(&(j.id, e, p))
                        .filter(|r| r.lease == a.lease);
                    assignments.push(v1::AssignmentStatus {
                        job_id: j.id,
                        epoch: e,
                        position: p,
                        split: a.split,
                        worker_id: a.worker,
                        lease: a.lease,
                        produced: r.map_or(0, |r| r.produced),
                        acked: r.map_or(a.start_index, |r| r.acked),
                        len: r.map_or(0, |r| r.len),
                    });
                }
                let mut epochs: BTreeMap<u64, v1::EpochStatus> = BTreeMap::new();
                let horizon = j
                    .consumers
                    .iter()
                    .map(|c| j.normalize(c.index, c.cursor).epoch)
                    .max()
                    .unwrap_or(0);
                let first = j
                    .consumers
                    .iter()
                    .map(|c| j.normalize(c.index, c.cursor).epoch)
                    .min()
                    .unwrap_or(0);
                let last_epoch = if j.num_epochs > 0 {
                    horizon.min(j.num_epochs - 1)
                } else {
                    horizon
                };
                for e in first.saturating_sub(1)..=last_epoch {
                    let delivered =
                        (0..j.num_splits).filter(|&p| j.is_delivered(e, p)).count() as u32;
                    let assigned = j.assignments.keys().filter(|(ae, _)| *ae == e).count() as u32;
                    epochs.insert(
                        e,
                        v1::EpochStatus {
                            epoch: e,
                            splits_total: j.num_splits,
                            splits_delivered: delivered,
                            splits_assigned: assigned,
                        },
                    );
                }
                let soft = core.soft.cache.get(&j.id);
                let per = |us: u64, n: u64| if n == 0 { 0.0 } else { us as f64 / n as f64 };
                let cache = v1::CacheStatus {
                    policy: j.cache_policy.to_wire().into(),
                    decision: j
                        .cache_decision
                        .map_or(v1::CacheMode::Unspecified, |d| {
                            if d.get {
                                v1::CacheMode::Get
                            } else {
                                v1::CacheMode::Compute
                            }
                        })
                        .into(),
                    compute_us_per_element: j.cache_decision.map_or_else(
                        || soft.map_or(0.0, |c| per(c.prefix_us, c.prefix_count)),
                        |d| d.compute_ns_per_element as f64 / 1000.0,
                    ),
                    read_us_per_element: j.cache_decision.map_or_else(
                        || soft.map_or(0.0, |c| per(c.read_us, c.read_count)),
                        |d| d.read_ns_per_element as f64 / 1000.0,
                    ),
                    committed_splits: soft.map_or(0, |c| c.committed.len() as u32),
                    total_splits: j.num_splits,
                    repaired: soft.map_or(0, |c| c.repaired),
                };
                v1::JobStatus {
                    cache: Some(cache),
                    job_id: j.id,
                    name: j.name.clone(),
                    dataset_id: j.dataset_id.clone(),
                    seed: j.seed,
                    num_epochs: j.num_epochs,
                    num_splits: j.num_splits,
                    num_records: core
                        .state
                        .datasets
                        .get(&j.dataset_id)
                        .map_or(0, |d| d.num_records),
                    consumers: j
                        .consumers
                        .iter()
                        .map(|c| v1::ConsumerStatus {
                            index: c.index,
                            generation: c.generation,
                            attached: c.attached,
                            cursor: Some(cursor_to_wire(j.normalize(c.index, c.cursor))),
                            delivered_examples: core
                                .soft
                                .delivered_examples
                                .get(&(j.id, c.index))
                                .copied()
                                .unwrap_or(0),
                            reports: core
                                .soft
                                .reports
                                .get(&(j.id, c.index))
                                .map(|m| m.values().cloned().collect())
                                .unwrap_or_default(),
                            disks: core
                                .soft
                                .disks
                                .get(&DiskOwner::Consumer(j.id, c.index))
                                .cloned()
                                .unwrap_or_default(),
                        })
                        .collect(),
                    epochs: epochs.into_values().collect(),
                    finished: j.finished,
                }
            })
            .collect();
        v1::ClusterStatus {
            unix_ms: unix_ms(),
            dispatcher_address: self.inner.config.address.clone(),
            dispatcher_start_unix_ms: self.inner.started_unix_ms,
            workers,
            jobs,
            assignments,
            events: core
                .events
                .iter()
                .filter(|e| e.seq > events_after)
                .cloned()
                .collect(),
            journal: Some(self.journal_status()),
            worker_timeout_ms: self.inner.config.worker_timeout.as_millis() as u64,
            heartbeat_interval_ms: self.inner.config.heartbeat_interval.as_millis() as u64,
            control_address: self.inner.config.control_address.clone(),
        }
    }
}

impl DispatcherService {
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

/// What a worker is told about one task.
fn task_def(job: &Job, epoch: u64, position: u32, a: &Assignment) -> v1::TaskDef {
    v1::TaskDef {
        key: Some(v1::TaskKey::new(job.id, epoch, position)),
        lease: a.lease,
        split: a.split,
        dataset_id: job.dataset_id.clone(),
        seed: job.seed,
        start_index: a.start_index,
        cache_mode: job.cache_mode(epoch).into(),
    }
}

fn push_event(
    core: &mut Core,
    kind: EventKind,
    message: String,
    worker: Option<WorkerId>,
    job: Option<JobId>,
) {
    core.next_event += 1;
    core.events.push_back(v1::Event {
        seq: core.next_event,
        unix_ms: unix_ms(),
        kind: kind.into(),
        message,
        worker_id: worker.unwrap_or(0),
        job_id: job.unwrap_or(0),
    });
    while core.events.len() > EVENT_LOG_CAPACITY {
        core.events.pop_front();
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<v1::ClusterStatus, Status>> + Send>>;

#[tonic::async_trait]
impl cachew_proto::Dispatcher for DispatcherService {
    async fn register_worker(
        &self,
        request: Request<v1::RegisterWorkerRequest>,
    ) -> Result<Response<v1::RegisterWorkerResponse>, Status> {
        let req = request.into_inner();
        if req.address.is_empty() {
            return Err(Status::invalid_argument("worker address is empty"));
        }
        let claims: Vec<TaskClaim> = req
            .tasks
            .iter()
            .filter_map(|t| {
                t.key.map(|k| TaskClaim {
                    job: k.job_id,
                    epoch: k.epoch,
                    position: k.position,
                    lease: t.lease,
                })
            })
            .collect();
        let (response, visible) = {
            let mut core = self.lock();
            let outcome = self
                .execute(
                    &mut core,
                    Command::RegisterWorker {
                        address: req.address.clone(),
                        standby: req.standby,
                        threads: req.threads,
                        claims,
                    },
                )
                .map_err(rejection_status)?;
            let id = outcome
                .worker
                .ok_or_else(|| Status::internal("registration produced no worker id"))?;
            Self::touch(&mut core, id);
            // Forget progress reported by the previous process; keep what the restored tasks say.
            core.soft.progress.retain(|_, r| r.worker != id);
            let kept_tasks: Vec<v1::TaskProgress> = req
                .tasks
                .iter()
                .filter(|t| {
                    t.key.is_some_and(|k| {
                        outcome.kept.iter().any(|c| {
                            (c.job, c.epoch, c.position, c.lease)
                                == (k.job_id, k.epoch, k.position, t.lease)
                        })
                    })
                })
                .cloned()
                .collect();
            Self::record_progress(&mut core, id, &kept_tasks);
            let response = v1::RegisterWorkerResponse {
                worker_id: id,
                heartbeat_interval_ms: self.inner.config.heartbeat_interval.as_millis() as u64,
                kept: outcome
                    .kept
                    .iter()
                    .map(|c| v1::TaskKey::new(c.job, c.epoch, c.position))
                    .collect(),
                incarnation: outcome.incarnation,
            };
            (response, Self::visible(&core))
        };
        self.durable(visible).await?;
        Ok(Response::new(response))
    }

    async fn worker_heartbeat(
        &self,
        request: Request<v1::WorkerHeartbeatRequest>,
    ) -> Result<Response<v1::WorkerHeartbeatResponse>, Status> {
        let req = request.into_inner();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(req.wait_ms.min(10_000));
        // What the request reports is taken in once; later rounds of the long poll only look
        // for new work (taking reports in twice would double-count them, and every change wakes
        // the poll again).
        let mut first = true;
        loop {
            let seen = self.version();
            let ready = 'poll: {
                let mut core = self.lock();
                let alive = core.state.workers.get(&req.worker_id).filter(|w| {
                    w.life == WorkerLife::Alive
                        && (req.incarnation == 0 || w.incarnation == req.incarnation)
                        && (req.address.is_empty() || w.address == req.address)
                });
                if alive.is_none() {
                    let reported = req.tasks.len();
                    if reported > 0 {
                        let msg = format!(
                            "worker {} (not alive here) reported {reported} task(s): fenced, it must register again",
                            req.worker_id
                        );
                        push_event(&mut core, EventKind::Fenced, msg, Some(req.worker_id), None);
                    }
                    return Ok(Response::new(v1::WorkerHeartbeatResponse {
                        reregister: true,
                        ..Default::default()
                    }));
                }
                if Self::touch(&mut core, req.worker_id) {
                    let msg = format!("worker {}: heartbeats resumed", req.worker_id);
                    push_event(
                        &mut core,
                        EventKind::HeartbeatResumed,
                        msg,
                        Some(req.worker_id),
                        None,
                    );
                }
                if std::mem::take(&mut first) {
                    Self::record_progress(&mut core, req.worker_id, &req.tasks);
                    if !req.cache.is_empty() {
                        self.record_cache(&mut core, req.worker_id, &req.cache);
                    }
                    if let Some(cp) = req.checkpoint {
                        core.soft.checkpoint.insert(req.worker_id, cp);
                    }
                    core.soft
                        .produced
                        .insert(req.worker_id, req.elements_produced);
                    record_disks(&mut core, DiskOwner::Worker(req.worker_id), &req.disks);
                }
                let (mut new_tasks, dropped) = self.reconcile(&mut core, req.worker_id, &req.tasks);
                let holding = req.tasks.len() - dropped.len() + new_tasks.len();
                let free =
                    (req.free_slots as usize + req.tasks.len()).saturating_sub(holding) as u32;
                let free = free.min(req.free_slots);
                if free > 0 {
                    let window = self.window(&core.state);
                    if let Ok(out) = self.execute(
                        &mut core,
                        Command::AssignTasks {
                            worker: req.worker_id,
                            max: free,
                            window,
                        },
                    ) {
                        for (job_id, epoch, position, a) in out.assigned {
                            let Some(job) = core.state.jobs.get(&job_id) else {
                                continue;
                            };
                            new_tasks.push(task_def(job, epoch, position, &a));
                        }
                    }
                }
                if !new_tasks.is_empty()
                    || !dropped.is_empty()
                    || tokio::time::Instant::now() >= deadline
                {
                    let response = v1::WorkerHeartbeatResponse {
                        new_tasks,
                        dropped,
                        reregister: false,
                    };
                    break 'poll Some((response, Self::visible(&core)));
                }
                None
            };
            if let Some((response, visible)) = ready {
                self.durable(visible).await?;
                return Ok(Response::new(response));
            }
            self.wait_change(seen, deadline).await;
        }
    }

    async fn get_dataset(
        &self,
        request: Request<v1::GetDatasetRequest>,
    ) -> Result<Response<v1::GetDatasetResponse>, Status> {
        let id = request.into_inner().dataset_id;
        let core = self.lock();
        let d = core
            .state
            .datasets
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("unknown dataset {id}")))?;
        Ok(Response::new(v1::GetDatasetResponse {
            spec_json: d.spec_json.clone(),
        }))
    }

    async fn get_or_create_job(
        &self,
        request: Request<v1::GetOrCreateJobRequest>,
    ) -> Result<Response<v1::GetOrCreateJobResponse>, Status> {
        let req = request.into_inner();
        if req.job_name.is_empty() {
            return Err(Status::invalid_argument("job name is empty"));
        }
        let cache_policy = CachePolicy::from_wire(req.cache_policy)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if cache_policy != CachePolicy::Compute {
            let spec = PipelineSpec::from_json(&req.spec_json)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            if spec.cache_point().is_none() {
                return Err(Status::invalid_argument(format!(
                    "cache policy `{}` needs a `cache` op in the pipeline to mark the prefix to cache",
                    cache_policy.name()
                )));
            }
        }
        let entry = self.dataset_for(&req.spec_json).await?;
        let (response, visible) = {
            let mut core = self.lock();
            self.execute(&mut core, Command::RegisterDataset(entry.clone()))
                .map_err(rejection_status)?;
            let outcome = self
                .execute(
                    &mut core,
                    Command::GetOrCreateJob {
                        name: req.job_name.clone(),
                        dataset_id: entry.id.clone(),
                        seed: req.seed,
                        num_epochs: req.num_epochs,
                        num_consumers: req.num_consumers.max(1),
                        consumer_index: u32::try_from(req.consumer_index).ok(),
                        resume: req.resume.then(|| cursor_from_wire(req.cursor)),
                        cache_policy,
                    },
                )
                .map_err(rejection_status)?;
            let job_id = outcome.job.ok_or_else(|| Status::internal("no job"))?;
            let (index, generation) = outcome
                .consumer
                .ok_or_else(|| Status::internal("no consumer"))?;
            core.soft
                .consumer_seen
                .insert((job_id, index), Instant::now());
            let job = core
                .state
                .jobs
                .get(&job_id)
                .ok_or_else(|| Status::internal("job vanished"))?;
            let response = v1::GetOrCreateJobResponse {
                job_id,
                dataset_id: entry.id.clone(),
                consumer_index: index,
                consumer_generation: generation,
                num_consumers: job.num_consumers,
                num_records: entry.num_records,
                split_records: entry.split_records,
                num_splits: job.num_splits,
                seed: job.seed,
                num_epochs: job.num_epochs,
                cursor: outcome.cursor.map(cursor_to_wire),
                created: outcome.created,
            };
            (response, Self::visible(&core))
        };
        self.durable(visible).await?;
        Ok(Response::new(response))
    }

    async fn client_heartbeat(
        &self,
        request: Request<v1::ClientHeartbeatRequest>,
    ) -> Result<Response<v1::ClientHeartbeatResponse>, Status> {
        let req = request.into_inner();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(req.wait_ms.min(10_000));
        let cursor = cursor_from_wire(req.cursor);
        let known: HashMap<(u64, u32), u64> = req
            .known
            .iter()
            .map(|k| ((k.epoch, k.position), k.lease))
            .collect();
        let mut first = true;
        loop {
            let seen = self.version();
            let ready = 'poll: {
                let mut core = self.lock();
                if first {
                    first = false;
                    match self.execute(
                        &mut core,
                        Command::ConsumerProgress {
                            job: req.job_id,
                            consumer: req.consumer_index,
                            generation: req.consumer_generation,
                            cursor,
                        },
                    ) {
                        Ok(_) => {}
                        Err(Rejection::Superseded { .. }) => {
                            return Ok(Response::new(v1::ClientHeartbeatResponse {
                                superseded: true,
                                ..Default::default()
                            }));
                        }
                        Err(r) => return Err(rejection_status(r)),
                    }
                    // Only a heartbeat of the current consumer counts (a superseded or bogus one
                    // must not keep a consumer looking alive).
                    core.soft
                        .delivered_examples
                        .insert((req.job_id, req.consumer_index), req.delivered_examples);
                    core.soft
                        .consumer_seen
                        .insert((req.job_id, req.consumer_index), Instant::now());
                    record_disks(
                        &mut core,
                        DiskOwner::Consumer(req.job_id, req.consumer_index),
                        &req.disks,
                    );
                    let mut fresh = Vec::new();
                    let known = core
                        .soft
                        .reports
                        .entry((req.job_id, req.consumer_index))
                        .or_default();
                    for r in &req.reports {
                        if known.get(&r.epoch) != Some(r) {
                            known.insert(r.epoch, r.clone());
                            fresh.push(r.clone());
                        }
                    }
                    // The latest epochs are kept, as many as the client keeps.
                    while known.len() > cachew_proto::EPOCH_REPORTS_KEPT {
                        known.pop_first();
                    }
                    for r in &fresh {
                        let kind = match (r.verified, r.exactly_once) {
                            (false, _) => EventKind::EpochReport,
                            (true, true) => EventKind::VerdictOk,
                            (true, false) => EventKind::VerdictFailed,
                        };
                        let msg = format!(
                            "job {} consumer {} epoch {}: {} examples, {:.0} images/s{}",
                            req.job_id,
                            req.consumer_index,
                            r.epoch,
                            r.examples,
                            r.images_per_sec,
                            if r.verdict.is_empty() {
                                String::new()
                            } else {
                                format!(", {}", r.verdict)
                            }
                        );
                        push_event(&mut core, kind, msg, None, Some(req.job_id));
                    }
                    if !fresh.is_empty() {
                        self.bump();
                    }
                }
                let window = self.window(&core.state);
                let job = core
                    .state
                    .jobs
                    .get(&req.job_id)
                    .ok_or_else(|| Status::not_found(format!("unknown job {}", req.job_id)))?;
                let mut locations = Vec::new();
                let mut changed = false;
                for (epoch, position) in job.window(req.consumer_index, cursor, window) {
                    let a = job.assignments.get(&(epoch, position));
                    let lease = a.map_or(0, |a| a.lease);
                    if known.get(&(epoch, position)).copied().unwrap_or(0) != lease {
                        changed = true;
                    }
                    let worker = a.and_then(|a| core.state.workers.get(&a.worker));
                    let split = match (a, core.state.datasets.get(&job.dataset_id)) {
                        (Some(a), _) => a.split,
                        (None, Some(d)) => crate::state::split_at(d, job.seed, epoch, position),
                        (None, None) => position,
                    };
                    locations.push(v1::SplitLocation {
                        epoch,
                        position,
                        split,
                        lease,
                        worker_address: worker.map(|w| w.address.clone()).unwrap_or_default(),
                        worker_id: a.map_or(0, |a| a.worker),
                        start_index: a.map_or(0, |a| a.start_index),
                    });
                }
                let finished = job.finished || job.consumer_done(req.consumer_index, cursor);
                if changed || finished || tokio::time::Instant::now() >= deadline {
                    // The client is alive to the end of its poll, not only at its start.
                    core.soft
                        .consumer_seen
                        .insert((req.job_id, req.consumer_index), Instant::now());
                    let response = v1::ClientHeartbeatResponse {
                        locations,
                        job_finished: finished,
                        superseded: false,
                    };
                    break 'poll Some((response, Self::visible(&core)));
                }
                None
            };
            if let Some((response, visible)) = ready {
                self.durable(visible).await?;
                return Ok(Response::new(response));
            }
            self.wait_change(seen, deadline).await;
        }
    }

    async fn release_consumer(
        &self,
        request: Request<v1::ReleaseConsumerRequest>,
    ) -> Result<Response<v1::ReleaseConsumerResponse>, Status> {
        let req = request.into_inner();
        let visible = {
            let mut core = self.lock();
            self.execute(
                &mut core,
                Command::ReleaseConsumer {
                    job: req.job_id,
                    consumer: req.consumer_index,
                    generation: req.consumer_generation,
                    timed_out: false,
                },
            )
            .map_err(rejection_status)?;
            Self::visible(&core)
        };
        self.durable(visible).await?;
        Ok(Response::new(v1::ReleaseConsumerResponse {}))
    }

    type WatchStatusStream = StatusStream;

    async fn watch_status(
        &self,
        request: Request<v1::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let mut events_after = request.into_inner().events_after;
        let svc = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let seen = svc.version();
                let status = svc.status(events_after);
                if let Some(last) = status.events.last() {
                    events_after = last.seq;
                }
                if tx.send(Ok(status)).await.is_err() {
                    break;
                }
                // At most 10 snapshots a second, at least one a second.
                tokio::time::sleep(Duration::from_millis(100)).await;
                svc.wait_change(
                    seen,
                    tokio::time::Instant::now() + Duration::from_millis(900),
                )
                .await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
