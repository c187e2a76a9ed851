//! The `WatchStatus` snapshot: the durable state, the soft facts and the event log, turned into
//! one `v1::ClusterStatus`. Pure: it reads what it is given (including `now`, for heartbeat
//! ages) and changes nothing.

use std::collections::BTreeMap;
use std::time::Instant;

use cachew_proto::v1;

use crate::config::DispatcherConfig;
use crate::events::{EventLog, unix_ms};
use crate::soft::{DiskOwner, Soft};
use crate::state::{Job, State, WorkerEntry, WorkerLife};

/// Everything a status snapshot is made of.
#[derive(Debug)]
pub struct StatusView<'a> {
    pub state: &'a State,
    pub soft: &'a Soft,
    pub events: &'a EventLog,
    pub config: &'a DispatcherConfig,
    pub started_unix_ms: u64,
    pub journal: v1::JournalStatus,
}

impl StatusView<'_> {
    /// The cluster status at `now`, with the events numbered after `events_after`.
    pub fn snapshot(self, events_after: u64, now: Instant) -> v1::ClusterStatus {
        let workers = self
            .state
            .workers
            .values()
            .map(|w| self.worker(w, now))
            .collect();
        let mut assignments = Vec::new();
        let jobs = self
            .state
            .jobs
            .values()
            .map(|j| {
                assignments.extend(self.assignments(j));
                self.job(j)
            })
            .collect();
        v1::ClusterStatus {
            unix_ms: unix_ms(),
            dispatcher_address: self.config.address.clone(),
            dispatcher_start_unix_ms: self.started_unix_ms,
            workers,
            jobs,
            assignments,
            events: self.events.after(events_after),
            journal: Some(self.journal),
            worker_timeout_ms: self.config.worker_timeout.as_millis() as u64,
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
            control_address: self.config.control_address.clone(),
            autoscale: Some(autoscale(&self.config.autoscale, self.state)),
        }
    }

    fn worker(&self, w: &WorkerEntry, now: Instant) -> v1::WorkerStatus {
        let (state, soft) = (self.state, self.soft);
        let age = soft
            .last_seen
            .get(&w.id)
            .map_or(0, |t| now.duration_since(*t).as_millis() as u64);
        let name = soft.worker_state(w);
        let tasks = state
            .assignments_of(w.id)
            .into_iter()
            .map(|(j, e, p, a)| {
                let r = soft.progress.get(&(j, e, p)).filter(|r| r.lease == a.lease);
                v1::TaskProgress {
                    key: Some(v1::TaskKey::new(j, e, p)),
                    lease: a.lease,
                    split: a.split,
                    produced: r.map_or(0, |r| r.produced),
                    acked: r.map_or(a.start_index, |r| r.acked),
                    len: r.map_or(0, |r| r.len),
                    idle: r.is_some_and(|r| r.idle),
                }
            })
            .collect();
        v1::WorkerStatus {
            worker_id: w.id,
            address: w.address.clone(),
            state: name.into(),
            heartbeat_age_ms: if w.life.heartbeats() { age } else { 0 },
            standby: w.standby,
            incarnation: w.incarnation,
            tasks,
            checkpoint: soft.checkpoint.get(&w.id).copied(),
            threads: w.threads,
            elements_produced: soft.produced.get(&w.id).copied().unwrap_or(0),
            disks: soft
                .disks
                .get(&DiskOwner::Worker(w.id))
                .cloned()
                .unwrap_or_default(),
        }
    }

    fn assignments(&self, j: &Job) -> Vec<v1::AssignmentStatus> {
        j.assignments
            .iter()
            .map(|(&(e, p), a)| {
                let r = self
                    .soft
                    .progress
                    .get(&(j.id, e, p))
                    .filter(|r| r.lease == a.lease);
                v1::AssignmentStatus {
                    job_id: j.id,
                    epoch: e,
                    position: p,
                    split: a.split,
                    worker_id: a.worker,
                    lease: a.lease,
                    produced: r.map_or(0, |r| r.produced),
                    acked: r.map_or(a.start_index, |r| r.acked),
                    len: r.map_or(0, |r| r.len),
                }
            })
            .collect()
    }

    fn job(&self, j: &Job) -> v1::JobStatus {
        let soft = self.soft;
        v1::JobStatus {
            cache: Some(self.cache(j)),
            job_id: j.id,
            name: j.name.clone(),
            dataset_id: j.dataset_id.clone(),
            seed: j.seed,
            num_epochs: j.num_epochs,
            num_splits: j.num_splits,
            num_records: self
                .state
                .datasets
                .get(&j.dataset_id)
                .map_or(0, |d| d.num_records),
            consumers: j
                .consumers
                .iter()
                .map(|c| (c, soft.input_wait.get(&(j.id, c.index)).copied()))
                .map(|(c, wait)| v1::ConsumerStatus {
                    index: c.index,
                    generation: c.generation,
                    attached: c.attached,
                    cursor: Some(v1::Cursor::from(j.normalize(c.index, c.cursor))),
                    delivered_examples: soft
                        .delivered_examples
                        .get(&(j.id, c.index))
                        .copied()
                        .unwrap_or(0),
                    reports: soft
                        .reports
                        .get(&(j.id, c.index))
                        .map(|m| m.values().cloned().collect())
                        .unwrap_or_default(),
                    disks: soft
                        .disks
                        .get(&DiskOwner::Consumer(j.id, c.index))
                        .cloned()
                        .unwrap_or_default(),
                    wait_seconds_total: wait.map_or(0.0, |w| w.seconds_total),
                    input_wait_ratio: wait.map_or(0.0, |w| w.ratio),
                })
                .collect(),
            epochs: epochs(j),
            finished: j.finished,
        }
    }

    fn cache(&self, j: &Job) -> v1::CacheStatus {
        let soft = self.soft.cache.get(&j.id);
        let per = |us: u64, n: u64| if n == 0 { 0.0 } else { us as f64 / n as f64 };
        v1::CacheStatus {
            policy: j.cache_policy.to_wire().into(),
            decision: j
                .cache_decision
                .map_or(v1::CacheMode::Unspecified, |d| {
                    if d.get {
                        v1::CacheMode::Get
                    } else {
                        v1::CacheMode::Compute
                    }
                })
                .into(),
            compute_us_per_element: j.cache_decision.map_or_else(
                || soft.map_or(0.0, |c| per(c.prefix_us, c.prefix_count)),
                |d| d.compute_ns_per_element as f64 / 1000.0,
            ),
            read_us_per_element: j.cache_decision.map_or_else(
                || soft.map_or(0.0, |c| per(c.read_us, c.read_count)),
                |d| d.read_ns_per_element as f64 / 1000.0,
            ),
            committed_splits: soft.map_or(0, |c| c.committed.len() as u32),
            total_splits: j.num_splits,
            repaired: soft.map_or(0, |c| c.repaired),
        }
    }
}

