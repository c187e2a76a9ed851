//! What the dispatcher does with workers: registration (claims of restored tasks, progress
//! kept), and each round of a worker heartbeat: liveness and soft facts taken in (progress,
//! cache reports, checkpoint, disks), reconciliation, then new tasks for its free slots, shared
//! between jobs (`Command::AssignFairly`, with the tasks the worker reports idle).

use std::time::Instant;

use cachew_proto::v1;
use cachew_proto::v1::EventKind;
use tonic::Status;

use crate::long_poll::{Look, Round};
use crate::policy;
use crate::reconcile::reconcile;
use crate::service::{Core, DispatcherService};
use crate::soft::DiskOwner;
use crate::state::{Command, TaskClaim, WorkerId};
use crate::wire::{rejection_status, task_def};

impl DispatcherService {
    /// Registers a worker (new, or a known one again with the tasks its checkpoint restored);
    /// returns the answer and the sequence number it reveals.
    pub(crate) fn register(
        &self,
        req: &v1::RegisterWorkerRequest,
    ) -> Result<(v1::RegisterWorkerResponse, u64), Status> {
        if req.address.is_empty() {
            return Err(Status::invalid_argument("worker address is empty"));
        }
        let claims: Vec<TaskClaim> = req
            .tasks
            .iter()
            .filter_map(|t| {
                t.key.map(|k| TaskClaim {
                    job: k.job_id,
                    epoch: k.epoch,
                    position: k.position,
                    lease: t.lease,
                })
            })
            .collect();
        let mut core = self.lock();
        let outcome = self
            .execute(
                &mut core,
                Command::RegisterWorker {
                    address: req.address.clone(),
                    standby: req.standby,
                    threads: req.threads,
                    claims,
                },
            )
            .map_err(rejection_status)?;
        let id = outcome
            .worker
            .ok_or_else(|| Status::internal("registration produced no worker id"))?;
        core.soft.touch(id, Instant::now());
        // Forget progress reported by the previous process; keep what the restored tasks say.
        core.soft.forget_progress_of(id);
        let kept_tasks: Vec<v1::TaskProgress> = req
            .tasks
            .iter()
            .filter(|t| {
                t.key.is_some_and(|k| {
                    outcome.kept.iter().any(|c| {
                        (c.job, c.epoch, c.position, c.lease)
                            == (k.job_id, k.epoch, k.position, t.lease)
                    })
                })
            })
            .cloned()
            .collect();
        core.soft.record_progress(id, &kept_tasks);
        let response = v1::RegisterWorkerResponse {
            worker_id: id,
            heartbeat_interval_ms: self.config().heartbeat_interval.as_millis() as u64,
            kept: outcome
                .kept
                .iter()
                .map(|c| v1::TaskKey::new(c.job, c.epoch, c.position))
                .collect(),
            incarnation: outcome.incarnation,
        };
        Ok((response, Self::visible(&core)))
    }

