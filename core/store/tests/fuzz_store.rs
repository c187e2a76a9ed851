//! Fuzz tests of what cachew-store reads from disk: value frames (`frame::decode`), fjall's
//! journal files (`fjall_journal::scan` / `parse_batch`, and the check `Journal::open` runs
//! before fjall opens a database), whole journal and checkpoint directories whose journal file
//! was mutated (`Journal::open`, `CheckpointStore::open`), and the checkpoint summary marker
//! (`CheckpointStore::peek`). See `cachew_fuzzing` for what is asserted: no panic, no loop, no
//! allocation past the limit, and an error that names the file and what was wrong.
//!
//! Journal batches are also mutated behind a fixed XXH3 checksum, so the mutation gets past the
//! batch check and reaches fjall's recovery and the frames inside.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use cachew_fuzzing::{bounded, bytes, config, mutated, mutations};
use cachew_store::fjall_journal;
use cachew_store::{CheckpointStore, Journal, JournalOptions, StoreError, frame};
use proptest::prelude::*;
use proptest::sample::Index;

#[global_allocator]
static ALLOCATOR: cachew_fuzzing::Allocator =
    cachew_fuzzing::allocator(cachew_fuzzing::MEMORY_LIMIT);

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The active (newest) fjall journal file of a store directory.
fn active_journal(store: &Path) -> PathBuf {
    let files = fjall_journal::journal_files(&store.join(cachew_store::DB_DIR)).unwrap();
    files.last().unwrap().1.clone()
}

/// The written part of a journal file (without fjall's preallocated zeros).
fn written(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    bytes.truncate(end);
    bytes
}

/// A store directory made by `make`, kept for the whole test binary as the template every
/// case copies.
struct Template {
    _dir: tempfile::TempDir,
    store: PathBuf,
    journal: Vec<u8>,
}

fn journal_template() -> &'static Template {
    static T: std::sync::OnceLock<Template> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("journal");
        {
            let (mut journal, _) = Journal::open(&store, JournalOptions::default()).unwrap();
            journal.append(&[b"one", b"two"]).unwrap();
            journal.snapshot(b"{\"state\":1}").unwrap();
            journal.append(&[b"three"]).unwrap();
            journal.append(&[&[0x55; 300]]).unwrap();
        }
        let journal = written(&active_journal(&store));
        Template {
            _dir: dir,
            store,
            journal,
        }
    })
}

fn checkpoint_template() -> &'static Template {
    static T: std::sync::OnceLock<Template> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("checkpoints");
        {
            let (mut cp, _) = CheckpointStore::open(&store).unwrap();
            cp.write(b"{\"first\":1}").unwrap();
            cp.write(b"{\"second\":2}").unwrap();
        }
        let journal = written(&active_journal(&store));
        Template {
            _dir: dir,
            store,
            journal,
        }
    })
}

/// A copy of `template` whose active journal file holds `journal`.
fn store_with_journal(template: &Template, journal: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    copy_dir(&template.store, &store);
    std::fs::write(active_journal(&store), journal).unwrap();
    (dir, store)
}

/// A store error must say where: a path, and for corruption what was corrupt.
fn assert_located(error: &StoreError) {
    let message = error.to_string();
    assert!(message.contains('/'), "the error names no path: {message}");
}

/// Scans a journal file's bytes: every intact batch lies inside the data, and the flaw (if any)
/// is where the intact batches end.
fn check_scan(data: Vec<u8>) {
    bounded("fjall_journal::scan", move || {
        let scan = fjall_journal::scan(&data);
        assert!(scan.data_end <= data.len());
        if let Some(batch) = &scan.last_intact {
            assert!(batch.start < batch.end && batch.end <= data.len());
        }
        if let Some((at, flaw)) = &scan.flaw {
            assert!(*at <= data.len());
            assert!(!flaw.to_string().is_empty());
            if let Some(batch) = &scan.last_intact {
                assert_eq!(*at, batch.end);
            }
        }
    });
}

/// The batches of a journal file: `(start, items start, items end, end)`.
fn batches(journal: &[u8]) -> Vec<(usize, usize, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(batch) = fjall_journal::parse_batch(journal, at) {
        out.push((batch.start, batch.start + 13, batch.end - 13, batch.end));
        at = batch.end;
    }
    out
}

/// `journal` with the items of one batch mutated and that batch's checksum fixed.
fn mutate_batch_items(journal: &[u8], which: Index, edits: &[cachew_fuzzing::Mutation]) -> Vec<u8> {
    let all = batches(journal);
    let (start, items_start, items_end, end) = *which.get(&all);
    let mut items = journal[items_start..items_end].to_vec();
    for edit in edits {
        cachew_fuzzing::apply(&mut items, edit);
    }
    let mut out = journal[..items_start].to_vec();
    debug_assert_eq!(out.len(), start + 13);
    out.extend_from_slice(&items);
    out.push(3);
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&items).to_le_bytes());
    out.extend_from_slice(&[b'F', b'J', b'L', 3]);
    out.extend_from_slice(&journal[end..]);
    out
}

