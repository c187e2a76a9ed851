//! Test helpers: directory images held in memory, and the torn-write variants of a write.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One file: its bytes up to the last non-zero byte, and its length (the rest is zeros). fjall
/// preallocates journal files to 64 MiB of zeros; keeping only the data makes copies cheap,
/// and `set_len` recreates the zeros as a sparse file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileImage {
    pub data: Vec<u8>,
    pub len: u64,
}

impl FileImage {
    pub fn from_bytes(bytes: &[u8]) -> FileImage {
        let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        FileImage {
            data: bytes[..end].to_vec(),
            len: bytes.len() as u64,
        }
    }

    pub fn byte(&self, at: u64) -> u8 {
        self.data.get(at as usize).copied().unwrap_or(0)
    }
}

/// All regular files under a directory, by relative path.
#[derive(Debug, Clone, Default)]
pub struct DirImage {
    pub files: BTreeMap<PathBuf, FileImage>,
}

impl DirImage {
    pub fn capture(root: &Path) -> DirImage {
        let mut image = DirImage::default();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                if entry.file_type().unwrap().is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(root).unwrap().to_path_buf();
                    image
                        .files
                        .insert(rel, FileImage::from_bytes(&fs::read(&path).unwrap()));
                }
            }
        }
        image
    }

    pub fn write_to(&self, root: &Path) {
        for (rel, file) in &self.files {
            let path = root.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &file.data).unwrap();
            if file.len > file.data.len() as u64 {
                fs::File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(file.len)
                    .unwrap();
            }
        }
    }

    /// Files that differ between `self` (before) and `after`, or exist in only one of them.
    pub fn changed(&self, after: &DirImage) -> Vec<PathBuf> {
        let mut names: Vec<&PathBuf> = self.files.keys().chain(after.files.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter(|n| self.files.get(*n) != after.files.get(*n))
            .cloned()
            .collect()
    }
}

/// The torn states of one write that changed `file` from `before` to `after`: for each byte
/// boundary `k` from the first changed byte to the last, the file holds the new bytes up to `k`
/// and the old ones after it (the old length when the write grew the file: a truncation at
/// `k`; zeros when it wrote into fjall's preallocation). Returns `(first, last, variants)`.
pub fn torn_states(before: &FileImage, after: &FileImage) -> (u64, u64, Vec<(u64, FileImage)>) {
    let data_span = before.data.len().max(after.data.len()) as u64;
    let differs = |i: &u64| before.byte(*i) != after.byte(*i);
    let (short, long) = (before.len.min(after.len), before.len.max(after.len));
    let first = (0..data_span).find(differs).unwrap_or(long).min(short);
    let last_diff = (0..data_span).rev().find(differs).map_or(0, |i| i + 1);
    let last = if short == long {
        last_diff
    } else {
        last_diff.max(long)
    };
    assert!(first < last, "the file did not change");
    let variants = (first..=last)
        .map(|k| {
            let bytes: Vec<u8> = (0..k.max(before.data.len() as u64))
                .map(|i| if i < k { after.byte(i) } else { before.byte(i) })
                .collect();
            let mut image = FileImage::from_bytes(&bytes);
            image.len = before.len.max(k);
            (k, image)
        })
        .collect();
    (first, last, variants)
}

/// The one fjall journal file a write changed, checking that nothing else under `db/` changed
/// (fjall appends a batch to its journal; tables come later, from background flushes).
pub fn changed_journal(before: &DirImage, after: &DirImage) -> PathBuf {
    let changed: Vec<PathBuf> = before
        .changed(after)
        .into_iter()
        .filter(|p| p.starts_with("db"))
        .collect();
    assert_eq!(
        changed.len(),
        1,
        "expected one changed fjall file, got {changed:?}"
    );
    let journal = changed[0].clone();
    assert_eq!(journal.extension().and_then(|e| e.to_str()), Some("jnl"));
    assert!(
        before.files.contains_key(&journal),
        "the write created {journal:?}"
    );
    journal
}

/// Builds the crash state "`before`, with `file` torn as `torn`" in a fresh directory.
pub fn materialize(before: &DirImage, file: &Path, torn: &FileImage, dest: &Path) {
    let mut image = before.clone();
    image.files.insert(file.to_path_buf(), torn.clone());
    image.write_to(dest);
}

/// A record payload that names its sequence number (so misplaced records are visible).
pub fn record(seq: u64, len: usize) -> Vec<u8> {
    let mut r = format!("record {seq:>6} ").into_bytes();
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    while r.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.push(b'a' + (x % 26) as u8);
    }
    r.truncate(len);
    r
}

/// A scratch directory for crash-state copies: on tmpfs when there is one. These tests build
/// crash states byte by byte and never rely on fsync, so skipping the disk only saves time.
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

/// XORs one byte of a file in place (journal files are 64 MiB, mostly a hole: no rewriting).
pub fn flip_byte(path: &Path, at: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let file = fs::File::options()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= mask;
    file.write_all_at(&byte, at).unwrap();
    file.sync_all().unwrap();
}

/// The bytes of a file up to its last non-zero byte.
pub fn data_of(path: &Path) -> Vec<u8> {
    FileImage::from_bytes(&fs::read(path).unwrap()).data
}
