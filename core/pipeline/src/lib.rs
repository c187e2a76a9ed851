//! Cachew-rs pipeline core: everything that turns TFRecord files of JPEG images into
//! preprocessed, batched tensors, deterministically.
//!
//! # Layout
//! - [`tfrecord`]: TFRecord framing, checksums, per-file record index, writer.
//! - [`example`]: `tf.train.Example` decoding and encoding.
//! - [`spec`]: the declarative pipeline spec (TOML), its validation and canonical form.
//! - `patterns`: expanding the file patterns of `source.files` (private).
//! - [`dataset`]: the indexed dataset, global record ids, random access, fingerprints.
//! - [`order`]: deterministic splits and per-epoch order, element identity, consumer cursors.
//! - [`rng`]: per-record generators seeded by (seed, epoch, record id).
//! - [`image`]: JPEG decode, crop/flip views, fixed-point bilinear resize, normalize.
//! - [`limits`]: every bound on a spec or a file (sizes, counts, the decode pixel budget).
//! - [`data_root`]: the directory a node reads datasets from; specs naming other files are refused.
//! - [`exec`]: running the pipeline on records, split ranges and whole epochs; batching.
//! - [`hashlog`]: the hash log (verification contract) and the exactly-once verdict.
//! - [`manifest`]: MANIFEST files listing a dataset's reference hashes.
//! - [`observe`]: the per-op timing hook (`OpObserver`) a service uses to export op durations.
//! - [`cache`]: chunk files of a pipeline prefix's output (Cachew put / get).
//!
//! This crate does no networking and spawns no long-lived threads; the services build on it.

pub mod cache;
pub mod data_root;
pub mod dataset;
pub mod error;
pub mod example;
pub mod exec;
pub mod hashlog;
pub mod image;
pub mod limits;
pub mod manifest;
pub mod observe;
pub mod order;
mod patterns;
pub mod rng;
pub mod spec;
pub mod tensor;
pub mod tfrecord;

pub use data_root::DataRoot;
pub use dataset::{Dataset, OpenedSpec};
pub use error::{PipelineError, Result};
pub use exec::{Batch, Batcher, Element, ElementBody, ExampleMeta, Pipeline, RecordCtx};
pub use order::{ConsumerCursor, ConsumerOrder, ElementId, SplitPlan};
pub use spec::{ErrorPolicy, PipelineSpec};
pub use tensor::{DType, Tensor};
