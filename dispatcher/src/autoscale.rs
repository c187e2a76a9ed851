//! The autoscaler at the service level: every `--autoscale-period-ms` it measures the running
//! jobs (examples per second delivered to their consumers, from the `delivered_examples` of
//! client heartbeats, and the trainers' input-wait ratio), lets the pure policy
//! (`policy::autoscale::Scaler`) decide, and journals the decision as `Command::Scale`, which
//! shows as a `scale_up` / `scale_down` event. A smaller fleet is reached here: the workers
//! beyond the wanted count drain (`Command::DrainWorker`: their splits move at once, with the
//! positions they reached, so nothing is lost or repeated), the ones holding the fewest splits
//! first. A larger one is reached by an actuator: the process that launched a local cluster
//! (it follows `ClusterStatus.autoscale.target`), or `--scale-command` (`scale_command.rs`).
//!
//! An operator's pin (`PinWorkers`, the dashboard's keys) overrides the policy until unpinned;
//! the pin is applied the same way, with or without `--autoscale`.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use cachew_proto::v1;
use tonic::Status;

use crate::policy::autoscale::{Sample, ScalePolicy, Scaler};
use crate::service::{Core, DispatcherService};
use crate::state::{Command, JobId, State, WorkerLife};
use crate::wire::rejection_status;

/// The most workers a pin may ask for.
pub const MAX_PINNED_WORKERS: u32 = 1024;

/// What the autoscaler remembers between periods (soft: a restarted dispatcher starts over from
/// the journaled target).
#[derive(Debug, Default)]
pub struct Autoscaler {
    scaler: Option<Scaler>,
    /// The running jobs the scaler measures; another set starts it over.
    jobs: BTreeSet<JobId>,
    /// Each consumer's delivered examples, seconds waited for data, and when its heartbeat
    /// said so, at the previous period.
    delivered: HashMap<(JobId, u32), (u64, f64, Instant)>,
    /// Periods with no job running.
    idle: u32,
}

/// The running jobs: neither finished nor abandoned (`State::job_rest`).
fn running_jobs(state: &State) -> BTreeSet<JobId> {
    state
        .jobs
        .values()
        .filter(|j| State::job_rest(j).is_none())
        .map(|j| j.id)
        .collect()
}

impl DispatcherService {
    /// One autoscaling period at `now`: measure, decide, shrink. Called by [`crate::serve`]
    /// every `AutoscaleConfig::period`.
    pub fn autoscale_tick(&self, auto: &mut Autoscaler, now: Instant) {
        let config = self.config().autoscale.clone();
        let mut guard = self.lock();
        let core = &mut *guard;
        let decision = config
            .enabled
            .then(|| self.measure_and_decide(core, auto, &config.policy, now))
            .flatten();
        if let Some((from, target, why)) = decision {
            tracing::info!(from, target, "autoscale: {why}");
            if let Err(e) = self.execute(core, Command::Scale { from, target, why }) {
                tracing::warn!("scale refused: {e}");
            }
        }
        self.shrink(core);
    }

