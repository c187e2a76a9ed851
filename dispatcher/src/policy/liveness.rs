//! Liveness policy: which live workers are dead (silent past the worker timeout) or late, which
//! attached consumers went silent, and whether the dispatcher itself stalled. Pure: it reads the
//! state, the heartbeat times in [`Soft`] and the `now` it is given; the service applies the
//! [`Command`]s it returns and keeps the soft facts.

use std::time::{Duration, Instant};

use crate::config::DispatcherConfig;
use crate::soft::Soft;
use crate::state::{Command, JobId, State, WorkerId};

/// How long nodes may stay silent.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A worker silent for longer is declared dead.
    pub worker_timeout: Duration,
    /// A worker silent for longer (but within the timeout) is suspect.
    pub late: Duration,
    /// An attached consumer silent for longer is released.
    pub consumer_timeout: Duration,
}

impl Limits {
    pub fn new(config: &DispatcherConfig) -> Limits {
        Limits {
            worker_timeout: config.worker_timeout,
            late: config.heartbeat_interval * 2,
            consumer_timeout: config.consumer_timeout,
        }
    }
}

/// How often the liveness check runs for a heartbeat interval.
pub fn tick(heartbeat_interval: Duration) -> Duration {
    (heartbeat_interval / 4).clamp(Duration::from_millis(20), Duration::from_millis(250))
}

/// The dispatcher's own silence: when the check last ran at `last_check` and runs again at
/// `now`, a gap over two ticks means the dispatcher itself did not run (paused, or starved of
/// CPU). Returns (gap, time lost to the stall).
pub fn stall(
    last_check: Option<Instant>,
    now: Instant,
    tick: Duration,
) -> Option<(Duration, Duration)> {
    let gap = now.duration_since(last_check?);
    (gap > tick * 2).then(|| (gap, gap - tick))
}

/// The dispatcher's own deafness: when at least two nodes should be talking to it (live
/// workers and attached consumers) and it has heard from none of them for longer than `late`,
/// the likelier story is that its own link is cut (every heartbeat stops at once), not that
/// they all died together. Returns how long it has heard nobody. While deaf, the service moves
/// every heartbeat clock forward as for a stall, so nobody is declared dead or released by a
/// dispatcher that could not hear, and the nodes get a full timeout once it hears again.
///
/// The price: nodes that really all die together (and no client is attached to tell the two
/// cases apart) stay listed alive until one of them, or any client, speaks again.
pub fn deaf(state: &State, soft: &Soft, now: Instant, limits: &Limits) -> Option<Duration> {
    let workers: Vec<Option<Instant>> = state
        .workers
        .values()
        .filter(|w| w.life.heartbeats())
        .map(|w| soft.last_seen.get(&w.id).copied())
        .collect();
    let consumers: Vec<Option<Instant>> = attached_consumers(state)
        .into_iter()
        .map(|(job, consumer, _)| soft.consumer_seen.get(&(job, consumer)).copied())
        .collect();
    if workers.is_empty() || workers.len() + consumers.len() < 2 {
        return None;
    }
    // A node never heard from says nothing about the dispatcher's link.
    let last = workers.iter().chain(&consumers).flatten().max()?;
    let quiet = now.saturating_duration_since(*last);
    (quiet > limits.late).then_some(quiet)
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A live worker silent for `silent`, past the worker timeout: apply `command`
    /// (`Command::DeclareDead`, resuming its tasks where it last reported them acked).
    Dead {
        worker: WorkerId,
        silent: Duration,
        command: Command,
    },
    /// A live worker silent past `late` but within the timeout, not suspect yet. A soft fact:
    /// it changes no state.
    Late { worker: WorkerId, silent: Duration },
    /// An attached consumer of an unfinished job, silent past the consumer timeout: apply
    /// `command` (`Command::ReleaseConsumer`, timed out).
    Silent {
        job: JobId,
        consumer: u32,
        command: Command,
    },
}

/// How long `worker` has been silent at `now` (one never heard from counts as silent past the
/// timeout and `late` together).
pub fn silence(soft: &Soft, worker: WorkerId, now: Instant, limits: &Limits) -> Duration {
    soft.last_seen
        .get(&worker)
        .map_or(limits.worker_timeout + limits.late, |t| {
            now.duration_since(*t)
        })
}

