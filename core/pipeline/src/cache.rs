//! The cache of a pipeline's deterministic prefix (Cachew's put / get): one chunk file per split
//! holding the prefix's output for every record of the split.
//!
//! # Layout
//! `<cache dir>/<prefix fingerprint, hex>/split-<split, 6 digits>.chunk`. The prefix fingerprint
//! ([`crate::Dataset::prefix_fingerprint`]) covers the files' contents, the split size and the ops
//! before the cache point, so any job with the same prefix over the same data reuses the chunks,
//! on one host or on a shared directory.
//!
//! # Chunk format (little-endian)
//! ```text
//! header  "CACHEWCH" | version u32 = 1 | flags u32 (bit 0: payloads are LZ4) | split u32
//!         | records u32 | prefix fingerprint [32] | crc32c of the preceding 56 bytes u32
//! frame   record id u64 | sha256 of the record payload [32] | payload length u32
//!         | crc32c of (record id | sha256 | length | payload) u32 | payload
//!         (one frame per record of the split, in record-id order)
//! footer  "CACHEWEN" | records u32 | crc32c over every frame's crc u32
//! ```
//! A payload is the prefix's named features:
//! ```text
//! count u32, then per feature: name length u16 | name | kind u8
//!   kind 0 bytes:  length u32 | bytes
//!   kind 1 tensor: dtype u8 | rank u8 | dims u32 x rank | length u32 | data
//!   kind 2 image:  height u32 | width u32 | channels u32 | length u32 | pixels (HWC uint8)
//! ```
//! # Commit and recovery rule
//! A chunk is written whole to a temporary file in the same directory, fsync'd, renamed over its
//! final name and the directory fsync'd: a reader sees a complete chunk or none. A write that
//! fails (a full disk, an I/O error, a failed fsync) removes what it wrote, the temporary file or
//! (if the directory fsync failed) the renamed chunk, and returns the error
//! ([`CacheError::is_disk_full`] tells a full disk): the split simply has no chunk. A crash leaves
//! at most a `*.tmp*` file, which is never read (and is removed by [`remove_temporaries`]). A
//! chunk that fails any check (magic, version, header or frame checksum, count, footer, a record
//! outside the split, a duplicate, an LZ4 size its block cannot produce) is reported as
//! [`CacheError::Corrupt`] with its path and offset; callers recompute such a split from the
//! source and write it again. Two writers of the
//! same split (a fenced worker and its successor) write identical bytes, so the last rename wins
//! harmlessly.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::exec::{Features, Value};
use crate::image::Image;
use crate::tensor::{DType, Tensor};

const MAGIC: &[u8; 8] = b"CACHEWCH";
const FOOTER_MAGIC: &[u8; 8] = b"CACHEWEN";
const VERSION: u32 = 1;
const FLAG_LZ4: u32 = 1;
const HEADER_LEN: usize = 60;
const FRAME_HEAD: usize = 8 + 32 + 4 + 4;
const FOOTER_LEN: usize = 16;

/// Errors of the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt cache chunk at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl CacheError {
    /// True if the error is the file system running out of space (ENOSPC) or quota (EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            CacheError::Io { source, .. } if matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        )
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Payload compression of written chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Lz4,
}

/// One cached record: its id, the hash of its source payload, and the prefix's output.
#[derive(Debug, Clone)]
pub struct CachedRecord {
    pub record_id: u64,
    pub record_sha256: [u8; 32],
    pub features: Features,
}

/// The directory of a prefix's chunks.
pub fn prefix_dir(cache_dir: &Path, prefix_fingerprint: &[u8; 32]) -> PathBuf {
    cache_dir.join(hex::encode(prefix_fingerprint))
}

/// The chunk file of `split`.
pub fn chunk_path(cache_dir: &Path, prefix_fingerprint: &[u8; 32], split: u32) -> PathBuf {
    prefix_dir(cache_dir, prefix_fingerprint).join(format!("split-{split:06}.chunk"))
}

