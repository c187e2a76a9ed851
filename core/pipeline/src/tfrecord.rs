//! TFRecord files: reading with both checksums verified, writing, and a per-file index of record
//! offsets for random access.
//!
//! # Format (as written by TensorFlow's `TFRecordWriter`, uncompressed)
//! A file is a sequence of records, each:
//! ```text
//! u64 LE  length of the payload
//! u32 LE  masked CRC32C of the 8 length bytes
//! [u8]    payload (`length` bytes; a serialized tf.train.Example for our datasets)
//! u32 LE  masked CRC32C of the payload
//! ```
//! The mask is `((crc >> 15) | (crc << 17)) + 0xa282ead8` (wrapping), as in TensorFlow.
//!
//! # Recovery rules
//! - A header whose length checksum does not match is corrupt: the reader reports the file and the
//!   byte offset. Under [`ErrorPolicy::Skip`] the index scan resynchronises at the next offset that
//!   starts a record whose two checksums both verify, and counts the skipped bytes. The work of
//!   resyncing is bounded per file ([`ResyncWork`], over all its bad regions): each region is
//!   read once, and at most [`RESYNC_MAX_CANDIDATES`] false headers and
//!   [`RESYNC_MAX_VERIFY_BYTES`] of their payloads are verified in the whole file; past either
//!   budget the rest of the file is counted skipped. A file of many bad regions so costs at most
//!   its own length plus that budget, not the budget once per region.
//! - A payload whose checksum does not match is reported (or skipped) when the record is read; the
//!   record keeps its id, so ids never shift because of content corruption.
//! - A file that ends inside a record is truncated: the error names the offset of that record.
//!   Under `Skip` the complete records before it are kept and the tail is counted.
//!
//! This module never panics on file content: every length is checked against the file size
//! before anything is allocated or read.

#![deny(clippy::indexing_slicing)]

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{PipelineError, Result};
use crate::spec::ErrorPolicy;

/// Bytes of framing before the payload: length and its checksum.
pub const HEADER_LEN: u64 = 12;
/// Bytes of framing after the payload: its checksum.
pub const FOOTER_LEN: u64 = 4;
pub use crate::limits::MAX_RECORD_LEN;
use crate::limits::{RESYNC_CHUNK_BYTES, RESYNC_MAX_CANDIDATES, RESYNC_MAX_VERIFY_BYTES};

const MASK_DELTA: u32 = 0xa282_ead8;

/// TensorFlow's masked CRC32C.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    (crc.rotate_right(15)).wrapping_add(MASK_DELTA)
}

/// Writes TFRecord files.
#[derive(Debug)]
pub struct TfRecordWriter<W: Write> {
    out: W,
}

impl<W: Write> TfRecordWriter<W> {
    pub fn new(out: W) -> Self {
        TfRecordWriter { out }
    }