/// The verdicts at `now`: live workers first, in worker order, then consumers. A consumer
/// without a heartbeat time is not silent (the service starts its clock).
pub fn check(state: &State, soft: &Soft, now: Instant, limits: &Limits) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    for w in state.workers.values().filter(|w| w.life.heartbeats()) {
        let silent = silence(soft, w.id, now, limits);
        if silent > limits.worker_timeout {
            let resume_at = soft.resume_points(w.id);
            verdicts.push(Verdict::Dead {
                worker: w.id,
                silent,
                command: Command::DeclareDead {
                    worker: w.id,
                    resume_at,
                },
            });
        } else if silent > limits.late && !soft.suspect.contains(&w.id) {
            verdicts.push(Verdict::Late {
                worker: w.id,
                silent,
            });
        }
    }
    for (job, consumer, generation) in attached_consumers(state) {
        let seen = soft.consumer_seen.get(&(job, consumer)).copied();
        if seen.is_some_and(|seen| now.duration_since(seen) > limits.consumer_timeout) {
            verdicts.push(Verdict::Silent {
                job,
                consumer,
                command: Command::ReleaseConsumer {
                    job,
                    consumer,
                    generation,
                    timed_out: true,
                },
            });
        }
    }
    verdicts
}

/// (job, consumer, generation) of every attached consumer of an unfinished job.
pub fn attached_consumers(state: &State) -> Vec<(JobId, u32, u64)> {
    state
        .jobs
        .values()
        .filter(|j| !j.finished)
        .flat_map(|j| {
            j.consumers
                .iter()
                .filter(|c| c.attached)
                .map(move |c| (j.id, c.index, c.generation))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::soft::Reported;
    use crate::state::{Consumer, Cursor, Job, WorkerEntry, WorkerLife};

    const LIMITS: Limits = Limits {
        worker_timeout: Duration::from_secs(5),
        late: Duration::from_secs(1),
        consumer_timeout: Duration::from_secs(30),
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

    /// Workers 1, 2, 3 alive, 4 dead; one job with one attached consumer.
    fn state() -> State {
        let consumer = Consumer {
            index: 0,
            generation: 2,
            attached: true,
            cursor: Cursor::default(),
            parked: false,
            unreachable: Default::default(),
        };
        let job = Job {
            id: 9,
            name: "j".into(),
            dataset_id: "ds".into(),
            seed: 1,
            num_epochs: 1,
            num_splits: 4,
            num_consumers: 1,
            consumers: vec![consumer],
            assignments: BTreeMap::new(),
            finished: false,
            cache_policy: Default::default(),
            cache_decision: None,
        };
        State {
            workers: BTreeMap::from([
                worker(1, WorkerLife::Alive),
                worker(2, WorkerLife::Alive),
                worker(3, WorkerLife::Alive),
                worker(4, WorkerLife::Dead),
            ]),
            jobs: BTreeMap::from([(9, job)]),
            ..State::default()
        }
    }

    /// Each worker and the consumer last seen `ago` before `now`.
    fn soft(now: Instant, ago: &[(WorkerId, u64)], consumer_ago: Option<u64>) -> Soft {
        let mut soft = Soft::default();
        for &(w, s) in ago {
            soft.last_seen.insert(w, now - Duration::from_secs(s));
        }
        if let Some(s) = consumer_ago {
            soft.consumer_seen
                .insert((9, 0), now - Duration::from_secs(s));
        }
        soft
    }

    #[test]
    fn a_dispatcher_that_hears_nobody_suspects_itself() {
        let now = Instant::now() + Duration::from_secs(100);
        // Everybody silent for 2 s (past `late`, 1 s): the dispatcher's own link.
        let all_quiet = soft(now, &[(1, 2), (2, 2), (3, 2)], Some(2));
        assert_eq!(
            deaf(&state(), &all_quiet, now, &LIMITS),
            Some(Duration::from_secs(2))
        );
        // Even past the worker timeout, as long as nobody speaks.
        let long = soft(now, &[(1, 9), (2, 8), (3, 7)], Some(7));
        assert_eq!(
            deaf(&state(), &long, now, &LIMITS),
            Some(Duration::from_secs(7))
        );
        // One worker still heard: the others are silent, not the dispatcher.
        let one_heard = soft(now, &[(1, 9), (2, 9), (3, 0)], Some(9));
        assert_eq!(deaf(&state(), &one_heard, now, &LIMITS), None);
        // The client still heard: the workers died.
        let client_heard = soft(now, &[(1, 9), (2, 9), (3, 9)], Some(0));
        assert_eq!(deaf(&state(), &client_heard, now, &LIMITS), None);
        // Within `late`: nothing to suspect yet.
        let recent = soft(now, &[(1, 1), (2, 1), (3, 1)], Some(1));
        assert_eq!(deaf(&state(), &recent, now, &LIMITS), None);
        // A lone worker and no consumer: silence cannot be told apart from a death.
        let mut lone = state();
        lone.workers.retain(|id, _| *id == 1);
        lone.jobs.clear();
        let lone_soft = soft(now, &[(1, 9)], None);
        assert_eq!(deaf(&lone, &lone_soft, now, &LIMITS), None);
        // Nobody ever heard from: no evidence either way.
        assert_eq!(deaf(&state(), &Soft::default(), now, &LIMITS), None);
    }

    #[test]
    fn a_worker_silent_past_the_timeout_is_declared_dead_where_it_reported() {
        let now = Instant::now() + Duration::from_secs(100);
        let mut soft = soft(now, &[(1, 6), (2, 0), (3, 0), (4, 60)], Some(0));
        soft.progress.insert(
            (9, 0, 2),
            Reported {
                worker: 1,
                lease: 5,
                produced: 40,
                acked: 17,
                len: 64,
                idle: false,
            },
        );
        soft.progress.insert(
            (9, 0, 3),
            Reported {
                worker: 2,
                lease: 6,
                produced: 1,
                acked: 1,
                len: 64,
                idle: false,
            },
        );
        let got = check(&state(), &soft, now, &LIMITS);
        assert_eq!(
            got,
            vec![Verdict::Dead {
                worker: 1,
                silent: Duration::from_secs(6),
                command: Command::DeclareDead {
                    worker: 1,
                    resume_at: vec![((9, 0, 2), 17)],
                },
            }]
        );
    }

    #[test]
    fn a_worker_within_the_timeout_is_not_dead_only_late_once() {
        let now = Instant::now() + Duration::from_secs(100);
        let mut soft = soft(now, &[(1, 5), (2, 2), (3, 1)], Some(0));
        // 5 s is the timeout itself, not past it; 1 s is `late` itself.
        let got = check(&state(), &soft, now, &LIMITS);
        assert_eq!(
            got,
            vec![
                Verdict::Late {
                    worker: 1,
                    silent: Duration::from_secs(5),
                },
                Verdict::Late {
                    worker: 2,
                    silent: Duration::from_secs(2),
                },
            ]
        );
        // Already suspect: nothing new to say.
        soft.suspect.extend([1, 2]);
        assert_eq!(check(&state(), &soft, now, &LIMITS), vec![]);
    }

    #[test]
    fn a_worker_never_heard_from_is_past_the_timeout() {
        let now = Instant::now() + Duration::from_secs(100);
        let soft = soft(now, &[(1, 0), (2, 0)], Some(0));
        let got = check(&state(), &soft, now, &LIMITS);
        assert_eq!(
            got,
            vec![Verdict::Dead {
                worker: 3,
                silent: Duration::from_secs(6),
                command: Command::DeclareDead {
                    worker: 3,
                    resume_at: vec![],
                },
            }]
        );
    }

    #[test]
    fn a_silent_consumer_is_released_as_timed_out() {
        let now = Instant::now() + Duration::from_secs(100);
        let fresh = [(1, 0), (2, 0), (3, 0)];
        assert_eq!(
            check(&state(), &soft(now, &fresh, Some(30)), now, &LIMITS),
            vec![]
        );
        assert_eq!(
            check(&state(), &soft(now, &fresh, None), now, &LIMITS),
            vec![]
        );
        assert_eq!(
            check(&state(), &soft(now, &fresh, Some(31)), now, &LIMITS),
            vec![Verdict::Silent {
                job: 9,
                consumer: 0,
                command: Command::ReleaseConsumer {
                    job: 9,
                    consumer: 0,
                    generation: 2,
                    timed_out: true,
                },
            }]
        );
        let mut finished = state();
        if let Some(j) = finished.jobs.get_mut(&9) {
            j.finished = true;
        }
        assert_eq!(
            check(&finished, &soft(now, &fresh, Some(31)), now, &LIMITS),
            vec![]
        );
    }

    #[test]
    fn a_gap_over_two_ticks_is_the_dispatchers_own_stall() {
        let tick = Duration::from_millis(100);
        let t0 = Instant::now();
        assert_eq!(stall(None, t0, tick), None);
        assert_eq!(stall(Some(t0), t0 + tick * 2, tick), None);
        assert_eq!(
            stall(Some(t0), t0 + Duration::from_secs(3), tick),
            Some((Duration::from_secs(3), Duration::from_millis(2_900)))
        );
    }
}
