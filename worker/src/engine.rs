//! The worker's task engine: the splits this worker serves, a bounded pool of compute threads
//! that run the pipeline on them, and the buffers that hold produced elements until the client
//! has fetched them.
//!
//! Memory is bounded by configuration: a task never holds more than `ahead` elements past the
//! client's fetch cursor, and the worker holds at most `max_tasks` unfinished tasks, plus at most
//! `max_tasks` idle ones (full and unread: they give their slots back, see `schedule.rs`).
//! Compute threads share their time between jobs (`schedule::FairShare`) and, within a job,
//! always pick its most urgent task (lowest epoch, position), so the split a client is waiting
//! for is never starved by splits further ahead, nor by another job. This module owns no sockets.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use cachew_pipeline::Element;
use cachew_pipeline::exec::{NoCache, PrefixCache};
use cachew_pipeline::observe::{NoObserver, OpObserver};
use cachew_proto::backoff::Backoff;

pub use crate::admission::Admissions;
use crate::cache::{CacheMode, CacheReports, CacheSettings, TaskCache};
use crate::ledger::{Accounts, Discard, Ledger, TaskState};
use crate::metrics::CacheMetrics;
pub use crate::prepared::{Prepared, PreparedCache};
use crate::schedule::{FairShare, SlotView, is_idle, slot_use};
pub use crate::task::{
    EngineConfig, FetchError, Fetched, PipelineFailure, TaskKey, TaskReport, TaskSpec,
};
use tokio::sync::Notify;

#[derive(Debug)]
struct Task {
    spec: TaskSpec,
    cache: Option<Arc<TaskCache>>,
    prepared: Arc<Prepared>,
    order: Arc<Vec<u64>>,
    len: u32,
    acked: u32,
    next_claim: u32,
    buffer: BTreeMap<u32, Element>,
    generation: u64,
    /// A deterministic failure (a record under `on_error = "fail"`): final for the task.
    error: Option<PipelineFailure>,
    /// A transient failure (reading the dataset, the machine): production waits until then and
    /// claims the failed range again.
    retry_at: Option<std::time::Instant>,
    /// The pause before the next retry (reset by a produced chunk).
    retry_backoff: Backoff,
    notify: Arc<Notify>,
    sent_end: bool,
    /// Buffered indices below this were sent (`ledger.rs`); at or above it, not yet.
    sent_upto: u32,
    /// When a client last fetched (or the task was added).
    last_fetch: std::time::Instant,
}

impl Task {
    /// The first index at or after `acked` that is not computed yet.
    fn produced(&self) -> u32 {
        let mut i = self.acked;
        while self.buffer.contains_key(&i) {
            i += 1;
        }
        i
    }

    fn report(&self, config: &EngineConfig) -> TaskReport {
        TaskReport {
            key: self.spec.key,
            lease: self.spec.lease,
            split: self.spec.split,
            produced: self.produced(),
            acked: self.acked,
            len: self.len,
            idle: self.is_idle(config),
        }
    }

    /// Whether the task has nothing to compute until its client reads, and its client has not
    /// fetched for `idle_after` (see `schedule.rs`).
    fn is_idle(&self, config: &EngineConfig) -> bool {
        is_idle(
            self.is_full(config),
            self.last_fetch.elapsed(),
            config.idle_after,
        )
    }

    fn is_full(&self, config: &EngineConfig) -> bool {
        let limit = self.len.min(self.acked.saturating_add(config.ahead.max(1)));
        self.error.is_some() || self.produced() >= limit
    }

    fn state(&self, config: &EngineConfig) -> TaskState {
        match () {
            _ if self.error.is_some() => TaskState::Failed,
            _ if self.sent_end => TaskState::Sent,
            _ if self.is_idle(config) => TaskState::Idle,
            _ if self.is_full(config) => TaskState::Full,
            _ => TaskState::Computing,
        }
    }

    /// Buffered elements not sent yet.
    fn unsent(&self) -> u64 {
        self.buffer.range(self.sent_upto..).count() as u64
    }
}

/// Longest pause before a task retries a range whose production failed transiently.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);

/// The pauses before a task retries a range whose production failed transiently:
/// 100 ms · 2^n after the n-th failure in a row, up to [`MAX_RETRY_BACKOFF`].
fn retry_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), MAX_RETRY_BACKOFF)
}

#[derive(Debug, Default)]
struct EngineState {
    tasks: BTreeMap<TaskKey, Task>,
    /// Compute time charged to each job (which job a free thread serves).
    share: FairShare,
    /// Where every produced element went (`ledger.rs`).
    ledger: Ledger,
}

impl EngineState {
    /// Removes a task, accounting its unsent elements as discarded for `reason`.
    fn remove(&mut self, key: &TaskKey, reason: Discard) -> Option<Task> {
        let task = self.tasks.remove(key)?;
        self.ledger.discard(reason, task.unsent());
        Some(task)
    }

