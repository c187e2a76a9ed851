//! The dispatcher's durability: the journal of state-machine commands and its group commit.
//!
//! Commands that change the state are serialized (JSON, one record per command) and queued
//! under the state lock, in the order they were applied. A writer task hands each queue to the
//! [`cachew_store::Journal`] as one batch with one fsync (group commit) and publishes the last
//! durable sequence number. Every RPC notes the sequence number of the state it reveals and
//! waits until that is durable before it replies, so nothing a peer has seen can be lost by a
//! crash. When snapshots are due, the writer takes a copy of the state at the same instant as
//! the batch it covers, so replay = snapshot + the records after it, through the same `apply`.
//!
//! If the journal cannot be written for now (a full or failing disk), the dispatcher stops
//! acknowledging: every RPC waiting for a state that is not durable fails as unavailable (so
//! peers retry), the writer reopens the journal and writes the batch again until it goes
//! through, and then everything resumes (see [`writer`]). Commands applied meanwhile stay
//! queued in order; none was acknowledged, exactly as if the replies had been lost on the way.
//! If the journal is damaged, the dispatcher stops serving ([`crate::serve`] returns the
//! error): running on without durability would let a restart forget what peers were told.
//!
//! # Payload format (format version 1)
//!
//! The journal ([`cachew_store::Journal`]) keeps each payload in a checksummed frame (length and
//! CRC-32C over key, fields and payload; see `cachew_store::frame`) under a gap-free sequence
//! number, cuts a torn tail and refuses damage (see `cachew_store::journal`). This module writes
//! the payloads: compact JSON (serde_json), one object per record and one for the snapshot.
//!
//! ```text
//! record    {"format":1,"command":<Command>}   one per command that changed the state, in order
//! snapshot  {"format":1,"state":<State>}       the state after the last record it covers
//! ```
//!
//! `<Command>` is serde's externally tagged enum (`{"AssignTasks":{"worker":3,...}}`) and
//! `<State>` the plain struct, both in `state.rs`; a field added to either carries
//! `#[serde(default)]`, so payloads written before it still read. Neither may have a top-level
//! field or variant named `format`.
//!
//! `format` is [`FORMAT_VERSION`]: it changes when a payload this dispatcher writes would be
//! misread by an older one (a field renamed or given another meaning), not when a defaulted
//! field is added. What a reader does with a payload:
//! - `format` from 1 to [`FORMAT_VERSION`]: parses the command (or state) and applies it.
//! - no `format` (a bare `<Command>` or `<State>`, as dispatchers before payload versions wrote
//!   it): version 1.
//! - a newer `format`: refuses to open the journal ("journal record written by format version
//!   N; this dispatcher reads up to M") and applies nothing: a newer payload is never misread.
//! - anything that does not parse (or format 0): an error naming the sequence number. No record
//!   is ever skipped.
//!
//! A command or state that cannot be serialized is never written (not even as an empty record):
//! the writer fails the journal with the reason, as for a damaged one, and the dispatcher stops.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachew_proto::backoff::Backoff;
use cachew_proto::v1::EventKind;
use cachew_store::{Journal, JournalOptions, JournalStats, Recovery};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::state::{Command, State};

/// The payload format version this dispatcher writes, and the newest it reads (see the module
/// documentation).
pub const FORMAT_VERSION: u32 = 1;

/// A command serialized as a journal record ([`encode`]), or why it could not be: the writer
/// then fails the journal rather than write anything in its place.
pub type Record = Result<Vec<u8>, String>;

/// Commands applied but not yet handed to the writer.
#[derive(Debug, Default)]
pub struct Pending {
    pub records: Vec<Record>,
    /// Sequence number of the last command applied (durable or not).
    pub applied: u64,
}

/// Shared between the service and the writer task.
#[derive(Debug)]
pub struct Durability {
    pub durable: watch::Sender<u64>,
    pub wake: Notify,
    /// Set for good when the journal is damaged (or the writer died): the dispatcher stops.
    pub failed: Mutex<Option<String>>,
    /// Set while the journal cannot be written (a full or failing disk), cleared once a write
    /// succeeds again: changes are not acknowledged meanwhile.
    pub unavailable: Mutex<Option<String>>,
    pub stats: Mutex<Option<JournalStats>>,
    pub enabled: bool,
}

