//! Both stores on a small tmpfs that fills up: a write that does not fit fails with an error
//! that says so (and acknowledges nothing), everything written before it reads back intact, and
//! writing works again once space is freed. Needs root to mount the tmpfs (see `tmpfs.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/tmpfs.rs"]
mod tmpfs;

use cachew_store::{CheckpointStore, Journal, JournalOptions};
use tmpfs::Tmpfs;

/// A record too large to fit into the last partly used page of a file.
fn record(seq: u64) -> Vec<u8> {
    let mut r = format!("record {seq}:").into_bytes();
    r.resize(16 * 1024, (seq % 251) as u8);
    r
}

fn options() -> JournalOptions {
    JournalOptions { snapshot_every: 0 }
}

#[test]
fn a_full_disk_fails_journal_appends_keeps_every_acknowledged_record_and_recovers() {
    let fs = Tmpfs::mount(2048);
    let dir = fs.path().join("journal");
    let (mut journal, recovery) = Journal::open(&dir, options()).unwrap();
    assert!(recovery.records.is_empty());
    for seq in 1..=10 {
        let r = record(seq);
        assert_eq!(journal.append(&[&r]).unwrap(), seq);
    }

    fs.fill();
    let big: Vec<Vec<u8>> = (11..=14).map(record).collect();
    let refs: Vec<&[u8]> = big.iter().map(Vec::as_slice).collect();
    let err = journal
        .append(&refs)
        .expect_err("an append must fail on a full disk");
    assert!(err.is_disk_full(), "the error says the disk is full: {err}");
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "the error names the journal: {err}"
    );
    assert_eq!(journal.last_seq(), 10, "nothing of the failed batch counts");
    // The journal that failed refuses further writes rather than pretending.
    assert!(journal.append(&[&record(11)]).is_err());
    drop(journal);

    // Reopened while the disk is still full: every acknowledged record, nothing of the failed
    // batch (a torn tail of it is cut).
    let (journal, recovery) = Journal::open(&dir, options()).unwrap();
    let seqs: Vec<u64> = recovery.records.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    for (seq, payload) in &recovery.records {
        assert_eq!(payload, &record(*seq), "record {seq} intact");
    }
    assert_eq!(journal.last_seq(), 10);
    drop(journal);

    // Space back: appends work again, and continue the sequence without a gap.
    fs.free();
    let (mut journal, _) = Journal::open(&dir, options()).unwrap();
    assert_eq!(journal.append(&refs).unwrap(), 14);
    drop(journal);
    let (_, recovery) = Journal::open(&dir, options()).unwrap();
    let seqs: Vec<u64> = recovery.records.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=14).collect::<Vec<_>>());
    for (seq, payload) in &recovery.records {
        assert_eq!(payload, &record(*seq));
    }
}

#[test]
fn rewriting_the_records_of_a_failed_write_makes_them_durable_once() {
    let fs = Tmpfs::mount(2048);
    let dir = fs.path().join("journal");
    let (mut journal, _) = Journal::open(&dir, options()).unwrap();
    for seq in 1..=3 {
        journal.append(&[&record(seq)]).unwrap();
    }
    // As if records 3..=5 were of a failed write the reopened journal shows in part.
    let again: Vec<Vec<u8>> = (3..=5).map(record).collect();
    let refs: Vec<&[u8]> = again.iter().map(Vec::as_slice).collect();
    assert_eq!(journal.rewrite(3, &refs).unwrap(), 5);
    assert!(journal.rewrite(7, &refs).is_err(), "a gap is refused");
    journal.snapshot(b"state at 5").unwrap();
    assert!(
        journal.rewrite(5, &refs).is_err(),
        "covered records are refused"
    );
    drop(journal);
    let (journal, recovery) = Journal::open(&dir, options()).unwrap();
    assert_eq!(recovery.snapshot, Some((5, b"state at 5".to_vec())));
    assert!(recovery.records.is_empty());
    assert_eq!(journal.last_seq(), 5);
}

#[test]
fn a_full_disk_fails_checkpoints_keeps_the_last_one_and_recovers() {
    let fs = Tmpfs::mount(2048);
    let dir = fs.path().join("checkpoints");
    let (mut store, newest) = CheckpointStore::open(&dir).unwrap();
    assert!(newest.is_none());
    for seq in 1..=3 {
        store.write(&record(seq)).unwrap();
    }

    fs.fill();
    let err = store
        .write(&record(4))
        .expect_err("a checkpoint must fail on a full disk");
    assert!(err.is_disk_full(), "the error says the disk is full: {err}");
    drop(store);

    let (store, newest) = CheckpointStore::open(&dir).unwrap();
    let newest = newest.expect("the last good checkpoint survives");
    assert_eq!((newest.seq, newest.payload), (3, record(3)));
    let summary = CheckpointStore::peek(&dir).unwrap().unwrap();
    assert_eq!(summary.seq, 3, "the summary still describes checkpoint 3");
    drop(store);
    // A summary to repair does not keep the store from opening on a full disk.
    std::fs::remove_file(dir.join(cachew_store::checkpoint::SUMMARY_FILE)).unwrap();
    fs.fill(); // the page the summary held too
    let (store, newest) = CheckpointStore::open(&dir).unwrap();
    assert_eq!(newest.unwrap().seq, 3);
    assert_eq!(
        CheckpointStore::peek(&dir).unwrap(),
        None,
        "no room to repair the summary"
    );
    drop(store);

    fs.free();
    let (mut store, _) = CheckpointStore::open(&dir).unwrap();
    let stats = store.write(&record(5)).unwrap();
    assert!(stats.last_seq > 3);
    drop(store);
    let (_, newest) = CheckpointStore::open(&dir).unwrap();
    assert_eq!(newest.unwrap().payload, record(5));
    assert_eq!(
        CheckpointStore::peek(&dir).unwrap().unwrap().seq,
        stats.last_seq
    );
}
