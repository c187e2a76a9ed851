//! The dispatcher's state machine: workers, datasets, jobs, consumers, split assignments and
//! leases. No I/O, no clocks, no randomness: [`State::apply`] is the only way the state changes,
//! and the same commands applied in the same order give the same state. Live RPCs and journal
//! replay both go through it, so recovery is correct by construction.
//!
//! Soft facts that need no durability (heartbeat times, progress counters reported by workers)
//! live outside, in the service; they only refine decisions (where a failed-over split resumes)
//! and never decide what is delivered.

use std::collections::{BTreeMap, BTreeSet};

use cachew_pipeline::{ConsumerOrder, SplitPlan};
use serde::{Deserialize, Serialize};

/// A consumer's place: epoch, the n-th of its positions in that epoch, index in that split. The
/// one cursor type, shared with the client (its JSON form is part of the journal).
pub use cachew_pipeline::ConsumerCursor as Cursor;

pub type WorkerId = u64;
pub type JobId = u64;

/// Lifecycle of a worker as the dispatcher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerLife {
    Alive,
    Dead,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerEntry {
    pub id: WorkerId,
    pub address: String,
    pub standby: bool,
    pub life: WorkerLife,
    pub incarnation: u64,
    pub threads: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetEntry {
    pub id: String,
    pub spec_json: String,
    pub num_records: u64,
    pub split_records: u32,
    pub shuffle: bool,
}

impl DatasetEntry {
    pub fn plan(&self) -> SplitPlan {
        SplitPlan::new(self.num_records, self.split_records, self.shuffle)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    pub index: u32,
    pub generation: u64,
    pub attached: bool,
    pub cursor: Cursor,
    /// Released for silence (not by the client): attached again when it reports.
    #[serde(default)]
    pub parked: bool,
}

/// Who serves one position of an epoch, under which lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub split: u32,
    pub worker: WorkerId,
    pub lease: u64,
    pub start_index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub dataset_id: String,
    pub seed: u64,
    /// 0 = unbounded.
    pub num_epochs: u64,
    pub num_splits: u32,
    pub num_consumers: u32,
    pub consumers: Vec<Consumer>,
    /// Assigned positions ahead of their consumer's cursor: (epoch, position) -> assignment.
    #[serde(with = "assignment_list")]
    pub assignments: BTreeMap<(u64, u32), Assignment>,
    pub finished: bool,
    #[serde(default)]
    pub cache_policy: CachePolicy,
    #[serde(default)]
    pub cache_decision: Option<CacheDecision>,
}

impl Job {
    /// How the tasks of `epoch` use the cache: "compute", "put" or "get".
    pub fn cache_mode(&self, epoch: u64) -> &'static str {
        match (self.cache_policy, self.cache_decision) {
            (CachePolicy::Compute, _) => "compute",
            (CachePolicy::Put, _) => "put",
            (CachePolicy::Get, _) => "get",
            (CachePolicy::Auto, None) => "put",
            (CachePolicy::Auto, Some(d)) if !d.get => "compute",
            (CachePolicy::Auto, Some(_)) if epoch == 0 => "put",
            (CachePolicy::Auto, Some(_)) => "get",
        }
    }

    /// The consumer that owns `position`.
    pub fn consumer_of(&self, position: u32) -> u32 {
        position % self.num_consumers.max(1)
    }

    /// Forgets the assignments of consumer `c`'s positions; they are assigned again when wanted.
    fn forget_assignments_of(&mut self, c: u32) {
        let stale: Vec<(u64, u32)> = self
            .assignments
            .keys()
            .copied()
            .filter(|&(_, p)| self.consumer_of(p) == c)
            .collect();
        for key in stale {
            self.assignments.remove(&key);
        }
    }

    /// Consumer `c`'s sequence of positions: the arithmetic below is [`ConsumerOrder`]'s, the
    /// same the client fetches with.
    pub fn consumer_order(&self, c: u32) -> ConsumerOrder {
        ConsumerOrder::new(self.num_splits, c, self.num_consumers, self.num_epochs)
    }

    /// Number of positions consumer `c` has per epoch.
    pub fn positions_per_epoch(&self, c: u32) -> u32 {
        self.consumer_order(c).positions_per_epoch()
    }

    /// Position of the `ordinal`-th split of consumer `c`.
    pub fn position(&self, c: u32, ordinal: u32) -> u32 {
        self.consumer_order(c).position(ordinal)
    }

    /// Normalizes a cursor that stands at the end of an epoch to the start of the next.
    pub fn normalize(&self, c: u32, cursor: Cursor) -> Cursor {
        self.consumer_order(c).normalize(cursor)
    }

    /// Whether consumer `c` at `cursor` has consumed every epoch.
    pub fn consumer_done(&self, c: u32, cursor: Cursor) -> bool {
        self.consumer_order(c).is_done(cursor)
    }

    /// The next `window` (epoch, position) pairs of consumer `c` from `cursor` on.
    pub fn window(&self, c: u32, cursor: Cursor, window: u32) -> Vec<(u64, u32)> {
        self.consumer_order(c)
            .window(cursor)
            .take(window as usize)
            .map(|slot| (slot.epoch, slot.position))
            .collect()
    }

    /// Whether (epoch, position) lies before its consumer's cursor (already delivered).
    pub fn is_delivered(&self, epoch: u64, position: u32) -> bool {
        let c = self.consumer_of(position);
        let Some(consumer) = self.consumers.get(c as usize) else {
            return false;
        };
        let order = self.consumer_order(c);
        order.is_before(epoch, order.ordinal_of(position), consumer.cursor)
    }
}

/// Serializes the assignment map as a list of entries (snapshot formats such as JSON only allow
/// string map keys).
mod assignment_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Assignment;

    #[derive(Serialize, Deserialize)]
    struct Entry {
        epoch: u64,
        position: u32,
        #[serde(flatten)]
        assignment: Assignment,
    }

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<(u64, u32), Assignment>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let entries: Vec<Entry> = map
            .iter()
            .map(|(&(epoch, position), &assignment)| Entry {
                epoch,
                position,
                assignment,
            })
            .collect();
        entries.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<(u64, u32), Assignment>, D::Error> {
        let entries = Vec::<Entry>::deserialize(d)?;
        Ok(entries
            .into_iter()
            .map(|e| ((e.epoch, e.position), e.assignment))
            .collect())
    }
}

