//! Epochs served from the cache are byte-identical to computed ones: the prefix outputs of a split
//! are collected while computing it, written as a chunk, read back, and the split produced again
//! from the chunk in another epoch gives the same elements as computing it from the source.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use cachew_pipeline::cache::{CachedRecord, Compression, read_chunk, write_chunk};
use cachew_pipeline::exec::{Features, PrefixCache, plan_for};
use cachew_pipeline::{Dataset, Pipeline, PipelineSpec};

#[derive(Default)]
struct Collect(Mutex<Vec<CachedRecord>>);

impl PrefixCache for Collect {
    fn cached(&self, _: u64) -> Option<([u8; 32], Features)> {
        None
    }
    fn computed(&self, record_id: u64, record_sha256: [u8; 32], features: &Features, _: Duration) {
        self.0.lock().unwrap().push(CachedRecord {
            record_id,
            record_sha256,
            features: features.clone(),
        });
    }
}

struct Serve(HashMap<u64, ([u8; 32], Features)>);

impl PrefixCache for Serve {
    fn cached(&self, record_id: u64) -> Option<([u8; 32], Features)> {
        self.0.get(&record_id).cloned()
    }
    fn computed(&self, record_id: u64, _: [u8; 32], _: &Features, _: Duration) {
        panic!("record {record_id} was computed although the cache holds it");
    }
}

#[test]
fn cached_splits_give_the_computed_bytes() {
    let ds = common::small_dataset();
    let mut ops = String::from(common::PARSE_DECODE);
    ops.push_str(
        "[[ops]]\nop = \"cache\"\n[[ops]]\nop = \"random_crop\"\nfeature = \"image\"\n[[ops]]\nop = \"random_flip\"\nfeature = \"image\"\n\
         [[ops]]\nop = \"resize\"\nfeature = \"image\"\nheight = 12\nwidth = 10\n[[ops]]\nop = \"normalize\"\nfeature = \"image\"\nmean = [0.4, 0.5, 0.6]\nstd = [0.2, 0.25, 0.3]\n",
    );
    let spec = PipelineSpec::from_toml(
        &common::spec_text(&ds.shards, 16, true, "fail", &ops),
        Path::new("/"),
    )
    .unwrap();
    let dataset = Dataset::for_spec(&spec).unwrap();
    let fingerprint = dataset.prefix_fingerprint(&spec);
    let p = Pipeline::new(spec).unwrap();
    let plan = plan_for(&p, &dataset);
    let dir = tempfile::tempdir().unwrap();
    for (split, compression) in
        (0..plan.num_splits()).zip([Compression::None, Compression::Lz4].into_iter().cycle())
    {
        // Epoch 0 computes the split and collects its prefix outputs (a put).
        let order0 = plan.record_order(3, 0, split);
        let collect = Collect::default();
        let computed0 = p
            .produce_with(
                &dataset,
                3,
                0,
                split,
                &order0,
                0..order0.len() as u32,
                &collect,
            )
            .unwrap();
        assert_eq!(
            computed0,
            p.produce(&dataset, 3, 0, split, &order0, 0..order0.len() as u32)
                .unwrap()
        );
        let mut records = collect.0.into_inner().unwrap();
        write_chunk(dir.path(), &fingerprint, split, &mut records, compression).unwrap();
        // Epoch 1 from the chunk (a get) equals epoch 1 computed from the source.
        let chunk = read_chunk(dir.path(), &fingerprint, split, plan.split_range(split))
            .unwrap()
            .unwrap();
        let serve = Serve(
            chunk
                .into_iter()
                .map(|r| (r.record_id, (r.record_sha256, r.features)))
                .collect(),
        );
        let order1 = plan.record_order(3, 1, split);
        let from_cache = p
            .produce_with(
                &dataset,
                3,
                1,
                split,
                &order1,
                0..order1.len() as u32,
                &serve,
            )
            .unwrap();
        let computed1 = p
            .produce(&dataset, 3, 1, split, &order1, 0..order1.len() as u32)
            .unwrap();
        assert!(
            from_cache == computed1,
            "split {split}: the cached epoch differs from the computed one"
        );
    }
}

/// Records whose prefix could not be computed, as the cache is told of them.
#[derive(Default)]
struct Lost(Mutex<Vec<u64>>);

impl PrefixCache for Lost {
    fn cached(&self, _: u64) -> Option<([u8; 32], Features)> {
        None
    }
    fn computed(&self, _: u64, _: [u8; 32], _: &Features, _: Duration) {}
    fn lost(&self, record_id: u64, _: &cachew_pipeline::PipelineError) {
        self.0.lock().unwrap().push(record_id);
    }
}

/// A corrupt record skipped under `on_error = "skip"` is reported to the cache as lost, so a
/// chunk being written for its split is given up instead of waiting for it forever.
#[test]
fn a_skipped_corrupt_record_is_reported_lost_to_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let files = common::copy_dataset(common::small_dataset(), dir.path());
    let ds = Dataset::open(&files, cachew_pipeline::ErrorPolicy::Fail).unwrap();
    let loc = ds.locate(35).unwrap();
    let mut bytes = std::fs::read(&files[loc.file]).unwrap();
    bytes[(loc.offset + cachew_pipeline::tfrecord::HEADER_LEN + 40) as usize] ^= 0x10;
    std::fs::write(&files[loc.file], &bytes).unwrap();

    let mut ops = String::from(common::PARSE_DECODE);
    ops.push_str("[[ops]]\nop = \"cache\"\n");
    let spec = PipelineSpec::from_toml(
        &common::spec_text(&files, 16, true, "skip", &ops),
        Path::new("/"),
    )
    .unwrap();
    let dataset = Dataset::for_spec(&spec).unwrap();
    let p = Pipeline::new(spec).unwrap();
    let plan = plan_for(&p, &dataset);
    let lost = Lost::default();
    let mut skipped = Vec::new();
    for split in 0..plan.num_splits() {
        let order = plan.record_order(3, 0, split);
        let elements = p
            .produce_with(&dataset, 3, 0, split, &order, 0..order.len() as u32, &lost)
            .unwrap();
        skipped.extend(
            elements
                .iter()
                .filter(|e| matches!(e.body, cachew_pipeline::ElementBody::Skipped(_)))
                .map(|e| e.record_id),
        );
    }
    assert_eq!(skipped, vec![35]);
    assert_eq!(lost.0.into_inner().unwrap(), vec![35]);
}
