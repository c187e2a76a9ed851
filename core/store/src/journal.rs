//! The dispatcher's write-ahead journal: a durable, gap-free sequence of opaque records
//! (serialized state-machine commands), compacted by snapshots of the caller's state.
//!
//! This module owns the journal's on-disk layout and its recovery rule. It never interprets a
//! record or a snapshot (the caller serializes them), and it never takes a snapshot by itself:
//! it cannot produce the caller's state, so [`Journal::snapshot_due`] tells the caller when.
//!
//! # On-disk layout
//!
//! A fjall database in `<dir>/db/` (see [`crate`] for the directory, and [`crate::fjall_journal`]
//! for fjall's own journal under it), with two keyspaces:
//!
//! ```text
//! records:  key = seq: u64 big-endian (so key order is sequence order)
//!           value = len: u32 | crc32c: u32 | payload              (frame with no fields)
//! meta:     "format"   -> "cachew-journal 1"
//!           "snapshot" -> seq: u64 | unix_ms: u64 | len: u32 | crc32c: u32 | state
//! ```
//!
//! Values use the [`crate::frame`] layout: integers little-endian, `crc32c` over
//! `key | fields | len | payload`. Sequence numbers start at 1 and have no gaps. The snapshot
//! covers records `1..=seq`; records `seq+1..` follow it.
//!
//! Writes: [`Journal::append`] commits all its records as one fjall batch and fsyncs fjall's
//! journal before returning (group commit: one fsync per call). [`Journal::snapshot`] writes the
//! new snapshot and tombstones for every record it covers as one batch, fsync'd: there is never
//! a state with the snapshot but not the deletions, or the reverse.
//!
//! # Disk use: bounded by the live state, not by history
//!
//! Deleting is not enough on its own: fjall keeps the deleted records and every older snapshot
//! in its tables until a compaction drops them, and keeps its own write-ahead journal files
//! until every memtable with data in them is flushed (a keyspace that never fills its memtable
//! pins them all, up to fjall's 512 MiB journal limit). Measured before this was done: 286 MB on
//! disk and a 21 s reopen after a million 200-byte records, for a state of one 50 kB snapshot.
//! So after each snapshot the caller runs [`Journal::compact`] (a separate write, so a snapshot
//! stays one batch that a crash tears whole or not at all): it compacts both keyspaces fully
//! (which drops what the snapshots deleted; cheap, since that is all they hold) and seals their
//! memtables, so fjall flushes them and deletes a journal file once it has rotated it (at
//! [`FJALL_JOURNAL_ROTATION_BYTES`]). On disk there is then at most the live state (the last
//! snapshot and the records after it, in tables, memtables and the active journal file) plus
//! about two journal files: a bound the history does not move (`tests/journal_bounded.rs`).
//!
//! # Recovery rule
//!
//! 1. Before fjall opens, its journal files are checked (see [`crate::fjall_journal`]): a torn
//!    last batch, the only write that can be torn since every earlier one was fsync'd before it
//!    was acknowledged, is cut and reported in [`Recovery::cut_tail`]; it was never
//!    acknowledged, so nothing acknowledged is lost and no record of it is applied. Damage
//!    anywhere else is an error.
//! 2. The snapshot, if any, must pass its checks.
//! 3. Records after it are read in key order; each must pass its checks, and their sequence
//!    numbers must run on without a gap from the snapshot's `seq + 1` (or from 1). A failed
//!    check or a gap is [`StoreError::Corrupt`] naming the sequence number: the journal never
//!    skips a record, because applying the records after a missing one would diverge silently.
//!
//! # A full or failing disk
//!
//! A write that fails (no space left, an I/O error, a failed fsync) acknowledges nothing, and
//! leaves every record acknowledged before it intact: at worst it leaves a torn last batch,
//! which rule 1 cuts at the next open. fjall refuses further writes on a database after such a
//! failure, so the caller drops the journal and opens it again (once space is back, or at
//! once: opening needs no new space). The reopened journal may show records of the failed
//! write read back from the page cache, which a failed fsync does not make durable; the caller
//! writes them again with [`Journal::rewrite`] (or the snapshot with [`Journal::snapshot`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use fjall::{Keyspace, PersistMode};

