//! A crash during the last append, at every byte boundary: recovery gives the previous
//! consistent state (or the full one at the full length), never a half-applied batch, reports
//! the cut, and the journal goes on from there.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use cachew_store::{Journal, JournalOptions};
use common::{DirImage, changed_journal, materialize, record, scratch, torn_states};

const PAYLOAD: usize = 24;

fn options() -> JournalOptions {
    JournalOptions { snapshot_every: 0 }
}

fn expected(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    seqs.map(|s| (s, record(s, PAYLOAD))).collect()
}

/// Appends records 1..=9 (one by one, then a batch of five), optionally reopens, then appends
/// `last_batch` more records as one batch and tears that append at every byte boundary.
fn tear_last_append(reopen_before_last: bool, last_batch: u64) {
    let started = Instant::now();
    let work = scratch();
    let dir = work.path().join("journal");
    let (before, after) = {
        let (mut journal, _) = Journal::open(&dir, options()).unwrap();
        for seq in 1..=4 {
            assert_eq!(journal.append(&[&record(seq, PAYLOAD)]).unwrap(), seq);
        }
        let batch: Vec<Vec<u8>> = (5..=9).map(|s| record(s, PAYLOAD)).collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        assert_eq!(journal.append(&refs).unwrap(), 9);
        if reopen_before_last {
            drop(journal);
            let (reopened, recovery) = Journal::open(&dir, options()).unwrap();
            assert_eq!(recovery.records, expected(1..=9));
            journal = reopened;
        }
        let before = DirImage::capture(&dir);
        let last: Vec<Vec<u8>> = (10..10 + last_batch).map(|s| record(s, PAYLOAD)).collect();
        let refs: Vec<&[u8]> = last.iter().map(Vec::as_slice).collect();
        assert_eq!(journal.append(&refs).unwrap(), 9 + last_batch);
        (before, DirImage::capture(&dir))
    };

    let jnl = changed_journal(&before, &after);
    let (first, last, variants) = torn_states(&before.files[&jnl], &after.files[&jnl]);
    if reopen_before_last {
        // After a recovery fjall reopens its journal in append mode: the append grew the file.
        assert_eq!(after.files[&jnl].len, last);
        assert_eq!(before.files[&jnl].len, first);
    } else {
        // A fresh journal file is preallocated: the append wrote into zeros.
        assert_eq!(before.files[&jnl].len, after.files[&jnl].len);
    }
    let batch_bytes = last - first;
    let count = variants.len();
    for (k, torn) in variants {
        let case = work.path().join(format!("torn-{k}"));
        materialize(&before, &jnl, &torn, &case);
        let (mut journal, recovery) = Journal::open(&case, options())
            .unwrap_or_else(|e| panic!("boundary {k} of {first}..={last}: {e}"));
        let complete = k == last;
        let last_seq = if complete { 9 + last_batch } else { 9 };
        assert_eq!(recovery.records, expected(1..=last_seq), "boundary {k}");
        assert_eq!(recovery.snapshot, None);
        assert_eq!(journal.last_seq(), last_seq, "boundary {k}");
        match &recovery.cut_tail {
            Some(cut) => {
                assert!(k > first && !complete, "boundary {k}: unexpected cut {cut}");
                assert!(
                    cut.contains(&*jnl.file_name().unwrap().to_string_lossy()),
                    "{cut}"
                );
                assert!(
                    cut.contains(&format!("{} bytes at byte offset {first}", k - first))
                        || cut.contains(&format!("at byte offset {first}")),
                    "{cut}"
                );
            }
            None => assert!(
                k == first || complete,
                "boundary {k}: torn tail not reported"
            ),
        }
        // The journal goes on: the next record gets the next number and survives a reopen.
        let next = last_seq + 1;
        assert_eq!(journal.append(&[b"after the crash"]).unwrap(), next);
        drop(journal);
        let (_, again) = Journal::open(&case, options()).unwrap();
        assert_eq!(again.cut_tail, None, "boundary {k}");
        assert_eq!(again.records.len() as u64, next);
        assert_eq!(
            again.records.last().unwrap(),
            &(next, b"after the crash".to_vec())
        );
        std::fs::remove_dir_all(&case).unwrap();
    }
    eprintln!(
        "torn append (reopened first: {reopen_before_last}, {last_batch} records, {batch_bytes} bytes): \
         {count} boundaries in {:?}",
        started.elapsed()
    );
}

#[test]
fn torn_single_record_append_into_a_grown_journal() {
    tear_last_append(true, 1);
}

#[test]
fn torn_batch_append_into_a_grown_journal_is_all_or_nothing() {
    tear_last_append(true, 3);
}

#[test]
fn torn_append_into_a_preallocated_journal() {
    tear_last_append(false, 2);
}