impl Durability {
    pub fn disabled() -> Arc<Durability> {
        Arc::new(Durability {
            durable: watch::channel(u64::MAX).0,
            wake: Notify::new(),
            failed: Mutex::new(None),
            unavailable: Mutex::new(None),
            stats: Mutex::new(None),
            enabled: false,
        })
    }

    pub fn enabled(last_seq: u64, stats: JournalStats) -> Arc<Durability> {
        Arc::new(Durability {
            durable: watch::channel(last_seq).0,
            wake: Notify::new(),
            failed: Mutex::new(None),
            unavailable: Mutex::new(None),
            stats: Mutex::new(Some(stats)),
            enabled: true,
        })
    }

    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why the journal cannot be written right now, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        self.unavailable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `seq` is durable. Fails (with the message an RPC returns) if the journal
    /// broke for good, or while it cannot be written: what is not durable is never acknowledged.
    pub async fn wait(&self, seq: u64) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let mut rx = self.durable.subscribe();
        loop {
            if let Some(e) = self.failure() {
                return Err(format!("dispatcher journal failed: {e}"));
            }
            if *rx.borrow_and_update() >= seq {
                return Ok(());
            }
            if let Some(e) = self.unavailable() {
                return Err(format!(
                    "the dispatcher cannot write its journal ({e}); this change was not \
                     acknowledged: retry once the dispatcher's disk has room again"
                ));
            }
            // The writer also signals failures by publishing, so this cannot wait forever.
            if rx.changed().await.is_err() {
                return Err("the journal writer stopped".into());
            }
        }
    }

    fn fail(&self, reason: String) {
        tracing::error!("journal failed, the dispatcher stops: {reason}");
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.durable.send_modify(|_| {});
    }

    /// Marks the journal unwritable.
    fn set_unavailable(&self, reason: &str) {
        *self.unavailable.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
        // Wake the RPCs waiting for durability: they fail now rather than hang.
        self.durable.send_modify(|_| {});
    }

    /// Marks the journal writable again; true if it was not until now.
    fn set_available(&self) -> bool {
        self.unavailable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some()
    }
}

/// A record as written: `{"format":N,"command":...}`.
#[derive(Serialize)]
struct RecordOut<'a> {
    format: u32,
    command: &'a Command,
}

/// A snapshot as written: `{"format":N,"state":...}`.
#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: u32,
    state: &'a State,
}

#[derive(Deserialize)]
struct RecordIn {
    format: u32,
    command: Command,
}

#[derive(Deserialize)]
struct SnapshotIn {
    format: u32,
    state: State,
}

/// A versioned payload (`{"format":N,...}`) and its body.
trait Versioned: DeserializeOwned {
    type Body: DeserializeOwned;
    fn format(&self) -> u32;
    fn body(self) -> Self::Body;
}

impl Versioned for RecordIn {
    type Body = Command;
    fn format(&self) -> u32 {
        self.format
    }
    fn body(self) -> Command {
        self.command
    }
}

impl Versioned for SnapshotIn {
    type Body = State;
    fn format(&self) -> u32 {
        self.format
    }
    fn body(self) -> State {
        self.state
    }
}

/// Only the version of a payload (every other field is skipped unparsed).
#[derive(Deserialize)]
struct FormatOnly {
    format: Option<u32>,
}

/// Serializes a command as a journal record.
pub fn encode(command: &Command) -> Record {
    serde_json::to_vec(&RecordOut {
        format: FORMAT_VERSION,
        command,
    })
    .map_err(|e| format!("command {} cannot be serialized: {e}", command.name()))
}

/// Serializes the state as a journal snapshot.
pub fn encode_snapshot(state: &State) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&SnapshotOut {
        format: FORMAT_VERSION,
        state,
    })
    .map_err(|e| format!("the state cannot be serialized for a snapshot: {e}"))
}

