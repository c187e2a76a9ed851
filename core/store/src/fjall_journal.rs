//! fjall's own journal on disk, and the check this crate runs on it before fjall opens it.
//!
//! # Why this module exists, and what to do when fjall changes
//!
//! This parses a private, undocumented format of one fjall release ([`FJALL_VERSION`], pinned
//! with `=` in the workspace `Cargo.toml`; `tests/fjall_version.rs` fails if the pin or
//! `Cargo.lock` names another). It exists because fjall's own recovery is not enough for a
//! journal that must never lose an acknowledged record (details below, each shown by a test in
//! `tests/journal_corruption.rs`):
//! - one damaged byte in the middle of fjall's journal makes fjall drop every later batch
//!   without an error, and the journal's own checks cannot see it: records lost at the end
//!   leave no gap in the sequence numbers, so the journal would silently open short;
//! - a torn last batch that looks complete but fails its checksum (out-of-order sector writes)
//!   makes fjall refuse to open, although that write was never acknowledged.
//!
//! The journal's frames (CRC-32C) and sequence checks catch damage inside a record and holes,
//! not a lost tail: only this module does. Before moving to another fjall version:
//! 1. read the new version's journal code (`src/journal/`: `entry.rs` for the layout,
//!    `batch_reader.rs` and `reader.rs` for its recovery) and its `version` marker;
//! 2. if the layout or the recovery differ, update the layout below, [`parse_batch`] and the
//!    `batch` helper of the unit tests; if fjall now reports a mid-journal flaw as an error and
//!    can cut a torn tail whatever its checksum, this module may go (keep the tests);
//! 3. run `cargo test -p cachew-store` (the torn-tail, corruption and reopen tests exercise the
//!    real fjall), then change [`FJALL_VERSION`] and the pin together.
//!
//! Both stores keep their data in fjall, and fjall makes every write durable by appending it to
//! its journal (write-ahead log) before applying it to memtables; tables (SSTs) come later, from
//! background flushes. A torn or damaged write therefore shows up in fjall's journal files, and
//! this module is the only place that reads them directly. It never writes them, except to cut a
//! torn tail (below).
//!
//! # What fjall 3 writes (format `V3`, as of fjall 3.1.13; checked against its source)
//!
//! Files: `<db>/<id>.jnl`, `id` a decimal `u64`; the highest id is the active journal, lower ids
//! are sealed journals whose memtables are not flushed yet (fjall deletes them after the flush).
//! A new journal file is preallocated to 64 MiB of zeros (`set_len`) and written from offset 0;
//! after recovery fjall truncates the active file to its last intact batch and reopens it in
//! append mode, so from then on the file grows with every write. `<db>/version` starts with
//! `FJL` and the format byte `3`.
//!
//! Every write (a `WriteBatch` commit, an insert, a remove) is one batch, little-endian:
//!
//! ```text
//! start: tag 1: u8 | item_count: u32 | seqno: u64                                  (13 bytes)
//! item:  tag 2: u8 | value_type: u8 | compression: u8 | keyspace_id: u64
//!        | key_len: u16 | value_len: u32 | on_disk_value_len: u32 | key | value     (21 + ...)
//! clear: tag 4: u8 | keyspace_id: u64                                               (9 bytes)
//! end:   tag 3: u8 | checksum: u64 | "FJL" 3                                        (13 bytes)
//! ```
//!
//! `item_count` items or clears follow the start; `checksum` is XXH3-64 (seed 0) over the
//! bytes of those items, which are contiguous. The start marker itself is not covered. fjall
//! continues its sequence numbers from the highest `seqno` it recovers and panics once they reach
//! 2^63 (the top bit is reserved), so a `seqno` of 2^63 - 1 or more (a flipped top bit) is not a
//! batch fjall could go on from: this check counts it as a flaw like a bad checksum.
//!
//! # How fjall 3 recovers it, and why that is not enough on its own
//!
//! fjall reads entries until the first one that does not decode (end of file, an unknown tag
//! such as the zero padding, a bad trailer), truncates the file there, and drops an unterminated
//! last batch: a torn tail is cut without an error and without a report. A batch whose checksum
//! or item count is wrong makes `open` fail (`JournalRecovery`), even when it is the torn last
//! batch. And because the rule is "stop at the first entry that does not decode", one damaged
//! byte in the *middle* of a journal (a flipped tag, a bad trailer) silently truncates every
//! later batch: acknowledged writes vanish. fjall 3.1 has no recovery-mode option (it is
//! commented out in its `Config`); `TolerateCorruptTail` is its only behaviour.
//!
//! # Our rule (run on every journal file, oldest first, before fjall opens the database)
//!
//! Walk the batches, checking structure, lengths and checksums, up to the last non-zero byte.
//! - Only intact batches followed by zeros (preallocation) or the end of the file: clean.
//! - A flaw in a sealed file, or a flaw in the active file that is followed by an intact batch
//!   anywhere after it: damage inside the journal. [`StoreError::Corrupt`] naming the file, the
//!   byte offset and the reason; nothing is cut and fjall is not opened.
//! - A flaw in the active file with no intact batch after it: a torn tail (the last write did
//!   not finish before the crash, so it was never acknowledged). Truncate the file to the end of
//!   the last intact batch (fsync'd) and report what was cut; fjall then opens a clean journal.
//!   This also covers the torn batches fjall would refuse (a complete-looking batch with a bad
//!   checksum, as out-of-order sector writes can leave).

