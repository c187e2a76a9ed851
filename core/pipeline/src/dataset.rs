//! A dataset: the sorted list of source files with their record indexes, global record ids, and
//! random access to any record.
//!
//! A record's id is its position in the concatenation of the files in sorted path order, so ids
//! are stable for a given dataset and a split (a range of ids) may span two files.

use std::fs::File;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::data_root::DataRoot;
use crate::error::{PipelineError, Result};
use crate::spec::{ErrorPolicy, PipelineSpec};
use crate::tfrecord::{FileIndex, read_record_at};

/// An indexed dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    files: Vec<FileIndex>,
    /// `starts[i]` is the id of file i's first record; one extra entry holds the total.
    starts: Vec<u64>,
}

/// A canonical spec opened on this host: the spec, its files indexed, and the dataset id (the
/// hex of [`Dataset::fingerprint`]). The dispatcher registers a dataset under this id; a worker
/// opens the spec JSON the dispatcher sends the same way and must find the same id.
#[derive(Debug, Clone)]
pub struct OpenedSpec {
    pub spec: PipelineSpec,
    pub dataset: Dataset,
    pub id: String,
}

impl OpenedSpec {
    /// Parses canonical spec JSON ([`PipelineSpec::from_json`]), indexes the files it names
    /// ([`Dataset::for_spec`]) and computes the dataset id.
    pub fn from_json(spec_json: &str) -> Result<OpenedSpec> {
        OpenedSpec::from_json_under(spec_json, &DataRoot::anywhere())
    }

    /// [`OpenedSpec::from_json`], refusing a spec that names a file outside `root` before any
    /// file is opened.
    pub fn from_json_under(spec_json: &str, root: &DataRoot) -> Result<OpenedSpec> {
        let spec = PipelineSpec::from_json(spec_json)?;
        root.check_spec(&spec)?;
        let dataset = Dataset::for_spec(&spec)?;
        let id = hex::encode(dataset.fingerprint(&spec));
        Ok(OpenedSpec { spec, dataset, id })
    }
}

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLocation {
    pub file: usize,
    pub offset: u64,
}

impl Dataset {
    /// Indexes every file (headers only). Under `Skip`, damaged regions are counted and logged.
    pub fn open(paths: &[PathBuf], policy: ErrorPolicy) -> Result<Dataset> {
        let mut files = Vec::with_capacity(paths.len());
        let mut starts = Vec::with_capacity(paths.len() + 1);
        let mut total = 0u64;
        for path in paths {
            let index = FileIndex::build(path, policy)?;
            starts.push(total);
            total += index.len() as u64;
            files.push(index);
        }
        starts.push(total);
        Ok(Dataset { files, starts })
    }

    /// Opens the files a spec names.
    pub fn for_spec(spec: &PipelineSpec) -> Result<Dataset> {
        let paths: Vec<PathBuf> = spec.source.files.iter().map(PathBuf::from).collect();
        Dataset::open(&paths, spec.on_error)
    }

    pub fn num_records(&self) -> u64 {
        self.starts.last().copied().unwrap_or(0)
    }

    pub fn files(&self) -> &[FileIndex] {
        &self.files
    }

    /// Bytes skipped while indexing because of damaged framing (only under `Skip`).
    pub fn skipped_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.skipped_bytes).sum()
    }

    pub fn locate(&self, record_id: u64) -> Result<RecordLocation> {
        if record_id >= self.num_records() {
            return Err(PipelineError::NoSuchRecord {
                record_id,
                num_records: self.num_records(),
            });
        }
        // The last start <= record_id.
        let file = self.starts.partition_point(|&s| s <= record_id) - 1;
        let local = (record_id - self.starts[file]) as usize;
        let offset = self.files[file].offsets[local];
        Ok(RecordLocation { file, offset })
    }

    pub fn path(&self, file: usize) -> &Path {
        &self.files[file].path
    }

    /// Reads one record, verifying its checksums.
    pub fn read_record(&self, record_id: u64) -> Result<Bytes> {
        let loc = self.locate(record_id)?;
        let path = self.path(loc.file);
        let f = File::open(path).map_err(|e| PipelineError::io(path, e))?;
        read_record_at(&f, path, loc.offset).map(Bytes::from)
    }

    /// Reads several records, opening each file once. One result per id, in order.
    pub fn read_records(&self, ids: &[u64]) -> Vec<Result<Bytes>> {
        let mut open: Vec<(usize, File)> = Vec::new();
        ids.iter()
            .map(|&id| {
                let loc = self.locate(id)?;
                let path = self.path(loc.file);
                let file = match open.iter().position(|(i, _)| *i == loc.file) {
                    Some(at) => &open[at].1,
                    None => {
                        let f = File::open(path).map_err(|e| PipelineError::io(path, e))?;
                        open.push((loc.file, f));
                        &open[open.len() - 1].1
                    }
                };
                read_record_at(file, path, loc.offset).map(Bytes::from)
            })
            .collect()
    }

    /// SHA-256 of every record payload in id order (the reference for exactly-once checks).
    /// A record whose payload fails its checksum is an error.
    pub fn record_hashes(&self) -> Result<Vec<[u8; 32]>> {
        let mut out = Vec::with_capacity(self.num_records() as usize);
        for (file_no, index) in self.files.iter().enumerate() {
            let path = self.path(file_no);
            let f = File::open(path).map_err(|e| PipelineError::io(path, e))?;
            for &offset in &index.offsets {
                let payload = read_record_at(&f, path, offset)?;
                out.push(Sha256::digest(&payload).into());
            }
        }
        Ok(out)
    }

    /// The dataset id: SHA-256 of the canonical spec (without its seed and name, which do not
    /// change what a record becomes) and, per file, its name, size and content digest. The same
    /// spec over the same bytes has the same id wherever the files are mounted.
    pub fn fingerprint(&self, spec: &PipelineSpec) -> [u8; 32] {
        let mut canonical = spec.clone();
        canonical.seed = 0;
        canonical.name = None;
        canonical.source.files.clear();
        self.fingerprint_with(&canonical.to_canonical_json())
    }

    /// The cache key of a spec's deterministic prefix (the ops before its cache point): jobs with
    /// the same prefix over the same files share cached chunks.
    pub fn prefix_fingerprint(&self, spec: &PipelineSpec) -> [u8; 32] {
        let mut prefix = spec.clone();
        prefix.seed = 0;
        prefix.name = None;
        prefix.shuffle = true;
        prefix.outputs.clear();
        prefix.source.files.clear();
        if let Some(point) = spec.cache_point() {
            prefix.ops.truncate(point);
        }
        self.fingerprint_with(&prefix.to_canonical_json())
    }

    fn fingerprint_with(&self, canonical_spec: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"cachew-dataset/v1\n");
        h.update(canonical_spec.as_bytes());
        for f in &self.files {
            let name = f
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            h.update(b"\n");
            h.update(name.as_bytes());
            h.update(f.size.to_le_bytes());
            h.update((f.len() as u64).to_le_bytes());
            h.update(f.content_digest);
        }
        h.finalize().into()
    }
}