/// Parses a payload of either shape: versioned (`V`) or, without a `format` field, the bare
/// body of version 1. `what` and `seq` name it in errors.
///
/// A payload of a version this dispatcher reads (every payload it wrote itself) is parsed once.
/// Anything else (a bare body, a newer or a bad version, a payload that does not parse) is
/// probed for its version first, so that a newer payload is reported as such, never misread.
fn decode<V: Versioned>(bytes: &[u8], what: &str, seq: u64) -> Result<V::Body, String> {
    if let Ok(payload) = serde_json::from_slice::<V>(bytes)
        && (1..=FORMAT_VERSION).contains(&payload.format())
    {
        return Ok(payload.body());
    }
    // A payload that is not even an object has no version: it fails as a bare body below.
    let format = serde_json::from_slice::<FormatOnly>(bytes)
        .ok()
        .and_then(|f| f.format);
    let parsed = match format {
        Some(version) if version > FORMAT_VERSION => {
            return Err(format!(
                "{what} written by format version {version}; this dispatcher reads up to \
                 {FORMAT_VERSION} (seq {seq}: a newer dispatcher wrote it, run that one)"
            ));
        }
        Some(0) => {
            return Err(format!(
                "{what} at seq {seq} has format version 0, which does not exist"
            ));
        }
        Some(_) => serde_json::from_slice::<V>(bytes).map(V::body),
        None => serde_json::from_slice::<V::Body>(bytes),
    };
    parsed.map_err(|e| format!("{what} at seq {seq} does not parse: {e}"))
}

/// Parses a journal record (any version up to [`FORMAT_VERSION`]).
pub fn decode_record(seq: u64, bytes: &[u8]) -> Result<Command, String> {
    decode::<RecordIn>(bytes, "journal record", seq)
}

/// Parses a journal snapshot (any version up to [`FORMAT_VERSION`]).
pub fn decode_snapshot(seq: u64, bytes: &[u8]) -> Result<State, String> {
    decode::<SnapshotIn>(bytes, "journal snapshot", seq)
}

/// Rebuilds the state from what the journal recovered: the snapshot, then every later record
/// through the same `apply` that serves live requests.
pub fn replay(recovery: &Recovery) -> Result<(State, usize), String> {
    let mut state = match &recovery.snapshot {
        Some((seq, bytes)) => decode_snapshot(*seq, bytes)?,
        None => State::default(),
    };
    for (seq, bytes) in &recovery.records {
        let command = decode_record(*seq, bytes)?;
        state.apply(&command).map_err(|e| {
            format!(
                "journal record {seq} ({}) does not apply: {e}",
                command.name()
            )
        })?;
    }
    Ok((state, recovery.records.len()))
}

/// Records between snapshots by default (bounds replay time).
pub const SNAPSHOT_EVERY: u64 = 2_000;

/// Opens the journal in `dir` and replays it; a snapshot is taken every `snapshot_every`
/// records.
pub fn open(
    dir: &std::path::Path,
    snapshot_every: u64,
) -> Result<(Journal, State, String), String> {
    let started = Instant::now();
    let (journal, recovery) =
        Journal::open(dir, JournalOptions { snapshot_every }).map_err(|e| e.to_string())?;
    let (state, records) = replay(&recovery)?;
    let mut summary = format!(
        "journal replayed: {} record(s) after {} in {} ms (last seq {})",
        records,
        recovery
            .snapshot
            .as_ref()
            .map_or("no snapshot".to_string(), |(s, _)| format!(
                "the snapshot at seq {s}"
            )),
        started.elapsed().as_millis(),
        journal.last_seq()
    );
    if let Some(cut) = &recovery.cut_tail {
        summary.push_str(&format!("; torn tail cut: {cut}"));
    }
    Ok((journal, state, summary))
}

/// What the writer finds when it looks for work.
#[derive(Debug)]
pub enum Take {
    Batch(Batch),
    Idle,
    /// The dispatcher is gone: close the journal.
    Stop,
}

