//! `OpenedSpec::from_json`, the one way a process turns canonical spec JSON into a dataset and
//! its id: the id is the hex of `Dataset::fingerprint`, it does not depend on the seed or on
//! where the files are mounted, and a spec that is not canonical is refused.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use cachew_pipeline::{Dataset, OpenedSpec, PipelineSpec};

fn spec_over(files: &[std::path::PathBuf]) -> PipelineSpec {
    PipelineSpec::from_toml(
        &common::spec_text(files, 16, true, "fail", common::PARSE_DECODE),
        Path::new("/"),
    )
    .unwrap()
}

#[test]
fn the_id_is_the_hex_fingerprint_wherever_the_files_are() {
    let ds = common::small_dataset();
    let spec = spec_over(&ds.shards);
    let opened = OpenedSpec::from_json(&spec.to_canonical_json()).unwrap();
    assert_eq!(opened.spec, spec);
    assert_eq!(opened.dataset.num_records(), 90);
    let dataset = Dataset::for_spec(&spec).unwrap();
    assert_eq!(opened.id, hex::encode(dataset.fingerprint(&spec)));

    let mut reseeded = spec.clone();
    reseeded.seed += 1;
    let other = OpenedSpec::from_json(&reseeded.to_canonical_json()).unwrap();
    assert_eq!(other.id, opened.id, "the seed does not change the dataset");

    let dir = tempfile::tempdir().unwrap();
    let copied = spec_over(&common::copy_dataset(ds, dir.path()));
    let moved = OpenedSpec::from_json(&copied.to_canonical_json()).unwrap();
    assert_eq!(moved.id, opened.id, "the same bytes mounted elsewhere");
}

#[test]
fn non_canonical_json_is_refused() {
    let ds = common::small_dataset();
    let json = spec_over(&ds.shards).to_canonical_json().replace(
        &format!("\"{}", ds.shards[0].display()),
        "\"relative.tfrecord",
    );
    assert!(OpenedSpec::from_json(&json).is_err());
    assert!(OpenedSpec::from_json("{").is_err());
}