use crate::db::{Db, Tuning, unix_ms};
use crate::error::Location;
use crate::{StoreError, frame};

const RECORDS: &str = "records";
const META: &str = "meta";
const FORMAT: &[u8] = b"cachew-journal 1";
const SNAPSHOT_KEY: &str = "snapshot";

/// Where fjall 3.1 starts a new journal file (its `worker_pool.rs`: a flush rotates the active
/// file once it is past this many bytes); fixed by fjall.
pub const FJALL_JOURNAL_ROTATION_BYTES: u64 = 64_000_000;

const TUNING: Tuning = Tuning {
    memtable_bytes: 32 * 1024 * 1024,
    cache_bytes: 8 * 1024 * 1024,
};

/// How a [`Journal`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalOptions {
    /// [`Journal::snapshot_due`] turns true once this many records were appended since the last
    /// snapshot; 0 means never (the caller snapshots when it likes).
    pub snapshot_every: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            snapshot_every: 10_000,
        }
    }
}

/// What [`Journal::open`] found and the caller must replay: the snapshot, then the records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// `(seq it covers, state bytes)`.
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// Records after the snapshot, in sequence order: `(seq, payload)`.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Set if a torn or corrupt tail of fjall's journal was found and cut (never applied); says
    /// which file, where, how many bytes and why.
    pub cut_tail: Option<String>,
}

/// Counters for status reports and dashboards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Records appended after the last snapshot (those a recovery would replay).
    pub records_since_snapshot: u64,
    /// Sequence number of the last record (0 if none ever).
    pub last_seq: u64,
    /// Sequence number the last snapshot covers (0 if none).
    pub last_snapshot_seq: u64,
    /// When the last snapshot was written (it is stored with the snapshot, so it survives
    /// restarts).
    pub last_snapshot_unix_ms: Option<u64>,
    /// Payload bytes appended by this process (since `open`).
    pub bytes_appended: u64,
}

/// The dispatcher's write-ahead journal. See the module documentation for its format and
/// recovery rule.
pub struct Journal {
    db: Db,
    records: Keyspace,
    meta: Keyspace,
    options: JournalOptions,
    last_seq: u64,
    last_snapshot_seq: u64,
    last_snapshot_unix_ms: Option<u64>,
    bytes_appended: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("db", &self.db)
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (creating) the journal in `dir`; returns what must be replayed.
    pub fn open(dir: &Path, options: JournalOptions) -> Result<(Journal, Recovery), StoreError> {
        let started = Instant::now();
        let (db, cut_tail) = Db::open(dir, TUNING)?;
        let records = db.keyspace(RECORDS)?;
        let meta = db.keyspace(META)?;
        db.check_format(&meta, FORMAT, "journal")?;

        let snapshot = read_snapshot(&db.path, &meta)?;
        let (snapshot_seq, snapshot_unix_ms) = snapshot
            .as_ref()
            .map_or((0, None), |s| (s.seq, Some(s.unix_ms)));
        let replay = read_records(&db.path, &records, snapshot_seq)?;
        let last_seq = replay.last().map_or(snapshot_seq, |(seq, _)| *seq);

        tracing::info!(
            dir = %dir.display(),
            snapshot_seq,
            records = replay.len(),
            last_seq,
            cut_tail = cut_tail.as_deref().unwrap_or("none"),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "journal opened"
        );
        let journal = Journal {
            db,
            records,
            meta,
            options,
            last_seq,
            last_snapshot_seq: snapshot_seq,
            last_snapshot_unix_ms: snapshot_unix_ms,
            bytes_appended: 0,
        };
        let recovery = Recovery {
            snapshot: snapshot.map(|s| (s.seq, s.state)),
            records: replay,
            cut_tail,
        };
        Ok((journal, recovery))
    }

