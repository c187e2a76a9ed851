//! Bad input never panics: a flipped byte inside a record, a truncated file and an undecodable
//! JPEG each give an error naming where (file and offset, or record and feature), or a counted
//! skip under `on_error = "skip"`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use cachew_pipeline::example::{Example, Feature};
use cachew_pipeline::exec::canonical_elements;
use cachew_pipeline::tfrecord::{HEADER_LEN, TfRecordWriter};
use cachew_pipeline::{Dataset, ElementBody, Pipeline, PipelineError, PipelineSpec};

fn pipeline(files: &[PathBuf], on_error: &str) -> PipelineSpec {
    let mut ops = String::from(common::PARSE_DECODE);
    ops.push_str("[[ops]]\nop = \"resize\"\nfeature = \"image\"\nheight = 8\nwidth = 8\n[[ops]]\nop = \"batch\"\nsize = 7\n");
    let text = common::spec_text(files, 16, true, on_error, &ops);
    PipelineSpec::from_toml(&text, Path::new("/")).unwrap()
}

/// Runs a whole epoch; returns (examples delivered, skipped) or the first error.
fn run(spec: PipelineSpec) -> Result<(usize, u64), PipelineError> {
    let ds = Dataset::for_spec(&spec)?;
    let p = Pipeline::new(spec)?;
    common::delivered_and_skipped(&p, &ds, 3)
}

#[test]
fn flipped_byte_inside_a_record_names_file_and_offset_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let files = common::copy_dataset(common::small_dataset(), dir.path());
    let ds = Dataset::open(&files, cachew_pipeline::ErrorPolicy::Fail).unwrap();
    // Record 35 lives in the second shard; flip a byte in the middle of its payload.
    let loc = ds.locate(35).unwrap();
    assert_eq!(loc.file, 1);
    let mut bytes = std::fs::read(&files[1]).unwrap();
    bytes[(loc.offset + HEADER_LEN + 40) as usize] ^= 0x10;
    std::fs::write(&files[1], &bytes).unwrap();

    let err = run(pipeline(&files, "fail")).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, PipelineError::CorruptRecord { offset, .. } if offset == loc.offset),
        "{msg}"
    );
    assert!(msg.contains(&files[1].display().to_string()), "{msg}");
    assert!(msg.contains(&format!("offset {}", loc.offset)), "{msg}");

    let (delivered, skipped) = run(pipeline(&files, "skip")).unwrap();
    assert_eq!((delivered, skipped), (89, 1));
}

#[test]
fn truncated_file_names_file_and_offset_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let files = common::copy_dataset(common::small_dataset(), dir.path());
    let ds = Dataset::open(&files, cachew_pipeline::ErrorPolicy::Fail).unwrap();
    let last = ds.locate(89).unwrap();
    let len = std::fs::metadata(&files[2]).unwrap().len();
    let cut = last.offset + (len - last.offset) / 2;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[2])
        .unwrap();
    f.set_len(cut).unwrap();

    let err = run(pipeline(&files, "fail")).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, PipelineError::TruncatedRecord { offset, .. } if offset == last.offset),
        "{msg}"
    );
    assert!(msg.contains(&files[2].display().to_string()), "{msg}");

    // Under skip the complete records are kept and the torn tail is counted, not delivered.
    let spec = pipeline(&files, "skip");
    let ds = Dataset::for_spec(&spec).unwrap();
    assert_eq!(ds.num_records(), 89);
    assert!(ds.skipped_bytes() > 0);
    assert_eq!(run(spec).unwrap(), (89, 0));
}

#[test]
fn corrupt_jpeg_is_a_per_record_error_or_skip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad-00000-of-00001");
    let mut w = TfRecordWriter::new(std::fs::File::create(&path).unwrap());
    let good = cachew_fixtures::make_example(&common::small_params(), 0)
        .unwrap()
        .0;
    for i in 0..6 {
        let mut e = good.clone();
        if i == 4 {
            let Some(Feature::Bytes(jpeg)) = e.get("image/encoded") else {
                panic!()
            };
            // Keep the SOI marker and headers, cut the entropy-coded data short.
            let truncated = jpeg[0].slice(..jpeg[0].len() / 3);
            e.features
                .insert("image/encoded".into(), Feature::Bytes(vec![truncated]));
        }
        if i == 5 {
            e.features.insert(
                "image/encoded".into(),
                Feature::Bytes(vec![Bytes::from_static(b"GIF89a....")]),
            );
        }
        w.write_record(&e.encode()).unwrap();
    }
    drop(w);
    let files = vec![path];
    let err = run(pipeline(&files, "fail")).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            PipelineError::BadImage {
                record_id: 4 | 5,
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("image"), "{msg}");
    assert_eq!(run(pipeline(&files, "skip")).unwrap(), (4, 2));

    // A missing feature is a per-record error too.
    let spec = pipeline(&files, "skip");
    let ds = Dataset::for_spec(&spec).unwrap();
    let p = Pipeline::new(spec).unwrap();
    let mut e = Example::default();
    e.features.insert(
        "image/encoded".into(),
        Feature::Bytes(vec![Bytes::from_static(b"x")]),
    );
    let err = p
        .process(
            cachew_pipeline::RecordCtx {
                seed: 0,
                epoch: 0,
                record_id: 9,
            },
            Bytes::from(e.encode()),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("feature `image/class/label` is missing"),
        "{err}"
    );
    let skipped: Vec<_> = canonical_elements(&p, &ds, 0, 0)
        .map(|e| e.unwrap())
        .filter(|e| matches!(e.body, ElementBody::Skipped(_)))
        .map(|e| e.record_id)
        .collect();
    assert_eq!(skipped.len(), 2);
}
