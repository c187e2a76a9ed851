//! The pipeline crate's error type: one enum at the crate boundary.
//!
//! Every error that comes from data on disk names the file and the byte offset where it was found,
//! so an operator can go and look at the bytes.

use std::path::PathBuf;

/// Errors of the pipeline crate.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An I/O error while reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A TFRecord whose framing or checksums are wrong.
    #[error("{path}: corrupt record at byte offset {offset}: {reason}")]
    CorruptRecord {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A TFRecord file that ends in the middle of a record.
    #[error("{path}: truncated record at byte offset {offset}: {reason}")]
    TruncatedRecord {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A record payload that is not a valid `tf.train.Example`, or lacks a feature the spec needs.
    #[error("record {record_id}: {reason}")]
    BadExample { record_id: u64, reason: String },
    /// An image that could not be decoded.
    #[error("record {record_id}: cannot decode JPEG in feature `{feature}`: {reason}")]
    BadImage {
        record_id: u64,
        feature: String,
        reason: String,
    },
    /// A pipeline spec that does not parse or does not validate. `field` names where.
    #[error("pipeline spec {field}: {reason}")]
    Spec { field: String, reason: String },
    /// A record id outside the dataset.
    #[error("record {record_id} is outside the dataset ({num_records} records)")]
    NoSuchRecord { record_id: u64, num_records: u64 },
}

impl PipelineError {
    /// True if the error is the file system running out of space (ENOSPC) or quota (EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            PipelineError::Io { source, .. } if matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        )
    }

    /// True for an I/O error (as opposed to bad data or a bad spec).
    pub fn is_io(&self) -> bool {
        matches!(self, PipelineError::Io { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PipelineError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn spec(field: impl Into<String>, reason: impl Into<String>) -> Self {
        PipelineError::Spec {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The dataset-wide record the error is about, when it names one.
    pub fn record_id(&self) -> Option<u64> {
        match self {
            PipelineError::BadExample { record_id, .. }
            | PipelineError::BadImage { record_id, .. }
            | PipelineError::NoSuchRecord { record_id, .. } => Some(*record_id),
            _ => None,
        }
    }

    /// Whether this error concerns one record's content (and so may be skipped under
    /// [`crate::spec::ErrorPolicy::Skip`]) rather than the dataset or the machine.
    pub fn is_record_error(&self) -> bool {
        matches!(
            self,
            PipelineError::CorruptRecord { .. }
                | PipelineError::BadExample { .. }
                | PipelineError::BadImage { .. }
        )
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