    /// Forgets the compute charges of jobs this worker no longer serves.
    fn forget_gone_jobs(&mut self) {
        let tasks = &self.tasks;
        self.share.retain(|job| tasks.keys().any(|k| k.job == job));
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<EngineState>,
    work: Condvar,
    config: EngineConfig,
    /// `config.max_elements_per_sec`.
    pacer: crate::task::Pacer,
    stop: AtomicBool,
    /// Source of task generations: results computed for an older generation are discarded.
    generations: AtomicU64,
    /// Signalled when a slot frees up, so the control loop can ask for work at once.
    slots_freed: Notify,
    /// Signalled when a task is added, for fetches waiting on an assignment still on its way.
    task_added: Notify,
    /// The highest lease this worker was ever given (under the state lock). Leases only grow, so
    /// a fetch for a higher one is for an assignment the dispatcher made but this worker has not
    /// received yet.
    max_lease: AtomicU64,
    /// Elements computed since this engine started.
    produced: AtomicU64,
    /// Assigned tasks not running here yet (preparing) or refused (`admission.rs`).
    admissions: Admissions,
    cache: Option<CacheSettings>,
    cache_reports: Arc<CacheReports>,
    /// Prefixes whose crashed writers' temporaries this worker already removed.
    cleaned: Mutex<std::collections::HashSet<[u8; 32]>>,
    /// Hears the time of each op (`cachew_worker_op_seconds`).
    ops: Ops,
}

/// The engine's [`OpObserver`].
struct Ops(Arc<dyn OpObserver + Send + Sync>);

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ops")
    }
}

/// The engine; clones share it. Dropping the last [`EngineThreads`] stops the compute threads.
#[derive(Debug, Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// Handle to the compute threads; stops and joins them when dropped.
#[derive(Debug)]
pub struct EngineThreads {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for EngineThreads {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.work.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Engine {
    /// Creates the engine (without a cache) and starts its compute threads.
    pub fn start(config: EngineConfig) -> (Engine, EngineThreads) {
        Engine::start_with_cache(config, None)
    }

    /// Creates the engine with a cache directory and starts its compute threads.
    pub fn start_with_cache(
        config: EngineConfig,
        cache: Option<CacheSettings>,
    ) -> (Engine, EngineThreads) {
        Engine::start_observed(config, cache, Arc::new(NoObserver), CacheMetrics::default())
    }

    /// Creates the engine with its metrics: `ops` hears each op's time, `cache_metrics` counts
    /// cache hits, misses and bytes.
    pub fn start_observed(
        config: EngineConfig,
        cache: Option<CacheSettings>,
        ops: Arc<dyn OpObserver + Send + Sync>,
        cache_metrics: CacheMetrics,
    ) -> (Engine, EngineThreads) {
        let shared = Arc::new(Shared {
            state: Mutex::new(EngineState::default()),
            work: Condvar::new(),
            pacer: crate::task::Pacer::new(config.max_elements_per_sec),
            config,
            stop: AtomicBool::new(false),
            generations: AtomicU64::new(1),
            slots_freed: Notify::new(),
            task_added: Notify::new(),
            max_lease: AtomicU64::new(0),
            produced: AtomicU64::new(0),
            admissions: Admissions::default(),
            cache,
            cache_reports: Arc::new(CacheReports::new(cache_metrics)),
            cleaned: Mutex::default(),
            ops: Ops(ops),
        });
        let handles = (0..config.threads.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("cachew-compute-{i}"))
                    .spawn(move || compute_loop(&shared))
                    .expect("spawning a compute thread")
            })
            .collect();
        (
            Engine {
                shared: shared.clone(),
            },
            EngineThreads { shared, handles },
        )
    }

    pub fn config(&self) -> EngineConfig {
        self.shared.config
    }