/// How a job uses the cache of its pipeline's deterministic prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CachePolicy {
    /// Never touch the cache.
    #[default]
    Compute,
    /// Compute the prefix and write the chunks that are not in the cache yet.
    Put,
    /// Read the prefix's output from the cache (recomputing missing or corrupt chunks).
    Get,
    /// Put during the first epoch while measuring; then get or compute, whichever is cheaper.
    Auto,
}

impl CachePolicy {
    pub fn parse(s: &str) -> Option<CachePolicy> {
        match s {
            "" | "compute" => Some(CachePolicy::Compute),
            "put" => Some(CachePolicy::Put),
            "get" => Some(CachePolicy::Get),
            "auto" => Some(CachePolicy::Auto),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CachePolicy::Compute => "compute",
            CachePolicy::Put => "put",
            CachePolicy::Get => "get",
            CachePolicy::Auto => "auto",
        }
    }
}

/// What `auto` chose, with the measurements it chose on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheDecision {
    pub get: bool,
    pub compute_ns_per_element: u64,
    pub read_ns_per_element: u64,
}

/// A task a restarted worker says it still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskClaim {
    pub job: JobId,
    pub epoch: u64,
    pub position: u32,
    pub lease: u64,
}

/// Every change to the dispatcher's state. These are what the journal records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    RegisterWorker {
        address: String,
        standby: bool,
        threads: u32,
        claims: Vec<TaskClaim>,
    },
    RegisterDataset(DatasetEntry),
    GetOrCreateJob {
        name: String,
        dataset_id: String,
        seed: u64,
        num_epochs: u64,
        num_consumers: u32,
        /// None: the lowest detached consumer.
        consumer_index: Option<u32>,
        /// Some: attach at this cursor (a resumed client).
        resume: Option<Cursor>,
        #[serde(default)]
        cache_policy: CachePolicy,
    },
    /// `auto` decided between get and compute.
    DecideCache {
        job: JobId,
        decision: CacheDecision,
    },
    /// A consumer's cursor moved (only split boundaries need to be durable).
    ConsumerProgress {
        job: JobId,
        consumer: u32,
        generation: u64,
        cursor: Cursor,
    },
    ReleaseConsumer {
        job: JobId,
        consumer: u32,
        generation: u64,
        /// Released because it went silent (it may come back), not at its own request.
        #[serde(default)]
        timed_out: bool,
    },
    /// Give `worker` up to `max` more tasks. `resume_at` holds soft knowledge of how far
    /// positions got under earlier owners.
    AssignTasks {
        worker: WorkerId,
        max: u32,
        window: u32,
    },
    DeclareDead {
        worker: WorkerId,
        /// (job, epoch, position) -> index the new owner may start at.
        resume_at: Vec<((JobId, u64, u32), u32)>,
    },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::RegisterWorker { .. } => "register_worker",
            Command::RegisterDataset(_) => "register_dataset",
            Command::GetOrCreateJob { .. } => "get_or_create_job",
            Command::ConsumerProgress { .. } => "consumer_progress",
            Command::ReleaseConsumer { .. } => "release_consumer",
            Command::AssignTasks { .. } => "assign_tasks",
            Command::DeclareDead { .. } => "declare_dead",
            Command::DecideCache { .. } => "decide_cache",
        }
    }
}

/// Something worth telling operators (the status stream's event log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEvent {
    pub kind: &'static str,
    pub message: String,
    pub worker: Option<WorkerId>,
    pub job: Option<JobId>,
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub worker: Option<WorkerId>,
    pub incarnation: u64,
    /// Claims a registering worker keeps.
    pub kept: Vec<TaskClaim>,
    pub job: Option<JobId>,
    pub consumer: Option<(u32, u64)>,
    pub cursor: Option<Cursor>,
    pub created: bool,
    pub assigned: Vec<(JobId, u64, u32, Assignment)>,
    pub events: Vec<StateEvent>,
    /// Nothing changed (the command need not be journaled).
    pub noop: bool,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unknown worker {0}")]
    UnknownWorker(WorkerId),
    #[error("worker {0} was declared dead; it must register again")]
    DeadWorker(WorkerId),
    #[error("unknown dataset {0}")]
    UnknownDataset(String),
    #[error("unknown job {0}")]
    UnknownJob(JobId),
    #[error("job `{name}` exists with {what}")]
    JobMismatch { name: String, what: String },
    #[error("job `{name}` has {n} consumer(s) and all are attached")]
    NoFreeConsumer { name: String, n: u32 },
    #[error("consumer {index} is out of range for a job of {n} consumer(s)")]
    BadConsumer { index: u32, n: u32 },
    #[error(
        "consumer {consumer} of job {job} was taken over by a newer client (generation {current})"
    )]
    Superseded {
        job: JobId,
        consumer: u32,
        current: u64,
    },
    #[error("cursor {0:?} is outside the job")]
    BadCursor(Cursor),
}

/// The dispatcher's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    pub workers: BTreeMap<WorkerId, WorkerEntry>,
    pub datasets: BTreeMap<String, DatasetEntry>,
    pub jobs: BTreeMap<JobId, Job>,
    pub next_worker_id: u64,
    pub next_job_id: u64,
    pub next_lease: u64,
}

impl State {
    pub fn worker_by_address(&self, address: &str) -> Option<&WorkerEntry> {
        self.workers.values().find(|w| w.address == address)
    }

    pub fn job_by_name(&self, name: &str) -> Option<&Job> {
        self.jobs.values().find(|j| j.name == name)
    }

    fn new_lease(&mut self) -> u64 {
        self.next_lease += 1;
        self.next_lease
    }

    /// Active (non-standby) live workers.
    pub fn active_workers(&self) -> usize {
        self.workers
            .values()
            .filter(|w| w.life == WorkerLife::Alive && !w.standby)
            .count()
    }

    /// Assignments held by `worker`.
    pub fn assignments_of(&self, worker: WorkerId) -> Vec<(JobId, u64, u32, Assignment)> {
        self.jobs
            .values()
            .flat_map(|j| {
                j.assignments
                    .iter()
                    .filter(move |(_, a)| a.worker == worker)
                    .map(move |(&(e, p), a)| (j.id, e, p, *a))
            })
            .collect()
    }

