//! The checkpoint store: torn writes at every byte boundary recover the previous checkpoint,
//! the last two are kept, a corrupt newest one falls back to the previous, and the summary
//! marker is readable by other processes.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use cachew_store::{
    Checkpoint, CheckpointStore, DB_DIR, Location, StoreError, checkpoint::SUMMARY_FILE,
};
use common::{DirImage, changed_journal, materialize, scratch, torn_states};

fn payload(seq: u64) -> Vec<u8> {
    format!("positions at checkpoint {seq}: split 3 @ {}", seq * 17).into_bytes()
}

/// The keys fjall holds in the `checkpoints` keyspace of a closed store.
fn stored_keys(dir: &Path) -> Vec<u64> {
    let db = fjall::Database::builder(dir.join(DB_DIR)).open().unwrap();
    let checkpoints = db
        .keyspace("checkpoints", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    checkpoints
        .iter()
        .map(|g| u64::from_be_bytes((*g.key().unwrap()).try_into().unwrap()))
        .collect()
}

#[test]
fn torn_checkpoint_write_recovers_the_previous_checkpoint_at_every_byte() {
    let work = scratch();
    let dir = work.path().join("ckpt");
    let (before, after) = {
        let (mut store, recovered) = CheckpointStore::open(&dir).unwrap();
        assert_eq!(recovered, None);
        for seq in 1..=3 {
            assert_eq!(store.write(&payload(seq)).unwrap().last_seq, seq);
        }
        drop(store);
        // Reopened, as a restarted worker: fjall's journal now grows with each write.
        let (mut store, recovered) = CheckpointStore::open(&dir).unwrap();
        assert_eq!(recovered.unwrap().seq, 3);
        let before = DirImage::capture(&dir);
        store.write(&payload(4)).unwrap();
        (before, DirImage::capture(&dir))
    };
    // The write changed fjall's journal and, after it, the summary marker; a crash during the
    // journal write leaves the old marker.
    let jnl = changed_journal(&before, &after);
    let changed = before.changed(&after);
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert!(changed.contains(&Path::new(SUMMARY_FILE).to_path_buf()));

    let (first, last, variants) = torn_states(&before.files[&jnl], &after.files[&jnl]);
    for (k, torn) in variants {
        let case = work.path().join(format!("torn-{k}"));
        materialize(&before, &jnl, &torn, &case);
        let (mut store, recovered) = CheckpointStore::open(&case)
            .unwrap_or_else(|e| panic!("boundary {k} of {first}..={last}: {e}"));
        let want = if k == last { 4 } else { 3 };
        let recovered = recovered.unwrap();
        assert_eq!(
            (recovered.seq, &recovered.payload),
            (want, &payload(want)),
            "boundary {k}"
        );
        let stats = store.stats();
        assert_eq!(stats.last_seq, want);
        assert_eq!(
            stats.cut_tail.is_some(),
            k > first && k < last,
            "boundary {k}"
        );
        assert_eq!(stats.skipped_corrupt, 0);
        // The marker is brought in line with what was recovered.
        assert_eq!(CheckpointStore::peek(&case).unwrap().unwrap().seq, want);
        // And the store goes on: the next checkpoint follows the recovered one.
        assert_eq!(store.write(b"next").unwrap().last_seq, want + 1);
        drop(store);
        assert_eq!(stored_keys(&case), vec![want, want + 1], "boundary {k}");
        std::fs::remove_dir_all(&case).unwrap();
    }
}

#[test]
fn keeps_the_last_two_and_sequence_numbers_continue_across_restarts() {
    let work = scratch();
    let dir = work.path().join("ckpt");
    for round in 0..4u64 {
        let (mut store, recovered) = CheckpointStore::open(&dir).unwrap();
        let base = round * 3;
        assert_eq!(
            recovered.as_ref().map(|c| c.seq),
            (base > 0).then_some(base)
        );
        if let Some(c) = &recovered {
            assert_eq!(c.payload, payload(base));
            assert!(c.unix_ms > 0);
        }
        for seq in base + 1..=base + 3 {
            let stats = store.write(&payload(seq)).unwrap();
            assert_eq!(stats.last_seq, seq);
            assert_eq!(stats.count, seq - base, "count is per process");
            assert_eq!(stats.last_bytes, payload(seq).len() as u64);
            assert!(stats.last_duration_us > 0);
        }
        drop(store);
        assert_eq!(stored_keys(&dir), vec![base + 2, base + 3]);
    }
}

/// Rewrites checkpoint `seq` through fjall with a value that fails its CRC.
fn corrupt_checkpoint(dir: &Path, seq: u64) {
    let db = fjall::Database::builder(dir.join(DB_DIR)).open().unwrap();
    let checkpoints = db
        .keyspace("checkpoints", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let mut value = checkpoints
        .get(seq.to_be_bytes())
        .unwrap()
        .unwrap()
        .to_vec();
    let last = value.len() - 1;
    value[last] ^= 0x80;
    checkpoints.insert(seq.to_be_bytes(), value).unwrap();
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_one_and_is_collected() {
    let work = scratch();
    let dir = work.path().join("ckpt");
    {
        let (mut store, _) = CheckpointStore::open(&dir).unwrap();
        for seq in 1..=5 {
            store.write(&payload(seq)).unwrap();
        }
    }
    corrupt_checkpoint(&dir, 5);
    let (mut store, recovered) = CheckpointStore::open(&dir).unwrap();
    assert_eq!(recovered.map(|c| (c.seq, c.payload)), Some((4, payload(4))));
    assert_eq!(store.stats().skipped_corrupt, 1);
    assert_eq!(CheckpointStore::peek(&dir).unwrap().unwrap().seq, 4);
    // The next checkpoint is numbered above the corrupt one, which it collects; the valid
    // previous one is kept.
    assert_eq!(store.write(&payload(6)).unwrap().last_seq, 6);
    drop(store);
    assert_eq!(stored_keys(&dir), vec![4, 6]);
}

#[test]
fn no_valid_checkpoint_left_is_an_error_not_a_fresh_start() {
    let work = scratch();
    let dir = work.path().join("ckpt");
    {
        let (mut store, _) = CheckpointStore::open(&dir).unwrap();
        store.write(&payload(1)).unwrap();
        store.write(&payload(2)).unwrap();
    }
    corrupt_checkpoint(&dir, 1);
    corrupt_checkpoint(&dir, 2);
    match CheckpointStore::open(&dir).unwrap_err() {
        StoreError::Corrupt {
            what, at, detail, ..
        } => {
            assert_eq!((what, at), ("checkpoint", Location::Seq(2)));
            assert!(detail.contains("CRC-32C mismatch"), "{detail}");
            assert!(detail.contains("no older checkpoint is valid"), "{detail}");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn peek_reads_the_summary_while_the_owner_has_the_store_open() {
    let work = scratch();
    let dir = work.path().join("ckpt");
    assert_eq!(CheckpointStore::peek(&dir).unwrap(), None);
    let (mut store, _) = CheckpointStore::open(&dir).unwrap();
    assert_eq!(CheckpointStore::peek(&dir).unwrap(), None);
    let body = vec![7u8; 1024];
    let stats = store.write(&body).unwrap();
    let summary = CheckpointStore::peek(&dir).unwrap().unwrap();
    assert_eq!(summary.seq, stats.last_seq);
    assert_eq!(summary.unix_ms, stats.last_unix_ms);
    assert_eq!(summary.payload_bytes, 1024);
    assert_eq!(summary.count, 1);
    assert_eq!(summary.payload_crc32c, crc32c::crc32c(&body));
    assert!(summary.duration_us <= stats.last_duration_us);

    // A damaged marker is reported, not misread; reopening the store rewrites it.
    common::flip_byte(&dir.join(SUMMARY_FILE), 20, 0x01);
    let err = CheckpointStore::peek(&dir).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Corrupt {
                what: "checkpoint summary",
                ..
            }
        ),
        "{err}"
    );
    drop(store);
    let (store, recovered) = CheckpointStore::open(&dir).unwrap();
    let Checkpoint { seq, payload, .. } = recovered.unwrap();
    assert_eq!((seq, payload), (1, body));
    assert_eq!(CheckpointStore::peek(&dir).unwrap().unwrap().seq, 1);
    drop(store);

    // A marker left without its database is removed, not shown.
    std::fs::remove_dir_all(dir.join(DB_DIR)).unwrap();
    let (_store, recovered) = CheckpointStore::open(&dir).unwrap();
    assert_eq!(recovered, None);
    assert_eq!(CheckpointStore::peek(&dir).unwrap(), None);
}
