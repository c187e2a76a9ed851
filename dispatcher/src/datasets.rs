//! Dataset indexing: turns a pipeline spec into the [`DatasetEntry`] a job is created over (its
//! id is the hex of `Dataset::fingerprint`). Indexing reads every input file, so it runs on a
//! blocking thread, outside the service's lock, once per canonical spec while that spec stays
//! among the [`INDEX_KEPT`] most recently used (a dispatcher that runs for months sees specs come
//! and go: the least recently used one is forgotten, and indexed again if it comes back).
//! A spec naming a file outside the dispatcher's data root (`--data-root`) is refused before any
//! file is opened; only specs that passed are indexed, and the root never changes while the
//! process runs. At most [`INDEXING_AT_ONCE`] specs are indexed at a time: a burst of requests
//! naming new specs waits for a turn instead of taking a blocking thread each (up to tokio's
//! 512), and a spec indexed while its request waited is not indexed again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How many specs' indexes are kept.
pub const INDEX_KEPT: usize = 256;

/// How many specs are indexed at once (each reads every header of its files on a thread).
pub const INDEXING_AT_ONCE: usize = 2;

/// What is kept per canonical spec: (dataset id, records, last use).
type Indexed = HashMap<String, (String, u64, u64)>;

use cachew_pipeline::{DataRoot, OpenedSpec, PipelineError, PipelineSpec};
use tonic::Status;

/// The status of a spec that cannot be indexed: `InvalidArgument` (the spec, a file outside the
/// root, a missing, unreadable or corrupt file: asking again will not help), or `Unavailable`
/// for an I/O error that may clear up (a file system not answering), which clients retry.
fn refusal(e: PipelineError) -> Status {
    use std::io::ErrorKind::{NotFound, PermissionDenied};
    match &e {
        PipelineError::Io { source, .. }
            if !matches!(source.kind(), NotFound | PermissionDenied) =>
        {
            Status::unavailable(e.to_string())
        }
        _ => Status::invalid_argument(e.to_string()),
    }
}

use crate::state::DatasetEntry;

/// The datasets already indexed: canonical spec -> (id, records), the [`INDEX_KEPT`] most
/// recently used.
#[derive(Debug)]
pub struct DatasetIndex {
    indexed: Mutex<(Indexed, u64)>,
    root: DataRoot,
    /// Turns to index ([`INDEXING_AT_ONCE`]). A turn is held by the indexing thread itself, so
    /// a request cancelled meanwhile (its client gone) does not free it early.
    turns: Arc<tokio::sync::Semaphore>,
    /// Indexings running now, and the most ever run at once.
    running: Arc<Running>,
}

#[derive(Debug, Default)]
struct Running {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Default for DatasetIndex {
    fn default() -> Self {
        DatasetIndex::new(DataRoot::anywhere())
    }
}

impl DatasetIndex {
    /// An index reading files only under `root`.
    pub fn new(root: DataRoot) -> DatasetIndex {
        DatasetIndex {
            indexed: Mutex::default(),
            root,
            turns: Arc::new(tokio::sync::Semaphore::new(INDEXING_AT_ONCE)),
            running: Arc::default(),
        }
    }

    /// The most indexings that ever ran at once (at most [`INDEXING_AT_ONCE`]).
    #[cfg(test)]
    fn peak_indexing(&self) -> usize {
        self.running.peak.load(Ordering::Relaxed)
    }

