//! What the dispatcher does with training clients (consumers): attaching one to a job (created
//! on first use, over a dataset indexed once per spec), each round of a client heartbeat (cursor,
//! epoch reports, disks taken in; the split locations of its window given out), and releasing
//! it.

use std::collections::HashMap;
use std::time::Instant;

use cachew_pipeline::PipelineSpec;
use cachew_proto::v1;
use cachew_proto::v1::EventKind;
use tonic::Status;

use crate::long_poll::{Look, Round};
use crate::service::{Core, DispatcherService};
use crate::soft::{DiskOwner, InputWait};
use crate::state::{CachePolicy, Command, Rejection};
use crate::wire::{cursor_from_wire, rejection_status};

impl DispatcherService {
    /// Attaches a consumer to the job `req` names, creating the job (and registering its
    /// dataset) on first use; returns the answer and the sequence number it reveals.
    pub(crate) async fn attach_consumer(
        &self,
        req: &v1::GetOrCreateJobRequest,
    ) -> Result<(v1::GetOrCreateJobResponse, u64), Status> {
        if req.job_name.is_empty() {
            return Err(Status::invalid_argument("job name is empty"));
        }
        let cache_policy = CachePolicy::from_wire(req.cache_policy)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if cache_policy != CachePolicy::Compute {
            let spec = PipelineSpec::from_json(&req.spec_json)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            if spec.cache_point().is_none() {
                return Err(Status::invalid_argument(format!(
                    "cache policy `{}` needs a `cache` op in the pipeline to mark the prefix to cache",
                    cache_policy.name()
                )));
            }
        }
        let entry = self.datasets().entry(&req.spec_json).await?;
        let mut core = self.lock();
        self.execute(&mut core, Command::RegisterDataset(entry.clone()))
            .map_err(rejection_status)?;
        let outcome = self
            .execute(
                &mut core,
                Command::GetOrCreateJob {
                    name: req.job_name.clone(),
                    dataset_id: entry.id.clone(),
                    seed: req.seed,
                    num_epochs: req.num_epochs,
                    num_consumers: req.num_consumers.max(1),
                    consumer_index: u32::try_from(req.consumer_index).ok(),
                    resume: req.resume.then(|| cursor_from_wire(req.cursor)),
                    cache_policy,
                },
            )
            .map_err(rejection_status)?;
        let job_id = outcome.job.ok_or_else(|| Status::internal("no job"))?;
        let (index, generation) = outcome
            .consumer
            .ok_or_else(|| Status::internal("no consumer"))?;
        core.soft
            .consumer_seen
            .insert((job_id, index), Instant::now());
        let job = core
            .state
            .jobs
            .get(&job_id)
            .ok_or_else(|| Status::internal("job vanished"))?;
        let response = v1::GetOrCreateJobResponse {
            job_id,
            dataset_id: entry.id.clone(),
            consumer_index: index,
            consumer_generation: generation,
            num_consumers: job.num_consumers,
            num_records: entry.num_records,
            split_records: entry.split_records,
            num_splits: job.num_splits,
            seed: job.seed,
            num_epochs: job.num_epochs,
            cursor: outcome.cursor.map(v1::Cursor::from),
            created: outcome.created,
        };
        Ok((response, Self::visible(&core)))
    }

    /// One look of a client heartbeat's long poll. The first look takes the report in (a
    /// superseded consumer is told so). The reply lists the window's split locations; it waits
    /// while the client knows all of them under their current leases and the job goes on.
    pub(crate) fn client_round(
        &self,
        core: &mut Core,
        req: &v1::ClientHeartbeatRequest,
        known: &HashMap<(u64, u32), u64>,
        look: Look,
    ) -> Result<Round<v1::ClientHeartbeatResponse>, Status> {
        let cursor = cursor_from_wire(req.cursor);
        if look.first {
            match self.execute(
                core,
                Command::ConsumerProgress {
                    job: req.job_id,
                    consumer: req.consumer_index,
                    generation: req.consumer_generation,
                    cursor,
                },
            ) {
                Ok(_) => {}
                Err(Rejection::Superseded { .. }) => {
                    return Ok(Round::Reply(v1::ClientHeartbeatResponse {
                        superseded: true,
                        ..Default::default()
                    }));
                }
                Err(r) => return Err(rejection_status(r)),
            }
            self.take_in_report(core, req);
            self.take_in_unreachable(core, req)?;
        }
        let window = self.window(&core.state);
        let job = core
            .state
            .jobs
            .get(&req.job_id)
            .ok_or_else(|| Status::not_found(format!("unknown job {}", req.job_id)))?;
        let mut locations = Vec::new();
        let mut changed = false;
        for (epoch, position) in job.window(req.consumer_index, cursor, window) {
            let a = job.assignments.get(&(epoch, position));
            let lease = a.map_or(0, |a| a.lease);
            if known.get(&(epoch, position)).copied().unwrap_or(0) != lease {
                changed = true;
            }
            let worker = a.and_then(|a| core.state.workers.get(&a.worker));
            let split = match (a, core.state.datasets.get(&job.dataset_id)) {
                (Some(a), _) => a.split,
                (None, Some(d)) => crate::state::split_at(d, job.seed, epoch, position),
                (None, None) => position,
            };
            locations.push(v1::SplitLocation {
                epoch,
                position,
                split,
                lease,
                worker_address: worker.map(|w| w.address.clone()).unwrap_or_default(),
                worker_id: a.map_or(0, |a| a.worker),
                start_index: a.map_or(0, |a| a.start_index),
            });
        }
        let finished = job.finished || job.consumer_done(req.consumer_index, cursor);
        if changed || finished || look.expired() {
            // The client is alive to the end of its poll, not only at its start.
            core.soft
                .consumer_seen
                .insert((req.job_id, req.consumer_index), Instant::now());
            let response = v1::ClientHeartbeatResponse {
                locations,
                job_finished: finished,
                superseded: false,
            };
            return Ok(Round::ReplyDurable(response, Self::visible(core)));
        }
        Ok(Round::Wait)
    }

