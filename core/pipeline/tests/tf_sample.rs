//! Compatibility with data written by TensorFlow itself: reading fixtures/data/tf-sample must
//! reproduce its MANIFEST exactly (record payload hashes, `image/encoded` hashes, labels).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use bytes::Bytes;
use cachew_pipeline::example::{Example, Feature};
use cachew_pipeline::exec::canonical_elements;
use cachew_pipeline::manifest::read_manifest;
use cachew_pipeline::tfrecord::read_all;
use cachew_pipeline::{Dataset, ElementBody, ErrorPolicy, Pipeline, PipelineSpec};
use sha2::{Digest, Sha256};

fn sample_dir() -> PathBuf {
    cachew_fixtures::tf_sample_dir()
}

#[test]
fn reading_tf_sample_reproduces_its_manifest() {
    let manifest = read_manifest(&sample_dir().join("MANIFEST")).unwrap();
    assert_eq!(manifest.len(), 500);
    let mut checked = 0;
    for file in ["train-00000-of-00002", "train-00001-of-00002"] {
        let records = read_all(&sample_dir().join(file)).unwrap();
        let expected: Vec<_> = manifest.iter().filter(|m| m.file == file).collect();
        assert_eq!(records.len(), expected.len(), "{file}");
        for (payload, m) in records.iter().zip(expected) {
            assert_eq!(m.index as usize, checked % 250);
            let record_sha: [u8; 32] = Sha256::digest(payload).into();
            assert_eq!(record_sha, m.record_sha256, "{file} record {}", m.index);
            let example = Example::decode(Bytes::copy_from_slice(payload)).unwrap();
            let Some(Feature::Bytes(image)) = example.get("image/encoded") else {
                panic!("{file} record {}: no image/encoded", m.index)
            };
            let image_sha: [u8; 32] = Sha256::digest(&image[0]).into();
            assert_eq!(image_sha, m.image_sha256, "{file} record {}", m.index);
            let Some(Feature::Int64(label)) = example.get("image/class/label") else {
                panic!("{file} record {}: no label", m.index)
            };
            assert_eq!(label.as_slice(), &[m.label]);
            checked += 1;
        }
    }
    assert_eq!(checked, 500);
}

#[test]
fn dataset_record_hashes_follow_global_ids() {
    let spec = PipelineSpec::load(&cachew_fixtures::specs_dir().join("tf-sample.toml")).unwrap();
    let ds = Dataset::for_spec(&spec).unwrap();
    assert_eq!(ds.num_records(), 500);
    let manifest = read_manifest(&sample_dir().join("MANIFEST")).unwrap();
    let hashes = ds.record_hashes().unwrap();
    assert_eq!(
        hashes,
        manifest.iter().map(|m| m.record_sha256).collect::<Vec<_>>()
    );
    // Random access agrees with the sequential read.
    for id in [0u64, 249, 250, 499] {
        let payload = ds.read_record(id).unwrap();
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(&payload)),
            hashes[id as usize]
        );
    }
}

#[test]
fn the_tf_sample_pipeline_runs_every_record_once() {
    let spec = PipelineSpec::load(&cachew_fixtures::specs_dir().join("tf-sample.toml")).unwrap();
    assert_eq!(spec.on_error, ErrorPolicy::Fail);
    let ds = Dataset::for_spec(&spec).unwrap();
    let pipeline = Pipeline::new(spec).unwrap();
    let mut records = Vec::new();
    for element in canonical_elements(&pipeline, &ds, 42, 0) {
        let element = element.unwrap();
        let ElementBody::Example(tensors) = &element.body else {
            panic!("skipped {element:?}")
        };
        assert_eq!(tensors[0].shape, vec![64, 64, 3]);
        assert_eq!(tensors[0].data.len(), 64 * 64 * 3 * 4);
        assert_eq!(tensors[1].shape, Vec::<usize>::new());
        records.push(element.record_id);
    }
    records.sort_unstable();
    assert_eq!(records, (0..500).collect::<Vec<_>>());
}
