//! Retention policy: which finished or abandoned jobs, dead workers and unused datasets have
//! rested past their retention and leave the state (and so its snapshots, the journal and the
//! status stream). Pure: it reads the state, the resting clocks in [`Resting`] and the `now` it
//! is given. [`observe`] starts and stops the clocks; [`check`] returns the
//! [`Command::Expire`] that the service applies through `State::apply` (journaled and replayed
//! like any command: the time is the policy's, the state machine only sees ids).
//!
//! What may rest at all is the state's own rule (`State::job_rest`, `State::worker_rests`,
//! `State::dataset_in_use`); the clocks only say for how long. A dataset's clock starts when its
//! last job is removed, so it outlives its jobs by its own retention.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::config::DispatcherConfig;
use crate::soft::Resting;
use crate::state::{Command, JobRest, State, WorkerId};

/// The most ids of each kind one [`Command::Expire`] names (the rest go at the next check), so
/// a journal record stays small whatever piled up.
pub const MAX_PER_COMMAND: usize = 1_000;

/// How long each kind rests before it is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub finished_job: Duration,
    pub abandoned_job: Duration,
    pub dead_worker: Duration,
    pub unused_dataset: Duration,
}

impl Limits {
    pub fn new(config: &DispatcherConfig) -> Limits {
        Limits {
            finished_job: config.job_retention,
            abandoned_job: config.abandoned_job_retention,
            dead_worker: config.worker_retention,
            unused_dataset: config.dataset_retention,
        }
    }

    fn job(&self, rest: JobRest) -> Duration {
        match rest {
            JobRest::Finished => self.finished_job,
            JobRest::Abandoned => self.abandoned_job,
        }
    }
}

