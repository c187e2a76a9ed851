//! A crash during the last write, at every byte boundary: recovery gives the previous
//! consistent state (or the new one at the full length), never a half-applied batch, reports
//! the cut, and the journal goes on from there.
#![allow(clippy::unwrap_used)]

mod common;

use std::ops::Range;
use std::time::Instant;

use cachew_store::{Journal, JournalOptions, Recovery};
use common::{DirImage, FileImage, changed_journal, materialize, record, scratch, torn_states};

const PAYLOAD: usize = 24;

fn options() -> JournalOptions {
    JournalOptions { snapshot_every: 0 }
}

fn records(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    seqs.map(|s| (s, record(s, PAYLOAD))).collect()
}

/// Appends records 1..=9 (one by one, then a batch of five), optionally reopens, then runs
/// `last_write` and tears it at every byte boundary. Every torn state must recover to
/// records 1..=9 except the complete one, which must recover to `new`.
fn tear_last_write(reopen_first: bool, last_write: impl FnOnce(&mut Journal), new: Recovery) {
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
        if reopen_first {
            drop(journal);
            let (reopened, recovery) = Journal::open(&dir, options()).unwrap();
            assert_eq!(recovery.records, records(1..=9));
            journal = reopened;
        }
        let before = DirImage::capture(&dir);
        last_write(&mut journal);
        (before, DirImage::capture(&dir))
    };

    let jnl = changed_journal(&before, &after);
    let (first, last, variants) = torn_states(&before.files[&jnl], &after.files[&jnl]);
    if reopen_first {
        // After a recovery fjall reopens its journal in append mode: the write grew the file.
        assert_eq!(
            (before.files[&jnl].len, after.files[&jnl].len),
            (first, last)
        );
    } else {
        // A fresh journal file is preallocated: the write went into its zeros.
        assert_eq!(before.files[&jnl].len, after.files[&jnl].len);
    }
    let new_last_seq = new
        .records
        .last()
        .map_or_else(|| new.snapshot.as_ref().map_or(0, |s| s.0), |r| r.0);
    let count = variants.len();
    for (k, torn) in variants {
        let case = work.path().join(format!("torn-{k}"));
        materialize(&before, &jnl, &torn, &case);
        let (mut journal, recovery) = Journal::open(&case, options())
            .unwrap_or_else(|e| panic!("boundary {k} of {first}..={last}: {e}"));
        let complete = k == last;
        let (snapshot, replay, last_seq) = if complete {
            (new.snapshot.clone(), new.records.clone(), new_last_seq)
        } else {
            (None, records(1..=9), 9)
        };
        let Recovery {
            snapshot: got_snapshot,
            records: got_records,
            cut_tail,
        } = recovery;
        assert_eq!(got_snapshot, snapshot, "boundary {k}");
        assert_eq!(got_records, replay, "boundary {k}");
        assert_eq!(journal.last_seq(), last_seq, "boundary {k}");
        match &cut_tail {
            Some(cut) => {
                assert!(k > first && !complete, "boundary {k}: unexpected cut {cut}");
                let name = jnl.file_name().unwrap().to_string_lossy().into_owned();
                assert!(cut.contains(&name), "{cut}");
                assert!(cut.contains(&format!("at byte offset {first}")), "{cut}");
            }
            None => assert!(
                k == first || complete,
                "boundary {k}: torn tail not reported"
            ),
        }
        // The journal goes on: the next record gets the next number and survives a reopen.
        assert_eq!(journal.append(&[b"after the crash"]).unwrap(), last_seq + 1);
        drop(journal);
        let (_, again) = Journal::open(&case, options()).unwrap();
        assert_eq!(again.cut_tail, None, "boundary {k}");
        assert_eq!(again.snapshot, snapshot, "boundary {k}");
        assert_eq!(again.records.len(), replay.len() + 1, "boundary {k}");
        assert_eq!(
            again.records.last().unwrap(),
            &(last_seq + 1, b"after the crash".to_vec())
        );
        std::fs::remove_dir_all(&case).unwrap();
    }
    eprintln!(
        "torn write (reopened first: {reopen_first}, {} bytes): {count} boundaries in {:?}",
        last - first,
        started.elapsed()
    );
}

