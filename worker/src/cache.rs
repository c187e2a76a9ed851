//! The worker's side of Cachew caching: per task, serving the prefix's output from the split's
//! cache chunk (`get`), or collecting it while computing and committing the chunk (`put`).
//!
//! A `put` task started in the middle of its split (after a failover or recovery) still writes the
//! whole chunk: once its own positions are computed, it computes the prefix of the records before
//! its start too, so the cache ends with every record of the split exactly once whichever worker
//! wrote it. A crash before the commit leaves only a temporary file, which is never read. A `get`
//! task whose chunk is missing or fails its checks warns, computes from the source, and writes the
//! chunk again (a repair).
//!
//! A chunk that cannot be written (a full or failing cache disk) is dropped: the task has computed
//! and delivered its elements anyway, so the worker computes instead of caching, with identical
//! bytes, and a later `get` of that split computes and tries to write it again. The condition is
//! logged once when it starts and once when writes succeed again ([`crate::disk`]).
//!
//! Measurements for `auto` (prefix time per record from the source, read time per record from the
//! cache) and committed splits are accumulated per job and sent with heartbeats.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachew_pipeline::cache::{CachedRecord, Compression, read_chunk, write_chunk};
use cachew_pipeline::exec::{Features, PrefixCache};
use cachew_proto::names::Name;
use cachew_proto::v1;
use sha2::{Digest, Sha256};

use crate::disk::DiskAlarm;
use crate::metrics::CacheMetrics;
use crate::prepared::Prepared;

/// The size of a chunk file just read or written (for the byte counters; 0 if it vanished).
fn chunk_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Where the cache lives for this worker.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub dir: PathBuf,
    pub compression: Compression,
}

/// How a task uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    Compute,
    Put,
    Get,
}

impl CacheMode {
    /// The mode of a task definition's raw wire value. A task is never AUTO (the dispatcher
    /// decides), and a value this worker does not know is an error, never a silent compute.
    pub fn from_wire(raw: i32) -> Result<CacheMode, String> {
        match v1::CacheMode::try_from(raw) {
            Ok(v1::CacheMode::Compute) => Ok(CacheMode::Compute),
            Ok(v1::CacheMode::Put) => Ok(CacheMode::Put),
            Ok(v1::CacheMode::Get) => Ok(CacheMode::Get),
            Ok(v1::CacheMode::Auto) => {
                Err("a task's cache mode is compute, put or get, never auto".into())
            }
            Ok(v1::CacheMode::Unspecified) => {
                Err("the task has no cache mode (is the dispatcher older than this worker?)".into())
            }
            Err(_) => Err(format!(
                "the task's cache mode {raw} is unknown (is the dispatcher newer than this worker?)"
            )),
        }
    }

    pub fn to_wire(self) -> v1::CacheMode {
        match self {
            CacheMode::Compute => v1::CacheMode::Compute,
            CacheMode::Put => v1::CacheMode::Put,
            CacheMode::Get => v1::CacheMode::Get,
        }
    }

    /// Its name in the protocol's vocabulary ("compute", "put", "get").
    pub fn name(self) -> &'static str {
        self.to_wire().name()
    }

    /// The mode of a name written by [`CacheMode::name`] (none, in a checkpoint written before
    /// tasks had cache modes, is compute); anything else is an error.
    pub fn parse(name: &str) -> Result<CacheMode, String> {
        if name.is_empty() {
            return Ok(CacheMode::Compute);
        }
        let mode = v1::CacheMode::parse(name).map_err(|e| e.to_string())?;
        CacheMode::from_wire(mode.into())
    }
}

/// Per-job measurements and commits, drained into heartbeats; and whether the cache disk takes
/// writes (shared by every task of the worker).
#[derive(Debug, Default)]
pub struct CacheReports {
    by_job: Mutex<HashMap<u64, v1::CacheReport>>,
    disk: std::sync::OnceLock<DiskAlarm>,
    metrics: CacheMetrics,
}

