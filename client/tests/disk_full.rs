//! The client's files on a small tmpfs that fills up: a cursor save fails with an I/O error,
//! leaves the previous cursor file intact and no temporary behind, and succeeds once space is
//! freed. (The hash log's own test is in the pipeline crate; the binary's waiting is exercised
//! by the `disk-client` scenario.) Needs root to mount the tmpfs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../core/store/tests/common/tmpfs.rs"]
mod tmpfs;

use cachew_client::cursor::SavedCursor;
use cachew_client::{ClientCursor, ConsumerCursor};

fn saved(examples: u64, job: &str) -> SavedCursor {
    SavedCursor {
        job: job.to_string(),
        seed: 1,
        num_epochs: 2,
        num_consumers: 1,
        cursor: ClientCursor {
            consumer_index: 0,
            at: ConsumerCursor {
                epoch: 1,
                ordinal: 3,
                index: 5,
            },
            examples,
            batches: examples / 4,
        },
    }
}

#[test]
fn a_full_disk_keeps_the_previous_cursor_and_saving_works_once_freed() {
    let fs = tmpfs::Tmpfs::mount(256);
    let path = fs.path().join("client.cursor");
    saved(40, "j").save(&path).unwrap();

    fs.fill();
    // A job name long enough that the file needs a page of its own.
    let long = "j".repeat(8192);
    let err = saved(80, &long)
        .save(&path)
        .expect_err("no room for the new cursor");
    assert!(err.is_io(), "{err}");
    assert!(
        err.to_string().contains("client.cursor"),
        "names the file: {err}"
    );
    assert_eq!(SavedCursor::load(&path).unwrap(), saved(40, "j"), "intact");
    let mut names: Vec<String> = std::fs::read_dir(fs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["client.cursor", "filler"], "no temporary left");

    fs.free();
    saved(80, &long).save(&path).unwrap();
    assert_eq!(SavedCursor::load(&path).unwrap(), saved(80, &long));
}
