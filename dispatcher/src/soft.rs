//! Soft facts: what the nodes reported that needs no durability. Heartbeat times of workers and
//! consumers, the progress workers report per task, cache measurements and commits, epoch
//! reports, checkpoint summaries and disk conditions; and since when each job, worker or dataset
//! the state may remove has been resting ([`Resting`], read by `policy::retention`).
//!
//! They are lost with the process and rebuilt from the next heartbeats. They refine decisions
//! (where a failed-over split resumes, when `auto` decides, when retention removes) and feed the
//! status stream; they never decide what is delivered, and they change no [`State`].
//!
//! Every map is keyed by something the state holds (a worker, a job, a consumer, an assigned
//! task) and [`Soft::retain_known`] drops the entries whose key the state no longer holds, so
//! the soft facts stay bounded by the live work, like the state.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use cachew_proto::v1;
use cachew_proto::v1::EventKind;

use crate::events::EventLog;
use crate::state::{JobId, JobRest, State, WorkerEntry, WorkerId, WorkerLife};

/// What a worker last reported about one task.
#[derive(Debug, Clone, Copy)]
pub struct Reported {
    pub worker: WorkerId,
    pub lease: u64,
    pub produced: u32,
    pub acked: u32,
    pub len: u32,
    /// Full and unread for a while (it gave its slot back).
    pub idle: bool,
}

/// A trainer's time waiting for data, as its consumer's latest heartbeat said: the input-bound
/// signal (a trainer that waits is starved by its input pipeline and wants more workers; one
/// that never waits has enough). The autoscaler reads it here; the status stream carries it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InputWait {
    /// Seconds the trainer's calls for the next batch spent blocked on fetched data since the
    /// client started.
    pub seconds_total: f64,
    /// The fraction of wall time spent waiting over the client's last ~10 s, 0 to 1.
    pub ratio: f64,
}

impl InputWait {
    /// From a heartbeat, clamped to what the fields can mean (a client's bogus value never
    /// reaches a scaling decision as a negative or NaN).
    pub fn from_heartbeat(req: &v1::ClientHeartbeatRequest) -> InputWait {
        let finite = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
        InputWait {
            seconds_total: finite(req.wait_seconds_total),
            ratio: finite(req.input_wait_ratio).min(1.0),
        }
    }
}

/// (job, epoch, position): one task.
pub type TaskRef = (JobId, u64, u32);

/// What workers reported about a job's cache.
#[derive(Debug, Default)]
pub struct CacheSoft {
    pub prefix_us: u64,
    pub prefix_count: u64,
    pub read_us: u64,
    pub read_count: u64,
    pub committed: BTreeSet<u32>,
    pub repaired: u64,
    pub complete_announced: bool,
}

/// What folding one cache report in changed.
#[derive(Debug, Clone, Copy)]
pub struct CacheFold {
    /// New chunks were committed or repaired (measurements alone do not count).
    pub changed: bool,
    /// Every split is committed now, and this is the first report to say so.
    pub newly_complete: bool,
}

impl CacheSoft {
    /// Adds a worker's cache report for a job of `splits` splits.
    pub fn fold(&mut self, r: &v1::CacheReport, splits: u32) -> CacheFold {
        self.prefix_us += r.prefix_us;
        self.prefix_count += r.prefix_count;
        self.read_us += r.read_us;
        self.read_count += r.read_count;
        self.repaired += r.repaired;
        let before = self.committed.len();
        self.committed.extend(r.committed.iter().copied());
        let changed = self.committed.len() != before || r.repaired > 0;
        let newly_complete = !self.complete_announced && self.committed.len() as u32 >= splits;
        self.complete_announced |= newly_complete;
        CacheFold {
            changed,
            newly_complete,
        }
    }
}

/// A node that reports its disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskOwner {
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

