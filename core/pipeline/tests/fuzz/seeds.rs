//! Valid inputs to mutate, taken from the checked-in tf-sample dataset (written by TensorFlow).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cachew_pipeline::tfrecord;

/// The fixtures directory of the workspace.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The first records of the tf-sample dataset: serialized `tf.train.Example`s with a JPEG.
pub fn records() -> &'static [Vec<u8>] {
    static RECORDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let path = fixtures().join("data/tf-sample/train-00000-of-00002");
        let all = tfrecord::read_all(&path).unwrap();
        all.into_iter().take(4).collect()
    })
}

/// The tf-sample spec file's text and directory.
pub fn spec_toml() -> (String, PathBuf) {
    let path = fixtures().join("specs/tf-sample.toml");
    (
        std::fs::read_to_string(&path).unwrap(),
        path.parent().unwrap().to_path_buf(),
    )
}
