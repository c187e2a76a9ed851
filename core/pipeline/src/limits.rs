//! The pipeline's bounds: every number in a spec or a file that sizes memory or work has its limit
//! here, with the reason for its value. The README's "Bounds" table lists them.
//!
//! A spec over a bound is refused at validation ([`crate::PipelineSpec::validate`]: the lists,
//! names and shapes in `PipelineSpec::check_bounds`, each op's numbers where it is checked), so the
//! dispatcher refuses it at `GetOrCreateJob` and a worker refuses a task over it, before anything
//! is sized by it. A record over a bound (a JPEG asking for too many pixels) is a bad record,
//! handled by the spec's `on_error`. The checks ([`check_at_most`]) name the field, the bound and
//! the value.
//!
//! This module owns the numbers only; it must never read a clock, a file or the network.

use crate::error::{PipelineError, Result};

/// Source files a spec may name (after pattern expansion). The dataset keeps an index per file
/// and the dispatcher a file list per spec; 100,000 files of ImageNet's usual 1,024-shard layout
/// is two orders of magnitude of headroom.
pub const MAX_SPEC_FILES: usize = 100_000;

/// Bytes of one path in `source.files` (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Records per split. A split is the unit a worker computes and a client holds a cursor in;
/// the worker's buffer is bounded separately, but a split's length sizes its bookkeeping.
pub const MAX_SPLIT_RECORDS: u32 = 1 << 20;

/// Ops in a pipeline.
pub const MAX_OPS: usize = 64;

/// Features one `parse_example` extracts, and outputs a spec names.
pub const MAX_FEATURES: usize = 256;

/// Bytes of a name in a spec: the pipeline's name, a feature's key or name, an output.
pub const MAX_NAME_BYTES: usize = 256;

/// Values of one numeric feature (the product of its `shape`): parsing allocates this many.
pub const MAX_FEATURE_VALUES: usize = 1 << 24;

/// Examples per batch: the batcher reserves room for this many.
pub const MAX_BATCH_SIZE: u32 = 65_536;

/// Bytes of one batch (batch size x one example's output bytes). A batch is one element, sent in
/// one gRPC message, so it must fit in one: 256 MiB is the wire's message limit.
pub const MAX_BATCH_BYTES: u64 = 256 * 1024 * 1024;

/// Tries of one `random_crop` per record (TensorFlow's default is 10; 100 is plenty).
pub const MAX_CROP_ATTEMPTS: u32 = 100;

/// Largest image side a decoder accepts or a `resize` produces.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// Values (height x width x channels) a `resize` may produce per record: the same budget as the
/// default decode budget.
pub const MAX_RESIZE_VALUES: u64 = DEFAULT_MAX_DECODE_PIXELS;

/// Default pixel budget of one JPEG decode: width x height x channels of the decoded image, the
/// bytes of its buffer (plus, for a progressive JPEG, its coefficient planes: 2 bytes per sample
/// of each of the file's components). 4096 x 4096 x 3 (48 MiB) decodes a 16-megapixel RGB photo; ImageNet-class
/// images are a few hundred pixels on a side, so nearly all use well under 1% of it. Every
/// compute thread of a worker may hold one decode, so a worker's decode memory is at most this
/// times its threads. A worker changes it with `--max-decode-pixels`.
pub const DEFAULT_MAX_DECODE_PIXELS: u64 = 4096 * 4096 * 3;

/// Largest TFRecord payload we accept. Protects against allocating a corrupt length.
pub const MAX_RECORD_LEN: u64 = 1 << 30;

/// Resynchronisation after a corrupt TFRecord header (`on_error = "skip"`), per file (over all
/// its bad regions): false candidates, whose header checksum verifies but whose payload, read to
/// check its checksum, does not. Random garbage makes a false header one time in 2^32; a file
/// crafted to be full of them gives up here instead of costing a read per byte.
pub const RESYNC_MAX_CANDIDATES: u32 = 4096;

/// Resynchronisation, per file: payload bytes read to verify false candidates. With the header
/// scan reading each byte of a bad region once, resyncing costs a file at most its own length
/// plus this. Exhausting either budget ends the file: the rest of it is counted skipped.
pub const RESYNC_MAX_VERIFY_BYTES: u64 = 256 * 1024 * 1024;

/// The bytes the header scan of a resync reads at a time.
pub const RESYNC_CHUNK_BYTES: usize = 1 << 20;

/// Refuses `value` above `bound`, naming `field`: `ops[3].size: 100000 is over the bound 65536`.
pub fn check_at_most<T: PartialOrd + std::fmt::Display>(
    field: impl Into<String>,
    value: T,
    bound: T,
) -> Result<()> {
    if value > bound {
        return Err(PipelineError::spec(
            field,
            format!("{value} is over the bound {bound}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_over_its_bound_is_refused_naming_field_bound_and_value() {
        assert!(check_at_most("ops[7].size", 65_536u32, MAX_BATCH_SIZE).is_ok());
        let err = check_at_most("ops[7].size", 65_537u32, MAX_BATCH_SIZE).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("ops[7].size") && text.contains("65537") && text.contains("65536"),
            "{text}"
        );
    }
}