    /// Appends `records` as one batch (group commit); they are durable (fsync'd) when this
    /// returns. Returns the sequence number of the last record (of all records so far if
    /// `records` is empty, in which case nothing is written). Sequence numbers start at 1 and
    /// have no gaps.
    ///
    /// On an error nothing of the batch is acknowledged, and this `Journal` must not be used for
    /// writing again: fjall refuses further writes after a failed write or fsync (and an fsync
    /// that failed must never be retried as if a second one proved the data durable). Drop it and
    /// [`open`](Journal::open) the directory again; then see [`Journal::rewrite`] for records of
    /// the failed batch the reopened journal may show.
    pub fn append(&mut self, records: &[&[u8]]) -> Result<u64, StoreError> {
        if records.is_empty() {
            return Ok(self.last_seq);
        }
        let mut batch = self.db.db.batch().durability(Some(PersistMode::SyncAll));
        let mut seq = self.last_seq;
        let mut bytes = 0u64;
        for record in records {
            seq += 1;
            let key = seq.to_be_bytes();
            let value = frame::encode(&key, [], record, "journal record")?;
            batch.insert(&self.records, key, value);
            bytes += record.len() as u64;
        }
        batch
            .commit()
            .map_err(|e| StoreError::fjall(&self.db.path, e))?;
        self.last_seq = seq;
        self.bytes_appended += bytes;
        Ok(seq)
    }

    /// Writes records `first_seq..` again, as one new fsync'd batch, over records of the same
    /// numbers (and extends the journal if they run past [`last_seq`](Journal::last_seq)).
    ///
    /// This is for the records of a write that failed (a full disk, a failed fsync): after
    /// reopening, the journal may show some or all of them (read back from the page cache), but
    /// a failed fsync means their bytes may never reach the disk. Writing them again to fresh
    /// pages and fsyncing that write makes them durable; fsyncing the old pages again would not
    /// prove anything. `first_seq` must follow the snapshot and leave no gap.
    pub fn rewrite(&mut self, first_seq: u64, records: &[&[u8]]) -> Result<u64, StoreError> {
        if first_seq <= self.last_snapshot_seq || first_seq > self.last_seq + 1 {
            return Err(StoreError::Corrupt {
                path: self.db.path.clone(),
                what: "journal rewrite",
                at: Location::Seq(first_seq),
                detail: format!(
                    "records from {first_seq} cannot be written again: the snapshot covers up to \
                     {} and the last record is {}",
                    self.last_snapshot_seq, self.last_seq
                ),
            });
        }
        if records.is_empty() {
            return Ok(self.last_seq);
        }
        let mut batch = self.db.db.batch().durability(Some(PersistMode::SyncAll));
        let mut seq = first_seq - 1;
        for record in records {
            seq += 1;
            let key = seq.to_be_bytes();
            let value = frame::encode(&key, [], record, "journal record")?;
            batch.insert(&self.records, key, value);
        }
        batch
            .commit()
            .map_err(|e| StoreError::fjall(&self.db.path, e))?;
        self.last_seq = self.last_seq.max(seq);
        Ok(self.last_seq)
    }