    fn lock(&self) -> MutexGuard<'_, EngineState> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts serving a task (replacing one with the same key under another lease).
    pub fn add_task(&self, spec: TaskSpec, prepared: Arc<Prepared>) {
        let order = Arc::new(
            prepared
                .plan
                .record_order(spec.seed, spec.key.epoch, spec.split),
        );
        let len = order.len() as u32;
        let start = spec.start_index.min(len);
        let mut st = self.lock();
        // The same lease again, or an older one arriving late (leases only grow): nothing to do.
        if let Some(existing) = st.tasks.get(&spec.key)
            && existing.spec.lease >= spec.lease
        {
            return;
        }
        // The same task under a newer lease: the old lease is fenced.
        if let Some(old) = st.remove(&spec.key, Discard::Fenced) {
            old.notify.notify_waiters();
        }
        tracing::debug!(key = ?spec.key, lease = spec.lease, split = spec.split, start, "task added");
        let generation = self.shared.generations.fetch_add(1, Ordering::Relaxed);
        let cache = match (spec.cache_mode, &self.shared.cache) {
            (CacheMode::Compute, _) => None,
            (mode, Some(_)) if !prepared.pipeline.has_cache_point() => {
                tracing::warn!(
                    ?mode,
                    "the task asks for the cache but its pipeline has no cache op; computing"
                );
                None
            }
            (mode, Some(settings)) => {
                let cache = Arc::new(TaskCache::new(
                    spec.key.job,
                    spec.split,
                    mode,
                    settings.clone(),
                    prepared.clone(),
                    self.shared.cache_reports.clone(),
                    order[..start as usize].to_vec(),
                ));
                let fingerprint = *cache.fingerprint();
                let first = self
                    .shared
                    .cleaned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fingerprint);
                if first {
                    let removed = cachew_pipeline::cache::remove_temporaries(
                        &settings.dir,
                        &fingerprint,
                        Duration::from_secs(60),
                    );
                    if removed > 0 {
                        tracing::info!(
                            removed,
                            "removed temporary cache files left by crashed writers"
                        );
                    }
                }
                Some(cache)
            }
            (mode, None) => {
                tracing::warn!(
                    ?mode,
                    "the task asks for the cache but this worker has no --cache-dir; computing"
                );
                None
            }
        };
        let lease_of_new_task = spec.lease;
        st.tasks.insert(
            spec.key,
            Task {
                spec,
                cache,
                prepared,
                order,
                len,
                acked: start,
                next_claim: start,
                buffer: BTreeMap::new(),
                generation,
                error: None,
                retry_at: None,
                retry_backoff: retry_backoff(),
                notify: Arc::new(Notify::new()),
                sent_end: false,
                sent_upto: start,
                last_fetch: std::time::Instant::now(),
            },
        );
        self.shared
            .max_lease
            .fetch_max(lease_of_new_task, Ordering::SeqCst);
        drop(st);
        self.shared.work.notify_all();
        self.shared.task_added.notify_waiters();
    }

    /// Stops serving a task; waiting fetches see it gone.
    /// Only the task under `lease` is dropped: a late drop for an older lease must not remove the
    /// task re-added under a newer one.
    pub fn drop_task(&self, key: &TaskKey, lease: u64) {
        self.drop_task_for(key, lease, Discard::Dropped);
    }

    /// [`Engine::drop_task`], its unsent elements discarded for `reason` (fenced or dropped).
    pub fn drop_task_for(&self, key: &TaskKey, lease: u64, reason: Discard) {
        let removed = {
            let mut st = self.lock();
            let removed = match st.tasks.get(key) {
                Some(t) if t.spec.lease == lease => st.remove(key, reason),
                _ => None,
            };
            st.forget_gone_jobs();
            removed
        };
        if let Some(task) = removed {
            task.notify.notify_waiters();
            if !task.sent_end {
                self.shared.slots_freed.notify_one();
            }
        }
    }

    /// Resolves when a slot frees up (a split fully sent, or a task dropped).
    pub async fn slot_freed(&self) {
        self.shared.slots_freed.notified().await;
    }

    /// Drops every task; their unsent elements count as discarded for `why`.
    pub fn drop_all(&self, why: Discard) {
        let tasks = {
            let mut st = self.lock();
            st.share = FairShare::default();
            let tasks = std::mem::take(&mut st.tasks);
            let unsent = tasks.values().map(Task::unsent).sum();
            st.ledger.discard(why, unsent);
            tasks
        };
        for t in tasks.values() {
            t.notify.notify_waiters();
        }
    }

    /// Cache measurements and commits since the last call (for the heartbeat).
    /// The engine's disks (the cache) that do not take writes now.
    pub fn disk_conditions(&self) -> Vec<cachew_proto::v1::DiskCondition> {
        self.shared
            .cache_reports
            .disk_condition()
            .into_iter()
            .collect()
    }

    pub fn take_cache_reports(&self) -> Vec<cachew_proto::v1::CacheReport> {
        self.shared.cache_reports.take()
    }

    /// Returns undelivered cache reports (a heartbeat failed).
    pub fn put_back_cache_reports(&self, reports: Vec<cachew_proto::v1::CacheReport>) {
        self.shared.cache_reports.put_back(reports);
    }

    /// Elements computed since this engine started.
    pub fn elements_produced(&self) -> u64 {
        self.shared.produced.load(Ordering::Relaxed)
    }

    /// One consistent snapshot of the element accounting, buffers and task states.
    pub fn accounts(&self) -> Accounts {
        let config = &self.shared.config;
        let st = self.lock();
        let mut a = Accounts {
            ledger: st.ledger,
            ..Accounts::default()
        };
        for t in st.tasks.values() {
            a.buffered_elements += t.unsent();
            a.buffered_bytes += t
                .buffer
                .values()
                .map(|e| cachew_proto::element_bytes(e) as u64)
                .sum::<u64>();
            a.count_task(t.state(config));
        }
        a
    }

    /// [`Engine::accounts`] for as long as the engine lives (for the metrics endpoint).
    pub fn accounts_source(&self) -> impl Fn() -> Option<Accounts> + Send + Sync + 'static {
        let shared = Arc::downgrade(&self.shared);
        move || shared.upgrade().map(|shared| Engine { shared }.accounts())
    }

    /// The tasks assigned here that the engine does not run (yet).
    pub fn admissions(&self) -> &Admissions {
        &self.shared.admissions
    }

    /// Wakes fetches waiting for a task to arrive (one was refused: they answer that now).
    pub fn wake_fetches(&self) {
        self.shared.task_added.notify_waiters();
    }

    pub fn has_task(&self, key: &TaskKey, lease: u64) -> bool {
        self.lock()
            .tasks
            .get(key)
            .is_some_and(|t| t.spec.lease == lease)
    }

    /// Every task's assignment and progress (what a checkpoint records).
    pub fn snapshot(&self) -> Vec<(TaskSpec, TaskReport)> {
        let config = &self.shared.config;
        self.lock()
            .tasks
            .values()
            .map(|t| (t.spec.clone(), t.report(config)))
            .collect()
    }

    pub fn reports(&self) -> Vec<TaskReport> {
        let config = &self.shared.config;
        self.lock()
            .tasks
            .values()
            .map(|t| t.report(config))
            .collect()
    }

    /// How many more tasks this worker takes: tasks whose last element was sent no longer count,
    /// and idle ones (full, unread for a while) give their slots back (`schedule::slot_use`).
    pub fn free_slots(&self) -> usize {
        let config = &self.shared.config;
        let st = self.lock();
        let views = st.tasks.values().map(|t| SlotView {
            sent_end: t.sent_end,
            idle: t.is_idle(config),
        });
        slot_use(views, config.max_tasks).free
    }

    /// Elements from `from` on (at most `max` and about `max_bytes`), waiting up to `wait` for
    /// the first. Moves the task's fetch cursor to `from`: elements before it are dropped, and a
    /// cursor that moves back makes the task recompute from there (same bytes: determinism).
    pub async fn fetch(
        &self,
        key: TaskKey,
        lease: u64,
        from: u32,
        max: u32,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Fetched, FetchError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(reason) = self.shared.admissions.refusal(&key, lease) {
                return Err(FetchError::Pipeline(PipelineFailure {
                    record_id: None,
                    reason,
                }));
            }
            // The dispatcher tells the client where a split is as soon as it assigns it; the
            // assignment reaches this worker in the reply to its heartbeat, which may come a
            // moment later. A fetch for a lease newer than any this worker has waits for it
            // (bounded by the fetch's wait) instead of sending the client into a retry loop.
            if lease > self.shared.max_lease.load(Ordering::SeqCst) {
                let added = self.shared.task_added.notified();
                tokio::pin!(added);
                added.as_mut().enable();
                if lease <= self.shared.max_lease.load(Ordering::SeqCst) {
                    continue;
                }
                if tokio::time::timeout_at(deadline, added).await.is_err() {
                    let st = self.lock();
                    return Err(match st.tasks.get(&key) {
                        Some(t) => FetchError::WrongLease {
                            key,
                            asked: lease,
                            held: t.spec.lease,
                        },
                        None => FetchError::UnknownTask(key),
                    });
                }
                continue;
            }
            let notify = {
                let mut guard = self.lock();
                let st = &mut *guard;
                let task = st.tasks.get_mut(&key).ok_or(FetchError::UnknownTask(key))?;
                if task.spec.lease != lease {
                    return Err(FetchError::WrongLease {
                        key,
                        asked: lease,
                        held: task.spec.lease,
                    });
                }
                if from > task.len {
                    return Err(FetchError::BadIndex {
                        from,
                        len: task.len,
                    });
                }
                task.last_fetch = std::time::Instant::now();
                if let Some(e) = &task.error {
                    return Err(FetchError::Pipeline(e.clone()));
                }
                let (moved, discarded) = move_cursor(task, from, &self.shared.generations);
                let mut elements = Vec::new();
                let mut bytes = 0usize;
                let mut i = from;
                let mut sends = Vec::new();
                while (elements.len() as u32) < max.max(1)
                    && (elements.is_empty() || bytes < max_bytes)
                {
                    let Some(e) = task.buffer.get(&i) else { break };
                    let size = cachew_proto::element_bytes(e);
                    sends.push((i >= task.sent_upto, size as u64));
                    bytes += size;
                    elements.push(e.clone());
                    i += 1;
                }
                task.sent_upto = task.sent_upto.max(i);
                if let Some((reason, n)) = discarded {
                    st.ledger.discard(reason, n);
                }
                for (first, size) in sends {
                    st.ledger.sent(first, size);
                }
                let end = i == task.len;
                if moved {
                    self.shared.work.notify_all();
                }
                if !elements.is_empty() || end {
                    if end && !task.sent_end {
                        task.sent_end = true;
                        self.shared.slots_freed.notify_one();
                    }
                    return Ok(Fetched {
                        elements,
                        end_of_split: end,
                        len: task.len,
                    });
                }
                task.notify.clone()
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check under the lock after registering, so a wake-up between is not lost.
            {
                let st = self.lock();
                let ready = st.tasks.get(&key).is_none_or(|t| {
                    t.buffer.contains_key(&from) || t.error.is_some() || t.spec.lease != lease
                });
                drop(st);
                if ready {
                    continue;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let len = self.lock().tasks.get(&key).map_or(0, |t| t.len);
                return Ok(Fetched {
                    elements: Vec::new(),
                    end_of_split: false,
                    len,
                });
            }
        }
    }
}

