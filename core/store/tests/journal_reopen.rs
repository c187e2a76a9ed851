//! Records, sequence numbers, snapshots and their collection survive reopening exactly.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use cachew_store::{DB_DIR, Journal, JournalOptions, Recovery, StoreError};
use common::{record, scratch};

/// What the journal should hold: the snapshot and the records after it.
#[derive(Debug, Default)]
struct Model {
    snapshot: Option<(u64, Vec<u8>)>,
    records: Vec<(u64, Vec<u8>)>,
    last_seq: u64,
}

impl Model {
    fn check(&self, recovery: &Recovery, journal: &Journal) {
        assert_eq!(recovery.snapshot, self.snapshot);
        assert_eq!(recovery.records, self.records);
        assert_eq!(recovery.cut_tail, None);
        assert_eq!(journal.last_seq(), self.last_seq);
        let stats = journal.stats();
        assert_eq!(stats.last_seq, self.last_seq);
        assert_eq!(stats.records_since_snapshot, self.records.len() as u64);
        assert_eq!(
            stats.last_snapshot_seq,
            self.snapshot.as_ref().map_or(0, |s| s.0)
        );
        assert_eq!(
            stats.last_snapshot_unix_ms.is_some(),
            self.snapshot.is_some()
        );
        assert_eq!(stats.bytes_appended, 0, "counted per process");
    }

    /// The caller's state: here, a digest of every record applied so far.
    fn state(&self) -> Vec<u8> {
        let mut state = self.snapshot.as_ref().map_or(Vec::new(), |s| s.1.clone());
        for (seq, payload) in &self.records {
            state.extend_from_slice(&seq.to_le_bytes());
            state.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        }
        state
    }
}

/// Number of keys fjall still holds in the journal's `records` keyspace.
fn stored_records(dir: &Path) -> usize {
    let db = fjall::Database::builder(dir.join(DB_DIR)).open().unwrap();
    let records = db
        .keyspace("records", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    records.len().unwrap()
}

#[test]
fn reopen_loop_keeps_records_and_sequence_numbers_exactly() {
    let work = scratch();
    let dir = work.path().join("journal");
    let options = JournalOptions { snapshot_every: 0 };
    let mut model = Model::default();
    for round in 0..8u64 {
        let (mut journal, recovery) = Journal::open(&dir, options.clone()).unwrap();
        model.check(&recovery, &journal);
        for (i, batch) in [1u64, 0, 7, 64, 2].into_iter().enumerate() {
            let payloads: Vec<Vec<u8>> = (0..batch)
                .map(|j| record(model.last_seq + j + 1, 10 + (round as usize * 13 + i) % 200))
                .collect();
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let last = journal.append(&refs).unwrap();
            for payload in payloads {
                model.last_seq += 1;
                model.records.push((model.last_seq, payload));
            }
            assert_eq!(last, model.last_seq, "round {round} batch {i}");
        }
        if round % 3 == 1 {
            let state = model.state();
            journal.snapshot(&state).unwrap();
            model.snapshot = Some((model.last_seq, state));
            model.records.clear();
            // More records after the snapshot, then reopen.
            let last = journal.append(&[b"after snapshot".as_slice()]).unwrap();
            model.last_seq += 1;
            assert_eq!(last, model.last_seq);
            model.records.push((last, b"after snapshot".to_vec()));
        }
    }
    let (journal, recovery) = Journal::open(&dir, options).unwrap();
    model.check(&recovery, &journal);
    assert_eq!(journal.last_seq(), 8 * 74 + 3);
}

#[test]
fn snapshot_collects_covered_records_and_recovery_is_snapshot_plus_later_records() {
    let work = scratch();
    let dir = work.path().join("journal");
    let options = JournalOptions {
        snapshot_every: 100,
    };
    {
        let (mut journal, _) = Journal::open(&dir, options.clone()).unwrap();
        for seq in 1..=99 {
            journal.append(&[&record(seq, 30)]).unwrap();
            assert!(!journal.snapshot_due());
        }
        journal.append(&[&record(100, 30)]).unwrap();
        assert!(journal.snapshot_due());
        journal.snapshot(b"state after 100").unwrap();
        assert!(!journal.snapshot_due());
        let stats = journal.stats();
        assert_eq!(
            (stats.last_snapshot_seq, stats.records_since_snapshot),
            (100, 0)
        );
        assert_eq!(stats.bytes_appended, 100 * 30);
        for seq in 101..=105 {
            journal.append(&[&record(seq, 30)]).unwrap();
        }
    }
    assert_eq!(stored_records(&dir), 5, "records 1..=100 are collected");

    let (mut journal, recovery) = Journal::open(&dir, options.clone()).unwrap();
    assert_eq!(recovery.snapshot, Some((100, b"state after 100".to_vec())));
    let later: Vec<(u64, Vec<u8>)> = (101..=105).map(|s| (s, record(s, 30))).collect();
    assert_eq!(recovery.records, later);

    // A second snapshot replaces the first and collects 101..=105.
    journal.snapshot(b"state after 105").unwrap();
    drop(journal);
    assert_eq!(stored_records(&dir), 0);
    let (journal, recovery) = Journal::open(&dir, options).unwrap();
    assert_eq!(recovery.snapshot, Some((105, b"state after 105".to_vec())));
    assert!(recovery.records.is_empty());
    assert_eq!(journal.last_seq(), 105);
    assert!(journal.stats().last_snapshot_unix_ms.is_some());
}

#[test]
fn snapshot_of_an_empty_journal_and_empty_appends() {
    let work = scratch();
    let dir = work.path().join("journal");
    let (mut journal, recovery) = Journal::open(&dir, JournalOptions::default()).unwrap();
    assert_eq!(recovery, Recovery::default());
    assert_eq!(journal.append(&[]).unwrap(), 0);
    journal.snapshot(b"").unwrap();
    assert_eq!(
        journal.append(&[b""]).unwrap(),
        1,
        "empty records are records"
    );
    drop(journal);
    let (journal, recovery) = Journal::open(&dir, JournalOptions::default()).unwrap();
    assert_eq!(recovery.snapshot, Some((0, Vec::new())));
    assert_eq!(recovery.records, vec![(1, Vec::new())]);
    assert_eq!(journal.last_seq(), 1);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let work = scratch();
    let dir = work.path().join("journal");
    let (_journal, _) = Journal::open(&dir, JournalOptions::default()).unwrap();
    assert!(matches!(
        Journal::open(&dir, JournalOptions::default()),
        Err(StoreError::Locked { .. })
    ));
}

#[test]
fn an_unfinished_creation_is_redone_but_a_database_without_its_marker_is_not_deleted() {
    // fjall writes `version` last when it creates a database; a crash before that leaves a
    // preallocated `0.jnl` that makes fjall's own create fail.
    let work = scratch();
    let dir = work.path().join("journal");
    let db = dir.join(DB_DIR);
    std::fs::create_dir_all(db.join("keyspaces")).unwrap();
    std::fs::File::create(db.join("0.jnl"))
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    std::fs::File::create(db.join("lock")).unwrap();
    let (mut journal, recovery) = Journal::open(&dir, JournalOptions::default()).unwrap();
    assert_eq!(recovery, Recovery::default());
    journal.append(&[b"one"]).unwrap();
    drop(journal);

    // With data in it, a missing marker is an error and nothing is removed.
    std::fs::remove_file(db.join("version")).unwrap();
    let err = Journal::open(&dir, JournalOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedFormat { .. }), "{err}");
    assert!(db.join("keyspaces").read_dir().unwrap().next().is_some());
}
