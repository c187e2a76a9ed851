//! A JPEG whose header asks for more pixels than the decode budget allocates nothing of that
//! size. The measure is the process's peak resident size (`VmHWM`, reset through
//! `/proc/self/clear_refs` before each decode): a decode writes every pixel of its buffer, so a
//! refused one must leave the peak where it was. This file holds one test so nothing else runs
//! in the process meanwhile.

#![allow(clippy::unwrap_used)]

mod common;

use cachew_pipeline::example::Feature;
use cachew_pipeline::image::decode_jpeg;
use cachew_pipeline::limits::DEFAULT_MAX_DECODE_PIXELS;

/// A field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kib: u64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// Resets the peak resident size to the current one (`man 5 proc`, clear_refs "5"); returns it.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    status_bytes("VmHWM:")
}

#[test]
fn a_huge_header_is_refused_before_its_buffer_is_allocated() {
    let example = cachew_fixtures::make_example(&common::small_params(), 0)
        .unwrap()
        .0;
    let Some(Feature::Bytes(jpeg)) = example.get("image/encoded") else {
        panic!("no image in the fixture example")
    };
    let mut huge = jpeg[0].to_vec();
    let sof = huge.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    // FF C0, length (2), precision (1), height (2), width (2): 4200 x 4200 x 3 = 52.9 MB, just
    // over the default budget (4096 x 4096 x 3), so the control below stays cheap.
    huge[sof + 5..sof + 7].copy_from_slice(&4200u16.to_be_bytes());
    huge[sof + 7..sof + 9].copy_from_slice(&4200u16.to_be_bytes());
    let small = decode_jpeg(&jpeg[0], 3, DEFAULT_MAX_DECODE_PIXELS).unwrap();
    assert_eq!((small.width(), small.height()), (44, 36));

    let before = reset_peak();
    let err = decode_jpeg(&huge, 3, DEFAULT_MAX_DECODE_PIXELS).unwrap_err();
    let grown = status_bytes("VmHWM:").saturating_sub(before);
    assert!(err.contains("over the decode budget"), "{err}");
    assert!(grown < 16 << 20, "peak resident size grew {grown} bytes");

    // The measure sees the buffer when the budget lets the decode go on: without a budget the
    // same header gets its 52.9 MB (the decoder fills what the entropy data does not cover).
    let before = reset_peak();
    let _ = decode_jpeg(&huge, 3, u64::MAX);
    let grown = status_bytes("VmHWM:").saturating_sub(before);
    assert!(
        grown >= 4200 * 4200 * 3,
        "peak resident size grew only {grown} bytes"
    );
}
