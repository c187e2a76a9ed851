//! How each role is started.

use std::path::{Path, PathBuf};

use crate::role::Role;
use crate::{ClusterError, Result};

/// The program (and leading arguments) that starts each role.
#[derive(Debug, Clone)]
pub struct Launcher {
    programs: Vec<(Role, PathBuf, Vec<String>)>,
}

impl Launcher {
    /// The real binaries `cachew-dispatcher`, `cachew-worker` and `cachew-client` in `dir`.
    pub fn binaries_in(dir: &Path) -> Result<Launcher> {
        let mut programs = Vec::new();
        for role in [Role::Dispatcher, Role::Worker, Role::Client] {
            let path = dir.join(role.binary());
            if !path.is_file() {
                return Err(ClusterError::MissingBinary {
                    program: role.binary().to_string(),
                    looked: dir.display().to_string(),
                });
            }
            programs.push((role, path, Vec::new()));
        }
        Ok(Launcher { programs })
    }

    /// Finds the real binaries: in `$CACHEW_BIN_DIR`, next to the running executable, or one
    /// directory up (where cargo puts binaries relative to test executables in `deps/`).
    pub fn locate() -> Result<Launcher> {
        let mut candidates = Vec::new();
        if let Some(dir) = std::env::var_os("CACHEW_BIN_DIR") {
            candidates.push(PathBuf::from(dir));
        }
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            candidates.push(dir.to_path_buf());
            if let Some(up) = dir.parent() {
                candidates.push(up.to_path_buf());
            }
        }
        for dir in &candidates {
            if let Ok(l) = Launcher::binaries_in(dir) {
                return Ok(l);
            }
        }
        Err(ClusterError::MissingBinary {
            program: "cachew-dispatcher".into(),
            looked: candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// One multi-call host executable that runs a role when called as `EXE node <role> ...`.
    pub fn multicall(exe: &Path) -> Launcher {
        let programs = [Role::Dispatcher, Role::Worker, Role::Client]
            .into_iter()
            .map(|r| {
                (
                    r,
                    exe.to_path_buf(),
                    vec!["node".to_string(), r.name().to_string()],
                )
            })
            .collect();
        Launcher { programs }
    }

    /// The real binaries if they can be found, else the multi-call `host`.
    pub fn locate_or_multicall(host: &Path) -> Launcher {
        Launcher::locate().unwrap_or_else(|_| Launcher::multicall(host))
    }

    pub(crate) fn program(&self, role: Role) -> Result<(&Path, &[String])> {
        self.programs
            .iter()
            .find(|(r, _, _)| *r == role)
            .map(|(_, p, a)| (p.as_path(), a.as_slice()))
            .ok_or_else(|| ClusterError::Invalid(format!("no program for role {}", role.name())))
    }

    /// Whether the launcher runs the standalone binaries (not a multi-call host).
    pub fn uses_real_binaries(&self) -> bool {
        self.programs.iter().all(|(_, _, a)| a.is_empty())
    }
}