use std::fs;
use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::error::Location;

/// The fjall release whose journal format this module parses (checked by
/// `tests/fjall_version.rs` against the workspace's pin and `Cargo.lock`).
pub const FJALL_VERSION: &str = "3.1.13";

const TAG_START: u8 = 1;
const TAG_ITEM: u8 = 2;
const TAG_END: u8 = 3;
const TAG_CLEAR: u8 = 4;
const TRAILER: [u8; 4] = [b'F', b'J', b'L', 3];
/// `value_type` values fjall writes to the journal: value, tombstone, weak tombstone.
const MAX_VALUE_TYPE: u8 = 2;
/// `compression` values: none, LZ4.
const MAX_COMPRESSION: u8 = 1;
/// fjall's sequence numbers stay below this (its counter panics there); it continues from the
/// highest recovered batch `seqno` + 1.
const SEQNO_LIMIT: u64 = 1 << 63;

/// The journal files of the fjall database in `db_dir`, oldest first.
pub fn journal_files(db_dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut files = Vec::new();
    let entries = fs::read_dir(db_dir).map_err(|e| StoreError::io(db_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(db_dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".jnl")) else {
            continue;
        };
        let id = stem
            .parse::<u64>()
            .map_err(|_| StoreError::UnsupportedFormat {
                path: path.clone(),
                found: "a journal file whose name is not `<number>.jnl`".into(),
            })?;
        let file_type = entry.file_type().map_err(|e| StoreError::io(&path, e))?;
        if !file_type.is_file() {
            return Err(StoreError::UnsupportedFormat {
                path,
                found: "a journal entry that is not a regular file".into(),
            });
        }
        files.push((id, path));
    }
    files.sort_unstable_by_key(|(id, _)| *id);
    Ok(files)
}

