//! How a worker shares its capacity between the jobs it serves: which job's task the next free
//! compute thread works on ([`FairShare`]), and how many more tasks the worker asks the
//! dispatcher for ([`slot_use`]). Pure decisions, without clocks of their own or locks: the
//! engine (`engine.rs`) calls them under its lock with what it measured.
//!
//! - **Compute time is shared by job.** Each job is charged the compute time its chunks took
//!   (an estimate when a chunk is claimed, corrected when it is done), and a free thread serves
//!   the ready job charged least; within a job, its most urgent task. A job that had no work for
//!   a while is not owed the time it did not use: its charge is raised to at most
//!   [`CATCH_UP`] below the busiest picks' level, so it gets a short head start, not a monopoly.
//! - **A task nobody reads gives its slot back.** A task whose buffer is full (or whose split is
//!   fully produced) and whose client has not fetched for `idle_after` is *idle*: it keeps its
//!   elements (and its lease) but stops counting against `max_tasks`, so the slot can serve a job
//!   whose client reads. At most `max_tasks` idle tasks are discounted, so a worker never holds
//!   more than `2 × max_tasks` unfinished tasks: memory stays bounded by
//!   `2 × max_tasks × ahead` elements.
//!
//! Nothing here decides what an element contains: which thread computes which chunk, and when,
//! never changes its bytes.

use std::collections::BTreeMap;
use std::time::Duration;

/// How far below the level of the latest picks a job that comes back from having no work may
/// start: a bounded head start.
pub const CATCH_UP: Duration = Duration::from_millis(50);

/// The estimate of one element's compute time for a job not measured yet.
const FIRST_ESTIMATE_NS: u64 = 1_000_000;

/// Weight of a new measurement in a job's per-element cost (1/8).
const COST_SMOOTHING: u64 = 8;

/// Compute time charged to each job (see the module doc). Keys are job ids.
#[derive(Debug, Default, Clone)]
pub struct FairShare {
    charged: BTreeMap<u64, u128>,
    /// Nanoseconds per element, smoothed.
    cost: BTreeMap<u64, u64>,
    /// The charge of the latest pick: only grows.
    level: u128,
}

impl FairShare {
    /// The job a free compute thread serves among `ready` (jobs with claimable work): the one
    /// charged least (the lowest id on a tie). None if no job is ready.
    pub fn pick(&mut self, ready: impl IntoIterator<Item = u64>) -> Option<u64> {
        let floor = self.level.saturating_sub(CATCH_UP.as_nanos());
        let mut best: Option<(u128, u64)> = None;
        for job in ready {
            let charged = self.charged.get(&job).copied().unwrap_or(0).max(floor);
            if best.is_none_or(|b| (charged, job) < b) {
                best = Some((charged, job));
            }
        }
        let (charged, job) = best?;
        self.charged.insert(job, charged);
        self.level = self.level.max(charged);
        Some(job)
    }

    /// Charges `job` the estimated time of `elements` elements as it claims them; returns the
    /// estimate, to be corrected by [`FairShare::settle`].
    pub fn charge_claim(&mut self, job: u64, elements: u32) -> u64 {
        let per = self.cost.get(&job).copied().unwrap_or(FIRST_ESTIMATE_NS);
        let estimate = per.saturating_mul(u64::from(elements));
        let c = self.charged.entry(job).or_insert(0);
        *c = c.saturating_add(u128::from(estimate));
        estimate
    }

    /// Replaces a claim's estimate with the time it took, and refines the job's per-element
    /// cost.
    pub fn settle(&mut self, job: u64, estimate: u64, took: Duration, elements: u32) {
        let took_ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let c = self.charged.entry(job).or_insert(0);
        *c = c
            .saturating_sub(u128::from(estimate))
            .saturating_add(u128::from(took_ns));
        if elements > 0 {
            let measured = took_ns / u64::from(elements);
            let cost = self.cost.entry(job).or_insert(measured);
            *cost = (*cost * (COST_SMOOTHING - 1) + measured) / COST_SMOOTHING;
        }
    }

    /// Forgets the jobs for which `live` is false (the worker holds none of their tasks).
    pub fn retain(&mut self, live: impl Fn(u64) -> bool) {
        self.charged.retain(|j, _| live(*j));
        self.cost.retain(|j, _| live(*j));
    }
}

/// What slot accounting needs of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotView {
    /// Its last element was sent: it no longer counts at all.
    pub sent_end: bool,
    /// It holds a full buffer nobody fetched for a while (see [`is_idle`]).
    pub idle: bool,
}

/// How the worker's task slots are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotUse {
    /// Unfinished tasks that count against `max_tasks`.
    pub busy: usize,
    /// Idle tasks that do not count (at most `max_tasks`).
    pub discounted: usize,
    /// How many more tasks the worker takes.
    pub free: usize,
}

/// The slots `tasks` use on a worker of `max_tasks` slots (see the module doc).
pub fn slot_use(tasks: impl IntoIterator<Item = SlotView>, max_tasks: usize) -> SlotUse {
    let (mut unfinished, mut idle) = (0usize, 0usize);
    for t in tasks {
        if !t.sent_end {
            unfinished += 1;
            idle += usize::from(t.idle);
        }
    }
    let discounted = idle.min(max_tasks);
    let busy = unfinished - discounted;
    SlotUse {
        busy,
        discounted,
        free: max_tasks.saturating_sub(busy),
    }
}