/// Facts that need no durability.
#[derive(Debug, Default)]
pub struct Soft {
    /// When each worker last reported.
    pub last_seen: HashMap<WorkerId, Instant>,
    /// Live workers whose heartbeats are late (not yet past the timeout).
    pub suspect: HashSet<WorkerId>,
    /// Since when the dispatcher hears nobody and suspects its own link
    /// (`policy::liveness::deaf`).
    pub deaf_since: Option<Instant>,
    pub progress: HashMap<TaskRef, Reported>,
    pub checkpoint: HashMap<WorkerId, v1::CheckpointInfo>,
    pub produced: HashMap<WorkerId, u64>,
    /// Cache measurements and commits reported by workers, per job.
    pub cache: HashMap<JobId, CacheSoft>,
    pub delivered_examples: HashMap<(JobId, u32), u64>,
    /// Each consumer's time waiting for data (the input-bound signal), per (job, consumer).
    pub input_wait: HashMap<(JobId, u32), InputWait>,
    /// When each consumer last reported.
    pub consumer_seen: HashMap<(JobId, u32), Instant>,
    /// When the liveness check last ran (a long gap means the dispatcher itself stalled).
    pub last_check: Option<Instant>,
    /// Epoch verdicts clients reported, per (job, consumer), by epoch.
    pub reports: HashMap<(JobId, u32), BTreeMap<u64, v1::EpochReport>>,
    /// Disks that do not take writes, as each node's latest heartbeat said.
    pub disks: HashMap<DiskOwner, Vec<v1::DiskCondition>>,
    /// Since when what the state may remove has been resting.
    pub resting: Resting,
}

/// Since when each job, worker and dataset that the state may remove (`State::job_rest`,
/// `State::worker_rests`, `State::dataset_in_use`) has been in that condition, as this process
/// saw it: a restarted dispatcher starts every clock again.
#[derive(Debug, Default)]
pub struct Resting {
    pub jobs: HashMap<JobId, (JobRest, Instant)>,
    pub workers: HashMap<WorkerId, Instant>,
    pub datasets: HashMap<String, Instant>,
}

impl Resting {
    /// How many clocks run.
    pub fn count(&self) -> usize {
        self.jobs.len() + self.workers.len() + self.datasets.len()
    }
}

impl Soft {
    /// The soft facts of a dispatcher that starts with `state`: after a restart every known
    /// live worker gets a full timeout to check in again.
    pub fn after_start(state: &State, now: Instant) -> Soft {
        let mut soft = Soft::default();
        for (id, w) in &state.workers {
            if w.life.heartbeats() {
                soft.last_seen.insert(*id, now);
            }
        }
        soft
    }

    /// A worker's state as the status stream and the metrics name it: its life in the state,
    /// refined by what this process saw (a late heartbeat makes an alive worker suspect).
    pub fn worker_state(&self, w: &WorkerEntry) -> v1::WorkerState {
        match w.life {
            WorkerLife::Dead => v1::WorkerState::Dead,
            WorkerLife::Left => v1::WorkerState::Left,
            WorkerLife::Draining => v1::WorkerState::Draining,
            WorkerLife::Alive if self.suspect.contains(&w.id) => v1::WorkerState::Suspect,
            WorkerLife::Alive if w.standby => v1::WorkerState::Standby,
            WorkerLife::Alive => v1::WorkerState::Alive,
        }
    }

    /// Notes a heartbeat of `worker`; true if it was suspect.
    pub fn touch(&mut self, worker: WorkerId, now: Instant) -> bool {
        self.last_seen.insert(worker, now);
        self.suspect.remove(&worker)
    }

    /// Takes in the progress `worker` reports for its tasks.
    pub fn record_progress(&mut self, worker: WorkerId, tasks: &[v1::TaskProgress]) {
        for t in tasks {
            let Some(key) = &t.key else { continue };
            self.progress.insert(
                (key.job_id, key.epoch, key.position),
                Reported {
                    worker,
                    lease: t.lease,
                    produced: t.produced,
                    acked: t.acked,
                    len: t.len,
                    idle: t.idle,
                },
            );
        }
    }

    /// Drops every fact about what `state` no longer holds: removed workers and jobs, consumers
    /// out of a job's range, and tasks no longer assigned (a worker's next report of one is
    /// dropped by `reconcile` anyway). Resting clocks are the retention policy's to keep.
    pub fn retain_known(&mut self, state: &State) {
        let worker = |w: &WorkerId| state.workers.contains_key(w);
        let consumer = |(j, c): &(JobId, u32)| {
            state
                .jobs
                .get(j)
                .is_some_and(|job| *c < job.num_consumers.max(1))
        };
        self.last_seen.retain(|w, _| worker(w));
        self.suspect.retain(worker);
        self.checkpoint.retain(|w, _| worker(w));
        self.produced.retain(|w, _| worker(w));
        self.progress.retain(|(j, e, p), _| {
            state
                .jobs
                .get(j)
                .is_some_and(|job| job.assignments.contains_key(&(*e, *p)))
        });
        self.cache.retain(|j, _| state.jobs.contains_key(j));
        self.delivered_examples.retain(|k, _| consumer(k));
        self.input_wait.retain(|k, _| consumer(k));
        self.consumer_seen.retain(|k, _| consumer(k));
        self.reports.retain(|k, _| consumer(k));
        self.disks.retain(|owner, _| match owner {
            DiskOwner::Worker(w) => worker(w),
            DiskOwner::Consumer(j, c) => consumer(&(*j, *c)),
        });
    }