    /// Takes in the workers the client reports it cannot reach (the consumer's splits move off
    /// them); journaled only when the set changes.
    fn take_in_unreachable(
        &self,
        core: &mut Core,
        req: &v1::ClientHeartbeatRequest,
    ) -> Result<(), Status> {
        let workers: std::collections::BTreeSet<u64> = core
            .state
            .workers
            .values()
            .filter(|w| req.unreachable_workers.contains(&w.address))
            .map(|w| w.id)
            .collect();
        let current = core
            .state
            .jobs
            .get(&req.job_id)
            .and_then(|j| j.consumers.get(req.consumer_index as usize))
            .map(|c| &c.unreachable);
        if current.is_none_or(|c| *c == workers) {
            return Ok(());
        }
        if !workers.is_empty() {
            tracing::warn!(
                job = req.job_id,
                consumer = req.consumer_index,
                "the client cannot reach {:?}",
                req.unreachable_workers
            );
        }
        let command = Command::ConsumerUnreachable {
            job: req.job_id,
            consumer: req.consumer_index,
            generation: req.consumer_generation,
            workers,
        };
        self.execute(core, command)
            .map(drop)
            .map_err(rejection_status)
    }

    /// Takes in what the current consumer's heartbeat reports: examples delivered, its time
    /// waiting for data, its disks and its epoch reports (new ones become events).
    fn take_in_report(&self, core: &mut Core, req: &v1::ClientHeartbeatRequest) {
        // Only a heartbeat of the current consumer counts (a superseded or bogus one must not
        // keep a consumer looking alive).
        let consumer = (req.job_id, req.consumer_index);
        core.soft
            .delivered_examples
            .insert(consumer, req.delivered_examples);
        core.soft
            .input_wait
            .insert(consumer, InputWait::from_heartbeat(req));
        core.soft.consumer_seen.insert(consumer, Instant::now());
        core.soft.record_disks(
            &mut core.events,
            DiskOwner::Consumer(req.job_id, req.consumer_index),
            &req.disks,
        );
        let fresh = core
            .soft
            .record_epoch_reports(req.job_id, req.consumer_index, &req.reports);
        for r in &fresh {
            let kind = match (r.verified, r.exactly_once) {
                (false, _) => EventKind::EpochReport,
                (true, true) => EventKind::VerdictOk,
                (true, false) => EventKind::VerdictFailed,
            };
            let msg = format!(
                "job {} consumer {} epoch {}: {} examples, {:.0} images/s{}",
                req.job_id,
                req.consumer_index,
                r.epoch,
                r.examples,
                r.images_per_sec,
                if r.verdict.is_empty() {
                    String::new()
                } else {
                    format!(", {}", r.verdict)
                }
            );
            core.events.push(kind, msg, None, Some(req.job_id));
        }
        if !fresh.is_empty() {
            self.bump();
        }
    }

    /// Releases a consumer at its client's request; returns the sequence number it reveals.
    pub(crate) fn release(&self, req: &v1::ReleaseConsumerRequest) -> Result<u64, Status> {
        let mut core = self.lock();
        self.execute(
            &mut core,
            Command::ReleaseConsumer {
                job: req.job_id,
                consumer: req.consumer_index,
                generation: req.consumer_generation,
                timed_out: false,
            },
        )
        .map_err(rejection_status)?;
        Ok(Self::visible(&core))
    }
}

/// The leases a client says it knows, by (epoch, position).
pub fn known_leases(req: &v1::ClientHeartbeatRequest) -> HashMap<(u64, u32), u64> {
    req.known
        .iter()
        .map(|k| ((k.epoch, k.position), k.lease))
        .collect()
}