fn append(seqs: std::ops::RangeInclusive<u64>) -> impl FnOnce(&mut Journal) {
    move |journal| {
        let last = *seqs.end();
        let payloads: Vec<Vec<u8>> = seqs.map(|s| record(s, PAYLOAD)).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        assert_eq!(journal.append(&refs).unwrap(), last);
    }
}

fn appended(seqs: std::ops::RangeInclusive<u64>) -> Recovery {
    Recovery {
        records: records(seqs),
        ..Recovery::default()
    }
}

#[test]
fn torn_single_record_append_into_a_grown_journal() {
    tear_last_write(true, append(10..=10), appended(1..=10));
}

#[test]
fn torn_batch_append_into_a_grown_journal_is_all_or_nothing() {
    tear_last_write(true, append(10..=12), appended(1..=12));
}

#[test]
fn torn_append_into_a_preallocated_journal() {
    tear_last_write(false, append(10..=11), appended(1..=11));
}

#[test]
fn torn_snapshot_leaves_the_records_it_would_have_collected() {
    tear_last_write(
        true,
        |journal| journal.snapshot(b"state at 9").unwrap(),
        Recovery {
            snapshot: Some((9, b"state at 9".to_vec())),
            ..Recovery::default()
        },
    );
}

/// A crash can leave fjall's journal file ending anywhere after its last fsync'd batch, with or
/// without the zeros of its preallocation after that: cutting a journal of ten single-record
/// appends at every byte from its first record on recovers exactly the records whose batches
/// end before the cut, in order, without an error (a cut inside a batch is reported).
#[test]
fn a_journal_file_cut_at_any_byte_recovers_the_records_of_its_whole_batches() {
    let work = scratch();
    let dir = work.path().join("journal");
    {
        let (mut journal, _) = Journal::open(&dir, options()).unwrap();
        for seq in 1..=10 {
            journal.append(&[&record(seq, PAYLOAD)]).unwrap();
        }
    }
    let image = DirImage::capture(&dir);
    let (jnl, file) = image
        .files
        .iter()
        .find(|(name, _)| name.extension().is_some_and(|e| e == "jnl"))
        .map(|(name, file)| (name.clone(), file.clone()))
        .unwrap();
    // fjall's batches, and the one that holds each record.
    let mut batches = Vec::new();
    while batches
        .last()
        .is_none_or(|b: &Range<usize>| b.end < file.data.len())
    {
        let start = batches.last().map_or(0, |b: &Range<usize>| b.end);
        let batch = cachew_store::fjall_journal::parse_batch(&file.data, start).unwrap();
        batches.push(batch.start..batch.end);
    }
    let record_ends: Vec<usize> = (1..=10)
        .map(|seq| {
            let payload = record(seq, PAYLOAD);
            let at = file
                .data
                .windows(PAYLOAD)
                .position(|w| w == payload)
                .unwrap();
            batches.iter().find(|b| b.contains(&at)).unwrap().end
        })
        .collect();
    let first = batches
        .iter()
        .find(|b| b.end == record_ends[0])
        .unwrap()
        .start;
    let started = Instant::now();
    for k in first..=file.data.len() {
        for preallocated in [false, true] {
            let mut torn = FileImage::from_bytes(&file.data[..k]);
            torn.len = if preallocated { file.len } else { k as u64 };
            let case = work.path().join(format!("cut-{k}-{preallocated}"));
            materialize(&image, &jnl, &torn, &case);
            let (mut journal, recovery) = Journal::open(&case, options())
                .unwrap_or_else(|e| panic!("cut at {k} (preallocated: {preallocated}): {e}"));
            let whole = record_ends.iter().filter(|end| **end <= k).count() as u64;
            assert_eq!(recovery.records, records(1..=whole), "cut at {k}");
            assert_eq!(recovery.snapshot, None);
            let inside_a_batch = !batches.iter().any(|b| b.start == k || b.end == k);
            assert_eq!(
                recovery.cut_tail.is_some(),
                inside_a_batch,
                "cut at {k}: {:?}",
                recovery.cut_tail
            );
            assert_eq!(journal.append(&[b"next"]).unwrap(), whole + 1);
            drop(journal);
            std::fs::remove_dir_all(&case).unwrap();
        }
    }
    eprintln!(
        "{} cuts in {:?}",
        file.data.len() - first + 1,
        started.elapsed()
    );
}
