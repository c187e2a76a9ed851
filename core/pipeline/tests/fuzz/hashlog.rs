//! Hash logs: `read_hash_log` on arbitrary files and on mutated valid logs.

use cachew_fuzzing::{bounded, bytes, config, mutated};
use cachew_pipeline::PipelineError;
use cachew_pipeline::hashlog::{HashLine, HashLogWriter, LINE_LEN, read_hash_log};
use proptest::prelude::*;

fn valid_log() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = HashLogWriter::open(dir.path(), 0, 0).unwrap();
    for i in 0..3u8 {
        writer
            .append(&HashLine {
                record: [i; 32],
                example: [0xa0 | i; 32],
            })
            .unwrap();
    }
    writer.sync().unwrap();
    std::fs::read(writer.path()).unwrap()
}

fn check(data: Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("epoch-0.log");
    std::fs::write(&path, &data).unwrap();
    bounded("read_hash_log", move || match read_hash_log(&path) {
        Ok(lines) => assert_eq!(lines.len() as u64 * LINE_LEN, data.len() as u64),
        Err(e) => {
            assert!(matches!(e, PipelineError::CorruptRecord { .. }), "{e}");
            assert!(e.to_string().contains("line "), "no line number: {e}");
        }
    });
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_logs(data in bytes(400)) {
        check(data);
    }

    #[test]
    fn mutated_logs(data in mutated(valid_log())) {
        check(data);
    }
}
