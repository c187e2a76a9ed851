//! Saved client cursors: where a consumer stood at a batch boundary, so a trainer that crashes
//! resumes the epoch exactly there (with `--resume-from` or [`crate::ClientConfig::resume`]).
//!
//! # Format
//! A small text file, written to `FILE.tmp`, fsync'd, renamed over `FILE` (and the directory
//! fsync'd), so a reader sees the old cursor or the new one, never a mix:
//! ```text
//! cachew-cursor v1\n
//! <one line of JSON: the SavedCursor>\n
//! crc32c <8 lowercase hex digits of the CRC32C of the JSON line's bytes>\n
//! ```
//! A save that fails (a full disk, a failed write or fsync) leaves the previous file as it was
//! and no temporary behind; saving again later is safe.
//!
//! # Recovery rule
//! A file with a wrong header, a missing or mismatching checksum, or bad JSON is rejected with an
//! error naming the file: a damaged cursor is never half-applied (resuming at a wrong place would
//! repeat or skip examples).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ClientCursor;

const HEADER: &str = "cachew-cursor v1";

/// A cursor with the job it belongs to. Its place is the shared
/// [`cachew_pipeline::ConsumerCursor`] inside [`ClientCursor`]; the JSON line reads
/// `{"job":..,"seed":..,"num_epochs":..,"num_consumers":..,"cursor":{"consumer_index":..,
/// "epoch":..,"ordinal":..,"index":..,"examples":..,"batches":..}}`, as it always has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCursor {
    pub job: String,
    pub seed: u64,
    pub num_epochs: u64,
    pub num_consumers: u32,
    pub cursor: ClientCursor,
}

/// Why a cursor file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: damaged cursor file: {reason}")]
    Damaged { path: String, reason: String },
}

impl CursorError {
    /// True for an I/O error (a full disk, a failed write or fsync): the save can be tried
    /// again, and the previous cursor file is intact meanwhile.
    pub fn is_io(&self) -> bool {
        matches!(self, CursorError::Io { .. })
    }
}

impl SavedCursor {
    /// Writes the cursor atomically and durably.
    pub fn save(&self, path: &Path) -> Result<(), CursorError> {
        let io = |source| CursorError::Io {
            path: path.display().to_string(),
            source,
        };
        let json = serde_json::to_string(self).map_err(|e| io(std::io::Error::other(e)))?;
        let text = format!(
            "{HEADER}\n{json}\ncrc32c {:08x}\n",
            crc32c::crc32c(json.as_bytes())
        );
        let tmp = path.with_extension("tmp");
        let written = std::fs::File::create(&tmp).and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
            // A full disk or a failed fsync: the previous cursor file is untouched; leave no
            // half-written temporary behind (the next save writes a new one).
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }

    /// Reads and checks a cursor file.
    pub fn load(path: &Path) -> Result<SavedCursor, CursorError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| CursorError::Io {
            path: name.clone(),
            source,
        })?;
        let damaged = |reason: &str| CursorError::Damaged {
            path: name.clone(),
            reason: reason.to_string(),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| damaged("not UTF-8"))?;
        let mut lines = text.split_inclusive('\n');
        if lines.next() != Some("cachew-cursor v1\n") {
            return Err(damaged("missing or unknown header"));
        }
        let json = lines
            .next()
            .and_then(|l| l.strip_suffix('\n'))
            .ok_or_else(|| damaged("truncated before the checksum"))?;
        let crc_line = lines
            .next()
            .and_then(|l| l.strip_suffix('\n'))
            .ok_or_else(|| damaged("truncated checksum"))?;
        if lines.next().is_some() {
            return Err(damaged("trailing data"));
        }
        let stored = crc_line
            .strip_prefix("crc32c ")
            .filter(|h| {
                h.len() == 8
                    && h.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| damaged("bad checksum line"))?;
        let computed = crc32c::crc32c(json.as_bytes());
        if stored != computed {
            return Err(damaged(&format!(
                "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            )));
        }
        serde_json::from_str(json).map_err(|e| damaged(&format!("bad content: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use cachew_pipeline::ConsumerCursor;

    use super::*;

    fn sample() -> SavedCursor {
        SavedCursor {
            job: "train".into(),
            seed: 42,
            num_epochs: 3,
            num_consumers: 1,
            cursor: ClientCursor {
                consumer_index: 0,
                at: ConsumerCursor {
                    epoch: 1,
                    ordinal: 7,
                    index: 12,
                },
                examples: 460,
                batches: 14,
            },
        }
    }

    /// `sample()` as the file format has always written it: files saved before the cursor was
    /// built on `ConsumerCursor` still load, and saving writes the same bytes.
    const SAMPLE_FILE: &str = "cachew-cursor v1\n\
        {\"job\":\"train\",\"seed\":42,\"num_epochs\":3,\"num_consumers\":1,\"cursor\":\
        {\"consumer_index\":0,\"epoch\":1,\"ordinal\":7,\"index\":12,\"examples\":460,\"batches\":14}}\n\
        crc32c 3eed4ab3\n";

    #[test]
    fn the_file_format_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        std::fs::write(&path, SAMPLE_FILE).unwrap();
        assert_eq!(SavedCursor::load(&path).unwrap(), sample());
        sample().save(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), SAMPLE_FILE);
    }

    #[test]
    fn round_trip_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        sample().save(&path).unwrap();
        assert_eq!(SavedCursor::load(&path).unwrap(), sample());
        let mut later = sample();
        later.cursor.at.index = 13;
        later.save(&path).unwrap();
        assert_eq!(SavedCursor::load(&path).unwrap(), later);
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        sample().save(&path).unwrap();
        let full = std::fs::read(&path).unwrap();
        for cut in 0..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            assert!(
                SavedCursor::load(&path).is_err(),
                "a cursor torn at byte {cut} was accepted"
            );
        }
        for byte in 0..full.len() {
            for bit in 0..8 {
                let mut bad = full.clone();
                bad[byte] ^= 1 << bit;
                std::fs::write(&path, &bad).unwrap();
                if let Ok(c) = SavedCursor::load(&path) {
                    panic!("flipping bit {bit} of byte {byte} gave {c:?}");
                }
            }
        }
    }
}
