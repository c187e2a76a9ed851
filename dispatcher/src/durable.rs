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

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachew_proto::backoff::Backoff;
use cachew_store::{Journal, JournalOptions, JournalStats, Recovery};
use tokio::sync::{Notify, watch};

use crate::state::{Command, State};

/// Commands applied but not yet handed to the writer.
#[derive(Debug, Default)]
pub struct Pending {
    pub records: Vec<Vec<u8>>,
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

/// Serializes a command as a journal record.
pub fn encode(command: &Command) -> Vec<u8> {
    // Plain data: serialization cannot fail.
    serde_json::to_vec(command).unwrap_or_default()
}

/// Rebuilds the state from what the journal recovered: the snapshot, then every later record
/// through the same `apply` that serves live requests.
pub fn replay(recovery: &Recovery) -> Result<(State, usize), String> {
    let mut state = match &recovery.snapshot {
        Some((seq, bytes)) => serde_json::from_slice(bytes)
            .map_err(|e| format!("snapshot at seq {seq} does not parse: {e}"))?,
        None => State::default(),
    };
    for (seq, bytes) in &recovery.records {
        let command: Command = serde_json::from_slice(bytes)
            .map_err(|e| format!("journal record {seq} does not parse: {e}"))?;
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
    pub records: Vec<Vec<u8>>,
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
    fn event(&mut self, kind: &'static str, message: String);
    /// False once the dispatcher is gone (the writer then stops, even in the middle of an
    /// outage).
    fn alive(&self) -> bool;
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
                Ok(Ok((j, last))) => {
                    *durability.stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(j.stats());
                    journal = Some(j);
                    durability.durable.send_replace(last);
                    if durability.set_available() {
                        let down = outage.map_or(0, |t| t.elapsed().as_millis());
                        let message = format!(
                            "the journal in {} is writable again after {down} ms; the \
                             dispatcher acknowledges changes again (durable up to seq {last})",
                            dir.display()
                        );
                        tracing::warn!("{message}");
                        host.event("journal_recovered", message);
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
                        host.event("journal_unavailable", message);
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
) -> Result<(Journal, u64), WriteError> {
    let count = batch.records.len() as u64;
    if batch.last_seq != acknowledged + count {
        return Err(WriteError::Fatal(format!(
            "the batch holds records up to {} but {count} record(s) after {acknowledged}",
            batch.last_seq
        )));
    }
    let refs: Vec<&[u8]> = batch.records.iter().map(Vec::as_slice).collect();
    let (mut journal, last) = match journal {
        Some(mut journal) => {
            let last = journal.append(&refs)?;
            (journal, last)
        }
        None => {
            let (mut journal, recovery) = Journal::open(dir, options.clone())?;
            check_reopened(&journal, &recovery, batch, acknowledged)?;
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
    if let Some(state) = &batch.snapshot {
        let bytes = serde_json::to_vec(state).map_err(|e| WriteError::Fatal(e.to_string()))?;
        journal.snapshot(&bytes)?;
    }
    Ok((journal, last))
}

/// After a failed write: the reopened journal must hold every acknowledged record, and whatever
/// it shows beyond them must be the failed batch's own records (or its snapshot).
fn check_reopened(
    journal: &Journal,
    recovery: &Recovery,
    batch: &Batch,
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
        if batch.records.get(index) != Some(payload) {
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
            records: seqs.map(record).collect(),
            snapshot: None,
        }
    }

    fn fatal(result: Result<(Journal, u64), WriteError>) -> String {
        match result {
            Err(WriteError::Fatal(e)) => e,
            Err(WriteError::Transient(e)) => panic!("transient, not fatal: {e}"),
            Ok((_, last)) => panic!("accepted, last seq {last}"),
        }
    }

    /// After a failed write, the reopened journal shows all, part or none of the batch: in
    /// every case the whole batch is written again and the journal ends with it, once each.
    #[test]
    fn a_reopened_journal_gets_the_whole_batch_whatever_of_it_survived() {
        for survived in 1..=4u64 {
            let dir = tempfile::tempdir().unwrap();
            journal_with(dir.path(), survived);
            let (journal, last) =
                write_batch(None, dir.path(), &options(), &batch(2..=4), 1).unwrap();
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
        other.records[0] = b"{\"other\":true}".to_vec();
        let why = fatal(write_batch(None, dir.path(), &options(), &other, 1));
        assert!(why.contains("differs"), "{why}");
        // Runs past what was applied.
        let dir = tempfile::tempdir().unwrap();
        journal_with(dir.path(), 5);
        let why = fatal(write_batch(None, dir.path(), &options(), &batch(2..=4), 1));
        assert!(why.contains("after the last record applied"), "{why}");
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
        let (journal, last) = write_batch(None, dir.path(), &options(), &with_snapshot, 1).unwrap();
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
