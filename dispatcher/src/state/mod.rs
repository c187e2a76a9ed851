//! The dispatcher's state machine: workers, datasets, jobs, consumers, split assignments and
//! leases. No I/O, no clocks, no randomness: [`State::apply`] is the only way the state changes,
//! and the same commands applied in the same order give the same state. Live RPCs and journal
//! replay both go through it, so recovery is correct by construction.
//!
//! Soft facts that need no durability (heartbeat times, progress counters reported by workers)
//! live outside, in `soft.rs`; they only refine decisions (where a failed-over split resumes)
//! and never decide what is delivered.
//!
//! - `model`: the entities ([`Job`], [`WorkerEntry`], [`DatasetEntry`], [`Cursor`], ...) and
//!   their pure queries;
//! - `command`: [`Command`], [`Outcome`], [`StateEvent`], [`Rejection`];
//! - `split_order`: the memoized order of an epoch's splits;
//! - `expire`: removing what outlived its retention ([`JobRest`]);
//! - `fair`: `AssignFairly`, a worker's free slots shared between jobs;
//! - `handover`: moving a departing worker's splits (shared by death and drain);
//! - `drain`: a worker leaving on purpose (`DrainWorker`, `WorkerLeft`);
//! - `scale`: the fleet size wanted (`Scale`, `PinWorkers`);
//! - here: [`State`] and its transitions.

mod command;
mod drain;
mod expire;
mod fair;
mod handover;
mod model;
mod scale;
mod split_order;
mod unreachable;

use std::collections::{BTreeMap, BTreeSet};

use cachew_pipeline::ConsumerOrder;
use cachew_proto::v1::EventKind;
use serde::{Deserialize, Serialize};

pub use command::{Command, Outcome, Rejection, StateEvent, TaskClaim};
pub use expire::JobRest;
pub use model::{
    Assignment, CacheDecision, CachePolicy, Consumer, Cursor, DatasetEntry, Job, JobId,
    WorkerEntry, WorkerId, WorkerLife,
};
pub use scale::Scale;
pub use split_order::{split_at, split_order};

