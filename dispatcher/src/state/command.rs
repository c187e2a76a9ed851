//! What goes into the state machine and what comes out: [`Command`] (what the journal records),
//! [`Outcome`] with its [`StateEvent`]s, and [`Rejection`].

use cachew_proto::v1::EventKind;
use serde::{Deserialize, Serialize};

use super::model::{Assignment, CacheDecision, CachePolicy, Cursor, DatasetEntry, JobId, WorkerId};

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
    /// Remove what rested past its retention (`state/expire.rs`): finished or abandoned jobs,
    /// dead workers, unused datasets. Ids that may not go when it applies are skipped.
    Expire {
        #[serde(default)]
        jobs: Vec<JobId>,
        #[serde(default)]
        workers: Vec<WorkerId>,
        #[serde(default)]
        datasets: Vec<String>,
    },
    /// Give `worker` up to `max` more tasks, shared fairly between jobs (see `state/fair.rs`);
    /// `idle` counts, per job, the tasks the worker reported idle (full and unread). Replaces
    /// `AssignTasks` (kept so that older journals replay as they were written).
    AssignFairly {
        worker: WorkerId,
        max: u32,
        window: u32,
        idle: Vec<(JobId, u32)>,
    },
    /// The client of a consumer reports the workers it cannot reach (empty: it reaches all).
    ConsumerUnreachable {
        job: JobId,
        consumer: u32,
        generation: u64,
        workers: std::collections::BTreeSet<WorkerId>,
    },
    /// `worker` is leaving on purpose (SIGTERM, or an operator's `DrainWorker`): its splits
    /// move at once, as for `DeclareDead` but without waiting for a timeout, and it takes no
    /// new task. It stays `Draining` until `WorkerLeft`.
    DrainWorker {
        worker: WorkerId,
        /// (job, epoch, position) -> index the new owner may start at.
        resume_at: Vec<((JobId, u64, u32), u32)>,
    },
    /// A draining worker holds nothing any more and said it is gone.
    WorkerLeft {
        worker: WorkerId,
    },
    /// The autoscaler decided a fleet size (`policy/autoscale.rs`); `why` carries the
    /// measurements behind it (shown in the `scale_up` / `scale_down` event).
    Scale {
        from: u32,
        target: u32,
        why: String,
    },
    /// An operator pinned the worker count (None: back to the autoscaler).
    PinWorkers {
        pinned: Option<u32>,
    },
    /// The autoscaler drains `worker` because the fleet shrinks: as `DrainWorker`, but no
    /// standby is promoted in its place (the fleet is meant to get smaller), and the worker
    /// counts as shrinking (`Scale::shrinking`) until it has left.
    Shrink {
        worker: WorkerId,
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
            Command::Expire { .. } => "expire",
            Command::AssignFairly { .. } => "assign_fairly",
            Command::ConsumerUnreachable { .. } => "consumer_unreachable",
            Command::DrainWorker { .. } => "drain_worker",
            Command::WorkerLeft { .. } => "worker_left",
            Command::Scale { .. } => "scale",
            Command::PinWorkers { .. } => "pin_workers",
            Command::Shrink { .. } => "shrink",
        }
    }
}

/// Something worth telling operators (the status stream's event log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEvent {
    pub kind: EventKind,
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
    /// Splits a consumer moved past (delivered in full) with this command: its cursor's
    /// advance in positions (metrics count it; the state keeps no tally).
    pub completed: u64,
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
    /// A field over its bound (`cachew_proto::limits`): checked again here, where memory is
    /// sized, so a command that reaches the state machine another way (a journal record) cannot
    /// allocate past it either.
    #[error("{field}: {value} is over the bound {bound}")]
    OverBound {
        field: &'static str,
        value: u64,
        bound: u64,
    },
    #[error(
        "job {0} was removed: it finished or was abandoned longer ago than the dispatcher's \
         retention; attach again by name (resuming from a saved cursor continues where it stopped)"
    )]
    ExpiredJob(JobId),
}
