//! `tf.train.Example` decoding: arbitrary bytes, mutated real records (TensorFlow's encoding)
//! and mutated encodings of every feature kind, packed and not.

use bytes::Bytes;
use cachew_fuzzing::{bounded, bytes, config, mutated, mutated_from};
use cachew_pipeline::example::{Example, Feature};
use proptest::prelude::*;

use crate::seeds;

/// Decodes `data`; a decoded Example holds no more than the input's bytes, an error says it is
/// a malformed Example.
fn check(data: Vec<u8>) {
    let len = data.len();
    bounded("Example::decode", move || {
        match Example::decode(Bytes::from(data)) {
            Ok(example) => {
                let held: usize = example
                    .features
                    .iter()
                    .map(|(k, f)| {
                        k.len()
                            + match f {
                                Feature::Bytes(v) => v.iter().map(Bytes::len).sum(),
                                Feature::Float(v) => v.len(),
                                Feature::Int64(v) => v.len(),
                            }
                    })
                    .sum();
                assert!(
                    held <= len,
                    "{held} bytes of features from {len} input bytes"
                );
            }
            Err(e) => assert!(
                e.to_string().starts_with("malformed tf.train.Example: "),
                "{e}"
            ),
        }
    });
}

/// An Example with every feature kind, including empty lists.
fn every_kind() -> Vec<u8> {
    let mut e = Example::default();
    e.features.insert(
        "bytes".into(),
        Feature::Bytes(vec![Bytes::from_static(b"ab"), Bytes::new()]),
    );
    e.features
        .insert("ints".into(), Feature::Int64(vec![-1, 0, i64::MAX]));
    e.features
        .insert("floats".into(), Feature::Float(vec![0.5, f32::NAN]));
    e.features.insert("empty".into(), Feature::Int64(vec![]));
    e.encode()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes(data in bytes(1024)) {
        check(data);
    }

    #[test]
    fn mutated_feature_kinds(data in mutated(every_kind())) {
        check(data);
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn mutated_tensorflow_records(data in mutated_from(seeds::records().to_vec())) {
        check(data);
    }
}
