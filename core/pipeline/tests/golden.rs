//! Pins the bytes the tf-sample pipeline produces. The same binary must give these on every CPU
//! (no run-time SIMD dispatch reaches the output), and a change to any op, the generator or the
//! order is a visible format break, not a silent one.

#![allow(clippy::unwrap_used)]

use cachew_pipeline::exec::{Batcher, canonical_elements};
use cachew_pipeline::{Dataset, Pipeline, PipelineSpec};
use sha2::{Digest, Sha256};

/// SHA-256 over the hash-log lines of epoch `epoch` with seed 42.
fn epoch_digest(epoch: u64) -> String {
    let spec = PipelineSpec::load(&cachew_fixtures::specs_dir().join("tf-sample.toml")).unwrap();
    let ds = Dataset::for_spec(&spec).unwrap();
    let p = Pipeline::new(spec).unwrap();
    let mut batcher = Batcher::for_spec(p.spec(), epoch);
    let mut h = Sha256::new();
    let mut feed = |b: cachew_pipeline::Batch| {
        for i in 0..b.examples.len() {
            h.update(hex::encode(b.examples[i].record_sha256));
            h.update(" ");
            h.update(hex::encode(b.example_sha256(i)));
            h.update("\n");
        }
    };
    for e in canonical_elements(&p, &ds, 42, epoch) {
        if let Some(b) = batcher.push(e.unwrap()).unwrap() {
            feed(b);
        }
    }
    if let Some(b) = batcher.finish().unwrap() {
        feed(b);
    }
    hex::encode(h.finalize())
}

#[test]
fn tf_sample_epoch_bytes_are_pinned() {
    let got = [epoch_digest(0), epoch_digest(1)];
    println!("{got:?}");
    assert_eq!(got, GOLDEN);
}

const GOLDEN: [&str; 2] = [
    "cafdfa6094c80082dd8238af3a2084778070c8bb520a7352300809a5494ce429",
    "09b3fe1c01a7328906ea6370928c6c4acb0789e5629b1cf9dece373b2b0c8e56",
];