impl CacheReports {
    /// Reports that also count into `metrics` (hits, misses, bytes, repairs).
    pub fn new(metrics: CacheMetrics) -> CacheReports {
        CacheReports {
            metrics,
            ..CacheReports::default()
        }
    }

    /// The cache disk's condition (created with the first task's cache directory).
    pub fn disk(&self, dir: &std::path::Path) -> &DiskAlarm {
        self.disk
            .get_or_init(|| DiskAlarm::new("cache", dir, "computes instead of caching"))
    }

    /// The cache disk's condition while it does not take writes.
    pub fn disk_condition(&self) -> Option<v1::DiskCondition> {
        self.disk.get().and_then(DiskAlarm::condition)
    }

    fn with(&self, job: u64, f: impl FnOnce(&mut v1::CacheReport)) {
        let mut map = self.by_job.lock().unwrap_or_else(|p| p.into_inner());
        let r = map.entry(job).or_insert_with(|| v1::CacheReport {
            job_id: job,
            ..Default::default()
        });
        f(r);
    }

    /// Everything accumulated since the last call.
    pub fn take(&self) -> Vec<v1::CacheReport> {
        std::mem::take(&mut *self.by_job.lock().unwrap_or_else(|p| p.into_inner()))
            .into_values()
            .collect()
    }