/// The dispatcher's durable state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    pub workers: BTreeMap<WorkerId, WorkerEntry>,
    pub datasets: BTreeMap<String, DatasetEntry>,
    pub jobs: BTreeMap<JobId, Job>,
    pub next_worker_id: u64,
    pub next_job_id: u64,
    pub next_lease: u64,
    /// The fleet size wanted (`scale`); absent in journals written before autoscaling.
    #[serde(default)]
    pub scale: Scale,
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
                let missing = self.missing_job(*job);
                let j = self.jobs.get_mut(job).ok_or(missing)?;
                if j.cache_decision.is_some() || j.cache_policy != CachePolicy::Auto {
                    return Ok(Outcome {
                        noop: true,
                        ..Outcome::default()
                    });
                }
                j.cache_decision = Some(*decision);
                Ok(Outcome {
                    events: vec![StateEvent {
                        kind: EventKind::CacheDecision,
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
                let missing = self.missing_job(*job);
                let j = self.jobs.get_mut(job).ok_or(missing)?;
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
                // What its client could not reach says nothing about the next client.
                c.unreachable.clear();
                // Its splits stop occupying workers; they are assigned again if it comes back.
                j.forget_assignments_of(*consumer);
                Ok(Outcome {
                    events: vec![StateEvent {
                        kind: EventKind::ConsumerReleased,
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
            Command::AssignFairly {
                worker,
                max,
                window,
                idle,
            } => self.assign_fairly(*worker, *max, *window, idle),
            Command::Expire {
                jobs,
                workers,
                datasets,
            } => Ok(self.expire(jobs, workers, datasets)),
            Command::ConsumerUnreachable {
                job,
                consumer,
                generation,
                workers,
            } => self.consumer_unreachable(*job, *consumer, *generation, workers),
            Command::DrainWorker { worker, resume_at } => self.drain_worker(*worker, resume_at),
            Command::WorkerLeft { worker } => self.worker_left(*worker, false),
            Command::Scale { from, target, why } => Ok(self.scale_to(*from, *target, why)),
            Command::PinWorkers { pinned } => Ok(self.pin_workers(*pinned)),
            Command::Shrink { worker, resume_at } => self.shrink(*worker, resume_at),
        }
    }

    /// The refusal for a job id that is not in the state: one this state machine handed out
    /// (ids are never reused) was removed after its retention.
    fn missing_job(&self, id: JobId) -> Rejection {
        if id > 0 && id <= self.next_job_id {
            Rejection::ExpiredJob(id)
        } else {
            Rejection::UnknownJob(id)
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
                EventKind::Reregistered
            } else {
                EventKind::Registered
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
                kind: EventKind::Recovered,
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
                kind: EventKind::Fenced,
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
        let bound = cachew_proto::limits::MAX_CONSUMERS;
        if num_consumers > bound {
            return Err(Rejection::OverBound {
                field: "num_consumers",
                value: u64::from(num_consumers),
                bound: u64::from(bound),
            });
        }
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
                                unreachable: BTreeSet::new(),
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
                    kind: EventKind::JobCreated,
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
        // A new client (perhaps on another host) reports its own unreachable workers.
        consumer.unreachable.clear();
        out.events.push(StateEvent {
            kind: EventKind::ConsumerAttached,
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
        let missing = self.missing_job(job_id);
        let job = self.jobs.get_mut(&job_id).ok_or(missing)?;
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
                kind: EventKind::ConsumerAttached,
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
                    kind: EventKind::EpochDone,
                    message: format!("job {job_id} consumer {index} finished epoch {e}"),
                    worker: None,
                    job: Some(job_id),
                });
            }
        }
        if let Some(c) = job.consumers.get_mut(index as usize) {
            c.cursor = normalized;
        }
        let per_epoch = u64::from(job.positions_per_epoch(index));
        let passed = |c: Cursor| c.epoch.saturating_mul(per_epoch) + u64::from(c.ordinal);
        out.completed = passed(normalized).saturating_sub(passed(old));
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
                kind: EventKind::JobFinished,
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
        if !self.takes_tasks(worker, max)? {
            return Ok(Outcome {
                noop: true,
                ..Outcome::default()
            });
        }
        // The most urgent first (ties: the lowest job id).
        let picks: Vec<(JobId, u64, u32)> = self
            .window_candidates(worker, window)
            .into_iter()
            .take(max as usize)
            .map(|(_, job, epoch, position)| (job, epoch, position))
            .collect();
        Ok(self.assign_positions(worker, picks))
    }

    /// Whether `worker` gets tasks at all: alive (else an error), active and asking for some.
    fn takes_tasks(&self, worker: WorkerId, max: u32) -> Result<bool, Rejection> {
        let w = self
            .workers
            .get(&worker)
            .ok_or(Rejection::UnknownWorker(worker))?;
        if w.life == WorkerLife::Dead {
            return Err(Rejection::DeadWorker(worker));
        }
        Ok(!w.standby && max > 0 && w.life == WorkerLife::Alive)
    }

    /// Unassigned positions in every attached consumer's window, as (rank, job, epoch,
    /// position): rank is how far the position is from that consumer's cursor (0: the split it
    /// reads now). Consumers whose client cannot reach `worker` are left out.
    fn window_candidates(
        &self,
        worker: WorkerId,
        window: u32,
    ) -> BTreeSet<(usize, JobId, u64, u32)> {
        let mut candidates = BTreeSet::new();
        for job in self.jobs.values().filter(|j| !j.finished) {
            let reaches = |c: &&Consumer| c.attached && !c.unreachable.contains(&worker);
            for consumer in job.consumers.iter().filter(reaches) {
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
        candidates
    }

    /// Assigns `picks` to `worker`, each under a fresh lease; a consumer's head split starts at
    /// its cursor's index.
    fn assign_positions(
        &mut self,
        worker: WorkerId,
        picks: impl IntoIterator<Item = (JobId, u64, u32)>,
    ) -> Outcome {
        let mut out = Outcome {
            noop: true,
            ..Outcome::default()
        };
        for (job_id, epoch, position) in picks {
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
        out
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
        match w.life {
            WorkerLife::Dead | WorkerLife::Left => {
                return Ok(Outcome {
                    noop: true,
                    ..Outcome::default()
                });
            }
            // Silent while draining: it holds nothing any more, it is gone.
            WorkerLife::Draining => return self.worker_left(worker, true),
            WorkerLife::Alive => {}
        }
        w.life = WorkerLife::Dead;
        let was_active = !w.standby;
        let address = w.address.clone();
        let mut out = Outcome::default();
        out.events.push(StateEvent {
            kind: EventKind::DeclaredDead,
            message: format!("worker {worker} at {address} declared dead"),
            worker: Some(worker),
            job: None,
        });
        self.hand_over(worker, was_active, resume_at, "dead worker", &mut out);
        Ok(out)
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
