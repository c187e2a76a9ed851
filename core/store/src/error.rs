//! The crate's one error type. Every error names the file or directory it is about; corruption
//! also names what is corrupt and where (a sequence number, a byte offset, or a key).

use std::fmt;
use std::path::PathBuf;

/// Errors of the durable stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a file or directory of the store.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An error reported by fjall (the storage engine) for the database in `path`.
    #[error("{path}: storage engine: {source}")]
    Fjall {
        path: PathBuf,
        #[source]
        source: fjall::Error,
    },
    /// Data on disk that fails its checks (length, checksum, sequence continuity, framing).
    /// Never returned for a torn tail, which is cut and reported instead.
    #[error("{path}: corrupt {what} at {at}: {detail}")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        at: Location,
        detail: String,
    },
    /// A store written by an incompatible version (of this crate or of fjall).
    #[error("{path}: unsupported on-disk format: {found}")]
    UnsupportedFormat { path: PathBuf, found: String },
    /// Another store (in this or another process) has the directory open.
    #[error("{path}: the store is already open (its lock file is held)")]
    Locked { path: PathBuf },
    /// A payload too large for the on-disk framing (lengths are 32-bit).
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

impl StoreError {
    /// True if the error means data on disk is damaged (as opposed to I/O trouble or misuse).
    pub fn is_corruption(&self) -> bool {
        match self {
            StoreError::Corrupt { .. } => true,
            StoreError::Fjall { source, .. } => fjall_is_corruption(source),
            _ => false,
        }
    }

    /// True if the error is the file system running out of space (or quota): a condition that
    /// passes once space is freed, as opposed to damage or misuse. Walks the error's sources.
    pub fn is_disk_full(&self) -> bool {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = source {
            if let Some(io) = error.downcast_ref::<std::io::Error>()
                && io_is_disk_full(io)
            {
                return true;
            }
            source = error.source();
        }
        false
    }

    /// A fjall error met while reading `what` at `at`: corruption fjall detected (a table block
    /// checksum, say) becomes [`StoreError::Corrupt`] naming the place; anything else stays a
    /// [`StoreError::Fjall`].
    pub(crate) fn fjall_reading(
        path: impl Into<PathBuf>,
        source: fjall::Error,
        what: &'static str,
        at: Location,
    ) -> Self {
        if fjall_is_corruption(&source) {
            StoreError::Corrupt {
                path: path.into(),
                what,
                at,
                detail: format!("the storage engine reports damaged data: {source}"),
            }
        } else {
            StoreError::fjall(path, source)
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn fjall(path: impl Into<PathBuf>, source: fjall::Error) -> Self {
        StoreError::Fjall {
            path: path.into(),
            source,
        }
    }
}

/// True for an I/O error that means "no space left" (ENOSPC) or "quota exceeded" (EDQUOT).
pub fn io_is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// True for fjall errors that mean damaged data rather than I/O trouble.
fn fjall_is_corruption(error: &fjall::Error) -> bool {
    matches!(
        error,
        fjall::Error::JournalRecovery(_)
            | fjall::Error::InvalidTrailer
            | fjall::Error::InvalidTag(_)
            | fjall::Error::Decompress(_)
            | fjall::Error::Storage(
                fjall::LsmError::ChecksumMismatch { .. }
                    | fjall::LsmError::InvalidTrailer
                    | fjall::LsmError::InvalidHeader(_)
                    | fjall::LsmError::InvalidTag(_)
                    | fjall::LsmError::Decompress(_)
            )
    )
}

/// Where in a store a corruption was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A journal record's or a checkpoint's sequence number.
    Seq(u64),
    /// A byte offset in the file named by the error's path.
    Offset(u64),
    /// A named key (e.g. the journal's snapshot) or file.
    Key(&'static str),
    /// Found by fjall while it recovered the database (its journal replay or table loading).
    Open,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Seq(seq) => write!(f, "sequence number {seq}"),
            Location::Offset(offset) => write!(f, "byte offset {offset}"),
            Location::Key(key) => write!(f, "`{key}`"),
            Location::Open => write!(f, "open (fjall recovery)"),
        }
    }
}