    /// Puts back reports a failed heartbeat did not deliver.
    pub fn put_back(&self, reports: Vec<v1::CacheReport>) {
        for back in reports {
            self.with(back.job_id, |r| {
                r.prefix_us += back.prefix_us;
                r.prefix_count += back.prefix_count;
                r.read_us += back.read_us;
                r.read_count += back.read_count;
                r.committed.extend(back.committed);
                r.repaired += back.repaired;
            });
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// `get`: the chunk's records by id, once loaded.
    loaded: Option<HashMap<u64, ([u8; 32], Features)>>,
    load_attempted: bool,
    /// Collecting prefix outputs to write the chunk (`put`, or a `get` that repairs).
    collecting: bool,
    collected: HashMap<u64, CachedRecord>,
    committed: bool,
    /// Records the task will not compute for its client (before its start, or skipped when the
    /// client's cursor jumped ahead): their prefix is computed only for the chunk, once every
    /// position the task does compute is claimed.
    to_backfill: Vec<u64>,
}

/// The cache of one task's split.
#[derive(Debug)]
pub struct TaskCache {
    job: u64,
    split: u32,
    range: Range<u64>,
    mode: CacheMode,
    settings: CacheSettings,
    fingerprint: [u8; 32],
    prepared: Arc<Prepared>,
    reports: Arc<CacheReports>,
    state: Mutex<State>,
}

impl TaskCache {
    pub fn new(
        job: u64,
        split: u32,
        mode: CacheMode,
        settings: CacheSettings,
        prepared: Arc<Prepared>,
        reports: Arc<CacheReports>,
        before_start: Vec<u64>,
    ) -> TaskCache {
        let fingerprint = prepared
            .dataset
            .prefix_fingerprint(prepared.pipeline.spec());
        let range = prepared.plan.split_range(split);
        let path = cachew_pipeline::cache::chunk_path(&settings.dir, &fingerprint, split);
        // A put whose chunk is already committed (another job or worker wrote it) has nothing to do.
        let committed = mode == CacheMode::Put && path.is_file();
        if committed {
            // Confirm it again: the report of its writer may have died with the writer.
            reports.with(job, |r| r.committed.push(split));
        }
        TaskCache {
            job,
            split,
            range,
            mode,
            settings,
            fingerprint,
            prepared,
            reports,
            state: Mutex::new(State {
                collecting: mode == CacheMode::Put && !committed,
                committed,
                // Records at positions before the start were delivered before a failover or
                // recovery.
                to_backfill: before_start,
                ..State::default()
            }),
        }
    }

    /// Where the split's chunk file is.
    fn path(&self) -> PathBuf {
        cachew_pipeline::cache::chunk_path(&self.settings.dir, &self.fingerprint, self.split)
    }

    /// The prefix fingerprint the chunk is filed under.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the chunk for `get` (once); a missing or damaged chunk switches to repairing.
    fn ensure_loaded(&self, st: &mut State) {
        if st.load_attempted {
            return;
        }
        st.load_attempted = true;
        let started = Instant::now();
        match read_chunk(
            &self.settings.dir,
            &self.fingerprint,
            self.split,
            self.range.clone(),
        ) {
            Ok(Some(records)) => {
                let took = started.elapsed();
                let n = records.len() as u64;
                self.reports
                    .metrics
                    .read_bytes
                    .inc_by(chunk_size(&self.path()));
                self.reports.with(self.job, |r| {
                    r.read_us += took.as_micros() as u64;
                    r.read_count += n;
                    r.committed.push(self.split);
                });
                st.loaded = Some(
                    records
                        .into_iter()
                        .map(|r| (r.record_id, (r.record_sha256, r.features)))
                        .collect(),
                );
            }
            Ok(None) => {
                tracing::warn!(
                    split = self.split,
                    "cache chunk missing; computing the split from the source and writing it"
                );
                self.start_repair(st);
            }
            Err(e) => {
                tracing::warn!(
                    split = self.split,
                    "cache chunk damaged ({e}); computing the split from the source and writing it again"
                );
                self.start_repair(st);
            }
        }
    }

    /// The task will not compute these records (its client's cursor jumped past them): the
    /// chunk still needs them. A `get` that has not looked at its chunk yet keeps them too, in
    /// case the chunk turns out missing and must be written.
    pub fn skipped(&self, ids: &[u64]) {
        let mut st = self.lock();
        let may_repair = self.mode == CacheMode::Get && !st.load_attempted;
        if !st.committed && (st.collecting || may_repair) {
            st.to_backfill.extend_from_slice(ids);
        }
    }

    /// Stops collecting for good: the chunk cannot be complete.
    fn give_up(&self, st: &mut State, why: std::fmt::Arguments<'_>) {
        if st.collecting && !st.committed {
            tracing::warn!(split = self.split, "cannot cache the split: {why}");
        }
        st.collecting = false;
        st.collected = HashMap::new();
        st.to_backfill = Vec::new();
    }

    fn start_repair(&self, st: &mut State) {
        st.collecting = true;
        self.reports.metrics.repairs.inc();
        self.reports.with(self.job, |r| r.repaired += 1);
    }

    /// After a chunk of the task was computed: commits the split's cache chunk once every record
    /// is collected; when `all_claimed` (the task computed everything from its start on), first
    /// computes the prefix of the records before the start.
    pub fn after_chunk(&self, all_claimed: bool) {
        let missing: Vec<u64> = {
            let mut st = self.lock();
            if !st.collecting || st.committed {
                return;
            }
            let complete = st.collected.len() as u64 == self.range.end - self.range.start;
            // Positions from the start on come through `computed` (some may still be in flight
            // on other threads); only the records before the start need computing here, once.
            if complete || !all_claimed {
                Vec::new()
            } else {
                let pending = std::mem::take(&mut st.to_backfill);
                pending
                    .into_iter()
                    .filter(|id| !st.collected.contains_key(id))
                    .collect()
            }
        };
        // Records before a resumed task's start: compute their prefix (not delivered).
        let payloads = self.prepared.dataset.read_records(&missing);
        for (id, payload) in missing.iter().zip(payloads) {
            let started = Instant::now();
            let result = payload.and_then(|p| {
                let sha: [u8; 32] = Sha256::digest(&p).into();
                self.prepared.pipeline.run_prefix(*id, p).map(|f| (sha, f))
            });
            match result {
                Ok((sha, features)) => self.computed(*id, sha, &features, started.elapsed()),
                Err(e) => {
                    self.give_up(&mut self.lock(), format_args!("record {id}: {e}"));
                    return;
                }
            }
        }
        let mut records: Vec<CachedRecord> = {
            let mut st = self.lock();
            if st.committed || st.collected.len() as u64 != self.range.end - self.range.start {
                return;
            }
            st.committed = true;
            st.collected.drain().map(|(_, r)| r).collect()
        };
        match write_chunk(
            &self.settings.dir,
            &self.fingerprint,
            self.split,
            &mut records,
            self.settings.compression,
        ) {
            Ok(path) => {
                self.reports.metrics.written_bytes.inc_by(chunk_size(&path));
                self.reports.disk(&self.settings.dir).succeeded();
                self.reports
                    .with(self.job, |r| r.committed.push(self.split));
                // The read cost on this storage, for `auto`.
                let started = Instant::now();
                if let Ok(Some(back)) = read_chunk(
                    &self.settings.dir,
                    &self.fingerprint,
                    self.split,
                    self.range.clone(),
                ) {
                    let took = started.elapsed();
                    self.reports.metrics.read_bytes.inc_by(chunk_size(&path));
                    self.reports.with(self.job, |r| {
                        r.read_us += took.as_micros() as u64;
                        r.read_count += back.len() as u64;
                    });
                }
                tracing::debug!(split = self.split, "cache chunk committed");
            }
            // Nothing of the chunk was committed (write_chunk leaves no file behind): the split
            // was computed and delivered all the same, and a later `get` computes it again.
            Err(e) => {
                tracing::debug!(split = self.split, "cannot write the cache chunk: {e}");
                self.reports
                    .disk(&self.settings.dir)
                    .failed(&e, e.is_disk_full());
            }
        }
    }

    pub fn mode(&self) -> CacheMode {
        self.mode
    }
}

impl PrefixCache for TaskCache {
    fn cached(&self, record_id: u64) -> Option<([u8; 32], Features)> {
        if self.mode != CacheMode::Get {
            return None;
        }
        let mut st = self.lock();
        self.ensure_loaded(&mut st);
        let hit = st.loaded.as_ref().and_then(|l| l.get(&record_id).cloned());
        match hit {
            Some(_) => self.reports.metrics.hits.inc(),
            None => self.reports.metrics.misses.inc(),
        }
        hit
    }

    fn computed(
        &self,
        record_id: u64,
        record_sha256: [u8; 32],
        features: &Features,
        took: Duration,
    ) {
        self.reports.with(self.job, |r| {
            r.prefix_us += took.as_micros() as u64;
            r.prefix_count += 1;
        });
        let mut st = self.lock();
        if st.collecting && !st.committed {
            st.collected.insert(
                record_id,
                CachedRecord {
                    record_id,
                    record_sha256,
                    features: features.clone(),
                },
            );
        }
    }

    fn lost(&self, record_id: u64, error: &cachew_pipeline::PipelineError) {
        self.give_up(
            &mut self.lock(),
            format_args!("record {record_id}: {error}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepared::tf_sample_prepared;

    const SPLIT: u32 = 4;

    fn task_cache(mode: CacheMode, dir: &std::path::Path) -> TaskCache {
        TaskCache::new(
            1,
            SPLIT,
            mode,
            CacheSettings {
                dir: dir.to_path_buf(),
                compression: Compression::None,
            },
            tf_sample_prepared(),
            Arc::new(CacheReports::default()),
            Vec::new(),
        )
    }

    /// What a compute thread does for a record the chunk did not serve.
    fn compute(cache: &TaskCache, id: u64) {
        assert!(
            cache.cached(id).is_none(),
            "record {id} served from the cache"
        );
        let payload = cache
            .prepared
            .dataset
            .read_records(&[id])
            .remove(0)
            .unwrap();
        let sha: [u8; 32] = Sha256::digest(&payload).into();
        let features = cache.prepared.pipeline.run_prefix(id, payload).unwrap();
        cache.computed(id, sha, &features, Duration::ZERO);
    }

    fn chunk_ids(cache: &TaskCache) -> Option<Vec<u64>> {
        read_chunk(
            &cache.settings.dir,
            &cache.fingerprint,
            cache.split,
            cache.range.clone(),
        )
        .unwrap()
        .map(|records| {
            let mut ids: Vec<u64> = records.iter().map(|r| r.record_id).collect();
            ids.sort_unstable();
            ids
        })
    }

    /// A `get` whose client jumps ahead before the task first looks at its (missing) chunk still
    /// writes a whole chunk: the records jumped over are computed for it.
    #[test]
    fn a_get_repair_backfills_what_was_skipped_before_the_chunk_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = task_cache(CacheMode::Get, dir.path());
        let ids: Vec<u64> = cache.range.clone().collect();
        let (jumped, computed) = ids.split_at(ids.len() / 2);
        cache.skipped(jumped);
        for &id in computed {
            compute(&cache, id);
        }
        cache.after_chunk(true);
        assert_eq!(chunk_ids(&cache), Some(ids));
    }

    /// A record whose prefix cannot be computed ends the put: what was collected is let go at
    /// once, and no chunk is written without it.
    #[test]
    fn a_lost_record_ends_the_put_and_frees_what_it_collected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = task_cache(CacheMode::Put, dir.path());
        let ids: Vec<u64> = cache.range.clone().collect();
        for &id in &ids[..3] {
            compute(&cache, id);
        }
        assert_eq!(cache.lock().collected.len(), 3);
        let error = cachew_pipeline::PipelineError::NoSuchRecord {
            record_id: ids[3],
            num_records: 0,
        };
        cache.lost(ids[3], &error);
        assert!(cache.lock().collected.is_empty());
        for &id in &ids[4..] {
            compute(&cache, id);
        }
        cache.after_chunk(true);
        assert!(cache.lock().collected.is_empty());
        assert_eq!(chunk_ids(&cache), None);
    }

    use crate::test_tmpfs as tmpfs;

    /// A put on a full cache disk computes every record as usual (what the client gets does
    /// not depend on the cache), commits no chunk, and reports the disk; once space is back, a
    /// `get` of the split finds no chunk, computes the same prefix outputs and writes it.
    #[test]
    fn a_full_cache_disk_computes_instead_of_caching_and_writes_again_once_freed() {
        let fs = tmpfs::Tmpfs::mount(16 * 1024);
        let put = task_cache(CacheMode::Put, fs.path());
        let ids: Vec<u64> = put.range.clone().collect();
        fs.fill();
        for &id in &ids {
            compute(&put, id);
        }
        put.after_chunk(true);
        assert_eq!(chunk_ids(&put), None, "no chunk on a full disk");
        assert!(
            put.reports.disk(fs.path()).is_failing(),
            "the condition is reported"
        );
        assert!(
            put.reports
                .take()
                .iter()
                .all(|r| !r.committed.contains(&SPLIT)),
            "the split is not reported as cached"
        );

        fs.free();
        let get = TaskCache::new(
            1,
            SPLIT,
            CacheMode::Get,
            put.settings.clone(),
            put.prepared.clone(),
            put.reports.clone(),
            Vec::new(),
        );
        for &id in &ids {
            compute(&get, id);
        }
        get.after_chunk(true);
        assert_eq!(chunk_ids(&get), Some(ids.clone()));
        assert!(
            !get.reports.disk(fs.path()).is_failing(),
            "the condition ended"
        );
        // What the cache now serves is exactly what was computed.
        let served = TaskCache::new(
            1,
            SPLIT,
            CacheMode::Get,
            put.settings.clone(),
            put.prepared.clone(),
            put.reports.clone(),
            Vec::new(),
        );
        for &id in &ids {
            let payload = put.prepared.dataset.read_records(&[id]).remove(0).unwrap();
            let features = put.prepared.pipeline.run_prefix(id, payload).unwrap();
            let (_, cached) = served.cached(id).expect("served from the chunk");
            assert_eq!(
                cachew_pipeline::cache::encode_features(&cached),
                cachew_pipeline::cache::encode_features(&features),
                "record {id}"
            );
        }
    }
}
