//! Worker checkpoints: the positions of the tasks this worker serves, written by a background
//! thread every `checkpoint_interval` to a [`cachew_store::CheckpointStore`] (fsync'd,
//! checksummed, the last two kept), so a worker restarted in place resumes its splits without
//! recomputing what its clients already have.
//!
//! # Payload format
//! One JSON object per checkpoint (the store frames and checksums it):
//! ```text
//! {"format":1,"address":"127.0.0.1:5051",
//!  "tasks":[{"job":1,"epoch":0,"position":4,"split":17,"lease":9,"seed":42,
//!            "dataset_id":"…","acked":37,"produced":64,"len":64,"cache_mode":"put"}, …]}
//! ```
//! `acked` is the client's fetch cursor as the worker last saw it: everything before it was
//! delivered, so recovery restarts computing there. Positions, not buffers: a checkpoint is a
//! few hundred bytes whatever the element size.
//!
//! # A full or failing disk
//! A checkpoint that cannot be written (no space, an I/O error, a failed fsync) is not counted
//! and the worker keeps serving; the store is dropped and opened again for the next attempt,
//! every interval, until one succeeds (logged once when it starts failing and once when it
//! works again, see [`crate::disk`]). The last checkpoint written before stays the one a
//! restart recovers: the same case as a crash between two checkpoints, only staler.
//!
//! # Recovery rule
//! A checkpoint written for another address is ignored (the dispatcher knows workers by address,
//! so its leases would be refused anyway). A payload that does not parse stops the worker with an
//! error: starting empty would silently throw away its progress.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cachew_proto::v1;
use cachew_store::CheckpointStore;
use serde::{Deserialize, Serialize};

use crate::WorkerError;
use crate::disk::DiskAlarm;
use crate::engine::{Engine, TaskKey, TaskSpec};
use crate::metrics::CheckpointMetrics;

const FORMAT: u32 = 1;

/// One task's position. The key is flattened, so the payload keeps its `job`, `epoch` and
/// `position` fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    #[serde(flatten)]
    pub key: TaskKey,
    pub split: u32,
    pub lease: u64,
    pub seed: u64,
    pub dataset_id: String,
    pub acked: u32,
    pub produced: u32,
    pub len: u32,
    /// "compute", "put" or "get".
    #[serde(default)]
    pub cache_mode: String,
}

impl TaskCheckpoint {
    /// The task to resume; an error if the checkpoint names a cache mode this worker does not
    /// know (then the task is not resumed here and the dispatcher moves it).
    pub fn spec(&self) -> Result<TaskSpec, String> {
        Ok(TaskSpec {
            key: self.key,
            lease: self.lease,
            split: self.split,
            seed: self.seed,
            dataset_id: self.dataset_id.clone(),
            start_index: self.acked,
            cache_mode: crate::cache::CacheMode::parse(&self.cache_mode)?,
        })
    }

    pub fn progress(&self) -> v1::TaskProgress {
        v1::TaskProgress {
            key: Some(self.key.into()),
            lease: self.lease,
            split: self.split,
            produced: self.produced,
            acked: self.acked,
            len: self.len,
            idle: false,
        }
    }
}

/// A whole checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCheckpoint {
    pub format: u32,
    pub address: String,
    pub tasks: Vec<TaskCheckpoint>,
}

/// What the checkpointer reports in heartbeats.
pub type SharedInfo = Arc<Mutex<Option<v1::CheckpointInfo>>>;

/// Opens the store and reads the newest checkpoint's tasks that belong to `address`.
pub fn open(
    dir: &Path,
    address: &str,
) -> Result<(CheckpointStore, Vec<TaskCheckpoint>), WorkerError> {
    let (store, newest) =
        CheckpointStore::open(dir).map_err(|e| WorkerError::Checkpoint(e.to_string()))?;
    let Some(cp) = newest else {
        return Ok((store, Vec::new()));
    };
    let parsed: WorkerCheckpoint = serde_json::from_slice(&cp.payload).map_err(|e| {
        WorkerError::Checkpoint(format!(
            "{}: checkpoint {} does not parse: {e}",
            dir.display(),
            cp.seq
        ))
    })?;
    if parsed.format != FORMAT {
        return Err(WorkerError::Checkpoint(format!(
            "{}: checkpoint format {} (this worker reads {FORMAT})",
            dir.display(),
            parsed.format
        )));
    }
    if parsed.address != address {
        tracing::warn!(
            "ignoring the checkpoint in {}: it was written by a worker at {}, this one is {address}",
            dir.display(),
            parsed.address
        );
        return Ok((store, Vec::new()));
    }
    tracing::info!(
        tasks = parsed.tasks.len(),
        seq = cp.seq,
        "loaded checkpoint"
    );
    Ok((store, parsed.tasks))
}

/// The tasks an engine holds, as checkpoint entries.
pub fn snapshot(engine: &Engine) -> Vec<TaskCheckpoint> {
    engine
        .snapshot()
        .into_iter()
        .map(|(spec, report)| TaskCheckpoint {
            key: spec.key,
            split: spec.split,
            lease: spec.lease,
            seed: spec.seed,
            dataset_id: spec.dataset_id,
            acked: report.acked,
            produced: report.produced,
            len: report.len,
            cache_mode: spec.cache_mode.name().to_string(),
        })
        .collect()
}