    /// The single entry point of change.
    pub fn apply(&mut self, command: &Command) -> Result<Outcome, Rejection> {
        match command {
            Command::RegisterWorker {
                address,
                standby,
                threads,
                claims,
            } => Ok(self.register_worker(address, *standby, *threads, claims)),
            Command::RegisterDataset(entry) => {
                if self.datasets.contains_key(&entry.id) {
                    return Ok(Outcome {
                        noop: true,
                        ..Outcome::default()
                    });
                }
                self.datasets.insert(entry.id.clone(), entry.clone());
                Ok(Outcome::default())
            }
            Command::GetOrCreateJob {
                name,
                dataset_id,
                seed,
                num_epochs,
                num_consumers,
                consumer_index,
                resume,
                cache_policy,
            } => self.get_or_create_job(
                name,
                dataset_id,
                *seed,
                *num_epochs,
                *num_consumers,
                *consumer_index,
                *resume,
                *cache_policy,
            ),
            Command::DecideCache { job, decision } => {
                let j = self.jobs.get_mut(job).ok_or(Rejection::UnknownJob(*job))?;
                if j.cache_decision.is_some() || j.cache_policy != CachePolicy::Auto {
                    return Ok(Outcome {
                        noop: true,
                        ..Outcome::default()
                    });
                }
                j.cache_decision = Some(*decision);
                Ok(Outcome {
                    events: vec![StateEvent {
                        kind: "cache_decision",
                        message: format!(
                            "job {job} auto cache: {} (prefix {:.1} us per element from the source, {:.1} us from the cache)",
                            if decision.get {
                                "put then get"
                            } else {
                                "compute"
                            },
                            decision.compute_ns_per_element as f64 / 1000.0,
                            decision.read_ns_per_element as f64 / 1000.0
                        ),
                        worker: None,
                        job: Some(*job),
                    }],
                    ..Outcome::default()
                })
            }
            Command::ConsumerProgress {
                job,
                consumer,
                generation,
                cursor,
            } => self.consumer_progress(*job, *consumer, *generation, *cursor),
            Command::ReleaseConsumer {
                job,
                consumer,
                generation,
                timed_out,
            } => {
                let j = self.jobs.get_mut(job).ok_or(Rejection::UnknownJob(*job))?;
                let c = j
                    .consumers
                    .get_mut(*consumer as usize)
                    .ok_or(Rejection::BadConsumer {
                        index: *consumer,
                        n: j.num_consumers,
                    })?;
                if c.generation != *generation || !c.attached {
                    return Ok(Outcome {
                        noop: true,
                        ..Outcome::default()
                    });
                }
                c.attached = false;
                c.parked = *timed_out;
                // Its splits stop occupying workers; they are assigned again if it comes back.
                j.forget_assignments_of(*consumer);
                Ok(Outcome {
                    events: vec![StateEvent {
                        kind: "consumer_released",
                        message: format!("job {job} consumer {consumer} released"),
                        worker: None,
                        job: Some(*job),
                    }],
                    ..Outcome::default()
                })
            }
            Command::AssignTasks {
                worker,
                max,
                window,
            } => self.assign_tasks(*worker, *max, *window),
            Command::DeclareDead { worker, resume_at } => self.declare_dead(*worker, resume_at),
        }
    }

    fn register_worker(
        &mut self,
        address: &str,
        standby: bool,
        threads: u32,
        claims: &[TaskClaim],
    ) -> Outcome {
        let mut out = Outcome::default();
        let (id, incarnation, was_dead) = match self.worker_by_address(address).map(|w| w.id) {
            Some(id) => {
                let w = self.workers.get_mut(&id).map(|w| {
                    let was_dead = w.life == WorkerLife::Dead;
                    w.incarnation += 1;
                    w.life = WorkerLife::Alive;
                    // A worker that was promoted from standby stays active.
                    w.standby = w.standby && standby;
                    w.threads = threads;
                    (w.incarnation, was_dead)
                });
                let (inc, was_dead) = w.unwrap_or((1, false));
                (id, inc, was_dead)
            }
            None => {
                self.next_worker_id += 1;
                let id = self.next_worker_id;
                self.workers.insert(
                    id,
                    WorkerEntry {
                        id,
                        address: address.to_string(),
                        standby,
                        life: WorkerLife::Alive,
                        incarnation: 1,
                        threads,
                    },
                );
                (id, 1, false)
            }
        };
        // Keep the claims that match what we assigned; everything else this worker held is lost
        // with its previous process and goes back to the pool.
        let mut kept = Vec::new();
        for job in self.jobs.values_mut() {
            let mut lost = Vec::new();
            for (&(epoch, position), a) in &job.assignments {
                if a.worker != id {
                    continue;
                }
                let claim = TaskClaim {
                    job: job.id,
                    epoch,
                    position,
                    lease: a.lease,
                };
                if claims.contains(&claim) {
                    kept.push(claim);
                } else {
                    lost.push((epoch, position));
                }
            }
            for key in lost {
                job.assignments.remove(&key);
            }
        }
        let role = if standby { "standby worker" } else { "worker" };
        out.events.push(StateEvent {
            kind: if incarnation > 1 {
                "reregistered"
            } else {
                "registered"
            },
            message: format!(
                "{role} {id} at {address} registered (incarnation {incarnation}{})",
                if was_dead { ", was dead" } else { "" }
            ),
            worker: Some(id),
            job: None,
        });
        if !kept.is_empty() {
            out.events.push(StateEvent {
                kind: "recovered",
                message: format!(
                    "worker {id} recovered {} task(s) from its checkpoint",
                    kept.len()
                ),
                worker: Some(id),
                job: None,
            });
        }
        let rejected = claims.len() - kept.len();
        if rejected > 0 {
            out.events.push(StateEvent {
                kind: "fenced",
                message: format!(
                    "worker {id} restored {rejected} task(s) that were reassigned; it drops them"
                ),
                worker: Some(id),
                job: None,
            });
        }
        out.worker = Some(id);
        out.incarnation = incarnation;
        out.kept = kept;
        out
    }

