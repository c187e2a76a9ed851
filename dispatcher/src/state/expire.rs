//! Removing what outlived its retention ([`Command::Expire`](super::Command::Expire)): finished
//! and abandoned jobs, dead workers, and datasets no job uses.
//!
//! The time-based part of the decision (how long each has rested) is the policy's
//! (`policy::retention`), taken from the service's clock; the command carries only the ids. What
//! may be removed at all is decided here, from the state alone ([`State::job_rest`],
//! [`State::worker_rests`], [`State::dataset_in_use`]), both by the policy before it proposes and by
//! `apply` again when it removes: an id that may not go (a client attached again meanwhile, or it
//! is gone already) is skipped, so a replay removes exactly what the live dispatcher removed.
//!
//! Ids are never reused (`next_job_id` and `next_worker_id` only grow), so a late message about
//! a removed job cannot reach another one: it is refused as
//! [`Rejection::ExpiredJob`](super::Rejection::ExpiredJob). A client that comes back by name
//! gets a fresh job; one that resumes from a saved cursor gets a fresh job at that cursor, which
//! delivers exactly the rest of the epoch, since what is delivered depends only on (dataset,
//! pipeline, seed, epoch), never on the job that served it.

use std::collections::BTreeSet;

use cachew_proto::v1::EventKind;

use super::State;
use super::command::{Outcome, StateEvent};
use super::model::{Job, JobId, WorkerId};

/// Why a job may be removed once it has rested long enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobRest {
    /// Every consumer consumed every epoch.
    Finished,
    /// Unfinished, and no consumer is attached (its clients left, or went silent past the
    /// consumer timeout). A client may still resume it by name: its retention is longer.
    Abandoned,
}

impl JobRest {
    pub fn describe(self) -> &'static str {
        match self {
            JobRest::Finished => "finished",
            JobRest::Abandoned => "abandoned (no consumer attached)",
        }
    }
}

impl State {
    /// Whether `job` may be removed once it has rested long enough, and why.
    pub fn job_rest(job: &Job) -> Option<JobRest> {
        if job.finished {
            Some(JobRest::Finished)
        } else if job.consumers.iter().all(|c| !c.attached) {
            Some(JobRest::Abandoned)
        } else {
            None
        }
    }

    /// Whether worker `id` may be removed once it has rested long enough: it is dead or has
    /// left, and holds no assignment.
    pub fn worker_rests(&self, id: WorkerId) -> bool {
        self.workers.get(&id).is_some_and(|w| !w.life.heartbeats())
            && !self
                .jobs
                .values()
                .any(|j| j.assignments.values().any(|a| a.worker == id))
    }

    /// The datasets some job uses.
    pub fn datasets_in_use(&self) -> BTreeSet<&str> {
        self.jobs.values().map(|j| j.dataset_id.as_str()).collect()
    }

    /// Whether some job uses dataset `id`.
    pub fn dataset_in_use(&self, id: &str) -> bool {
        self.jobs.values().any(|j| j.dataset_id == id)
    }

    /// Removes the jobs, then the workers, then the datasets named that may go (see the module
    /// documentation); skips the others. A no-op if nothing was removed.
    pub(super) fn expire(
        &mut self,
        jobs: &[JobId],
        workers: &[WorkerId],
        datasets: &[String],
    ) -> Outcome {
        let mut out = Outcome::default();
        for id in jobs {
            let Some(rest) = self.jobs.get(id).and_then(State::job_rest) else {
                continue;
            };
            let Some(job) = self.jobs.remove(id) else {
                continue;
            };
            out.events.push(StateEvent {
                kind: EventKind::Expired,
                message: format!(
                    "job {id} `{}` removed: {} past its retention",
                    job.name,
                    rest.describe()
                ),
                worker: None,
                job: Some(*id),
            });
        }
        for id in workers {
            if !self.worker_rests(*id) {
                continue;
            }
            let Some(w) = self.workers.remove(id) else {
                continue;
            };
            out.events.push(StateEvent {
                kind: EventKind::Expired,
                message: format!(
                    "worker {id} at {} removed: dead past its retention",
                    w.address
                ),
                worker: Some(*id),
                job: None,
            });
        }
        for id in datasets {
            if self.dataset_in_use(id) || self.datasets.remove(id).is_none() {
                continue;
            }
            out.events.push(StateEvent {
                kind: EventKind::Expired,
                message: format!(
                    "dataset {} removed: no job used it for its retention",
                    id.get(..12).unwrap_or(id)
                ),
                worker: None,
                job: None,
            });
        }
        out.noop = out.events.is_empty();
        out
    }
}