/// The epochs in flight: from the one before the slowest consumer's to the fastest's.
fn epochs(j: &Job) -> Vec<v1::EpochStatus> {
    let mut epochs: BTreeMap<u64, v1::EpochStatus> = BTreeMap::new();
    let horizon = j
        .consumers
        .iter()
        .map(|c| j.normalize(c.index, c.cursor).epoch)
        .max()
        .unwrap_or(0);
    let first = j
        .consumers
        .iter()
        .map(|c| j.normalize(c.index, c.cursor).epoch)
        .min()
        .unwrap_or(0);
    let last_epoch = if j.num_epochs > 0 {
        horizon.min(j.num_epochs - 1)
    } else {
        horizon
    };
    for e in first.saturating_sub(1)..=last_epoch {
        let delivered = (0..j.num_splits).filter(|&p| j.is_delivered(e, p)).count() as u32;
        let assigned = j.assignments.keys().filter(|(ae, _)| *ae == e).count() as u32;
        epochs.insert(
            e,
            v1::EpochStatus {
                epoch: e,
                splits_total: j.num_splits,
                splits_delivered: delivered,
                splits_assigned: assigned,
            },
        );
    }
    epochs.into_values().collect()
}

/// The status stream's `autoscale`.
pub(crate) fn autoscale(config: &crate::config::AutoscaleConfig, state: &State) -> v1::Autoscale {
    let draining = state
        .workers
        .values()
        .filter(|w| w.life == WorkerLife::Draining)
        .count() as u32;
    v1::Autoscale {
        enabled: config.enabled,
        target: state.scale.wanted().unwrap_or(0),
        pinned: state.scale.pinned,
        active: state.active_workers() as u32,
        draining,
        min_workers: config.policy.min_workers,
        max_workers: config.policy.max_workers,
        last_decision: state.scale.last_decision.clone(),
        actuator: if config.scale_command.is_some() {
            "command".into()
        } else {
            String::new()
        },
    }
}
