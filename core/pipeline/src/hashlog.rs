//! The hash log: the verification contract of DESIGN.md.
//!
//! # Format
//! `DIR/epoch-<e>.log`, one line per delivered example, in delivery order:
//! ```text
//! <sha256 of the raw record payload, 64 lowercase hex> <sha256 of the example bytes, 64 hex>\n
//! ```
//! The example bytes are each output tensor's slice for that example, in spec order, little-endian.
//! The format is fixed by the contract, so it carries no checksum of its own; instead every line
//! has a fixed length (130 bytes), and a reader rejects a torn last line (a crash mid-write) or
//! any malformed line, naming the line number. A resumed client truncates the log to the number of
//! examples its cursor says were delivered before appending, so a resumed epoch's log is
//! identical to an uninterrupted one.
//!
//! A full disk or a failed write or fsync loses and duplicates nothing: lines are held in memory
//! until they are written at their own offset, and written again after a failed fsync (see
//! [`HashLogWriter`]); the caller decides whether to wait for space (the `cachew-client` binary
//! does) or to stop.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{PipelineError, Result};

/// Bytes per line, newline included.
pub const LINE_LEN: u64 = 130;

/// One line of a hash log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashLine {
    pub record: [u8; 32],
    pub example: [u8; 32],
}

/// Path of the log of `epoch` in `dir`.
pub fn log_path(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("epoch-{epoch}.log"))
}

/// Lines held before they are written to the file.
const FLUSH_BYTES: usize = 64 * 1024;
/// Written bytes after which the log is fsync'd even if nobody asked (bounds what is kept in
/// memory to write again should that fsync fail).
const SYNC_BYTES: usize = 1024 * 1024;

/// Appends lines to one epoch's log.
///
/// Every line goes to a known byte offset (`lines * LINE_LEN`), so writing a line again after a
/// failure overwrites it with the same bytes: a full disk, a write error or a failed fsync never
/// leaves a torn, lost or duplicated line, and no call has to be repeated by the caller except
/// the one that failed. On an error the lines are kept in memory: call [`flush`] or [`sync`]
/// again (once there is room) until it succeeds. After a failed fsync the lines written since
/// the last good one are written again before the next fsync (a second fsync of the same pages
/// would prove nothing).
///
/// [`flush`]: HashLogWriter::flush
/// [`sync`]: HashLogWriter::sync
#[derive(Debug)]
pub struct HashLogWriter {
    path: PathBuf,
    file: File,
    /// Bytes of the file that hold lines written successfully (from offset 0).
    written: u64,
    /// Written bytes since the last successful fsync (they start at `written - unsynced.len()`).
    unsynced: Vec<u8>,
    /// Appended lines not written yet; they belong at offset `written`.
    pending: Vec<u8>,
}

impl HashLogWriter {
    /// Opens the log of `epoch`, keeping exactly its first `keep_lines` lines (0 starts afresh).
    /// Fails if the existing log has fewer lines than that.
    pub fn open(dir: &Path, epoch: u64, keep_lines: u64) -> Result<HashLogWriter> {
        std::fs::create_dir_all(dir).map_err(|e| PipelineError::io(dir, e))?;
        let path = log_path(dir, epoch);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(keep_lines == 0)
            .open(&path)
            .map_err(|e| PipelineError::io(&path, e))?;
        // A cursor read from disk may claim any count: one past what a file can hold is refused
        // like any log that is too short.
        let keep =
            keep_lines
                .checked_mul(LINE_LEN)
                .ok_or_else(|| PipelineError::CorruptRecord {
                    path: path.clone(),
                    offset: 0,
                    reason: format!(
                        "the cursor needs {keep_lines} lines, more than a file can hold"
                    ),
                })?;
        let len = file
            .metadata()
            .map_err(|e| PipelineError::io(&path, e))?
            .len();
        if len < keep {
            return Err(PipelineError::CorruptRecord {
                path,
                offset: len,
                reason: format!(
                    "hash log has {} complete lines, the cursor needs {keep_lines}",
                    len / LINE_LEN
                ),
            });
        }
        file.set_len(keep)
            .map_err(|e| PipelineError::io(&path, e))?;
        Ok(HashLogWriter {
            path,
            file,
            written: keep,
            unsynced: Vec::new(),
            pending: Vec::new(),
        })
    }

