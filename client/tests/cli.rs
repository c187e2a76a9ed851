//! The `cachew-client` binary: help, bad flags, a bad spec, an unreachable dispatcher.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cachew-client"))
}

fn tf_sample_spec() -> String {
    format!(
        "{}/../fixtures/specs/tf-sample.toml",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn help_lists_the_flags() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--dispatcher",
        "--spec",
        "--job",
        "--epochs",
        "--hash-log",
        "--verify",
        "--step-time-ms",
        "--metrics-listen",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}

#[test]
fn missing_and_bad_specs_are_named() {
    let out = bin().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--spec"));
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.toml");
    std::fs::write(&spec, "outputs = [\"x\"]\n[source]\nfiles = [\"nothing-*\"]\nsplit_records = 4\n[[ops]]\nop = \"parse_example\"\nfeatures = []\n").unwrap();
    let out = bin()
        .args(["--spec", spec.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("source.files[0]") && err.contains("matches no file"),
        "{err}"
    );
}

#[test]
fn unreachable_dispatcher_is_reported() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = bin()
        .args([
            "--spec",
            &tf_sample_spec(),
            "--dispatcher",
            &format!("127.0.0.1:{port}"),
            "--connect-timeout-ms",
            "500",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable"), "{err}");
}
