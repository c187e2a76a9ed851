//! Pipeline specs: TOML text (`PipelineSpec::from_toml`, as `--spec` files are read), canonical
//! JSON (`PipelineSpec::from_json`, as a client sends it) and `OpenedSpec::from_json` (as the
//! dispatcher and the workers open what a client sent: it indexes the files the spec names).
//! Text is mutated as bytes; JSON as values (`cachew_fuzzing::json`), so it reaches validation.

use cachew_fuzzing::{bounded, config, json, mutated};
use cachew_pipeline::{OpenedSpec, PipelineError, PipelineSpec};
use proptest::prelude::*;

use crate::seeds;

/// The canonical JSON of the tf-sample spec, as a value.
fn canonical() -> serde_json::Value {
    let (text, dir) = seeds::spec_toml();
    let spec = PipelineSpec::from_toml(&text, &dir).unwrap();
    serde_json::from_str(&spec.to_canonical_json()).unwrap()
}

/// A spec that parses must survive its canonical round trip: what a client sends is what the
/// dispatcher opens.
fn assert_round_trip(spec: &PipelineSpec) {
    let again = PipelineSpec::from_json(&spec.to_canonical_json())
        .unwrap_or_else(|e| panic!("a valid spec's canonical form is refused: {e}"));
    assert_eq!(&again, spec);
}

fn assert_named(error: &PipelineError) {
    let message = error.to_string();
    assert!(!message.is_empty());
    if let PipelineError::Spec { field, reason } = error {
        assert!(!field.is_empty() && !reason.is_empty(), "{message}");
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn mutated_toml(data in mutated(seeds::spec_toml().0.into_bytes())) {
        let (_, dir) = seeds::spec_toml();
        let text = String::from_utf8_lossy(&data).into_owned();
        bounded("PipelineSpec::from_toml", move || match PipelineSpec::from_toml(&text, &dir) {
            Ok(spec) => assert_round_trip(&spec),
            Err(e) => assert_named(&e),
        });
    }

    #[test]
    fn arbitrary_toml(text in "\\PC{0,200}") {
        let (_, dir) = seeds::spec_toml();
        bounded("PipelineSpec::from_toml", move || {
            if let Err(e) = PipelineSpec::from_toml(&text, &dir) {
                assert_named(&e);
            }
        });
    }

    #[test]
    fn mutated_json(value in json::mutated(canonical())) {
        let text = value.to_string();
        bounded("PipelineSpec::from_json", move || match PipelineSpec::from_json(&text) {
            Ok(spec) => assert_round_trip(&spec),
            Err(e) => assert_named(&e),
        });
    }

    #[test]
    fn mutated_json_bytes(data in mutated(canonical().to_string().into_bytes())) {
        let text = String::from_utf8_lossy(&data).into_owned();
        bounded("PipelineSpec::from_json", move || {
            if let Err(e) = PipelineSpec::from_json(&text) {
                assert_named(&e);
            }
        });
    }
}

proptest! {
    // Each case indexes the tf-sample files (2 MiB of headers to scan).
    #![proptest_config(config(48))]

    #[test]
    fn opened_spec_from_mutated_json(value in json::mutated(canonical())) {
        let text = value.to_string();
        bounded("OpenedSpec::from_json", move || match OpenedSpec::from_json(&text) {
            Ok(opened) => {
                assert_eq!(opened.id.len(), 64);
                assert_round_trip(&opened.spec);
            }
            Err(e) => assert_named(&e),
        });
    }
}

#[test]
fn deeply_nested_documents_are_refused_not_overflowing_the_stack() {
    // Recursion in a parser must be bounded: a spec is read on a daemon's thread.
    let (_, dir) = seeds::spec_toml();
    for depth in [64, 10_000, 100_000] {
        let toml = format!("x = {}{}", "[".repeat(depth), "]".repeat(depth));
        let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let dir = dir.clone();
        bounded("nested spec", move || {
            assert!(PipelineSpec::from_toml(&toml, &dir).is_err());
            assert!(PipelineSpec::from_json(&json).is_err());
            assert!(OpenedSpec::from_json(&json).is_err());
        });
    }
}
