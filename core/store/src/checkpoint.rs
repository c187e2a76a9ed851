//! A worker's checkpoint store: periodic, durable, checksummed snapshots of its task positions
//! (small by design: positions, not buffers), and a summary other processes can read.
//!
//! This module owns the checkpoint layout, the summary marker file and their recovery rules. It
//! never interprets a payload (the caller serializes it) and never decides when to checkpoint.
//!
//! # On-disk layout
//!
//! ```text
//! <dir>/store.lock              held while the store is open (see crate::db)
//! <dir>/db/                     fjall database, keyspaces:
//!     checkpoints: key = seq: u64 big-endian
//!                  value = unix_ms: u64 | len: u32 | crc32c: u32 | payload   (frame, 1 field)
//!     meta:        "format" -> "cachew-checkpoints 1"
//! <dir>/checkpoint.summary      the summary marker (below)
//! <dir>/checkpoint.summary.tmp  the marker being written (removed at open if left over)
//! ```
//!
//! Values use the [`crate::frame`] layout (little-endian, `crc32c` over
//! `key | fields | len | payload`). Checkpoint sequence numbers start at 1 and increase by one
//! per write, including across restarts (a new one is always above every key present).
//!
//! [`CheckpointStore::write`] commits the new checkpoint and the deletion of every older one
//! except the previous valid checkpoint as one fjall batch, fsync'd: the last two are kept, so a
//! damaged newest one still leaves one to fall back to.
//!
//! # Recovery rule
//!
//! 1. fjall's journal is checked before fjall opens (see [`crate::fjall_journal`]): a torn last
//!    write is cut and reported ([`CheckpointStats::cut_tail`]); since a write is one batch,
//!    cutting it leaves the previous checkpoint (and its predecessor) exactly as they were.
//! 2. Checkpoints are read newest first; the first that passes its checks is returned. Newer
//!    ones that fail are logged, counted in [`CheckpointStats::skipped_corrupt`] and collected
//!    by the next write. If checkpoints exist but none passes, `open` fails with
//!    [`StoreError::Corrupt`]: starting from nothing would silently lose the worker's progress.
//! 3. The summary marker is rewritten if it does not describe the recovered checkpoint (if that
//!    fails, say on a full disk, the store opens anyway and the next checkpoint rewrites it),
//!    and removed if there is none.
//!
//! # The summary marker
//!
//! A fixed 60-byte file, little-endian, rewritten after every checkpoint by writing
//! `checkpoint.summary.tmp`, fsyncing it and renaming it over `checkpoint.summary`. Readers
//! therefore see the old or the new summary, never a mix, and a crash never leaves a renamed
//! but unwritten file. The directory is not fsync'd after the rename: the marker is a view of
//! the database, not a record of its own, so a rename lost in a crash only leaves the previous
//! summary, which the next `open` replaces; this saves one of the three fsyncs a checkpoint
//! would otherwise cost.
//!
//! ```text
//! magic "CACHEWCK" (8) | version: u32 = 1 | seq: u64 | unix_ms: u64 | payload_bytes: u64
//! | duration_us: u64 | count: u64 | payload_crc32c: u32 | crc32c of the preceding 56 bytes: u32
//! ```
//!
//! Rule: a missing file is "no checkpoint yet"; a file of another length, another magic or a
//! bad checksum is [`StoreError::Corrupt`]; another version is [`StoreError::UnsupportedFormat`].
//! The marker may lag the database by one checkpoint after a crash between the fjall commit
//! and the rename; the store fixes it when it is next opened.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fjall::{Keyspace, PersistMode};

use crate::db::{Db, Tuning, unix_ms};
use crate::error::Location;
use crate::{StoreError, frame};

const CHECKPOINTS: &str = "checkpoints";
const META: &str = "meta";
const FORMAT: &[u8] = b"cachew-checkpoints 1";

/// The summary marker's file name in the store directory.
pub const SUMMARY_FILE: &str = "checkpoint.summary";
const SUMMARY_TMP: &str = "checkpoint.summary.tmp";
const SUMMARY_MAGIC: [u8; 8] = *b"CACHEWCK";
const SUMMARY_VERSION: u32 = 1;
const SUMMARY_LEN: usize = 60;