/// Checks every journal file of the fjall database in `db_dir` (see the module doc); cuts a torn
/// tail of the active file and returns a description of what was cut.
pub(crate) fn check_and_cut_tail(db_dir: &Path) -> Result<Option<String>, StoreError> {
    let files = journal_files(db_dir)?;
    let mut cut = None;
    for (index, (_, path)) in files.iter().enumerate() {
        let is_active = index + 1 == files.len();
        let buf = read_data(path)?;
        let scan = scan(&buf);
        let Some((at, flaw)) = scan.flaw else {
            continue;
        };
        let after = match &scan.last_intact {
            Some(batch) => format!("after the intact batch with fjall seqno {}", batch.seqno),
            None => "at the start of the file".to_string(),
        };
        if !is_active {
            return Err(corrupt(
                path,
                at,
                format!("{flaw} ({after}), in a sealed journal file: a newer journal file exists"),
            ));
        }
        if let Some(later) = find_intact_batch(&buf, at + 1, scan.data_end) {
            return Err(corrupt(
                path,
                at,
                format!(
                    "{flaw} ({after}); an intact batch (fjall seqno {}) follows at byte offset {}, \
                     so this is damage inside the journal, not a torn tail",
                    later.seqno, later.start
                ),
            ));
        }
        let cut_bytes = scan.data_end.saturating_sub(at);
        let file = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        file.set_len(at as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| StoreError::io(path, e))?;
        let message = format!(
            "{}: cut a torn tail of {cut_bytes} bytes at byte offset {at} ({after}): {flaw}",
            path.display()
        );
        tracing::warn!(journal = %path.display(), offset = at, bytes = cut_bytes, %flaw, "cut a torn journal tail");
        cut = Some(message);
    }
    Ok(cut)
}

/// Reads a journal file up to the start of its trailing hole: the zeros fjall preallocates are
/// normally a hole (`set_len` on a new file), which reads as zeros, so skipping it changes
/// nothing but the cost (a fresh journal is 64 MiB). Where holes cannot be found, reads it all.
fn read_data(path: &Path) -> Result<Vec<u8>, StoreError> {
    use std::io::{Read, Seek};
    let io = |e| StoreError::io(path, e);
    let mut file = fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let data_len = data_extent_end(&file, len);
    file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
    let mut buf = Vec::with_capacity(usize::try_from(data_len).unwrap_or(0));
    (&mut file)
        .take(data_len)
        .read_to_end(&mut buf)
        .map_err(io)?;
    Ok(buf)
}

/// Offset where the file's trailing hole starts (`len` if it has none or holes are unknown).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn data_extent_end(file: &fs::File, len: u64) -> u64 {
    use rustix::fs::{SeekFrom, seek};
    let mut end = 0;
    let mut pos = 0;
    while pos < len {
        let data = match seek(file, SeekFrom::Data(pos)) {
            Ok(data) => data,
            // No data after `pos`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => return end,
            Err(_) => return len,
        };
        let Ok(hole) = seek(file, SeekFrom::Hole(data)) else {
            return len;
        };
        if hole <= data {
            return len;
        }
        end = hole;
        pos = hole;
    }
    end
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn data_extent_end(_file: &fs::File, len: u64) -> u64 {
    len
}

fn corrupt(path: &Path, at: usize, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        what: "fjall journal batch",
        at: Location::Offset(at as u64),
        detail,
    }
}

/// An intact batch: `start..end` in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub start: usize,
    pub end: usize,
    pub seqno: u64,
    pub items: u32,
}

/// Why the bytes at an offset are not an intact batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flaw {
    /// The data ends inside the batch.
    Truncated,
    /// The framing is wrong (a tag, a count, a length, the trailer).
    Invalid(String),
    /// The framing is right but the XXH3 checksum over the items is not.
    Checksum { stored: u64, computed: u64 },
}

impl std::fmt::Display for Flaw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flaw::Truncated => write!(f, "the data ends inside a batch"),
            Flaw::Invalid(reason) => write!(f, "invalid batch: {reason}"),
            Flaw::Checksum { stored, computed } => write!(
                f,
                "batch checksum mismatch (stored {stored:#018x}, computed {computed:#018x})"
            ),
        }
    }
}

/// The result of walking one journal file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Offset after the last non-zero byte: the rest is preallocation.
    pub data_end: usize,
    /// Intact batches from the start of the file, before any flaw.
    pub intact: usize,
    pub last_intact: Option<Batch>,
    /// The first flaw, at this offset.
    pub flaw: Option<(usize, Flaw)>,
}

/// Walks the batches of one journal file.
pub fn scan(buf: &[u8]) -> Scan {
    let data_end = data_end(buf);
    let mut result = Scan {
        data_end,
        intact: 0,
        last_intact: None,
        flaw: None,
    };
    let mut pos = 0;
    while pos < data_end {
        match parse_batch(buf, pos) {
            Ok(batch) => {
                pos = batch.end;
                result.intact += 1;
                result.last_intact = Some(batch);
            }
            Err(flaw) => {
                result.flaw = Some((pos, flaw));
                break;
            }
        }
    }
    result
}