    /// Appends a line; writes the held lines once they are many. An error is the write's (the
    /// line is kept, see the type's documentation).
    pub fn append(&mut self, line: &HashLine) -> Result<()> {
        let mut buf = [0u8; LINE_LEN as usize];
        hex::encode_to_slice(line.record, &mut buf[..64])
            .map_err(|e| PipelineError::io(&self.path, std::io::Error::other(e)))?;
        buf[64] = b' ';
        hex::encode_to_slice(line.example, &mut buf[65..129])
            .map_err(|e| PipelineError::io(&self.path, std::io::Error::other(e)))?;
        buf[129] = b'\n';
        self.pending.extend_from_slice(&buf);
        if self.pending.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Lines appended so far (written or not).
    pub fn lines(&self) -> u64 {
        (self.written + self.pending.len() as u64) / LINE_LEN
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the held lines to the file (not fsync'd). On an error nothing counts as written:
    /// the file is cut back to the last whole line written, and the lines stay held.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = (&self.file)
            .seek(SeekFrom::Start(self.written))
            .and_then(|_| (&self.file).write_all(&self.pending));
        if let Err(e) = written {
            // Part of the lines may have gone in; cut them (best effort: they would be
            // overwritten with the same bytes anyway, and a reader rejects a torn last line).
            let _ = self.file.set_len(self.written);
            return Err(PipelineError::io(&self.path, e));
        }
        self.written += self.pending.len() as u64;
        self.unsynced.append(&mut self.pending);
        if self.unsynced.len() >= SYNC_BYTES {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes the held lines and fsyncs (call at the end of an epoch or before saving a
    /// cursor). If the fsync fails, the lines written since the last good one are held again,
    /// to be written anew by the next call.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        if self.unsynced.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.sync_data() {
            let redo = std::mem::take(&mut self.unsynced);
            self.written -= redo.len() as u64;
            let mut pending = redo;
            pending.append(&mut self.pending);
            self.pending = pending;
            return Err(PipelineError::io(&self.path, e));
        }
        self.unsynced.clear();
        Ok(())
    }
}

impl Drop for HashLogWriter {
    /// Writes the held lines (best effort, not fsync'd), as a buffered writer would.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(
                "{e}: {} line(s) of the hash log not written",
                self.pending.len() as u64 / LINE_LEN
            );
        }
    }
}

/// Reads a whole hash log; a torn or malformed line is an error naming its line number.
pub fn read_hash_log(path: &Path) -> Result<Vec<HashLine>> {
    let bytes = std::fs::read(path).map_err(|e| PipelineError::io(path, e))?;
    let mut out = Vec::with_capacity(bytes.len() / LINE_LEN as usize);
    for (n, chunk) in bytes.chunks(LINE_LEN as usize).enumerate() {
        let bad = |reason: &str| PipelineError::CorruptRecord {
            path: path.to_path_buf(),
            offset: n as u64 * LINE_LEN,
            reason: format!("line {}: {reason}", n + 1),
        };
        if chunk.len() != LINE_LEN as usize || chunk.last() != Some(&b'\n') {
            return Err(bad("torn or malformed line"));
        }
        if chunk.get(64) != Some(&b' ') {
            return Err(bad("missing separator"));
        }
        let mut line = HashLine {
            record: [0; 32],
            example: [0; 32],
        };
        let lower = |s: &[u8]| {
            s.iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        };
        let (rec, ex) = (
            chunk.get(..64).unwrap_or(&[]),
            chunk.get(65..129).unwrap_or(&[]),
        );
        if !lower(rec) || !lower(ex) {
            return Err(bad("not lowercase hex"));
        }
        hex::decode_to_slice(rec, &mut line.record).map_err(|_| bad("bad hex"))?;
        hex::decode_to_slice(ex, &mut line.example).map_err(|_| bad("bad hex"))?;
        out.push(line);
    }
    Ok(out)
}

/// The exactly-once verdict of one epoch: delivered record hashes against the dataset's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub expected: usize,
    pub delivered: usize,
    /// Records of the dataset never delivered (hash, how many times missing).
    pub missing: Vec<([u8; 32], usize)>,
    /// Records delivered more often than the dataset holds them (hash, extra count).
    pub duplicated: Vec<([u8; 32], usize)>,
}

