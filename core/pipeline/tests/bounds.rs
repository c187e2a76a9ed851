//! The pipeline's bounds (`limits.rs`): a spec over a bound is refused naming the field, the
//! bound and the value; a JPEG whose header asks for more than the decode budget is a bad record
//! (failed or skipped per `on_error`), not a decode.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use cachew_pipeline::example::Feature;
use cachew_pipeline::limits::{self, DEFAULT_MAX_DECODE_PIXELS};
use cachew_pipeline::tfrecord::TfRecordWriter;
use cachew_pipeline::{Dataset, Pipeline, PipelineError, PipelineSpec};

/// A JPEG from the fixtures whose frame header (SOF0) now claims `height` x `width`; the
/// entropy-coded data still describes the small image.
fn jpeg_claiming(height: u16, width: u16) -> Bytes {
    let example = cachew_fixtures::make_example(&common::small_params(), 0)
        .unwrap()
        .0;
    let Some(Feature::Bytes(jpeg)) = example.get("image/encoded") else {
        panic!("no image in the fixture example")
    };
    let mut bytes = jpeg[0].to_vec();
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("a baseline frame header");
    // FF C0, length (2), precision (1), height (2), width (2).
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    Bytes::from(bytes)
}

/// A file of six fixture records; record 3's JPEG claims 16000 x 16000 pixels.
fn dataset_with_a_huge_header(dir: &Path) -> Vec<PathBuf> {
    let path = dir.join("huge-00000-of-00001");
    let mut w = TfRecordWriter::new(std::fs::File::create(&path).unwrap());
    let good = cachew_fixtures::make_example(&common::small_params(), 0)
        .unwrap()
        .0;
    for i in 0..6 {
        let mut e = good.clone();
        if i == 3 {
            e.features.insert(
                "image/encoded".into(),
                Feature::Bytes(vec![jpeg_claiming(16_000, 16_000)]),
            );
        }
        w.write_record(&e.encode()).unwrap();
    }
    vec![path]
}

fn spec(files: &[PathBuf], on_error: &str, ops: &str) -> Result<PipelineSpec, PipelineError> {
    let text = common::spec_text(files, 4, true, on_error, ops);
    PipelineSpec::from_toml(&text, Path::new("/"))
}

const RESIZE_BATCH: &str = "[[ops]]\nop = \"resize\"\nfeature = \"image\"\nheight = 8\nwidth = 8\n\
                            [[ops]]\nop = \"batch\"\nsize = 4\n";

/// Runs an epoch: (examples delivered, skipped) or the first error.
fn run(p: &Pipeline, ds: &Dataset) -> Result<(usize, u64), PipelineError> {
    common::delivered_and_skipped(p, ds, 1)
}

#[test]
fn a_jpeg_over_the_decode_budget_is_a_bad_record_failed_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let files = dataset_with_a_huge_header(dir.path());
    let ops = format!("{}{RESIZE_BATCH}", common::PARSE_DECODE);

    let failing = spec(&files, "fail", &ops).unwrap();
    let ds = Dataset::for_spec(&failing).unwrap();
    let err = run(&Pipeline::new(failing).unwrap(), &ds).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, PipelineError::BadImage { record_id: 3, .. }),
        "{msg}"
    );
    assert!(err.is_record_error());
    assert!(
        msg.contains("16000x16000x3") && msg.contains(&DEFAULT_MAX_DECODE_PIXELS.to_string()),
        "{msg}"
    );

    let skipping = Pipeline::new(spec(&files, "skip", &ops).unwrap()).unwrap();
    assert_eq!(run(&skipping, &ds).unwrap(), (5, 1));

    // The budget is the worker's: a smaller one refuses the fixture's 36x44 images too.
    let tight = skipping.clone().with_max_decode_pixels(36 * 44 * 3 - 1);
    assert_eq!(run(&tight, &ds).unwrap(), (0, 6));
    let exact = skipping.with_max_decode_pixels(36 * 44 * 3);
    assert_eq!(run(&exact, &ds).unwrap(), (5, 1));
}

/// The spec with `ops` is refused naming `field`, `bound` and `value`.
fn refused(files: &[PathBuf], ops: &str, field: &str, bound: u64, value: u64) {
    let err = spec(files, "fail", ops).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PipelineError::Spec { .. }), "{msg}");
    assert!(
        msg.contains(field) && msg.contains(&format!("{value} is over the bound {bound}")),
        "expected {field}: {value} over {bound}; got {msg}"
    );
}