/// The first intact batch starting in `from..to`, if any.
fn find_intact_batch(buf: &[u8], from: usize, to: usize) -> Option<Batch> {
    let region = buf.get(from..to)?;
    region
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == TAG_START)
        .find_map(|(offset, _)| parse_batch(buf, from + offset).ok())
}

/// Offset after the last non-zero byte of `buf` (0 if all zero). Works a block at a time, so the
/// 64 MiB of preallocated zeros of a fresh journal cost little.
fn data_end(buf: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let mut end = buf.len();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let Some(block) = buf.get(start..end) else {
            return end;
        };
        if block.iter().fold(0u8, |acc, b| acc | b) != 0 {
            return block
                .iter()
                .rposition(|b| *b != 0)
                .map_or(start, |i| start + i + 1);
        }
        end = start;
    }
    0
}

/// A bounds-checked little-endian reader over the file bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Flaw> {
        let end = self.pos.checked_add(n).ok_or(Flaw::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(Flaw::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Flaw> {
        self.take(N)?.try_into().map_err(|_| Flaw::Truncated)
    }

    fn u8(&mut self) -> Result<u8, Flaw> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Flaw> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, Flaw> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Flaw> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// Parses and checks the batch starting at `at`.
pub fn parse_batch(buf: &[u8], at: usize) -> Result<Batch, Flaw> {
    let mut r = Reader { buf, pos: at };
    let tag = r.u8()?;
    if tag != TAG_START {
        return Err(Flaw::Invalid(format!(
            "expected a batch start marker (tag {TAG_START}), found tag {tag}"
        )));
    }
    let items = r.u32()?;
    let seqno = r.u64()?;
    if items == 0 {
        return Err(Flaw::Invalid("a batch of zero items".into()));
    }
    if seqno >= SEQNO_LIMIT - 1 {
        return Err(Flaw::Invalid(format!(
            "fjall seqno {seqno:#x} is past the last one fjall can continue from"
        )));
    }
    let items_start = r.pos;
    for index in 0..items {
        match r.u8()? {
            TAG_ITEM => {
                let value_type = r.u8()?;
                if value_type > MAX_VALUE_TYPE {
                    return Err(Flaw::Invalid(format!(
                        "item {index}: unknown value type {value_type}"
                    )));
                }
                let compression = r.u8()?;
                if compression > MAX_COMPRESSION {
                    return Err(Flaw::Invalid(format!(
                        "item {index}: unknown compression {compression}"
                    )));
                }
                let _keyspace_id = r.u64()?;
                let key_len = r.u16()?;
                let value_len = r.u32()?;
                let on_disk_len = r.u32()?;
                if compression == 0 && value_len != on_disk_len {
                    return Err(Flaw::Invalid(format!(
                        "item {index}: uncompressed value of {value_len} bytes stored as {on_disk_len}"
                    )));
                }
                r.take(usize::from(key_len))?;
                r.take(on_disk_len as usize)?;
            }
            TAG_CLEAR => {
                let _keyspace_id = r.u64()?;
            }
            TAG_END => {
                return Err(Flaw::Invalid(format!(
                    "the batch declares {items} items but ends after {index}"
                )));
            }
            tag => {
                return Err(Flaw::Invalid(format!(
                    "item {index} of {items}: unknown entry tag {tag}"
                )));
            }
        }
    }
    let items_end = r.pos;
    let tag = r.u8()?;
    if tag != TAG_END {
        return Err(Flaw::Invalid(format!(
            "expected the end marker after {items} items, found tag {tag}"
        )));
    }
    let stored = r.u64()?;
    if r.array::<4>()? != TRAILER {
        return Err(Flaw::Invalid(
            "the end marker's trailer is not `FJL` 3".into(),
        ));
    }
    let covered = buf.get(items_start..items_end).ok_or(Flaw::Truncated)?;
    let computed = xxhash_rust::xxh3::xxh3_64(covered);
    if stored != computed {
        return Err(Flaw::Checksum { stored, computed });
    }
    Ok(Batch {
        start: at,
        end: r.pos,
        seqno,
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch as fjall's `Writer::write_batch` lays it out (uncompressed items).
    fn batch(seqno: u64, items: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (key, value) in items {
            body.push(TAG_ITEM);
            body.push(0); // value
            body.push(0); // no compression
            body.extend_from_slice(&7u64.to_le_bytes());
            body.extend_from_slice(&(key.len() as u16).to_le_bytes());
            body.extend_from_slice(&(value.len() as u32).to_le_bytes());
            body.extend_from_slice(&(value.len() as u32).to_le_bytes());
            body.extend_from_slice(key);
            body.extend_from_slice(value);
        }
        let mut out = vec![TAG_START];
        out.extend_from_slice(&(items.len() as u32).to_le_bytes());
        out.extend_from_slice(&seqno.to_le_bytes());
        out.extend_from_slice(&body);
        out.push(TAG_END);
        out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes());
        out.extend_from_slice(&TRAILER);
        out
    }

    #[test]
    fn intact_batches_then_padding_are_clean() {
        let mut file = batch(1, &[(b"a", b"1")]);
        file.extend(batch(2, &[(b"b", b"22"), (b"c", b"333")]));
        let len = file.len();
        file.resize(len + 10_000, 0);
        let s = scan(&file);
        assert_eq!((s.data_end, s.intact, s.flaw), (len, 2, None));
        assert_eq!(s.last_intact.unwrap().seqno, 2);
    }

    #[test]
    fn every_prefix_of_the_last_batch_is_a_flaw_at_its_start() {
        let first = batch(1, &[(b"a", b"1")]);
        let second = batch(2, &[(b"key", b"value")]);
        let mut file = first.clone();
        file.extend(&second);
        for cut in first.len() + 1..file.len() {
            for padded in [false, true] {
                let mut torn = file[..cut].to_vec();
                if padded {
                    torn.resize(file.len() + 64, 0);
                }
                let s = scan(&torn);
                assert_eq!(s.intact, 1, "cut {cut}");
                assert_eq!(s.flaw.as_ref().map(|f| f.0), Some(first.len()), "cut {cut}");
            }
        }
    }

    #[test]
    fn a_flipped_item_byte_is_a_checksum_flaw_and_an_intact_batch_after_it_is_found() {
        let first = batch(1, &[(b"a", b"hello")]);
        let mut file = first.clone();
        file.extend(batch(2, &[(b"b", b"world")]));
        let flip = first.len() - 14; // the last payload byte of the first batch
        file[flip] ^= 0x40;
        let s = scan(&file);
        assert!(matches!(s.flaw, Some((0, Flaw::Checksum { .. }))));
        let later = find_intact_batch(&file, 1, s.data_end).unwrap();
        assert_eq!((later.start, later.seqno), (first.len(), 2));
    }

    #[test]
    fn a_seqno_fjall_could_not_continue_from_is_a_flaw() {
        let mut file = batch(SEQNO_LIMIT - 2, &[(b"a", b"1")]);
        assert_eq!(scan(&file).flaw, None);
        file[12] |= 0x80; // the top bit of the seqno
        assert!(matches!(scan(&file).flaw, Some((0, Flaw::Invalid(_)))));
        let last = batch(SEQNO_LIMIT - 1, &[(b"a", b"1")]);
        assert!(matches!(scan(&last).flaw, Some((0, Flaw::Invalid(_)))));
    }

    #[test]
    fn data_end_skips_zero_blocks() {
        assert_eq!(data_end(&[]), 0);
        assert_eq!(data_end(&[0; 10_000]), 0);
        let mut buf = vec![0u8; 10_000];
        buf[4097] = 1;
        assert_eq!(data_end(&buf), 4098);
        buf[9_999] = 5;
        assert_eq!(data_end(&buf), 10_000);
    }
}
