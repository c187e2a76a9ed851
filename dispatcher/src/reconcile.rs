//! Reconciliation of a worker's heartbeat with the state: which of the tasks it reports it must
//! drop (unknown job, finished, delivered, unassigned, or held under a stale lease: fenced), and
//! which tasks assigned to it it did not report and must be sent again.

use std::collections::HashSet;

use cachew_proto::v1;
use cachew_proto::v1::EventKind;

use crate::events::EventLog;
use crate::soft::Soft;
use crate::state::{State, WorkerId};
use crate::wire::task_def;

/// Builds a worker's heartbeat answer: tasks to send it again and tasks to drop (with reasons).
/// Progress reported for a dropped task is forgotten; a fenced task is also an event.
pub fn reconcile(
    state: &State,
    soft: &mut Soft,
    events: &mut EventLog,
    worker: WorkerId,
    reported: &[v1::TaskProgress],
) -> (Vec<v1::TaskDef>, Vec<v1::DroppedTask>) {
    let mut dropped = Vec::new();
    let mut held = HashSet::new();
    for t in reported {
        let Some(key) = &t.key else { continue };
        let job = state.jobs.get(&key.job_id);
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
                        events.push(EventKind::Fenced, msg, Some(worker), Some(key.job_id));
                        v1::DropReason::Fenced
                    }
                };
                soft.progress.remove(&(key.job_id, key.epoch, key.position));
                dropped.push(v1::DroppedTask {
                    key: Some(*key),
                    lease: t.lease,
                    reason: reason.into(),
                });
            }
        }
    }
    let mut new_tasks = Vec::new();
    for (job_id, epoch, position, a) in state.assignments_of(worker) {
        if held.contains(&(job_id, epoch, position)) {
            continue;
        }
        let Some(job) = state.jobs.get(&job_id) else {
            continue;
        };
        new_tasks.push(task_def(job, epoch, position, &a));
    }
    (new_tasks, dropped)
}
