//! A worker's free slots shared between jobs ([`Command::AssignFairly`](super::Command)).
//!
//! `AssignTasks` ranks every job's candidates by their distance from their consumer's cursor and
//! breaks ties by job id, so on a shared worker the oldest job takes every slot it can: a newer
//! job's clients wait while an older one's splits fill the worker, even if nobody reads them. A
//! multi-tenant worker shares instead ([`pick_fairly`]), one slot at a time:
//!
//! 1. a consumer's head split (the one its client reads now) comes first, whoever owns it;
//! 2. then jobs with no idle task on this worker (the worker reports a task idle when its buffer
//!    is full and its client has not fetched for a while: a stalled or dead trainer) before jobs
//!    with one: a job that does not read what it has needs no more;
//! 3. then the job holding the fewest busy tasks (held minus idle) on this worker;
//! 4. then the most urgent position, then the lowest job id.
//!
//! Idle counts come from the worker's heartbeat and travel in the command, so replay applies
//! exactly what the live dispatcher decided.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{JobId, Outcome, Rejection, State, WorkerId};

impl State {
    pub(super) fn assign_fairly(
        &mut self,
        worker: WorkerId,
        max: u32,
        window: u32,
        idle: &[(JobId, u32)],
    ) -> Result<Outcome, Rejection> {
        if !self.takes_tasks(worker, max)? {
            return Ok(Outcome {
                noop: true,
                ..Outcome::default()
            });
        }
        let mut held: BTreeMap<JobId, u32> = BTreeMap::new();
        for (job, ..) in self.assignments_of(worker) {
            *held.entry(job).or_default() += 1;
        }
        let idle: BTreeMap<JobId, u32> = idle.iter().copied().collect();
        let picks = pick_fairly(
            self.window_candidates(worker, window),
            &held,
            &idle,
            max as usize,
        );
        Ok(self.assign_positions(worker, picks))
    }
}

/// Up to `max` of `candidates` ((rank, job, epoch, position); rank 0 is a consumer's head
/// split) in the order of the module doc, given the tasks each job `held` on the worker and how
/// many of them are `idle`. Pure.
pub fn pick_fairly(
    candidates: BTreeSet<(usize, JobId, u64, u32)>,
    held: &BTreeMap<JobId, u32>,
    idle: &BTreeMap<JobId, u32>,
    max: usize,
) -> Vec<(JobId, u64, u32)> {
    let mut by_job: BTreeMap<JobId, VecDeque<(usize, u64, u32)>> = BTreeMap::new();
    for (rank, job, epoch, position) in candidates {
        by_job
            .entry(job)
            .or_default()
            .push_back((rank, epoch, position));
    }
    let count = |m: &BTreeMap<JobId, u32>, j: JobId| m.get(&j).copied().unwrap_or(0);
    let mut busy: BTreeMap<JobId, u32> = by_job
        .keys()
        .map(|&j| (j, count(held, j).saturating_sub(count(idle, j))))
        .collect();
    let mut picks = Vec::new();
    while picks.len() < max {
        let best = by_job
            .iter()
            .filter_map(|(&job, queue)| {
                let &(rank, ..) = queue.front()?;
                Some((
                    rank != 0,
                    count(idle, job) > 0,
                    count(&busy, job),
                    rank,
                    job,
                ))
            })
            .min();
        let Some((.., job)) = best else { break };
        let Some((_, epoch, position)) = by_job.get_mut(&job).and_then(VecDeque::pop_front) else {
            break;
        };
        *busy.entry(job).or_default() += 1;
        picks.push((job, epoch, position));
    }
    picks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Candidates of `jobs`, each with positions of ranks `from..to` (position = rank).
    fn window(jobs: &[(JobId, usize, usize)]) -> BTreeSet<(usize, JobId, u64, u32)> {
        jobs.iter()
            .flat_map(|&(j, from, to)| (from..to).map(move |r| (r, j, 0, r as u32)))
            .collect()
    }

    fn map(entries: &[(JobId, u32)]) -> BTreeMap<JobId, u32> {
        entries.iter().copied().collect()
    }

    fn jobs_of(picks: &[(JobId, u64, u32)]) -> Vec<JobId> {
        picks.iter().map(|p| p.0).collect()
    }

    #[test]
    fn free_slots_are_shared_between_jobs_not_taken_by_the_oldest() {
        // Job 1 holds its first four positions, job 2 (new) its first one; two slots free.
        let picks = pick_fairly(
            window(&[(1, 4, 8), (2, 1, 8)]),
            &map(&[(1, 4), (2, 1)]),
            &map(&[]),
            2,
        );
        assert_eq!(jobs_of(&picks), [2, 2]);
        // Equal holdings: they alternate, the most urgent first.
        let picks = pick_fairly(window(&[(1, 1, 8), (2, 1, 8)]), &map(&[]), &map(&[]), 4);
        assert_eq!(picks, [(1, 0, 1), (2, 0, 1), (1, 0, 2), (2, 0, 2)]);
    }

    #[test]
    fn a_job_whose_tasks_sit_unread_gets_slots_only_when_nobody_else_wants_them() {
        // Job 1's client stopped: its 4 tasks are idle on this worker (they gave their slots
        // back). Job 2 holds none: every free slot goes to job 2, although job 1 is older and
        // holds fewer busy tasks.
        let idle = map(&[(1, 4)]);
        let picks = pick_fairly(window(&[(1, 4, 8), (2, 0, 8)]), &map(&[(1, 4)]), &idle, 4);
        assert_eq!(jobs_of(&picks), [2, 2, 2, 2]);
        // Only when job 2 has nothing left does job 1 get one.
        let picks = pick_fairly(window(&[(1, 4, 8), (2, 0, 2)]), &map(&[(1, 4)]), &idle, 4);
        assert_eq!(jobs_of(&picks), [2, 2, 1, 1]);
    }

    #[test]
    fn a_consumers_head_split_comes_first_whoever_owns_it() {
        // Job 1 has idle tasks ahead but its head split is unassigned (its worker died): it gets
        // the first slot, before job 2's splits further ahead.
        let picks = pick_fairly(
            window(&[(1, 0, 8), (2, 2, 8)]),
            &map(&[(1, 3)]),
            &map(&[(1, 3)]),
            2,
        );
        assert_eq!(picks, [(1, 0, 0), (2, 0, 2)]);
        // Nothing to assign, or no slot: nothing.
        assert!(pick_fairly(BTreeSet::new(), &map(&[]), &map(&[]), 4).is_empty());
        assert!(pick_fairly(window(&[(1, 0, 8)]), &map(&[]), &map(&[]), 0).is_empty());
    }
}