/// Checkpoints are small and written often: a small memtable keeps memory and fjall's journal
/// (deleted after each flush) small.
const TUNING: Tuning = Tuning {
    memtable_bytes: 4 * 1024 * 1024,
    cache_bytes: 1024 * 1024,
};

/// One checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub unix_ms: u64,
    pub payload: Vec<u8>,
}

/// Counters of a [`CheckpointStore`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Checkpoints written by this process (since `open`).
    pub count: u64,
    /// Sequence number of the newest checkpoint (written or recovered; 0 if none).
    pub last_seq: u64,
    /// When the newest checkpoint was taken.
    pub last_unix_ms: u64,
    /// Its payload size.
    pub last_bytes: u64,
    /// How long the last [`CheckpointStore::write`] took, from the call to the summary's
    /// rename (0 if none in this process).
    pub last_duration_us: u64,
    /// Newer checkpoints found corrupt at open and skipped in favour of an older one.
    pub skipped_corrupt: u64,
    /// Set if a torn tail of fjall's journal was cut at open (see [`crate::fjall_journal`]).
    pub cut_tail: Option<String>,
}

/// What [`CheckpointStore::peek`] reads from the summary marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointSummary {
    pub seq: u64,
    pub unix_ms: u64,
    pub payload_bytes: u64,
    /// Duration of the write that produced it (0 if the summary was rebuilt at open).
    pub duration_us: u64,
    /// Checkpoints written by the owning process so far.
    pub count: u64,
    pub payload_crc32c: u32,
}