/// The background checkpoint thread; stops when dropped.
#[derive(Debug)]
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    alarm: Arc<DiskAlarm>,
}

impl Checkpointer {
    pub fn start(
        store: CheckpointStore,
        engine: Engine,
        address: String,
        interval: Duration,
        info: SharedInfo,
        metrics: CheckpointMetrics,
    ) -> std::io::Result<Checkpointer> {
        metrics.started();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let dir = store.dir().to_path_buf();
        let alarm = Arc::new(DiskAlarm::new(
            "checkpoint store",
            &dir,
            "keeps serving and tries to checkpoint again every interval",
        ));
        let shared_alarm = alarm.clone();
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                // None after a failed write: the store is opened again before the next one.
                let mut store = Some(store);
                let mut written = 0u64;
                let mut next = Instant::now() + interval;
                let mut last: Option<Vec<TaskCheckpoint>> = None;
                loop {
                    while Instant::now() < next {
                        if flag.load(Ordering::SeqCst) {
                            return;
                        }
                        std::thread::sleep(
                            Duration::from_millis(20)
                                .min(next.saturating_duration_since(Instant::now())),
                        );
                    }
                    next += interval;
                    let tasks = snapshot(&engine);
                    // Nothing moved: the stored checkpoint is still exact.
                    if last.as_ref() == Some(&tasks) {
                        continue;
                    }
                    let payload = WorkerCheckpoint {
                        format: FORMAT,
                        address: address.clone(),
                        tasks: tasks.clone(),
                    };
                    let Ok(bytes) = serde_json::to_vec(&payload) else {
                        continue;
                    };
                    let current = match store.as_mut() {
                        Some(current) => current,
                        None => match CheckpointStore::open(&dir) {
                            Ok((opened, _)) => store.insert(opened),
                            Err(e) => {
                                metrics.failed();
                                alarm.failed(&e, e.is_disk_full());
                                continue;
                            }
                        },
                    };
                    let started = Instant::now();
                    match current.write(&bytes) {
                        Ok(stats) => {
                            metrics.written(started.elapsed());
                            alarm.succeeded();
                            written += 1;
                            *info.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(v1::CheckpointInfo {
                                    count: written,
                                    last_unix_ms: stats.last_unix_ms,
                                    last_bytes: stats.last_bytes,
                                    last_duration_us: stats.last_duration_us,
                                });
                            last = Some(tasks);
                        }
                        Err(e) => {
                            // Not durable, or not known to be: never counted, and never
                            // written through this store again (see CheckpointStore::write).
                            metrics.failed();
                            alarm.failed(&e, e.is_disk_full());
                            store = None;
                        }
                    }
                }
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
            alarm: shared_alarm,
        })
    }

    /// Whether the checkpoint store takes writes (for heartbeats).
    pub fn alarm(&self) -> Arc<DiskAlarm> {
        self.alarm.clone()
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload of the module doc, byte for byte: checkpoints written before the task key
    /// became one type still load, and new ones are written the same way.
    #[test]
    fn the_payload_format_is_pinned() {
        let json = r#"{"format":1,"address":"127.0.0.1:5051","tasks":[{"job":1,"epoch":0,"position":4,"split":17,"lease":9,"seed":42,"dataset_id":"ab12","acked":37,"produced":64,"len":64,"cache_mode":"put"}]}"#;
        let checkpoint = WorkerCheckpoint {
            format: FORMAT,
            address: "127.0.0.1:5051".into(),
            tasks: vec![TaskCheckpoint {
                key: TaskKey {
                    job: 1,
                    epoch: 0,
                    position: 4,
                },
                split: 17,
                lease: 9,
                seed: 42,
                dataset_id: "ab12".into(),
                acked: 37,
                produced: 64,
                len: 64,
                cache_mode: "put".into(),
            }],
        };
        assert_eq!(serde_json::to_string(&checkpoint).unwrap(), json);
        assert_eq!(
            serde_json::from_str::<WorkerCheckpoint>(json).unwrap(),
            checkpoint
        );
        // Checkpoints from before cache modes have none.
        let older = json.replace(r#","cache_mode":"put""#, "");
        let parsed = serde_json::from_str::<WorkerCheckpoint>(&older).unwrap();
        assert_eq!(parsed.tasks[0].cache_mode, "");
        let spec = parsed.tasks[0].spec().unwrap();
        assert_eq!(spec.key, checkpoint.tasks[0].key);
        assert_eq!(spec.cache_mode, crate::cache::CacheMode::Compute);
        // A mode this worker does not know is not resumed as compute.
        let newer = json.replace(r#""cache_mode":"put""#, r#""cache_mode":"sideways""#);
        let parsed = serde_json::from_str::<WorkerCheckpoint>(&newer).unwrap();
        let why = parsed.tasks[0].spec().unwrap_err();
        assert!(why.contains("unknown cache mode \"sideways\""), "{why}");
    }
}
