//! The vocabulary of the worker's tasks, shared by the engine, the data service, the control
//! loop and checkpoints: [`TaskKey`], what the dispatcher assigned ([`TaskSpec`]), the progress
//! reported back ([`TaskReport`]), the engine's settings ([`EngineConfig`]) and what a fetch
//! returns or why it is refused ([`Fetched`], [`FetchError`], [`PipelineFailure`]). Plain data:
//! the engine (`engine.rs`) owns the behaviour.

use std::time::Duration;

use cachew_pipeline::Element;
use cachew_proto::v1;
use serde::{Deserialize, Serialize};

use crate::cache::CacheMode;

/// A task: one position of one epoch of one job. The one key of a task in this worker: the
/// engine's map, fetches, reports and checkpoints all use it, and it is built from the wire's
/// `v1::TaskKey` (and back) only through the `From` conversions below. Its JSON form (`job`,
/// `epoch`, `position`) is part of the checkpoint payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    pub job: u64,
    pub epoch: u64,
    pub position: u32,
}

impl From<v1::TaskKey> for TaskKey {
    fn from(k: v1::TaskKey) -> TaskKey {
        TaskKey {
            job: k.job_id,
            epoch: k.epoch,
            position: k.position,
        }
    }
}

impl From<TaskKey> for v1::TaskKey {
    fn from(k: TaskKey) -> v1::TaskKey {
        v1::TaskKey::new(k.job, k.epoch, k.position)
    }
}

/// What the dispatcher assigned.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub key: TaskKey,
    pub lease: u64,
    pub split: u32,
    pub seed: u64,
    pub dataset_id: String,
    pub start_index: u32,
    pub cache_mode: CacheMode,
}

impl TaskSpec {
    /// The task a dispatcher's definition assigns; an error for a definition without a key or
    /// with a cache mode this worker does not know (a newer dispatcher's).
    pub fn from_def(def: v1::TaskDef) -> Result<TaskSpec, String> {
        let key = def.key.ok_or("task definition without a key")?;
        Ok(TaskSpec {
            key: key.into(),
            lease: def.lease,
            split: def.split,
            seed: def.seed,
            start_index: def.start_index,
            cache_mode: CacheMode::from_wire(def.cache_mode)?,
            dataset_id: def.dataset_id,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    pub threads: usize,
    pub max_tasks: usize,
    /// Elements a task may hold past the client's fetch cursor.
    pub ahead: u32,
    /// Elements per unit of compute work.
    pub chunk: u32,
    /// How long a task with a full buffer goes unfetched before it gives its slot back.
    pub idle_after: Duration,
    /// Elements computed per second at most, over every compute thread (0: no limit). Makes
    /// one worker as fast as a smaller machine: sharing a host fairly, or emulating a fleet of
    /// separate machines on one host (the autoscaler's scenarios and benchmark).
    pub max_elements_per_sec: u32,
}

/// Paces the compute threads to [`EngineConfig::max_elements_per_sec`]: each computed chunk
/// books its elements' time slots, and the thread sleeps until its booking ends.
#[derive(Debug)]
pub struct Pacer {
    interval: Option<Duration>,
    next: std::sync::Mutex<std::time::Instant>,
}

impl Pacer {
    pub fn new(max_per_sec: u32) -> Pacer {
        Pacer {
            interval: (max_per_sec > 0).then(|| Duration::from_secs(1) / max_per_sec),
            next: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    /// How long the caller, who just computed `n` elements, must wait (blocking callers sleep).
    pub fn book(&self, n: u64) -> Duration {
        let Some(interval) = self.interval else {
            return Duration::ZERO;
        };
        let now = std::time::Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        // Idle time is not saved up: a burst after a pause is paced too.
        let start = (*next).max(now);
        let due = start + interval * u32::try_from(n).unwrap_or(u32::MAX);
        *next = due;
        due - now
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_tasks: 4,
            ahead: 128,
            chunk: 8,
            idle_after: Duration::from_secs(1),
            max_elements_per_sec: 0,
        }
    }
}

/// Progress of one task, as reported to the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskReport {
    pub key: TaskKey,
    pub lease: u64,
    pub split: u32,
    pub produced: u32,
    pub acked: u32,
    pub len: u32,
    /// Full and unread for a while: it does not count against the worker's slots.
    pub idle: bool,
}

/// Why a fetch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("this worker does not serve {0:?}")]
    UnknownTask(TaskKey),
    #[error("stale lease {asked} for {key:?}: this worker holds lease {held}")]
    WrongLease { key: TaskKey, asked: u64, held: u64 },
    #[error("index {from} is past the end of the split ({len} elements)")]
    BadIndex { from: u32, len: u32 },
    #[error("pipeline failed: {0}")]
    Pipeline(PipelineFailure),
}

/// A record that failed the pipeline under `on_error = "fail"`: every worker computing the split
/// fails the same way, so it ends the job rather than being retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PipelineFailure {
    pub record_id: Option<u64>,
    pub reason: String,
}

/// The result of a fetch.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub elements: Vec<Element>,
    pub end_of_split: bool,
    pub len: u32,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pacer_books_each_element_a_slot() {
        use std::time::Duration;
        let unlimited = super::Pacer::new(0);
        assert_eq!(unlimited.book(1000), Duration::ZERO);
        let pacer = super::Pacer::new(1000);
        let first = pacer.book(100);
        assert!(
            first <= Duration::from_millis(100) && first > Duration::from_millis(90),
            "{first:?}"
        );
        // The next chunk waits for the first one's slots too.
        let second = pacer.book(50);
        assert!(
            second > Duration::from_millis(140) && second <= Duration::from_millis(150),
            "{second:?}"
        );
    }
    use super::*;

    #[test]
    fn a_task_definition_gives_its_spec_and_key() {
        let def = v1::TaskDef {
            key: Some(v1::TaskKey::new(3, 7, 11)),
            lease: 9,
            split: 5,
            dataset_id: "ab12".into(),
            seed: 42,
            start_index: 4,
            cache_mode: v1::CacheMode::Put.into(),
        };
        let spec = TaskSpec::from_def(def.clone()).expect("a keyed definition");
        let key = TaskKey {
            job: 3,
            epoch: 7,
            position: 11,
        };
        assert_eq!(spec.key, key);
        assert_eq!(
            (spec.lease, spec.split, spec.seed, spec.start_index),
            (9, 5, 42, 4)
        );
        assert_eq!(spec.dataset_id, "ab12");
        assert_eq!(spec.cache_mode, CacheMode::Put);
        assert_eq!(v1::TaskKey::from(key), v1::TaskKey::new(3, 7, 11));
        let keyless = v1::TaskDef {
            key: None,
            ..def.clone()
        };
        assert!(TaskSpec::from_def(keyless).is_err());
        // A task is never AUTO, and a mode this worker does not know is refused, not computed.
        let refusal = |mode: i32| {
            let def = v1::TaskDef {
                cache_mode: mode,
                ..def.clone()
            };
            TaskSpec::from_def(def).expect_err("refused")
        };
        assert!(refusal(v1::CacheMode::Auto.into()).contains("never auto"));
        assert!(refusal(v1::CacheMode::Unspecified.into()).contains("has no cache mode"));
        assert!(refusal(99).contains("cache mode 99 is unknown"));
    }
}
