//! The journal's disk use is bounded by the live state, not by history: records and snapshots
//! written over and over (three times fjall's journal rotation size in all) never occupy more
//! than the live state plus about two of fjall's journal files, and a reopen reads back only the
//! last snapshot and the records after it.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use cachew_store::journal::FJALL_JOURNAL_ROTATION_BYTES;
use cachew_store::{Journal, JournalOptions};

/// Bytes the files under `dir` occupy on disk (allocated blocks: fjall preallocates its journal
/// files sparsely). Files fjall deletes while this walks are skipped; `dir` itself must exist.
fn disk_bytes(dir: &Path) -> u64 {
    assert!(dir.is_dir(), "{} is not a directory", dir.display());
    walk(dir)
}

fn walk(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        total += if meta.is_dir() {
            walk(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

#[test]
fn disk_use_stays_bounded_whatever_was_written() {
    const RECORD: usize = 8 << 10;
    const BATCH: usize = 50;
    const SNAPSHOT_EVERY: u64 = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(
        dir.path(),
        JournalOptions {
            snapshot_every: SNAPSHOT_EVERY,
        },
    )
    .unwrap();
    let written_target = 3 * FJALL_JOURNAL_ROTATION_BYTES;
    let mut written = 0u64;
    let mut peak = 0u64;
    let mut snapshots = 0u64;
    let mut n = 0u64;
    while written < written_target {
        let records: Vec<Vec<u8>> = (0..BATCH as u64)
            .map(|i| {
                let mut r = format!("record {} ", n + i).into_bytes();
                r.resize(RECORD, b'r');
                r
            })
            .collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        journal.append(&refs).unwrap();
        n += BATCH as u64;
        written += (RECORD * BATCH) as u64;
        if journal.snapshot_due() {
            let mut state = format!("state after {n} ").into_bytes();
            state.resize(64 << 10, b's');
            journal.snapshot(&state).unwrap();
            journal.compact().unwrap();
            snapshots += 1;
            written += state.len() as u64;
        }
        peak = peak.max(disk_bytes(dir.path()));
    }
    // The live state is a snapshot and at most SNAPSHOT_EVERY records (8 MB); the rest is at
    // most two journal files, the active one and one sealed one not deleted yet.
    let live = SNAPSHOT_EVERY * RECORD as u64 + (64 << 10);
    let bound = 2 * FJALL_JOURNAL_ROTATION_BYTES + 2 * live;
    assert!(snapshots >= 20, "{snapshots} snapshots");
    assert!(
        peak <= bound,
        "{peak} bytes on disk at the peak, after writing {written} (bound {bound})"
    );
    assert!(
        peak < written * 3 / 4,
        "{peak} bytes on disk for {written} written"
    );

    drop(journal);
    let (journal, recovery) = Journal::open(
        dir.path(),
        JournalOptions {
            snapshot_every: SNAPSHOT_EVERY,
        },
    )
    .unwrap();
    let (snapshot_seq, state) = recovery.snapshot.unwrap();
    assert!(state.starts_with(format!("state after {snapshot_seq} ").as_bytes()));
    assert_eq!(journal.last_seq(), n);
    assert_eq!(recovery.records.len() as u64, n - snapshot_seq);
    assert_eq!(
        recovery.records.first().map(|(seq, _)| *seq),
        (snapshot_seq < n).then_some(snapshot_seq + 1)
    );
}