    /// The sample of this period and the policy's decision on it, if any.
    fn measure_and_decide(
        &self,
        core: &mut Core,
        auto: &mut Autoscaler,
        policy: &ScalePolicy,
        now: Instant,
    ) -> Option<(u32, u32, String)> {
        let jobs = running_jobs(&core.state);
        let workers = core.state.active_workers() as u32;
        let mut delivered = HashMap::new();
        let mut rate = 0.0;
        let mut wait: f64 = 0.0;
        let mut measured = 0u32;
        for &job in &jobs {
            let Some(j) = core.state.jobs.get(&job) else {
                continue;
            };
            let (mut waits, mut consumers) = (0.0, 0u32);
            for c in j.consumers.iter().filter(|c| c.attached) {
                let key = (job, c.index);
                let (Some(&n), Some(w)) = (
                    core.soft.delivered_examples.get(&key),
                    core.soft.input_wait.get(&key),
                ) else {
                    continue;
                };
                // The counters are as of the consumer's last heartbeat (they come up to 500 ms
                // apart), so they are divided by the time between those heartbeats, not by the
                // period: at a 1 s period the difference would be up to +-50%.
                let seen = core.soft.consumer_seen.get(&key).copied().unwrap_or(now);
                delivered.insert(key, (n, w.seconds_total, seen));
                // Over this period: examples taken, and the fraction of it spent waiting (the
                // heartbeat's own ratio spans ~10 s, too slow for a period of 1 s). A client that
                // restarted counts from 0 again: that period says nothing about it.
                let Some(&(before, waited, then)) = auto.delivered.get(&key) else {
                    continue;
                };
                let dt = seen.saturating_duration_since(then).as_secs_f64();
                if n < before || w.seconds_total < waited {
                    continue;
                }
                if dt < 0.05 {
                    // No new heartbeat worth measuring: the older values stay the baseline.
                    delivered.insert(key, (before, waited, then));
                    continue;
                }
                rate += (n - before) as f64 / dt;
                waits += ((w.seconds_total - waited) / dt).min(1.0);
                consumers += 1;
            }
            if consumers > 0 {
                wait = wait.max(waits / f64::from(consumers));
            }
            measured += consumers;
        }
        auto.delivered = delivered;
        let wanted = core.state.scale.target;
        if jobs.is_empty() {
            // Nothing runs: after a stable period a fleet the autoscaler sized goes back to its
            // minimum (a fleet it never sized stays as the operator started it).
            auto.scaler = None;
            auto.jobs.clear();
            auto.idle += 1;
            let target = wanted?;
            if auto.idle >= policy.stable_periods && target > policy.min_workers {
                auto.idle = 0;
                let why = format!("no job has run for {} period(s)", policy.stable_periods);
                return Some((target, policy.min_workers, why));
            }
            return None;
        }
        auto.idle = 0;
        if auto.jobs != jobs || auto.scaler.is_none() {
            // Another set of jobs: another load. Start over from the estimate, after one period
            // that gives every consumer a baseline.
            auto.jobs = jobs;
            auto.scaler = Some(Scaler::new(wanted.unwrap_or(workers)));
            return None;
        }
        if core.state.scale.pinned.is_some() {
            // Pinned: the policy starts over from the estimate once unpinned.
            auto.scaler = None;
            return None;
        }
        if measured == 0 {
            // No consumer reported since the last period: nothing to judge by.
            return None;
        }
        let scaler = auto.scaler.as_mut()?;
        let sample = Sample {
            workers,
            rate,
            wait,
        };
        tracing::debug!(target = scaler.target(), "autoscale: {sample}");
        let decision = scaler.observe(sample, policy)?;
        Some((decision.from, decision.target, decision.why))
    }

    /// Drains the active workers beyond the wanted count, the ones holding the fewest
    /// assignments first (ties: the newest). A worker whose heartbeats are late (suspect: often
    /// a process that died, whose replacement may already be registering) is not counted, so a
    /// replacement is never drained for a worker that is about to be declared dead.
    fn shrink(&self, core: &mut Core) {
        let Some(wanted) = core.state.scale.wanted() else {
            return;
        };
        let mut active: Vec<(usize, std::cmp::Reverse<u64>)> = core
            .state
            .workers
            .values()
            .filter(|w| w.life == WorkerLife::Alive && !w.standby)
            .filter(|w| !core.soft.suspect.contains(&w.id))
            .map(|w| {
                (
                    core.state.assignments_of(w.id).len(),
                    std::cmp::Reverse(w.id),
                )
            })
            .collect();
        if active.len() <= wanted as usize {
            return;
        }
        active.sort();
        let excess = active.len() - wanted as usize;
        for (_, std::cmp::Reverse(worker)) in active.into_iter().take(excess) {
            let resume_at = core.soft.resume_points(worker);
            tracing::info!(worker, wanted, "autoscale: draining worker {worker}");
            if let Err(e) = self.execute(core, Command::Shrink { worker, resume_at }) {
                tracing::warn!(worker, "autoscale drain refused: {e}");
            }
        }
    }

    /// The admin `PinWorkers`: pins the count (or unpins), drains what a smaller count leaves
    /// over at once; returns the answer and the sequence number it reveals.
    pub(crate) fn pin(
        &self,
        req: &v1::PinWorkersRequest,
    ) -> Result<(v1::PinWorkersResponse, u64), Status> {
        if let Some(n) = req.workers.filter(|n| *n == 0 || *n > MAX_PINNED_WORKERS) {
            return Err(Status::invalid_argument(format!(
                "workers: a pinned count must be 1 to {MAX_PINNED_WORKERS}, got {n}"
            )));
        }
        let mut core = self.lock();
        self.execute(
            &mut core,
            Command::PinWorkers {
                pinned: req.workers,
            },
        )
        .map_err(rejection_status)?;
        self.shrink(&mut core);
        let response = v1::PinWorkersResponse {
            autoscale: Some(crate::status::autoscale(
                &self.config().autoscale,
                &core.state,
            )),
        };
        Ok((response, Self::visible(&core)))
    }
}
