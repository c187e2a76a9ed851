//! The per-op timing hook changes no output byte, and hears every op of every record once (plus
//! the read, and the cache look-up and hand-over of a pipeline with a cache point).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use cachew_pipeline::exec::{Features, NoCache, PrefixCache, plan_for};
use cachew_pipeline::observe::{NoObserver, OpObserver};
use cachew_pipeline::{Dataset, Pipeline, PipelineSpec};

#[derive(Default)]
struct Count(Mutex<BTreeMap<&'static str, u32>>);

impl OpObserver for Count {
    fn op_done(&self, op: &'static str, _: Duration) {
        *self.0.lock().unwrap().entry(op).or_default() += 1;
    }
}

/// A cache that holds the odd records (their prefix outputs as computed) and takes the others.
#[derive(Default)]
struct Odd(Mutex<BTreeMap<u64, ([u8; 32], Features)>>);

impl PrefixCache for Odd {
    fn cached(&self, record_id: u64) -> Option<([u8; 32], Features)> {
        self.0.lock().unwrap().get(&record_id).cloned()
    }
    fn computed(&self, record_id: u64, sha: [u8; 32], features: &Features, _: Duration) {
        if record_id % 2 == 1 {
            self.0
                .lock()
                .unwrap()
                .insert(record_id, (sha, features.clone()));
        }
    }
}

fn pipeline(cache_op: &str) -> (Pipeline, Dataset) {
    let ds = common::small_dataset();
    let mut ops = String::from(common::PARSE_DECODE);
    ops.push_str(cache_op);
    ops.push_str(
        "[[ops]]\nop = \"random_crop\"\nfeature = \"image\"\n[[ops]]\nop = \"random_flip\"\nfeature = \"image\"\n\
         [[ops]]\nop = \"resize\"\nfeature = \"image\"\nheight = 12\nwidth = 10\n[[ops]]\nop = \"normalize\"\nfeature = \"image\"\nmean = [0.4, 0.5, 0.6]\nstd = [0.2, 0.25, 0.3]\n",
    );
    let spec = PipelineSpec::from_toml(
        &common::spec_text(&ds.shards, 16, true, "fail", &ops),
        Path::new("/"),
    )
    .unwrap();
    let dataset = Dataset::for_spec(&spec).unwrap();
    (Pipeline::new(spec).unwrap(), dataset)
}

const OPS: [&str; 6] = [
    "parse_example",
    "decode_jpeg",
    "random_crop",
    "random_flip",
    "resize",
    "normalize",
];

#[test]
fn observing_changes_no_byte_and_hears_every_op_of_every_record() {
    let (p, dataset) = pipeline("");
    let plan = plan_for(&p, &dataset);
    let count = Count::default();
    let mut records = 0;
    for split in 0..plan.num_splits() {
        let order = plan.record_order(5, 2, split);
        let range = 0..order.len() as u32;
        let plain = p
            .produce(&dataset, 5, 2, split, &order, range.clone())
            .unwrap();
        let off = p
            .produce_observed(
                &dataset,
                5,
                2,
                split,
                &order,
                range.clone(),
                &NoCache,
                &NoObserver,
            )
            .unwrap();
        let on = p
            .produce_observed(&dataset, 5, 2, split, &order, range, &NoCache, &count)
            .unwrap();
        assert_eq!(plain, off);
        assert_eq!(plain, on);
        records += order.len() as u32;
    }
    let seen = count.0.into_inner().unwrap();
    let mut expected: BTreeMap<&str, u32> = OPS.iter().map(|&op| (op, records)).collect();
    expected.insert("read", records);
    assert_eq!(seen, expected);
}

#[test]
fn with_a_cache_point_the_cache_steps_are_heard_and_the_bytes_stay() {
    let (p, dataset) = pipeline("[[ops]]\nop = \"cache\"\n");
    let plan = plan_for(&p, &dataset);
    let split = 0;
    let order = plan.record_order(5, 0, split);
    let n = order.len() as u32;
    let reference = p.produce(&dataset, 5, 0, split, &order, 0..n).unwrap();
    let cache = Odd::default();
    // The first pass computes every record (and the cache keeps the odd ones).
    let first = Count::default();
    let computed = p
        .produce_observed(&dataset, 5, 0, split, &order, 0..n, &cache, &first)
        .unwrap();
    assert_eq!(computed, reference);
    let first = first.0.into_inner().unwrap();
    for step in ["cache_get", "cache_put", "read"].iter().chain(&OPS) {
        assert_eq!(first.get(step), Some(&n), "{step}: {first:?}");
    }
    // The second pass reads the odd records from the cache: no read, no prefix ops for them.
    let hits = order.iter().filter(|&&id| id % 2 == 1).count() as u32;
    let second = Count::default();
    let served = p
        .produce_observed(&dataset, 5, 0, split, &order, 0..n, &cache, &second)
        .unwrap();
    assert_eq!(served, reference);
    let second = second.0.into_inner().unwrap();
    assert_eq!(second.get("cache_get"), Some(&n));
    for step in ["read", "cache_put", "parse_example", "decode_jpeg"] {
        assert_eq!(second.get(step).copied().unwrap_or(0), n - hits, "{step}");
    }
    for step in &OPS[2..] {
        assert_eq!(second.get(step), Some(&n), "{step}");
    }
}