    /// Appends one record.
    pub fn write_record(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let len = (payload.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc32c(&len).to_le_bytes())?;
        self.out.write_all(payload)?;
        self.out.write_all(&masked_crc32c(payload).to_le_bytes())?;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Frames one payload as a TFRecord (for tests and tools that build files in memory).
pub fn frame_record(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + (HEADER_LEN + FOOTER_LEN) as usize);
    let mut writer = TfRecordWriter::new(&mut out);
    // Writing to a Vec cannot fail.
    let _ = writer.write_record(payload);
    out
}

/// Decodes and checks a 12-byte header; returns the payload length.
fn parse_header(header: &[u8; 12]) -> std::result::Result<u64, String> {
    let (len_bytes, crc_bytes) = header.split_at(8);
    let len = u64::from_le_bytes(
        len_bytes
            .try_into()
            .map_err(|_| "short header".to_string())?,
    );
    let crc = u32::from_le_bytes(
        crc_bytes
            .try_into()
            .map_err(|_| "short header".to_string())?,
    );
    let expected = masked_crc32c(len_bytes);
    if crc != expected {
        return Err(format!(
            "length checksum mismatch (stored {crc:#010x}, computed {expected:#010x})"
        ));
    }
    if len > MAX_RECORD_LEN {
        return Err(format!(
            "record length {len} exceeds the limit of {MAX_RECORD_LEN} bytes"
        ));
    }
    Ok(len)
}

/// The offsets of every record of one TFRecord file, built once by scanning the headers.
#[derive(Debug, Clone)]
pub struct FileIndex {
    pub path: PathBuf,
    /// File size when the index was built.
    pub size: u64,
    /// Byte offset of each record's header, in file order.
    pub offsets: Vec<u64>,
    /// Bytes skipped because of corrupt headers or a truncated tail (only under `Skip`).
    pub skipped_bytes: u64,
    /// Number of places where the scan had to skip (only under `Skip`).
    pub skipped_regions: u64,
    /// SHA-256 over the stored payload checksums of every indexed record, in order: a content
    /// fingerprint of the file that costs no extra reads.
    pub content_digest: [u8; 32],
    /// What resynchronising after its bad regions cost (only under `Skip`).
    pub resync: ResyncWork,
}

impl FileIndex {
    /// Scans the headers of `path`. Checks each header's length checksum and that each record
    /// fits in the file; payload checksums are checked when records are read.
    pub fn build(path: &Path, policy: ErrorPolicy) -> Result<FileIndex> {
        let file = File::open(path).map_err(|e| PipelineError::io(path, e))?;
        let size = file
            .metadata()
            .map_err(|e| PipelineError::io(path, e))?
            .len();
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut offsets = Vec::new();
        let mut skipped_bytes = 0;
        let mut skipped_regions = 0;
        let mut resync_work = ResyncWork::default();
        let mut digest = Sha256::new();
        let mut offset = 0u64;
        while offset < size {
            let remaining = size - offset;
            let problem = if remaining < HEADER_LEN {
                Some(Problem::Truncated(format!(
                    "{remaining} bytes left, a header needs {HEADER_LEN}"
                )))
            } else {
                let mut header = [0u8; 12];
                reader
                    .read_exact(&mut header)
                    .map_err(|e| PipelineError::io(path, e))?;
                match parse_header(&header) {
                    Err(reason) => Some(Problem::Corrupt(reason)),
                    Ok(len) if len + HEADER_LEN + FOOTER_LEN > remaining => {
                        Some(Problem::Truncated(format!(
                            "record of {len} bytes needs {} bytes, file has {remaining} left",
                            len + HEADER_LEN + FOOTER_LEN
                        )))
                    }
                    Ok(len) => {
                        offsets.push(offset);
                        offset += len + HEADER_LEN + FOOTER_LEN;
                        reader
                            .seek_relative(len as i64)
                            .map_err(|e| PipelineError::io(path, e))?;
                        let mut footer = [0u8; 4];
                        reader
                            .read_exact(&mut footer)
                            .map_err(|e| PipelineError::io(path, e))?;
                        digest.update(footer);
                        None
                    }
                }
            };
            let Some(problem) = problem else { continue };
            if policy == ErrorPolicy::Fail {
                return Err(problem.into_error(path, offset));
            }
            tracing::warn!(
                path = %path.display(),
                offset,
                "skipping damaged region: {}",
                problem.reason()
            );
            skipped_regions += 1;
            let next = match problem {
                Problem::Truncated(_) => size,
                Problem::Corrupt(_) => {
                    resync(reader.get_ref(), path, offset + 1, size, &mut resync_work)?
                }
            };
            skipped_bytes += next - offset;
            offset = next;
            reader
                .seek(SeekFrom::Start(offset))
                .map_err(|e| PipelineError::io(path, e))?;
        }
        Ok(FileIndex {
            path: path.to_path_buf(),
            size,
            offsets,
            skipped_bytes,
            skipped_regions,
            content_digest: digest.finalize().into(),
            resync: resync_work,
        })
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
}

enum Problem {
    Corrupt(String),
    Truncated(String),
}

impl Problem {
    fn reason(&self) -> &str {
        match self {
            Problem::Corrupt(r) | Problem::Truncated(r) => r,
        }
    }