/// A worker's checkpoint store. See the module documentation for its format and recovery rule.
pub struct CheckpointStore {
    dir: PathBuf,
    db: Db,
    checkpoints: Keyspace,
    /// Keys present in `checkpoints`, ascending (at most a few).
    live: Vec<u64>,
    /// The newest checkpoint that passed its checks (or was written by us).
    last_valid: Option<u64>,
    next_seq: u64,
    stats: CheckpointStats,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("dir", &self.dir)
            .field("live", &self.live)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl CheckpointStore {
    /// Opens (creating) the store in `dir`; returns the newest valid checkpoint, if any.
    pub fn open(dir: &Path) -> Result<(CheckpointStore, Option<Checkpoint>), StoreError> {
        let (db, cut_tail) = Db::open(dir, TUNING)?;
        let checkpoints = db.keyspace(CHECKPOINTS)?;
        let meta = db.keyspace(META)?;
        db.check_format(&meta, FORMAT, "checkpoint")?;
        remove_if_present(&dir.join(SUMMARY_TMP))?;

        let mut live = Vec::new();
        let mut newest_valid = None;
        let mut skipped_corrupt = 0;
        let mut first_failure = None;
        for guard in checkpoints.iter().rev() {
            let (key, value) = guard.into_inner().map_err(|e| {
                StoreError::fjall_reading(&db.path, e, "checkpoint", Location::Key(CHECKPOINTS))
            })?;
            let seq = <[u8; 8]>::try_from(&*key)
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    path: db.path.clone(),
                    what: "checkpoint key",
                    at: Location::Key(CHECKPOINTS),
                    detail: format!("a key of {} bytes (keys are 8)", key.len()),
                })?;
            live.push(seq);
            if newest_valid.is_some() {
                continue;
            }
            match frame::decode::<1>(&key, &value) {
                Ok(([unix_ms], payload)) => {
                    newest_valid = Some(Checkpoint {
                        seq,
                        unix_ms,
                        payload: payload.to_vec(),
                    });
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), seq, error = %e, "skipping a corrupt checkpoint");
                    skipped_corrupt += 1;
                    first_failure.get_or_insert((seq, e));
                }
            }
        }
        live.reverse();
        if newest_valid.is_none()
            && let Some((seq, e)) = first_failure
        {
            return Err(StoreError::Corrupt {
                path: db.path.clone(),
                what: "checkpoint",
                at: Location::Seq(seq),
                detail: format!("{e}, and no older checkpoint is valid"),
            });
        }

        let stats = CheckpointStats {
            count: 0,
            last_seq: newest_valid.as_ref().map_or(0, |c| c.seq),
            last_unix_ms: newest_valid.as_ref().map_or(0, |c| c.unix_ms),
            last_bytes: newest_valid.as_ref().map_or(0, |c| c.payload.len() as u64),
            last_duration_us: 0,
            skipped_corrupt,
            cut_tail,
        };
        let store = CheckpointStore {
            dir: dir.to_path_buf(),
            db,
            checkpoints,
            next_seq: live.last().map_or(1, |seq| seq + 1),
            last_valid: newest_valid.as_ref().map(|c| c.seq),
            live,
            stats,
        };
        match &newest_valid {
            // The marker is a view of the database: a full or failing disk must not keep the
            // store (and the worker) from starting; the next checkpoint rewrites it.
            Some(checkpoint) => {
                if let Err(e) = store.repair_summary(checkpoint) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot repair the checkpoint summary now; the next checkpoint rewrites it");
                    remove_if_present(&dir.join(SUMMARY_TMP))?;
                }
            }
            // A marker without a checkpoint behind it (the database was removed) must not be
            // shown as if there were one.
            None => remove_if_present(&dir.join(SUMMARY_FILE))?,
        }
        tracing::info!(
            dir = %dir.display(),
            recovered_seq = store.stats.last_seq,
            skipped_corrupt,
            cut_tail = store.stats.cut_tail.as_deref().unwrap_or("none"),
            "checkpoint store opened"
        );
        Ok((store, newest_valid))
    }

    /// Writes a checkpoint durably (fsync), checksummed, and collects older ones (keeping this
    /// one and the previous valid one); then rewrites the summary marker.
    ///
    /// If the marker cannot be written the error is returned, but the checkpoint itself is
    /// already durable and counted.
    ///
    /// After an error (a full disk, an I/O error, a failed fsync) this store must not be written
    /// again: fjall refuses further writes once one failed. Drop it and open the directory again
    /// (which keeps the last checkpoints that were durable and repairs the marker); the next
    /// checkpoint is then a new write of fresh pages, never a second fsync of the failed one.
    pub fn write(&mut self, payload: &[u8]) -> Result<CheckpointStats, StoreError> {
        let started = Instant::now();
        let seq = self.next_seq;
        let now = unix_ms();
        let key = seq.to_be_bytes();
        let value = frame::encode(&key, [now], payload, "checkpoint")?;
        let mut batch = self.db.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&self.checkpoints, key, value);
        let keep = self.last_valid;
        let collect: Vec<u64> = self
            .live
            .iter()
            .copied()
            .filter(|old| Some(*old) != keep)
            .collect();
        for old in &collect {
            batch.remove(&self.checkpoints, old.to_be_bytes());
        }
        batch
            .commit()
            .map_err(|e| StoreError::fjall(&self.db.path, e))?;

        self.live = keep.into_iter().chain([seq]).collect();
        self.last_valid = Some(seq);
        self.next_seq = seq + 1;
        self.stats.count += 1;
        self.stats.last_seq = seq;
        self.stats.last_unix_ms = now;
        self.stats.last_bytes = payload.len() as u64;

        // The marker carries the duration up to the commit (it cannot contain its own write
        // time); the stats carry the whole call, marker included.
        let summary = CheckpointSummary {
            seq,
            unix_ms: now,
            payload_bytes: payload.len() as u64,
            duration_us: micros(started),
            count: self.stats.count,
            payload_crc32c: crc32c::crc32c(payload),
        };
        let result = write_summary(&self.dir, &summary);
        self.stats.last_duration_us = micros(started);
        tracing::debug!(
            seq,
            bytes = payload.len(),
            collected = collect.len(),
            duration_us = self.stats.last_duration_us,
            "checkpoint written"
        );
        result.map(|()| self.stats.clone())
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters of this store.
    pub fn stats(&self) -> CheckpointStats {
        self.stats.clone()
    }

    /// Reads the summary marker in `dir` without opening the store (safe while its owner has it
    /// open). `None` if no checkpoint was written there yet.
    pub fn peek(dir: &Path) -> Result<Option<CheckpointSummary>, StoreError> {
        let path = dir.join(SUMMARY_FILE);
        match fs::read(&path) {
            Ok(bytes) => decode_summary(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Rewrites the marker if it does not describe `checkpoint` (a crash between the commit
    /// and the rename, a damaged or missing marker).
    fn repair_summary(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let payload_crc32c = crc32c::crc32c(&checkpoint.payload);
        let current = CheckpointStore::peek(&self.dir).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "rewriting an unreadable checkpoint summary");
            None
        });
        if current.is_some_and(|s| s.seq == checkpoint.seq && s.payload_crc32c == payload_crc32c) {
            return Ok(());
        }
        write_summary(
            &self.dir,
            &CheckpointSummary {
                seq: checkpoint.seq,
                unix_ms: checkpoint.unix_ms,
                payload_bytes: checkpoint.payload.len() as u64,
                duration_us: 0,
                count: 0,
                payload_crc32c,
            },
        )
    }
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

fn encode_summary(s: &CheckpointSummary) -> [u8; SUMMARY_LEN] {
    let mut out = [0u8; SUMMARY_LEN];
    let mut body = Vec::with_capacity(SUMMARY_LEN);
    body.extend_from_slice(&SUMMARY_MAGIC);
    body.extend_from_slice(&SUMMARY_VERSION.to_le_bytes());
    for field in [s.seq, s.unix_ms, s.payload_bytes, s.duration_us, s.count] {
        body.extend_from_slice(&field.to_le_bytes());
    }
    body.extend_from_slice(&s.payload_crc32c.to_le_bytes());
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    out.copy_from_slice(&body);
    out
}

fn decode_summary(path: &Path, bytes: &[u8]) -> Result<CheckpointSummary, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        what: "checkpoint summary",
        at: Location::Key(SUMMARY_FILE),
        detail,
    };
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if bytes.get(..8) != Some(&SUMMARY_MAGIC[..]) {
        return Err(corrupt("bad magic (not a checkpoint summary)".into()));
    }
    // The version is checked before the length: another version may have another length.
    match u32_at(8) {
        Some(SUMMARY_VERSION) => {}
        Some(version) => {
            return Err(StoreError::UnsupportedFormat {
                path: path.to_path_buf(),
                found: format!(
                    "checkpoint summary version {version} (this build reads {SUMMARY_VERSION})"
                ),
            });
        }
        None => return Err(corrupt(format!("{} bytes, too short", bytes.len()))),
    }
    if bytes.len() != SUMMARY_LEN {
        return Err(corrupt(format!(
            "{} bytes, the summary is {SUMMARY_LEN}",
            bytes.len()
        )));
    }
    let body = bytes.get(..SUMMARY_LEN - 4).unwrap_or_default();
    let stored = u32_at(SUMMARY_LEN - 4);
    let computed = crc32c::crc32c(body);
    if stored != Some(computed) {
        return Err(corrupt(format!(
            "CRC-32C mismatch (stored {:#010x}, computed {computed:#010x})",
            stored.unwrap_or_default()
        )));
    }
    match (
        u64_at(12),
        u64_at(20),
        u64_at(28),
        u64_at(36),
        u64_at(44),
        u32_at(52),
    ) {
        (
            Some(seq),
            Some(unix_ms),
            Some(payload_bytes),
            Some(duration_us),
            Some(count),
            Some(payload_crc32c),
        ) => Ok(CheckpointSummary {
            seq,
            unix_ms,
            payload_bytes,
            duration_us,
            count,
            payload_crc32c,
        }),
        _ => Err(corrupt("truncated fields".into())),
    }
}

/// Atomically replaces the summary marker: write tmp, fsync, rename (see the module doc for
/// why the directory is not fsync'd).
fn write_summary(dir: &Path, summary: &CheckpointSummary) -> Result<(), StoreError> {
    let tmp = dir.join(SUMMARY_TMP);
    let path = dir.join(SUMMARY_FILE);
    let mut file = fs::File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    file.write_all(&encode_summary(summary))
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_round_trip_and_damage() {
        let summary = CheckpointSummary {
            seq: 3,
            unix_ms: 1_700_000_000_000,
            payload_bytes: 1024,
            duration_us: 812,
            count: 2,
            payload_crc32c: 0xdead_beef,
        };
        let bytes = encode_summary(&summary);
        let path = Path::new("x");
        assert_eq!(decode_summary(path, &bytes).unwrap(), summary);
        for byte in 0..SUMMARY_LEN {
            let mut bad = bytes;
            bad[byte] ^= 0x10;
            assert!(decode_summary(path, &bad).is_err(), "flip at {byte}");
        }
        for len in 0..SUMMARY_LEN {
            assert!(decode_summary(path, &bytes[..len]).is_err());
        }
    }
}
