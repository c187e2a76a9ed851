//! Moving the splits of a worker that goes away: declared dead (`DeclareDead`) or leaving on
//! purpose (`DrainWorker`). One mechanism for both: an alive standby takes the worker's place
//! and its splits under new leases, or the splits are unassigned for the next `AssignTasks`.
//! Each split resumes at the index its old owner reported acked (`resume_at`), or where it was
//! assigned to start.

use cachew_proto::v1::EventKind;

use super::State;
use super::command::{Outcome, StateEvent};
use super::model::{Assignment, JobId, WorkerId, WorkerLife};

impl State {
    /// Moves every split `worker` holds. `was_active`: it was not a standby, so a standby is
    /// promoted to replace it. `who` names it in the events ("dead worker", "draining worker").
    pub(super) fn hand_over(
        &mut self,
        worker: WorkerId,
        was_active: bool,
        resume_at: &[((JobId, u64, u32), u32)],
        who: &str,
        out: &mut Outcome,
    ) {
        let replacement = if was_active {
            self.workers
                .values_mut()
                .find(|s| s.standby && s.life == WorkerLife::Alive && s.id != worker)
                .map(|s| {
                    s.standby = false;
                    s.id
                })
        } else {
            None
        };
        if let Some(r) = replacement {
            out.events.push(StateEvent {
                kind: EventKind::StandbyPromoted,
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
                        kind: EventKind::Failover,
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
                        kind: EventKind::Failover,
                        message: format!(
                            "job {job_id} epoch {epoch} split {} released by {who} {worker}; next free worker resumes it at index {start}",
                            old.split
                        ),
                        worker: Some(worker),
                        job: Some(job_id),
                    });
                }
            }
        }
    }
}
