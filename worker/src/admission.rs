//! Tasks the dispatcher assigned that the engine does not run yet: their dataset is being
//! prepared (indexed, which can take a while), or this worker refused it for good (a spec naming
//! a file outside its `--data-root`, files that differ from the dispatcher's, a pipeline it cannot
//! build).
//!
//! Both count as held in the heartbeat, so the dispatcher does not answer every heartbeat at once
//! with the same assignment (a tight loop for as long as a preparation takes, or forever for a
//! refusal). A refused task answers its client's fetch with the refusal, a deterministic failure:
//! the trainer ends with the reason instead of waiting for a split no one will serve.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::task::{TaskKey, TaskReport, TaskSpec};

#[derive(Debug, Clone)]
struct Entry {
    lease: u64,
    split: u32,
    start_index: u32,
    /// `None` while preparing.
    refusal: Option<String>,
}

/// The registry of admitted tasks the engine does not run (see the module comment).
#[derive(Debug, Default)]
pub struct Admissions(Mutex<HashMap<TaskKey, Entry>>);

impl Admissions {
    fn lock(&self) -> MutexGuard<'_, HashMap<TaskKey, Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts preparing `spec`'s task; false if it is already being prepared or was refused
    /// under this lease or a newer one.
    pub fn begin(&self, spec: &TaskSpec) -> bool {
        let mut map = self.lock();
        if map.get(&spec.key).is_some_and(|e| e.lease >= spec.lease) {
            return false;
        }
        map.insert(
            spec.key,
            Entry {
                lease: spec.lease,
                split: spec.split,
                start_index: spec.start_index,
                refusal: None,
            },
        );
        true
    }

    /// Whether the task is still being prepared under `lease` (not dropped or replaced
    /// meanwhile).
    pub fn is_preparing(&self, key: &TaskKey, lease: u64) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|e| e.lease == lease && e.refusal.is_none())
    }

    /// The task is running in the engine, or was given up: it leaves the registry.
    pub fn finish(&self, key: &TaskKey, lease: u64) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|e| e.lease == lease) {
            map.remove(key);
        }
    }

    /// This worker will never run the task under `lease`: its client's fetches get `reason`.
    pub fn refuse(&self, key: &TaskKey, lease: u64, reason: String) {
        if let Some(e) = self.lock().get_mut(key).filter(|e| e.lease == lease) {
            e.refusal = Some(reason);
        }
    }

    /// Why the task under `lease` was refused, if it was.
    pub fn refusal(&self, key: &TaskKey, lease: u64) -> Option<String> {
        self.lock()
            .get(key)
            .filter(|e| e.lease == lease)
            .and_then(|e| e.refusal.clone())
    }

    /// The dispatcher dropped the task (or this worker registered anew): forget it, whatever
    /// its lease.
    pub fn forget(&self, key: &TaskKey, lease: u64) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|e| e.lease <= lease) {
            map.remove(key);
        }
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many slots these tasks take: one each. A task being prepared will take its slot in
    /// the engine; a refused one keeps its slot until the dispatcher drops it, so a worker that
    /// refuses a job's tasks is not handed all the others meanwhile.
    pub fn slots(&self) -> usize {
        self.lock().len()
    }

    /// The heartbeat's reports of these tasks (nothing computed yet).
    pub fn reports(&self) -> Vec<TaskReport> {
        self.lock()
            .iter()
            .map(|(key, e)| TaskReport {
                key: *key,
                lease: e.lease,
                split: e.split,
                produced: e.start_index,
                acked: e.start_index,
                len: 0,
                idle: false,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheMode;

    fn spec(position: u32, lease: u64) -> TaskSpec {
        TaskSpec {
            key: TaskKey {
                job: 1,
                epoch: 0,
                position,
            },
            lease,
            split: position,
            seed: 7,
            dataset_id: "d".into(),
            start_index: 3,
            cache_mode: CacheMode::Compute,
        }
    }

    #[test]
    fn a_task_is_admitted_once_per_lease_and_reported_until_it_runs() {
        let a = Admissions::default();
        let s = spec(0, 5);
        assert!(a.begin(&s));
        assert!(!a.begin(&s), "the same lease is not prepared twice");
        assert!(!a.begin(&spec(0, 4)), "nor an older one");
        assert!(a.is_preparing(&s.key, 5));
        assert_eq!(a.slots(), 1);
        let reports = a.reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(
            (reports[0].lease, reports[0].acked, reports[0].len),
            (5, 3, 0)
        );
        a.finish(&s.key, 5);
        assert!(!a.is_preparing(&s.key, 5));
        assert_eq!(a.slots(), 0);
    }

    #[test]
    fn a_refusal_answers_its_lease_only_and_goes_with_a_drop() {
        let a = Admissions::default();
        let s = spec(1, 9);
        assert!(a.begin(&s));
        a.refuse(&s.key, 9, "outside the data root".into());
        assert_eq!(
            a.refusal(&s.key, 9).as_deref(),
            Some("outside the data root")
        );
        assert_eq!(a.refusal(&s.key, 8), None);
        assert!(!a.is_preparing(&s.key, 9));
        assert_eq!(a.slots(), 1, "a refused task keeps its slot");
        assert_eq!(a.reports().len(), 1, "and is still held");
        assert!(!a.begin(&s), "and is not prepared again under its lease");
        // A newer lease (the dispatcher moved the task back here) is prepared anew.
        assert!(a.begin(&spec(1, 10)));
        assert_eq!(a.refusal(&s.key, 10), None);
        a.forget(&s.key, 10);
        assert!(a.reports().is_empty());
        // A drop under an older lease leaves a newer admission alone.
        assert!(a.begin(&spec(1, 11)));
        a.forget(&s.key, 10);
        assert_eq!(a.reports().len(), 1);
        a.clear();
        assert!(a.reports().is_empty());
    }
}
