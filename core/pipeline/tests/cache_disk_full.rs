//! The cache chunk writer on a small tmpfs that fills up: a chunk that does not fit fails with
//! an error that says the disk is full, leaves no file behind (no temporary, no half chunk) and
//! never reads back; chunks committed before it stay intact; once space is freed the same
//! chunk is written and reads back. Needs root to mount the tmpfs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../store/tests/common/tmpfs.rs"]
mod tmpfs;

use bytes::Bytes;
use cachew_pipeline::Tensor;
use cachew_pipeline::cache::{CachedRecord, Compression, chunk_path, read_chunk, write_chunk};
use cachew_pipeline::exec::{Features, Value};

const FINGERPRINT: [u8; 32] = [7; 32];
const SPLIT_RECORDS: u64 = 8;

fn records(split: u32) -> Vec<CachedRecord> {
    let ids = u64::from(split) * SPLIT_RECORDS..u64::from(split + 1) * SPLIT_RECORDS;
    ids.map(|id| CachedRecord {
        record_id: id,
        record_sha256: [id as u8; 32],
        features: Features {
            values: vec![
                (
                    "raw".into(),
                    // Incompressible-ish and several pages per chunk.
                    Value::Bytes(Bytes::from(
                        (0..4096u64)
                            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8 ^ id as u8)
                            .collect::<Vec<u8>>(),
                    )),
                ),
                (
                    "label".into(),
                    Value::Tensor(Tensor::from_i64(&[id as i64], vec![])),
                ),
            ],
        },
    })
    .collect()
}

fn range(split: u32) -> std::ops::Range<u64> {
    u64::from(split) * SPLIT_RECORDS..u64::from(split + 1) * SPLIT_RECORDS
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn ids(records: &[CachedRecord]) -> Vec<u64> {
    records.iter().map(|r| r.record_id).collect()
}

#[test]
fn a_chunk_that_does_not_fit_leaves_nothing_and_never_serves() {
    let fs = tmpfs::Tmpfs::mount(512);
    let cache = fs.path().join("cache");
    for split in 0..2 {
        write_chunk(
            &cache,
            &FINGERPRINT,
            split,
            &mut records(split),
            Compression::None,
        )
        .unwrap();
    }
    let prefix = chunk_path(&cache, &FINGERPRINT, 0)
        .parent()
        .unwrap()
        .to_path_buf();
    let before = files(&prefix);

    fs.fill();
    let err = write_chunk(&cache, &FINGERPRINT, 2, &mut records(2), Compression::None)
        .expect_err("a chunk cannot fit on a full disk");
    assert!(err.is_disk_full(), "the error says the disk is full: {err}");
    assert_eq!(
        files(&prefix),
        before,
        "no temporary file and no half chunk"
    );
    assert!(
        read_chunk(&cache, &FINGERPRINT, 2, range(2))
            .unwrap()
            .is_none(),
        "the failed chunk never serves"
    );
    for split in 0..2 {
        let back = read_chunk(&cache, &FINGERPRINT, split, range(split))
            .unwrap()
            .expect("committed chunks stay");
        assert_eq!(ids(&back), range(split).collect::<Vec<_>>());
    }

    fs.free();
    write_chunk(&cache, &FINGERPRINT, 2, &mut records(2), Compression::None).unwrap();
    let back = read_chunk(&cache, &FINGERPRINT, 2, range(2))
        .unwrap()
        .expect("written once space is back");
    assert_eq!(ids(&back), range(2).collect::<Vec<_>>());
    let expected = records(2);
    for (a, b) in back.iter().zip(&expected) {
        assert_eq!(a.features.values.len(), b.features.values.len());
        assert_eq!(a.record_sha256, b.record_sha256);
    }
}
