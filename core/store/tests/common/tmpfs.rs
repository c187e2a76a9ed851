//! A size-limited tmpfs mounted on a fresh temporary directory for the length of a test, and
//! unmounted when dropped (also when the test panics). Mounting needs root (CAP_SYS_ADMIN); a
//! test that cannot mount fails and says why, it never skips (CI runs as root).
//!
//! The tests of one process that use a tmpfs run one at a time: `mount` and `umount` are child
//! processes, and a child holds copies of the parent's file descriptors until it execs, so a
//! store's lock file would look held to a test that reopens its store at that moment.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A mounted tmpfs; unmounted (and its mount point removed) on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: tempfile::TempDir,
    /// Held until the tmpfs is unmounted (see the module doc).
    _serial: MutexGuard<'static, ()>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `kib` KiB on a new temporary directory. Panics with the reason if it
    /// cannot (not root, no tmpfs).
    pub fn mount(kib: u64) -> Tmpfs {
        let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::Builder::new()
            .prefix("cachew-tmpfs-")
            .tempdir()
            .expect("creating a mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs {
                dir,
                _serial: serial,
            },
            Ok(o) => panic!(
                "this test needs a size-limited tmpfs and could not mount one on {} (it must run \
                 as root, with CAP_SYS_ADMIN): mount exited with {}: {}",
                dir.path().display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("this test needs a size-limited tmpfs: cannot run `mount`: {e}"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with a filler file until a write fails with "no space left";
    /// returns its path. Panics if the write fails for another reason.
    pub fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let block = vec![0xA5u8; 4096];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // Byte-sized writes fill the last partial page too.
        while let Ok(n) = file.write(&[0xA5]) {
            if n == 0 {
                break;
            }
        }
        path
    }

    /// Removes the filler file written by [`fill`](Tmpfs::fill).
    pub fn free(&self) {
        let path = self.path().join("filler");
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            panic!("removing {}: {e}", path.display());
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still has a file open there: detach it so the test run leaves no mount.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}
