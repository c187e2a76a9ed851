//! The data root: the directories a dispatcher or worker reads dataset files from
//! (`--data-root`, repeatable). A spec arrives from the network, and its `source.files` are
//! paths on this host: a spec naming a file outside every root is refused with the path, before
//! the file is opened.
//!
//! A file is inside a root when
//! - its path is absolute and has no `..` component (checked on the text, so no `..` can climb
//!   out through a directory that does not exist yet), and starts with the root, and
//! - its resolved path (symlinks followed, [`std::fs::canonicalize`]) starts with the root's
//!   resolved path, so a symlink inside the root cannot lead out of it.
//!
//! [`DataRoot::anywhere`] accepts every path: it is what the libraries use when embedded without
//! a root (tests, tools); the binaries always have one (their working directory by default).
//! This module only inspects paths; it never opens a file.

use std::path::{Component, Path, PathBuf};

use crate::error::{PipelineError, Result};
use crate::spec::PipelineSpec;

/// Why a path does not pass.
enum Refused {
    /// Outside every root (or not absolute, or with `..`): the reason.
    Outside(String),
    /// It could not be resolved to check where it leads.
    Unresolved(std::io::Error),
}

/// One root: as given (absolute) and resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Root {
    given: PathBuf,
    resolved: PathBuf,
}

/// The directories dataset files may be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRoot {
    /// `None`: anywhere.
    roots: Option<Vec<Root>>,
}

impl DataRoot {
    /// Files under any of `dirs` (each must exist and be a directory).
    pub fn new<P: AsRef<Path>>(dirs: &[P]) -> std::result::Result<DataRoot, String> {
        if dirs.is_empty() {
            return Err("a data root needs at least one directory".into());
        }
        let mut roots = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let dir = dir.as_ref();
            let given = std::path::absolute(dir)
                .map_err(|e| format!("data root {}: {e}", dir.display()))?;
            let resolved = std::fs::canonicalize(dir)
                .map_err(|e| format!("data root {}: {e}", dir.display()))?;
            if !resolved.is_dir() {
                return Err(format!("data root {} is not a directory", dir.display()));
            }
            roots.push(Root { given, resolved });
        }
        Ok(DataRoot { roots: Some(roots) })
    }

    /// Every path is accepted (libraries embedded without a root).
    pub fn anywhere() -> DataRoot {
        DataRoot { roots: None }
    }

    /// The directories, as given (empty for [`DataRoot::anywhere`]).
    pub fn dirs(&self) -> Vec<&Path> {
        self.roots
            .iter()
            .flatten()
            .map(|r| r.given.as_path())
            .collect()
    }

    /// Checks one file path; the error says why it is refused and names the roots.
    pub fn check(&self, path: &Path) -> std::result::Result<(), String> {
        self.check_path(path).map_err(|e| match e {
            Refused::Outside(reason) => reason,
            Refused::Unresolved(e) => format!("`{}`: cannot resolve: {e}", path.display()),
        })
    }

    fn check_path(&self, path: &Path) -> std::result::Result<(), Refused> {
        let Some(roots) = &self.roots else {
            return Ok(());
        };
        let shown = path.display();
        if !path.is_absolute() {
            return Err(Refused::Outside(format!(
                "`{shown}` is not an absolute path"
            )));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(Refused::Outside(format!("`{shown}` has a `..` component")));
        }
        if !roots
            .iter()
            .any(|r| path.starts_with(&r.given) || path.starts_with(&r.resolved))
        {
            return Err(Refused::Outside(format!(
                "`{shown}` is outside the data root {}",
                self.named()
            )));
        }
        let resolved = std::fs::canonicalize(path).map_err(Refused::Unresolved)?;
        if !roots.iter().any(|r| resolved.starts_with(&r.resolved)) {
            return Err(Refused::Outside(format!(
                "`{shown}` resolves to `{}`, outside the data root {}",
                resolved.display(),
                self.named()
            )));
        }
        Ok(())
    }

    /// Checks every file a (resolved) spec names. A path outside the root is a spec error; one
    /// that cannot be resolved (missing, unreadable, a file system not answering) an I/O error
    /// naming the file, which may clear up.
    pub fn check_spec(&self, spec: &PipelineSpec) -> Result<()> {
        for (i, f) in spec.source.files.iter().enumerate() {
            self.check_path(Path::new(f))
                .map_err(|refused| match refused {
                    Refused::Outside(reason) => PipelineError::Spec {
                        field: format!("source.files[{i}]"),
                        reason: format!("{reason} (--data-root)"),
                    },
                    Refused::Unresolved(source) => PipelineError::io(f, source),
                })?;
        }
        Ok(())
    }

    fn named(&self) -> String {
        let dirs: Vec<String> = self
            .dirs()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.join(", ")
    }
}