#[test]
fn spec_fields_over_their_bounds_are_refused() {
    let files = common::small_dataset().shards.clone();
    let base = common::PARSE_DECODE;
    let ok = format!("{base}{RESIZE_BATCH}");
    spec(&files, "fail", &ok).unwrap();

    let batch = |size: u32| {
        format!(
            "{base}[[ops]]\nop = \"resize\"\nfeature = \"image\"\nheight = 2\nwidth = 2\n\
             [[ops]]\nop = \"batch\"\nsize = {size}\n"
        )
    };
    spec(&files, "fail", &batch(limits::MAX_BATCH_SIZE)).unwrap();
    refused(
        &files,
        &batch(limits::MAX_BATCH_SIZE + 1),
        "ops[3].size",
        limits::MAX_BATCH_SIZE.into(),
        u64::from(limits::MAX_BATCH_SIZE) + 1,
    );

    // 4096 examples of 512x512x3 bytes plus an int64 label: 3 GiB, over one message.
    let big = format!(
        "{base}[[ops]]\nop = \"resize\"\nfeature = \"image\"\nheight = 512\nwidth = 512\n\
         [[ops]]\nop = \"batch\"\nsize = 4096\n"
    );
    refused(
        &files,
        &big,
        "ops[3].size x example bytes",
        limits::MAX_BATCH_BYTES,
        4096 * (512 * 512 * 3 + 8),
    );

    let crop = |attempts: u32| {
        format!(
            "{base}[[ops]]\nop = \"random_crop\"\nfeature = \"image\"\nattempts = {attempts}\n\
             {RESIZE_BATCH}"
        )
    };
    spec(&files, "fail", &crop(limits::MAX_CROP_ATTEMPTS)).unwrap();
    refused(
        &files,
        &crop(1000),
        "ops[2].attempts",
        limits::MAX_CROP_ATTEMPTS.into(),
        1000,
    );

    let resize = format!(
        "{base}[[ops]]\nop = \"resize\"\nfeature = \"image\"\nheight = 8192\nwidth = 8192\n"
    );
    refused(
        &files,
        &resize,
        "ops[2].height x width x channels",
        limits::MAX_RESIZE_VALUES,
        8192 * 8192 * 3,
    );

    let parse_huge = "[[ops]]\nop = \"parse_example\"\nfeatures = [\n  \
        { key = \"image/encoded\", dtype = \"bytes\", name = \"image\" },\n  \
        { key = \"image/class/label\", dtype = \"int64\", name = \"label\", shape = [65536, 65536] },\n]\n\
        [[ops]]\nop = \"decode_jpeg\"\nfeature = \"image\"\n";
    refused(
        &files,
        &format!("{parse_huge}{RESIZE_BATCH}"),
        "ops[0].features[1].shape (values)",
        limits::MAX_FEATURE_VALUES as u64,
        65536 * 65536,
    );
}

#[test]
fn split_records_and_file_count_over_their_bounds_are_refused() {
    let files = common::small_dataset().shards.clone();
    let ops = format!("{}{RESIZE_BATCH}", common::PARSE_DECODE);
    let text = common::spec_text(&files, limits::MAX_SPLIT_RECORDS + 1, true, "fail", &ops);
    let err = PipelineSpec::from_toml(&text, Path::new("/")).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "source.split_records: {} is over the bound {}",
            limits::MAX_SPLIT_RECORDS + 1,
            limits::MAX_SPLIT_RECORDS
        )),
        "{err}"
    );
    // A canonical spec (as sent to the dispatcher) naming more files than the bound.
    let mut json: serde_json::Value =
        serde_json::from_str(&spec(&files, "fail", &ops).unwrap().to_canonical_json()).unwrap();
    json["source"]["files"] = serde_json::Value::Array(
        (0..=limits::MAX_SPEC_FILES)
            .map(|i| serde_json::Value::String(format!("/data/f{i}")))
            .collect(),
    );
    let err = PipelineSpec::from_json(&json.to_string()).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "source.files (count): {} is over the bound {}",
            limits::MAX_SPEC_FILES + 1,
            limits::MAX_SPEC_FILES
        )),
        "{err}"
    );
}
