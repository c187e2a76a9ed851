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
//! If the journal cannot be written, the dispatcher stops serving (every waiting RPC fails as
//! unavailable and [`crate::serve`] returns the error): running on without durability would let
//! a restart forget what workers and clients were told.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    pub failed: Mutex<Option<String>>,
    pub stats: Mutex<Option<JournalStats>>,
    pub enabled: bool,
}

impl Durability {
    pub fn disabled() -> Arc<Durability> {
        Arc::new(Durability {
            durable: watch::channel(u64::MAX).0,
            wake: Notify::new(),
            failed: Mutex::new(None),
            stats: Mutex::new(None),
            enabled: false,
        })
    }

    pub fn enabled(last_seq: u64, stats: JournalStats) -> Arc<Durability> {
        Arc::new(Durability {
            durable: watch::channel(last_seq).0,
            wake: Notify::new(),
            failed: Mutex::new(None),
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

    /// Waits until `seq` is durable; fails if the journal broke.
    pub async fn wait(&self, seq: u64) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let mut rx = self.durable.subscribe();
        loop {
            if let Some(e) = self.failure() {
                return Err(e);
            }
            if *rx.borrow_and_update() >= seq {
                return Ok(());
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

/// The writer task: takes batches from `take` (which runs under the state lock) and makes them
/// durable, one fsync per batch.
/// The writer ends (closing the journal) when `take` says the dispatcher is gone.
pub async fn writer(
    mut journal: Journal,
    durability: Arc<Durability>,
    mut take: impl FnMut(bool) -> Take + Send,
) {
    loop {
        let batch = match take(journal.snapshot_due()) {
            Take::Batch(b) => b,
            Take::Stop => return,
            Take::Idle => {
                // Re-check periodically too, in case a wake-up raced with the take.
                let _ = tokio::time::timeout(Duration::from_millis(50), durability.wake.notified())
                    .await;
                continue;
            }
        };
        let result = tokio::task::spawn_blocking(move || {
            let refs: Vec<&[u8]> = batch.records.iter().map(Vec::as_slice).collect();
            let last = journal.append(&refs).map_err(|e| e.to_string())?;
            if last != batch.last_seq {
                return Err(format!(
                    "journal sequence {last} does not match the applied commands ({})",
                    batch.last_seq
                ));
            }
            if let Some(state) = &batch.snapshot {
                let bytes = serde_json::to_vec(state).map_err(|e| e.to_string())?;
                journal.snapshot(&bytes).map_err(|e| e.to_string())?;
            }
            Ok((journal, last))
        })
        .await;
        match result {
            Ok(Ok((j, last))) => {
                journal = j;
                *durability.stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(journal.stats());
                durability.durable.send_replace(last);
            }
            Ok(Err(e)) => return durability.fail(e),
            Err(e) => return durability.fail(format!("journal writer panicked: {e}")),
        }
    }
}
