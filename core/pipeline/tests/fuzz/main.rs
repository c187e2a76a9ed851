//! Fuzz tests of the parsers of cachew-pipeline: TFRecord files, `tf.train.Example`, pipeline
//! specs (TOML, canonical JSON, `OpenedSpec::from_json`), cache chunks and hash logs. Each feeds
//! arbitrary bytes and mutations of valid inputs, and asserts what `cachew_fuzzing` describes: no
//! panic, no loop, no allocation past the process's limit, and an error naming what was wrong.
//! The JPEG path has its own binary (`tests/fuzz_jpeg.rs`: its memory bound is the decoder's).
//! Inputs that once broke a parser live in `tests/corpus/<name>/` and are replayed here.

#![allow(clippy::unwrap_used)]

mod cache;
mod example;
mod hashlog;
mod seeds;
mod spec;
mod tfrecord;

#[global_allocator]
static ALLOCATOR: cachew_fuzzing::Allocator =
    cachew_fuzzing::allocator(cachew_fuzzing::MEMORY_LIMIT);