/// Moves a task's fetch cursor; returns whether compute threads may have new room, and the
/// unsent elements it threw away (skipped, or rewound).
fn move_cursor(
    task: &mut Task,
    from: u32,
    generations: &AtomicU64,
) -> (bool, Option<(Discard, u64)>) {
    if from == task.acked {
        return (false, None);
    }
    let discarded;
    if from > task.acked {
        // Positions never claimed are skipped: a chunk being written still needs their records.
        if let Some(cache) = &task.cache
            && task.next_claim < from
        {
            let skipped: Vec<u64> = (task.next_claim..from)
                .filter_map(|p| task.order.get(p as usize).copied())
                .collect();
            cache.skipped(&skipped);
        }
        let kept = task.buffer.split_off(&from);
        let passed = std::mem::replace(&mut task.buffer, kept);
        discarded = (
            Discard::Skipped,
            passed.range(task.sent_upto..).count() as u64,
        );
        task.sent_upto = task.sent_upto.max(from);
        task.acked = from;
        task.next_claim = task.next_claim.max(from);
    } else {
        // The client went back (a resumed client): recompute from there.
        task.generation = generations.fetch_add(1, Ordering::Relaxed);
        discarded = (Discard::Rewound, task.unsent());
        task.buffer.clear();
        task.sent_upto = from;
        task.acked = from;
        task.next_claim = from;
        task.sent_end = false;
    }
    (true, Some(discarded).filter(|(_, n)| *n > 0))
}

