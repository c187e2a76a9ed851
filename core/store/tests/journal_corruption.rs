//! Damage before the tail is an error naming where it is, never a silent skip; damage in the
//! last batch is a torn tail, cut and reported, even where fjall alone would refuse to open.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use cachew_store::{DB_DIR, Journal, JournalOptions, Location, StoreError};
use common::{DirImage, data_of, flip_byte, record, scratch};

const PAYLOAD: usize = 40;
const RECORDS: u64 = 10;

fn options() -> JournalOptions {
    JournalOptions { snapshot_every: 0 }
}

/// A closed journal of records 1..=RECORDS, one append each, and its fjall journal file.
fn journal_of_ten(root: &Path) -> (PathBuf, PathBuf) {
    let dir = root.join("journal");
    let (mut journal, _) = Journal::open(&dir, options()).unwrap();
    for seq in 1..=RECORDS {
        journal.append(&[&record(seq, PAYLOAD)]).unwrap();
    }
    drop(journal);
    let jnl = only_journal_file(&dir);
    (dir, jnl)
}

fn only_journal_file(dir: &Path) -> PathBuf {
    let files = cachew_store::fjall_journal::journal_files(&dir.join(DB_DIR)).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].1.clone()
}

/// The byte range of the fjall batch that holds `payload`.
fn batch_of(jnl: &[u8], payload: &[u8]) -> std::ops::Range<usize> {
    let at = jnl
        .windows(payload.len())
        .position(|w| w == payload)
        .expect("payload in the journal file");
    let scan = cachew_store::fjall_journal::scan(jnl);
    assert_eq!(scan.flaw, None);
    let mut start = 0;
    loop {
        let batch = cachew_store::fjall_journal::parse_batch(jnl, start).unwrap();
        if batch.end > at {
            return batch.start..batch.end;
        }
        start = batch.end;
    }
}

fn expected(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    seqs.map(|s| (s, record(s, PAYLOAD))).collect()
}

#[test]
fn every_flipped_byte_of_an_earlier_batch_is_an_error_or_harmless_never_a_silent_loss() {
    let work = scratch();
    let (dir, jnl) = journal_of_ten(work.path());
    let image = DirImage::capture(&dir);
    let rel = jnl.strip_prefix(&dir).unwrap().to_path_buf();
    let batch = batch_of(&data_of(&jnl), &record(4, PAYLOAD));
    let seqno_field = batch.start + 5..batch.start + 13;
    let mut errors = 0;
    for at in batch.clone() {
        let case = work.path().join(format!("flip-{at}"));
        image.write_to(&case);
        flip_byte(&case.join(&rel), at as u64, 0x20);
        match Journal::open(&case, options()) {
            Err(StoreError::Corrupt {
                path,
                what,
                at: Location::Offset(offset),
                detail,
            }) => {
                assert_eq!(path, case.join(&rel), "byte {at}");
                assert_eq!(what, "fjall journal batch");
                assert_eq!(offset, batch.start as u64, "byte {at}: {detail}");
                assert!(detail.contains("not a torn tail"), "{detail}");
                errors += 1;
            }
            Err(other) => panic!("byte {at}: unexpected error {other}"),
            Ok((_, recovery)) => {
                // Only the batch's fjall sequence number is outside fjall's checksum; changing
                // it loses nothing, and every record must still be there.
                assert!(
                    seqno_field.contains(&at),
                    "byte {at}: damage went unnoticed"
                );
                assert_eq!(recovery.records, expected(1..=RECORDS), "byte {at}");
                assert_eq!(recovery.cut_tail, None);
            }
        }
        fs::remove_dir_all(&case).unwrap();
    }
    assert_eq!(errors, batch.len() - seqno_field.len());
}