/// Serializes features (images as HWC pixels).
pub fn encode_features(f: &Features) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(f.values.len() as u32).to_le_bytes());
    for (name, value) in &f.values {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        match value {
            Value::Bytes(b) => {
                out.push(0);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
            Value::Tensor(t) => {
                out.push(1);
                out.push(t.dtype.code() as u8);
                out.push(t.shape.len() as u8);
                for d in &t.shape {
                    out.extend_from_slice(&(*d as u32).to_le_bytes());
                }
                out.extend_from_slice(&(t.data.len() as u32).to_le_bytes());
                out.extend_from_slice(&t.data);
            }
            Value::Image(img) => {
                let t = img.to_tensor();
                out.push(2);
                for d in [img.height(), img.width(), img.channels()] {
                    out.extend_from_slice(&(d as u32).to_le_bytes());
                }
                out.extend_from_slice(&(t.data.len() as u32).to_le_bytes());
                out.extend_from_slice(&t.data);
            }
        }
    }
    out
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("needs {n} bytes at {}, has {}", self.at, self.buf.len()))?;
        let s = self.buf.get(self.at..end).ok_or("out of bounds")?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
        ]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

/// Parses serialized features; errors name what is wrong.
pub fn decode_features(payload: Bytes) -> Result<Features, String> {
    let mut r = Reader {
        buf: &payload,
        at: 0,
    };
    let count = r.u32()?;
    if count > 4096 {
        return Err(format!("{count} features"));
    }
    let mut values = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name_len = r.u16()? as usize;
        let name = std::str::from_utf8(r.take(name_len)?)
            .map_err(|_| "feature name is not UTF-8")?
            .to_string();
        let value = match r.u8()? {
            0 => {
                let len = r.u32()? as usize;
                let start = r.at;
                r.take(len)?;
                Value::Bytes(payload.slice(start..start + len))
            }
            1 => {
                let dtype = DType::from_code(u32::from(r.u8()?)).ok_or("unknown dtype")?;
                let rank = r.u8()? as usize;
                let shape = (0..rank)
                    .map(|_| r.u32().map(|d| d as usize))
                    .collect::<Result<Vec<_>, _>>()?;
                let len = r.u32()? as usize;
                let start = r.at;
                r.take(len)?;
                Value::Tensor(
                    Tensor::new(dtype, shape, payload.slice(start..start + len))
                        .map_err(|e| e.to_string())?,
                )
            }
            2 => {
                let (h, w, c) = (r.u32()? as usize, r.u32()? as usize, r.u32()? as usize);
                let len = r.u32()? as usize;
                let start = r.at;
                r.take(len)?;
                Value::Image(
                    Image::new(payload.slice(start..start + len), h, w, c)
                        .ok_or("image size does not match its pixels")?,
                )
            }
            k => return Err(format!("unknown feature kind {k}")),
        };
        values.push((name, value));
    }
    if r.at != payload.len() {
        return Err(format!("{} trailing bytes", payload.len() - r.at));
    }
    Ok(Features { values })
}