    /// `InvalidArgument` naming the first file of the spec outside the data root (on a blocking
    /// thread: every file's path is resolved).
    pub async fn check_root(&self, spec_json: &str) -> Result<(), Status> {
        let (json, root) = (spec_json.to_string(), self.root.clone());
        tokio::task::spawn_blocking(move || {
            let spec = PipelineSpec::from_json(&json)?;
            root.check_spec(&spec)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(refusal)
    }

    /// Indexes the dataset of a canonical spec (once per spec, the files checked against the
    /// data root first) and returns its entry.
    pub async fn entry(&self, spec_json: &str) -> Result<DatasetEntry, Status> {
        if let Some(entry) = self.known_entry(spec_json)? {
            return Ok(entry);
        }
        let turn = self
            .turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        // Another request may have indexed the spec while this one waited for its turn.
        if let Some(entry) = self.known_entry(spec_json)? {
            return Ok(entry);
        }
        let entry = self.index(spec_json, turn).await?;
        self.remember(spec_json, &entry.id, entry.num_records);
        Ok(entry)
    }

    /// The entry of a spec already indexed.
    fn known_entry(&self, spec_json: &str) -> Result<Option<DatasetEntry>, Status> {
        if let Some((id, records)) = self.known(spec_json) {
            let spec = PipelineSpec::from_json(spec_json)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            return Ok(Some(DatasetEntry {
                id,
                spec_json: spec_json.to_string(),
                num_records: records,
                split_records: spec.source.split_records,
                shuffle: spec.shuffle,
            }));
        }
        Ok(None)
    }

    /// Indexes a spec's files on a blocking thread, which holds `turn` until it is done.
    async fn index(
        &self,
        spec_json: &str,
        turn: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<DatasetEntry, Status> {
        let json = spec_json.to_string();
        let root = self.root.clone();
        let running = self.running.clone();
        let entry = tokio::task::spawn_blocking(move || -> Result<DatasetEntry, PipelineError> {
            let _turn = turn;
            let now = running.now.fetch_add(1, Ordering::Relaxed) + 1;
            running.peak.fetch_max(now, Ordering::Relaxed);
            let opened = OpenedSpec::from_json_under(&json, &root);
            running.now.fetch_sub(1, Ordering::Relaxed);
            let opened = opened?;
            Ok(DatasetEntry {
                id: opened.id,
                spec_json: json,
                num_records: opened.dataset.num_records(),
                split_records: opened.spec.source.split_records,
                shuffle: opened.spec.shuffle,
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(refusal)?;
        Ok(entry)
    }

    /// How many specs are indexed.
    pub fn count(&self) -> usize {
        self.lock().0.len()
    }

    fn known(&self, spec_json: &str) -> Option<(String, u64)> {
        let mut guard = self.lock();
        let (map, clock) = &mut *guard;
        *clock += 1;
        let (id, records, used) = map.get_mut(spec_json)?;
        *used = *clock;
        Some((id.clone(), *records))
    }

    /// Keeps a spec's index, forgetting the least recently used beyond [`INDEX_KEPT`].
    fn remember(&self, spec_json: &str, id: &str, records: u64) {
        let mut guard = self.lock();
        let (map, clock) = &mut *guard;
        *clock += 1;
        map.insert(spec_json.to_string(), (id.to_string(), records, *clock));
        while map.len() > INDEX_KEPT {
            let oldest = map
                .iter()
                .min_by_key(|(_, (_, _, used))| *used)
                .map(|(spec, _)| spec.clone());
            match oldest {
                Some(spec) => map.remove(&spec),
                None => break,
            };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Indexed, u64)> {
        self.indexed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_spec_is_forgotten_beyond_the_limit() {
        let index = DatasetIndex::default();
        for i in 0..INDEX_KEPT {
            index.remember(&format!("spec {i}"), &format!("id {i}"), i as u64);
        }
        // Spec 0 is used again, so spec 1 is now the least recently used.
        assert_eq!(index.known("spec 0"), Some(("id 0".into(), 0)));
        index.remember("spec new", "id new", 7);
        assert_eq!(index.count(), INDEX_KEPT);
        assert_eq!(index.known("spec 1"), None);
        assert_eq!(index.known("spec 0"), Some(("id 0".into(), 0)));
        assert_eq!(index.known("spec new"), Some(("id new".into(), 7)));
        for i in 0..3 * INDEX_KEPT {
            index.remember(&format!("more {i}"), "x", 1);
        }
        assert_eq!(index.count(), INDEX_KEPT);
    }

    fn spec_naming(file: &std::path::Path) -> String {
        serde_json::json!({
            "outputs": ["label"],
            "source": { "files": [file.display().to_string()], "split_records": 4 },
            "ops": [{ "op": "parse_example",
                      "features": [{ "key": "label", "dtype": "int64" }] }],
        })
        .to_string()
    }

    #[tokio::test]
    async fn a_spec_naming_a_file_outside_the_root_is_refused_before_it_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let index = DatasetIndex::new(DataRoot::new(&[&root]).unwrap());
        for outside in [
            std::path::PathBuf::from("/etc/passwd"),
            root.join("../elsewhere.tfrecord"),
        ] {
            let json = spec_naming(&outside);
            let status = index.entry(&json).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(
                status.message().contains(&outside.display().to_string())
                    && status.message().contains("source.files[0]"),
                "{status:?}"
            );
            // `GetDataset` for a dataset registered before the root changed checks it too.
            assert!(index.check_root(&json).await.is_err());
        }
        assert_eq!(index.count(), 0, "nothing was indexed");
        // A missing file under the root: refused (asking again will not help), naming it.
        let missing = root.join("missing.tfrecord");
        let status = index.entry(&spec_naming(&missing)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(&missing.display().to_string()),
            "{status:?}"
        );
        // Under the root, the check passes.
        let inside = root.join("a.tfrecord");
        std::fs::write(&inside, b"").unwrap();
        index.check_root(&spec_naming(&inside)).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_of_specs_is_indexed_a_few_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.tfrecord");
        let mut bytes = Vec::new();
        for i in 0..2000u32 {
            bytes.extend(cachew_pipeline::tfrecord::frame_record(&i.to_le_bytes()));
        }
        std::fs::write(&file, &bytes).unwrap();
        let index = std::sync::Arc::new(DatasetIndex::new(DataRoot::new(&[dir.path()]).unwrap()));
        // 24 distinct specs (another split size each) and 8 requests for one more.
        let specs: Vec<String> = (0..24)
            .map(|i| {
                let mut v: serde_json::Value = serde_json::from_str(&spec_naming(&file)).unwrap();
                v["source"]["split_records"] = serde_json::json!(5 + i);
                v.to_string()
            })
            .chain(std::iter::repeat_n(spec_naming(&file), 8))
            .collect();
        let requests: Vec<_> = specs
            .into_iter()
            .map(|json| {
                let index = index.clone();
                tokio::spawn(async move { index.entry(&json).await })
            })
            .collect();
        for r in requests {
            assert_eq!(r.await.unwrap().unwrap().num_records, 2000);
        }
        assert!(index.peak_indexing() >= 1);
        assert!(
            index.peak_indexing() <= INDEXING_AT_ONCE,
            "{} at once",
            index.peak_indexing()
        );
        assert_eq!(index.count(), 25, "each spec indexed and kept");
    }
}