    /// How many entries the soft facts hold in all (for tests and bounds: it must not grow
    /// with history).
    pub fn entries(&self) -> usize {
        self.last_seen.len()
            + self.suspect.len()
            + self.progress.len()
            + self.checkpoint.len()
            + self.produced.len()
            + self.cache.len()
            + self.delivered_examples.len()
            + self.input_wait.len()
            + self.consumer_seen.len()
            + self.reports.values().map(|r| r.len().max(1)).sum::<usize>()
            + self.disks.len()
            + self.resting.count()
    }

    /// Where each split `worker` holds may resume when it moves (death or drain): the index it
    /// last reported acked.
    pub fn resume_points(&self, worker: WorkerId) -> Vec<(TaskRef, u32)> {
        self.progress
            .iter()
            .filter(|(_, r)| r.worker == worker)
            .map(|(k, r)| (*k, r.acked))
            .collect()
    }

    /// Forgets the progress `worker` reported (its process is gone, or it was declared dead).
    pub fn forget_progress_of(&mut self, worker: WorkerId) {
        self.progress.retain(|_, r| r.worker != worker);
    }

    /// Moves every heartbeat time forward by `lost` (capped at `now`): the dispatcher did not
    /// run for that long, so the silence was its own, not the nodes'.
    pub fn excuse_stall(&mut self, lost: Duration, now: Instant) {
        for seen in self
            .last_seen
            .values_mut()
            .chain(self.consumer_seen.values_mut())
        {
            *seen = (*seen + lost).min(now);
        }
    }

    /// Keeps the epoch reports of a consumer (the latest epochs, as many as the client keeps);
    /// returns those that are new or changed.
    pub fn record_epoch_reports(
        &mut self,
        job: JobId,
        consumer: u32,
        reports: &[v1::EpochReport],
    ) -> Vec<v1::EpochReport> {
        let mut fresh = Vec::new();
        let known = self.reports.entry((job, consumer)).or_default();
        for r in reports {
            if known.get(&r.epoch) != Some(r) {
                known.insert(r.epoch, r.clone());
                fresh.push(r.clone());
            }
        }
        while known.len() > cachew_proto::EPOCH_REPORTS_KEPT {
            known.pop_first();
        }
        fresh
    }

    /// Records the disks `owner` reports as failing; each condition's start and end become
    /// `disk_failing` and `disk_recovered` events (a condition is one store of one node).
    pub fn record_disks(
        &mut self,
        log: &mut EventLog,
        owner: DiskOwner,
        now: &[v1::DiskCondition],
    ) {
        let before = self.disks.remove(&owner).unwrap_or_default();
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
                log.push(EventKind::DiskFailing, message, worker, job);
            }
        }
        for b in &before {
            if !now.iter().any(|c| c.store == b.store) {
                let message = format!(
                    "{owner}: {} at {} takes writes again (after {} failed)",
                    b.store, b.path, b.failures
                );
                log.push(EventKind::DiskRecovered, message, worker, job);
            }
        }
        if !now.is_empty() {
            self.disks.insert(owner, now.to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_wait_of_a_heartbeat_is_kept_within_what_it_can_mean() {
        let req = |total: f64, ratio: f64| v1::ClientHeartbeatRequest {
            wait_seconds_total: total,
            input_wait_ratio: ratio,
            ..Default::default()
        };
        assert_eq!(
            InputWait::from_heartbeat(&req(12.5, 0.25)),
            InputWait {
                seconds_total: 12.5,
                ratio: 0.25
            }
        );
        assert_eq!(
            InputWait::from_heartbeat(&req(-1.0, 7.0)),
            InputWait {
                seconds_total: 0.0,
                ratio: 1.0
            }
        );
        assert_eq!(
            InputWait::from_heartbeat(&req(f64::NAN, f64::INFINITY)),
            InputWait::default()
        );
    }
}