    fn into_error(self, path: &Path, offset: u64) -> PipelineError {
        match self {
            Problem::Corrupt(reason) => PipelineError::CorruptRecord {
                path: path.to_path_buf(),
                offset,
                reason,
            },
            Problem::Truncated(reason) => PipelineError::TruncatedRecord {
                path: path.to_path_buf(),
                offset,
                reason,
            },
        }
    }
}

/// What resynchronising cost in one file: bytes read by the header scans, false candidates (a
/// header checksum that verified, a payload that did not), and payload bytes read to verify
/// them. Bounded per file by the file's length plus [`crate::limits::RESYNC_MAX_VERIFY_BYTES`]
/// and [`crate::limits::RESYNC_MAX_CANDIDATES`]; the record a resync finds costs its own length,
/// once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResyncWork {
    pub scanned_bytes: u64,
    pub candidates: u32,
    pub verified_bytes: u64,
}

/// Finds the next offset at or after `from` where a record starts whose header and payload
/// checksums both verify; `size` if there is none, or if the file exhausts its budget of false
/// candidates or verified bytes (`work`, the file's resyncs so far; the rest of the file then
/// counts as skipped). The header scan reads the region once, [`RESYNC_CHUNK_BYTES`] at a time,
/// and checks every offset in memory.
fn resync(file: &File, path: &Path, from: u64, size: u64, work: &mut ResyncWork) -> Result<u64> {
    let mut chunk = Vec::new();
    let mut start = from;
    while start + HEADER_LEN + FOOTER_LEN <= size {
        // The chunk holds every header starting in [start, start + RESYNC_CHUNK_BYTES).
        let want = (size - start).min(RESYNC_CHUNK_BYTES as u64 + HEADER_LEN - 1);
        chunk.resize(want as usize, 0);
        file.read_exact_at(&mut chunk, start)
            .map_err(|e| PipelineError::io(path, e))?;
        work.scanned_bytes += want;
        for (at, window) in chunk.windows(HEADER_LEN as usize).enumerate() {
            let candidate = start + at as u64;
            let Ok(header) = <&[u8; 12]>::try_from(window) else {
                continue;
            };
            let Ok(len) = parse_header(header) else {
                continue;
            };
            if candidate + HEADER_LEN + len + FOOTER_LEN > size {
                continue;
            }
            if work.candidates >= RESYNC_MAX_CANDIDATES
                || work.verified_bytes + len + FOOTER_LEN > RESYNC_MAX_VERIFY_BYTES
            {
                tracing::warn!(
                    path = %path.display(),
                    from,
                    candidates = work.candidates,
                    verified_bytes = work.verified_bytes,
                    "the file's resync budget is exhausted: the rest of it is skipped"
                );
                return Ok(size);
            }
            if read_record_at(file, path, candidate).is_ok() {
                return Ok(candidate);
            }
            work.candidates += 1;
            work.verified_bytes += len + FOOTER_LEN;
        }
        start += RESYNC_CHUNK_BYTES as u64;
    }
    Ok(size)
}

/// Reads the record whose header starts at `offset`, verifying both checksums.
pub fn read_record_at(file: &File, path: &Path, offset: u64) -> Result<Vec<u8>> {
    let mut header = [0u8; 12];
    file.read_exact_at(&mut header, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            PipelineError::TruncatedRecord {
                path: path.to_path_buf(),
                offset,
                reason: "file ends inside the header".into(),
            }
        } else {
            PipelineError::io(path, e)
        }
    })?;
    let len = parse_header(&header).map_err(|reason| PipelineError::CorruptRecord {
        path: path.to_path_buf(),
        offset,
        reason,
    })?;
    let len_usize = usize::try_from(len).map_err(|_| PipelineError::CorruptRecord {
        path: path.to_path_buf(),
        offset,
        reason: format!("record length {len} does not fit in memory"),
    })?;
    let mut buf = vec![0u8; len_usize + FOOTER_LEN as usize];
    file.read_exact_at(&mut buf, offset + HEADER_LEN)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                PipelineError::TruncatedRecord {
                    path: path.to_path_buf(),
                    offset,
                    reason: format!("file ends inside a record of {len} bytes"),
                }
            } else {
                PipelineError::io(path, e)
            }
        })?;
    let crc_bytes: [u8; 4] = buf
        .get(len_usize..)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| PipelineError::CorruptRecord {
            path: path.to_path_buf(),
            offset,
            reason: "missing payload checksum".into(),
        })?;
    buf.truncate(len_usize);
    let stored = u32::from_le_bytes(crc_bytes);
    let computed = masked_crc32c(&buf);
    if stored != computed {
        return Err(PipelineError::CorruptRecord {
            path: path.to_path_buf(),
            offset,
            reason: format!(
                "payload checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        });
    }
    Ok(buf)
}

/// Reads every record of a file in order, verifying both checksums; stops at the first error.
pub fn read_all(path: &Path) -> Result<Vec<Vec<u8>>> {
    let index = FileIndex::build(path, ErrorPolicy::Fail)?;
    let file = File::open(path).map_err(|e| PipelineError::io(path, e))?;
    index
        .offsets
        .iter()
        .map(|&offset| read_record_at(&file, path, offset))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(dir: &Path, name: &str, payloads: &[&[u8]]) -> PathBuf {
        let path = dir.join(name);
        let mut w = TfRecordWriter::new(File::create(&path).unwrap());
        for p in payloads {
            w.write_record(p).unwrap();
        }
        w.into_inner().flush().unwrap();
        path
    }

    #[test]
    fn masked_crc_matches_tensorflow_reference_values() {
        // Known values: TensorFlow frames an empty payload with these checksums.
        let framed = frame_record(b"");
        assert_eq!(&framed[..8], &[0u8; 8]);
        assert_eq!(&framed[12..16], &masked_crc32c(b"").to_le_bytes());
        // crc32c("123456789") = 0xe3069283 (the standard check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(
            masked_crc32c(b"123456789"),
            0xe306_9283u32.rotate_right(15).wrapping_add(MASK_DELTA)
        );
    }

    #[test]
    fn round_trip_and_random_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "a", &[b"one", b"", b"three33"]);
        let index = FileIndex::build(&path, ErrorPolicy::Fail).unwrap();
        assert_eq!(index.offsets, vec![0, 19, 35]);
        let file = File::open(&path).unwrap();
        assert_eq!(read_record_at(&file, &path, 35).unwrap(), b"three33");
        assert_eq!(
            read_all(&path).unwrap(),
            vec![b"one".to_vec(), vec![], b"three33".to_vec()]
        );
    }

    #[test]
    fn flipped_payload_byte_names_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "a", &[b"first", b"second"]);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = 12 + 5 + 4;
        bytes[second + 12 + 2] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_all(&path).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("offset 21"),
            "{msg}"
        );
        assert!(matches!(
            err,
            PipelineError::CorruptRecord { offset: 21, .. }
        ));
        // The index still has both records: content corruption does not shift ids.
        let index = FileIndex::build(&path, ErrorPolicy::Fail).unwrap();
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn flipped_header_byte_fails_or_resyncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "a", &[b"first", b"second", b"third"]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[21 + 1] ^= 0x01; // length of the second record
        std::fs::write(&path, &bytes).unwrap();
        let err = FileIndex::build(&path, ErrorPolicy::Fail).unwrap_err();
        assert!(
            matches!(err, PipelineError::CorruptRecord { offset: 21, .. }),
            "{err}"
        );
        let index = FileIndex::build(&path, ErrorPolicy::Skip).unwrap();
        assert_eq!(index.offsets, vec![0, 21 + 22]);
        assert_eq!(index.skipped_regions, 1);
        assert_eq!(index.skipped_bytes, 22);
    }

    #[test]
    fn truncation_at_every_byte_is_reported_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "a", &[b"first", b"second"]);
        let full = std::fs::read(&path).unwrap();
        for cut in 0..full.len() {
            let p = dir.path().join(format!("cut{cut}"));
            std::fs::write(&p, &full[..cut]).unwrap();
            let complete = if cut >= 21 + 22 {
                2
            } else if cut >= 21 {
                1
            } else {
                0
            };
            let at_boundary = cut == 0 || cut == 21;
            match FileIndex::build(&p, ErrorPolicy::Fail) {
                Ok(index) => {
                    assert!(at_boundary, "cut {cut} accepted");
                    assert_eq!(index.len(), complete);
                }
                Err(PipelineError::TruncatedRecord { offset, .. }) => {
                    assert!(!at_boundary);
                    assert_eq!(offset, if cut < 21 { 0 } else { 21 });
                }
                Err(other) => panic!("cut {cut}: unexpected {other}"),
            }
            let skipped = FileIndex::build(&p, ErrorPolicy::Skip).unwrap();
            assert_eq!(skipped.len(), complete);
            assert_eq!(skipped.skipped_regions, u64::from(!at_boundary));
        }
    }

    #[test]
    fn huge_corrupt_length_is_not_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge");
        let len = (u64::MAX / 2).to_le_bytes();
        let mut bytes = len.to_vec();
        bytes.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        bytes.extend_from_slice(b"tiny");
        std::fs::write(&path, &bytes).unwrap();
        let err = FileIndex::build(&path, ErrorPolicy::Fail).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        let file = File::open(&path).unwrap();
        assert!(read_record_at(&file, &path, 0).is_err());
    }

    /// A crafted header at `at` whose length checksum verifies, claiming `len` bytes of payload
    /// whose checksum will not.
    fn false_header(bytes: &mut [u8], at: usize, len: u64) {
        let l = len.to_le_bytes();
        bytes[at..at + 8].copy_from_slice(&l);
        bytes[at + 8..at + 12].copy_from_slice(&masked_crc32c(&l).to_le_bytes());
    }

    #[test]
    fn a_long_garbage_region_is_scanned_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage");
        // 8 MiB of pseudo-random garbage, then two good records.
        let mut bytes = Vec::with_capacity(8 << 20);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        while bytes.len() < 8 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        let garbage = bytes.len() as u64;
        bytes.extend(frame_record(b"after one"));
        bytes.extend(frame_record(b"after two"));
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let mut work = ResyncWork::default();
        let next = resync(&file, &path, 1, bytes.len() as u64, &mut work).unwrap();
        assert_eq!(next, garbage);
        // Each byte of the region read about once (chunks overlap by a header), not once per
        // candidate offset.
        let chunks = garbage.div_ceil(RESYNC_CHUNK_BYTES as u64) + 1;
        assert!(
            work.scanned_bytes <= garbage + chunks * (RESYNC_CHUNK_BYTES as u64 + HEADER_LEN),
            "{work:?}"
        );
        assert!(work.scanned_bytes >= garbage - 1, "{work:?}");
        let index = FileIndex::build(&path, ErrorPolicy::Skip).unwrap();
        assert_eq!(index.offsets, vec![garbage, garbage + 25]);
        assert_eq!(index.skipped_bytes, garbage);
    }

    #[test]
    fn a_region_full_of_false_headers_stops_at_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crafted");
        // A false header every 16 bytes, each claiming 1 MiB whose checksum fails: verifying
        // them all would read 1 MiB per 16 bytes of region (quadratic in the region).
        let region = 2 * RESYNC_MAX_CANDIDATES as usize * 16;
        let mut bytes = vec![0u8; region + (2 << 20)];
        for at in (0..region).step_by(16) {
            false_header(&mut bytes, at, 1 << 20);
        }
        let size = bytes.len() as u64;
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let mut work = ResyncWork::default();
        let next = resync(&file, &path, 1, size, &mut work).unwrap();
        assert_eq!(next, size, "the rest of the file is given up");
        assert!(work.candidates <= RESYNC_MAX_CANDIDATES, "{work:?}");
        assert!(work.verified_bytes <= RESYNC_MAX_VERIFY_BYTES, "{work:?}");
        // Under the candidate budget: a few false headers, then a good record, is found.
        let mut bytes = vec![0u8; 64 * 16];
        for at in (0..bytes.len()).step_by(16) {
            false_header(&mut bytes, at, 8);
        }
        let good = bytes.len() as u64;
        bytes.extend(frame_record(b"found"));
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let mut work = ResyncWork::default();
        let next = resync(&file, &path, 1, bytes.len() as u64, &mut work).unwrap();
        assert_eq!(next, good);
        assert!(work.candidates >= 62 && work.candidates <= 65, "{work:?}");
    }

    #[test]
    fn many_bad_regions_share_one_budget_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("regions");
        // Regions of false headers (each claiming 1 MiB, so each costs a 1 MiB verify read),
        // each followed by a good record: per region, every one fits the budget; together they
        // would cost the budget many times over.
        let per_region = 64usize;
        let regions = 2 * (RESYNC_MAX_VERIFY_BYTES >> 20) as usize / per_region;
        let mut bytes = Vec::new();
        let mut payload_pad = vec![0u8; (1 << 20) + 64];
        for _ in 0..regions {
            // A zero header is corrupt (its checksum is not zero): the region starts there.
            let start = bytes.len() + 16;
            bytes.resize(start + per_region * 16, 0);
            for at in (start..bytes.len()).step_by(16) {
                false_header(&mut bytes, at, 1 << 20);
            }
            bytes.extend(frame_record(b"good"));
        }
        // The false headers' claimed payloads must fit in the file for them to be candidates.
        bytes.append(&mut payload_pad);
        std::fs::write(&path, &bytes).unwrap();
        let index = FileIndex::build(&path, ErrorPolicy::Skip).unwrap();
        assert!(
            index.resync.verified_bytes <= RESYNC_MAX_VERIFY_BYTES,
            "{:?}",
            index.resync
        );
        assert!(
            index.resync.candidates <= RESYNC_MAX_CANDIDATES,
            "{:?}",
            index.resync
        );
        // The budget ran out part way: the records of the early regions were found, the rest
        // of the file counted skipped.
        assert!(!index.offsets.is_empty(), "{index:?}");
        assert!(
            index.offsets.len() < regions,
            "{} of {regions}",
            index.offsets.len()
        );
        assert!(index.skipped_bytes > 0);
    }
}
