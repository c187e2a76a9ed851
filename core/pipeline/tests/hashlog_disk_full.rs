//! The hash log on a small tmpfs that fills up: writes fail with an error that says the disk
//! is full, the file only ever holds whole lines of the right ones, and once space is freed the
//! held lines are written: the log ends exactly as an uninterrupted one, no line torn, lost or
//! duplicated. Needs root to mount the tmpfs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../store/tests/common/tmpfs.rs"]
mod tmpfs;

use cachew_pipeline::hashlog::{HashLine, HashLogWriter, LINE_LEN, log_path, read_hash_log};

fn line(i: u32) -> HashLine {
    let mut record = [0u8; 32];
    record[..4].copy_from_slice(&i.to_le_bytes());
    let mut example = [0xEEu8; 32];
    example[28..].copy_from_slice(&i.to_be_bytes());
    HashLine { record, example }
}

#[test]
fn a_full_disk_never_tears_loses_or_duplicates_a_line() {
    let fs = tmpfs::Tmpfs::mount(512);
    let dir = fs.path().join("hashes");
    let path = log_path(&dir, 0);
    let mut w = HashLogWriter::open(&dir, 0, 0).unwrap();
    for i in 0..100 {
        w.append(&line(i)).unwrap();
    }
    w.sync().unwrap();

    fs.fill();
    let total = 3000u32;
    let mut first_error = None;
    for i in 100..total {
        if let Err(e) = w.append(&line(i)) {
            first_error.get_or_insert(e);
        }
    }
    let err = first_error.expect("appending 380 KB to a full disk fails somewhere");
    assert!(err.is_disk_full(), "the error says the disk is full: {err}");
    let err = w.sync().expect_err("still full");
    assert!(err.is_disk_full(), "{err}");
    assert_eq!(w.lines(), u64::from(total), "every line is held");
    // What the file holds meanwhile: whole lines only, each the right one.
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk.len() as u64 % LINE_LEN, 0, "no torn line");
    let so_far = read_hash_log(&path).unwrap();
    assert_eq!(
        so_far,
        (0..so_far.len() as u32).map(line).collect::<Vec<_>>()
    );

    fs.free();
    w.sync().unwrap();
    drop(w);
    let lines = read_hash_log(&path).unwrap();
    assert_eq!(lines, (0..total).map(line).collect::<Vec<_>>());
}