impl Verdict {
    pub fn is_exactly_once(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty()
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_exactly_once() {
            write!(
                f,
                "exactly-once: {} of {} records",
                self.delivered, self.expected
            )
        } else {
            let lost: usize = self.missing.iter().map(|(_, n)| n).sum();
            let dup: usize = self.duplicated.iter().map(|(_, n)| n).sum();
            write!(
                f,
                "NOT exactly-once: {} delivered, {} expected, {lost} lost, {dup} duplicated",
                self.delivered, self.expected
            )
        }
    }
}

/// Compares delivered record hashes with the dataset's as multisets.
pub fn check_exactly_once(delivered: &[[u8; 32]], dataset: &[[u8; 32]]) -> Verdict {
    let mut got = delivered.to_vec();
    let mut want = dataset.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    let (mut missing, mut duplicated) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < got.len() || j < want.len() {
        match (got.get(i), want.get(j)) {
            (Some(g), Some(w)) if g == w => {
                i += 1;
                j += 1;
            }
            (Some(g), Some(w)) if g < w => {
                push_count(&mut duplicated, *g);
                i += 1;
            }
            (Some(g), None) => {
                push_count(&mut duplicated, *g);
                i += 1;
            }
            (_, Some(w)) => {
                push_count(&mut missing, *w);
                j += 1;
            }
            (None, None) => break,
        }
    }
    Verdict {
        expected: dataset.len(),
        delivered: delivered.len(),
        missing,
        duplicated,
    }
}

fn push_count(list: &mut Vec<([u8; 32], usize)>, hash: [u8; 32]) {
    match list.last_mut() {
        Some((h, n)) if *h == hash => *n += 1,
        _ => list.push((hash, 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(r: u8, e: u8) -> HashLine {
        HashLine {
            record: [r; 32],
            example: [e; 32],
        }
    }

    #[test]
    fn write_read_resume_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = HashLogWriter::open(dir.path(), 3, 0).unwrap();
        for i in 0..5 {
            w.append(&line(i, i + 100)).unwrap();
        }
        w.sync().unwrap();
        drop(w);
        let path = log_path(dir.path(), 3);
        assert_eq!(read_hash_log(&path).unwrap().len(), 5);
        // Resume keeping 2 lines, then append 3 others.
        let mut w = HashLogWriter::open(dir.path(), 3, 2).unwrap();
        for i in 2..5 {
            w.append(&line(i, i + 100)).unwrap();
        }
        w.sync().unwrap();
        drop(w);
        let lines = read_hash_log(&path).unwrap();
        assert_eq!(lines, (0..5).map(|i| line(i, i + 100)).collect::<Vec<_>>());
        // A torn tail at every byte of the last line is reported with its line number.
        let full = std::fs::read(&path).unwrap();
        for cut in (full.len() - LINE_LEN as usize + 1)..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let err = read_hash_log(&path).unwrap_err().to_string();
            assert!(err.contains("line 5"), "{err}");
        }
        // Resuming past the end of what was written is refused.
        std::fs::write(&path, &full[..LINE_LEN as usize]).unwrap();
        assert!(HashLogWriter::open(dir.path(), 3, 2).is_err());
    }

    #[test]
    fn a_cursor_past_any_file_is_refused() {
        // A cursor read from disk can claim any example count; one whose lines no file can hold
        // is an error naming the count, not an overflow.
        let dir = tempfile::tempdir().unwrap();
        let err = HashLogWriter::open(dir.path(), 0, u64::MAX).err().unwrap();
        assert!(err.to_string().contains(&u64::MAX.to_string()), "{err}");
    }

    #[test]
    fn verdicts() {
        let ds = vec![[1u8; 32], [2; 32], [2; 32], [3; 32]];
        assert!(check_exactly_once(&[[3; 32], [2; 32], [1; 32], [2; 32]], &ds).is_exactly_once());
        let v = check_exactly_once(&[[3; 32], [2; 32], [1; 32], [1; 32]], &ds);
        assert_eq!(v.missing, vec![([2; 32], 1)]);
        assert_eq!(v.duplicated, vec![([1; 32], 1)]);
        assert!(v.to_string().contains("1 lost, 1 duplicated"));
        let v = check_exactly_once(&[[9; 32]], &[]);
        assert_eq!(v.duplicated, vec![([9; 32], 1)]);
    }
}