    /// One look of a worker heartbeat's long poll. A worker that is not alive here (declared
    /// dead, left, or another incarnation or address) is told to register again. A draining one
    /// (`crate::drain`) is answered at once, with `drain` set and no new task. Otherwise the
    /// reply carries the tasks to drop and the tasks to run (missing ones, then new ones for
    /// free slots); it waits while there are none.
    pub(crate) fn worker_round(
        &self,
        core: &mut Core,
        req: &v1::WorkerHeartbeatRequest,
        look: Look,
    ) -> Result<Round<v1::WorkerHeartbeatResponse>, Status> {
        let alive = core.state.workers.get(&req.worker_id).filter(|w| {
            w.life.heartbeats()
                && (req.incarnation == 0 || w.incarnation == req.incarnation)
                && (req.address.is_empty() || w.address == req.address)
        });
        if alive.is_none() {
            let reported = req.tasks.len();
            if reported > 0 {
                let msg = format!(
                    "worker {} (not alive here) reported {reported} task(s): fenced, it must register again",
                    req.worker_id
                );
                core.events
                    .push(EventKind::Fenced, msg, Some(req.worker_id), None);
            }
            return Ok(Round::Reply(v1::WorkerHeartbeatResponse {
                reregister: true,
                ..Default::default()
            }));
        }
        let now = Instant::now();
        let previous = core.soft.last_seen.get(&req.worker_id).copied();
        if let Some(gap) = crate::metrics::since(previous, now) {
            self.metrics().heartbeat_gap(gap);
        }
        if core.soft.touch(req.worker_id, now) {
            let msg = format!("worker {}: heartbeats resumed", req.worker_id);
            core.events
                .push(EventKind::HeartbeatResumed, msg, Some(req.worker_id), None);
        }
        if look.first {
            self.take_in_reports(core, req);
            if let Some(reply) = self.take_in_leaving(core, req) {
                return Ok(reply);
            }
        }
        let draining = self.is_draining(core, req.worker_id);
        let (mut new_tasks, dropped) = reconcile(
            &core.state,
            &mut core.soft,
            &mut core.events,
            req.worker_id,
            &req.tasks,
        );
        let holding = req.tasks.len() - dropped.len() + new_tasks.len();
        let free = (req.free_slots as usize + req.tasks.len()).saturating_sub(holding) as u32;
        let free = if draining {
            0
        } else {
            free.min(req.free_slots)
        };
        if free > 0 {
            let window = self.window(&core.state);
            if let Ok(out) = self.execute(
                core,
                Command::AssignFairly {
                    worker: req.worker_id,
                    max: free,
                    window,
                    idle: idle_per_job(&req.tasks),
                },
            ) {
                for (job_id, epoch, position, a) in out.assigned {
                    let Some(job) = core.state.jobs.get(&job_id) else {
                        continue;
                    };
                    new_tasks.push(task_def(job, epoch, position, &a));
                }
            }
        }
        if !new_tasks.is_empty() || !dropped.is_empty() || look.expired() || draining {
            let response = v1::WorkerHeartbeatResponse {
                new_tasks,
                dropped,
                reregister: false,
                drain: draining,
            };
            return Ok(Round::ReplyDurable(response, Self::visible(core)));
        }
        Ok(Round::Wait)
    }

    /// Takes in the soft facts a heartbeat reports: task progress, cache reports, the
    /// checkpoint summary, elements produced and disk conditions.
    fn take_in_reports(&self, core: &mut Core, req: &v1::WorkerHeartbeatRequest) {
        core.soft.record_progress(req.worker_id, &req.tasks);
        if !req.cache.is_empty() {
            self.record_cache(core, req.worker_id, &req.cache);
        }
        if let Some(cp) = req.checkpoint {
            core.soft.checkpoint.insert(req.worker_id, cp);
        }
        core.soft
            .produced
            .insert(req.worker_id, req.elements_produced);
        core.soft.record_disks(
            &mut core.events,
            DiskOwner::Worker(req.worker_id),
            &req.disks,
        );
    }

    /// Folds a worker's cache reports in; announces completed and repaired caches, and applies
    /// the `auto` decision (`policy::cache::decide`) once there are enough measurements.
    fn record_cache(&self, core: &mut Core, worker: WorkerId, reports: &[v1::CacheReport]) {
        // Only a real change wakes the long polls (measurements alone do not).
        let mut changed = false;
        for r in reports {
            let Some(job) = core.state.jobs.get(&r.job_id) else {
                continue;
            };
            let splits = job.num_splits;
            let measured = core.soft.cache.entry(r.job_id).or_default();
            let fold = measured.fold(r, splits);
            changed |= fold.changed;
            let decision = policy::cache::decide(job, measured);
            if r.repaired > 0 {
                let msg = format!(
                    "job {}: worker {worker} found {} cache chunk(s) missing or corrupt and recomputed them from the source",
                    r.job_id, r.repaired
                );
                tracing::warn!("{msg}");
                core.events
                    .push(EventKind::CacheRepaired, msg, Some(worker), Some(r.job_id));
            }
            if fold.newly_complete {
                let msg = format!(
                    "job {}: cache complete, {splits} of {splits} chunks committed",
                    r.job_id
                );
                core.events
                    .push(EventKind::CacheComplete, msg, None, Some(r.job_id));
            }
            if let Some(command) = decision {
                let _ = self.execute(core, command);
            }
        }
        if changed {
            self.bump();
        }
    }
}

/// How many of a worker's reported tasks are idle, per job (ascending job id).
fn idle_per_job(tasks: &[v1::TaskProgress]) -> Vec<(u64, u32)> {
    let mut idle = std::collections::BTreeMap::new();
    for t in tasks.iter().filter(|t| t.idle) {
        if let Some(k) = t.key {
            *idle.entry(k.job_id).or_insert(0u32) += 1;
        }
    }
    idle.into_iter().collect()
}