    /// Validates everything first and mutates only when the command will succeed, so a rejected
    /// command leaves the state untouched (rejections are not journaled).
    #[allow(clippy::too_many_arguments)]
    fn get_or_create_job(
        &mut self,
        name: &str,
        dataset_id: &str,
        seed: u64,
        num_epochs: u64,
        num_consumers: u32,
        consumer_index: Option<u32>,
        resume: Option<Cursor>,
        cache_policy: CachePolicy,
    ) -> Result<Outcome, Rejection> {
        let dataset = self
            .datasets
            .get(dataset_id)
            .ok_or_else(|| Rejection::UnknownDataset(dataset_id.to_string()))?;
        let num_consumers = num_consumers.max(1);
        let num_splits = dataset.plan().num_splits();
        let existing = self.job_by_name(name);
        if let Some(j) = existing {
            let mismatch = |what: String| Rejection::JobMismatch {
                name: name.to_string(),
                what,
            };
            if j.dataset_id != dataset_id {
                return Err(mismatch(format!(
                    "another dataset ({})",
                    short(&j.dataset_id)
                )));
            }
            if j.seed != seed {
                return Err(mismatch(format!("seed {}", j.seed)));
            }
            if j.num_epochs != num_epochs {
                return Err(mismatch(format!("{} epochs", j.num_epochs)));
            }
            if j.num_consumers != num_consumers {
                return Err(mismatch(format!("{} consumers", j.num_consumers)));
            }
            if j.cache_policy != cache_policy {
                return Err(mismatch(format!("cache policy {}", j.cache_policy.name())));
            }
        }
        let index = match consumer_index {
            Some(i) if i >= num_consumers => {
                return Err(Rejection::BadConsumer {
                    index: i,
                    n: num_consumers,
                });
            }
            Some(i) => i,
            None => match existing {
                None => 0,
                Some(j) => j
                    .consumers
                    .iter()
                    .find(|c| !c.attached)
                    .map(|c| c.index)
                    .ok_or_else(|| Rejection::NoFreeConsumer {
                        name: name.to_string(),
                        n: num_consumers,
                    })?,
            },
        };
        if let Some(cursor) = resume {
            let per_epoch = ConsumerOrder::new(num_splits, index, num_consumers, num_epochs)
                .positions_per_epoch();
            if cursor.ordinal > per_epoch
                || (num_epochs > 0 && cursor.epoch >= num_epochs && cursor.ordinal > 0)
            {
                return Err(Rejection::BadCursor(cursor));
            }
        }
        // Everything checked: from here on the command succeeds.
        let mut out = Outcome::default();
        let job_id = match existing.map(|j| j.id) {
            Some(id) => id,
            None => {
                self.next_job_id += 1;
                let id = self.next_job_id;
                self.jobs.insert(
                    id,
                    Job {
                        id,
                        name: name.to_string(),
                        dataset_id: dataset_id.to_string(),
                        seed,
                        num_epochs,
                        num_splits,
                        num_consumers,
                        consumers: (0..num_consumers)
                            .map(|index| Consumer {
                                index,
                                generation: 0,
                                attached: false,
                                cursor: Cursor::default(),
                                parked: false,
                            })
                            .collect(),
                        assignments: BTreeMap::new(),
                        finished: false,
                        cache_policy,
                        cache_decision: None,
                    },
                );
                out.created = true;
                out.events.push(StateEvent {
                    kind: "job_created",
                    message: format!(
                        "job {id} `{name}` created: {num_splits} splits, {} epochs, {num_consumers} consumer(s), seed {seed}",
                        if num_epochs == 0 { "unbounded".to_string() } else { num_epochs.to_string() }
                    ),
                    worker: None,
                    job: Some(id),
                });
                id
            }
        };
        let job = self
            .jobs
            .get_mut(&job_id)
            .ok_or(Rejection::UnknownJob(job_id))?;
        if let Some(cursor) = resume {
            let normalized = job.normalize(index, cursor);
            // Positions at or after the resume point must be served again: forget this
            // consumer's assignments (their workers may have dropped what the old client
            // fetched) so they are reassigned and start at the cursor.
            job.forget_assignments_of(index);
            // A resumed consumer may stand before the end of a job that was marked finished.
            if job.finished && !job.consumer_done(index, normalized) {
                job.finished = false;
            }
            if let Some(consumer) = job.consumers.get_mut(index as usize) {
                consumer.cursor = normalized;
            }
        }
        let consumer = job
            .consumers
            .get_mut(index as usize)
            .ok_or(Rejection::BadConsumer {
                index,
                n: num_consumers,
            })?;
        consumer.generation += 1;
        consumer.attached = true;
        consumer.parked = false;
        out.events.push(StateEvent {
            kind: "consumer_attached",
            message: format!(
                "job {job_id} consumer {index} attached (generation {}) at epoch {} split #{} index {}",
                consumer.generation, consumer.cursor.epoch, consumer.cursor.ordinal, consumer.cursor.index
            ),
            worker: None,
            job: Some(job_id),
        });
        out.job = Some(job_id);
        out.consumer = Some((index, consumer.generation));
        out.cursor = Some(consumer.cursor);
        Ok(out)
    }

