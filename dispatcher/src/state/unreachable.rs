//! Workers a client cannot reach while the dispatcher can (a cut between two hosts): the
//! consumer's splits leave them. `Command::ConsumerUnreachable` records the set the client
//! reported; the consumer's assignments on those workers move, under new leases, to the live
//! worker with the fewest assignments outside the set, and `assign_tasks` gives that consumer
//! nothing on them until the client stops reporting them. A set that holds every live worker
//! is ignored: then the client's own link is cut, and moving splits would only stall them.
//! Nothing here is soft: the set and the moves are state, journaled and replayed.

use std::collections::BTreeSet;

use cachew_proto::v1::EventKind;

use super::{Assignment, JobId, Outcome, Rejection, State, StateEvent, WorkerId, WorkerLife};

impl State {
    pub(super) fn consumer_unreachable(
        &mut self,
        job_id: JobId,
        consumer: u32,
        generation: u64,
        reported: &BTreeSet<WorkerId>,
    ) -> Result<Outcome, Rejection> {
        let noop = Outcome {
            noop: true,
            ..Outcome::default()
        };
        let active: BTreeSet<WorkerId> = self
            .workers
            .values()
            .filter(|w| w.life == WorkerLife::Alive && !w.standby)
            .map(|w| w.id)
            .collect();
        let mut set: BTreeSet<WorkerId> = reported.intersection(&active).copied().collect();
        if !active.is_empty() && set.len() == active.len() {
            set.clear();
        }
        let job = self
            .jobs
            .get_mut(&job_id)
            .ok_or(Rejection::UnknownJob(job_id))?;
        let Some(c) = job.consumers.get_mut(consumer as usize) else {
            return Err(Rejection::BadConsumer {
                index: consumer,
                n: job.num_consumers,
            });
        };
        if c.generation != generation || c.unreachable == set {
            return Ok(noop);
        }
        c.unreachable = set.clone();
        let mut out = Outcome::default();
        if set.is_empty() {
            return Ok(out);
        }
        let moving: Vec<((u64, u32), Assignment)> = job
            .assignments
            .iter()
            .filter(|((_, position), a)| {
                job.consumer_of(*position) == consumer && set.contains(&a.worker)
            })
            .map(|(k, a)| (*k, *a))
            .collect();
        for ((epoch, position), old) in moving {
            let load = |w: &WorkerId| {
                self.jobs
                    .values()
                    .flat_map(|j| j.assignments.values())
                    .filter(|a| a.worker == *w)
                    .count()
            };
            let target = active
                .iter()
                .filter(|w| !set.contains(w))
                .min_by_key(|w| load(w))
                .copied();
            let Some(target) = target else {
                continue;
            };
            let lease = self.new_lease();
            let Some(job) = self.jobs.get_mut(&job_id) else {
                continue;
            };
            let a = Assignment {
                worker: target,
                lease,
                ..old
            };
            job.assignments.insert((epoch, position), a);
            out.assigned.push((job_id, epoch, position, a));
            out.events.push(StateEvent {
                kind: EventKind::Failover,
                message: format!(
                    "job {job_id} epoch {epoch} split {} moved from worker {} to {target} at index {}: consumer {consumer} cannot reach worker {} (lease {lease})",
                    old.split, old.worker, old.start_index, old.worker
                ),
                worker: Some(target),
                job: Some(job_id),
            });
        }
        Ok(out)
    }
}
