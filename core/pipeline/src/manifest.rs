//! MANIFEST files: the reference list of a dataset's records, in the format TensorFlow's tooling
//! wrote for ../shared/data/tf-sample:
//! ```text
//! # file record_index sha256(record_payload) sha256(image/encoded) image/class/label
//! train-00000-of-00002 0 <64 hex> <64 hex> 154
//! ```
//! Lines starting with `#` are comments.

use std::path::Path;

use crate::error::{PipelineError, Result};

pub const HEADER: &str =
    "# file record_index sha256(record_payload) sha256(image/encoded) image/class/label";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    pub file: String,
    pub index: u64,
    pub record_sha256: [u8; 32],
    pub image_sha256: [u8; 32],
    pub label: i64,
}

impl ManifestEntry {
    pub fn to_line(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.file,
            self.index,
            hex::encode(self.record_sha256),
            hex::encode(self.image_sha256),
            self.label
        )
    }
}

pub fn parse_manifest(text: &str, path: &Path) -> Result<Vec<ManifestEntry>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| PipelineError::CorruptRecord {
            path: path.to_path_buf(),
            offset: n as u64,
            reason: format!("manifest line {}: {reason}", n + 1),
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [file, index, record, image, label] = fields.as_slice() else {
            return Err(bad("expected 5 fields"));
        };
        let mut entry = ManifestEntry {
            file: (*file).to_string(),
            index: index.parse().map_err(|_| bad("bad record index"))?,
            record_sha256: [0; 32],
            image_sha256: [0; 32],
            label: label.parse().map_err(|_| bad("bad label"))?,
        };
        hex::decode_to_slice(record, &mut entry.record_sha256)
            .map_err(|_| bad("bad record hash"))?;
        hex::decode_to_slice(image, &mut entry.image_sha256).map_err(|_| bad("bad image hash"))?;
        out.push(entry);
    }
    Ok(out)
}

pub fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::io(path, e))?;
    parse_manifest(&text, path)
}

pub fn render_manifest(entries: &[ManifestEntry]) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for e in entries {
        out.push_str(&e.to_line());
        out.push('\n');
    }
    out
}