    fn consumer_progress(
        &mut self,
        job_id: JobId,
        index: u32,
        generation: u64,
        cursor: Cursor,
    ) -> Result<Outcome, Rejection> {
        let job = self
            .jobs
            .get_mut(&job_id)
            .ok_or(Rejection::UnknownJob(job_id))?;
        let n = job.num_consumers;
        let normalized = job.normalize(index, cursor);
        let consumer = job
            .consumers
            .get(index as usize)
            .ok_or(Rejection::BadConsumer { index, n })?;
        if consumer.generation != generation {
            return Err(Rejection::Superseded {
                job: job_id,
                consumer: index,
                current: consumer.generation,
            });
        }
        let old = job.normalize(index, consumer.cursor);
        // A cursor can move at most to the end of the job, and never by absurd amounts (a bad
        // client must not make the status walk billions of epochs).
        if cursor.ordinal > job.positions_per_epoch(index)
            || (job.num_epochs > 0 && normalized.epoch > job.num_epochs)
            || normalized.epoch > old.epoch.saturating_add(1_000)
        {
            return Err(Rejection::BadCursor(cursor));
        }
        // A consumer released for silence that reports again is attached again. One that
        // released itself (it finished, or left) stays released: a late heartbeat of the same
        // client must not attach it again.
        if !consumer.attached {
            if !consumer.parked || job.finished {
                return Ok(Outcome {
                    noop: true,
                    ..Outcome::default()
                });
            }
            if let Some(c) = job.consumers.get_mut(index as usize) {
                c.attached = true;
                c.parked = false;
            }
            let mut out = self.consumer_progress(job_id, index, generation, cursor)?;
            out.noop = false;
            out.events.push(StateEvent {
                kind: "consumer_attached",
                message: format!("job {job_id} consumer {index} is back and attached again"),
                worker: None,
                job: Some(job_id),
            });
            return Ok(out);
        }
        if (normalized.epoch, normalized.ordinal) <= (old.epoch, old.ordinal) {
            // Within the same split (or stale): nothing changes. The durable cursor moves at split
            // boundaries only; a change that is not journaled must not touch the state, or a
            // replay would rebuild another one.
            return Ok(Outcome {
                noop: true,
                ..Outcome::default()
            });
        }
        let mut out = Outcome::default();
        if normalized.epoch > old.epoch {
            for e in old.epoch..normalized.epoch {
                out.events.push(StateEvent {
                    kind: "epoch_done",
                    message: format!("job {job_id} consumer {index} finished epoch {e}"),
                    worker: None,
                    job: Some(job_id),
                });
            }
        }
        if let Some(c) = job.consumers.get_mut(index as usize) {
            c.cursor = normalized;
        }
        // Drop assignments this consumer has moved past.
        let delivered: Vec<(u64, u32)> = job
            .assignments
            .keys()
            .copied()
            .filter(|&(e, p)| job.consumer_of(p) == index && job.is_delivered(e, p))
            .collect();
        for key in delivered {
            job.assignments.remove(&key);
        }
        if !job.finished
            && (0..n).all(|c| {
                job.consumers
                    .get(c as usize)
                    .is_some_and(|x| job.consumer_done(c, x.cursor))
            })
        {
            job.finished = true;
            job.assignments.clear();
            out.events.push(StateEvent {
                kind: "job_finished",
                message: format!("job {job_id} `{}` finished", job.name),
                worker: None,
                job: Some(job_id),
            });
        }
        Ok(out)
    }

    fn assign_tasks(
        &mut self,
        worker: WorkerId,
        max: u32,
        window: u32,
    ) -> Result<Outcome, Rejection> {
        let w = self
            .workers
            .get(&worker)
            .ok_or(Rejection::UnknownWorker(worker))?;
        if w.life == WorkerLife::Dead {
            return Err(Rejection::DeadWorker(worker));
        }
        let mut out = Outcome {
            noop: true,
            ..Outcome::default()
        };
        if w.standby || max == 0 {
            return Ok(out);
        }
        // Candidates: unassigned positions in every attached consumer's window, ranked by how
        // far they are from that consumer's cursor (the most urgent first).
        let mut candidates: BTreeSet<(usize, JobId, u64, u32)> = BTreeSet::new();
        for job in self.jobs.values().filter(|j| !j.finished) {
            for consumer in job.consumers.iter().filter(|c| c.attached) {
                for (rank, (epoch, position)) in job
                    .window(consumer.index, consumer.cursor, window)
                    .into_iter()
                    .enumerate()
                {
                    if !job.assignments.contains_key(&(epoch, position)) {
                        candidates.insert((rank, job.id, epoch, position));
                    }
                }
            }
        }
        for (_, job_id, epoch, position) in candidates.into_iter().take(max as usize) {
            let lease = self.new_lease();
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            let Some(dataset) = self.datasets.get(&job.dataset_id) else {
                continue;
            };
            let split = split_at(dataset, job.seed, epoch, position);
            let consumer = job.consumers.get(job.consumer_of(position) as usize);
            // The head split of a consumer starts at its cursor's index.
            let start_index = consumer
                .map(|c| job.normalize(c.index, c.cursor))
                .filter(|cur| {
                    (
                        cur.epoch,
                        job.position(job.consumer_of(position), cur.ordinal),
                    ) == (epoch, position)
                })
                .map_or(0, |cur| cur.index);
            let a = Assignment {
                split,
                worker,
                lease,
                start_index,
            };
            job.assignments.insert((epoch, position), a);
            out.assigned.push((job_id, epoch, position, a));
            out.noop = false;
        }
        Ok(out)
    }