/// Whether a task is idle: it has nothing to compute until its client reads (`full`: its
/// buffer reached its bound or the end of the split, or it failed for good), and its client
/// has not fetched for `idle_after` (`since_fetch`).
pub fn is_idle(full: bool, since_fetch: Duration, idle_after: Duration) -> bool {
    full && since_fetch >= idle_after
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `claims` chunks of one element each, the job taking `cost[job]` per element.
    fn serve(share: &mut FairShare, ready: &[u64], cost: &[(u64, u64)], claims: usize) -> Vec<u64> {
        (0..claims)
            .map(|_| {
                let job = share.pick(ready.iter().copied()).unwrap();
                let est = share.charge_claim(job, 1);
                let ms = cost.iter().find(|c| c.0 == job).unwrap().1;
                share.settle(job, est, Duration::from_millis(ms), 1);
                job
            })
            .collect()
    }

    #[test]
    fn ready_jobs_share_compute_time_not_chunk_counts() {
        let mut share = FairShare::default();
        // Job 1's elements cost 1 ms, job 2's 3 ms: over time both get the same compute time.
        let served = serve(&mut share, &[1, 2], &[(1, 1), (2, 3)], 400);
        let ones = served.iter().filter(|&&j| j == 1).count();
        let twos = served.len() - ones;
        // 3:1 in elements = 1:1 in time (within the estimate's warm-up).
        assert!((280..=320).contains(&ones), "{ones} vs {twos}");
        // Equal costs: they alternate.
        let mut share = FairShare::default();
        let served = serve(&mut share, &[5, 9], &[(5, 2), (9, 2)], 10);
        assert_eq!(served.iter().filter(|&&j| j == 5).count(), 5, "{served:?}");
        assert!(served.windows(2).all(|w| w[0] != w[1]), "{served:?}");
    }

    #[test]
    fn a_job_without_work_is_not_owed_the_time_it_did_not_use() {
        let mut share = FairShare::default();
        // Job 1 alone for a long time (1 s of compute).
        serve(&mut share, &[1], &[(1, 10)], 100);
        // Job 2 arrives: it gets a head start of at most CATCH_UP, then they alternate.
        let served = serve(&mut share, &[1, 2], &[(1, 10), (2, 10)], 40);
        let head = served.iter().take_while(|&&j| j == 2).count();
        assert!(
            (1..=6).contains(&head),
            "head start of {head} chunks: {served:?}"
        );
        let twos = served.iter().filter(|&&j| j == 2).count();
        assert!((20..=26).contains(&twos), "{served:?}");
        // Nothing ready: no pick.
        assert_eq!(share.pick([]), None);
    }

    #[test]
    fn an_estimate_is_replaced_by_the_measured_time() {
        let mut share = FairShare::default();
        let est = share.charge_claim(3, 8);
        assert_eq!(est, 8 * FIRST_ESTIMATE_NS);
        // Two threads claim at once: the second claim sees the first one's estimate charged.
        assert_eq!(share.pick([3, 4]), Some(4));
        share.settle(3, est, Duration::from_micros(80), 8);
        // 10 us per element measured: the next estimate uses it.
        assert_eq!(share.charge_claim(3, 2), 20_000);
        share.retain(|j| j != 3);
        assert!(!share.charged.contains_key(&3) && !share.cost.contains_key(&3));
    }

    fn views(busy: usize, idle: usize, ended: usize) -> Vec<SlotView> {
        let v = |sent_end, idle| SlotView { sent_end, idle };
        std::iter::repeat_n(v(false, false), busy)
            .chain(std::iter::repeat_n(v(false, true), idle))
            .chain(std::iter::repeat_n(v(true, true), ended))
            .collect()
    }

    #[test]
    fn idle_tasks_give_their_slots_back_up_to_a_bound() {
        // 4 slots: a stalled job's 4 idle tasks free all of them.
        let u = slot_use(views(0, 4, 0), 4);
        assert_eq!((u.busy, u.discounted, u.free), (0, 4, 4));
        // Finished tasks never count.
        assert_eq!(slot_use(views(2, 0, 7), 4).free, 2);
        // At most max_tasks idle tasks are discounted: unfinished tasks stay under 2 x max_tasks.
        let u = slot_use(views(0, 6, 0), 4);
        assert_eq!((u.busy, u.discounted, u.free), (2, 4, 2));
        for busy in 0..10 {
            for idle in 0..10 {
                let u = slot_use(views(busy, idle, 1), 4);
                assert!(
                    busy + idle + u.free <= 8 || u.free == 0,
                    "{busy} {idle} {u:?}"
                );
            }
        }
        // Tasks that become busy again may exceed the slots for a while: nothing more is asked.
        assert_eq!(slot_use(views(6, 0, 0), 4).free, 0);
    }

    #[test]
    fn a_task_is_idle_only_when_full_and_unread_for_long_enough() {
        let after = Duration::from_secs(1);
        assert!(is_idle(true, Duration::from_millis(1000), after));
        assert!(!is_idle(true, Duration::from_millis(999), after));
        assert!(!is_idle(false, Duration::from_secs(60), after));
    }
}