fn open_journal(template: &'static Template, journal: Vec<u8>) {
    let (_dir, store) = store_with_journal(template, &journal);
    bounded("Journal::open", move || {
        match Journal::open(&store, JournalOptions::default()) {
            Ok((journal, recovery)) => {
                // What it recovered is gap-free and after the snapshot.
                let from = recovery.snapshot.as_ref().map_or(0, |(seq, _)| *seq);
                for (i, (seq, _)) in recovery.records.iter().enumerate() {
                    assert_eq!(*seq, from + 1 + i as u64);
                }
                assert!(journal.last_seq() >= from);
            }
            Err(e) => assert_located(&e),
        }
    });
}

fn open_checkpoints(template: &'static Template, journal: Vec<u8>) {
    let (_dir, store) = store_with_journal(template, &journal);
    bounded(
        "CheckpointStore::open",
        move || match CheckpointStore::open(&store) {
            Ok((_, newest)) => {
                if let Some(cp) = newest {
                    assert!(cp.seq >= 1);
                }
            }
            Err(e) => assert_located(&e),
        },
    );
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn frames_of_arbitrary_bytes(key in bytes(8), value in bytes(64)) {
        for result in [
            frame::decode::<0>(&key, &value).map(|(_, p)| p.len()),
            frame::decode::<1>(&key, &value).map(|(_, p)| p.len()),
            frame::decode::<2>(&key, &value).map(|(_, p)| p.len()),
        ] {
            match result {
                Ok(len) => prop_assert!(len <= value.len()),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn mutated_frames(value in mutated(frame::encode(b"key", [7u64], b"payload", "test").unwrap())) {
        match frame::decode::<1>(b"key", &value) {
            Ok(([field], payload)) => {
                // CRC-32C catches every change of up to 32 bits in a frame this short: what
                // decodes is what was written, or a mutation that restored it.
                prop_assert_eq!(field, 7);
                prop_assert_eq!(payload, b"payload");
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn journal_files_of_arbitrary_bytes(data in bytes(256)) {
        check_scan(data);
    }

    #[test]
    fn mutated_journal_files(data in mutated(journal_template().journal.clone())) {
        check_scan(data);
    }

    #[test]
    fn mutated_batches_behind_valid_checksums(which in any::<Index>(), edits in mutations()) {
        check_scan(mutate_batch_items(&journal_template().journal, which, &edits));
    }

    #[test]
    fn summaries_of_arbitrary_bytes(data in prop_oneof![bytes(80), bytes(60).prop_map(|mut b| { b.resize(60, 0); b })]) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(cachew_store::checkpoint::SUMMARY_FILE), &data).unwrap();
        if let Err(e) = CheckpointStore::peek(dir.path()) {
            assert_located(&e);
        }
    }
}

proptest! {
    // Each case copies a store and opens fjall on it.
    #![proptest_config(config(40))]

    #[test]
    fn journal_directories_with_a_mutated_journal_file(
        data in mutated(journal_template().journal.clone()),
    ) {
        open_journal(journal_template(), data);
    }

    #[test]
    fn journal_directories_with_a_mutated_batch_behind_a_valid_checksum(
        which in any::<Index>(),
        edits in mutations(),
    ) {
        let data = mutate_batch_items(&journal_template().journal, which, &edits);
        open_journal(journal_template(), data);
    }

    #[test]
    fn checkpoint_directories_with_a_mutated_journal_file(
        data in mutated(checkpoint_template().journal.clone()),
    ) {
        open_checkpoints(checkpoint_template(), data);
    }

    #[test]
    fn checkpoint_directories_with_a_mutated_batch_behind_a_valid_checksum(
        which in any::<Index>(),
        edits in mutations(),
    ) {
        let data = mutate_batch_items(&checkpoint_template().journal, which, &edits);
        open_checkpoints(checkpoint_template(), data);
    }
}

#[test]
fn the_templates_are_valid() {
    for template in [journal_template(), checkpoint_template()] {
        let scan = fjall_journal::scan(&template.journal);
        assert!(scan.flaw.is_none(), "{:?}", scan.flaw);
        assert!(scan.intact >= 2);
        assert_eq!(batches(&template.journal).len(), scan.intact);
    }
    let (_dir, store) = store_with_journal(journal_template(), &journal_template().journal);
    let (_, recovery) = Journal::open(&store, JournalOptions::default()).unwrap();
    assert_eq!(recovery.records.len(), 2);
}
