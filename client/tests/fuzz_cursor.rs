//! Fuzz tests of the client's cursor file (`SavedCursor::load`, as `--cursor-file` /
//! `--resume-from` read it) and of the first thing a resume does with the cursor locally:
//! keeping the hash log's lines before it (`HashLogWriter::open` with the saved epoch and
//! example count). Inputs: arbitrary bytes, mutated valid files, and valid files whose JSON was
//! mutated as a value with the checksum line fixed, so the mutation reaches the deserializer and
//! the numbers reach the hash log. See `cachew_fuzzing` for what is asserted.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use cachew_client::ClientCursor;
use cachew_client::cursor::{CursorError, SavedCursor};
use cachew_fuzzing::{bounded, bytes, config, json, mutated};
use cachew_pipeline::ConsumerCursor;
use cachew_pipeline::PipelineSpec;
use cachew_pipeline::hashlog::HashLogWriter;
use proptest::prelude::*;

#[global_allocator]
static ALLOCATOR: cachew_fuzzing::Allocator =
    cachew_fuzzing::allocator(cachew_fuzzing::MEMORY_LIMIT);

fn sample() -> SavedCursor {
    SavedCursor {
        job: "train".into(),
        seed: 42,
        num_epochs: 3,
        num_consumers: 2,
        cursor: ClientCursor {
            consumer_index: 1,
            at: ConsumerCursor {
                epoch: 1,
                ordinal: 7,
                index: 12,
            },
            examples: 2,
            batches: 1,
        },
    }
}

/// The file `save` writes for `sample()`.
fn valid_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cursor");
    sample().save(&path).unwrap();
    std::fs::read(path).unwrap()
}

/// A cursor file around `json` with its checksum right.
fn file_with_json(json: &str) -> Vec<u8> {
    format!(
        "cachew-cursor v1\n{json}\ncrc32c {:08x}\n",
        crc32c::crc32c(json.as_bytes())
    )
    .into_bytes()
}

/// Loads `data` as a cursor file; a cursor that loads is saved and loaded again unchanged, and
/// its hash log is opened as a resume would (an error, never a panic, if the log is short).
fn check(data: Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cursor");
    std::fs::write(&path, &data).unwrap();
    let logs: PathBuf = dir.path().join("hash-logs");
    bounded("SavedCursor::load", move || {
        match SavedCursor::load(&path) {
            Ok(cursor) => {
                cursor.save(&path).unwrap();
                assert_eq!(SavedCursor::load(&path).unwrap(), cursor);
                let kept =
                    HashLogWriter::open(&logs, cursor.cursor.at.epoch, cursor.cursor.examples);
                if cursor.cursor.examples > 0 {
                    // The log is empty: a resume that needs lines must be refused, and say so.
                    let e = kept.err().unwrap_or_else(|| {
                        panic!(
                            "a resume needing {} lines kept an empty log",
                            cursor.cursor.examples
                        )
                    });
                    assert!(e.to_string().contains("cursor"), "{e}");
                }
            }
            Err(CursorError::Damaged {
                path: named,
                reason,
            }) => {
                assert_eq!(named, path.display().to_string());
                assert!(!reason.is_empty());
            }
            Err(e @ CursorError::Io { .. }) => panic!("reading a plain file failed: {e}"),
        }
    });
}

fn sample_json() -> serde_json::Value {
    serde_json::to_value(sample()).unwrap()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_files(data in bytes(300)) {
        check(data);
    }

    #[test]
    fn mutated_files(data in mutated(valid_file())) {
        check(data);
    }

    #[test]
    fn mutated_json_behind_a_valid_checksum(value in json::mutated(sample_json())) {
        check(file_with_json(&value.to_string()));
    }
}

#[test]
fn the_valid_seed_loads() {
    assert_eq!(
        file_with_json(&serde_json::to_string(&sample()).unwrap()),
        valid_file()
    );
}

/// Cursor files that once broke a resume (`tests/corpus/cursor/`): each loads or is refused,
/// and a resume from it refuses an empty hash log with a reason.
#[test]
fn corpus_of_cursors_that_broke_a_resume() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/cursor");
    for (_, data) in cachew_fuzzing::corpus(&dir) {
        check(data);
    }
}

/// A cursor whose consumer index does not fit the wire's `int32` (it would be sent as -1, "any
/// free consumer", and resume another consumer's place) is refused before anything is sent.
#[test]
fn a_consumer_index_past_the_wire_is_refused() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus/cursor/consumer-index-past-i32.cursor");
    let saved = SavedCursor::load(&path).unwrap();
    let spec = PipelineSpec::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/specs/tf-sample.toml"),
    )
    .unwrap();
    let mut config = cachew_client::ClientConfig::new("127.0.0.1:1", saved.job, spec);
    config.num_consumers = saved.num_consumers;
    config.resume = Some(saved.cursor);
    config.connect_timeout = std::time::Duration::from_millis(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match runtime.block_on(cachew_client::JobClient::connect(config)) {
        Err(cachew_client::ClientError::Config(reason)) => {
            assert!(reason.contains("4294967295"), "{reason}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a client connected with an index the wire cannot carry"),
    }
}
