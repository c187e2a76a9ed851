//! Shared helpers of the pipeline integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cachew_fixtures::{GenerateParams, GeneratedDataset, ensure};

pub fn small_params() -> GenerateParams {
    GenerateParams {
        shards: 3,
        records: 90,
        height: 36,
        width: 44,
        classes: 10,
        seed: 11,
        quality: 85,
    }
}

/// A small generated dataset shared by the test binaries, kept in cargo's scratch directory for
/// integration tests (under `target/`) rather than a temp dir a static would never remove.
pub fn small_dataset() -> &'static GeneratedDataset {
    static DS: OnceLock<GeneratedDataset> = OnceLock::new();
    DS.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("datasets");
        ensure(&root, &small_params(), |_, _| {}).unwrap()
    })
}

/// A spec over `files` with the given op section.
pub fn spec_text(
    files: &[PathBuf],
    split_records: u32,
    shuffle: bool,
    on_error: &str,
    ops: &str,
) -> String {
    let files: Vec<String> = files
        .iter()
        .map(|f| format!("\"{}\"", f.display()))
        .collect();
    format!(
        "outputs = [\"image\", \"label\"]\nshuffle = {shuffle}\non_error = \"{on_error}\"\n\
         [source]\nfiles = [{}]\nsplit_records = {split_records}\n{ops}",
        files.join(", ")
    )
}

pub const PARSE_DECODE: &str = r#"
[[ops]]
op = "parse_example"
features = [
  { key = "image/encoded", dtype = "bytes", name = "image" },
  { key = "image/class/label", dtype = "int64", name = "label" },
]
[[ops]]
op = "decode_jpeg"
feature = "image"
"#;

pub fn copy_dataset(ds: &GeneratedDataset, to: &Path) -> Vec<PathBuf> {
    ds.shards
        .iter()
        .map(|s| {
            let dst = to.join(s.file_name().unwrap());
            std::fs::copy(s, &dst).unwrap();
            dst
        })
        .collect()
}

/// Runs epoch 0 of `p` over `ds` with `seed` in the canonical order and batches it: (examples
/// delivered, records skipped) or the first error.
pub fn delivered_and_skipped(
    p: &cachew_pipeline::Pipeline,
    ds: &cachew_pipeline::Dataset,
    seed: u64,
) -> Result<(usize, u64), cachew_pipeline::PipelineError> {
    use cachew_pipeline::exec::{Batcher, canonical_elements};
    let mut batcher = Batcher::for_spec(p.spec(), 0);
    let mut delivered = 0;
    for e in canonical_elements(p, ds, seed, 0) {
        if let Some(b) = batcher.push(e?).unwrap() {
            delivered += b.examples.len();
        }
    }
    if let Some(b) = batcher.finish().unwrap() {
        delivered += b.examples.len();
    }
    Ok((delivered, batcher.skipped()))
}
