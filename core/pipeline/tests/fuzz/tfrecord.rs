//! TFRecord files: `FileIndex::build` under both error policies, then `read_record_at` at every
//! indexed offset (and at arbitrary ones), for arbitrary files, mutated valid files, and valid
//! files whose length field was rewritten with its checksum fixed, so that a corrupt length gets
//! past the header check.

use std::fs::File;
use std::path::{Path, PathBuf};

use cachew_fuzzing::{boundary_u64, bounded, bytes, config, mutated};
use cachew_pipeline::PipelineError;
use cachew_pipeline::spec::ErrorPolicy;
use cachew_pipeline::tfrecord::{self, FileIndex, HEADER_LEN, frame_record, masked_crc32c};
use proptest::prelude::*;
use proptest::sample::Index;

use crate::seeds;

/// Every error of a content problem is a corrupt or truncated record naming the file.
fn assert_names_file(error: &PipelineError, path: &Path) {
    assert!(
        matches!(
            error,
            PipelineError::CorruptRecord { .. } | PipelineError::TruncatedRecord { .. }
        ),
        "not a content error: {error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "the error does not name the file: {message}"
    );
}

/// Indexes `bytes` (written to `path`) under both policies and reads what was indexed.
fn check_file(path: PathBuf, bytes: Vec<u8>, probe: Index) {
    std::fs::write(&path, &bytes).unwrap();
    bounded("tfrecord index and read", move || {
        for policy in [ErrorPolicy::Fail, ErrorPolicy::Skip] {
            let index = match FileIndex::build(&path, policy) {
                Ok(index) => index,
                Err(e) => {
                    assert_eq!(policy, ErrorPolicy::Fail, "Skip failed on content: {e}");
                    assert_names_file(&e, &path);
                    continue;
                }
            };
            assert_eq!(index.size, bytes.len() as u64);
            assert!(index.skipped_bytes <= index.size);
            let file = File::open(&path).unwrap();
            for &offset in &index.offsets {
                match tfrecord::read_record_at(&file, &path, offset) {
                    Ok(payload) => assert!((payload.len() as u64) < index.size),
                    Err(e) => assert_names_file(&e, &path),
                }
            }
            // A reader may be pointed anywhere (a stale index): it still only errs.
            let anywhere = probe.index(bytes.len() + 1) as u64;
            if let Err(e) = tfrecord::read_record_at(&file, &path, anywhere) {
                assert_names_file(&e, &path);
            }
        }
    });
}

/// A small valid file (a few short payloads and the start of a real tf-sample record), and
/// the offset of each record.
fn valid_file() -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    for payload in [
        &b"first"[..],
        b"",
        &[7u8; 40][..],
        &seeds::records()[0][..64],
    ] {
        offsets.push(out.len());
        out.extend_from_slice(&frame_record(payload));
    }
    (out, offsets)
}

/// `file` with the length of the record at `offset` set to `len` and its checksum fixed.
fn with_length(mut file: Vec<u8>, offset: usize, len: u64) -> Vec<u8> {
    let len_bytes = len.to_le_bytes();
    if let Some(header) = file.get_mut(offset..offset + HEADER_LEN as usize) {
        header[..8].copy_from_slice(&len_bytes);
        header[8..].copy_from_slice(&masked_crc32c(&len_bytes).to_le_bytes());
    }
    file
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_files(data in bytes(512), probe in any::<Index>()) {
        let dir = tempfile::tempdir().unwrap();
        check_file(dir.path().join("f"), data, probe);
    }

    #[test]
    fn mutated_files(data in mutated(valid_file().0), probe in any::<Index>()) {
        let dir = tempfile::tempdir().unwrap();
        check_file(dir.path().join("f"), data, probe);
    }

    #[test]
    fn corrupt_lengths_with_valid_checksums(
        record in any::<Index>(),
        len in boundary_u64(),
        probe in any::<Index>(),
    ) {
        let (file, offsets) = valid_file();
        let offset = *record.get(&offsets);
        let dir = tempfile::tempdir().unwrap();
        check_file(dir.path().join("f"), with_length(file, offset, len), probe);
    }
}

#[test]
fn the_valid_seed_indexes_whole() {
    // The seed the mutations start from is itself valid: four records, nothing skipped.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("valid");
    std::fs::write(&path, valid_file().0).unwrap();
    let index = FileIndex::build(&path, ErrorPolicy::Skip).unwrap();
    assert_eq!(index.len(), 4);
    assert_eq!(index.skipped_bytes, 0);
}