/// A batch the writer takes: records, their last sequence number, and a state copy if a snapshot
/// is due.
#[derive(Debug)]
pub struct Batch {
    pub records: Vec<Record>,
    pub last_seq: u64,
    pub snapshot: Option<State>,
}

/// The first wait before writing again after a failed write, doubled up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(2);
/// How often a lasting outage is logged again.
pub const REMIND_EVERY: Duration = Duration::from_secs(30);

/// What the writer tells the dispatcher (status events).
pub trait WriterHost: Send {
    /// The next batch to write (taken under the state lock).
    fn take(&mut self, snapshot_due: bool) -> Take;
    /// Publishes a status event of `kind`.
    fn event(&mut self, kind: EventKind, message: String);
    /// False once the dispatcher is gone (the writer then stops, even in the middle of an
    /// outage).
    fn alive(&self) -> bool;
    /// `records` records were made durable by one append (write and fsync) that took `took`.
    fn written(&mut self, _records: u64, _took: Duration) {}
}

/// Why a write did not go through.
#[derive(Debug)]
enum WriteError {
    /// A full or failing disk: the journal is reopened and the batch written again later.
    Transient(String),
    /// The journal is damaged or does not match the state: the dispatcher must stop.
    Fatal(String),
}

impl From<cachew_store::StoreError> for WriteError {
    fn from(e: cachew_store::StoreError) -> Self {
        if e.is_corruption() {
            WriteError::Fatal(e.to_string())
        } else {
            WriteError::Transient(e.to_string())
        }
    }
}