fn frame_crc(record_id: u64, sha: &[u8; 32], payload: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(&record_id.to_le_bytes());
    crc = crc32c::crc32c_append(crc, sha);
    crc = crc32c::crc32c_append(crc, &(payload.len() as u32).to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

/// Writes a split's chunk atomically (temporary file, fsync, rename, directory fsync). `records`
/// must hold every record of the split once; they are stored in record-id order.
pub fn write_chunk(
    cache_dir: &Path,
    prefix_fingerprint: &[u8; 32],
    split: u32,
    records: &mut [CachedRecord],
    compression: Compression,
) -> Result<PathBuf, CacheError> {
    records.sort_by_key(|r| r.record_id);
    let path = chunk_path(cache_dir, prefix_fingerprint, split);
    let dir = prefix_dir(cache_dir, prefix_fingerprint);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut out = Vec::with_capacity(HEADER_LEN + records.len() * 32 * 1024);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(
        &(if compression == Compression::Lz4 {
            FLAG_LZ4
        } else {
            0
        })
        .to_le_bytes(),
    );
    out.extend_from_slice(&split.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(prefix_fingerprint);
    let header_crc = crc32c::crc32c(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    let mut all = 0u32;
    for r in records.iter() {
        let raw = encode_features(&r.features);
        let payload = match compression {
            Compression::None => raw,
            Compression::Lz4 => lz4_flex::compress_prepend_size(&raw),
        };
        let crc = frame_crc(r.record_id, &r.record_sha256, &payload);
        all = crc32c::crc32c_append(all, &crc.to_le_bytes());
        out.extend_from_slice(&r.record_id.to_le_bytes());
        out.extend_from_slice(&r.record_sha256);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&payload);
    }
    out.extend_from_slice(FOOTER_MAGIC);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    out.extend_from_slice(&all.to_le_bytes());
    let tmp = dir.join(format!(
        "split-{split:06}.chunk.tmp-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(&out)?;
            f.sync_all()
        })
        .map_err(io(&tmp));
    if let Err(e) = written {
        // A full disk or a failed fsync: the temporary file is not a chunk; leave nothing.
        remove_quietly(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, &path) {
        remove_quietly(&tmp);
        return Err(io(&path)(e));
    }
    if let Err(e) = std::fs::File::open(&dir).and_then(|d| d.sync_all()) {
        // The name may not be durable: take the chunk back rather than serve one whose commit
        // did not complete (a later writer of the split writes it again).
        remove_quietly(&path);
        return Err(io(&dir)(e));
    }
    Ok(path)
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), "cannot remove a cache file that was not committed: {e}");
    }
}

/// Reads and checks a chunk. `Ok(None)` if the split has no committed chunk.
pub fn read_chunk(
    cache_dir: &Path,
    prefix_fingerprint: &[u8; 32],
    split: u32,
    expected: std::ops::Range<u64>,
) -> Result<Option<Vec<CachedRecord>>, CacheError> {
    let path = chunk_path(cache_dir, prefix_fingerprint, split);
    let bytes = match std::fs::read(&path) {
        Ok(b) => Bytes::from(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    parse_chunk(&path, bytes, prefix_fingerprint, split, expected).map(Some)
}

/// LZ4 expands its input at most this many times (each byte of a match length's extension
/// stands for 255 bytes of output).
const LZ4_MAX_RATIO: usize = 255;

/// Decompresses a payload written by `compress_prepend_size`: a u32 size, then the block. A
/// size that the block's bytes cannot produce is refused before anything is allocated for it
/// (the size prefix alone would otherwise decide the allocation: up to 4 GiB for any payload).
fn decompress_lz4(raw: &[u8]) -> Result<Vec<u8>, String> {
    let (size, block) = raw
        .split_first_chunk::<4>()
        .ok_or_else(|| format!("{} bytes, shorter than the 4-byte size", raw.len()))?;
    let declared = u32::from_le_bytes(*size) as usize;
    if declared > block.len().saturating_mul(LZ4_MAX_RATIO) {
        return Err(format!(
            "declares {declared} bytes, more than its {} compressed bytes can hold",
            block.len()
        ));
    }
    lz4_flex::decompress_size_prepended(raw).map_err(|e| e.to_string())
}

fn parse_chunk(
    path: &Path,
    bytes: Bytes,
    fingerprint: &[u8; 32],
    split: u32,
    expected: std::ops::Range<u64>,
) -> Result<Vec<CachedRecord>, CacheError> {
    let corrupt = |offset: usize, reason: String| CacheError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut r = Reader { buf: &bytes, at: 0 };
    let header = r
        .take(HEADER_LEN)
        .map_err(|e| corrupt(0, format!("truncated header: {e}")))?;
    let (body, crc) = header.split_at(HEADER_LEN - 4);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(crc);
    if body.get(..8) != Some(MAGIC.as_slice()) {
        return Err(corrupt(0, "not a cache chunk (bad magic)".into()));
    }
    if crc32c::crc32c(body) != u32::from_le_bytes(stored) {
        return Err(corrupt(0, "header checksum mismatch".into()));
    }
    let mut h = Reader { buf: body, at: 8 };
    let version = h.u32().map_err(|e| corrupt(8, e))?;
    let flags = h.u32().map_err(|e| corrupt(12, e))?;
    let chunk_split = h.u32().map_err(|e| corrupt(16, e))?;
    let count = h.u32().map_err(|e| corrupt(20, e))?;
    let fp = h.take(32).map_err(|e| corrupt(24, e))?;
    if version != VERSION {
        return Err(corrupt(
            8,
            format!("chunk version {version}, this build reads {VERSION}"),
        ));
    }
    if chunk_split != split || fp != fingerprint.as_slice() {
        return Err(corrupt(
            16,
            format!("chunk belongs to split {chunk_split} of another prefix or split"),
        ));
    }
    if u64::from(count) != expected.end - expected.start {
        return Err(corrupt(
            20,
            format!(
                "{count} records, the split has {}",
                expected.end - expected.start
            ),
        ));
    }
    let mut records = Vec::with_capacity(count as usize);
    let mut all = 0u32;
    for next_expected in expected.start..expected.start + u64::from(count) {
        let at = r.at;
        let head = r
            .take(FRAME_HEAD)
            .map_err(|e| corrupt(at, format!("truncated frame: {e}")))?;
        let mut f = Reader { buf: head, at: 0 };
        let record_id = f.u64().map_err(|e| corrupt(at, e))?;
        let mut sha = [0u8; 32];
        sha.copy_from_slice(f.take(32).map_err(|e| corrupt(at, e))?);
        let len = f.u32().map_err(|e| corrupt(at, e))? as usize;
        let crc = f.u32().map_err(|e| corrupt(at, e))?;
        let start = r.at;
        let payload = r
            .take(len)
            .map_err(|e| corrupt(at, format!("truncated payload: {e}")))?;
        if frame_crc(record_id, &sha, payload) != crc {
            return Err(corrupt(
                at,
                format!("frame of record {record_id}: checksum mismatch"),
            ));
        }
        if record_id != next_expected {
            return Err(corrupt(
                at,
                format!("record {record_id} where {next_expected} was due"),
            ));
        }
        all = crc32c::crc32c_append(all, &crc.to_le_bytes());
        let raw = bytes.slice(start..start + len);
        let raw =
            if flags & FLAG_LZ4 != 0 {
                Bytes::from(decompress_lz4(&raw).map_err(|e| {
                    corrupt(at, format!("record {record_id}: bad LZ4 payload: {e}"))
                })?)
            } else {
                raw
            };
        let features =
            decode_features(raw).map_err(|e| corrupt(at, format!("record {record_id}: {e}")))?;
        records.push(CachedRecord {
            record_id,
            record_sha256: sha,
            features,
        });
    }
    let at = r.at;
    let footer = r
        .take(FOOTER_LEN)
        .map_err(|e| corrupt(at, format!("truncated footer: {e}")))?;
    let mut f = Reader { buf: footer, at: 0 };
    let magic = f.take(8).map_err(|e| corrupt(at, e))?;
    let footer_count = f.u32().map_err(|e| corrupt(at, e))?;
    let footer_crc = f.u32().map_err(|e| corrupt(at, e))?;
    if magic != FOOTER_MAGIC.as_slice() || footer_count != count || footer_crc != all {
        return Err(corrupt(at, "footer does not match the frames".into()));
    }
    if r.at != bytes.len() {
        return Err(corrupt(r.at, "trailing bytes after the footer".into()));
    }
    Ok(records)
}

/// Removes temporary files left by writers that crashed (never committed, never read). A write
/// lasts milliseconds, so only files older than `older_than` are taken: on a shared directory a
/// live writer's file is never removed under it.
pub fn remove_temporaries(
    cache_dir: &Path,
    prefix_fingerprint: &[u8; 32],
    older_than: std::time::Duration,
) -> usize {
    let dir = prefix_dir(cache_dir, prefix_fingerprint);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".chunk.tmp-"))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= older_than)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// What a direct read of a prefix's cache found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheCheck {
    pub chunks: usize,
    pub missing_splits: Vec<u32>,
    pub corrupt: Vec<String>,
    /// Record ids found more than once, and ids of the dataset never found.
    pub duplicated: Vec<u64>,
    pub missing_records: Vec<u64>,
    /// Records whose stored source hash differs from the dataset's.
    pub wrong_source: Vec<u64>,
}