/// How often the service runs the check: a quarter of the shortest retention, between 20 ms and
/// one second (removal is then at most that late).
pub fn tick(limits: &Limits) -> Duration {
    let shortest = [
        limits.finished_job,
        limits.abandoned_job,
        limits.dead_worker,
        limits.unused_dataset,
    ]
    .into_iter()
    .min()
    .unwrap_or(Duration::ZERO);
    (shortest / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// Starts the clock at `now` of everything the state says may rest that has none (or rests for
/// another reason than before), and stops the clocks of everything that may not (a consumer
/// attached again, a worker registered again) or is gone.
pub fn observe(state: &State, resting: &mut Resting, now: Instant) {
    let mut jobs = HashMap::new();
    for (id, job) in &state.jobs {
        if let Some(rest) = State::job_rest(job) {
            let since = match resting.jobs.get(id) {
                Some(&(was, since)) if was == rest => since,
                _ => now,
            };
            jobs.insert(*id, (rest, since));
        }
    }
    resting.jobs = jobs;

    // Once per look, not once per worker (as `State::worker_rests` would).
    let holding: HashSet<WorkerId> = state
        .jobs
        .values()
        .flat_map(|j| j.assignments.values().map(|a| a.worker))
        .collect();
    let rests = |id: &WorkerId| {
        state.workers.get(id).is_some_and(|w| !w.life.heartbeats()) && !holding.contains(id)
    };
    resting.workers.retain(|id, _| rests(id));
    for id in state.workers.keys() {
        if rests(id) {
            resting.workers.entry(*id).or_insert(now);
        }
    }

    let used = state.datasets_in_use();
    resting
        .datasets
        .retain(|id, _| state.datasets.contains_key(id) && !used.contains(id.as_str()));
    for id in state.datasets.keys() {
        if !used.contains(id.as_str()) {
            resting.datasets.entry(id.clone()).or_insert(now);
        }
    }
}

/// What has rested past its retention at `now`, in id order (at most [`MAX_PER_COMMAND`] of
/// each kind): one [`Command::Expire`], or None if nothing has.
pub fn check(state: &State, resting: &Resting, now: Instant, limits: &Limits) -> Option<Command> {
    let over = |since: Instant, limit: Duration| now.saturating_duration_since(since) >= limit;
    let mut jobs: Vec<_> = resting
        .jobs
        .iter()
        .filter(|(id, (rest, since))| {
            over(*since, limits.job(*rest))
                && state.jobs.get(id).and_then(State::job_rest) == Some(*rest)
        })
        .map(|(id, _)| *id)
        .collect();
    let mut workers: Vec<_> = resting
        .workers
        .iter()
        .filter(|(id, since)| over(**since, limits.dead_worker) && state.worker_rests(**id))
        .map(|(id, _)| *id)
        .collect();
    let mut datasets: Vec<_> = resting
        .datasets
        .iter()
        .filter(|(id, since)| {
            over(**since, limits.unused_dataset)
                && state.datasets.contains_key(id.as_str())
                && !state.dataset_in_use(id)
        })
        .map(|(id, _)| id.clone())
        .collect();
    if jobs.is_empty() && workers.is_empty() && datasets.is_empty() {
        return None;
    }
    jobs.sort_unstable();
    jobs.truncate(MAX_PER_COMMAND);
    workers.sort_unstable();
    workers.truncate(MAX_PER_COMMAND);
    datasets.sort_unstable();
    datasets.truncate(MAX_PER_COMMAND);
    Some(Command::Expire {
        jobs,
        workers,
        datasets,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::state::{
        Assignment, Consumer, Cursor, DatasetEntry, Job, JobId, WorkerEntry, WorkerLife,
    };

    const LIMITS: Limits = Limits {
        finished_job: Duration::from_secs(60),
        abandoned_job: Duration::from_secs(3_600),
        dead_worker: Duration::from_secs(120),
        unused_dataset: Duration::from_secs(30),
    };

    fn worker(id: WorkerId, life: WorkerLife) -> (WorkerId, WorkerEntry) {
        let entry = WorkerEntry {
            id,
            address: format!("w{id}:1"),
            standby: false,
            life,
            incarnation: 1,
            threads: 1,
        };
        (id, entry)
    }

    fn dataset(id: &str) -> (String, DatasetEntry) {
        let entry = DatasetEntry {
            id: id.into(),
            spec_json: "{}".into(),
            num_records: 10,
            split_records: 5,
            shuffle: false,
        };
        (id.into(), entry)
    }

    fn job(id: JobId, dataset: &str, finished: bool, attached: bool) -> (JobId, Job) {
        let consumer = Consumer {
            index: 0,
            generation: 1,
            attached,
            cursor: Cursor::default(),
            parked: false,
            unreachable: Default::default(),
        };
        let entry = Job {
            id,
            name: format!("job-{id}"),
            dataset_id: dataset.into(),
            seed: 1,
            num_epochs: 1,
            num_splits: 2,
            num_consumers: 1,
            consumers: vec![consumer],
            assignments: BTreeMap::new(),
            finished,
            cache_policy: Default::default(),
            cache_decision: None,
        };
        (id, entry)
    }

    /// Job 1 finished (still attached), job 2 abandoned, job 3 running; workers 1 alive, 2 and 3
    /// dead (3 still holds a task of job 3); dataset `a` used, `b` not.
    fn state() -> State {
        let (id, mut running) = job(3, "a", false, true);
        running.assignments.insert(
            (0, 0),
            Assignment {
                split: 0,
                worker: 3,
                lease: 1,
                start_index: 0,
            },
        );
        State {
            workers: BTreeMap::from([
                worker(1, WorkerLife::Alive),
                worker(2, WorkerLife::Dead),
                worker(3, WorkerLife::Dead),
            ]),
            datasets: BTreeMap::from([dataset("a"), dataset("b")]),
            jobs: BTreeMap::from([
                job(1, "a", true, true),
                job(2, "a", false, false),
                (id, running),
            ]),
            next_worker_id: 3,
            next_job_id: 3,
            next_lease: 1,
            ..State::default()
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn clocks_start_for_what_may_rest_and_keep_their_start() {
        let t0 = Instant::now();
        let s = state();
        let mut resting = Resting::default();
        observe(&s, &mut resting, t0);
        assert_eq!(
            resting.jobs,
            HashMap::from([(1, (JobRest::Finished, t0)), (2, (JobRest::Abandoned, t0))])
        );
        assert_eq!(resting.workers, HashMap::from([(2, t0)]));
        assert_eq!(resting.datasets, HashMap::from([("b".to_string(), t0)]));
        // A later look keeps the clocks where they started.
        observe(&s, &mut resting, t0 + secs(10));
        assert_eq!(resting.jobs.get(&1), Some(&(JobRest::Finished, t0)));
        assert_eq!(resting.workers.get(&2), Some(&t0));
    }

    #[test]
    fn a_worker_that_left_rests_like_a_dead_one_and_a_draining_one_does_not() {
        let t0 = Instant::now();
        let mut s = state();
        s.workers.insert(4, worker(4, WorkerLife::Left).1);
        s.workers.insert(5, worker(5, WorkerLife::Draining).1);
        let mut resting = Resting::default();
        observe(&s, &mut resting, t0);
        assert_eq!(resting.workers, HashMap::from([(2, t0), (4, t0)]));
    }

    #[test]
    fn each_kind_goes_after_its_own_retention_and_not_before() {
        let t0 = Instant::now();
        let s = state();
        let mut resting = Resting::default();
        observe(&s, &mut resting, t0);
        assert_eq!(check(&s, &resting, t0 + secs(29), &LIMITS), None);
        assert_eq!(
            check(&s, &resting, t0 + secs(30), &LIMITS),
            Some(Command::Expire {
                jobs: vec![],
                workers: vec![],
                datasets: vec!["b".into()],
            })
        );
        assert_eq!(
            check(&s, &resting, t0 + secs(120), &LIMITS),
            Some(Command::Expire {
                jobs: vec![1],
                workers: vec![2],
                datasets: vec!["b".into()],
            })
        );
        assert_eq!(
            check(&s, &resting, t0 + secs(3_600), &LIMITS),
            Some(Command::Expire {
                jobs: vec![1, 2],
                workers: vec![2],
                datasets: vec!["b".into()],
            })
        );
    }

    #[test]
    fn a_job_that_wakes_up_or_changes_its_reason_starts_again() {
        let t0 = Instant::now();
        let mut s = state();
        let mut resting = Resting::default();
        observe(&s, &mut resting, t0);
        // Job 2's client attaches again: its clock stops.
        if let Some(c) = s.jobs.get_mut(&2).and_then(|j| j.consumers.first_mut()) {
            c.attached = true;
        }
        observe(&s, &mut resting, t0 + secs(100));
        assert!(!resting.jobs.contains_key(&2));
        assert_eq!(
            check(&s, &resting, t0 + secs(10_000), &LIMITS).map(|c| match c {
                Command::Expire { jobs, .. } => jobs,
                _ => vec![],
            }),
            Some(vec![1])
        );
        // It leaves and later finishes: the finished clock starts when it finished.
        if let Some(j) = s.jobs.get_mut(&2) {
            j.consumers[0].attached = false;
        }
        observe(&s, &mut resting, t0 + secs(200));
        assert_eq!(
            resting.jobs.get(&2),
            Some(&(JobRest::Abandoned, t0 + secs(200)))
        );
        if let Some(j) = s.jobs.get_mut(&2) {
            j.finished = true;
        }
        observe(&s, &mut resting, t0 + secs(300));
        assert_eq!(
            resting.jobs.get(&2),
            Some(&(JobRest::Finished, t0 + secs(300)))
        );
    }

    #[test]
    fn a_worker_registered_again_and_removed_things_lose_their_clocks() {
        let t0 = Instant::now();
        let mut s = state();
        let mut resting = Resting::default();
        observe(&s, &mut resting, t0);
        if let Some(w) = s.workers.get_mut(&2) {
            w.life = WorkerLife::Alive;
        }
        s.jobs.remove(&1);
        s.datasets.remove("b");
        observe(&s, &mut resting, t0 + secs(1));
        assert!(resting.workers.is_empty());
        assert!(!resting.jobs.contains_key(&1));
        assert!(resting.datasets.is_empty());
        // Dataset `a` starts resting once its last job is gone.
        s.jobs.clear();
        observe(&s, &mut resting, t0 + secs(2));
        assert_eq!(resting.datasets.get("a"), Some(&(t0 + secs(2))));
        // Worker 3 rests once it holds nothing.
        assert_eq!(resting.workers.get(&3), Some(&(t0 + secs(2))));
    }

    #[test]
    fn a_big_backlog_is_removed_in_bounded_commands() {
        let t0 = Instant::now();
        let mut s = State::default();
        for id in 1..=2_500 {
            let (id, j) = job(id, "a", true, false);
            s.jobs.insert(id, j);
        }
        let mut resting = Resting::default();
        observe(&s, &mut resting, t0);
        let Some(Command::Expire { jobs, .. }) = check(&s, &resting, t0 + secs(60), &LIMITS) else {
            panic!("nothing expired");
        };
        assert_eq!(jobs, (1..=1_000).collect::<Vec<_>>());
    }

    #[test]
    fn the_tick_follows_the_shortest_retention_within_bounds() {
        assert_eq!(tick(&LIMITS), Duration::from_secs(1));
        let short = Limits {
            finished_job: Duration::from_millis(200),
            ..LIMITS
        };
        assert_eq!(tick(&short), Duration::from_millis(50));
        let zero = Limits {
            dead_worker: Duration::ZERO,
            ..LIMITS
        };
        assert_eq!(tick(&zero), Duration::from_millis(20));
    }
}