/// The writer task: takes batches from `host` (under the state lock) and makes them durable, one
/// fsync per batch. The writer ends (closing the journal) when `host` says the dispatcher is
/// gone.
///
/// A write that fails for want of space or with an I/O error (a failed fsync included) is not
/// retried on the same journal: the journal is dropped, reopened (which cuts a torn tail), and
/// the whole batch is written again to fresh pages ([`Journal::rewrite`]), every [`RETRY_MIN`]
/// to [`RETRY_MAX`], until it succeeds. Meanwhile the dispatcher acknowledges nothing new
/// (RPCs fail as unavailable; event `journal_unavailable`); once a write succeeds it resumes
/// (event `journal_recovered`). Damage found on reopening stops the dispatcher.
pub async fn writer(journal: Journal, durability: Arc<Durability>, mut host: impl WriterHost) {
    let Some(dir) = journal.db_path().parent().map(std::path::Path::to_path_buf) else {
        return durability.fail("the journal has no directory".into());
    };
    let options = journal.options().clone();
    let mut journal = Some(journal);
    let mut snapshot_due = false;
    loop {
        if let Some(j) = &journal {
            snapshot_due = j.snapshot_due();
        }
        let batch = match host.take(snapshot_due) {
            Take::Batch(b) => Arc::new(b),
            Take::Stop => return,
            Take::Idle => {
                // Re-check periodically too, in case a wake-up raced with the take.
                let _ = tokio::time::timeout(Duration::from_millis(50), durability.wake.notified())
                    .await;
                continue;
            }
        };
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        let mut outage: Option<Instant> = None;
        let mut reminded: Option<Instant> = None;
        loop {
            let acknowledged = *durability.durable.borrow();
            let current = journal.take();
            let (at, opts, todo) = (dir.clone(), options.clone(), batch.clone());
            let result = tokio::task::spawn_blocking(move || {
                write_batch(current, &at, &opts, &todo, acknowledged)
            })
            .await;
            match result {
                Ok(Ok((j, last, took))) => {
                    host.written(batch.records.len() as u64, took);
                    if let Some(j) = &j {
                        *durability.stats.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(j.stats());
                    }
                    journal = j;
                    durability.durable.send_replace(last);
                    if durability.set_available() {
                        let down = outage.map_or(0, |t| t.elapsed().as_millis());
                        let message = format!(
                            "the journal in {} is writable again after {down} ms; the \
                             dispatcher acknowledges changes again (durable up to seq {last})",
                            dir.display()
                        );
                        tracing::warn!("{message}");
                        host.event(EventKind::JournalRecovered, message);
                    }
                    break;
                }
                Ok(Err(WriteError::Fatal(e))) => return durability.fail(e),
                Ok(Err(WriteError::Transient(e))) => {
                    // The event goes out before the RPCs waiting on this batch fail, so a
                    // peer that sees the refusal also finds the reason in the status.
                    let first = durability.unavailable().is_none();
                    outage.get_or_insert_with(Instant::now);
                    if first {
                        reminded = Some(Instant::now());
                        let message = format!(
                            "the dispatcher cannot write its journal in {}: {e}; it acknowledges \
                             no change (RPCs that would change state fail as unavailable) and \
                             retries until the disk has room again",
                            dir.display()
                        );
                        tracing::error!("{message}");
                        host.event(EventKind::JournalUnavailable, message);
                    } else if reminded.is_none_or(|t| t.elapsed() >= REMIND_EVERY) {
                        reminded = Some(Instant::now());
                        tracing::error!(
                            "the journal in {} is still unwritable after {} s: {e}",
                            dir.display(),
                            outage.map_or(0, |t| t.elapsed().as_secs())
                        );
                    } else {
                        tracing::debug!("journal still unwritable: {e}");
                    }
                    durability.set_unavailable(&e);
                    if !host.alive() {
                        return;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return durability.fail(format!("journal writer panicked: {e}")),
            }
        }
    }
}

/// Writes `batch` (records `acknowledged + 1 ..= batch.last_seq`, and the snapshot if it has
/// one) durably. With no journal (the last write failed), reopens it first and writes the whole
/// batch again, checking that whatever of it the reopened journal shows is what was written.
fn write_batch(
    journal: Option<Journal>,
    dir: &std::path::Path,
    options: &JournalOptions,
    batch: &Batch,
    acknowledged: u64,
) -> Result<(Option<Journal>, u64, Duration), WriteError> {
    let count = batch.records.len() as u64;
    if batch.last_seq != acknowledged + count {
        return Err(WriteError::Fatal(format!(
            "the batch holds records up to {} but {count} record(s) after {acknowledged}",
            batch.last_seq
        )));
    }
    let refs = batch
        .records
        .iter()
        .zip(acknowledged + 1..)
        .map(|(record, seq)| {
            record.as_deref().map_err(|e| {
                WriteError::Fatal(format!("journal record {seq} cannot be written: {e}"))
            })
        })
        .collect::<Result<Vec<&[u8]>, WriteError>>()?;
    // Serialized before anything is written: a state that cannot be is never half-written.
    let snapshot = batch
        .snapshot
        .as_ref()
        .map(encode_snapshot)
        .transpose()
        .map_err(WriteError::Fatal)?;
    let started = Instant::now();
    let (mut journal, last) = match journal {
        Some(mut journal) => {
            let last = journal.append(&refs)?;
            (journal, last)
        }
        None => {
            let (mut journal, recovery) = Journal::open(dir, options.clone())?;
            check_reopened(&journal, &recovery, batch, &refs, acknowledged)?;
            let snapshot_seq = recovery.snapshot.as_ref().map_or(0, |(seq, _)| *seq);
            if snapshot_seq > acknowledged {
                // The failed write got as far as the snapshot (which covers the whole batch):
                // write the snapshot again; it needs no records.
                let last = journal.last_seq();
                (journal, last)
            } else {
                let last = journal.rewrite(acknowledged + 1, &refs)?;
                (journal, last)
            }
        }
    };
    if last != batch.last_seq {
        return Err(WriteError::Fatal(format!(
            "journal sequence {last} does not match the applied commands ({})",
            batch.last_seq
        )));
    }
    let took = started.elapsed();
    if let Some(bytes) = &snapshot {
        journal.snapshot(bytes)?;
        // Disk use stays bounded by the live state (see `cachew_store::journal`). Best effort:
        // the batch and its snapshot are durable already, so a compaction that fails (it writes
        // new tables, which a nearly full disk may refuse) must not hold back the
        // acknowledgement. The journal is reopened before the next write, as `compact` asks,
        // and the next snapshot compacts again.
        if let Err(e) = journal.compact() {
            tracing::warn!(
                "journal compaction failed (the batch is durable; retried at the next snapshot): {e}"
            );
            return Ok((None, last, took));
        }
    }
    Ok((Some(journal), last, took))
}

/// After a failed write: the reopened journal must hold every acknowledged record, and whatever
/// it shows beyond them must be the failed batch's own records (or its snapshot).
fn check_reopened(
    journal: &Journal,
    recovery: &Recovery,
    batch: &Batch,
    records: &[&[u8]],
    acknowledged: u64,
) -> Result<(), WriteError> {
    let last = journal.last_seq();
    if last < acknowledged {
        return Err(WriteError::Fatal(format!(
            "after reopening, the journal ends at record {last} but records up to {acknowledged} \
             were acknowledged"
        )));
    }
    if last > batch.last_seq {
        return Err(WriteError::Fatal(format!(
            "after reopening, the journal ends at record {last}, after the last record applied \
             ({})",
            batch.last_seq
        )));
    }
    if let Some((seq, _)) = &recovery.snapshot
        && *seq > acknowledged
        && (*seq != batch.last_seq || batch.snapshot.is_none())
    {
        return Err(WriteError::Fatal(format!(
            "after reopening, the journal has a snapshot at {seq} that no write asked for"
        )));
    }
    for (seq, payload) in &recovery.records {
        if *seq <= acknowledged {
            continue;
        }
        let index = usize::try_from(*seq - acknowledged - 1).unwrap_or(usize::MAX);
        if records.get(index) != Some(&payload.as_slice()) {
            return Err(WriteError::Fatal(format!(
                "after reopening, journal record {seq} differs from the record written"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> JournalOptions {
        JournalOptions { snapshot_every: 0 }
    }

    fn record(seq: u64) -> Vec<u8> {
        format!("{{\"record\":{seq}}}").into_bytes()
    }

    /// A journal in `dir` holding records `1..=n` (as left by a write that got them all in,
    /// whether or not it was acknowledged).
    fn journal_with(dir: &std::path::Path, n: u64) {
        let (mut journal, _) = Journal::open(dir, options()).unwrap();
        for seq in 1..=n {
            journal.append(&[&record(seq)]).unwrap();
        }
    }

    fn batch(seqs: std::ops::RangeInclusive<u64>) -> Batch {
        Batch {
            last_seq: *seqs.end(),
            records: seqs.map(|s| Ok(record(s))).collect(),
            snapshot: None,
        }
    }

    fn fatal(result: Result<(Option<Journal>, u64, Duration), WriteError>) -> String {
        match result {
            Err(WriteError::Fatal(e)) => e,
            Err(WriteError::Transient(e)) => panic!("transient, not fatal: {e}"),
            Ok((_, last, _)) => panic!("accepted, last seq {last}"),
        }
    }

    /// After a failed write, the reopened journal shows all, part or none of the batch: in
    /// every case the whole batch is written again and the journal ends with it, once each.
    #[test]
    fn a_reopened_journal_gets_the_whole_batch_whatever_of_it_survived() {
        for survived in 1..=4u64 {
            let dir = tempfile::tempdir().unwrap();
            journal_with(dir.path(), survived);
            let (journal, last, _) =
                write_batch(None, dir.path(), &options(), &batch(2..=4), 1).unwrap();
            let journal = journal.unwrap();
            assert_eq!((journal.last_seq(), last), (4, 4));
            drop(journal);
            let (_, recovery) = Journal::open(dir.path(), options()).unwrap();
            let expected: Vec<(u64, Vec<u8>)> = (1..=4).map(|s| (s, record(s))).collect();
            assert_eq!(recovery.records, expected, "{survived} record(s) survived");
        }
    }

    #[test]
    fn a_reopened_journal_that_disagrees_stops_the_dispatcher() {
        // Lost an acknowledged record.
        let dir = tempfile::tempdir().unwrap();
        journal_with(dir.path(), 1);
        let why = fatal(write_batch(None, dir.path(), &options(), &batch(3..=4), 2));
        assert!(why.contains("were acknowledged"), "{why}");
        // Holds a record the batch does not.
        let dir = tempfile::tempdir().unwrap();
        journal_with(dir.path(), 2);
        let mut other = batch(2..=3);
        other.records[0] = Ok(b"{\"other\":true}".to_vec());
        let why = fatal(write_batch(None, dir.path(), &options(), &other, 1));
        assert!(why.contains("differs"), "{why}");
        // Runs past what was applied.
        let dir = tempfile::tempdir().unwrap();
        journal_with(dir.path(), 5);
        let why = fatal(write_batch(None, dir.path(), &options(), &batch(2..=4), 1));
        assert!(why.contains("after the last record applied"), "{why}");
    }

    fn register(address: &str) -> Command {
        Command::RegisterWorker {
            address: address.into(),
            standby: false,
            threads: 4,
            claims: Vec::new(),
        }
    }

    /// A journal in `dir` holding `payloads` as records 1.., and its snapshot if given.
    fn journal_of(dir: &std::path::Path, snapshot: Option<&[u8]>, payloads: &[&[u8]]) {
        let (mut journal, _) = Journal::open(dir, options()).unwrap();
        if let Some(state) = snapshot {
            journal.snapshot(state).unwrap();
        }
        journal.append(payloads).unwrap();
    }

    fn open_error(dir: &std::path::Path) -> String {
        match open(dir, 0) {
            Err(e) => e,
            Ok((journal, _, _)) => panic!("opened, last seq {}", journal.last_seq()),
        }
    }

    #[test]
    fn records_and_snapshots_carry_the_format_version_and_read_back() {
        let command = register("w:1");
        let record = encode(&command).unwrap();
        assert!(
            record.starts_with(br#"{"format":1,"command":{"RegisterWorker":"#),
            "{}",
            String::from_utf8_lossy(&record)
        );
        assert_eq!(decode_record(1, &record).unwrap(), command);

        let mut state = State::default();
        state.apply(&command).unwrap();
        let snapshot = encode_snapshot(&state).unwrap();
        assert!(snapshot.starts_with(br#"{"format":1,"state":{"workers":"#));
        assert_eq!(decode_snapshot(1, &snapshot).unwrap(), state);

        let dir = tempfile::tempdir().unwrap();
        journal_of(
            dir.path(),
            Some(&snapshot),
            &[&encode(&register("w:2")).unwrap()],
        );
        let (_, replayed, _) = open(dir.path(), 0).unwrap();
        state.apply(&register("w:2")).unwrap();
        assert_eq!(replayed, state);
    }

    /// Records and snapshots as the release before payload versions wrote them (no `format`)
    /// are version 1, and replay beside versioned ones.
    #[test]
    fn an_old_record_and_snapshot_without_the_field_replay_as_version_1() {
        let old_snapshot = br#"{"workers":{},"datasets":{},"jobs":{},"next_worker_id":1,"next_job_id":1,"next_lease":1}"#;
        let old_record =
            br#"{"RegisterWorker":{"address":"w:1","standby":false,"threads":4,"claims":[]}}"#;
        assert_eq!(decode_record(1, old_record).unwrap(), register("w:1"));
        let dir = tempfile::tempdir().unwrap();
        let new_record = encode(&register("w:2")).unwrap();
        journal_of(dir.path(), Some(old_snapshot), &[old_record, &new_record]);
        let (journal, replayed, _) = open(dir.path(), 0).unwrap();
        assert_eq!(journal.last_seq(), 2);
        let mut expected: State = serde_json::from_slice(old_snapshot).unwrap();
        expected.apply(&register("w:1")).unwrap();
        expected.apply(&register("w:2")).unwrap();
        assert_eq!(replayed, expected);
        assert_eq!(replayed.workers.len(), 2);

        // A state with content, and commands, serialized bare as that release's writer did.
        let mut state = State::default();
        state.apply(&register("w:1")).unwrap();
        let bare_snapshot = serde_json::to_vec(&state).unwrap();
        let bare_record = serde_json::to_vec(&register("w:2")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        journal_of(dir.path(), Some(&bare_snapshot), &[&bare_record]);
        let (_, replayed, _) = open(dir.path(), 0).unwrap();
        state.apply(&register("w:2")).unwrap();
        assert_eq!(replayed, state);
    }

    #[test]
    fn a_newer_format_version_is_refused_at_open_never_misread() {
        // A record a newer dispatcher wrote, even one that would parse as today's command.
        let newer = br#"{"format":2,"command":{"RegisterWorker":{"address":"w:9","standby":false,"threads":4,"claims":[]}}}"#;
        let dir = tempfile::tempdir().unwrap();
        journal_of(
            dir.path(),
            None,
            &[&encode(&register("w:1")).unwrap(), newer],
        );
        let why = open_error(dir.path());
        assert!(
            why.contains(
                "journal record written by format version 2; this dispatcher reads up to 1"
            ),
            "{why}"
        );
        assert!(why.contains("seq 2"), "{why}");

        // And one whose command no longer parses as today's: the version is what is reported.
        let renamed = br#"{"format":7,"command":{"Renamed":{}}}"#;
        let why = decode_record(3, renamed).unwrap_err();
        assert!(
            why.contains("format version 7; this dispatcher reads up to 1"),
            "{why}"
        );

        let dir = tempfile::tempdir().unwrap();
        journal_of(dir.path(), Some(br#"{"format":2,"state":{}}"#), &[]);
        let why = open_error(dir.path());
        assert!(
            why.contains(
                "journal snapshot written by format version 2; this dispatcher reads up to 1"
            ),
            "{why}"
        );
    }

    #[test]
    fn a_payload_that_does_not_parse_names_its_sequence_number() {
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            br#"{"format":1}"#,
            br#"{"format":0,"command":{}}"#,
        ] {
            let why = decode_record(5, bad).unwrap_err();
            assert!(why.contains("journal record at seq 5"), "{why}");
        }
    }

    /// A command that could not be serialized fails the journal; nothing is written for it.
    #[test]
    fn a_record_that_could_not_be_serialized_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        journal_with(dir.path(), 1);
        let (journal, _) = Journal::open(dir.path(), options()).unwrap();
        let mut failed = batch(2..=3);
        failed.records[1] = Err("command assign_tasks cannot be serialized: test".into());
        let why = fatal(write_batch(
            Some(journal),
            dir.path(),
            &options(),
            &failed,
            1,
        ));
        assert!(why.contains("journal record 3 cannot be written"), "{why}");
        assert!(why.contains("cannot be serialized: test"), "{why}");
        let (_, recovery) = Journal::open(dir.path(), options()).unwrap();
        assert_eq!(recovery.records, vec![(1, record(1))]);
    }

    /// The failed write got as far as its snapshot: the snapshot is written again.
    #[test]
    fn a_surfaced_snapshot_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::default();
        {
            let (mut journal, _) = Journal::open(dir.path(), options()).unwrap();
            for seq in 1..=3 {
                journal.append(&[&record(seq)]).unwrap();
            }
            journal
                .snapshot(&serde_json::to_vec(&state).unwrap())
                .unwrap();
        }
        let mut with_snapshot = batch(2..=3);
        with_snapshot.snapshot = Some(state.clone());
        let (journal, last, _) =
            write_batch(None, dir.path(), &options(), &with_snapshot, 1).unwrap();
        let journal = journal.expect("compaction succeeds on a healthy disk");
        assert_eq!((journal.last_seq(), last), (3, 3));
        drop(journal);
        let (_, recovery) = Journal::open(dir.path(), options()).unwrap();
        assert_eq!(recovery.snapshot.map(|(seq, _)| seq), Some(3));
        assert!(recovery.records.is_empty());
        // A snapshot no write asked for is refused.
        let why = fatal(write_batch(None, dir.path(), &options(), &batch(2..=3), 1));
        assert!(why.contains("no write asked for"), "{why}");
    }
}