struct Claim {
    key: TaskKey,
    /// The compute time charged for it in advance (`FairShare::charge_claim`).
    estimate: u64,
    generation: u64,
    cache: Option<Arc<TaskCache>>,
    prepared: Arc<Prepared>,
    order: Arc<Vec<u64>>,
    seed: u64,
    split: u32,
    range: Range<u32>,
}

/// The next chunk a compute thread works on: the job `FairShare` picks among those with work,
/// and that job's most urgent task with room (tasks are ordered by job, epoch, position).
fn claim(st: &mut EngineState, config: &EngineConfig) -> Option<Claim> {
    let now = std::time::Instant::now();
    let mut ready: BTreeMap<u64, TaskKey> = BTreeMap::new();
    for task in st.tasks.values_mut() {
        let key = task.spec.key;
        if ready.contains_key(&key.job)
            || task.error.is_some()
            || task.retry_at.is_some_and(|t| t > now)
        {
            continue;
        }
        let limit = task.len.min(task.acked.saturating_add(config.ahead.max(1)));
        // Skip indices already computed (after a forward jump inside the buffer).
        while task.next_claim < limit && task.buffer.contains_key(&task.next_claim) {
            task.next_claim += 1;
        }
        if task.next_claim < limit {
            ready.insert(key.job, key);
        }
    }
    let job = st.share.pick(ready.keys().copied())?;
    let task = st.tasks.get_mut(ready.get(&job)?)?;
    let limit = task.len.min(task.acked.saturating_add(config.ahead.max(1)));
    let start = task.next_claim;
    let end = (start + config.chunk.max(1)).min(limit);
    task.next_claim = end;
    let claim = Claim {
        key: task.spec.key,
        estimate: 0,
        generation: task.generation,
        cache: task.cache.clone(),
        prepared: task.prepared.clone(),
        order: task.order.clone(),
        seed: task.spec.seed,
        split: task.spec.split,
        range: start..end,
    };
    let estimate = st.share.charge_claim(job, end - start);
    Some(Claim { estimate, ..claim })
}

/// Niceness of compute threads: serving elements and heartbeats must preempt computing, or every
/// hop of the control and data paths waits behind a full time slice when the cores are busy.
const COMPUTE_NICE: i32 = 10;