impl Default for DataRoot {
    fn default() -> Self {
        DataRoot::anywhere()
    }
}

/// The directories of the `--data-root` flags, or the working directory without any.
pub fn from_flags(dirs: &[PathBuf]) -> std::result::Result<DataRoot, String> {
    if dirs.is_empty() {
        DataRoot::new(&[PathBuf::from(".")])
    } else {
        DataRoot::new(dirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.tfrecord"), b"").unwrap();
        std::fs::write(dir.path().join("outside"), b"").unwrap();
        (dir, root)
    }

    #[test]
    fn files_under_the_root_pass() {
        let (_dir, root) = tree();
        let r = DataRoot::new(&[&root]).unwrap();
        r.check(&root.join("sub/a.tfrecord")).unwrap();
    }

    #[test]
    fn absolute_paths_outside_the_root_are_refused_with_the_path() {
        let (_dir, root) = tree();
        let r = DataRoot::new(&[&root]).unwrap();
        let err = r.check(Path::new("/etc/passwd")).unwrap_err();
        assert!(
            err.contains("/etc/passwd") && err.contains(&root.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_cannot_be_resolved_is_an_io_error_and_one_outside_a_spec_error() {
        let (dir, root) = tree();
        let r = DataRoot::new(&[&root]).unwrap();
        let spec = |file: &Path| {
            let json = serde_json::json!({
                "outputs": ["label"],
                "source": { "files": [file.display().to_string()], "split_records": 4 },
                "ops": [{ "op": "parse_example",
                          "features": [{ "key": "label", "dtype": "int64" }] }],
            });
            PipelineSpec::from_json(&json.to_string()).unwrap()
        };
        // Missing (or on a file system not answering): may clear up, so an I/O error that
        // keeps its kind and names the file.
        let missing = root.join("sub/missing.tfrecord");
        match r.check_spec(&spec(&missing)).unwrap_err() {
            PipelineError::Io { path, source } => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        let outside = dir.path().join("outside");
        let err = r.check_spec(&spec(&outside)).unwrap_err();
        assert!(
            matches!(&err, PipelineError::Spec { field, .. } if field == "source.files[0]"),
            "{err:?}"
        );
    }

    #[test]
    fn dot_dot_is_refused_even_when_it_stays_inside() {
        let (_dir, root) = tree();
        let r = DataRoot::new(&[&root]).unwrap();
        let climbing = root.join("sub/../../outside");
        let err = r.check(&climbing).unwrap_err();
        assert!(err.contains("`..`") && err.contains("outside"), "{err}");
        let err = r.check(&root.join("sub/../sub/a.tfrecord")).unwrap_err();
        assert!(err.contains("`..`"), "{err}");
        let err = r.check(Path::new("sub/a.tfrecord")).unwrap_err();
        assert!(err.contains("not an absolute path"), "{err}");
    }

    #[test]
    fn a_symlink_leading_out_of_the_root_is_refused() {
        let (dir, root) = tree();
        let link = root.join("sneaky.tfrecord");
        std::os::unix::fs::symlink(dir.path().join("outside"), &link).unwrap();
        let r = DataRoot::new(&[&root]).unwrap();
        let err = r.check(&link).unwrap_err();
        assert!(
            err.contains("resolves to") && err.contains("outside"),
            "{err}"
        );
        // A symlink that stays inside is fine.
        let inner = root.join("inner.tfrecord");
        std::os::unix::fs::symlink(root.join("sub/a.tfrecord"), &inner).unwrap();
        r.check(&inner).unwrap();
    }

    #[test]
    fn a_spec_naming_another_file_is_refused_naming_field_and_path() {
        let (_dir, root) = tree();
        let r = DataRoot::new(&[&root]).unwrap();
        let spec = PipelineSpec {
            name: None,
            seed: 0,
            shuffle: true,
            outputs: Vec::new(),
            on_error: Default::default(),
            source: crate::spec::SourceSpec {
                format: Default::default(),
                files: vec![
                    root.join("sub/a.tfrecord").display().to_string(),
                    "/etc/passwd".into(),
                ],
                split_records: 1,
            },
            ops: Vec::new(),
        };
        let err = r.check_spec(&spec).unwrap_err().to_string();
        assert!(
            err.contains("source.files[1]") && err.contains("/etc/passwd"),
            "{err}"
        );
        assert!(DataRoot::anywhere().check_spec(&spec).is_ok());
    }

    #[test]
    fn several_roots_and_a_missing_root() {
        let (dir, root) = tree();
        let r = DataRoot::new(&[root.clone(), dir.path().to_path_buf()]).unwrap();
        r.check(&dir.path().join("outside")).unwrap();
        assert!(DataRoot::new(&[dir.path().join("missing")]).is_err());
        assert!(DataRoot::new::<PathBuf>(&[]).is_err());
    }
}