    fn declare_dead(
        &mut self,
        worker: WorkerId,
        resume_at: &[((JobId, u64, u32), u32)],
    ) -> Result<Outcome, Rejection> {
        let w = self
            .workers
            .get_mut(&worker)
            .ok_or(Rejection::UnknownWorker(worker))?;
        if w.life == WorkerLife::Dead {
            return Ok(Outcome {
                noop: true,
                ..Outcome::default()
            });
        }
        w.life = WorkerLife::Dead;
        let was_active = !w.standby;
        let address = w.address.clone();
        let mut out = Outcome::default();
        out.events.push(StateEvent {
            kind: "declared_dead",
            message: format!("worker {worker} at {address} declared dead"),
            worker: Some(worker),
            job: None,
        });
        // Promote a standby to take the dead worker's place.
        let replacement = if was_active {
            self.workers
                .values_mut()
                .find(|s| s.standby && s.life == WorkerLife::Alive)
                .map(|s| {
                    s.standby = false;
                    s.id
                })
        } else {
            None
        };
        if let Some(r) = replacement {
            out.events.push(StateEvent {
                kind: "standby_promoted",
                message: format!("standby worker {r} promoted to replace worker {worker}"),
                worker: Some(r),
                job: None,
            });
        }
        let held = self.assignments_of(worker);
        for (job_id, epoch, position, old) in held {
            let start = resume_at
                .iter()
                .find(|(k, _)| *k == (job_id, epoch, position))
                .map_or(old.start_index, |(_, i)| *i);
            let new_lease = replacement.map(|_| self.new_lease());
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            match (replacement, new_lease) {
                (Some(r), Some(lease)) => {
                    let a = Assignment {
                        split: old.split,
                        worker: r,
                        lease,
                        start_index: start,
                    };
                    job.assignments.insert((epoch, position), a);
                    out.assigned.push((job_id, epoch, position, a));
                    out.events.push(StateEvent {
                        kind: "failover",
                        message: format!(
                            "job {job_id} epoch {epoch} split {} moved from worker {worker} to {r} at index {start} (lease {lease})",
                            old.split
                        ),
                        worker: Some(r),
                        job: Some(job_id),
                    });
                }
                _ => {
                    job.assignments.remove(&(epoch, position));
                    out.events.push(StateEvent {
                        kind: "failover",
                        message: format!(
                            "job {job_id} epoch {epoch} split {} released by dead worker {worker}; next free worker resumes it at index {start}",
                            old.split
                        ),
                        worker: Some(worker),
                        job: Some(job_id),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// The split at `position` of `epoch` for a job's seed.
pub fn split_at(dataset: &DatasetEntry, seed: u64, epoch: u64, position: u32) -> u32 {
    split_order(dataset, seed, epoch)
        .get(position as usize)
        .copied()
        .unwrap_or(position)
}

/// Split orders recently asked for, newest last. An order costs a hash per split and a sort (2 ms
/// for ImageNet in splits of 64, 20,019 splits, on the development machine) and was computed under
/// the dispatcher's lock for every assignment and every unassigned window position of every client
/// heartbeat; only the few epochs in flight are asked for, so a handful of entries saves nearly
/// all of it.
/// Pure memoization of a pure function, so replay and live state stay identical.
static SPLIT_ORDERS: std::sync::Mutex<Vec<(SplitOrderKey, std::sync::Arc<Vec<u32>>)>> =
    std::sync::Mutex::new(Vec::new());
const SPLIT_ORDERS_KEPT: usize = 16;

/// (records, records per split, shuffle, seed, epoch).
type SplitOrderKey = (u64, u32, bool, u64, u64);

/// The order of the splits of `epoch` for a job's seed (memoized).
pub fn split_order(dataset: &DatasetEntry, seed: u64, epoch: u64) -> std::sync::Arc<Vec<u32>> {
    let key = (
        dataset.num_records,
        dataset.split_records,
        dataset.shuffle,
        seed,
        epoch,
    );
    let memo = || SPLIT_ORDERS.lock().unwrap_or_else(|p| p.into_inner());
    {
        let mut memo = memo();
        if let Some(i) = memo.iter().position(|(k, _)| *k == key) {
            let entry = memo.remove(i);
            let order = entry.1.clone();
            memo.push(entry);
            return order;
        }
    }
    // Computed outside the memo's lock, which every dispatcher of the process shares.
    let order = std::sync::Arc::new(dataset.plan().split_order(seed, epoch));
    let mut memo = memo();
    if !memo.iter().any(|(k, _)| *k == key) {
        if memo.len() >= SPLIT_ORDERS_KEPT {
            memo.remove(0);
        }
        memo.push((key, order.clone()));
    }
    order
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memoized_split_orders_equal_the_plan_through_evictions() {
        let d = dataset(10_000, 64);
        let plan = d.plan();
        // More (seed, epoch) pairs than the memo keeps, visited twice in different orders.
        let keys: Vec<(u64, u64)> = (0..3).flat_map(|s| (0..9).map(move |e| (s, e))).collect();
        for pass in 0..2 {
            let visit: Vec<(u64, u64)> = if pass == 0 {
                keys.clone()
            } else {
                keys.iter().rev().copied().collect()
            };
            for (seed, epoch) in visit {
                let want = plan.split_order(seed, epoch);
                assert_eq!(*split_order(&d, seed, epoch), want);
                for position in [0u32, 1, 77, 156] {
                    assert_eq!(split_at(&d, seed, epoch, position), want[position as usize]);
                }
            }
        }
        // A position past the end falls back to itself, as before.
        assert_eq!(split_at(&d, 0, 0, 10_000), 10_000);
    }

    fn dataset(records: u64, split: u32) -> DatasetEntry {
        DatasetEntry {
            id: "ds".into(),
            spec_json: "{}".into(),
            num_records: records,
            split_records: split,
            shuffle: true,
        }
    }

    fn register(s: &mut State, addr: &str, standby: bool) -> WorkerId {
        s.apply(&Command::RegisterWorker {
            address: addr.into(),
            standby,
            threads: 2,
            claims: vec![],
        })
        .unwrap()
        .worker
        .unwrap()
    }

    fn job(s: &mut State, epochs: u64, consumers: u32) -> (JobId, u64) {
        let out = s
            .apply(&Command::GetOrCreateJob {
                name: "j".into(),
                dataset_id: "ds".into(),
                seed: 7,
                num_epochs: epochs,
                num_consumers: consumers,
                consumer_index: None,
                resume: None,
                cache_policy: CachePolicy::Compute,
            })
            .unwrap();
        (out.job.unwrap(), out.consumer.unwrap().1)
    }

    fn setup() -> (State, WorkerId, WorkerId, JobId, u64) {
        let mut s = State::default();
        s.apply(&Command::RegisterDataset(dataset(100, 10)))
            .unwrap();
        let a = register(&mut s, "a:1", false);
        let b = register(&mut s, "b:1", false);
        let (j, g) = job(&mut s, 2, 1);
        (s, a, b, j, g)
    }

    #[test]
    fn assignment_follows_the_consumer_window_in_order() {
        let (mut s, a, b, j, _) = setup();
        let out = s
            .apply(&Command::AssignTasks {
                worker: a,
                max: 2,
                window: 4,
            })
            .unwrap();
        let got: Vec<(u64, u32)> = out.assigned.iter().map(|x| (x.1, x.2)).collect();
        assert_eq!(got, vec![(0, 0), (0, 1)]);
        let out = s
            .apply(&Command::AssignTasks {
                worker: b,
                max: 5,
                window: 4,
            })
            .unwrap();
        let got: Vec<(u64, u32)> = out.assigned.iter().map(|x| (x.1, x.2)).collect();
        assert_eq!(got, vec![(0, 2), (0, 3)]);
        // Leases are unique and increasing.
        let leases: Vec<u64> = s.jobs[&j].assignments.values().map(|a| a.lease).collect();
        assert_eq!(leases, vec![1, 2, 3, 4]);
    }

    #[test]
    fn progress_drops_delivered_positions_and_finishes_the_job() {
        let (mut s, a, _, j, g) = setup();
        s.apply(&Command::AssignTasks {
            worker: a,
            max: 3,
            window: 3,
        })
        .unwrap();
        s.apply(&Command::ConsumerProgress {
            job: j,
            consumer: 0,
            generation: g,
            cursor: Cursor {
                epoch: 0,
                ordinal: 2,
                index: 0,
            },
        })
        .unwrap();
        assert_eq!(
            s.jobs[&j].assignments.keys().copied().collect::<Vec<_>>(),
            vec![(0, 2)]
        );
        // Windows cross the epoch boundary.
        s.apply(&Command::ConsumerProgress {
            job: j,
            consumer: 0,
            generation: g,
            cursor: Cursor {
                epoch: 0,
                ordinal: 9,
                index: 3,
            },
        })
        .unwrap();
        let out = s
            .apply(&Command::AssignTasks {
                worker: a,
                max: 3,
                window: 3,
            })
            .unwrap();
        let got: Vec<(u64, u32)> = out.assigned.iter().map(|x| (x.1, x.2)).collect();
        assert_eq!(got, vec![(0, 9), (1, 0), (1, 1)]);
        assert_eq!(out.assigned[0].3.start_index, 3);
        let out = s
            .apply(&Command::ConsumerProgress {
                job: j,
                consumer: 0,
                generation: g,
                cursor: Cursor {
                    epoch: 1,
                    ordinal: 10,
                    index: 0,
                },
            })
            .unwrap();
        assert!(out.events.iter().any(|e| e.kind == "job_finished"));
        assert!(s.jobs[&j].finished && s.jobs[&j].assignments.is_empty());
    }

    #[test]
    fn dead_worker_fails_over_to_a_standby_with_new_leases() {
        let (mut s, a, _, j, _) = setup();
        let standby = register(&mut s, "s:1", true);
        assert!(
            s.apply(&Command::AssignTasks {
                worker: standby,
                max: 3,
                window: 4
            })
            .unwrap()
            .assigned
            .is_empty()
        );
        let first = s
            .apply(&Command::AssignTasks {
                worker: a,
                max: 2,
                window: 4,
            })
            .unwrap()
            .assigned;
        let out = s
            .apply(&Command::DeclareDead {
                worker: a,
                resume_at: vec![((j, 0, 0), 17)],
            })
            .unwrap();
        assert_eq!(out.assigned.len(), 2);
        for (x, y) in first.iter().zip(&out.assigned) {
            assert_eq!((x.1, x.2), (y.1, y.2));
            assert_eq!(y.3.worker, standby);
            assert!(y.3.lease > x.3.lease);
        }
        assert_eq!(out.assigned[0].3.start_index, 17);
        assert!(!s.workers[&standby].standby);
        assert_eq!(
            s.apply(&Command::AssignTasks {
                worker: a,
                max: 1,
                window: 4
            }),
            Err(Rejection::DeadWorker(a))
        );
    }

    #[test]
    fn restarted_worker_keeps_matching_claims_only() {
        let (mut s, a, b, j, _) = setup();
        let given = s
            .apply(&Command::AssignTasks {
                worker: a,
                max: 2,
                window: 4,
            })
            .unwrap()
            .assigned;
        let (_, e0, p0, a0) = given[0];
        let out = s
            .apply(&Command::RegisterWorker {
                address: "a:1".into(),
                standby: false,
                threads: 2,
                claims: vec![
                    TaskClaim {
                        job: j,
                        epoch: e0,
                        position: p0,
                        lease: a0.lease,
                    },
                    TaskClaim {
                        job: j,
                        epoch: 0,
                        position: 5,
                        lease: 99,
                    },
                ],
            })
            .unwrap();
        assert_eq!(out.worker, Some(a));
        assert_eq!(out.incarnation, 2);
        assert_eq!(out.kept.len(), 1);
        // The unclaimed second assignment went back to the pool; b picks it up first.
        let next = s
            .apply(&Command::AssignTasks {
                worker: b,
                max: 1,
                window: 4,
            })
            .unwrap()
            .assigned;
        assert_eq!((next[0].1, next[0].2), (given[1].1, given[1].2));
    }

    #[test]
    fn shared_jobs_split_positions_between_consumers() {
        let mut s = State::default();
        s.apply(&Command::RegisterDataset(dataset(95, 10))).unwrap();
        let (j, _) = job(&mut s, 1, 2);
        let (j2, _) = job(&mut s, 1, 2);
        assert_eq!(j, j2);
        let job = &s.jobs[&j];
        assert_eq!(job.positions_per_epoch(0), 5);
        assert_eq!(job.positions_per_epoch(1), 5);
        assert_eq!(
            job.window(1, Cursor::default(), 10),
            (0..5).map(|m| (0, 1 + 2 * m)).collect::<Vec<_>>()
        );
        assert!(matches!(
            s.apply(&Command::GetOrCreateJob {
                name: "j".into(),
                dataset_id: "ds".into(),
                seed: 7,
                num_epochs: 1,
                num_consumers: 2,
                consumer_index: None,
                resume: None,
                cache_policy: CachePolicy::Compute
            }),
            Err(Rejection::NoFreeConsumer { .. })
        ));
        assert!(matches!(
            s.apply(&Command::GetOrCreateJob {
                name: "j".into(),
                dataset_id: "ds".into(),
                seed: 8,
                num_epochs: 1,
                num_consumers: 2,
                consumer_index: None,
                resume: None,
                cache_policy: CachePolicy::Compute
            }),
            Err(Rejection::JobMismatch { .. })
        ));
    }

    #[test]
    fn rejected_commands_leave_the_state_unchanged() {
        let (mut s, a, _, j, g) = setup();
        s.apply(&Command::DeclareDead {
            worker: a,
            resume_at: vec![],
        })
        .unwrap();
        let before = s.clone();
        let rejected = [
            Command::GetOrCreateJob {
                name: "new".into(),
                dataset_id: "ds".into(),
                seed: 1,
                num_epochs: 1,
                num_consumers: 1,
                consumer_index: Some(3),
                resume: None,
                cache_policy: CachePolicy::Compute,
            },
            Command::GetOrCreateJob {
                name: "new".into(),
                dataset_id: "ds".into(),
                seed: 1,
                num_epochs: 1,
                num_consumers: 1,
                consumer_index: None,
                resume: Some(Cursor {
                    epoch: 0,
                    ordinal: 99,
                    index: 0,
                }),
                cache_policy: CachePolicy::Compute,
            },
            Command::GetOrCreateJob {
                name: "j".into(),
                dataset_id: "nope".into(),
                seed: 7,
                num_epochs: 2,
                num_consumers: 1,
                consumer_index: None,
                resume: None,
                cache_policy: CachePolicy::Compute,
            },
            Command::GetOrCreateJob {
                name: "j".into(),
                dataset_id: "ds".into(),
                seed: 8,
                num_epochs: 2,
                num_consumers: 1,
                consumer_index: None,
                resume: None,
                cache_policy: CachePolicy::Compute,
            },
            Command::ConsumerProgress {
                job: j,
                consumer: 0,
                generation: g + 5,
                cursor: Cursor::default(),
            },
            Command::ConsumerProgress {
                job: 99,
                consumer: 0,
                generation: g,
                cursor: Cursor::default(),
            },
            Command::AssignTasks {
                worker: a,
                max: 2,
                window: 4,
            },
            Command::AssignTasks {
                worker: 77,
                max: 2,
                window: 4,
            },
            Command::DeclareDead {
                worker: 77,
                resume_at: vec![],
            },
        ];
        for c in &rejected {
            assert!(s.apply(c).is_err(), "{c:?} should be rejected");
            assert_eq!(
                s, before,
                "{c:?} changed the state although it was rejected"
            );
        }
    }

    #[test]
    fn replaying_the_journaled_commands_rebuilds_the_live_state() {
        // A live sequence: every command that changed the state is journaled (serialized as the
        // journal does), then replayed into a fresh state machine.
        let mut live = State::default();
        let mut journal: Vec<String> = Vec::new();
        let mut run = |s: &mut State, c: Command| {
            if let Ok(out) = s.apply(&c)
                && !out.noop
            {
                journal.push(serde_json::to_string(&c).unwrap());
            }
        };
        run(&mut live, Command::RegisterDataset(dataset(100, 10)));
        for addr in ["a:1", "b:1", "s:1"] {
            run(
                &mut live,
                Command::RegisterWorker {
                    address: addr.into(),
                    standby: addr == "s:1",
                    threads: 2,
                    claims: vec![],
                },
            );
        }
        run(
            &mut live,
            Command::GetOrCreateJob {
                name: "j".into(),
                dataset_id: "ds".into(),
                seed: 7,
                num_epochs: 3,
                num_consumers: 1,
                consumer_index: None,
                resume: None,
                cache_policy: CachePolicy::Auto,
            },
        );
        for step in 0..25u32 {
            run(
                &mut live,
                Command::AssignTasks {
                    worker: 1 + u64::from(step % 2),
                    max: 2,
                    window: 6,
                },
            );
            let progress = |index| Command::ConsumerProgress {
                job: 1,
                consumer: 0,
                generation: 1,
                cursor: Cursor {
                    epoch: u64::from(step / 10),
                    ordinal: step % 10,
                    index,
                },
            };
            run(&mut live, progress(3));
            // A move within the split (not journaled) must leave the state alone.
            run(&mut live, progress(9));
            if step == 12 {
                run(
                    &mut live,
                    Command::DeclareDead {
                        worker: 1,
                        resume_at: vec![((1, 1, 3), 9)],
                    },
                );
            }
            if step == 15 {
                run(
                    &mut live,
                    Command::RegisterWorker {
                        address: "a:1".into(),
                        standby: false,
                        threads: 2,
                        claims: vec![],
                    },
                );
            }
        }
        run(
            &mut live,
            Command::GetOrCreateJob {
                name: "j".into(),
                dataset_id: "ds".into(),
                seed: 7,
                num_epochs: 3,
                num_consumers: 1,
                consumer_index: Some(0),
                resume: Some(Cursor {
                    epoch: 1,
                    ordinal: 4,
                    index: 2,
                }),
                cache_policy: CachePolicy::Auto,
            },
        );
        run(
            &mut live,
            Command::DecideCache {
                job: 1,
                decision: CacheDecision {
                    get: true,
                    compute_ns_per_element: 120_000,
                    read_ns_per_element: 6_000,
                },
            },
        );
        // The last cursor change is a move within the resumed split (index 2 -> 7), which is
        // not journaled: it must not change the state the next assignment reads.
        run(
            &mut live,
            Command::ConsumerProgress {
                job: 1,
                consumer: 0,
                generation: 2,
                cursor: Cursor {
                    epoch: 1,
                    ordinal: 4,
                    index: 7,
                },
            },
        );
        run(
            &mut live,
            Command::AssignTasks {
                worker: 2,
                max: 3,
                window: 6,
            },
        );
        assert!(journal.len() > 30);
        let mut replayed = State::default();
        for line in &journal {
            let c: Command = serde_json::from_str(line).unwrap();
            replayed.apply(&c).unwrap();
        }
        assert_eq!(replayed, live);
        assert!(live.jobs[&1].cache_decision.is_some_and(|d| d.get));
        // A snapshot taken midway plus the rest of the journal gives the same state too.
        let mut half = State::default();
        for line in &journal[..journal.len() / 2] {
            half.apply(&serde_json::from_str(line).unwrap()).unwrap();
        }
        let mut from_snapshot: State =
            serde_json::from_str(&serde_json::to_string(&half).unwrap()).unwrap();
        for line in &journal[journal.len() / 2..] {
            from_snapshot
                .apply(&serde_json::from_str(line).unwrap())
                .unwrap();
        }
        assert_eq!(from_snapshot, live);
    }

    #[test]
    fn a_newer_client_supersedes_the_old_one() {
        let (mut s, _, _, j, g) = setup();
        let out = s
            .apply(&Command::GetOrCreateJob {
                name: "j".into(),
                dataset_id: "ds".into(),
                seed: 7,
                num_epochs: 2,
                num_consumers: 1,
                consumer_index: Some(0),
                resume: Some(Cursor {
                    epoch: 1,
                    ordinal: 3,
                    index: 4,
                }),
                cache_policy: CachePolicy::Compute,
            })
            .unwrap();
        assert_eq!(
            out.cursor,
            Some(Cursor {
                epoch: 1,
                ordinal: 3,
                index: 4
            })
        );
        let g2 = out.consumer.unwrap().1;
        assert!(g2 > g);
        assert!(matches!(
            s.apply(&Command::ConsumerProgress {
                job: j,
                consumer: 0,
                generation: g,
                cursor: Cursor::default()
            }),
            Err(Rejection::Superseded { .. })
        ));
    }
}