fn compute_loop(shared: &Shared) {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), COMPUTE_NICE) {
        tracing::debug!("cannot lower the compute thread's priority: {e}");
    }
    loop {
        let claimed = {
            let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Some(c) = claim(&mut st, &shared.config) {
                    break c;
                }
                st = shared
                    .work
                    .wait_timeout(st, Duration::from_millis(200))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        };
        let cache: &dyn PrefixCache = match &claimed.cache {
            Some(c) => c.as_ref(),
            None => &NoCache,
        };
        let started = std::time::Instant::now();
        let result = claimed.prepared.pipeline.produce_observed(
            &claimed.prepared.dataset,
            claimed.seed,
            claimed.key.epoch,
            claimed.split,
            &claimed.order,
            claimed.range.clone(),
            cache,
            shared.ops.0.as_ref(),
        );
        // Elements of a task or generation gone meanwhile are produced and discarded at once.
        let count = result.as_ref().map_or(0, |e| e.len() as u64);
        let pause = shared.pacer.book(count);
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        st.share.settle(
            claimed.key.job,
            claimed.estimate,
            started.elapsed(),
            claimed.range.len() as u32,
        );
        let Some(task) = st.tasks.get_mut(&claimed.key) else {
            st.ledger.produced_stale(count);
            continue;
        };
        if task.generation != claimed.generation {
            st.ledger.produced_stale(count);
            continue;
        }
        if let Some(c) = &claimed.cache {
            // Commit the split's chunk once complete (outside the engine lock).
            let all_claimed = task.next_claim >= task.len;
            let c = c.clone();
            drop(st);
            c.after_chunk(all_claimed);
            st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        }
        let st = &mut *st;
        let Some(task) = st.tasks.get_mut(&claimed.key) else {
            st.ledger.produced_stale(count);
            continue;
        };
        if task.generation != claimed.generation {
            st.ledger.produced_stale(count);
            continue;
        }
        match result {
            Ok(elements) => {
                task.retry_backoff.reset();
                task.retry_at = None;
                shared
                    .produced
                    .fetch_add(elements.len() as u64, Ordering::Relaxed);
                st.ledger.produced += count;
                for e in elements {
                    // Below the cursor, or already there (a range claimed again after a
                    // transient failure while its first claim was in flight): never sent.
                    let index = e.id.index;
                    if index < task.acked || task.buffer.contains_key(&index) {
                        st.ledger.discard(Discard::Stale, 1);
                    } else {
                        task.buffer.insert(index, e);
                    }
                }
            }
            Err(e) if e.is_record_error() => {
                tracing::error!(key = ?claimed.key, "pipeline failed: {e}");
                task.error = Some(PipelineFailure {
                    record_id: e.record_id(),
                    reason: e.to_string(),
                });
            }
            Err(e) => {
                // Not the data's fault (an I/O error on this machine, say): claim the range
                // again after a pause; the client keeps waiting or follows the split elsewhere.
                let backoff = task.retry_backoff.next_delay();
                tracing::warn!(
                    key = ?claimed.key,
                    failures = task.retry_backoff.attempts(),
                    "cannot compute records {}..{} (retrying in {} ms): {e}",
                    claimed.range.start,
                    claimed.range.end,
                    backoff.as_millis()
                );
                task.next_claim = task.next_claim.min(claimed.range.start);
                task.retry_at = Some(std::time::Instant::now() + backoff);
            }
        }
        task.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepared::tf_sample_prepared;

    fn prepared() -> Arc<Prepared> {
        tf_sample_prepared()
    }

    fn spec(lease: u64) -> TaskSpec {
        TaskSpec {
            key: TaskKey {
                job: 1,
                epoch: 0,
                position: 2,
            },
            lease,
            split: 4,
            seed: 9,
            dataset_id: "d".into(),
            start_index: 0,
            cache_mode: CacheMode::Compute,
        }
    }

    /// The engine's accounts once `done` holds (checking the identity on every look).
    async fn accounts_when(engine: &Engine, done: impl Fn(&Accounts) -> bool) -> Accounts {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let a = engine.accounts();
            assert!(a.balanced(), "{a:?}");
            if done(&a) {
                return a;
            }
            assert!(std::time::Instant::now() < deadline, "never reached: {a:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn every_produced_element_is_served_discarded_or_buffered() {
        let (engine, _threads) = Engine::start(EngineConfig {
            threads: 2,
            max_tasks: 2,
            ahead: 16,
            chunk: 4,
            idle_after: Duration::from_secs(60),
            max_elements_per_sec: 0,
        });
        let key = spec(7).key;
        let wait = Duration::from_secs(10);
        // The identity holds at every moment, also while the compute threads run.
        let watcher = {
            let engine = engine.clone();
            tokio::spawn(async move {
                for _ in 0..2000 {
                    let a = engine.accounts();
                    assert!(a.balanced(), "{a:?}");
                    tokio::task::yield_now().await;
                }
            })
        };
        engine.add_task(spec(7), prepared());
        let full = accounts_when(&engine, |a| a.tasks_in(TaskState::Full) == 1).await;
        assert_eq!(full.buffered_elements, 16);
        assert_eq!(full.ledger.produced, 16);
        assert!(full.buffered_bytes > 0);
        // First sends.
        let got = engine.fetch(key, 7, 0, 4, usize::MAX, wait).await.unwrap();
        assert_eq!(got.elements.len(), 4);
        let a = engine.accounts();
        assert_eq!((a.ledger.served, a.ledger.resent), (4, 0));
        let bytes: u64 = got
            .elements
            .iter()
            .map(|e| cachew_proto::element_bytes(e) as u64)
            .sum();
        assert_eq!(a.ledger.served_bytes, bytes);
        // The same fetch again (a broken stream): resends, nothing new served.
        engine.fetch(key, 7, 0, 4, usize::MAX, wait).await.unwrap();
        let a = engine.accounts();
        assert_eq!((a.ledger.served, a.ledger.resent), (4, 4));
        assert_eq!(a.ledger.served_bytes, 2 * bytes);
        // A jump forward past 4..10 (never sent): skipped.
        let got = engine.fetch(key, 7, 10, 2, usize::MAX, wait).await.unwrap();
        assert_eq!(got.elements[0].id.index, 10);
        let a = accounts_when(&engine, |a| a.ledger.produced >= 16 + 10).await;
        assert_eq!(a.ledger.discarded(Discard::Skipped), 6);
        assert_eq!(a.ledger.served, 6);
        // Wait for the buffer to fill again past the cursor, then go back: rewound.
        accounts_when(&engine, |a| a.tasks_in(TaskState::Full) == 1).await;
        engine.fetch(key, 7, 2, 1, usize::MAX, wait).await.unwrap();
        let a = engine.accounts();
        // 10..26 were buffered, 10..12 sent: 14 thrown away unsent.
        assert_eq!(a.ledger.discarded(Discard::Rewound), 14);
        // Element 2 computed again and sent again: a new production, served anew.
        assert_eq!(a.ledger.served, 7);
        // The same task under a newer lease: the old one's unsent elements are fenced.
        let before = accounts_when(&engine, |a| a.tasks_in(TaskState::Full) == 1).await;
        engine.add_task(spec(8), prepared());
        let a = engine.accounts();
        assert_eq!(
            a.ledger.discarded(Discard::Fenced),
            before.buffered_elements
        );
        // Dropping it throws its unsent elements away as dropped.
        let before = accounts_when(&engine, |a| a.buffered_elements > 0).await;
        let dropped_before = before.ledger.discarded(Discard::Dropped);
        engine.drop_task(&key, 8);
        let a = accounts_when(&engine, |a| a.tasks.iter().sum::<u64>() == 0).await;
        assert_eq!(a.buffered_elements, 0);
        assert_eq!(a.buffered_bytes, 0);
        assert!(a.ledger.discarded(Discard::Dropped) >= dropped_before + before.buffered_elements);
        // Chunks in flight for the dropped task end as stale; then everything is accounted.
        let a = accounts_when(&engine, |a| {
            a.ledger.produced == a.ledger.served + a.ledger.discarded_total()
        })
        .await;
        assert!(a.balanced());
        watcher.await.unwrap();
    }

    #[tokio::test]
    async fn an_unread_task_is_idle_and_a_fully_sent_one_sent() {
        let (engine, _threads) = Engine::start(EngineConfig {
            threads: 1,
            max_tasks: 2,
            ahead: 64,
            chunk: 16,
            idle_after: Duration::from_millis(50),
            max_elements_per_sec: 0,
        });
        engine.add_task(spec(7), prepared());
        let key = spec(7).key;
        let wait = Duration::from_secs(10);
        // Unread with a full buffer for longer than idle_after: idle.
        accounts_when(&engine, |a| a.tasks_in(TaskState::Idle) == 1).await;
        let mut from = 0;
        loop {
            let got = engine
                .fetch(key, 7, from, 64, usize::MAX, wait)
                .await
                .unwrap();
            from += got.elements.len() as u32;
            if got.end_of_split {
                break;
            }
        }
        let a = engine.accounts();
        assert_eq!(a.tasks_in(TaskState::Sent), 1, "{a:?}");
        assert_eq!(a.ledger.served, u64::from(from));
        assert!(a.balanced());
    }

    #[tokio::test]
    async fn stale_leases_are_refused_and_a_cursor_moving_back_recomputes_the_same_bytes() {
        let (engine, _threads) = Engine::start(EngineConfig {
            threads: 2,
            max_tasks: 2,
            ahead: 64,
            chunk: 8,
            idle_after: Duration::from_secs(1),
            max_elements_per_sec: 0,
        });
        engine.add_task(spec(7), prepared());
        let key = spec(7).key;
        let wait = Duration::from_secs(10);
        let err = engine
            .fetch(key, 6, 0, 8, usize::MAX, wait)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                FetchError::WrongLease {
                    asked: 6,
                    held: 7,
                    ..
                }
            ),
            "{err}"
        );
        let first = engine.fetch(key, 7, 0, 8, usize::MAX, wait).await.unwrap();
        assert!(!first.elements.is_empty());
        // Move forward past the first elements, then back to 0 (a resumed client).
        let later = engine.fetch(key, 7, 20, 4, usize::MAX, wait).await.unwrap();
        assert_eq!(later.elements[0].id.index, 20);
        let again = engine.fetch(key, 7, 0, 8, usize::MAX, wait).await.unwrap();
        assert_eq!(
            again.elements[..first.elements.len().min(again.elements.len())],
            first.elements[..first.elements.len().min(again.elements.len())]
        );
        // A new lease for the same key replaces the task: the old lease is refused from then on.
        engine.add_task(spec(8), prepared());
        assert!(matches!(
            engine.fetch(key, 7, 0, 8, usize::MAX, wait).await,
            Err(FetchError::WrongLease { .. })
        ));
        // Past the end of the split is an error, not a panic.
        assert!(matches!(
            engine.fetch(key, 8, 10_000, 8, usize::MAX, wait).await,
            Err(FetchError::BadIndex { .. })
        ));
    }

    #[tokio::test]
    async fn a_fetch_for_an_assignment_on_its_way_waits_for_it() {
        let (engine, _threads) = Engine::start(EngineConfig {
            threads: 1,
            max_tasks: 2,
            ahead: 64,
            chunk: 8,
            idle_after: Duration::from_secs(1),
            max_elements_per_sec: 0,
        });
        let key = spec(9).key;
        // The client learned of lease 9 before this worker did: the fetch waits for the task.
        let early = {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .fetch(key, 9, 0, 8, usize::MAX, Duration::from_secs(10))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!early.is_finished(), "the fetch must wait, not refuse");
        engine.add_task(spec(9), prepared());
        let fetched = early.await.unwrap().unwrap();
        assert_eq!(fetched.elements[0].id.index, 0);
        // A lease that never comes is refused once the fetch's wait is over.
        let started = std::time::Instant::now();
        let never = engine
            .fetch(key, 12, 0, 8, usize::MAX, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(
            matches!(
                never,
                FetchError::WrongLease {
                    asked: 12,
                    held: 9,
                    ..
                }
            ),
            "{never}"
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
        // A lease older than what this worker holds is refused at once.
        let other = TaskKey {
            position: 99,
            ..key
        };
        let at_once = tokio::time::timeout(
            Duration::from_secs(5),
            engine.fetch(other, 3, 0, 8, usize::MAX, Duration::from_secs(10)),
        )
        .await
        .expect("refused without waiting");
        assert!(matches!(at_once, Err(FetchError::UnknownTask(_))));
    }

    /// A job whose client stopped reading keeps its tasks (and their elements) but not the
    /// worker's slots: its full buffers go idle and free the slots for a job that reads.
    #[tokio::test]
    async fn full_unread_tasks_give_their_slots_back_and_serve_again_when_read() {
        let (engine, _threads) = Engine::start(EngineConfig {
            threads: 1,
            max_tasks: 2,
            ahead: 4,
            chunk: 2,
            idle_after: Duration::from_millis(100),
            max_elements_per_sec: 0,
        });
        let task = |job: u64, position: u32, lease: u64| TaskSpec {
            key: TaskKey {
                job,
                epoch: 0,
                position,
            },
            split: position,
            ..spec(lease)
        };
        // Job 1's two tasks take both slots; nobody fetches them.
        engine.add_task(task(1, 0, 1), prepared());
        engine.add_task(task(1, 1, 2), prepared());
        assert_eq!(engine.free_slots(), 0);
        let started = std::time::Instant::now();
        while engine.free_slots() < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "unread full tasks kept their slots: {:?}",
                engine.reports()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Both are idle, each with exactly `ahead` elements computed: memory stays bounded.
        for r in engine.reports() {
            assert!(r.idle, "{r:?}");
            assert_eq!((r.acked, r.produced), (0, 4), "{r:?}");
        }
        // Job 2 takes a freed slot and is served to the end of its split.
        engine.add_task(task(2, 0, 3), prepared());
        assert_eq!(engine.free_slots(), 1);
        let wait = Duration::from_secs(30);
        let (key2, mut from) = (task(2, 0, 3).key, 0);
        loop {
            let got = engine
                .fetch(key2, 3, from, 8, usize::MAX, wait)
                .await
                .unwrap();
            from += got.elements.len() as u32;
            if got.end_of_split {
                break;
            }
        }
        assert_eq!(from, 50);
        // Job 1's client comes back: its elements are there, and the task counts again.
        let back = engine
            .fetch(task(1, 0, 1).key, 1, 0, 8, usize::MAX, wait)
            .await
            .unwrap();
        assert_eq!(back.elements[0].id.index, 0);
        assert_eq!(engine.free_slots(), 1);
    }

    /// A put task whose client jumps ahead (it resumes mid-split) still writes a whole chunk: the
    /// skipped records are computed for the chunk.
    #[tokio::test]
    async fn a_put_chunk_is_complete_when_the_client_jumps_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _threads) = Engine::start_with_cache(
            EngineConfig {
                threads: 1,
                max_tasks: 2,
                ahead: 4,
                chunk: 2,
                idle_after: Duration::from_secs(1),
                max_elements_per_sec: 0,
            },
            Some(CacheSettings {
                dir: dir.path().to_path_buf(),
                compression: cachew_pipeline::cache::Compression::None,
            }),
        );
        let prepared = prepared();
        let task = TaskSpec {
            cache_mode: CacheMode::Put,
            ..spec(3)
        };
        let key = task.key;
        engine.add_task(task.clone(), prepared.clone());
        let wait = Duration::from_secs(30);
        let first = engine.fetch(key, 3, 0, 2, usize::MAX, wait).await.unwrap();
        assert_eq!(first.elements[0].id.index, 0);
        // The client jumps from the first elements to index 30 (at most `ahead` past 0 were
        // claimed), then reads to the end.
        let mut from = 30;
        loop {
            let got = engine
                .fetch(key, 3, from, 8, usize::MAX, wait)
                .await
                .unwrap();
            from += got.elements.len() as u32;
            if got.end_of_split {
                break;
            }
        }
        let fingerprint = prepared
            .dataset
            .prefix_fingerprint(prepared.pipeline.spec());
        let range = prepared.plan.split_range(task.split);
        let started = std::time::Instant::now();
        let chunk = loop {
            if let Some(c) = cachew_pipeline::cache::read_chunk(
                dir.path(),
                &fingerprint,
                task.split,
                range.clone(),
            )
            .unwrap()
            {
                break c;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the chunk of a split whose client jumped ahead was never committed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut ids: Vec<u64> = chunk.iter().map(|r| r.record_id).collect();
        ids.sort_unstable();
        assert_eq!(ids, range.collect::<Vec<u64>>());
    }
}
