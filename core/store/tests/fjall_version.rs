//! `fjall_journal` parses fjall's private journal format, known only for the release it was
//! written against: this fails loudly when the workspace's fjall is any other, before a changed
//! format could be misread (a good batch taken for damage, or damage for a good batch). See the
//! header of `core/store/src/fjall_journal.rs` for what to check before changing the version.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cachew_store::fjall_journal::FJALL_VERSION;

const WHAT_TO_DO: &str = "core/store/src/fjall_journal.rs parses fjall's private journal \
    format and was written for that version only: review it against the new fjall (see its \
    header), then update FJALL_VERSION and the `=` pin in the workspace Cargo.toml together";

/// `cargo metadata` of this package alone (no dependency resolution, so no download).
fn metadata() -> serde_json::Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_fjall_dependency_is_pinned_to_the_version_the_journal_parser_reads() {
    let metadata = metadata();
    let store = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "cachew-store")
        .expect("cachew-store in cargo metadata");
    let requirement = store["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "fjall" && d["kind"].is_null())
        .and_then(|d| d["req"].as_str())
        .expect("cachew-store depends on fjall");
    assert_eq!(
        requirement,
        format!("={FJALL_VERSION}"),
        "cachew-store requires fjall `{requirement}`, but the journal parser was written for \
         fjall {FJALL_VERSION} (pinned as `={FJALL_VERSION}`): {WHAT_TO_DO}"
    );

    // The lock file of the workspace resolves it to exactly that release, once.
    let lock_path = PathBuf::from(metadata["workspace_root"].as_str().unwrap()).join("Cargo.lock");
    let lock: toml::Table = std::fs::read_to_string(&lock_path)
        .unwrap()
        .parse()
        .unwrap();
    let versions: Vec<&str> = lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"].as_str() == Some("fjall"))
        .filter_map(|p| p["version"].as_str())
        .collect();
    assert_eq!(
        versions,
        [FJALL_VERSION],
        "{} resolves fjall to {versions:?}, not {FJALL_VERSION}: {WHAT_TO_DO}",
        lock_path.display()
    );
}
