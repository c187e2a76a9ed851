//! The file patterns of a spec's `source.files`: `*` and `?` in the last path component,
//! expanded to the regular files they match, and the lexical clean-up of the resolved paths.
//! Owns matching names only; it never opens a file's contents.

use std::path::{Path, PathBuf};

/// `path` without `.` and `..` components (each `..` drops the component before it), so a
/// canonical spec names `/data/x`, not `/specs/../data/x`: nodes refuse `..` (`data_root`).
pub(crate) fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Expands `*` and `?` in the last path component into the regular files they match, sorted; a
/// path without wildcards must exist (a missing one expands to nothing).
pub(crate) fn expand_pattern(pattern: &Path) -> std::result::Result<Vec<PathBuf>, String> {
    let name = pattern
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("`{}` has no file name", pattern.display()))?;
    let dir = pattern.parent().unwrap_or_else(|| Path::new("."));
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err("wildcards are only allowed in the last path component".into());
    }
    if !name.contains(['*', '?']) {
        return Ok(if pattern.is_file() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        });
    }
    let matcher = name_matcher(name)?;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if matcher.is_match(file_name) && entry.path().is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Compiles a file-name pattern: `*` matches any run of characters, `?` exactly one, and every
/// other character only itself (globset's classes, alternations and escapes are escaped away).
pub(crate) fn name_matcher(name: &str) -> std::result::Result<globset::GlobMatcher, String> {
    let mut glob = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '*' | '?' => glob.push(c),
            c => glob.push_str(&globset::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    globset::GlobBuilder::new(&glob)
        .backslash_escape(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("`{name}` is not a valid file pattern: {e}"))
}