impl CacheCheck {
    pub fn is_complete_and_exact(&self) -> bool {
        self.missing_splits.is_empty()
            && self.corrupt.is_empty()
            && self.duplicated.is_empty()
            && self.missing_records.is_empty()
            && self.wrong_source.is_empty()
    }
}

/// Reads every chunk of a prefix directly and checks that each record of the dataset is there
/// exactly once, with its source hash.
pub fn check_cache(
    cache_dir: &Path,
    prefix_fingerprint: &[u8; 32],
    plan: &crate::SplitPlan,
    record_hashes: &[[u8; 32]],
) -> CacheCheck {
    let mut check = CacheCheck::default();
    let mut seen = vec![0u32; record_hashes.len()];
    for split in 0..plan.num_splits() {
        match read_chunk(
            cache_dir,
            prefix_fingerprint,
            split,
            plan.split_range(split),
        ) {
            Ok(None) => check.missing_splits.push(split),
            Ok(Some(records)) => {
                check.chunks += 1;
                for r in records {
                    match seen.get_mut(r.record_id as usize) {
                        Some(n) => *n += 1,
                        None => check.duplicated.push(r.record_id),
                    }
                    if record_hashes.get(r.record_id as usize) != Some(&r.record_sha256) {
                        check.wrong_source.push(r.record_id);
                    }
                }
            }
            Err(e) => check.corrupt.push(e.to_string()),
        }
    }
    for (id, n) in seen.iter().enumerate() {
        match n {
            0 => check.missing_records.push(id as u64),
            1 => {}
            _ => check.duplicated.push(id as u64),
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(split: u32, ids: std::ops::Range<u64>) -> Vec<CachedRecord> {
        ids.map(|id| {
            let img = Image::new(
                Bytes::from(
                    (0..4 * 5 * 3)
                        .map(|i| (i as u64 * 7 + id) as u8)
                        .collect::<Vec<_>>(),
                ),
                4,
                5,
                3,
            )
            .unwrap();
            CachedRecord {
                record_id: id,
                record_sha256: [id as u8 ^ split as u8; 32],
                features: Features {
                    values: vec![
                        ("image".into(), Value::Image(img)),
                        (
                            "label".into(),
                            Value::Tensor(Tensor::from_i64(&[id as i64], vec![])),
                        ),
                        ("raw".into(), Value::Bytes(Bytes::from_static(b"jpeg"))),
                    ],
                },
            }
        })
        .collect()
    }

    fn same(a: &[CachedRecord], b: &[CachedRecord]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.record_id == y.record_id
                    && x.record_sha256 == y.record_sha256
                    && encode_features(&x.features) == encode_features(&y.features)
            })
    }

    #[test]
    fn round_trip_with_and_without_compression() {
        let dir = tempfile::tempdir().unwrap();
        for (i, c) in [Compression::None, Compression::Lz4]
            .into_iter()
            .enumerate()
        {
            let fp = [i as u8; 32];
            let mut recs = records(3, 10..14);
            recs.reverse();
            write_chunk(dir.path(), &fp, 3, &mut recs, c).unwrap();
            let back = read_chunk(dir.path(), &fp, 3, 10..14).unwrap().unwrap();
            assert!(same(&back, &records(3, 10..14)));
            assert!(read_chunk(dir.path(), &fp, 4, 14..18).unwrap().is_none());
        }
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let fp = [9u8; 32];
        let path =
            write_chunk(dir.path(), &fp, 1, &mut records(1, 4..6), Compression::None).unwrap();
        let full = std::fs::read(&path).unwrap();
        for cut in 0..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            assert!(
                matches!(
                    read_chunk(dir.path(), &fp, 1, 4..6),
                    Err(CacheError::Corrupt { .. })
                ),
                "cut at {cut} accepted"
            );
        }
        for at in 0..full.len() {
            let mut bad = full.clone();
            bad[at] ^= 0x5a;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                matches!(
                    read_chunk(dir.path(), &fp, 1, 4..6),
                    Err(CacheError::Corrupt { .. })
                ),
                "flip at {at} accepted"
            );
        }
        // The wrong split or a wrong record range is refused too.
        std::fs::write(&path, &full).unwrap();
        assert!(read_chunk(dir.path(), &fp, 1, 4..7).is_err());
    }

    #[test]
    fn temporaries_are_never_read_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let fp = [1u8; 32];
        let pdir = prefix_dir(dir.path(), &fp);
        std::fs::create_dir_all(&pdir).unwrap();
        std::fs::write(pdir.join("split-000002.chunk.tmp-1-2"), b"half a chunk").unwrap();
        assert!(read_chunk(dir.path(), &fp, 2, 0..2).unwrap().is_none());
        // A fresh temporary may belong to a live writer: kept.
        let minute = std::time::Duration::from_secs(60);
        assert_eq!(remove_temporaries(dir.path(), &fp, minute), 0);
        assert_eq!(
            remove_temporaries(dir.path(), &fp, std::time::Duration::ZERO),
            1
        );
    }
}