#[test]
fn fjall_alone_silently_drops_the_batches_after_a_damaged_tag() {
    // Why the pre-open check exists: with the start tag of record 4's batch damaged, plain
    // fjall opens without an error and without records 4..=10.
    let work = scratch();
    let (dir, jnl) = journal_of_ten(work.path());
    let batch = batch_of(&data_of(&jnl), &record(4, PAYLOAD));
    flip_byte(&jnl, batch.start as u64, 0x7e); // tag 1 -> 0x7f

    let copy = work.path().join("copy");
    DirImage::capture(&dir).write_to(&copy);
    {
        let db = fjall::Database::builder(copy.join(DB_DIR)).open().unwrap();
        let records = db
            .keyspace("records", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        assert_eq!(
            records.len().unwrap(),
            3,
            "fjall kept only the batches before the damage"
        );
    }

    let err = Journal::open(&dir, options()).unwrap_err();
    assert!(err.is_corruption());
    let message = err.to_string();
    assert!(
        message.contains(&format!("byte offset {}", batch.start)),
        "{message}"
    );
    assert!(
        message.contains("unknown entry tag") || message.contains("start marker"),
        "{message}"
    );
}

#[test]
fn a_damaged_last_batch_is_cut_and_reported_where_fjall_alone_refuses_to_open() {
    // A complete-looking last batch with a bad checksum (as out-of-order sector writes can
    // leave): fjall fails to open; the journal cuts it and reports it, since that write was
    // never acknowledged.
    let work = scratch();
    let (dir, jnl) = journal_of_ten(work.path());
    let bytes = data_of(&jnl);
    let last = record(RECORDS, PAYLOAD);
    let batch = batch_of(&bytes, &last);
    let at = bytes.windows(last.len()).position(|w| w == last).unwrap() + 20;
    flip_byte(&jnl, at as u64, 0x01);

    let copy = work.path().join("copy");
    DirImage::capture(&dir).write_to(&copy);
    match fjall::Database::builder(copy.join(DB_DIR)).open() {
        Err(fjall::Error::JournalRecovery(fjall::JournalRecoveryError::ChecksumMismatch)) => {}
        Err(other) => panic!("fjall failed differently: {other:?}"),
        Ok(_) => panic!("fjall opened a journal whose last batch fails its checksum"),
    }

    let (mut journal, recovery) = Journal::open(&dir, options()).unwrap();
    assert_eq!(recovery.records, expected(1..=RECORDS - 1));
    let cut = recovery.cut_tail.expect("the cut is reported");
    assert!(cut.contains("checksum mismatch"), "{cut}");
    assert!(
        cut.contains(&format!("at byte offset {}", batch.start)),
        "{cut}"
    );
    assert!(cut.contains(&format!("{} bytes", batch.len())), "{cut}");
    assert_eq!(journal.append(&[b"next"]).unwrap(), RECORDS);
}

#[test]
fn every_flipped_byte_of_the_last_batch_is_a_cut_tail_or_harmless_never_a_misread() {
    // Damage confined to the last write (a torn sector) is never an error: that write was
    // never acknowledged. The journal opens with records 1..=RECORDS-1, exactly as written, or
    // with all of them where the flip is outside fjall's checksum (its sequence number), unless
    // it sets the seqno's top bit, which fjall cannot continue from (its next write would
    // panic): that batch is cut too.
    let work = scratch();
    let (dir, jnl) = journal_of_ten(work.path());
    let image = DirImage::capture(&dir);
    let rel = jnl.strip_prefix(&dir).unwrap().to_path_buf();
    let batch = batch_of(&data_of(&jnl), &record(RECORDS, PAYLOAD));
    let seqno_field = batch.start + 5..batch.start + 13;
    let mut cuts = 0;
    for at in batch.clone() {
        for mask in [0x01, 0x80] {
            let case = work.path().join(format!("flip-{at}-{mask}"));
            image.write_to(&case);
            flip_byte(&case.join(&rel), at as u64, mask);
            let (mut journal, recovery) = Journal::open(&case, options())
                .unwrap_or_else(|e| panic!("byte {at} mask {mask:#04x}: {e}"));
            let top_bit = at == seqno_field.end - 1 && mask == 0x80;
            if seqno_field.contains(&at) && !top_bit {
                assert_eq!(recovery.records, expected(1..=RECORDS), "byte {at}");
                assert_eq!(recovery.cut_tail, None, "byte {at}");
            } else {
                assert_eq!(recovery.records, expected(1..=RECORDS - 1), "byte {at}");
                let cut = recovery
                    .cut_tail
                    .unwrap_or_else(|| panic!("byte {at}: no cut"));
                assert!(
                    cut.contains(&format!("at byte offset {}", batch.start)),
                    "byte {at}: {cut}"
                );
                cuts += 1;
            }
            // The journal goes on from there.
            let next = recovery.records.len() as u64 + 1;
            assert_eq!(journal.append(&[b"next"]).unwrap(), next, "byte {at}");
            drop(journal);
            fs::remove_dir_all(&case).unwrap();
        }
    }
    assert_eq!(cuts, 2 * (batch.len() - seqno_field.len()) + 1);
}

/// Opens the fjall database of a closed journal directly, as a bug or a bad disk could write
/// it: valid for fjall, wrong for the journal.
fn tamper(dir: &Path, change: impl FnOnce(&fjall::Keyspace)) {
    let db = fjall::Database::builder(dir.join(DB_DIR)).open().unwrap();
    let records = db
        .keyspace("records", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    change(&records);
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

#[test]
fn a_record_failing_its_crc_is_an_error_naming_its_sequence_number() {
    let work = scratch();
    let (dir, _) = journal_of_ten(work.path());
    tamper(&dir, |records| {
        let mut value = records.get(5u64.to_be_bytes()).unwrap().unwrap().to_vec();
        let last = value.len() - 1;
        value[last] ^= 0x01;
        records.insert(5u64.to_be_bytes(), value).unwrap();
    });
    match Journal::open(&dir, options()).unwrap_err() {
        StoreError::Corrupt {
            what, at, detail, ..
        } => {
            assert_eq!((what, at), ("journal record", Location::Seq(5)));
            assert!(detail.contains("CRC-32C mismatch"), "{detail}");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn a_missing_record_is_an_error_naming_its_sequence_number() {
    let work = scratch();
    let (dir, _) = journal_of_ten(work.path());
    tamper(&dir, |records| records.remove(7u64.to_be_bytes()).unwrap());
    match Journal::open(&dir, options()).unwrap_err() {
        StoreError::Corrupt {
            what, at, detail, ..
        } => {
            assert_eq!((what, at), ("journal record", Location::Seq(7)));
            assert!(detail.contains("record 7 is missing"), "{detail}");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn a_record_under_another_key_fails_its_check() {
    let work = scratch();
    let (dir, _) = journal_of_ten(work.path());
    tamper(&dir, |records| {
        let value = records.get(2u64.to_be_bytes()).unwrap().unwrap();
        records.insert(3u64.to_be_bytes(), value).unwrap();
    });
    let err = Journal::open(&dir, options()).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Corrupt {
                at: Location::Seq(3),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_flipped_byte_in_a_flushed_table_is_an_error() {
    // Records flushed from the memtable live in a table (SST); fjall checks its blocks.
    let work = scratch();
    let (dir, _) = journal_of_ten(work.path());
    tamper(&dir, |records| records.rotate_memtable_and_wait().unwrap());
    let payload = record(6, PAYLOAD);
    let table = DirImage::capture(&dir)
        .files
        .into_iter()
        .find(|(name, file)| {
            name.starts_with(Path::new(DB_DIR).join("keyspaces"))
                && file.data.windows(payload.len()).any(|w| w == payload)
        })
        .map(|(name, _)| dir.join(name))
        .expect("a table holds record 6");
    let bytes = fs::read(&table).unwrap();
    let at = bytes
        .windows(payload.len())
        .position(|w| w == payload)
        .unwrap()
        + 30;
    flip_byte(&table, at as u64, 0x04);
    let err = Journal::open(&dir, options()).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(
        matches!(
            &err,
            StoreError::Corrupt {
                what: "journal record",
                at: Location::Seq(_),
                ..
            }
        ),
        "{err}"
    );
}