    /// Stores a snapshot of the caller's state covering every record up to [`last_seq`]
    /// durably, and deletes the records it covers, in one fsync'd batch (one tombstone per
    /// covered record, so snapshot every few thousand records rather than every million). Follow
    /// it with [`compact`](Journal::compact).
    ///
    /// [`last_seq`]: Journal::last_seq
    pub fn snapshot(&mut self, state: &[u8]) -> Result<(), StoreError> {
        let started = Instant::now();
        let seq = self.last_seq;
        let now = unix_ms();
        let value = frame::encode(
            SNAPSHOT_KEY.as_bytes(),
            [seq, now],
            state,
            "journal snapshot",
        )?;
        let mut batch = self.db.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&self.meta, SNAPSHOT_KEY, value);
        for covered in self.last_snapshot_seq + 1..=seq {
            batch.remove(&self.records, covered.to_be_bytes());
        }
        batch
            .commit()
            .map_err(|e| StoreError::fjall(&self.db.path, e))?;
        let collected = seq - self.last_snapshot_seq;
        self.last_snapshot_seq = seq;
        self.last_snapshot_unix_ms = Some(now);
        tracing::info!(
            seq,
            state_bytes = state.len(),
            collected,
            elapsed_us = started.elapsed().as_micros() as u64,
            "journal snapshot written"
        );
        Ok(())
    }

    /// Drops what snapshots deleted from fjall's tables (a full compaction of both keyspaces:
    /// cheap, since that is nearly all they hold) and seals the memtables so that fjall flushes
    /// them and can delete the journal files behind them. Call it after each
    /// [`snapshot`](Journal::snapshot): without it, disk use grows with history (see "Disk use"
    /// in the module documentation). It changes no record or snapshot, so a crash in it loses
    /// nothing (fjall installs a compaction's or flush's tables atomically); an error is
    /// reported like a failed write, and the journal must be reopened before writing again.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        for keyspace in [&self.records, &self.meta] {
            keyspace
                .major_compact()
                .map_err(|e| StoreError::fjall(&self.db.path, e))?;
            keyspace
                .rotate_memtable()
                .map_err(|e| StoreError::fjall(&self.db.path, e))?;
        }
        tracing::debug!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "journal compacted"
        );
        Ok(())
    }

    /// True once [`JournalOptions::snapshot_every`] records were appended since the last
    /// snapshot.
    pub fn snapshot_due(&self) -> bool {
        self.options.snapshot_every > 0
            && self.last_seq - self.last_snapshot_seq >= self.options.snapshot_every
    }

    /// Sequence number of the last record (0 if none was ever appended).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Counters for status reports.
    pub fn stats(&self) -> JournalStats {
        JournalStats {
            records_since_snapshot: self.last_seq - self.last_snapshot_seq,
            last_seq: self.last_seq,
            last_snapshot_seq: self.last_snapshot_seq,
            last_snapshot_unix_ms: self.last_snapshot_unix_ms,
            bytes_appended: self.bytes_appended,
        }
    }

    /// The options it was opened with.
    pub fn options(&self) -> &JournalOptions {
        &self.options
    }

    /// The fjall database directory (`<dir>/db`).
    pub fn db_path(&self) -> &Path {
        &self.db.path
    }
}

struct Snapshot {
    seq: u64,
    unix_ms: u64,
    state: Vec<u8>,
}

fn read_snapshot(path: &Path, meta: &Keyspace) -> Result<Option<Snapshot>, StoreError> {
    let Some(value) = meta.get(SNAPSHOT_KEY).map_err(|e| {
        StoreError::fjall_reading(path, e, "journal snapshot", Location::Key(SNAPSHOT_KEY))
    })?
    else {
        return Ok(None);
    };
    let ([seq, unix_ms], state) =
        frame::decode::<2>(SNAPSHOT_KEY.as_bytes(), &value).map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            what: "journal snapshot",
            at: Location::Key(SNAPSHOT_KEY),
            detail: e.to_string(),
        })?;
    Ok(Some(Snapshot {
        seq,
        unix_ms,
        state: state.to_vec(),
    }))
}

/// Reads records `after+1..` in order, checking each and the continuity of their numbers.
fn read_records(
    path: &Path,
    records: &Keyspace,
    after: u64,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let corrupt = |seq: u64, detail: String| StoreError::Corrupt {
        path: PathBuf::from(path),
        what: "journal record",
        at: Location::Seq(seq),
        detail,
    };
    let mut out = Vec::new();
    for (expected, guard) in (after + 1..).zip(records.range((after + 1).to_be_bytes()..)) {
        let (key, value) = guard.into_inner().map_err(|e| {
            StoreError::fjall_reading(path, e, "journal record", Location::Seq(expected))
        })?;
        let seq = <[u8; 8]>::try_from(&*key)
            .map(u64::from_be_bytes)
            .map_err(|_| {
                corrupt(
                    expected,
                    format!("a record key of {} bytes (keys are 8)", key.len()),
                )
            })?;
        if seq != expected {
            return Err(corrupt(
                expected,
                format!("record {expected} is missing: the next record present is {seq}"),
            ));
        }
        let ([], payload) =
            frame::decode::<0>(&key, &value).map_err(|e| corrupt(seq, e.to_string()))?;
        out.push((seq, payload.to_vec()));
    }
    Ok(out)
}
