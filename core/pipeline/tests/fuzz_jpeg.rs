//! Fuzz tests of the JPEG path (`image::decode_jpeg`, as `decode_jpeg` ops run it): arbitrary
//! bytes, mutated real JPEGs from the tf-sample dataset (written by TensorFlow), and real JPEGs
//! whose frame header (SOF) claims other dimensions. No panic, no loop, an error that says what
//! was wrong, and memory within the decoder's bound.
//!
//! Decodes run with the workers' default pixel budget (`DEFAULT_MAX_DECODE_PIXELS`, 48 MiB of
//! output), one at a time, so the process limit of this binary is that budget plus the usual
//! `cachew_fuzzing::MEMORY_LIMIT`. A header claiming 16384 x 16384 (about 2.4 GB for the
//! decoder) is refused from its header before anything is allocated
//! (`a_huge_frame_header_stays_within_the_pixel_budget`). Frame headers are rewritten here up
//! to 2048 x 2048 (and to 65535, which is refused).

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use cachew_fuzzing::{bounded, bytes, config, mutated_from};
use cachew_pipeline::example::{Example, Feature};
use cachew_pipeline::image::decode_jpeg;
use cachew_pipeline::limits::DEFAULT_MAX_DECODE_PIXELS;
use cachew_pipeline::spec::MAX_IMAGE_SIDE;
use cachew_pipeline::tfrecord;
use proptest::prelude::*;

/// The most one decode may hold: an image at the pixel budget, plus the decoder's own planes.
const DECODE_BOUND: usize = 4 * DEFAULT_MAX_DECODE_PIXELS as usize;

#[global_allocator]
static ALLOCATOR: cachew_fuzzing::Allocator =
    cachew_fuzzing::allocator(cachew_fuzzing::MEMORY_LIMIT + DECODE_BOUND);

/// The JPEGs of the first tf-sample records.
fn jpegs() -> Vec<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/data/tf-sample/train-00000-of-00002");
    tfrecord::read_all(&path)
        .unwrap()
        .into_iter()
        .take(4)
        .map(|r| {
            match Example::decode(Bytes::from(r))
                .unwrap()
                .get("image/encoded")
            {
                Some(Feature::Bytes(v)) => v.first().unwrap().to_vec(),
                other => panic!("tf-sample record without a JPEG: {other:?}"),
            }
        })
        .collect()
}

/// Offset of the height field of the first frame header (SOF0..SOF15 except DHT, JPG, DAC).
fn sof_dimensions(jpeg: &[u8]) -> Option<usize> {
    jpeg.windows(2)
        .position(|w| {
            w[0] == 0xff && (0xc0..=0xcf).contains(&w[1]) && ![0xc4, 0xc8, 0xcc].contains(&w[1])
        })
        .map(|at| at + 5)
}

/// Decodes run one at a time in this binary (its tests run on parallel threads), so the
/// process limit is one decode's bound.
static ONE_DECODE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check(data: Vec<u8>, channels: u8) {
    let _one = ONE_DECODE.lock().unwrap_or_else(|p| p.into_inner());
    bounded("decode_jpeg", move || {
        match decode_jpeg(&data, channels, DEFAULT_MAX_DECODE_PIXELS) {
            Ok(image) => {
                assert!(image.height() <= MAX_IMAGE_SIDE as usize);
                assert!(image.width() <= MAX_IMAGE_SIDE as usize);
                assert_eq!(image.channels(), usize::from(channels));
                let t = image.to_tensor();
                assert_eq!(
                    t.data.len(),
                    image.height() * image.width() * image.channels()
                );
            }
            Err(reason) => assert!(!reason.is_empty()),
        }
    });
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes(data in bytes(512), rgb in any::<bool>()) {
        check(data, if rgb { 3 } else { 1 });
    }

    #[test]
    fn mutated_real_jpegs(data in mutated_from(jpegs()), rgb in any::<bool>()) {
        check(data, if rgb { 3 } else { 1 });
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn frame_headers_claiming_other_dimensions(
        which in 0usize..4,
        height in prop_oneof![Just(0u16), Just(1), Just(u16::MAX), 1u16..2048],
        width in prop_oneof![Just(0u16), Just(1), Just(u16::MAX), 1u16..2048],
        rgb in any::<bool>(),
    ) {
        let mut jpeg = jpegs().swap_remove(which);
        let at = sof_dimensions(&jpeg).unwrap();
        jpeg[at..at + 2].copy_from_slice(&height.to_be_bytes());
        jpeg[at + 2..at + 4].copy_from_slice(&width.to_be_bytes());
        check(jpeg, if rgb { 3 } else { 1 });
    }
}

#[test]
fn a_huge_frame_header_stays_within_the_pixel_budget() {
    let mut jpeg = jpegs().swap_remove(0);
    let at = sof_dimensions(&jpeg).unwrap();
    jpeg[at..at + 2].copy_from_slice(&16_384u16.to_be_bytes());
    jpeg[at + 2..at + 4].copy_from_slice(&16_384u16.to_be_bytes());
    let Err(refused) = decode_jpeg(&jpeg, 3, DEFAULT_MAX_DECODE_PIXELS) else {
        panic!("a 16384 x 16384 header is over the default budget");
    };
    assert!(refused.contains("16384"), "{refused}");
    check(jpeg, 3);
}

#[test]
fn the_real_jpegs_decode() {
    for jpeg in jpegs() {
        let image = decode_jpeg(&jpeg, 3, DEFAULT_MAX_DECODE_PIXELS).unwrap();
        assert_eq!((image.height(), image.width()), (96, 96));
    }
}
